// SPDX-License-Identifier: MIT
// backend_state: live counters, the latency estimate and their behaviour under concurrency.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <latch>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_state.hpp>

using namespace std::chrono_literals;
using lbkit::backend_state;
using lbkit::outcome;

namespace {
lbkit::state_ref make_state(lbkit::health h = lbkit::health::healthy) {
  return backend_state::create("b", *lbkit::endpoint::parse("192.0.2.1:80"), h);
}
}  // namespace

TEST_CASE("a new state is idle and has its identity and initial health") {
  auto ref = make_state();
  backend_state& s = *ref;
  CHECK(s.id() == "b");
  CHECK(s.address().to_string() == "192.0.2.1:80");
  CHECK(s.active() == 0);
  CHECK(s.requests() == 0);
  CHECK(s.successes() == 0);
  CHECK(s.failures() == 0);
  CHECK(s.consecutive_failures() == 0);
  CHECK(s.latency_estimate() == 0ns);
  CHECK(s.current_health() == lbkit::health::healthy);
  CHECK(make_state(lbkit::health::unhealthy)->current_health() == lbkit::health::unhealthy);
}

TEST_CASE("begin and end count requests, outcomes and consecutive failures") {
  auto ref = make_state();
  backend_state& s = *ref;
  for (int i = 0; i < 5; ++i) s.begin_request();
  CHECK(s.totals().in_flight() == 5);
  CHECK(s.active() == 0);  // counted in flight only for policies that read it
  CHECK(s.requests() == 5);

  s.end_request(outcome::failure);
  s.end_request(outcome::failure);
  CHECK(s.failures() == 2);
  CHECK(s.consecutive_failures() == 2);
  s.end_request(outcome::success);
  CHECK(s.successes() == 1);
  CHECK(s.consecutive_failures() == 0);
  s.end_request(outcome::none);  // released without a report: only `active` moves
  CHECK(s.successes() == 1);
  CHECK(s.failures() == 2);
  s.end_request(outcome::failure);
  CHECK(s.consecutive_failures() == 1);
  CHECK(s.totals().in_flight() == 0);
  CHECK(s.requests() == 5);
  const auto t = s.totals();
  CHECK(t.of(outcome::failure) == 3);
  CHECK(t.of(outcome::success) == 1);
  CHECK(t.of(outcome::none) == 1);
  CHECK(t.finished() == 5);
  CHECK(t.latency_samples == 0);
}

TEST_CASE("an outcome outside the enumeration counts as a failure, never past the counts") {
  // A caller's cast from a wider number: 5, 7 and 255 would index past ended[] (into the
  // next shard's start count, or past the allocation from the last slot).
  auto ref = make_state();
  backend_state& s = *ref;
  for (const int v : {5, 7, 255}) {
    CAPTURE(v);
    s.begin_request();
    s.end_request(static_cast<outcome>(v), std::chrono::milliseconds(1));
    const auto t = s.totals();
    CHECK(t.in_flight() == 0);
    CHECK(t.started == t.finished());
    CHECK(t.of(static_cast<outcome>(v)) == 0);
  }
  CHECK(s.failures() == 3);
  CHECK(s.consecutive_failures() == 3);
  CHECK(s.totals().latency_samples == 3);
}

TEST_CASE("what a request is counted in beyond its totals is what its counting says") {
  auto ref = make_state();
  backend_state& s = *ref;
  const lbkit::request_counting in_flight{.in_flight = true}, latency{.latency = true};
  s.begin_request(in_flight);
  s.begin_request(latency);
  s.begin_request();
  CHECK(s.active() == 1);
  CHECK(s.totals().in_flight() == 3);
  s.end_request(outcome::success, 4us);  // sums the latency, leaves the estimate
  CHECK(s.latency_estimate() == 0ns);
  s.end_request(outcome::success, 3us, latency);
  CHECK(s.latency_estimate() == 3us);
  CHECK(s.active() == 1);
  s.end_request(outcome::failure, 0ns, in_flight);  // no latency: nothing to sum
  CHECK(s.active() == 0);
  const auto t = s.totals();
  CHECK(t.in_flight() == 0);
  CHECK(t.latency_samples == 2);
  CHECK(t.latency_ns == 7000);
}

TEST_CASE("the latency estimate is a peak EWMA that decays with time") {
  auto ref = make_state();
  backend_state& s = *ref;
  // Times on multiples of the stamp unit (2^20 ns), so that elapsed times are exact.
  constexpr std::int64_t unit = std::int64_t{1} << 20;
  const std::int64_t t0 = 1000 * unit;
  const double tau = static_cast<double>(std::chrono::nanoseconds(10s).count());
  CHECK(s.latency_decay() == 10s);  // the default, as Finagle's and Linkerd's

  s.observe_latency(800ns, t0);  // the first sample is taken as it is
  CHECK(s.latency_estimate() == 800ns);
  CHECK(s.latency_at(t0) == 800.0);
  s.observe_latency(1600ns, t0);  // a peak replaces the estimate at once
  CHECK(s.latency_estimate() == 1600ns);

  // A lower sample dt later blends in with weight 1 - exp(-dt / tau).
  const std::int64_t dt = 4096 * unit;  // ~4.3 s
  const double w = std::exp(-static_cast<double>(dt) / tau);
  s.observe_latency(100ns, t0 + dt);
  const double expected = 1600 * w + 100 * (1 - w);
  CHECK(s.latency_at(t0 + dt) == doctest::Approx(expected).epsilon(1e-6));  // float storage
  // A lower sample at the same instant moves nothing: the estimate's memory is time, not
  // a count of samples.
  s.observe_latency(100ns, t0 + dt);
  CHECK(s.latency_at(t0 + dt) == doctest::Approx(expected).epsilon(1e-6));

  // Without samples the estimate decays toward zero: e^-1 after one decay time...
  const std::int64_t one_tau = 9537 * unit;  // 10.000 s, to within one unit
  CHECK(s.latency_at(t0 + dt + one_tau) ==
        doctest::Approx(expected * std::exp(-static_cast<double>(one_tau) / tau)).epsilon(1e-6));
  // ...while latency_estimate() shows it as the last sample left it.
  CHECK(s.latency_estimate().count() == static_cast<std::int64_t>(static_cast<float>(expected)));
  // A decay set shorter makes both the blend and the decay faster; it is clamped to 1 ms.
  s.set_latency_decay(0ns);
  CHECK(s.latency_decay() == 1ms);
  CHECK(s.latency_at(t0 + dt + 100 * unit) < 1e-30);

  // No outcome, or no latency: no sample.
  s.set_latency_decay(10s);
  const auto before = s.latency_estimate();
  s.begin_request();
  s.end_request(outcome::none, 1s);
  s.begin_request();
  s.end_request(outcome::success, 0ns);
  CHECK(s.latency_estimate() == before);
  // Extreme samples are clipped, never overflow.
  s.observe_latency(std::chrono::nanoseconds(INT64_MAX), t0 + dt);
  CHECK(s.latency_estimate() == backend_state::max_latency);
}

TEST_CASE("hot counters sit on their own cache lines") {
  CHECK(alignof(backend_state) >= lbkit::cache_line);
  CHECK(sizeof(backend_state) % lbkit::cache_line == 0);
  // Two states allocated one after the other never share a line.
  auto a = make_state(), b = make_state();
  CHECK(reinterpret_cast<std::uintptr_t>(a.get()) % lbkit::cache_line == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b.get()) % lbkit::cache_line == 0);
}

TEST_CASE("state_ref owns; the last owner frees the state, or reclaiming after the last request") {
  // ASan reports any use after free here and LeakSanitizer any state never freed.
  SUBCASE("owners only") {
    auto a = make_state();
    lbkit::state_ref b = a;  // copy: a second owner
    CHECK(a == b);
    lbkit::state_ref c = std::move(a);
    CHECK(!a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    b = lbkit::state_ref();
    CHECK(c->id() == "b");
  }
  SUBCASE("a request outlives every owner") {
    backend_state* raw = nullptr;
    {
      auto a = make_state();
      raw = a.get();
      raw->begin_request();
      raw->begin_request();
    }
    const std::size_t waiting = backend_state::reclaim_retired();
    CHECK(raw->totals().in_flight() == 2);
    raw->end_request(outcome::success);
    CHECK(raw->totals().in_flight() == 1);
    CHECK(raw->successes() == 1);
    CHECK(backend_state::reclaim_retired() == waiting);  // still in use: kept
    raw->end_request(outcome::failure);
    CHECK(backend_state::reclaim_retired() == waiting - 1);  // the last request ended: freed
  }
}

TEST_CASE("concurrent requests are counted exactly") {
  // More threads at once than there are thread slots, so that some share the shared shard
  // (written with atomic adds) while the others own theirs (plain stores): both exact.
  auto ref = make_state();
  backend_state& s = *ref;
  const int threads = static_cast<int>(lbkit::detail::thread_slot::count()) + 3;
  constexpr int per_thread = 20000;
  constexpr lbkit::request_counting counting{.in_flight = true, .latency = true};
  std::latch all_started(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&s, &all_started, t, counting] {
      s.begin_request(counting);  // takes a slot, and holds it until every thread has one
      all_started.arrive_and_wait();
      s.end_request(outcome::success, 1000ns, counting);
      for (int i = 1; i < per_thread; ++i) {
        s.begin_request(counting);
        s.end_request((i + t) % 3 == 0 ? outcome::failure : outcome::success,
                      std::chrono::nanoseconds(1000 + i % 7), counting);
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(s.active() == 0);
  CHECK(s.totals().in_flight() == 0);
  CHECK(s.requests() == static_cast<std::uint64_t>(threads) * per_thread);
  std::uint64_t latency_sum = 0;
  for (int t = 0; t < threads; ++t) {
    latency_sum += 1000;
    for (int i = 1; i < per_thread; ++i) latency_sum += 1000 + i % 7;
  }
  CHECK(s.totals().latency_ns == latency_sum);
  CHECK(s.totals().latency_samples == static_cast<std::uint64_t>(threads) * per_thread);
  std::uint64_t expected_failures = 0;
  for (int t = 0; t < threads; ++t) {
    for (int i = 1; i < per_thread; ++i) expected_failures += (i + t) % 3 == 0;
  }
  CHECK(s.failures() == expected_failures);
  CHECK(s.successes() == static_cast<std::uint64_t>(threads) * per_thread - expected_failures);
  // Every sample lies in [1000, 1006] ns, so the average must as well.
  CHECK(s.latency_estimate() >= 1000ns);
  CHECK(s.latency_estimate() <= 1006ns);
}

TEST_CASE("the owner, the requests and a reclaimer may let go on different threads at once") {
  // The owner's release frees the state or retires it, and a reclaimer frees it after the
  // last request: exactly once. The checks are the sanitizer builds' (every preset but
  // release runs one): ASan reports a double free or a use after free, TSan a missing
  // happens-before; the count of retired states shows that none is left behind.
  const std::size_t waiting = backend_state::reclaim_retired();
  for (int round = 0; round < 200; ++round) {
    auto owner = make_state();
    backend_state* raw = owner.get();
    constexpr int in_flight = 8;
    for (int i = 0; i < in_flight; ++i) raw->begin_request();
    std::thread ender([raw] {
      for (int i = 0; i < in_flight; ++i) raw->end_request(outcome::success);
    });
    std::thread reclaimer([&] {
      for (int i = 0; i < 4; ++i) backend_state::reclaim_retired();
    });
    owner = lbkit::state_ref();
    ender.join();
    reclaimer.join();
  }
  CHECK(backend_state::reclaim_retired() == waiting);
}

TEST_CASE("a read while requests run is within the stated bound") {
  // totals() reads ends before starts: it never counts more ended than begun, and it counts
  // as in flight at least the requests in flight during the whole read. Here `held` requests
  // stay open on this thread while three threads (more than the owned slots on a 2-core
  // machine, so one may share) begin and end requests as fast as they can: every read must
  // show at least `held` in flight and no more ended than begun. (How far above `held` a read
  // lands depends on how many requests begin while it runs: not asserted.)
  auto ref = make_state();
  backend_state& s = *ref;
  constexpr int held = 5;
  for (int i = 0; i < held; ++i) s.begin_request();
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&s, &stop] {
      while (!stop.load(std::memory_order_relaxed)) {
        s.begin_request();
        s.end_request(outcome::success);
      }
    });
  }
  bool within = true;
  for (int read = 0; read < 20'000; ++read) {
    const auto t = s.totals();
    within = within && t.finished() <= t.started && t.in_flight() >= held;
  }
  stop.store(true, std::memory_order_relaxed);
  for (auto& t : ts) t.join();
  CHECK(within);
  CHECK(s.totals().in_flight() == held);
  for (int i = 0; i < held; ++i) s.end_request(outcome::none);
  CHECK(s.totals().in_flight() == 0);
}

TEST_CASE("every state has its own serial, even at a reused address") {
  std::uint64_t last = 0;
  for (int i = 0; i < 100; ++i) {
    auto s = make_state();  // freed at the end of each turn: the allocator may reuse it
    CHECK(s->serial() > last);
    last = s->serial();
  }
}

TEST_CASE("gateway failures are failures with a streak of their own") {
  auto ref = make_state();
  backend_state& s = *ref;
  auto end = [&](outcome o) {
    s.begin_request();
    s.end_request(o);
  };
  end(outcome::gateway_failure);
  end(outcome::gateway_failure);
  CHECK(s.failures() == 2);
  CHECK(s.consecutive_failures() == 2);
  CHECK(s.consecutive_gateway_failures() == 2);
  end(outcome::failure);  // another failure breaks the gateway streak only
  CHECK(s.consecutive_failures() == 3);
  CHECK(s.consecutive_gateway_failures() == 0);
  end(outcome::gateway_failure);
  CHECK(s.consecutive_gateway_failures() == 1);
  end(outcome::none);  // no report: changes no streak
  CHECK(s.consecutive_gateway_failures() == 1);
  end(outcome::success);
  CHECK(s.consecutive_failures() == 0);
  CHECK(s.consecutive_gateway_failures() == 0);
  CHECK(s.requests() == 6);
}

TEST_CASE("connection failures are gateway failures with a streak of their own") {
  auto ref = make_state();
  backend_state& s = *ref;
  auto end = [&](outcome o) {
    s.begin_request();
    s.end_request(o);
  };
  end(outcome::connection_failure);
  end(outcome::connection_failure);
  CHECK(s.failures() == 2);
  CHECK(s.consecutive_failures() == 2);
  CHECK(s.consecutive_gateway_failures() == 2);
  CHECK(s.consecutive_connection_failures() == 2);
  end(outcome::gateway_failure);  // an answer that came too late breaks this streak only
  CHECK(s.consecutive_gateway_failures() == 3);
  CHECK(s.consecutive_connection_failures() == 0);
  end(outcome::connection_failure);
  end(outcome::failure);
  CHECK(s.consecutive_connection_failures() == 0);
  CHECK(s.consecutive_failures() == 5);
  end(outcome::connection_failure);
  end(outcome::success);
  CHECK(s.consecutive_connection_failures() == 0);
  CHECK(s.consecutive_failures() == 0);
}

TEST_CASE("local errors are this host's: out of descriptors, buffers, memory, ports") {
  for (int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL}) CHECK(lbkit::is_local_error(e));
  for (int e : {ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, EPIPE, EACCES, 0}) {
    CHECK_FALSE(lbkit::is_local_error(e));
  }
}
