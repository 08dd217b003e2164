// SPDX-License-Identifier: MIT
// backend_state: the live, per-backend counters and health that the data plane updates and
// the policies and health checkers read, plus the backend's immutable identity (id and
// address, which never change for one state: a new address means a new backend).
//
// Counting without shared lines (issue 15): what nothing reads on the pick path — requests
// begun, ended by outcome, latency sums — is kept in per-thread shards (detail::thread_slot)
// and summed when read (totals()), so a pick and its release write only lines of the calling
// thread. What policies read is counted only for balancers whose policy reads it
// (request_counting): the exact in-flight count least-loaded policies compare, the registry
// total bounded-load divides by, the latency estimate least_response_time ranks by. Passive
// health's consecutive-failure counts are written on failures, and read (not written) on
// successes that follow successes.
//
// Lifetime (docs/architecture.md, property 2 "Live state outlives membership"): a
// backend_state lives while anything owns it (a registry snapshot's member, a state_ref) and
// while any request begun on it has not ended. Requests take no reference: a state whose
// last owner goes while requests are still open is retired, and freed by reclaim_retired()
// (which every registry change calls) once they have all ended. No new request can begin on
// it then — a request is begun only by a holder of an owner — so its totals only grow
// toward their final value, and the first reclaim_retired() after they balance frees it.
// Until a registry change (or a caller) runs one, the retired state stays allocated.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/detail/clock.hpp"
#include "lbkit/detail/mutex.hpp"
#include "lbkit/detail/thread_slot.hpp"
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

// What a request is counted in beyond the per-thread totals that count every request
// (backend_state::totals()). A balancer counts what its policy reads (the traits in
// selection_policy.hpp); begin_request and end_request of one request take the same value.
struct request_counting {
  bool in_flight = false;  // active(): the exact count least-loaded policies compare
  bool in_total = false;   // total_in_flight(): the registry-wide count bounded-load divides by
  bool latency = false;    // the peak-EWMA estimate least_response_time ranks by
};

// A backend's request counts summed over the threads' shards (backend_state::totals()).
// Thread safety: thread-compatible (a value type).
struct request_totals {
  std::uint64_t started = 0;          // requests begun (picks that returned this backend)
  std::uint64_t ended[5] = {};        // requests ended, by outcome: see of()
  std::uint64_t latency_ns = 0;       // the sum of the latencies reported with an outcome
  std::uint64_t latency_samples = 0;  // how many were reported

  // Requests ended with `o`; 0 for a value outside the enumeration.
  std::uint64_t of(outcome o) const noexcept {
    const auto i = static_cast<std::size_t>(o);
    return i < std::size(ended) ? ended[i] : 0;
  }
  std::uint64_t finished() const noexcept {
    std::uint64_t t = 0;
    for (auto e : ended) t += e;
    return t;
  }
  // Failures of every kind: failure, gateway_failure, connection_failure.
  std::uint64_t failed() const noexcept {
    return of(outcome::failure) + of(outcome::gateway_failure) + of(outcome::connection_failure);
  }
  std::uint64_t in_flight() const noexcept { return started - finished(); }
};

// Live counters, health and identity of one backend. Created by backend_state::create (the
// registry does this); owned through state_ref.
// Thread safety: thread-safe; every member may be called from any thread at any time. The
// counters are relaxed atomics: each is exact, but a reader that loads several may see one
// update and not another (see totals() for the bound).
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

  // A request was sent to this backend. The caller must own the state at this moment (hold
  // a snapshot that has it, or a state_ref: a balancer's picker holds its plan's snapshot);
  // the state then stays valid until end_request, even if every owner goes meanwhile.
  // Complexity: a load and a store on the calling thread's shard; `c` adds one relaxed
  // atomic increment per count.
  [[gnu::always_inline]] void begin_request(request_counting c = {}) noexcept {
    const std::uint32_t slot = detail::thread_slot::get();
    add(shards()[slot].started, 1, slot, std::memory_order_relaxed);
    if (c.in_flight) in_flight_.fetch_add(1, std::memory_order_relaxed);
    if (c.in_total && total_) total_->add(total_shard_, 1);
  }

  // A request begun with begin_request(c) ended: exactly one end_request per begin_request,
  // with the same `c`, and the caller must not touch the state after it (it may be freed).
  // `latency` feeds the latency sums (and, with c.latency, the estimate) when the outcome is
  // not none and it is positive.
  // Complexity: a few loads of the backend's shared line; stores there only on a failure
  // or on the first success after one; a load and a store on the calling thread's shard
  // (two more with a latency); one relaxed atomic per count in `c` (a CAS loop for the
  // estimate).
  [[gnu::always_inline]] void end_request(outcome o, std::chrono::nanoseconds latency = {},
                                          request_counting c = {}) noexcept {
    // A value outside the enumeration (a cast from a wider number) counts as a failure, as
    // an unknown result should, and never indexes past the counts by outcome.
    if (static_cast<std::uint8_t>(o) > static_cast<std::uint8_t>(outcome::connection_failure))
        [[unlikely]] {
      o = outcome::failure;
    }
    if (o == outcome::success) {
      // Most successes follow successes: skip the stores (and the line's ownership) then.
      clear(consecutive_failures_);
      clear(consecutive_gateway_failures_);
      clear(consecutive_connection_failures_);
    } else if (o != outcome::none) [[unlikely]] {
      count_failure(o);
    }
    const bool timed = o != outcome::none && latency.count() > 0;
    if (c.in_flight || c.in_total || (timed && c.latency)) end_counted(latency, timed, c);
    const std::uint32_t slot = detail::thread_slot::get();
    shard& s = shards()[slot];
    if (timed) {
      add(s.latency_ns, static_cast<std::uint64_t>(latency.count()), slot,
          std::memory_order_relaxed);
      add(s.latency_samples, 1, slot, std::memory_order_relaxed);
    }
    // Last, and release: once reclaim_retired() reads this count, it may free *this.
    add(s.ended[static_cast<std::size_t>(o)], 1, slot, std::memory_order_release);
  }

  // ---- readers -----------------------------------------------------------------------

  // The request counts summed over every thread's shard. Exact once the requests in transit
  // have ended; while they run, each figure is some value it had during the read, every
  // request counted as ended is counted as started (so in_flight() is never negative), and
  // in_flight() is at least the number of requests that were in flight during the whole
  // read. Complexity: thread_slot::count() + 1 cache lines read.
  request_totals totals() const noexcept {
    request_totals t;
    // Ends first: a request whose end is seen began before it, so its start is seen too.
    for (std::uint32_t i = 0; i < shard_count_; ++i) {
      const shard& s = shards()[i];
      for (std::size_t k = 0; k < 5; ++k) t.ended[k] += s.ended[k].load(std::memory_order_acquire);
      t.latency_ns += s.latency_ns.load(std::memory_order_relaxed);
      t.latency_samples += s.latency_samples.load(std::memory_order_relaxed);
    }
    for (std::uint32_t i = 0; i < shard_count_; ++i) {
      t.started += shards()[i].started.load(std::memory_order_relaxed);
    }
    return t;
  }

  // Requests in flight that were begun counting in flight (by a balancer whose policy reads
  // it: least_connections, power_of_two_choices, least_response_time, bounded_load). Exact
  // at every instant; the requests of other balancers are in totals().in_flight().
  std::int64_t active() const noexcept { return in_flight_.load(std::memory_order_relaxed); }
  // Requests begun since the backend was added. Complexity: as totals().
  std::uint64_t requests() const noexcept { return totals().started; }
  std::uint64_t successes() const noexcept { return totals().of(outcome::success); }
  // Failures of every kind (failure, gateway_failure, connection_failure).
  std::uint64_t failures() const noexcept { return totals().failed(); }
  // Failures reported since the last success.
  std::uint64_t consecutive_failures() const noexcept {
    return consecutive_failures_.load(std::memory_order_relaxed);
  }
  // Gateway and connection failures since the last other outcome.
  std::uint64_t consecutive_gateway_failures() const noexcept {
    return consecutive_gateway_failures_.load(std::memory_order_relaxed);
  }
  // Connection failures (outcome::connection_failure) since the last other outcome.
  std::uint64_t consecutive_connection_failures() const noexcept {
    return consecutive_connection_failures_.load(std::memory_order_relaxed);
  }
  // Requests in flight that were begun with in_total on any backend of this backend's
  // registry (0 for a state outside a registry). Complexity: 8 relaxed loads.
  std::int64_t total_in_flight() const noexcept { return total_ ? total_->sum() : 0; }

  // Frees every retired state (one whose owners are all gone) whose requests have all
  // ended, and returns how many retired states are still waiting for theirs. Every registry
  // change calls it; call it yourself to free states sooner (from any thread).
  // Complexity: one atomic load when none is retired; else a lock and totals() per state.
  static std::size_t reclaim_retired() noexcept;

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
        static_cast<std::int64_t>(cost_of(latency_.load(std::memory_order_relaxed))));
  }
  // The estimate in nanoseconds at `now_ns` on the detail::coarse_now_ns() clock, which must
  // not be earlier than the last sample's time.
  double latency_at(std::int64_t now_ns) const noexcept {
    const std::uint64_t word = latency_.load(std::memory_order_relaxed);
    const double cost = cost_of(word);
    return cost == 0 ? 0 : cost * decay_factor(word, now_ns);
  }
  // Feeds one sample taken at `now_ns` (end_request does this with the current time; a
  // caller that timestamps requests itself may call it directly). Non-positive samples are
  // ignored; samples above max_latency count as max_latency. Complexity: a CAS loop on this
  // backend's shared line.
  void observe_latency(std::chrono::nanoseconds sample, std::int64_t now_ns) noexcept {
    if (sample.count() <= 0) return;
    const double rtt = static_cast<double>(std::min(sample, max_latency).count());
    std::uint64_t old = latency_.load(std::memory_order_relaxed);
    std::uint64_t next;
    do {
      const double cost = cost_of(old);
      const double w = cost == 0 ? 0 : decay_factor(old, now_ns);
      // Finagle compares with the undecayed estimate: a peak replaces it, anything else
      // blends in by the time elapsed.
      next = pack(rtt > cost ? rtt : cost * w + rtt * (1 - w), now_ns);
    } while (!latency_.compare_exchange_weak(old, next, std::memory_order_relaxed));
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

  // One thread's counts (detail::thread_slot): written by that thread only, with a plain
  // load and store, except the shared slot's, written with atomic adds.
  struct alignas(cache_line) shard {
    std::atomic<std::uint64_t> started{0};
    std::atomic<std::uint64_t> ended[5] = {};  // by outcome
    std::atomic<std::uint64_t> latency_ns{0};
    std::atomic<std::uint64_t> latency_samples{0};
  };
  static_assert(sizeof(shard) == cache_line);

  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n, std::uint32_t slot,
                  std::memory_order mo) noexcept {
    if (slot != detail::thread_slot::shared) [[likely]] {
      c.store(c.load(std::memory_order_relaxed) + n, mo);
    } else {
      c.fetch_add(n, mo);
    }
  }

  backend_state(std::string id, endpoint address, health initial,
                std::shared_ptr<detail::in_flight_total> total, std::uint32_t shard) noexcept
      : health_(initial),
        shard_count_(detail::thread_slot::count() + 1),
        healthy_since_(detail::precise_now_ns()),
        serial_(next_serial()),
        id_(std::move(id)),
        address_(address),
        total_(std::move(total)),
        total_shard_(shard) {
    std::uninitialized_default_construct_n(shards(), shard_count_);
  }
  ~backend_state() = default;

  // The state and its shards are one allocation: the shards follow the object, so that a
  // lease finds its shard without loading a pointer (the shard's address and the state's
  // first line load in parallel). Shards are trivially destructible.
  static std::size_t allocation_size(std::uint32_t shards) noexcept {
    return sizeof(backend_state) + shards * sizeof(shard);
  }
  shard* shards() const noexcept {
    auto* end = const_cast<std::byte*>(reinterpret_cast<const std::byte*>(this)) + sizeof(*this);
    return std::launder(reinterpret_cast<shard*>(end));
  }
  static void destroy(backend_state* s) noexcept {
    s->~backend_state();
    ::operator delete (s, std::align_val_t{cache_line});
  }

  void retain() noexcept { owners_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    // acq_rel, as shared_ptr does: the thread that retires sees every other owner's writes,
    // among them the starts of the requests they began.
    if (owners_.fetch_sub(1, std::memory_order_acq_rel) == 1) retire(this);
  }
  bool quiescent() const noexcept { return totals().in_flight() == 0; }

  // The streaks of a failure, for passive health.
  [[gnu::noinline]] void count_failure(outcome o) noexcept {
    consecutive_failures_.fetch_add(1, std::memory_order_relaxed);
    if (o == outcome::failure) {
      clear(consecutive_gateway_failures_);
    } else {
      consecutive_gateway_failures_.fetch_add(1, std::memory_order_relaxed);
    }
    if (o == outcome::connection_failure) {
      consecutive_connection_failures_.fetch_add(1, std::memory_order_relaxed);
    } else {
      clear(consecutive_connection_failures_);
    }
  }
  // What end_request counts beyond the totals.
  void end_counted(std::chrono::nanoseconds latency, bool timed, request_counting c) noexcept {
    if (timed && c.latency) observe_latency(latency, detail::coarse_now_ns());
    if (c.in_flight) in_flight_.fetch_sub(1, std::memory_order_relaxed);
    if (c.in_total && total_) total_->add(total_shard_, -1);
  }
  static void retire(backend_state* s) noexcept;

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

  // Read by every lease (the streaks a success clears), written on failures and a few times
  // a second (health): the first line, off the lines written per request.
  alignas(cache_line) std::atomic<std::uint64_t> consecutive_failures_{0};
  std::atomic<std::uint64_t> consecutive_gateway_failures_{0};
  std::atomic<std::uint64_t> consecutive_connection_failures_{0};
  std::atomic<health> health_;
  std::atomic<lbkit::ejection> ejection_{ejection::none};
  const std::uint32_t shard_count_;  // thread_slot::count() + 1
  std::atomic<std::int64_t> healthy_since_;
  std::atomic<std::int64_t> ejected_since_{0};
  std::atomic<std::int64_t> decay_ns_{10'000'000'000};
  const std::uint64_t serial_;
  const std::string id_;
  const endpoint address_;
  const std::shared_ptr<detail::in_flight_total> total_;
  const std::uint32_t total_shard_;
  backend_state* next_retired_ = nullptr;  // the retired list's link (under its lock)

  // Written by every lease of a balancer that counts in flight or latency, and when the state
  // gains or loses an owner: a line of its own.
  alignas(cache_line) std::atomic<std::int64_t> in_flight_{0};
  std::atomic<std::uint64_t> latency_{0};  // see pack()
  std::atomic<std::uint32_t> owners_{0};
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
    if (p_) p_->release();
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
  const std::uint32_t shards = detail::thread_slot::count() + 1;
  void* mem = ::operator new (allocation_size(shards), std::align_val_t{cache_line});
  auto* s = new (mem) backend_state(std::move(id), address, initial, std::move(total), shard);
  s->retain();
  return state_ref(s);
}

namespace detail {

// The states whose last owner went while requests on them were open, linked through
// next_retired_. One list per process, never destroyed (a state may be retired, and its
// last request end, during static destruction).
struct retired_states {
  mutex mu;
  backend_state* head LBKIT_GUARDED_BY(mu) = nullptr;
  std::atomic<std::size_t> size{0};

  // Built in static storage on first use (no allocation: retire() runs on the pick path
  // when a dropped plan held a state's last owner).
  static retired_states& get() noexcept {
    alignas(retired_states) static std::byte storage[sizeof(retired_states)];
    static retired_states* const list = ::new (static_cast<void*>(storage)) retired_states;
    return *list;
  }
};

}  // namespace detail

inline void backend_state::retire(backend_state* s) noexcept {
  if (s->quiescent()) {
    destroy(s);
    return;
  }
  // A request that ends after the check leaves the state quiescent on the list: the next
  // reclaim_retired() frees it.
  auto& list = detail::retired_states::get();
  detail::lock_guard lock(list.mu);
  s->next_retired_ = list.head;
  list.head = s;
  list.size.fetch_add(1, std::memory_order_release);
}

inline std::size_t backend_state::reclaim_retired() noexcept {
  auto& list = detail::retired_states::get();
  if (list.size.load(std::memory_order_acquire) == 0) return 0;
  backend_state* done = nullptr;
  std::size_t left;
  {
    detail::lock_guard lock(list.mu);
    for (backend_state** p = &list.head; *p != nullptr;) {
      backend_state* s = *p;
      if (!s->quiescent()) {
        p = &s->next_retired_;
        continue;
      }
      *p = s->next_retired_;
      s->next_retired_ = done;
      done = s;
      list.size.fetch_sub(1, std::memory_order_relaxed);
    }
    left = list.size.load(std::memory_order_relaxed);
  }
  while (done != nullptr) {  // outside the lock: destruction may free other things
    backend_state* next = done->next_retired_;
    destroy(done);
    done = next;
  }
  return left;
}

}  // namespace lbkit
