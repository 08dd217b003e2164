// SPDX-License-Identifier: MIT
// round_robin: each eligible backend in turn, ignoring weights.
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/policy/detail/sequence.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Picks the eligible members in id order, one after another, from a random start (as gRPC's
// round_robin does). Threads claim positions of the one global order in batches (see
// detail::sequence), so the order stays fair across threads without a hot shared counter.
// Use weighted_round_robin when weights differ.
// Thread safety: the state is thread-safe; `local` is per picker.
// Complexity: build O(n); pick O(1), one shared fetch_add per 256 picks.
class round_robin {
 public:
  using local = detail::sequence::local;

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng&, local& l) const noexcept {
      return seq_.next(l);
    }

   private:
    friend class round_robin;
    detail::sequence seq_;
  };

  state build(const candidate_set& c) const {
    std::vector<std::uint32_t> order;
    order.reserve(c.eligible_count());
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (c.eligible(i)) order.push_back(i);
    }
    state s;
    if (!order.empty()) s.seq_ = detail::sequence(std::move(order), hash_u64(c.seed()));
    return s;
  }
};

}  // namespace lbkit
