// SPDX-License-Identifier: MIT
// What every hash policy shares: which members are eligible right now, the deterministic
// fallback when a key's backend is not, and the random pick for a request without a key.
//
// The rule (docs/architecture.md, property 6 "Consistent hashing is consistent": keys of healthy
// backends never move): a hash policy builds its table over every member with a configured weight,
// whatever its health, so a backend going down changes nothing for the keys of the others. Only the
// keys whose backend is ineligible take a fallback, and that fallback is a pure function of the key
// and the table, so every balancer built from the same membership and health agrees on it.
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/hash.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit::detail {

class hash_eligibility {
 public:
  // Rehashes tried before the last resort. With half the members down, 16 attempts all miss
  // with probability 2^-16.
  static constexpr std::uint32_t attempts = 16;

  hash_eligibility() = default;
  explicit hash_eligibility(const candidate_set& c) : eligible_(c.size()) {
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      eligible_[i] = c.eligible(i);
      if (eligible_[i]) list_.push_back(i);
    }
  }

  bool eligible(std::uint32_t member) const noexcept { return eligible_[member] != 0; }
  bool all_eligible() const noexcept { return list_.size() == eligible_.size(); }

  // The pick every table-based hash policy makes: `lookup(h)` maps a hash to a member; a
  // key whose member is ineligible follows the rehash sequence, then the last resort; a
  // request without a key gets a random eligible member.
  template <class Lookup>
  std::uint32_t pick(const pick_context& ctx, pick_rng& rng, const Lookup& lookup) const noexcept {
    if (!ctx.has_hash) [[unlikely]]
      return random(rng);
    std::uint32_t m = lookup(ctx.hash);
    if (eligible(m)) [[likely]]
      return m;
    for (std::uint32_t k = 1; k <= attempts; ++k) {
      m = lookup(rehash(ctx.hash, k));
      if (eligible(m)) return m;
    }
    return last_resort(ctx.hash);
  }

  // A request without a key: any eligible member, at random.
  std::uint32_t random(pick_rng& rng) const noexcept {
    return list_[rng.below(static_cast<std::uint32_t>(list_.size()))];
  }

  // The k-th hash of the fallback sequence of `h` (k >= 1): a fresh, deterministic hash.
  static std::uint64_t rehash(std::uint64_t h, std::uint32_t k) noexcept {
    return hash_u64(h, 0x6c626b6974ULL + k);  // "lbkit" + k as the seed
  }

  // After `attempts` rehashes found nothing: the eligible member chosen by the key among the
  // eligible ones alone. Deterministic; reached with probability (1 - eligible share)^attempts.
  std::uint32_t last_resort(std::uint64_t h) const noexcept {
    return list_[static_cast<std::uint32_t>(((h >> 32) * list_.size()) >> 32)];
  }

 private:
  std::vector<std::uint8_t> eligible_;  // by member index
  std::vector<std::uint32_t> list_;     // eligible member indices
};

// Lemire's multiply-shift: a 64-bit hash to [0, n) without a division.
constexpr std::uint32_t reduce(std::uint64_t h, std::uint32_t n) noexcept {
  return static_cast<std::uint32_t>(((h >> 32) * n) >> 32);
}

}  // namespace lbkit::detail
