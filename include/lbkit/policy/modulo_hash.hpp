// SPDX-License-Identifier: MIT
// modulo_hash: the key's hash modulo the number of members (nginx ip_hash, HAProxy
// balance source with map-based hashing).
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Sticks each key to one member while the membership is unchanged, in proportion to weight:
// every member owns `weight` slots of a table in id order, and a key takes the slot
// hash * slots / 2^64 (multiply-shift, not a division). Fast and exactly weighted, but not
// consistent: adding or removing a member moves most keys. Health changes do not, because
// the table covers every member and an ineligible member's keys take the rehash sequence of
// detail::hash_eligibility. A pick without a key is random.
// Slots are capped at `max_slots` (weights scaled down proportionally, at least one each).
// Thread safety: the state is thread-safe (immutable).
// Complexity: build O(slots); pick O(1).
class modulo_hash {
 public:
  static constexpr bool keyed = true;
  struct local {};

  modulo_hash() noexcept : modulo_hash(1u << 16) {}
  explicit modulo_hash(std::uint32_t max_slots) noexcept
      : max_slots_(max_slots == 0 ? 1 : max_slots) {}

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local&) const noexcept {
      return elig_.pick(ctx, rng,
                        [this](std::uint64_t h) { return slots_[detail::reduce(h, n())]; });
    }

   private:
    friend class modulo_hash;
    std::uint32_t n() const noexcept { return static_cast<std::uint32_t>(slots_.size()); }
    std::vector<std::uint32_t> slots_;
    detail::hash_eligibility elig_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.elig_ = detail::hash_eligibility(c);
    const std::uint64_t total = c.configured_weight();
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      std::uint64_t w = c.members()[i].weight();
      if (w == 0) continue;
      if (total > max_slots_) w = std::max<std::uint64_t>(1, w * max_slots_ / total);
      s.slots_.insert(s.slots_.end(), w, i);
    }
    return s;
  }

 private:
  std::uint32_t max_slots_;
};

}  // namespace lbkit
