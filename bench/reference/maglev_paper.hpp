// SPDX-License-Identifier: MIT
// The reference Maglev build that lbkit::maglev's build is measured against: the populate
// loop of the paper as written (D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software
// Network Load Balancer", NSDI 2016, §3.4, Pseudocode 1). Each backend i keeps next[i], how
// far it has gone in its permutation; the backends take turns, each taking its next preferred
// slot that is still empty (entry[c] < 0), until the table is full. The permutation is
// computed on the fly from the backend's offset and skip, permutation[i][j] =
// (offset + j * skip) mod M, as the paper defines it, rather than stored as an N × M table
// (2.6 GB at N = 10 000, M = 65 537). Equal weights only, as in the paper.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <lbkit/policy/maglev.hpp>

namespace lbkit_bench {

inline std::vector<std::uint32_t> maglev_paper_populate(
    std::span<const lbkit::maglev::permutation> perm, std::uint32_t m) {
  const std::size_t n = perm.size();
  std::vector<std::uint32_t> next(n, 0);
  std::vector<std::int32_t> entry(m, -1);
  // permutation[i][next[i]]; j * skip reaches ~M^2, so the arithmetic is 64-bit.
  auto slot = [&](std::size_t i) {
    return static_cast<std::uint32_t>((perm[i].offset + std::uint64_t{next[i]} * perm[i].skip) % m);
  };
  std::uint32_t filled = 0;
  while (n > 0) {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t c = slot(i);
      while (entry[c] >= 0) {
        ++next[i];
        c = slot(i);
      }
      entry[c] = static_cast<std::int32_t>(i);
      ++next[i];
      if (++filled == m) return {entry.begin(), entry.end()};
    }
  }
  return {};
}

}  // namespace lbkit_bench
