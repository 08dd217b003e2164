// SPDX-License-Identifier: MIT
// rendezvous_hash: weighted highest-random-weight hashing.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Rendezvous (highest random weight) hashing (D. Thaler and C. Ravishankar, "Using
// Name-Based Mappings to Increase Hit Rates", IEEE/ACM ToN 1998), weighted by the logarithmic
// method (C. Schindelhauer and G. Schomaker, "Weighted Distributed Hash Tables", SPAA 2005):
// every member scores a key with weight / -ln(u), u a uniform hash of the key and the
// member's id, and the highest score wins. Shares follow the weights exactly in expectation,
// no state is kept beyond the member list, and when a member leaves only its keys move.
// Ineligible members are simply not scored, so their keys go to the runner-up. A pick
// without a key is random.
// The price is O(n) per pick (a hash and a logarithm per member): use it for small pools (up
// to a few hundred backends) and maglev for large ones.
// Thread safety: the state is thread-safe (immutable).
// Complexity: build O(n); pick O(n).
class rendezvous_hash {
 public:
  static constexpr bool keyed = true;
  struct local {};

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local&) const noexcept {
      if (!ctx.has_hash) [[unlikely]]
        return elig_.random(rng);
      std::uint32_t best = no_pick;
      double best_score = -1.0;
      for (const auto& c : cands_) {
        // u in (0, 1): the top 53 bits, offset by half a unit so that it is never 0 or 1.
        const double u =
            (static_cast<double>(hash_u64(ctx.hash, c.id_hash) >> 11) + 0.5) * 0x1.0p-53;
        const double score = c.weight / -std::log(u);
        if (score > best_score) best_score = score, best = c.member;
      }
      return best;
    }

   private:
    friend class rendezvous_hash;
    struct candidate {
      std::uint64_t id_hash;
      double weight;
      std::uint32_t member;
    };
    std::vector<candidate> cands_;  // eligible members only
    detail::hash_eligibility elig_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.elig_ = detail::hash_eligibility(c);
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (!c.eligible(i)) continue;
      // The configured weight, not the effective one, so that panic mode or slow start never
      // reshuffles keys.
      s.cands_.push_back(
          {hash_bytes(c.members()[i].id()), static_cast<double>(c.members()[i].weight()), i});
    }
    return s;
  }
};

}  // namespace lbkit
