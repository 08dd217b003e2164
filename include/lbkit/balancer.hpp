// SPDX-License-Identifier: MIT
// balancer<Policy>: binds a backend_registry to a selection policy and hands out leases.
//
// Control plane: on every registry version (through a subscription, on the writer's thread)
// the balancer decides which members may get new picks — healthy, not draining, weight > 0,
// or, below the panic threshold, every enabled member — builds the policy's state for them
// once, and publishes the result as a plan. Data plane: each thread owns a picker that
// follows the plans with one atomic load per pick and asks the policy for a member; the pick
// returns a lease that counts the request in flight and takes its outcome.
//
// Pick path: no lock, no allocation, no virtual call, no exception (docs/architecture.md,
// property 3 "The pick path"), except that the first pick after a new version copies one
// shared_ptr under a short lock and may free the previous plan.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lbkit/backend_registry.hpp"
#include "lbkit/backend_state.hpp"
#include "lbkit/detail/clock.hpp"
#include "lbkit/detail/publication.hpp"
#include "lbkit/result.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Why a pick found no backend.
enum class pick_error : std::uint8_t {
  none,                   // the lease holds a backend
  no_backends,            // the registry is empty
  no_available_backends,  // every backend is draining or has weight 0
  no_healthy_backends,    // none is healthy (panic disabled, or fail_on_panic set)
  member_unavailable,     // pick_member: no such backend, or it may not get new requests
};

constexpr std::string_view to_string(pick_error e) noexcept {
  switch (e) {
    case pick_error::none:
      return "none";
    case pick_error::no_backends:
      return "no backends";
    case pick_error::no_available_backends:
      return "every backend is draining or has weight 0";
    case pick_error::no_healthy_backends:
      return "no healthy backend";
    case pick_error::member_unavailable:
      return "the requested backend is gone or may not get new requests";
  }
  return "unknown";
}

// The result of a pick: a backend with a request counted in flight on it, or the reason
// there is none. Report the outcome with report(); a lease destroyed unreported ends its
// request with outcome::none. The backend's state stays valid while the lease lives, even
// if the backend is removed from the registry meanwhile.
// Thread safety: thread-compatible; move it to another thread if the request ends there.
class [[nodiscard]] lease {
 public:
  lease() noexcept = default;
  explicit lease(pick_error why) noexcept : why_(why) {}
  // Adopts a request already begun on `s` with begin_request(counting) (balancers and
  // custom pickers use this).
  explicit lease(backend_state& s, request_counting counting = {}) noexcept
      : state_(&s), why_(pick_error::none), counting_(counting) {}

  lease(lease&& o) noexcept
      : state_(std::exchange(o.state_, nullptr)), why_(o.why_), counting_(o.counting_) {}
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      release();
      state_ = std::exchange(o.state_, nullptr);
      why_ = o.why_;
      counting_ = o.counting_;
    }
    return *this;
  }
  ~lease() { release(); }

  // True when the lease holds a backend whose request has not been reported yet.
  explicit operator bool() const noexcept { return state_ != nullptr; }
  // Why there is no backend; pick_error::none for a lease that held one.
  pick_error error() const noexcept { return why_; }

  // The chosen backend. Only while the lease holds one.
  backend_state& backend() const noexcept { return *state_; }
  const std::string& id() const noexcept { return state_->id(); }
  const endpoint& address() const noexcept { return state_->address(); }

  // Ends the request with its outcome; latency feeds latency-aware policies. Later calls do
  // nothing.
  void report(outcome o, std::chrono::nanoseconds latency = {}) noexcept {
    if (state_) std::exchange(state_, nullptr)->end_request(o, latency, counting_);
  }
  // Ends the request without an outcome.
  void release() noexcept { report(outcome::none); }

 private:
  backend_state* state_ = nullptr;
  pick_error why_ = pick_error::no_backends;
  request_counting counting_;
};

// Slow start: a backend that was added or became healthy after the balancer was made gets
// a growing share of its weight over `window`, so that a cold cache or a JIT warm-up is not
// hit with full load at once. Its effective weight at time t after it became healthy is
//     weight × max(min_weight_percent / 100, (t / window) ^ (1 / aggression)),
// Envoy's formula (slow_start_config): aggression 1 is a linear ramp; above 1 the weight
// rises early and flattens, below 1 it stays low and rises late.
// Applies to every policy that is not keyed (not to hash policies: a ramp would move keys).
struct slow_start_options {
  std::chrono::milliseconds window{0};  // 0 disables slow start
  double aggression = 1.0;              // > 0
  double min_weight_percent = 10.0;     // in (0, 100]
};

// How a balancer chooses which members are eligible.
struct balancer_options {
  // Panic threshold, in percent of enabled members (not draining, weight > 0) that are
  // healthy. Below it the balancer spreads new picks over every enabled member, healthy or
  // not, rather than crush the few healthy ones (Envoy's panic mode). 0 disables panic mode.
  double panic_threshold = 50.0;
  // In panic, pick nothing at all (pick_error::no_healthy_backends), not even the healthy
  // members, instead of spreading: a cluster this degraded fails fast (Envoy's
  // fail_traffic_on_panic).
  bool fail_on_panic = false;
  // Seed of the policies' random start offsets and of the pickers' generators; 0 draws one
  // from std::random_device. Fix it for reproducible tests.
  std::uint64_t seed = 0;
  slow_start_options slow_start{};
};

// Checks options a user configured; the balancer itself clamps out-of-range values to the
// nearest valid one (a negative window to 0, a non-positive aggression to 1, the percents
// to their ranges), so check first to report them.
inline result<void> validate(const balancer_options& o) {
  if (!(o.panic_threshold >= 0 && o.panic_threshold <= 100)) {
    return make_error(errc::invalid_argument, "panic_threshold must be in [0, 100]");
  }
  if (o.slow_start.window.count() < 0) {
    return make_error(errc::invalid_argument, "slow_start.window must not be negative");
  }
  if (!(o.slow_start.aggression > 0 && std::isfinite(o.slow_start.aggression))) {
    return make_error(errc::invalid_argument, "slow_start.aggression must be a positive number");
  }
  if (!(o.slow_start.min_weight_percent > 0 && o.slow_start.min_weight_percent <= 100)) {
    return make_error(errc::invalid_argument, "slow_start.min_weight_percent must be in (0, 100]");
  }
  return {};
}

// Binds a registry to a policy. Thread safety: thread-safe; pickers are per thread.
// The registry must outlive the balancer, and the balancer every picker made from it.
template <selection_policy Policy>
class balancer {
 public:
  // What the pickers read: one registry version, decided and built.
  struct plan {
    std::uint64_t version;                    // registry version it was built from
    std::shared_ptr<const snapshot> members;  // keeps members (and states) alive
    std::vector<backend_state*> states;       // by member index, for the pick path
    std::vector<std::uint32_t> weights;       // effective weight by member index
    std::size_t eligible;                     // members with a non-zero effective weight
    bool panic;                               // below the panic threshold
    pick_error unavailable;                   // why nothing is eligible, if nothing is
    typename Policy::state policy_state;
    // Slow start: when each member began its ramp (0: not ramping), empty when none is; and
    // when the last ramp ends.
    std::vector<std::int64_t> ramp_start;
    std::int64_t ramp_end = 0;
  };

  balancer(backend_registry& registry, Policy policy = {}, balancer_options options = {})
      : policy_(std::move(policy)), options_(sanitize(options)) {
    if (options_.seed == 0) {
      std::random_device rd;
      options_.seed = (std::uint64_t{rd()} << 32 | rd()) | 1;
    }
    // The subscription calls rebuild() now, then once per registry version, serialised.
    subscription_ = registry.subscribe([this](const snapshot& s) { rebuild(s); });
  }
  balancer(const balancer&) = delete;
  balancer& operator=(const balancer&) = delete;

  // A per-thread picker. Thread safety of the result: not thread-safe; one per thread.
  class picker {
   public:
    explicit picker(const balancer& b)
        : owner_(&b),
          follower_(b.plans_),
          rng_(b.options_.seed ^ hash_u64(b.pickers_made_.fetch_add(1) + 1)) {}

    // Picks a backend for `context`. Complexity: one atomic load to follow the registry, the
    // policy's pick, and a load and a store on this thread's shard of the chosen backend's
    // totals, plus what the policy reads (counting_of<Policy>).
    lease pick(const pick_context& context = {}) noexcept {
      const plan& p = follow();
      if (p.eligible == 0) [[unlikely]]
        return lease(p.unavailable);
      std::uint32_t i = p.policy_state.pick(context, rng_, local_);
      if constexpr (!keyed_policy<Policy>) {
        if (ramping_) [[unlikely]]
          i = ramp(p, context, i);
      }
      if (i >= p.states.size() || p.weights[i] == 0) [[unlikely]] {
        return lease(pick_error::no_healthy_backends);
      }
      return start(p, i);
    }

    // A retry's pick: as pick(), but none of `tried` (the backends this request or
    // connection already failed on, in the order tried) while another backend is eligible, as
    // Envoy's previous_hosts retry predicate does. The policy picks again with the key
    // rehashed, up to three times (so a hash policy sends a key's retries the same way on
    // every balancer of a fleet); if each pick lands on a tried backend (a least-loaded
    // policy keeps choosing one that fails at once, since nothing stays in flight on it; in
    // panic every backend is eligible, the dead ones too), one of the other eligible backends
    // is drawn by weight (by the key, if any). With every eligible backend tried, the pick is
    // the last tried one still eligible (where Envoy's predicate ends up too). Slow start
    // does not apply. Complexity: up to three policy picks; then O(n * tried.size()) for the
    // draw, on a retry only. Allocation-free.
    lease pick_other(const pick_context& context,
                     std::span<const backend_state* const> tried) noexcept {
      const plan& p = follow();
      if (p.eligible == 0) [[unlikely]]
        return lease(p.unavailable);
      const auto was_tried = [&](const backend_state* s) {
        return std::find(tried.begin(), tried.end(), s) != tried.end();
      };
      std::uint64_t h = context.hash;
      for (int attempt = 0; attempt < 3; ++attempt) {
        h = hash_u64(h + 1);
        const std::uint32_t i = p.policy_state.pick(pick_context::for_hash(h), rng_, local_);
        if (i < p.states.size() && p.weights[i] != 0 && !was_tried(p.states[i])) {
          return start(p, i);
        }
      }
      std::uint64_t others = 0;
      for (std::size_t k = 0; k < p.states.size(); ++k) {
        if (!was_tried(p.states[k])) others += p.weights[k];
      }
      if (others == 0) {  // every eligible backend was tried: the latest of them
        for (auto t = tried.rbegin(); t != tried.rend(); ++t) {
          for (std::uint32_t k = 0; k < p.states.size(); ++k) {
            if (p.states[k] == *t && p.weights[k] != 0) return start(p, k);
          }
        }
        return lease(pick_error::no_healthy_backends);  // not reached: one is eligible
      }
      // By the key when there is one, so that a fleet agrees on this too; the bias of the
      // modulo is below others / 2^64.
      std::uint64_t r = (context.has_hash ? hash_u64(h + 1) : rng_.next()) % others;
      for (std::uint32_t k = 0; k < p.states.size(); ++k) {
        if (p.weights[k] == 0 || was_tried(p.states[k])) continue;
        if (r < p.weights[k]) return start(p, k);
        r -= p.weights[k];
      }
      return lease(pick_error::no_healthy_backends);  // not reached
    }
    // The same after one failure: not `avoid` while another backend is eligible.
    lease pick_other(const pick_context& context, const backend_state* avoid) noexcept {
      return pick_other(context, std::span<const backend_state* const>(&avoid, 1));
    }

    // A lease on the backend `id`, if it may get new requests now (eligible in the current
    // plan: healthy or the set is in panic, not draining, weight above 0); otherwise an
    // empty lease with pick_error::member_unavailable, and the caller picks normally. This is
    // how a sticky session (a cookie naming its backend) is honoured while the backend lasts.
    // The pin bypasses the policy, so slow start and bounded-load caps do not apply to it.
    // Complexity: the atomic load of pick(), then a binary search of the members by id.
    lease pick_member(std::string_view id) noexcept {
      const plan& p = follow();
      const auto* m = p.members->find(id);
      if (m == nullptr) return lease(pick_error::member_unavailable);
      const auto i = static_cast<std::size_t>(m - p.members->members().data());
      if (i >= p.states.size() || p.weights[i] == 0) return lease(pick_error::member_unavailable);
      return start(p, static_cast<std::uint32_t>(i));
    }

    // The plan the last pick used.
    const plan& current() const noexcept { return follower_.get(); }

   private:
    static lease start(const plan& p, std::uint32_t i) noexcept {
      p.states[i]->begin_request(counting_of<Policy>);
      return lease(*p.states[i], counting_of<Policy>);
    }

    // The newest plan: one atomic load, and a reset of the per-plan pick state when the
    // registry moved on.
    const plan& follow() noexcept {
      if (follower_.refresh()) [[unlikely]] {
        local_ = typename Policy::local{};
        ramping_ = !follower_.get().ramp_start.empty();
      }
      return follower_.get();
    }

    // Slow start by rejection: a pick of a ramping member stands with probability equal to
    // its ramp factor, else the policy picks again, so member i is chosen in proportion to
    // weight_i × factor_i (whatever the policy's own notion of proportion is), up to
    // `ramp_attempts` tries — after which the last pick stands, which bounds the cost and
    // matters only when nearly every member is ramping, when their ratios hardly differ.
    static constexpr int ramp_attempts = 8;
    std::uint32_t ramp(const plan& p, const pick_context& context, std::uint32_t i) noexcept {
      const std::int64_t now = detail::coarse_now_ns();
      if (now >= p.ramp_end) {
        ramping_ = false;  // every ramp of this plan is over
        return i;
      }
      for (int attempt = 1; attempt < ramp_attempts && i < p.ramp_start.size(); ++attempt) {
        if (p.ramp_start[i] == 0) break;
        const double f = owner_->ramp_factor(p.ramp_start[i], now);
        if (f >= 1 || static_cast<double>(rng_.next() >> 11) * 0x1p-53 < f) break;
        i = p.policy_state.pick(context, rng_, local_);
      }
      return i;
    }

    const balancer* owner_;
    detail::follower<plan> follower_;
    pick_rng rng_;
    typename Policy::local local_{};
    bool ramping_ = !follower_.get().ramp_start.empty();
  };

  picker make_picker() const { return picker(*this); }

  // The newest plan, for inspection (stats pages, tests).
  std::shared_ptr<const plan> current_plan() const { return plans_.load().first; }
  const balancer_options& options() const noexcept { return options_; }

 private:
  static balancer_options sanitize(balancer_options o) {
    if (!(o.panic_threshold >= 0)) o.panic_threshold = 0;  // also NaN
    o.panic_threshold = std::min(o.panic_threshold, 100.0);
    auto& ss = o.slow_start;
    ss.window = std::max(ss.window, std::chrono::milliseconds(0));
    if (!(ss.aggression > 0 && std::isfinite(ss.aggression))) ss.aggression = 1;
    if (!(ss.min_weight_percent > 0)) ss.min_weight_percent = 100;  // also NaN: no ramp
    ss.min_weight_percent = std::min(ss.min_weight_percent, 100.0);
    return o;
  }

  // The slow-start share of its weight a member gets `now`, having become healthy at `since`.
  double ramp_factor(std::int64_t since, std::int64_t now) const noexcept {
    const auto& ss = options_.slow_start;
    const double window = static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(ss.window).count());
    const double t = std::clamp(static_cast<double>(now - since) / window, 0.0, 1.0);
    return std::max(ss.min_weight_percent / 100, std::pow(t, 1 / ss.aggression));
  }

  void rebuild(const snapshot& s) {
    const auto ms = s.members();
    std::vector<backend_state*> states;
    std::vector<std::uint32_t> weights(ms.size(), 0);
    states.reserve(ms.size());
    std::size_t enabled = 0, healthy = 0;
    for (const auto& m : ms) {
      states.push_back(&m.state());
      if (m.draining() || m.weight() == 0) continue;
      ++enabled;
      healthy += m.state().current_health() == health::healthy;
    }
    // Panic when the healthy share of enabled members is below the threshold.
    const bool panic = enabled > 0 && static_cast<double>(healthy) * 100.0 <
                                          options_.panic_threshold * static_cast<double>(enabled);
    // In panic: every enabled member, or (fail_on_panic) none at all, as Envoy's
    // fail_traffic_on_panic. Otherwise the healthy enabled members.
    std::size_t eligible = 0;
    for (std::size_t i = 0; i < ms.size() && !(panic && options_.fail_on_panic); ++i) {
      const auto& m = ms[i];
      if (m.draining() || m.weight() == 0) continue;
      if (panic || m.state().current_health() == health::healthy) {
        weights[i] = m.weight();
        ++eligible;
      }
    }
    const pick_error unavailable = eligible > 0   ? pick_error::none
                                   : ms.empty()   ? pick_error::no_backends
                                   : enabled == 0 ? pick_error::no_available_backends
                                                  : pick_error::no_healthy_backends;
    // A seed per build: cursors restart somewhere new after every change, so that frequent
    // changes under light traffic do not send every first pick to the same backend.
    const std::uint64_t build_seed = hash_u64(plan_version_ + 1, options_.seed);
    // Slow start for members that became healthy (or were added) after the balancer was
    // made and less than a window ago.
    std::vector<std::int64_t> ramp_start;
    std::int64_t ramp_end = 0;
    if constexpr (!keyed_policy<Policy>) {
      const auto window =
          std::chrono::duration_cast<std::chrono::nanoseconds>(options_.slow_start.window).count();
      const std::int64_t now = detail::precise_now_ns();
      for (std::size_t i = 0; i < ms.size() && window > 0; ++i) {
        const std::int64_t since = ms[i].state().healthy_since();
        if (weights[i] == 0 || since <= created_at_ || now - since >= window) continue;
        if (ramp_start.empty()) ramp_start.resize(ms.size(), 0);
        ramp_start[i] = since;
        ramp_end = std::max(ramp_end, since + window);
      }
    }
    const candidate_set candidates(ms, weights, build_seed);
    auto state = [&] {
      if constexpr (incremental_policy<Policy>) {
        if (last_) return policy_.build(candidates, last_->policy_state);
      }
      return policy_.build(candidates);
    }();
    last_ = std::make_shared<const plan>(plan{s.version(), s.shared_from_this(), std::move(states),
                                              std::move(weights), eligible, panic, unavailable,
                                              std::move(state), std::move(ramp_start), ramp_end});
    plans_.publish(last_, ++plan_version_);
  }

  Policy policy_;
  balancer_options options_;
  const std::int64_t created_at_ = detail::precise_now_ns();
  detail::publication<plan> plans_;
  // Only rebuild() touches these, serialised by the registry.
  std::uint64_t plan_version_ = 0;
  std::shared_ptr<const plan> last_;
  mutable std::atomic<std::uint64_t> pickers_made_{0};
  subscription subscription_;  // last: unsubscribed first on destruction
};

}  // namespace lbkit
