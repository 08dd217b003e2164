// SPDX-License-Identifier: MIT
// jump_hash: Lamping and Veach's jump consistent hash over the members in id order.
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Jump consistent hash (J. Lamping and E. Veach, "A Fast, Minimal Memory, Consistent Hash
// Algorithm", 2014): no table at all, O(ln n) arithmetic per pick, and perfectly even: each
// of n buckets gets 1/n of the keys. Buckets are the members with a non-zero weight, in id
// order; weights beyond zero are ignored. Jump hash is consistent for buckets added or
// removed at the end of the numbering: when bucket n-1 leaves, exactly its keys move. A
// member leaving from the middle renumbers those after it and moves far more — use it for
// sharded pools whose ids are numbered in order of addition (shard-000, shard-001, ...), and
// maglev or ring_hash for anything else.
//
// A key whose member is ineligible takes the rehash sequence of detail::hash_eligibility. A
// pick without a key is random.
// Thread safety: the state is thread-safe (immutable).
// Complexity: build O(n); pick O(ln n).
class jump_hash {
 public:
  static constexpr bool keyed = true;
  struct local {};

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local&) const noexcept {
      return elig_.pick(ctx, rng, [this](std::uint64_t h) {
        return buckets_[jump(h, static_cast<std::int64_t>(buckets_.size()))];
      });
    }

    // The paper's function, verbatim in behaviour: the bucket in [0, n) of `key`.
    static std::uint32_t jump(std::uint64_t key, std::int64_t n) noexcept {
      std::int64_t b = -1, j = 0;
      while (j < n) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = static_cast<std::int64_t>(
            static_cast<double>(b + 1) *
            (static_cast<double>(std::int64_t{1} << 31) / static_cast<double>((key >> 33) + 1)));
      }
      return static_cast<std::uint32_t>(b);
    }

   private:
    friend class jump_hash;
    std::vector<std::uint32_t> buckets_;  // member index by bucket number
    detail::hash_eligibility elig_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.elig_ = detail::hash_eligibility(c);
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (c.members()[i].weight() != 0) s.buckets_.push_back(i);
    }
    return s;
  }
};

}  // namespace lbkit
