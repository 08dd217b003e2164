// SPDX-License-Identifier: MIT
// backend_state: live counters, the latency estimate and their behaviour under concurrency.
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_state.hpp>

using namespace std::chrono_literals;
using lbkit::backend_state;
using lbkit::outcome;

TEST_CASE("a new state is idle and has the initial health") {
  backend_state s;
  CHECK(s.active() == 0);
  CHECK(s.requests() == 0);
  CHECK(s.successes() == 0);
  CHECK(s.failures() == 0);
  CHECK(s.consecutive_failures() == 0);
  CHECK(s.latency_estimate() == 0ns);
  CHECK(s.current_health() == lbkit::health::healthy);
  CHECK(backend_state(lbkit::health::unhealthy).current_health() == lbkit::health::unhealthy);
}

TEST_CASE("begin and end count requests, outcomes and consecutive failures") {
  backend_state s;
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
  backend_state s;
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
  // Two adjacent states in an array never share a line.
  backend_state pair[2];
  const auto a = reinterpret_cast<std::uintptr_t>(&pair[0]);
  const auto b = reinterpret_cast<std::uintptr_t>(&pair[1]);
  CHECK((b - a) % lbkit::cache_line == 0);
}

TEST_CASE("concurrent requests are counted exactly") {
  backend_state s;
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
