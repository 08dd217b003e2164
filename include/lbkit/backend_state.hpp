// SPDX-License-Identifier: MIT
// backend_state: the live, per-backend counters and health that the data plane updates and
// the policies and health checkers read, plus the backend's immutable identity (id and
// address, which never change for one state: a new address means a new backend).
//
// Lifetime (DESIGN.md property 2): a backend_state lives while anything owns it — a registry
// snapshot's member, a state_ref — or while a request begun on it has not ended. Both are
// counted in one atomic word, so begin_request() is at once the request counter and the
// keep-alive of a lease: a request that began before the backend was removed, and even
// after every snapshot holding it was freed, ends on the same counters, and the last of
// them frees the state. No extra atomic operation is spent on the pick path for this.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/endpoint.hpp"

namespace lbkit {

class backend_registry;
class state_ref;

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

// Live counters, health and identity of one backend. Created by backend_state::create (the
// registry does this); owned through state_ref.
// Thread safety: thread-safe; every member may be called from any thread at any time. The
// counters are independent relaxed atomics: each one is exact, but a reader that loads two of
// them may see one update and not the other (requests() sums several, so while requests end
// concurrently it may be off by the ones in transit; it is exact once they have ended).
class backend_state {
 public:
  // A new state owned by the returned reference.
  static state_ref create(std::string id, endpoint address, health initial = health::healthy);

  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;

  const std::string& id() const noexcept { return id_; }
  const endpoint& address() const noexcept { return address_; }

  // ---- data plane --------------------------------------------------------------------

  // A request was sent to this backend; it keeps the state alive until end_request.
  // Complexity: one relaxed atomic increment.
  void begin_request() noexcept {
    counters_.refs.fetch_add(request_unit, std::memory_order_relaxed);
  }

  // A request begun with begin_request() ended: exactly one end_request per begin_request,
  // and the state must not be touched after it (it may have been the last holder).
  // `latency` feeds the latency estimate when the outcome is success or failure and it is
  // positive. Complexity: two relaxed atomic increments; a CAS loop for the estimate.
  void end_request(outcome o, std::chrono::nanoseconds latency = {}) noexcept {
    if (o == outcome::success) {
      counters_.successes.fetch_add(1, std::memory_order_relaxed);
      // Most successes follow successes: skip the store (and the line's ownership) then.
      if (counters_.consecutive_failures.load(std::memory_order_relaxed) != 0) {
        counters_.consecutive_failures.store(0, std::memory_order_relaxed);
      }
    } else if (o == outcome::failure) {
      counters_.failures.fetch_add(1, std::memory_order_relaxed);
      counters_.consecutive_failures.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.unreported.fetch_add(1, std::memory_order_relaxed);
    }
    if (o != outcome::none && latency.count() > 0) {
      record_latency(static_cast<std::uint64_t>(latency.count()));
    }
    release(request_unit);  // last: this may free *this
  }

  // ---- readers -----------------------------------------------------------------------

  // Requests in flight (begun and not ended).
  std::int64_t active() const noexcept {
    return static_cast<std::int64_t>(counters_.refs.load(std::memory_order_relaxed) >> 32);
  }
  // Requests begun since the backend was added: those ended plus those in flight (so that
  // a pick costs one atomic increment, not two).
  std::uint64_t requests() const noexcept {
    return successes() + failures() + counters_.unreported.load(std::memory_order_relaxed) +
           static_cast<std::uint64_t>(active());
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
  friend class state_ref;

  // refs = requests in flight << 32 | owners. 2^31 of either is far beyond any real count.
  static constexpr std::uint64_t request_unit = std::uint64_t{1} << 32;
  static constexpr std::uint64_t owner_unit = 1;

  backend_state(std::string id, endpoint address, health initial) noexcept
      : health_(initial), id_(std::move(id)), address_(address) {}
  ~backend_state() = default;

  void retain() noexcept { counters_.refs.fetch_add(owner_unit, std::memory_order_relaxed); }
  void release(std::uint64_t unit) noexcept {
    // acq_rel, as shared_ptr does: the thread that frees sees every other holder's writes.
    if (counters_.refs.fetch_sub(unit, std::memory_order_acq_rel) == unit) delete this;
  }

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
  const std::string id_;
  const endpoint address_;

  // Written on every request by many threads: one line of their own, away from health_ and
  // from any other backend's counters.
  struct alignas(cache_line) counters {
    std::atomic<std::uint64_t> refs{0};
    std::atomic<std::uint64_t> unreported{0};  // ended with outcome::none
    std::atomic<std::uint64_t> successes{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> consecutive_failures{0};
    std::atomic<std::uint64_t> latency_ns{0};
  } counters_;
};

// An owning reference to a backend_state, like a shared_ptr whose count lives in the state.
// Thread safety: thread-compatible (one reference); different references to the same state
// may be copied and destroyed concurrently.
class state_ref {
 public:
  state_ref() noexcept = default;
  state_ref(const state_ref& o) noexcept : p_(o.p_) {
    if (p_) p_->retain();
  }
  state_ref(state_ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  state_ref& operator=(state_ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~state_ref() {
    if (p_) p_->release(backend_state::owner_unit);
  }

  backend_state* get() const noexcept { return p_; }
  backend_state& operator*() const noexcept { return *p_; }
  backend_state* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  friend bool operator==(const state_ref& a, const state_ref& b) noexcept { return a.p_ == b.p_; }

 private:
  friend class backend_state;
  explicit state_ref(backend_state* adopted) noexcept : p_(adopted) {}  // takes one owner
  backend_state* p_ = nullptr;
};

inline state_ref backend_state::create(std::string id, endpoint address, health initial) {
  auto* s = new backend_state(std::move(id), address, initial);
  s->retain();
  return state_ref(s);
}

}  // namespace lbkit
