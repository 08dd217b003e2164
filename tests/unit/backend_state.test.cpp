// SPDX-License-Identifier: MIT
// backend_state: live counters, the latency estimate and their behaviour under concurrency.
#include <chrono>
#include <cstdint>
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
  CHECK(s.active() == 5);
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
  CHECK(s.active() == 0);
  CHECK(s.requests() == 5);
}

TEST_CASE("the latency estimate is an EWMA with weight 1/8 for the newest sample") {
  auto ref = make_state();
  backend_state& s = *ref;
  s.begin_request();
  s.end_request(outcome::success, 800ns);  // the first sample is taken as it is
  CHECK(s.latency_estimate() == 800ns);
  s.begin_request();
  s.end_request(outcome::success, 1600ns);  // 800 + (1600 - 800) / 8
  CHECK(s.latency_estimate() == 900ns);
  s.begin_request();
  s.end_request(outcome::failure, 100ns);  // 900 - (900 - 100) / 8
  CHECK(s.latency_estimate() == 800ns);
  s.begin_request();
  s.end_request(outcome::none, 1s);  // no outcome: no sample
  s.begin_request();
  s.end_request(outcome::success, 0ns);  // no latency: no sample
  CHECK(s.latency_estimate() == 800ns);
  // Extreme samples neither overflow nor wrap.
  s.begin_request();
  s.end_request(outcome::success, std::chrono::nanoseconds(INT64_MAX));
  CHECK(s.latency_estimate() > 800ns);
  CHECK(s.latency_estimate() <= std::chrono::nanoseconds(INT64_MAX));
}

TEST_CASE("hot counters sit on their own cache lines") {
  CHECK(alignof(backend_state) >= lbkit::cache_line);
  CHECK(sizeof(backend_state) % lbkit::cache_line == 0);
  // Two states allocated one after the other never share a line.
  auto a = make_state(), b = make_state();
  CHECK(reinterpret_cast<std::uintptr_t>(a.get()) % lbkit::cache_line == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b.get()) % lbkit::cache_line == 0);
}

TEST_CASE("state_ref owns; the last owner or the last request frees the state") {
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
    CHECK(raw->active() == 2);
    raw->end_request(outcome::success);
    CHECK(raw->active() == 1);
    CHECK(raw->successes() == 1);
    raw->end_request(outcome::failure);  // the last holder: frees the state
  }
}

TEST_CASE("concurrent requests are counted exactly") {
  auto ref = make_state();
  backend_state& s = *ref;
  constexpr int threads = 4, per_thread = 20000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&s, t] {
      for (int i = 0; i < per_thread; ++i) {
        s.begin_request();
        s.end_request((i + t) % 3 == 0 ? outcome::failure : outcome::success,
                      std::chrono::nanoseconds(1000 + i % 7));
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(s.active() == 0);
  CHECK(s.requests() == threads * per_thread);
  std::uint64_t expected_failures = 0;
  for (int t = 0; t < threads; ++t) {
    for (int i = 0; i < per_thread; ++i) expected_failures += (i + t) % 3 == 0;
  }
  CHECK(s.failures() == expected_failures);
  CHECK(s.successes() == threads * per_thread - expected_failures);
  // Every sample lies in [1000, 1006] ns, so the average must as well.
  CHECK(s.latency_estimate() >= 1000ns);
  CHECK(s.latency_estimate() <= 1006ns);
}

TEST_CASE("the owner and the requests may let go on different threads at once") {
  // Whichever side lets go last frees the state, exactly once. The checks are the sanitizer
  // builds' (every preset but release runs one): ASan reports a double free or a use after
  // free, LeakSanitizer a state nobody freed, TSan a missing happens-before.
  for (int round = 0; round < 200; ++round) {
    auto owner = make_state();
    backend_state* raw = owner.get();
    constexpr int in_flight = 8;
    for (int i = 0; i < in_flight; ++i) raw->begin_request();
    std::thread ender([raw] {
      for (int i = 0; i < in_flight; ++i) raw->end_request(outcome::success);
    });
    owner = lbkit::state_ref();
    ender.join();
  }
}
