// SPDX-License-Identifier: MIT
// bounded_load<Hash>: consistent hashing that never lets a backend carry much more than its
// share of the requests in flight.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "lbkit/backend_state.hpp"
#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// A hash policy whose state maps any hash to a member index with `lookup(h)` (ring_hash,
// maglev, anchor_hash).
template <class H>
concept lookup_hash_policy = selection_policy<H> && keyed_policy<H> &&
    requires(const typename H::state& s, std::uint64_t h) {
  { s.lookup(h) }
  noexcept->std::same_as<std::uint32_t>;
};

// Consistent hashing with bounded loads (V. Mirrokni, M. Thorup, M. Zadimoghaddam,
// "Consistent Hashing with Bounded Loads", SODA 2018; Vimeo's and HAProxy's
// hash-balance-factor): no backend takes a new request while it already carries
//     ceil(balance_factor × (in flight + 1) × weight / total weight)
// requests, in flight counting every request of the registry picked through a bounded-load
// balancer (the balancer counts them for it; leases of other balancers over the same
// registry are not in the total but are in each backend's load, which only tightens the
// caps). A key goes where `Hash` sends it (its own backend, or Hash's fallback when that one
// is unhealthy or draining) while that backend has room; otherwise it follows its probe
// sequence — the rehashes of detail::hash_eligibility — to the first eligible backend with
// room. So with room everywhere, bounded_load<Hash> picks exactly as Hash does.
// With c = balance_factor > 1 the capacities add up to more than the load, so a backend
// with room always exists; the paper shows that keys then move little (a key moves only when its
// backend fills up or the membership changes) and that the expected number of probes is
// O(1/(c-1)^2) for linear probing on a ring. This class probes by rehashing instead: full backends
// hold less than 1/c of the key space (their capacities, at least their weight shares of c × load,
// add up to less than the load), so each probe finds room with probability above 1 - 1/c, and the
// expected number of probes is below 1/(1 - 1/c) = 5 at c = 1.25 however the load lies. After
// `max_probes` probes without room (probability below 0.8^32 = 8e-4) the least loaded eligible
// backend seen is taken.
//
// Thread safety: the state is thread-safe; pickers own their generators.
// Complexity: pick O(1) expected: Hash's lookup per probe, plus 8 loads for the total.
template <lookup_hash_policy Hash>
class bounded_load {
 public:
  static constexpr bool keyed = true;
  // It reads each backend's in-flight count and the registry's total.
  static constexpr bool counts_in_flight = true;
  static constexpr bool counts_total = true;
  using local = typename Hash::local;
  static constexpr std::uint32_t max_probes = 32;

  bounded_load() noexcept(std::is_nothrow_default_constructible_v<Hash>) : bounded_load(1.25) {}
  // `balance_factor` is clamped to [1, 100]; NaN reads as the default 1.25.
  explicit bounded_load(double balance_factor, Hash hash = {})
      : hash_(std::move(hash)),
        factor_(std::isnan(balance_factor) ? 1.25 : std::clamp(balance_factor, 1.0, 100.0)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local& l) const noexcept {
      if (!ctx.has_hash || members_.empty()) [[unlikely]]
        return inner_.pick(ctx, rng, l);
      // Capacity of member m: ceil(scale × weight_m), the request about to go counted in.
      // Every capacity is at least 1, so an idle member needs no total (the common case at
      // low concurrency skips reading it).
      double scale = -1;
      std::uint32_t best = no_pick;
      double best_load = 0;
      for (std::uint32_t k = 0; k < max_probes; ++k) {
        const std::uint32_t m = k == 0
                                    ? inner_.pick(ctx, rng, l)
                                    : inner_.lookup(detail::hash_eligibility::rehash(ctx.hash, k));
        const auto& c = members_[m];
        if (c.weight == 0) continue;
        const std::int64_t active_count = c.state->active();
        if (active_count == 0) return m;
        if (scale < 0) {
          scale = factor_ * static_cast<double>(any_->total_in_flight() + 1) / total_weight_;
        }
        const auto active = static_cast<double>(active_count);
        if (active < std::ceil(scale * c.weight)) return m;
        if (best == no_pick || (active + 1) / c.weight < best_load) {
          best = m;
          best_load = (active + 1) / c.weight;
        }
      }
      return best != no_pick ? best : inner_.pick(ctx, rng, l);
    }

    const typename Hash::state& inner() const noexcept { return inner_; }

   private:
    friend class bounded_load;
    struct member_load {
      const backend_state* state;
      double weight;  // effective weight; 0 when not eligible
    };
    typename Hash::state inner_;
    std::vector<member_load> members_;    // by member index
    const backend_state* any_ = nullptr;  // to read the registry's total in flight
    double total_weight_ = 0;
    double factor_ = 1.25;
  };

  state build(const candidate_set& c) const {
    state s;
    s.inner_ = hash_.build(c);
    s.factor_ = factor_;
    if (c.eligible_count() == 0) return s;
    s.members_.reserve(c.size());
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      s.members_.push_back({&c.members()[i].state(), static_cast<double>(c.weights()[i])});
      s.total_weight_ += c.weights()[i];
    }
    s.any_ = s.members_.front().state;
    return s;
  }

  double balance_factor() const noexcept { return factor_; }

 private:
  Hash hash_;
  double factor_;
};

}  // namespace lbkit
