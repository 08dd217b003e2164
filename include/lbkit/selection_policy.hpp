// SPDX-License-Identifier: MIT
// The selection_policy concept and the vocabulary a policy works with: the candidates of one
// registry version (candidate_set) and what the caller keys a pick on (pick_context). The
// per-thread random generator every picker owns (pick_rng) is in random.hpp.
//
// A policy is a value (docs/architecture.md, property 4 "Policies are values"). Once per version,
// the balancer hands it the candidates and it builds an immutable `state` (a schedule, a hash
// table, a list of indices); on the pick path, each thread asks that state for a member index.
// Health, draining and the panic threshold are the balancer's business (property 5, "Health
// filtering is the balancer's job"): it tells the policy which candidates are eligible through
// their effective weights.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "lbkit/endpoint.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/random.hpp"
#include "lbkit/snapshot.hpp"

namespace lbkit {

// What a pick may be keyed on: a 64-bit hash, or nothing. Hash policies use it; the others
// ignore it. Build one with the named constructors so that every caller keys the same way.
// Thread safety: thread-compatible (a value type).
struct pick_context {
  std::uint64_t hash = 0;
  bool has_hash = false;

  // A 64-bit key (a user id, a shard number): mixed with hash_u64 so that sequential keys
  // spread.
  static constexpr pick_context for_key(std::uint64_t key) noexcept {
    return {hash_u64(key), true};
  }
  // Bytes: a header value, a cookie, a URL path.
  static constexpr pick_context for_bytes(std::string_view bytes) noexcept {
    return {hash_bytes(bytes), true};
  }
  // A client address, without its port: every connection of one client maps alike (ip_hash).
  static pick_context for_client(const ip_address& client) noexcept {
    return {hash_value(client), true};
  }
  // A full endpoint (address and port), e.g. one side of a flow.
  static pick_context for_endpoint(const endpoint& e) noexcept { return {hash_value(e), true}; }
  // An already-mixed 64-bit hash, used as it is.
  static constexpr pick_context for_hash(std::uint64_t h) noexcept { return {h, true}; }
};

// What a policy's pick returns when it has nothing to offer (the balancer then answers with
// an empty lease).
inline constexpr std::uint32_t no_pick = UINT32_MAX;

// The candidates of one registry version, as the balancer presents them to a policy's build.
// Thread safety: thread-compatible; valid only during the build call.
class candidate_set {
 public:
  candidate_set(std::span<const member> members, std::span<const std::uint32_t> weights,
                std::uint64_t seed) noexcept
      : members_(members), weights_(weights), seed_(seed) {
    for (auto w : weights) eligible_ += w != 0;
  }

  // Every member of the snapshot, sorted by id. Hash policies build their tables over these
  // (with member.weight()) so that a backend's health never moves another backend's keys.
  std::span<const member> members() const noexcept { return members_; }
  std::size_t size() const noexcept { return members_.size(); }
  // The sum of the members' configured weights, what hash tables are sized by.
  std::uint64_t configured_weight() const noexcept {
    std::uint64_t total = 0;
    for (const auto& m : members_) total += m.weight();
    return total;
  }

  // Each member's effective weight for new picks: its configured weight, or 0 when it must
  // not get new picks now (unhealthy outside panic mode, draining, weight 0).
  std::span<const std::uint32_t> weights() const noexcept { return weights_; }
  bool eligible(std::size_t i) const noexcept { return weights_[i] != 0; }
  // How many members are eligible; the balancer never asks for a pick when this is 0.
  std::size_t eligible_count() const noexcept { return eligible_; }

  // A seed for anything random in the state (start offsets): different for every build, and
  // derived from balancer_options::seed so that tests can make it reproducible. Hash tables
  // must not depend on it (independent balancers must agree).
  std::uint64_t seed() const noexcept { return seed_; }

 private:
  std::span<const member> members_;
  std::span<const std::uint32_t> weights_;
  std::uint64_t seed_;
  std::size_t eligible_ = 0;
};

// A selection policy: a value that builds per-version state and picks from it.
// Requirements, for a policy type P:
//   1. P is copy-constructible (a balancer keeps its own copy as configuration).
//   2. P::state is the immutable per-version state, built by `p.build(candidates)`; the
//      balancer builds it once per registry version, off the pick path, and shares it with
//      every thread. Its mutable parts, if any, must be thread-safe (atomics).
//   3. P::local is default-constructible per-thread scratch (a cursor); each picker owns one
//      and resets it to P::local{} whenever it moves to a new state.
//   4. `state.pick(context, rng, local)` is noexcept and returns the index of an eligible
//      member of the candidate set the state was built from, or no_pick. It is called only
//      when at least one candidate is eligible. It must not lock, allocate or throw.
template <class P>
concept selection_policy = std::copy_constructible<P> &&
    std::default_initializable<typename P::local> &&
    requires(const P& policy, const candidate_set& candidates, const typename P::state& state,
             const pick_context& context, pick_rng& rng, typename P::local& local) {
  { policy.build(candidates) } -> std::same_as<typename P::state>;
  { state.pick(context, rng, local) }
  noexcept->std::same_as<std::uint32_t>;
};

// Optional, for a policy whose state depends on the order of changes (AnchorHash): it also
// builds from the state of the previous version, `policy.build(candidates, previous)`. The
// balancer calls that form for every version after its first. `previous` was built from the
// previous snapshot, whose member indices may differ: the state must keep whatever it needs
// (ids) to carry its mapping over.
template <class P>
concept incremental_policy = selection_policy<P> &&
    requires(const P& policy, const candidate_set& candidates, const typename P::state& previous) {
  { policy.build(candidates, previous) } -> std::same_as<typename P::state>;
};

// Optional: a policy that maps keys to backends declares `static constexpr bool keyed = true`.
// The balancer then never overrides its choice (slow start does not apply: it would move
// keys).
template <class P>
inline constexpr bool keyed_policy = requires {
  requires P::keyed;
};

// Optional: what a policy reads of the backends' load, so that its balancer counts that and
// only that on every lease (docs/architecture.md, "The pick path"). Each is a
// `static constexpr bool` member set to true:
//   counts_in_flight  it reads backend_state::active(), the exact in-flight count (one
//                     relaxed atomic increment per pick and per release on the backend's
//                     shared line). Without it, active() does not count this balancer's
//                     requests.
//   counts_total      it reads backend_state::total_in_flight(), the registry-wide count
//                     (one more, on one of the registry's shards).
//   tracks_latency    it reads the latency estimate (latency_at): reports feed it (a CAS
//                     on the backend's shared line per report with a latency).
// Every lease is also counted in the backend's per-thread totals, whatever the policy.
template <class P>
inline constexpr bool in_flight_counting_policy = requires {
  requires P::counts_in_flight;
};
template <class P>
inline constexpr bool total_counting_policy = requires {
  requires P::counts_total;
};
template <class P>
inline constexpr bool latency_tracking_policy = requires {
  requires P::tracks_latency;
};
template <class P>
inline constexpr request_counting counting_of{in_flight_counting_policy<P>,
                                              total_counting_policy<P>, latency_tracking_policy<P>};

}  // namespace lbkit
