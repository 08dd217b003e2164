// SPDX-License-Identifier: MIT
// weighted_random: an independent random pick per request, in proportion to weight, O(1).
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/policy/detail/alias_table.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Picks an eligible member at random with probability weight / sum(weights); with equal
// weights, uniformly, by Walker's alias method (detail/alias_table.hpp): one random number,
// one table entry, one comparison per pick.
// Each picker draws from its own generator (pick_rng), so threads never share a line.
// Thread safety: the state is thread-safe; pickers own their generators.
// Complexity: build O(n); pick O(1).
class weighted_random {
 public:
  struct local {};

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
      return table_.draw(rng.next());
    }

   private:
    friend class weighted_random;
    detail::alias_table table_;
  };

  state build(const candidate_set& c) const {
    std::vector<std::uint32_t> members, weights;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (!c.eligible(i)) continue;
      members.push_back(i);
      weights.push_back(c.weights()[i]);
    }
    state s;
    s.table_ = detail::alias_table(members, weights);
    return s;
  }
};

}  // namespace lbkit
