// SPDX-License-Identifier: MIT
// outlier_detector: passive health checking from the outcomes that leases report. It reads
// each backend's live counters, ejects backends that fail real traffic, and restores them
// after an ejection time that grows with repeated ejections — Envoy's outlier detection
// (outlier_detection.proto), written anew. I/O free and clock free: call evaluate(now)
// periodically (health_checker can, or your own loop).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lbkit/backend_registry.hpp"
#include "lbkit/result.hpp"

namespace lbkit {

// Which ejections an active check that passes ends before their time (see docs/health.md).
enum class uneject_on_check : std::uint8_t {
  // Ejections for consecutive connection failures (outcome::connection_failure: refused,
  // reset, connect timeout), which an active check observes too: a backend that was down
  // and is back gets traffic once its checks pass, not only when the ejection time is up.
  // Ejections for bad answers (5xx, success rate) keep their time, since a backend can
  // answer its health check and still fail real requests.
  connection_failures,
  all,   // every ejection (Envoy's successful_active_health_check_uneject_host)
  none,  // none: only the ejection time ends an ejection
};

// What outlier detection looks for, and how hard it acts. Defaults are Envoy's.
struct outlier_detection_options {
  // Consecutive failed requests that eject a backend at the next evaluation (Envoy
  // consecutive_5xx: 5). 0 disables.
  std::uint32_t consecutive_failures = 5;
  // Consecutive gateway failures (outcome::gateway_failure and connection_failure: refused,
  // reset, timed out, HTTP 502/503/504) that eject (Envoy consecutive_gateway_failure: 5, but
  // not enforced by default). 0 disables; off by default, as in Envoy.
  std::uint32_t consecutive_gateway_failures = 0;
  // Which ejections a passing active check ends early (then slow start applies).
  uneject_on_check passing_check_ends = uneject_on_check::connection_failures;
  // The window of the statistical checks below (Envoy interval: 10 s).
  std::chrono::milliseconds interval{10'000};
  // An ejection lasts base_ejection_time × the number of times the backend was ejected, at
  // most max_ejection_time (Envoy: 30 s and 300 s). The count drops by one for every
  // interval the backend spends un-ejected, so a backend that behaves is forgiven.
  std::chrono::milliseconds base_ejection_time{30'000};
  std::chrono::milliseconds max_ejection_time{300'000};
  // At most this share of the backends is ejected at once (Envoy: 10%), but one backend may
  // always be ejected.
  double max_ejection_percent = 10;

  // Success rate: among backends with at least success_rate_request_volume requests in the
  // interval, when there are at least success_rate_minimum_hosts of them, eject those whose
  // success rate is below mean - success_rate_stdev_factor × stdev (Envoy: 5 hosts, 100
  // requests, factor 1.9).
  bool success_rate = true;
  std::uint32_t success_rate_minimum_hosts = 5;
  std::uint32_t success_rate_request_volume = 100;
  double success_rate_stdev_factor = 1.9;

  // Failure percentage: among backends with at least failure_percentage_request_volume
  // requests, when there are at least failure_percentage_minimum_hosts, eject those whose
  // failure percentage is at least failure_percentage_threshold (Envoy: off by default; 5
  // hosts, 50 requests, 85%).
  bool failure_percentage = false;
  std::uint32_t failure_percentage_minimum_hosts = 5;
  std::uint32_t failure_percentage_request_volume = 50;
  double failure_percentage_threshold = 85;
};

inline result<void> validate(const outlier_detection_options& o) {
  if (o.interval.count() <= 0 || o.base_ejection_time.count() <= 0 ||
      o.max_ejection_time < o.base_ejection_time) {
    return make_error(errc::invalid_argument,
                      "outlier detection: interval and base_ejection_time must be positive and "
                      "max_ejection_time at least base_ejection_time");
  }
  if (!(o.max_ejection_percent >= 0 && o.max_ejection_percent <= 100)) {
    return make_error(errc::invalid_argument,
                      "outlier detection: max_ejection_percent must be in [0, 100]");
  }
  if (!(o.success_rate_stdev_factor >= 0 && std::isfinite(o.success_rate_stdev_factor))) {
    return make_error(errc::invalid_argument,
                      "outlier detection: success_rate_stdev_factor must be a non-negative number");
  }
  if (!(o.failure_percentage_threshold >= 0 && o.failure_percentage_threshold <= 100)) {
    return make_error(errc::invalid_argument,
                      "outlier detection: failure_percentage_threshold must be in [0, 100]");
  }
  return {};
}

// Why a backend was ejected.
enum class ejection_reason : std::uint8_t {
  consecutive_failures,
  consecutive_gateway_failures,
  // Either consecutive count reached its threshold with connection failures only.
  consecutive_connection_failures,
  success_rate,
  failure_percentage,
};

constexpr std::string_view to_string(ejection_reason r) noexcept {
  switch (r) {
    case ejection_reason::consecutive_failures:
      return "consecutive failures";
    case ejection_reason::consecutive_gateway_failures:
      return "consecutive gateway failures";
    case ejection_reason::consecutive_connection_failures:
      return "consecutive connection failures";
    case ejection_reason::success_rate:
      return "success rate";
    case ejection_reason::failure_percentage:
      return "failure percentage";
  }
  return "unknown";
}

// Ejects and restores the backends of one registry.
// Thread safety: not thread-safe; one thread calls evaluate(). The registry must outlive it.
class outlier_detector {
 public:
  using clock = std::chrono::steady_clock;

  // An ejection or a restoration, as evaluate() reports it.
  struct event {
    std::string id;
    bool ejected;             // false: restored
    ejection_reason reason;   // why it was ejected (for a restoration: why it had been)
    clock::time_point until;  // ejected: when it will be restored
  };

  // Options must be valid (see validate()).
  outlier_detector(backend_registry& registry, outlier_detection_options options = {},
                   clock::time_point now = clock::now())
      : registry_(registry), options_(options), window_start_(now) {
    // Counting starts now: requests that ended before the detector existed are not judged.
    for (const auto& m : registry_.current()->members()) {
      records_.emplace(m.id(), record::start(m.state()));
    }
  }

  // Looks at every backend's counters now: restores backends whose ejection time passed,
  // ejects backends over the consecutive-failure threshold and, once per interval, those
  // the statistical checks single out. Writes the changes to the registry as one batch and
  // returns them. Complexity: O(n log n) for n backends.
  std::vector<event> evaluate(clock::time_point now) {
    const auto snap = registry_.current();
    std::vector<event> events;
    std::map<std::string, record, std::less<>> next;
    std::size_t ejected = 0;
    for (const auto& m : snap->members()) {
      // A backend removed and added again is a new backend: new counters, a clean record.
      auto it = records_.find(m.id());
      record r = it != records_.end() && it->second.serial == m.state().serial()
                     ? it->second
                     : record::start(m.state());
      if (r.ejected && !m.state().ejected()) {
        // Restored by someone else: a passing active check (health_checker), an operator.
        // The failures counted since the ejection count from here on.
        r.ejected = false;
        r.restored_at = now;
      } else if (r.ejected && now >= r.until) {
        r.ejected = false;
        r.restored_at = now;
        r.set_bases(m.state());
        events.push_back({m.id(), false, r.reason, now});
      }
      ejected += r.ejected;
      next.emplace(m.id(), r);
    }
    records_ = std::move(next);
    const std::size_t limit =
        std::max<std::size_t>(1, static_cast<std::size_t>(static_cast<double>(snap->size()) *
                                                          options_.max_ejection_percent / 100));
    auto eject = [&](const member& m, record& r, ejection_reason why) {
      if (r.ejected || ejected >= limit || options_.max_ejection_percent == 0) return;
      ++r.ejections;
      const auto time =
          std::min(options_.base_ejection_time * r.ejections, options_.max_ejection_time);
      r.ejected = true;
      r.reason = why;
      r.until = now + time;
      r.set_bases(m.state());
      ++ejected;
      events.push_back({m.id(), true, why, r.until});
    };

    // Consecutive (gateway) failures, counted since the last restoration.
    auto streak = [](std::uint64_t count, std::uint64_t& base) {
      if (count < base) base = 0;  // another outcome reset the count since
      return count - base;
    };
    for (const auto& m : snap->members()) {
      record& r = records_.find(m.id())->second;
      const auto gateway = streak(m.state().consecutive_gateway_failures(), r.gateway_base);
      const auto any = streak(m.state().consecutive_failures(), r.failure_base);
      const auto connection =
          streak(m.state().consecutive_connection_failures(), r.connection_base);
      auto reached = [&](std::uint64_t count, std::uint32_t threshold) {
        return threshold != 0 && count >= threshold;
      };
      // The reason names connection failures when those alone make the streak that ejects.
      if (reached(gateway, options_.consecutive_gateway_failures)) {
        eject(m, r,
              connection >= gateway ? ejection_reason::consecutive_connection_failures
                                    : ejection_reason::consecutive_gateway_failures);
      } else if (reached(any, options_.consecutive_failures)) {
        eject(m, r,
              connection >= any ? ejection_reason::consecutive_connection_failures
                                : ejection_reason::consecutive_failures);
      }
    }

    if (now - window_start_ >= options_.interval) {
      evaluate_window(*snap, eject);
      window_start_ = now;
    }

    if (!events.empty()) {
      change_set cs;
      for (const auto& e : events) cs.eject(e.id, e.ejected ? ending(e.reason) : ejection::none);
      (void)registry_.apply(cs);  // only fails for a backend removed meanwhile: nothing to do
    }
    return events;
  }

  // What ends an ejection for `why` besides its time, by passing_check_ends.
  ejection ending(ejection_reason why) const noexcept {
    const bool check_ends = options_.passing_check_ends == uneject_on_check::all ||
                            (options_.passing_check_ends == uneject_on_check::connection_failures &&
                             why == ejection_reason::consecutive_connection_failures);
    return check_ends ? ejection::until_check : ejection::timed;
  }

  // Whether the detector has a backend ejected, and how many times it ejected it.
  bool is_ejected(std::string_view id) const {
    auto it = records_.find(id);
    return it != records_.end() && it->second.ejected;
  }
  std::uint32_t ejections(std::string_view id) const {
    auto it = records_.find(id);
    return it != records_.end() ? it->second.ejections : 0;
  }
  const outlier_detection_options& options() const noexcept { return options_; }

 private:
  struct record {
    std::uint64_t serial;     // identity: the counters below are this state's
    std::uint64_t successes;  // counters at the start of the window
    std::uint64_t failures;
    // Consecutive counts already acted on: a streak counts from these.
    std::uint64_t failure_base = 0;
    std::uint64_t gateway_base = 0;
    std::uint64_t connection_base = 0;
    std::uint32_t ejections = 0;
    bool ejected = false;
    ejection_reason reason = ejection_reason::consecutive_failures;
    clock::time_point until{};
    clock::time_point restored_at{};

    static record start(const backend_state& s) {
      const request_totals t = s.totals();
      return {s.serial(), t.of(outcome::success), t.failed()};
    }
    void set_bases(const backend_state& s) noexcept {
      failure_base = s.consecutive_failures();
      gateway_base = s.consecutive_gateway_failures();
      connection_base = s.consecutive_connection_failures();
    }
  };

  template <class Eject>
  void evaluate_window(const snapshot& snap, Eject& eject) {
    struct sample {
      const member* m;
      double volume;
      double success_rate;  // percent
    };
    std::vector<sample> samples;
    for (const auto& m : snap.members()) {
      record& r = records_.find(m.id())->second;
      // One read of the summed counts: what ends between two reads falls in the next window,
      // not in neither.
      const request_totals t = m.state().totals();
      const std::uint64_t s = t.of(outcome::success) - r.successes;
      const std::uint64_t f = t.failed() - r.failures;
      r.successes = t.of(outcome::success);
      r.failures = t.failed();
      // A backend that spent the whole interval un-ejected is forgiven one ejection.
      if (!r.ejected && r.restored_at <= window_start_ && r.ejections > 0) --r.ejections;
      const auto volume = static_cast<double>(s + f);
      if (r.ejected || volume == 0) continue;
      samples.push_back({&m, volume, 100.0 * static_cast<double>(s) / volume});
    }
    if (options_.success_rate) {
      std::vector<const sample*> qualified;
      for (const auto& x : samples) {
        if (x.volume >= options_.success_rate_request_volume) qualified.push_back(&x);
      }
      if (!qualified.empty() && qualified.size() >= options_.success_rate_minimum_hosts) {
        double mean = 0, var = 0;
        for (const auto* x : qualified) mean += x->success_rate;
        mean /= static_cast<double>(qualified.size());
        for (const auto* x : qualified) var += (x->success_rate - mean) * (x->success_rate - mean);
        const double stdev = std::sqrt(var / static_cast<double>(qualified.size()));
        const double threshold = mean - options_.success_rate_stdev_factor * stdev;
        for (const auto* x : qualified) {
          if (x->success_rate < threshold) {
            eject(*x->m, records_.find(x->m->id())->second, ejection_reason::success_rate);
          }
        }
      }
    }
    if (options_.failure_percentage) {
      std::size_t qualified = 0;
      for (const auto& x : samples) {
        qualified += x.volume >= options_.failure_percentage_request_volume;
      }
      if (qualified > 0 && qualified >= options_.failure_percentage_minimum_hosts) {
        for (const auto& x : samples) {
          if (x.volume >= options_.failure_percentage_request_volume &&
              100 - x.success_rate >= options_.failure_percentage_threshold) {
            eject(*x.m, records_.find(x.m->id())->second, ejection_reason::failure_percentage);
          }
        }
      }
    }
  }

  backend_registry& registry_;
  outlier_detection_options options_;
  clock::time_point window_start_;
  std::map<std::string, record, std::less<>> records_;
};

}  // namespace lbkit
