// SPDX-License-Identifier: MIT
// backend_state: the live, per-backend counters and health that the data plane updates and
// the policies and health checkers read, plus the backend's immutable identity (id and
// address, which never change for one state: a new address means a new backend).
//
// Lifetime (docs/architecture.md, property 2 "Live state outlives membership"): a backend_state
// lives while anything owns it — a registry snapshot's member, a state_ref — or while a request
// begun on it has not ended. Both are counted in one atomic word, so begin_request() is at once the
// request counter and the keep-alive of a lease: a request that began before the backend was
// removed, and even after every snapshot holding it was freed, ends on the same counters, and the
// last of them frees the state. No extra atomic operation is spent on the pick path for this.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/detail/clock.hpp"
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
  // A failure of the backend as a gateway sees it: no answer in time, or an HTTP 502/503/504
  // (Envoy's "gateway" errors). It counts as a failure and also in its own consecutive
  // count, which outlier detection can act on apart.
  gateway_failure,
  // The backend could not be reached, or dropped the connection before answering: refused,
  // reset, unreachable, connect timeout — what an active check sees too. It counts as a
  // failure and a gateway failure, and in a consecutive count of its own: an ejection these
  // caused ends when an active check passes (outlier_detection_options::passing_check_ends).
  // A failure of this host (out of descriptors, buffers, ports: see is_local_error in result.hpp)
  // is not one: release such a lease with outcome::none.
  connection_failure,
};

// Whether passive outlier detection has a backend ejected, and what ends the ejection.
enum class ejection : std::uint8_t {
  none,         // not ejected
  timed,        // until outlier detection restores it
  until_check,  // until then, or until an active check begun after the ejection passes
};

// Destructive-interference distance for x86-64 and most ARM64 parts; g++ 12 warns when
// std::hardware_destructive_interference_size is used in a header, so lbkit fixes it.
inline constexpr std::size_t cache_line = 64;

namespace detail {

// Requests in flight over a whole registry, as far as they were begun with in_total (what
// bounded-load hashing divides by the member count), kept in shards on lines of their own: a
// backend counts on the shard of its creation number, so threads working on different backends
// seldom share a line. Thread safety: thread-safe.
class in_flight_total {
 public:
  static constexpr std::uint32_t shards = 8;

  void add(std::uint32_t shard, std::int64_t n) noexcept {
    shards_[shard % shards].n.fetch_add(n, std::memory_order_relaxed);
  }
  // Every shard is the exact count of its backends at some instant of the read, so the sum
  // is never negative and is exact once the requests in transit have ended.
  std::int64_t sum() const noexcept {
    std::int64_t t = 0;
    for (const auto& s : shards_) t += s.n.load(std::memory_order_relaxed);
    return t;
  }

 private:
  struct alignas(cache_line) shard {
    std::atomic<std::int64_t> n{0};
  };
  shard shards_[shards];
};

}  // namespace detail

// Live counters, health and identity of one backend. Created by backend_state::create (the
// registry does this); owned through state_ref.
// Thread safety: thread-safe; every member may be called from any thread at any time. The
// counters are independent relaxed atomics: each one is exact, but a reader that loads two of
// them may see one update and not the other (requests() sums several, so while requests end
// concurrently it may be off by the ones in transit; it is exact once they have ended).
class backend_state {
 public:
  // A new state owned by the returned reference.
  // `total`, if given, counts this backend's requests begun with in_total (the registry
  // passes its own, one per registry), on shard `shard`.
  static state_ref create(std::string id, endpoint address, health initial = health::healthy,
                          std::shared_ptr<detail::in_flight_total> total = {},
                          std::uint32_t shard = 0);

  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;

  const std::string& id() const noexcept { return id_; }
  const endpoint& address() const noexcept { return address_; }
  // A number no other state of this process has had: tells a backend removed and added
  // again (a new state, perhaps at the old one's address in memory) from the old one.
  std::uint64_t serial() const noexcept { return serial_; }

  // ---- data plane --------------------------------------------------------------------

  // A request was sent to this backend; it keeps the state alive until end_request.
  // `in_total`: also count it in the registry-wide total (total_in_flight()), which
  // bounded-load hashing divides by; only balancers with such a policy pay for that.
  // Complexity: one relaxed atomic increment; two with in_total.
  void begin_request(bool in_total = false) noexcept {
    counters_.refs.fetch_add(request_unit, std::memory_order_relaxed);
    if (in_total && total_) total_->add(shard_, 1);
  }

  // A request begun with begin_request() ended: exactly one end_request per begin_request,
  // and the state must not be touched after it (it may have been the last holder).
  // `latency` feeds the latency estimate when the outcome is success or failure and it is
  // positive; `in_total` must be what begin_request was given.
  // Complexity: two relaxed atomic increments (three with in_total); a CAS loop for the
  // estimate.
  void end_request(outcome o, std::chrono::nanoseconds latency = {},
                   bool in_total = false) noexcept {
    if (o == outcome::success) {
      counters_.successes.fetch_add(1, std::memory_order_relaxed);
      // Most successes follow successes: skip the stores (and the line's ownership) then.
      clear(counters_.consecutive_failures);
      clear(counters_.consecutive_gateway_failures);
      clear(counters_.consecutive_connection_failures);
    } else if (o != outcome::none) {
      counters_.failures.fetch_add(1, std::memory_order_relaxed);
      counters_.consecutive_failures.fetch_add(1, std::memory_order_relaxed);
      if (o == outcome::failure) {
        clear(counters_.consecutive_gateway_failures);
      } else {
        counters_.consecutive_gateway_failures.fetch_add(1, std::memory_order_relaxed);
      }
      if (o == outcome::connection_failure) {
        counters_.consecutive_connection_failures.fetch_add(1, std::memory_order_relaxed);
      } else {
        clear(counters_.consecutive_connection_failures);
      }
    } else {
      counters_.unreported.fetch_add(1, std::memory_order_relaxed);
    }
    if (o != outcome::none && latency.count() > 0) {
      observe_latency(latency, detail::coarse_now_ns());
    }
    if (in_total && total_) total_->add(shard_, -1);
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
  // Gateway and connection failures since the last other outcome.
  std::uint64_t consecutive_gateway_failures() const noexcept {
    return counters_.consecutive_gateway_failures.load(std::memory_order_relaxed);
  }
  // Connection failures (outcome::connection_failure) since the last other outcome.
  std::uint64_t consecutive_connection_failures() const noexcept {
    return counters_.consecutive_connection_failures.load(std::memory_order_relaxed);
  }
  // Requests in flight that were begun with in_total on any backend of this backend's
  // registry (0 for a state outside a registry). Complexity: 8 relaxed loads.
  std::int64_t total_in_flight() const noexcept { return total_ ? total_->sum() : 0; }

  // ---- latency: peak EWMA --------------------------------------------------------------
  // The latency estimate is a peak-sensitive, time-decayed moving average, Finagle's
  // PeakEwma (M. Eriksen, "Finagle: load balancing", and Linkerd's balancer, which adopted
  // it): a sample above the estimate replaces it at once, so a backend that turns slow is
  // seen slow on its first slow answer; a sample below it blends in with weight
  // 1 - exp(-dt / decay), dt being the time since the previous sample, so the estimate's
  // memory is `decay` long whatever the request rate; and while no sample arrives the
  // estimate decays toward zero with the same time constant, so a backend left alone is
  // tried again. Zero means no history.

  // The estimate as its last sample left it, without the decay since (for stats pages).
  std::chrono::nanoseconds latency_estimate() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(cost_of(counters_.latency.load(std::memory_order_relaxed))));
  }
  // The estimate in nanoseconds at `now_ns` on the detail::coarse_now_ns() clock, which must
  // not be earlier than the last sample's time.
  double latency_at(std::int64_t now_ns) const noexcept {
    const std::uint64_t word = counters_.latency.load(std::memory_order_relaxed);
    const double cost = cost_of(word);
    return cost == 0 ? 0 : cost * decay_factor(word, now_ns);
  }
  // Feeds one sample taken at `now_ns` (end_request does this with the current time; a
  // caller that timestamps requests itself may call it directly). Non-positive samples are
  // ignored; samples above max_latency count as max_latency. Complexity: a CAS loop on this
  // backend's counter line.
  void observe_latency(std::chrono::nanoseconds sample, std::int64_t now_ns) noexcept {
    if (sample.count() <= 0) return;
    const double rtt = static_cast<double>(std::min(sample, max_latency).count());
    std::uint64_t old = counters_.latency.load(std::memory_order_relaxed);
    std::uint64_t next;
    do {
      const double cost = cost_of(old);
      const double w = cost == 0 ? 0 : decay_factor(old, now_ns);
      // Finagle compares with the undecayed estimate: a peak replaces it, anything else
      // blends in by the time elapsed.
      next = pack(rtt > cost ? rtt : cost * w + rtt * (1 - w), now_ns);
    } while (!counters_.latency.compare_exchange_weak(old, next, std::memory_order_relaxed));
  }
  // Longer samples are clipped to this (about 13 days).
  static constexpr std::chrono::nanoseconds max_latency{std::int64_t{1} << 50};
  // The decay time constant of the estimate; 10 s unless set (Finagle's and Linkerd's
  // default). least_response_time sets its own on every build.
  std::chrono::nanoseconds latency_decay() const noexcept {
    return std::chrono::nanoseconds(decay_ns_.load(std::memory_order_relaxed));
  }
  void set_latency_decay(std::chrono::nanoseconds decay) noexcept {
    decay_ns_.store(std::max<std::int64_t>(decay.count(), 1'000'000), std::memory_order_relaxed);
  }

  // Health as the balancer acts on it: healthy when active checks say so (active_health())
  // and passive outlier detection has not ejected it (ejected()). The two are kept apart so
  // that neither source overrides the other: see docs/health.md.
  health current_health() const noexcept {
    return active_health() == health::healthy && !ejected() ? health::healthy : health::unhealthy;
  }
  // The verdict of active health checks (or of whoever calls backend_registry::set_health).
  health active_health() const noexcept { return health_.load(std::memory_order_acquire); }
  // Whether passive outlier detection has ejected it (backend_registry::eject).
  bool ejected() const noexcept { return ejection_state() != ejection::none; }
  // The ejection and what ends it; and when it began, on the detail::precise_now_ns() clock
  // (meaningful while ejected).
  lbkit::ejection ejection_state() const noexcept {
    return ejection_.load(std::memory_order_acquire);
  }
  std::int64_t ejected_since() const noexcept {
    return ejected_since_.load(std::memory_order_relaxed);
  }
  // When the backend last became healthy (or was added healthy), on the
  // detail::precise_now_ns() clock; slow start ramps from there.
  std::int64_t healthy_since() const noexcept {
    return healthy_since_.load(std::memory_order_relaxed);
  }

  // Health is written only by backend_registry::set_health (and its batches), which also
  // publishes a new version so that policies rebuild their per-version state.

 private:
  friend class backend_registry;
  friend class state_ref;

  // refs = requests in flight << 32 | owners. 2^31 of either is far beyond any real count.
  static constexpr std::uint64_t request_unit = std::uint64_t{1} << 32;
  static constexpr std::uint64_t owner_unit = 1;

  backend_state(std::string id, endpoint address, health initial,
                std::shared_ptr<detail::in_flight_total> total, std::uint32_t shard) noexcept
      : health_(initial),
        healthy_since_(detail::precise_now_ns()),
        serial_(next_serial()),
        id_(std::move(id)),
        address_(address),
        total_(std::move(total)),
        shard_(shard) {}
  ~backend_state() = default;

  void retain() noexcept { counters_.refs.fetch_add(owner_unit, std::memory_order_relaxed); }
  void release(std::uint64_t unit) noexcept {
    // acq_rel, as shared_ptr does: the thread that frees sees every other holder's writes.
    if (counters_.refs.fetch_sub(unit, std::memory_order_acq_rel) == unit) delete this;
  }

  static void clear(std::atomic<std::uint64_t>& c) noexcept {
    if (c.load(std::memory_order_relaxed) != 0) c.store(0, std::memory_order_relaxed);
  }

  static std::uint64_t next_serial() noexcept {
    static std::atomic<std::uint64_t> serials{0};
    return serials.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  // Writes the active verdict or the ejection (the registry does, under its writer lock).
  void write_health(health h) noexcept {
    const health before = current_health();
    health_.store(h, std::memory_order_release);
    note_health(before);
  }
  void write_ejection(lbkit::ejection e) noexcept {
    const health before = current_health();
    if (e != ejection::none && !ejected()) {
      ejected_since_.store(detail::precise_now_ns(), std::memory_order_relaxed);
    }
    ejection_.store(e, std::memory_order_release);
    note_health(before);
  }
  void note_health(health before) noexcept {
    if (before != health::healthy && current_health() == health::healthy) {
      healthy_since_.store(detail::precise_now_ns(), std::memory_order_relaxed);
    }
  }

  // The estimate's word: the float estimate in nanoseconds (high half) and the time of the
  // last sample in units of 2^20 ns, about 1 ms (low half; it wraps after 52 days, and a
  // gap longer than that decays by the remainder only — harmless for an estimate).
  static constexpr int stamp_shift = 20;
  static std::uint64_t pack(double cost, std::int64_t now_ns) noexcept {
    const auto bits = std::bit_cast<std::uint32_t>(static_cast<float>(cost));
    return std::uint64_t{bits} << 32 | static_cast<std::uint32_t>(now_ns >> stamp_shift);
  }
  static double cost_of(std::uint64_t word) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(word >> 32));
  }
  double decay_factor(std::uint64_t word, std::int64_t now_ns) const noexcept {
    const std::uint32_t elapsed =
        static_cast<std::uint32_t>(now_ns >> stamp_shift) - static_cast<std::uint32_t>(word);
    // A sample stamped a moment after `now_ns` by another thread wraps to a huge gap: treat
    // anything beyond half the range as no time at all.
    if (elapsed == 0 || elapsed > (1u << 31)) return 1;
    const double dt = std::ldexp(static_cast<double>(elapsed), stamp_shift);
    return std::exp(-dt / static_cast<double>(decay_ns_.load(std::memory_order_relaxed)));
  }

  // Read on every pick, written a few times a second: kept off the counters' line.
  alignas(cache_line) std::atomic<health> health_;
  std::atomic<lbkit::ejection> ejection_{ejection::none};
  std::atomic<std::int64_t> healthy_since_;
  std::atomic<std::int64_t> ejected_since_{0};
  std::atomic<std::int64_t> decay_ns_{10'000'000'000};
  const std::uint64_t serial_;
  const std::string id_;
  const endpoint address_;
  const std::shared_ptr<detail::in_flight_total> total_;
  const std::uint32_t shard_;

  // Written on every request by many threads: one line of their own, away from health_ and
  // from any other backend's counters.
  struct alignas(cache_line) counters {
    std::atomic<std::uint64_t> refs{0};
    std::atomic<std::uint64_t> unreported{0};  // ended with outcome::none
    std::atomic<std::uint64_t> successes{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> consecutive_failures{0};
    std::atomic<std::uint64_t> consecutive_gateway_failures{0};
    std::atomic<std::uint64_t> consecutive_connection_failures{0};
    std::atomic<std::uint64_t> latency{0};  // see pack()
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

inline state_ref backend_state::create(std::string id, endpoint address, health initial,
                                       std::shared_ptr<detail::in_flight_total> total,
                                       std::uint32_t shard) {
  auto* s = new backend_state(std::move(id), address, initial, std::move(total), shard);
  s->retain();
  return state_ref(s);
}

}  // namespace lbkit
