// SPDX-License-Identifier: MIT
// health_tracker: the rise/fall state machine of active health checking for one backend, and
// its probe schedule. It does no I/O and reads no clock: the caller probes (with lbkit's
// probes or its own event loop), reports each answer with the time, and asks when to probe
// next. health_checker drives one per backend; so can any event loop.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>

#include "lbkit/backend_state.hpp"
#include "lbkit/health/probe.hpp"
#include "lbkit/random.hpp"
#include "lbkit/result.hpp"

namespace lbkit {

// How active checks run. The defaults are HAProxy's where it has one (rise 2, fall 3,
// inter 2 s) and the reason is given where lbkit chose.
struct health_check_options {
  // Consecutive successes that bring a down backend up, and failures that bring an up one
  // down (HAProxy `rise 2 fall 3`): one lost probe does not eject a backend, and a backend
  // must answer twice before it gets traffic again.
  std::uint32_t rise = 2;
  std::uint32_t fall = 3;
  // Time between probes of a backend that is steadily up (HAProxy `inter 2s`).
  std::chrono::milliseconds interval{2000};
  // While a backend is between states (up with failures, or down with successes): faster,
  // so that a failing backend is ejected, and a recovering one restored, sooner (HAProxy
  // `fastinter`; lbkit's default is half the interval).
  std::chrono::milliseconds fast_interval{1000};
  // While a backend is steadily down: slower, to spare a struggling host (HAProxy
  // `downinter`; lbkit's default is twice the interval).
  std::chrono::milliseconds down_interval{4000};
  // A probe's deadline, measured from its start (HAProxy `timeout check`; Envoy's timeout).
  std::chrono::milliseconds timeout{1000};
  // Each wait is scaled by a random factor in [1 - jitter, 1 + jitter], and the first probe
  // comes at a random point of the first interval, so that a fleet of checkers does not
  // probe in lockstep (HAProxy `spread-checks`, Envoy `interval_jitter_percent`).
  double jitter = 0.1;
};

// Checks options a user configured: thresholds at least 1, intervals and timeout positive,
// jitter in [0, 1).
inline result<void> validate(const health_check_options& o) {
  if (o.rise == 0 || o.fall == 0) {
    return make_error(errc::invalid_argument, "health check rise and fall must be at least 1");
  }
  if (o.interval.count() <= 0 || o.fast_interval.count() <= 0 || o.down_interval.count() <= 0) {
    return make_error(errc::invalid_argument, "health check intervals must be positive");
  }
  if (o.timeout.count() <= 0) {
    return make_error(errc::invalid_argument, "health check timeout must be positive");
  }
  if (!(o.jitter >= 0 && o.jitter < 1)) {
    return make_error(errc::invalid_argument, "health check jitter must be in [0, 1)");
  }
  return {};
}

// The rise/fall state of one backend. Thread safety: not thread-safe; one owner (a checker
// thread, an event loop) feeds it.
class health_tracker {
 public:
  using clock = probe_clock;

  // A change of state and the answer that caused it.
  struct transition {
    health from;
    health to;
    probe_result cause;
  };

  // Starts in `initial` (a checker passes the backend's current health), with the first
  // probe due at a random point of [now, now + interval). `seed` makes the jitter
  // reproducible; give every backend its own. Options must be valid (see validate()).
  health_tracker(const health_check_options& options, health initial, clock::time_point now,
                 std::uint64_t seed) noexcept
      : options_(options), state_(initial), rng_(seed) {
    next_ = now + std::chrono::duration_cast<clock::duration>(options_.interval * unit());
  }

  // Feeds one probe answer received at `now`; returns the transition if the state changed.
  // Schedules the next probe. A probe_status::local_error counts neither way (the fault is
  // this host's, not the backend's); the next probe then comes after fast_interval.
  std::optional<transition> report(const probe_result& r, clock::time_point now) {
    std::optional<transition> changed;
    if (r.status == probe_status::local_error) {
      last_ = r;
      next_ = now + std::chrono::duration_cast<clock::duration>(options_.fast_interval * spread());
      return changed;
    }
    if (r.healthy()) {
      failures_ = 0;
      if (state_ != health::healthy && ++successes_ >= options_.rise) {
        changed = transition{state_, health::healthy, r};
        state_ = health::healthy;
        successes_ = 0;
      }
    } else {
      successes_ = 0;
      if (state_ == health::healthy && ++failures_ >= options_.fall) {
        changed = transition{state_, health::unhealthy, r};
        state_ = health::unhealthy;
        failures_ = 0;
      }
    }
    last_ = r;
    next_ = now + std::chrono::duration_cast<clock::duration>(current_interval() * spread());
    return changed;
  }

  health state() const noexcept { return state_; }
  // Consecutive answers toward the other state (successes while down, failures while up).
  std::uint32_t streak() const noexcept {
    return state_ == health::healthy ? failures_ : successes_;
  }
  // When the next probe is due.
  clock::time_point next_probe() const noexcept { return next_; }
  // The wait before the next probe, before jitter: fast while between states.
  std::chrono::milliseconds current_interval() const noexcept {
    if (streak() > 0) return options_.fast_interval;
    return state_ == health::healthy ? options_.interval : options_.down_interval;
  }
  // The last answer reported, if any.
  const std::optional<probe_result>& last() const noexcept { return last_; }
  const health_check_options& options() const noexcept { return options_; }

 private:
  // A uniform number in [0, 1).
  double unit() noexcept { return static_cast<double>(rng_.next() >> 11) * 0x1p-53; }
  // A factor in [1 - jitter, 1 + jitter).
  double spread() noexcept { return 1 + options_.jitter * (2 * unit() - 1); }

  health_check_options options_;
  health state_;
  std::uint32_t successes_ = 0;
  std::uint32_t failures_ = 0;
  pick_rng rng_;
  clock::time_point next_;
  std::optional<probe_result> last_;
};

}  // namespace lbkit
