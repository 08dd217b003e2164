// SPDX-License-Identifier: MIT
// alias_table: draws one of n values with probability proportional to its weight in O(1), by
// Walker's alias method in Vose's numerically stable construction (M. D. Vose, "A linear
// algorithm for generating random numbers with a given distribution", IEEE TSE 1991): one
// random number, one table entry, one comparison per draw. weighted_random picks with it;
// the load-aware policies sample their candidates with it when weights differ.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lbkit::detail {

// Thread safety: thread-safe after build (immutable).
class alias_table {
 public:
  alias_table() = default;
  // values[i] is drawn with probability weights[i] / sum(weights). The spans have the same
  // size, the weights are positive. Complexity: O(n).
  alias_table(std::span<const std::uint32_t> values, std::span<const std::uint32_t> weights) {
    const std::size_t n = values.size();
    if (n == 0) return;
    std::uint64_t total = 0;
    for (auto w : weights) total += w;
    std::vector<double> p;  // probability * n, so that 1.0 is a full column
    p.reserve(n);
    for (auto w : weights) {
      p.push_back(static_cast<double>(w) * static_cast<double>(n) / static_cast<double>(total));
    }
    cols_.resize(n);
    std::vector<std::uint32_t> small, large;
    for (std::uint32_t j = 0; j < n; ++j) (p[j] < 1.0 ? small : large).push_back(j);
    constexpr double full = 4294967296.0;  // 2^32
    while (!small.empty() && !large.empty()) {
      const std::uint32_t lo = small.back(), hi = large.back();
      small.pop_back();
      cols_[lo] = {static_cast<std::uint64_t>(p[lo] * full), values[lo], values[hi]};
      p[hi] -= 1.0 - p[lo];
      if (p[hi] < 1.0) {
        large.pop_back();
        small.push_back(hi);
      }
    }
    // What is left is a full column up to rounding: it always keeps its own value.
    for (auto j : large) cols_[j] = {std::uint64_t{1} << 32, values[j], values[j]};
    for (auto j : small) cols_[j] = {std::uint64_t{1} << 32, values[j], values[j]};
  }

  bool empty() const noexcept { return cols_.empty(); }

  // The value that the 64 random bits `r` draw: the high half chooses a column, the low half
  // the column's value or its alias. Must not be empty. Complexity: O(1).
  std::uint32_t draw(std::uint64_t r) const noexcept {
    const auto col = static_cast<std::uint32_t>(((r >> 32) * cols_.size()) >> 32);
    const column& c = cols_[col];
    return (r & 0xffffffffu) < c.threshold ? c.value : c.alias;
  }

 private:
  struct column {
    std::uint64_t threshold;  // keep `value` when the low 32 random bits are below this
    std::uint32_t value;
    std::uint32_t alias;
  };
  std::vector<column> cols_;
};

}  // namespace lbkit::detail
