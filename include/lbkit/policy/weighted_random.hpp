// SPDX-License-Identifier: MIT
// weighted_random: an independent random pick per request, in proportion to weight, O(1).
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Picks an eligible member at random with probability weight / sum(weights); with equal
// weights, uniformly. Uses Walker's alias method in Vose's numerically stable construction
// (M. D. Vose, "A linear algorithm for generating random numbers with a given distribution",
// IEEE TSE 1991): one random number, one table entry, one comparison per pick.
// Each picker draws from its own generator (pick_rng), so threads never share a line.
// Thread safety: the state is thread-safe; pickers own their generators.
// Complexity: build O(n); pick O(1).
class weighted_random {
 public:
  struct local {};

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
      const std::uint64_t r = rng.next();
      const auto col = static_cast<std::uint32_t>(((r >> 32) * cols_.size()) >> 32);
      const column& c = cols_[col];
      return (r & 0xffffffffu) < c.threshold ? c.member : c.alias;
    }

   private:
    friend class weighted_random;
    struct column {
      std::uint64_t threshold;  // keep `member` when the low 32 random bits are below this
      std::uint32_t member;
      std::uint32_t alias;
    };
    std::vector<column> cols_;
  };

  state build(const candidate_set& c) const {
    state s;
    std::vector<std::uint32_t> members;
    std::vector<double> p;  // probability * n, so that 1.0 is a full column
    std::uint64_t total = 0;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (!c.eligible(i)) continue;
      members.push_back(i);
      total += c.weights()[i];
    }
    const std::size_t n = members.size();
    if (n == 0) return s;
    for (auto m : members) {
      p.push_back(static_cast<double>(c.weights()[m]) * static_cast<double>(n) /
                  static_cast<double>(total));
    }
    s.cols_.resize(n);
    std::vector<std::uint32_t> small, large;
    for (std::uint32_t j = 0; j < n; ++j) (p[j] < 1.0 ? small : large).push_back(j);
    constexpr double full = 4294967296.0;  // 2^32
    while (!small.empty() && !large.empty()) {
      const std::uint32_t lo = small.back(), hi = large.back();
      small.pop_back();
      s.cols_[lo] = {static_cast<std::uint64_t>(p[lo] * full), members[lo], members[hi]};
      p[hi] -= 1.0 - p[lo];
      if (p[hi] < 1.0) {
        large.pop_back();
        small.push_back(hi);
      }
    }
    // What is left is a full column up to rounding: it always keeps its own member.
    for (auto j : large) s.cols_[j] = {std::uint64_t{1} << 32, members[j], members[j]};
    for (auto j : small) s.cols_[j] = {std::uint64_t{1} << 32, members[j], members[j]};
    return s;
  }
};

}  // namespace lbkit
