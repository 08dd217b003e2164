// SPDX-License-Identifier: MIT
// outlier_detector: scripted outcome sequences give exactly the documented ejections and
// restorations; ejection times grow and are forgiven; max ejection percent holds; ejection
// and active health are independent.
#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/balancer.hpp>
#include <lbkit/health/outlier_detector.hpp>
#include <lbkit/policy/round_robin.hpp>

using namespace std::chrono_literals;
using lbkit::backend;
using lbkit::backend_registry;
using lbkit::ejection_reason;
using lbkit::health;
using lbkit::outcome;
using lbkit::outlier_detection_options;
using lbkit::outlier_detector;

namespace {

const auto t0 = outlier_detector::clock::time_point{} + 1000h;

void add_backends(backend_registry& r, int n) {
  for (int i = 0; i < n; ++i) {
    REQUIRE(r.add(backend("b" + std::to_string(i), *lbkit::endpoint::parse("10.0.0.1:80"))));
  }
}

lbkit::backend_state& state(backend_registry& r, int i) {
  return r.current()->find("b" + std::to_string(i))->state();
}

// Ends `n` requests on backend i with outcome o, as leases reporting would.
void outcomes(backend_registry& r, int i, int n, outcome o) {
  for (int k = 0; k < n; ++k) {
    state(r, i).begin_request();
    state(r, i).end_request(o);
  }
}

// Only consecutive failures, for the cases that study them alone.
outlier_detection_options consecutive_only() {
  outlier_detection_options o;
  o.success_rate = false;
  o.max_ejection_percent = 100;
  return o;
}

}  // namespace

TEST_CASE("defaults are Envoy's, and valid") {
  const outlier_detection_options o;
  CHECK(o.consecutive_failures == 5);
  CHECK(o.interval == 10s);
  CHECK(o.base_ejection_time == 30s);
  CHECK(o.max_ejection_time == 300s);
  CHECK(o.max_ejection_percent == 10);
  CHECK(o.success_rate_stdev_factor == 1.9);
  CHECK(validate(o));
}

TEST_CASE("5 consecutive failures eject; 4, or 4 then a success, do not") {
  backend_registry r;
  add_backends(r, 3);
  outlier_detector d(r, consecutive_only(), t0);
  outcomes(r, 0, 4, outcome::failure);
  CHECK(d.evaluate(t0).empty());
  outcomes(r, 0, 1, outcome::success);
  outcomes(r, 0, 4, outcome::failure);
  CHECK(d.evaluate(t0).empty());
  outcomes(r, 0, 1, outcome::failure);  // the 5th in a row
  const auto ev = d.evaluate(t0);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].id == "b0");
  CHECK(ev[0].ejected);
  CHECK(ev[0].reason == ejection_reason::consecutive_failures);
  CHECK(ev[0].until == t0 + 30s);
  // The registry knows: ejected, so unhealthy for the balancer, while the active verdict
  // stays healthy.
  CHECK(state(r, 0).ejected());
  CHECK(state(r, 0).active_health() == health::healthy);
  CHECK(state(r, 0).current_health() == health::unhealthy);
  lbkit::balancer<lbkit::round_robin> lb(r, {}, {.seed = 1});
  auto picker = lb.make_picker();
  for (int i = 0; i < 100; ++i) CHECK(picker.pick().id() != "b0");
}

TEST_CASE(
    "restored after the ejection time; the next ejection lasts longer; good behaviour is "
    "forgiven") {
  backend_registry r;
  add_backends(r, 2);
  outlier_detector d(r, consecutive_only(), t0);
  outcomes(r, 0, 5, outcome::failure);
  REQUIRE(d.evaluate(t0).size() == 1);
  CHECK(d.evaluate(t0 + 29s).empty());  // still ejected
  const auto back = d.evaluate(t0 + 30s);
  REQUIRE(back.size() == 1);
  CHECK_FALSE(back[0].ejected);
  CHECK_FALSE(state(r, 0).ejected());
  CHECK(state(r, 0).current_health() == health::healthy);
  // The failures that caused the ejection do not count again...
  CHECK(d.evaluate(t0 + 31s).empty());
  // ...but five new ones do, and the second ejection lasts 2 x 30 s.
  outcomes(r, 0, 5, outcome::failure);
  const auto again = d.evaluate(t0 + 32s);
  REQUIRE(again.size() == 1);
  CHECK(again[0].until == t0 + 32s + 60s);
  CHECK(d.ejections("b0") == 2);
  // Restored at t0 + 92 s; two intervals un-ejected forgive both ejections.
  REQUIRE(d.evaluate(t0 + 92s).size() == 1);
  d.evaluate(t0 + 102s);
  d.evaluate(t0 + 112s);
  CHECK(d.ejections("b0") == 0);
  outcomes(r, 0, 5, outcome::failure);
  const auto third = d.evaluate(t0 + 113s);
  REQUIRE(third.size() == 1);
  CHECK(third[0].until == t0 + 113s + 30s);
}

TEST_CASE("ejection time is capped at max_ejection_time") {
  backend_registry r;
  add_backends(r, 1);
  auto o = consecutive_only();
  o.base_ejection_time = 100s;
  o.max_ejection_time = 150s;
  outlier_detector d(r, o, t0);
  auto now = t0;
  outcomes(r, 0, 5, outcome::failure);
  REQUIRE(d.evaluate(now).size() == 1);  // 100 s
  now += 100s;
  REQUIRE(d.evaluate(now).size() == 1);  // restored
  outcomes(r, 0, 5, outcome::failure);
  const auto ev = d.evaluate(now);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].until == now + 150s);  // 200 s capped
}

TEST_CASE("max ejection percent holds, but one backend may always be ejected") {
  backend_registry r;
  add_backends(r, 10);
  auto o = consecutive_only();
  o.max_ejection_percent = 20;  // 2 of 10
  outlier_detector d(r, o, t0);
  for (int i = 0; i < 5; ++i) outcomes(r, i, 5, outcome::failure);
  CHECK(d.evaluate(t0).size() == 2);
  CHECK(d.evaluate(t0 + 1s).empty());  // the limit stands while they are out
  int ejected = 0;
  for (int i = 0; i < 10; ++i) ejected += state(r, i).ejected();
  CHECK(ejected == 2);

  backend_registry small;
  add_backends(small, 3);
  auto tight = consecutive_only();
  tight.max_ejection_percent = 10;  // 0.3 of a backend: rounds down, but one is allowed
  outlier_detector ds(small, tight, t0);
  outcomes(small, 0, 5, outcome::failure);
  outcomes(small, 1, 5, outcome::failure);
  CHECK(ds.evaluate(t0).size() == 1);
}

TEST_CASE(
    "success rate: below mean - 1.9 stdev is ejected, once per interval, given enough hosts and "
    "volume") {
  backend_registry r;
  add_backends(r, 6);
  outlier_detection_options o;
  o.consecutive_failures = 0;
  o.max_ejection_percent = 100;
  outlier_detector d(r, o, t0);
  // Five backends at 99-100% success, one at 50% (interleaved so that consecutive failures
  // never build up). Rates 100, 99, 100, 99, 100, 50: mean 91.33, stdev 18.49, threshold
  // 91.33 - 1.9 x 18.49 = 56.2 > 50.
  for (int i = 0; i < 6; ++i) {
    for (int k = 0; k < 100; ++k) {
      const bool fail = i == 5 ? k % 2 == 0 : (i % 2 == 1 && k == 0);
      outcomes(r, i, 1, fail ? outcome::failure : outcome::success);
    }
  }
  CHECK(d.evaluate(t0 + 9s).empty());  // the interval has not passed
  const auto ev = d.evaluate(t0 + 10s);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].id == "b5");
  CHECK(ev[0].reason == ejection_reason::success_rate);

  // With too little volume (99 < 100 requests) nothing is judged.
  backend_registry quiet;
  add_backends(quiet, 6);
  outlier_detector dq(quiet, o, t0);
  for (int i = 0; i < 6; ++i) {
    for (int k = 0; k < 99; ++k)
      outcomes(quiet, i, 1, i == 5 && k % 2 ? outcome::failure : outcome::success);
  }
  CHECK(dq.evaluate(t0 + 10s).empty());
  // With too few hosts (4 < 5) nothing is judged either.
  backend_registry few;
  add_backends(few, 4);
  outlier_detector df(few, o, t0);
  for (int i = 0; i < 4; ++i) {
    for (int k = 0; k < 200; ++k)
      outcomes(few, i, 1, i == 3 && k % 2 ? outcome::failure : outcome::success);
  }
  CHECK(df.evaluate(t0 + 10s).empty());
}

TEST_CASE("failure percentage: at or above the threshold is ejected when enabled") {
  backend_registry r;
  add_backends(r, 5);
  outlier_detection_options o;
  o.consecutive_failures = 0;
  o.success_rate = false;
  o.failure_percentage = true;
  o.max_ejection_percent = 100;
  outlier_detector d(r, o, t0);
  for (int i = 0; i < 5; ++i) {
    for (int k = 0; k < 100; ++k) {
      // b4 fails 85 of 100 (exactly the threshold), b3 84 of 100 (just under).
      const int fails = i == 4 ? 85 : i == 3 ? 84 : 0;
      outcomes(r, i, 1, k < fails ? outcome::failure : outcome::success);
    }
  }
  const auto ev = d.evaluate(t0 + 10s);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].id == "b4");
  CHECK(ev[0].reason == ejection_reason::failure_percentage);
}

TEST_CASE("active health and ejection are independent; re-added backends start clean") {
  backend_registry r;
  add_backends(r, 2);
  outlier_detector d(r, consecutive_only(), t0);
  outcomes(r, 0, 5, outcome::failure);
  REQUIRE(d.evaluate(t0).size() == 1);
  // An active check that passes does not end the ejection (see docs/health.md).
  REQUIRE(r.set_health("b0", health::healthy));
  CHECK(state(r, 0).current_health() == health::unhealthy);
  // Restoration does not make an actively unhealthy backend healthy either.
  REQUIRE(r.set_health("b0", health::unhealthy));
  REQUIRE(d.evaluate(t0 + 30s).size() == 1);
  CHECK_FALSE(state(r, 0).ejected());
  CHECK(state(r, 0).current_health() == health::unhealthy);

  // Removed and added again: a new backend with a clean record.
  outcomes(r, 1, 5, outcome::failure);
  REQUIRE(d.evaluate(t0 + 31s).size() == 1);
  REQUIRE(r.remove("b1"));
  REQUIRE(r.add(backend("b1", *lbkit::endpoint::parse("10.0.0.1:80"))));
  CHECK(d.evaluate(t0 + 32s).empty());
  CHECK_FALSE(d.is_ejected("b1"));
  CHECK(d.ejections("b1") == 0);
}

TEST_CASE("invalid options are reported") {
  outlier_detection_options o;
  o.max_ejection_percent = 150;
  CHECK_FALSE(validate(o));
  o = {};
  o.max_ejection_time = 1s;  // below the base
  CHECK_FALSE(validate(o));
  o = {};
  o.failure_percentage_threshold = -1;
  CHECK_FALSE(validate(o));
}

TEST_CASE("consecutive gateway failures eject when enabled, at their own threshold") {
  backend_registry r;
  add_backends(r, 3);
  auto o = consecutive_only();
  o.consecutive_failures = 10;
  o.consecutive_gateway_failures = 3;
  outlier_detector d(r, o, t0);
  outcomes(r, 0, 2, outcome::gateway_failure);
  outcomes(r, 0, 1, outcome::failure);  // breaks the gateway streak
  outcomes(r, 0, 2, outcome::gateway_failure);
  CHECK(d.evaluate(t0).empty());  // gateway streak 2, all failures 5 < 10
  outcomes(r, 0, 1, outcome::gateway_failure);
  const auto ev = d.evaluate(t0);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].reason == ejection_reason::consecutive_gateway_failures);
  CHECK(to_string(ev[0].reason) == "consecutive gateway failures");
  // Off by default, as in Envoy: the same sequence under the defaults ejects for the
  // general count only.
  CHECK(outlier_detection_options{}.consecutive_gateway_failures == 0);
}

// ---- what ends an ejection: a passing active check, for connection failures ----------------

namespace {

using lbkit::ejection;
using steady = std::chrono::steady_clock;

// When backend i's ejection began, on the steady clock.
steady::time_point ejected_at(backend_registry& r, int i) {
  return steady::time_point(std::chrono::nanoseconds(state(r, i).ejected_since()));
}

}  // namespace

TEST_CASE("connection failures eject until a check passes; bad answers keep their time") {
  backend_registry r;
  add_backends(r, 2);
  outlier_detector d(r, consecutive_only(), t0);
  outcomes(r, 0, 5, outcome::connection_failure);  // refused: what a check sees too
  outcomes(r, 1, 5, outcome::failure);             // 500s: a check may pass all along
  auto ev = d.evaluate(t0 + 1s);
  REQUIRE(ev.size() == 2);
  CHECK(ev[0].reason == ejection_reason::consecutive_connection_failures);
  CHECK(ev[1].reason == ejection_reason::consecutive_failures);
  CHECK(state(r, 0).ejection_state() == ejection::until_check);
  CHECK(state(r, 1).ejection_state() == ejection::timed);

  // A check that began before the ejection ends nothing: it may have seen the backend before
  // it failed.
  REQUIRE(r.apply(lbkit::change_set().check_passed("b0", ejected_at(r, 0) - 1ms)));
  CHECK(state(r, 0).ejected());
  // One begun after it ends the ejection; the same on b1 changes nothing.
  const auto later = ejected_at(r, 1) + 1ms;
  REQUIRE(r.apply(lbkit::change_set().check_passed("b0", later).check_passed("b1", later)));
  CHECK_FALSE(state(r, 0).ejected());
  CHECK(state(r, 0).current_health() == health::healthy);
  CHECK(state(r, 1).ejection_state() == ejection::timed);

  // The detector sees b0 restored: no event of its own, no second ejection for the failures
  // it acted on, but new ones count from there.
  CHECK(d.evaluate(t0 + 2s).empty());
  CHECK_FALSE(d.is_ejected("b0"));
  outcomes(r, 0, 4, outcome::connection_failure);
  CHECK(d.evaluate(t0 + 3s).empty());
  outcomes(r, 0, 1, outcome::connection_failure);
  ev = d.evaluate(t0 + 4s);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].id == "b0");
  CHECK(d.ejections("b0") == 2);  // the count of ejections still grows the next one's time
  CHECK(ev[0].until == t0 + 4s + 60s);
}

TEST_CASE("a streak mixing connection failures with other failures keeps its time") {
  backend_registry r;
  add_backends(r, 1);
  outlier_detector d(r, consecutive_only(), t0);
  outcomes(r, 0, 2, outcome::failure);
  outcomes(r, 0, 3, outcome::connection_failure);
  auto ev = d.evaluate(t0 + 1s);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].reason == ejection_reason::consecutive_failures);
  CHECK(state(r, 0).ejection_state() == ejection::timed);
}

TEST_CASE("passing_check_ends: all ends every ejection, none ends none") {
  for (auto ends : {lbkit::uneject_on_check::all, lbkit::uneject_on_check::none}) {
    CAPTURE(static_cast<int>(ends));
    backend_registry r;
    add_backends(r, 2);
    auto o = consecutive_only();
    o.passing_check_ends = ends;
    outlier_detector d(r, o, t0);
    outcomes(r, 0, 5, outcome::connection_failure);
    outcomes(r, 1, 5, outcome::failure);
    REQUIRE(d.evaluate(t0 + 1s).size() == 2);
    const auto want =
        ends == lbkit::uneject_on_check::all ? ejection::until_check : ejection::timed;
    CHECK(state(r, 0).ejection_state() == want);
    CHECK(state(r, 1).ejection_state() == want);
  }
}

TEST_CASE("gateway failures that are all connection failures say so") {
  backend_registry r;
  add_backends(r, 2);
  auto o = consecutive_only();
  o.consecutive_failures = 0;
  o.consecutive_gateway_failures = 3;
  outlier_detector d(r, o, t0);
  outcomes(r, 0, 3, outcome::connection_failure);
  outcomes(r, 1, 3, outcome::gateway_failure);  // 503s, or no answer in time
  auto ev = d.evaluate(t0 + 1s);
  REQUIRE(ev.size() == 2);
  CHECK(ev[0].reason == ejection_reason::consecutive_connection_failures);
  CHECK(ev[1].reason == ejection_reason::consecutive_gateway_failures);
  CHECK(state(r, 1).ejection_state() == ejection::timed);
}
