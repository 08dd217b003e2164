// SPDX-License-Identifier: MIT
// backend_state: the live, per-backend counters and health that the data plane updates and
// the policies and health checkers read. One backend_state is shared by every registry
// snapshot that holds the backend (through shared_ptr), so it outlives the backend's
// removal for as long as a snapshot or a lease still refers to it: a request that began
// before the removal ends on the same counters (DESIGN.md property 2).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lbkit {

class backend_registry;

// Health of a backend as the balancer acts on it.
enum class health : std::uint8_t {
  healthy,    // gets new traffic
  unhealthy,  // gets no new traffic, except in panic mode (see the balancer)
};

constexpr std::string_view to_string(health h) noexcept {
  return h == health::healthy ? "healthy" : "unhealthy";
}

// How a request through a backend ended, as the caller reports it.
enum class outcome : std::uint8_t {
  success,
  failure,
  none,  // released without a report: counts as neither
};

// Destructive-interference distance for x86-64 and most ARM64 parts; g++ 12 warns when
// std::hardware_destructive_interference_size is used in a header, so lbkit fixes it.
inline constexpr std::size_t cache_line = 64;

// Live counters and health of one backend.
// Thread safety: thread-safe; every member may be called from any thread at any time. The
// counters are independent relaxed atomics: each one is exact, but a reader that loads two of
// them may see one update and not the other (for example `requests` bumped before `active`).
class backend_state {
 public:
  explicit backend_state(health initial = health::healthy) noexcept : health_(initial) {}
  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;

  // ---- data plane --------------------------------------------------------------------

  // A request was sent to this backend. Complexity: two relaxed atomic increments.
  void begin_request() noexcept {
    counters_.active.fetch_add(1, std::memory_order_relaxed);
    counters_.requests.fetch_add(1, std::memory_order_relaxed);
  }

  // A request begun with begin_request() ended. Exactly one end_request per begin_request.
  // `latency` feeds the latency estimate when the outcome is success or failure and it is
  // positive. Complexity: a few relaxed atomic operations; a CAS loop for the estimate.
  void end_request(outcome o, std::chrono::nanoseconds latency = {}) noexcept {
    counters_.active.fetch_sub(1, std::memory_order_relaxed);
    if (o == outcome::none) return;
    if (o == outcome::success) {
      counters_.successes.fetch_add(1, std::memory_order_relaxed);
      counters_.consecutive_failures.store(0, std::memory_order_relaxed);
    } else {
      counters_.failures.fetch_add(1, std::memory_order_relaxed);
      counters_.consecutive_failures.fetch_add(1, std::memory_order_relaxed);
    }
    if (latency.count() > 0) record_latency(static_cast<std::uint64_t>(latency.count()));
  }

  // ---- readers -----------------------------------------------------------------------

  // Requests in flight (begun and not ended).
  std::int64_t active() const noexcept { return counters_.active.load(std::memory_order_relaxed); }
  // Requests begun since the backend was added.
  std::uint64_t requests() const noexcept {
    return counters_.requests.load(std::memory_order_relaxed);
  }
  std::uint64_t successes() const noexcept {
    return counters_.successes.load(std::memory_order_relaxed);
  }
  std::uint64_t failures() const noexcept {
    return counters_.failures.load(std::memory_order_relaxed);
  }
  // Failures reported since the last success.
  std::uint64_t consecutive_failures() const noexcept {
    return counters_.consecutive_failures.load(std::memory_order_relaxed);
  }
  // Exponentially weighted moving average of reported latencies (weight 1/8 for the newest
  // sample, as TCP's smoothed RTT in RFC 6298); zero until the first sample.
  std::chrono::nanoseconds latency_estimate() const noexcept {
    return std::chrono::nanoseconds(counters_.latency_ns.load(std::memory_order_relaxed));
  }

  health current_health() const noexcept { return health_.load(std::memory_order_acquire); }

  // Health is written only by backend_registry::set_health (and its batches), which also
  // publishes a new version so that policies rebuild their per-version state.

 private:
  friend class backend_registry;
  health exchange_health(health h) noexcept {
    return health_.exchange(h, std::memory_order_acq_rel);
  }

  void record_latency(std::uint64_t sample) noexcept {
    std::uint64_t old = counters_.latency_ns.load(std::memory_order_relaxed);
    std::uint64_t next;
    do {
      // The average moves by a signed eighth of the difference; written with unsigned
      // arithmetic in two branches so it cannot overflow.
      next = old == 0        ? sample
             : sample >= old ? old + (sample - old) / 8
                             : old - (old - sample) / 8;
    } while (!counters_.latency_ns.compare_exchange_weak(old, next, std::memory_order_relaxed));
  }

  // Read on every pick, written a few times a second: kept off the counters' line.
  alignas(cache_line) std::atomic<health> health_;

  // Written on every request by many threads: one line of their own, away from health_ and
  // from any other backend's counters.
  struct alignas(cache_line) counters {
    std::atomic<std::int64_t> active{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> successes{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> consecutive_failures{0};
    std::atomic<std::uint64_t> latency_ns{0};
  } counters_;
};

}  // namespace lbkit
