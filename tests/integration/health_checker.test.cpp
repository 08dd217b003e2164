// SPDX-License-Identifier: MIT
// health_checker end to end: real TCP backends on loopback, a registry, a balancer. A backend
// that dies is ejected within the documented bound and gets no picks; one that comes back is
// restored and ramps up under slow start; membership changes are followed; stop() is prompt.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/balancer.hpp>
#include <lbkit/health/health_checker.hpp>
#include <lbkit/health/tcp_connect_probe.hpp>
#include <lbkit/policy/round_robin.hpp>

#include "../support/loopback.hpp"

using namespace std::chrono_literals;
using lbkit::backend;
using lbkit::backend_registry;
using lbkit::health;
using lbkit::health_checker;
using lbkit::health_checker_options;
using lbkit::health_event;
using lbkit::tcp_connect_probe;
using lbkit::test::loopback_server;

namespace {

void close_at_once(int c, const loopback_server&) { ::close(c); }

// Fast checks for tests: up 50 ms, between states 20 ms, down 50 ms; ±10% jitter.
health_checker_options fast_checks() {
  health_checker_options o;
  o.check.rise = 2;
  o.check.fall = 2;
  o.check.interval = 50ms;
  o.check.fast_interval = 20ms;
  o.check.down_interval = 50ms;
  o.check.timeout = 200ms;
  o.check.jitter = 0.1;
  o.concurrency = 2;
  o.seed = 42;
  return o;
}

// Waits until `done()` or `limit` passes; returns done(). A bounded wait on a condition.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 5000ms) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

health health_of(const backend_registry& r, const std::string& id) {
  return r.current()->find(id)->state().current_health();
}

}  // namespace

TEST_CASE("a dead backend is ejected within fall probes, gets no picks, and returns ramping") {
  std::vector<std::unique_ptr<loopback_server>> servers;
  backend_registry registry;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(std::make_unique<loopback_server>(close_at_once));
    REQUIRE(registry.add(backend("b" + std::to_string(i), servers.back()->address())));
  }
  lbkit::balancer<lbkit::round_robin> lb(
      registry, {},
      {.panic_threshold = 0, .seed = 1, .slow_start = {std::chrono::hours(1), 1.0, 10.0}});
  // Declared before the checker, so that they outlive its threads.
  std::mutex mu;
  std::vector<health_event> events;
  auto event_count = [&] {
    std::lock_guard lock(mu);
    return events.size();
  };
  const auto options = fast_checks();
  health_checker checker(registry, tcp_connect_probe{}, options);
  checker.on_change([&](const health_event& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  });
  REQUIRE(eventually([&] { return checker.probes_done() >= 6; }));
  CHECK(health_of(registry, "b1") == health::healthy);

  // Kill b1. The first failing probe comes within one interval (+10%), the second one fast
  // interval (+10%) later; each is refused at once. Allow 1 s for scheduling on a busy
  // machine: the bound checked is 55 + 22 + 1000 ms.
  const auto port = servers[1]->address().port();
  const auto killed = std::chrono::steady_clock::now();
  servers[1]->stop();
  REQUIRE(eventually([&] { return health_of(registry, "b1") == health::unhealthy; }));
  const auto took = std::chrono::steady_clock::now() - killed;
  CHECK(took < options.check.interval * 1.1 + options.check.fast_interval * 1.1 + 1000ms);
  // Listeners hear of it just after the registry write.
  REQUIRE(eventually([&] { return event_count() >= 1; }));
  {
    std::lock_guard lock(mu);
    REQUIRE(events.size() == 1);
    CHECK(events[0].id == "b1");
    CHECK(events[0].from == health::healthy);
    CHECK(events[0].to == health::unhealthy);
    CHECK(events[0].cause.status == lbkit::probe_status::refused);
  }
  // The registry write rebuilt the balancer's plan before the write returned: no pick now
  // goes to b1.
  auto picker = lb.make_picker();
  for (int i = 0; i < 1000; ++i) CHECK(picker.pick().id() != "b1");

  // Bring it back on the same port: restored after `rise` good probes, then slow start.
  servers[1] = std::make_unique<loopback_server>(close_at_once, false, port);
  REQUIRE(eventually([&] { return health_of(registry, "b1") == health::healthy; }));
  // The listener runs after the registry write returned, so after the balancer rebuilt (the
  // health is stored a moment before the new version is published).
  REQUIRE(eventually([&] { return event_count() >= 2; }));
  const auto plan = lb.current_plan();
  REQUIRE(plan->ramp_start.size() == 3);
  CHECK(plan->ramp_start[1] != 0);  // b1 ramps; b0 and b2 were there from the start
  CHECK(plan->ramp_start[0] == 0);
  std::lock_guard lock(mu);
  REQUIRE(events.size() == 2);
  CHECK(events[1].to == health::healthy);
}

TEST_CASE("membership is followed: added backends are probed, removed ones are not") {
  backend_registry registry;
  loopback_server up(close_at_once);
  lbkit::endpoint closed;
  {
    loopback_server gone(close_at_once);
    closed = gone.address();
  }
  health_checker checker(registry, tcp_connect_probe{}, fast_checks());
  REQUIRE(registry.add(backend("alive", up.address())));
  REQUIRE(registry.add(backend("dead", closed)));
  REQUIRE(eventually([&] { return health_of(registry, "dead") == health::unhealthy; }));
  CHECK(checker.tracked("alive") == health::healthy);
  REQUIRE(registry.remove("dead"));
  REQUIRE(eventually([&] { return !checker.tracked("dead").has_value(); }));
  // A backend added unhealthy needs `rise` good answers before it is healthy.
  loopback_server late(close_at_once);
  REQUIRE(registry.add(backend("late", late.address()), health::unhealthy));
  REQUIRE(eventually([&] { return health_of(registry, "late") == health::healthy; }));
}

TEST_CASE("stop() returns within about one probe timeout even while probes hang") {
  // Backends that accept and never answer an expect: every probe runs to its deadline.
  loopback_server silent([](int c, const loopback_server& self) {
    self.wait(c, POLLRDHUP);
    ::close(c);
  });
  backend_registry registry;
  for (int i = 0; i < 4; ++i)
    REQUIRE(registry.add(backend("s" + std::to_string(i), silent.address())));
  auto options = fast_checks();
  options.check.timeout = 300ms;
  auto checker = std::make_unique<health_checker<tcp_connect_probe>>(
      registry, tcp_connect_probe({.expect = "never"}), options);
  // Two probes (the concurrency) are connected and waiting for bytes that never come.
  REQUIRE(eventually([&] { return silent.accepted() >= 2; }));
  const auto start = std::chrono::steady_clock::now();
  checker->stop();
  CHECK(std::chrono::steady_clock::now() - start < options.check.timeout + 500ms);
  checker.reset();
}

TEST_CASE("with outlier detection on, failing leases eject a backend that passes active checks") {
  loopback_server a(close_at_once), b(close_at_once);
  backend_registry registry;
  REQUIRE(registry.add(backend("a", a.address())));
  REQUIRE(registry.add(backend("b", b.address())));
  std::mutex mu;
  std::vector<health_event> events;
  auto options = fast_checks();
  lbkit::outlier_detection_options outliers;
  outliers.success_rate = false;
  outliers.max_ejection_percent = 100;
  options.outlier = outliers;
  options.outlier_tick = 20ms;
  health_checker checker(registry, tcp_connect_probe{}, options);
  checker.on_change([&](const health_event& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  });
  lbkit::balancer<lbkit::round_robin> lb(registry, {}, {.panic_threshold = 0, .seed = 3});
  auto picker = lb.make_picker();
  int failed = 0;
  while (failed < 5) {  // real traffic: every request to b fails
    auto l = picker.pick();
    REQUIRE(l);
    if (l.id() == "b") {
      l.report(lbkit::outcome::failure);
      ++failed;
    } else {
      l.report(lbkit::outcome::success);
    }
  }
  const lbkit::state_ref b_state = registry.current()->find("b")->state_handle();
  REQUIRE(eventually([&] { return b_state->ejected(); }));
  CHECK(b_state->active_health() == health::healthy);  // its listener still answers
  // Listeners hear of it after the registry write, and so after the balancer rebuilt.
  REQUIRE(eventually([&] {
    std::lock_guard lock(mu);
    return !events.empty();
  }));
  for (int i = 0; i < 100; ++i) CHECK(picker.pick().id() == "a");
  std::lock_guard lock(mu);
  CHECK(events[0].id == "b");
  CHECK(events[0].passive);
  CHECK(events[0].to == health::unhealthy);
  CHECK(events[0].cause.detail.find("consecutive failures") != std::string::npos);
}

TEST_CASE("a passing check ends an ejection for connection failures, not one for bad answers") {
  // Both listeners answer the TCP check throughout. Traffic saw a's connections refused (as
  // while it restarted) and b answer 500s. The ejection time is an hour, so only a passing
  // check can end one: a's ends at the next probe, b's stays (docs/health.md).
  loopback_server a(close_at_once), b(close_at_once), c(close_at_once);
  backend_registry registry;
  for (auto* s : {&a, &b, &c}) {
    const std::string id = s == &a ? "a" : s == &b ? "b" : "c";
    REQUIRE(registry.add(backend(id, s->address())));
  }
  std::mutex mu;
  std::vector<health_event> events;
  auto options = fast_checks();
  lbkit::outlier_detection_options outliers;
  outliers.success_rate = false;
  outliers.max_ejection_percent = 100;
  outliers.base_ejection_time = std::chrono::hours(1);
  outliers.max_ejection_time = std::chrono::hours(1);
  options.outlier = outliers;
  options.outlier_tick = 20ms;
  health_checker checker(registry, tcp_connect_probe{}, options);
  checker.on_change([&](const health_event& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  });
  auto state = [&](const char* id) { return registry.current()->find(id)->state_handle(); };
  const lbkit::state_ref sa = state("a"), sb = state("b");
  for (int i = 0; i < 5; ++i) {
    sa->begin_request();
    sa->end_request(lbkit::outcome::connection_failure);
    sb->begin_request();
    sb->end_request(lbkit::outcome::failure);
  }
  REQUIRE(eventually([&] { return sb->ejected(); }));
  REQUIRE(eventually([&] {
    std::lock_guard lock(mu);
    return std::any_of(events.begin(), events.end(), [](const health_event& e) {
      return e.id == "a" && e.passive && e.to == health::healthy;
    });
  }));
  CHECK_FALSE(sa->ejected());
  CHECK(health_of(registry, "a") == health::healthy);
  // b stays out while its checks keep passing: ten more probes of each backend at least.
  const auto probes = checker.probes_done();
  REQUIRE(eventually([&] { return checker.probes_done() >= probes + 30; }));
  CHECK(sb->ejection_state() == lbkit::ejection::timed);
  std::lock_guard lock(mu);
  for (const auto& e : events) {
    CAPTURE(e.cause.detail);
    if (e.id == "a" && e.to == health::healthy)
      CHECK(e.cause.detail.find("active check") != std::string::npos);
    if (e.id == "b") CHECK(e.to == health::unhealthy);
  }
}
