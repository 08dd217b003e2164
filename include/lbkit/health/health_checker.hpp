// SPDX-License-Identifier: MIT
// health_checker<Probe>: an optional runner that probes every backend of a registry on its
// own threads, tracks each with a health_tracker, and writes the verdicts back to the
// registry (so that every balancer over it stops or resumes picking the backend) and to
// listeners. Users with their own event loop skip it and drive health_trackers themselves.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <random>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "lbkit/backend_registry.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/health/health_tracker.hpp"
#include "lbkit/health/outlier_detector.hpp"
#include "lbkit/health/probe.hpp"

namespace lbkit {

// How the checker runs.
struct health_checker_options {
  health_check_options check{};
  // Probes in flight at once, each on its own worker thread (lbkit's probes block). A dead
  // backend holds a worker for the probe timeout, so size this as roughly
  // (backends / interval) × timeout for the worst case you want to keep up with.
  std::uint32_t concurrency = 8;
  // Seed of the probe schedules' jitter; 0 draws one from std::random_device.
  std::uint64_t seed = 0;
  // Passive outlier detection, run by the checker's scheduling thread every
  // `outlier_tick` (its consecutive-failure check runs then; its statistical checks once
  // per outlier interval). Off when empty.
  std::optional<outlier_detection_options> outlier{};
  std::chrono::milliseconds outlier_tick{1000};
};

// A change of a backend's health, as listeners see it.
struct health_event {
  std::string id;
  endpoint address;
  health from;
  health to;
  probe_result cause;
  // False: active checks changed their verdict (from/to). True: outlier detection ejected
  // (to = unhealthy) or restored (to = healthy) the backend; the active verdict is unchanged.
  bool passive = false;
};

// Probes the backends of a registry and writes their health to it.
// Thread safety: thread-safe. The registry must outlive the checker. Listeners run on the
// checker's scheduling thread, one at a time; they must not block for long and must not
// call stop() or destroy the checker.
// Shutdown: stop() (or the destructor) returns within about one probe timeout: it waits for
// the probes in flight, which end by their deadlines.
template <health_probe Probe>
class health_checker {
 public:
  using listener = std::function<void(const health_event&)>;

  // Starts checking at once. Backends keep their registry health until their trackers decide
  // otherwise (a backend added unhealthy needs `rise` good answers). Options must be valid
  // (see validate(health_check_options)); concurrency is at least 1.
  health_checker(backend_registry& registry, Probe probe, health_checker_options options = {})
      : registry_(registry), probe_(std::move(probe)), options_(options) {
    options_.concurrency = std::max<std::uint32_t>(options_.concurrency, 1);
    if (options_.seed == 0) {
      std::random_device rd;
      options_.seed = (std::uint64_t{rd()} << 32 | rd()) | 1;
    }
    if (options_.outlier) {
      outliers_.emplace(registry_, *options_.outlier);
      next_outlier_check_ = clock::now() + options_.outlier_tick;
    }
    // Membership: the callback only hands the snapshot over; the scheduler does the work.
    subscription_ = registry_.subscribe([this](const snapshot& s) {
      std::lock_guard lock(mu_);
      pending_ = s.shared_from_this();
      wake_.notify_all();
    });
    for (std::uint32_t i = 0; i < options_.concurrency; ++i) {
      workers_.emplace_back([this](std::stop_token st) { work(st); });
    }
    scheduler_ = std::jthread([this](std::stop_token st) { schedule(st); });
  }
  health_checker(const health_checker&) = delete;
  health_checker& operator=(const health_checker&) = delete;
  ~health_checker() { stop(); }

  // Adds a listener for health changes. Returns nothing to unregister with: listeners live as
  // long as the checker.
  void on_change(listener fn) {
    std::lock_guard lock(mu_);
    listeners_.push_back(std::move(fn));
  }

  // Stops probing and joins every thread. Idempotent.
  void stop() {
    subscription_.reset();
    scheduler_.request_stop();
    for (auto& w : workers_) w.request_stop();
    {
      std::lock_guard lock(mu_);
      wake_.notify_all();
      work_ready_.notify_all();
    }
    if (scheduler_.joinable()) scheduler_.join();
    for (auto& w : workers_) {
      if (w.joinable()) w.join();
    }
  }

  // Probes completed since the start (for stats and tests).
  std::uint64_t probes_done() const {
    std::lock_guard lock(mu_);
    return probes_done_;
  }
  // The tracked state of a backend, if it is tracked.
  std::optional<health> tracked(std::string_view id) const {
    std::lock_guard lock(mu_);
    auto it = targets_.find(std::string(id));
    if (it == targets_.end()) return std::nullopt;
    return it->second.tracker.state();
  }

 private:
  using clock = probe_clock;

  struct target {
    endpoint address;
    health_tracker tracker;
    std::uint64_t generation;  // tells a result for a removed-then-re-added id from a new one
    bool in_flight = false;
  };
  struct job {
    std::string id;
    endpoint address;
    std::uint64_t generation;
  };
  struct done {
    job j;
    probe_result r;
    clock::time_point started;
  };

  // The scheduling thread: follows membership, starts due probes, applies results.
  void schedule(std::stop_token st) {
    std::unique_lock lock(mu_);
    while (!st.stop_requested()) {
      if (pending_) follow(std::exchange(pending_, nullptr));
      while (!results_.empty()) {
        done d = std::move(results_.front());
        results_.pop();
        apply(lock, std::move(d));
      }
      auto now = clock::now();
      if (outliers_ && now >= next_outlier_check_) {
        // Outside the lock: evaluate() writes the registry, which calls back into us.
        lock.unlock();
        auto events = outliers_->evaluate(now);
        lock.lock();
        next_outlier_check_ = now + options_.outlier_tick;
        for (auto& e : events) notify_outlier(lock, e);
        now = clock::now();
      }
      auto next = now + std::chrono::hours(1);
      if (outliers_) next = std::min(next, next_outlier_check_);
      for (auto& [id, t] : targets_) {
        if (t.in_flight) continue;
        if (t.tracker.next_probe() <= now) {
          t.in_flight = true;
          jobs_.push({id, t.address, t.generation});
          work_ready_.notify_one();
        } else {
          next = std::min(next, t.tracker.next_probe());
        }
      }
      wake_.wait_until(lock, next,
                       [&] { return st.stop_requested() || pending_ || !results_.empty(); });
    }
  }

  // Tracks new members, forgets removed ones.
  void follow(const std::shared_ptr<const snapshot>& s) {
    const auto now = clock::now();
    std::map<std::string, target> next;
    for (const auto& m : s->members()) {
      auto it = targets_.find(m.id());
      if (it != targets_.end()) {
        next.emplace(m.id(), std::move(it->second));
        continue;
      }
      const std::uint64_t gen = ++generation_;
      next.emplace(m.id(), target{m.address(),
                                  health_tracker(options_.check, m.state().current_health(), now,
                                                 hash_u64(gen, options_.seed)),
                                  gen});
    }
    targets_ = std::move(next);
  }

  // Feeds a probe's answer to its tracker; on a transition, writes the registry and tells
  // the listeners (outside the lock: the registry write notifies its own subscribers). A
  // passing probe also ends an ejection that a passing check ends (docs/health.md).
  void apply(std::unique_lock<std::mutex>& lock, done d) {
    ++probes_done_;
    auto it = targets_.find(d.j.id);
    if (it == targets_.end() || it->second.generation != d.j.generation) return;  // removed
    it->second.in_flight = false;
    auto change = it->second.tracker.report(d.r, clock::now());
    const bool uneject = d.r.healthy() && ends_on_check(d.j.id, d.started);
    if (!change && !uneject) return;
    std::vector<health_event> events;
    if (uneject) {
      events.push_back({d.j.id,
                        d.j.address,
                        health::unhealthy,
                        health::healthy,
                        {probe_status::healthy, "active check passed: ejection ended", {}},
                        true});
    }
    if (change) {
      events.push_back({d.j.id, d.j.address, change->from, change->to, std::move(change->cause)});
    }
    auto listeners = listeners_;
    lock.unlock();
    change_set cs;
    if (uneject) cs.check_passed(d.j.id, d.started);
    if (change) cs.set_health(d.j.id, change->to);
    // Fails only for a backend removed meanwhile: nothing to write then.
    (void)registry_.apply(cs);
    for (const auto& e : events) {
      for (const auto& fn : listeners) fn(e);
    }
    lock.lock();
  }

  // Whether a check of `id` begun at `started` ends its ejection (read without the registry's
  // writer lock; check_passed decides again under it).
  bool ends_on_check(std::string_view id, clock::time_point started) const {
    const auto snap = registry_.current();
    const member* m = snap->find(id);
    return m != nullptr && m->state().ejection_state() == ejection::until_check &&
           m->state().ejected_since() <
               std::chrono::duration_cast<std::chrono::nanoseconds>(started.time_since_epoch())
                   .count();
  }

  // Tells listeners of an ejection or a restoration.
  void notify_outlier(std::unique_lock<std::mutex>& lock, const outlier_detector::event& o) {
    auto it = targets_.find(o.id);
    if (it == targets_.end()) return;
    probe_result cause{probe_status::healthy, "outlier detection: restored", {}};
    if (o.ejected) {
      cause = {probe_status::error,
               "outlier detection: ejected for " + std::string(to_string(o.reason)),
               {}};
    }
    health_event e{o.id,
                   it->second.address,
                   o.ejected ? health::healthy : health::unhealthy,
                   o.ejected ? health::unhealthy : health::healthy,
                   std::move(cause),
                   true};
    auto listeners = listeners_;
    lock.unlock();
    for (const auto& fn : listeners) fn(e);
    lock.lock();
  }

  // A worker: runs probes off the queue.
  void work(std::stop_token st) {
    std::unique_lock lock(mu_);
    while (true) {
      work_ready_.wait(lock, [&] { return st.stop_requested() || !jobs_.empty(); });
      if (st.stop_requested()) return;
      job j = std::move(jobs_.front());
      jobs_.pop();
      lock.unlock();
      const auto started = clock::now();
      probe_result r = probe_.probe(j.address, started + options_.check.timeout);
      lock.lock();
      results_.push({std::move(j), std::move(r), started});
      wake_.notify_all();
    }
  }

  backend_registry& registry_;
  const Probe probe_;
  health_checker_options options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;        // the scheduler: membership, results, stop
  std::condition_variable work_ready_;  // the workers: jobs, stop
  std::shared_ptr<const snapshot> pending_;
  std::map<std::string, target> targets_;
  std::queue<job> jobs_;
  std::queue<done> results_;
  std::vector<listener> listeners_;
  std::uint64_t generation_ = 0;
  std::uint64_t probes_done_ = 0;
  std::optional<outlier_detector> outliers_;  // used by the scheduling thread only
  clock::time_point next_outlier_check_{};

  subscription subscription_;
  std::vector<std::jthread> workers_;
  std::jthread scheduler_;
};

}  // namespace lbkit
