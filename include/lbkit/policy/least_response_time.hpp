// SPDX-License-Identifier: MIT
// least_response_time: the faster, less loaded of two random backends, by peak EWMA latency.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lbkit/backend_state.hpp"
#include "lbkit/detail/clock.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Least response time as Finagle's P2C + PeakEwma balancer and Linkerd's proxy do it: draw
// two distinct eligible backends at random and pick the one with the lower cost
//
//     cost = latency estimate × (requests in flight + 1) × (1 + failure_penalty × f) / weight
//
// where the latency estimate is the backend's peak EWMA (backend_state::latency_at: peaks
// count at once, the rest decays with time constant `decay`) and f its consecutive failures,
// so that a backend failing fast does not look fast. A backend with no latency history costs
// 0 while it has nothing in flight — a new backend gets one request at once — and more than
// any measured backend while that request is under way, as Finagle's "penalty" does, so
// that a herd does not rush an unknown backend. As the estimate of an idle backend decays
// toward zero, a slow or failing backend that gets no traffic is tried again after a few
// decay times, which is how the policy notices a recovery without a health check.
// Ties go to the first drawn, i.e. at random.
//
// The decay is kept in each backend_state (the estimate is updated when a request ends,
// where no policy is at hand): build() sets it on every member, so two balancers with
// different decays over one registry would share the last one set.
// Thread safety: the state is thread-safe; pickers own their generators.
// Complexity: build O(n); pick O(1): two estimates (one exp each) and one clock read.
class least_response_time {
 public:
  struct local {};
  // It reads each backend's in-flight count and latency estimate.
  static constexpr bool counts_in_flight = true;
  static constexpr bool tracks_latency = true;

  least_response_time() noexcept : least_response_time(std::chrono::seconds(10)) {}
  // `decay` is clamped to at least 1 ms; `failure_penalty` to [0, 10^6] (NaN reads as 1).
  explicit least_response_time(std::chrono::nanoseconds decay,
                               double failure_penalty = 1.0) noexcept
      : decay_(std::max<std::chrono::nanoseconds>(decay, std::chrono::milliseconds(1))),
        failure_penalty_(std::isnan(failure_penalty) ? 1.0
                                                     : std::clamp(failure_penalty, 0.0, 1e6)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
      const auto n = static_cast<std::uint32_t>(cands_.size());
      if (n == 1) return cands_[0].member;
      const std::uint32_t a = rng.below(n);
      std::uint32_t b = rng.below(n - 1);
      b += b >= a;  // distinct from a
      const std::int64_t now = detail::coarse_now_ns();
      return cost(cands_[b], now) < cost(cands_[a], now) ? cands_[b].member : cands_[a].member;
    }

    // A member's current cost, as pick compares it (for tests and stats pages).
    double cost_of(std::uint32_t member, std::int64_t now_ns) const noexcept {
      for (const auto& c : cands_) {
        if (c.member == member) return cost(c, now_ns);
      }
      return -1;
    }

   private:
    friend class least_response_time;
    struct candidate {
      const backend_state* state;
      std::uint32_t member;
      double weight;  // > 0
    };

    // Measured costs are capped here; a busy backend without history costs
    // active × 2^1000 (~1e301 per request), above every measured cost and ordered by its
    // requests in flight, as Finagle's penalty + pending is.
    static constexpr double max_measured_cost = 1e300;

    double cost(const candidate& c, std::int64_t now) const noexcept {
      const double active = static_cast<double>(c.state->active());
      const double latency = c.state->latency_at(now);
      if (latency == 0) return std::ldexp(active, 1000);  // 0 while idle
      const double failures = static_cast<double>(c.state->consecutive_failures());
      return std::min(latency * (active + 1) * (1 + failure_penalty_ * failures) / c.weight,
                      max_measured_cost);
    }

    std::vector<candidate> cands_;
    double failure_penalty_ = 1.0;
  };

  state build(const candidate_set& c) const {
    state s;
    s.failure_penalty_ = failure_penalty_;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      c.members()[i].state().set_latency_decay(decay_);
      if (c.eligible(i)) {
        s.cands_.push_back({&c.members()[i].state(), i, static_cast<double>(c.weights()[i])});
      }
    }
    return s;
  }

  std::chrono::nanoseconds decay() const noexcept { return decay_; }
  double failure_penalty() const noexcept { return failure_penalty_; }

 private:
  std::chrono::nanoseconds decay_;
  double failure_penalty_;
};

}  // namespace lbkit
