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
// Pick path: no lock, no allocation, no virtual call, no exception (DESIGN.md property 3),
// except that the first pick after a new version copies one shared_ptr under a short lock
// and may free the previous plan.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lbkit/backend_registry.hpp"
#include "lbkit/backend_state.hpp"
#include "lbkit/detail/publication.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Why a pick found no backend.
enum class pick_error : std::uint8_t {
  none,                   // the lease holds a backend
  no_backends,            // the registry is empty
  no_available_backends,  // every backend is draining or has weight 0
  no_healthy_backends,    // none is healthy (panic disabled, or fail_on_panic set)
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
  // Adopts a request already begun on `s` (balancers and custom pickers use this).
  explicit lease(backend_state& s) noexcept : state_(&s), why_(pick_error::none) {}

  lease(lease&& o) noexcept : state_(std::exchange(o.state_, nullptr)), why_(o.why_) {}
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      release();
      state_ = std::exchange(o.state_, nullptr);
      why_ = o.why_;
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
    if (state_) std::exchange(state_, nullptr)->end_request(o, latency);
  }
  // Ends the request without an outcome.
  void release() noexcept { report(outcome::none); }

 private:
  backend_state* state_ = nullptr;
  pick_error why_ = pick_error::no_backends;
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
};

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
  };

  balancer(backend_registry& registry, Policy policy = {}, balancer_options options = {})
      : policy_(std::move(policy)), options_(options) {
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
        : follower_(b.plans_), rng_(b.options_.seed ^ hash_u64(b.pickers_made_.fetch_add(1) + 1)) {}

    // Picks a backend for `context`. Complexity: one atomic load to follow the registry, the
    // policy's pick, and two relaxed increments on the chosen backend's counters.
    lease pick(const pick_context& context = {}) noexcept {
      if (follower_.refresh()) [[unlikely]]
        local_ = typename Policy::local{};
      const plan& p = follower_.get();
      if (p.eligible == 0) [[unlikely]]
        return lease(p.unavailable);
      const std::uint32_t i = p.policy_state.pick(context, rng_, local_);
      if (i >= p.states.size() || p.weights[i] == 0) [[unlikely]] {
        return lease(pick_error::no_healthy_backends);
      }
      p.states[i]->begin_request();
      return lease(*p.states[i]);
    }

    // The plan the last pick used.
    const plan& current() const noexcept { return follower_.get(); }

   private:
    detail::follower<plan> follower_;
    pick_rng rng_;
    typename Policy::local local_{};
  };

  picker make_picker() const { return picker(*this); }

  // The newest plan, for inspection (stats pages, tests).
  std::shared_ptr<const plan> current_plan() const { return plans_.load().first; }
  const balancer_options& options() const noexcept { return options_; }

 private:
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
    auto state = policy_.build(candidate_set(ms, weights, build_seed));
    auto p = std::make_shared<const plan>(plan{s.version(), s.shared_from_this(), std::move(states),
                                               std::move(weights), eligible, panic, unavailable,
                                               std::move(state)});
    plans_.publish(std::move(p), ++plan_version_);
  }

  Policy policy_;
  balancer_options options_;
  detail::publication<plan> plans_;
  std::uint64_t plan_version_ = 0;  // only rebuild() touches it, serialised by the registry
  mutable std::atomic<std::uint64_t> pickers_made_{0};
  subscription subscription_;  // last: unsubscribed first on destruction
};

}  // namespace lbkit
