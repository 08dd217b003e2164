// SPDX-License-Identifier: MIT
// health_tracker: rise/fall thresholds, the probe schedule and its jitter.
#include <chrono>
#include <set>

#include <doctest/doctest.h>

#include <lbkit/health/health_tracker.hpp>

using namespace std::chrono_literals;
using lbkit::health;
using lbkit::health_check_options;
using lbkit::health_tracker;
using lbkit::probe_result;
using lbkit::probe_status;

namespace {

const probe_result ok{probe_status::healthy, "ok", 1ms};
const probe_result refused{probe_status::refused, "connect: Connection refused", 1ms};
const auto t0 = health_tracker::clock::time_point{} + 1000h;

health_check_options no_jitter() {
  health_check_options o;
  o.jitter = 0;
  return o;
}

}  // namespace

TEST_CASE("defaults are HAProxy's rise 2 / fall 3 / inter 2 s, and valid") {
  const health_check_options o;
  CHECK(o.rise == 2);
  CHECK(o.fall == 3);
  CHECK(o.interval == 2s);
  CHECK(validate(o));
}

TEST_CASE("an up backend goes down after `fall` consecutive failures, not before") {
  health_tracker t(no_jitter(), health::healthy, t0, 1);
  CHECK_FALSE(t.report(refused, t0));
  CHECK_FALSE(t.report(refused, t0));
  CHECK(t.streak() == 2);
  CHECK_FALSE(t.report(ok, t0));  // a success in between starts the count again
  CHECK(t.streak() == 0);
  CHECK_FALSE(t.report(refused, t0));
  CHECK_FALSE(t.report(refused, t0));
  const auto down = t.report(refused, t0);
  REQUIRE(down);
  CHECK(down->from == health::healthy);
  CHECK(down->to == health::unhealthy);
  CHECK(down->cause.status == probe_status::refused);
  CHECK(t.state() == health::unhealthy);
  CHECK(t.streak() == 0);
  CHECK_FALSE(t.report(refused, t0));  // already down: no transition
}

TEST_CASE("a down backend comes up after `rise` consecutive successes") {
  health_check_options o = no_jitter();
  o.rise = 3;
  health_tracker t(o, health::unhealthy, t0, 2);
  CHECK_FALSE(t.report(ok, t0));
  CHECK_FALSE(t.report(ok, t0));
  CHECK_FALSE(t.report(refused, t0));  // resets the count
  CHECK_FALSE(t.report(ok, t0));
  CHECK_FALSE(t.report(ok, t0));
  const auto up = t.report(ok, t0);
  REQUIRE(up);
  CHECK(up->from == health::unhealthy);
  CHECK(up->to == health::healthy);
  CHECK(t.state() == health::healthy);
  REQUIRE(t.last());
  CHECK(t.last()->healthy());
}

TEST_CASE("rise 1 / fall 1 flip on every change of answer") {
  health_check_options o = no_jitter();
  o.rise = o.fall = 1;
  health_tracker t(o, health::healthy, t0, 3);
  CHECK(t.report(refused, t0));
  CHECK(t.report(ok, t0));
  CHECK_FALSE(t.report(ok, t0));
}

TEST_CASE("the schedule: interval when up, fast between states, down_interval when down") {
  health_check_options o = no_jitter();
  health_tracker t(o, health::healthy, t0, 4);
  CHECK(t.current_interval() == o.interval);
  t.report(ok, t0);
  CHECK(t.next_probe() == t0 + o.interval);
  t.report(refused, t0);  // up, one failure: between states
  CHECK(t.current_interval() == o.fast_interval);
  CHECK(t.next_probe() == t0 + o.fast_interval);
  t.report(refused, t0);
  t.report(refused, t0);  // down
  CHECK(t.state() == health::unhealthy);
  CHECK(t.next_probe() == t0 + o.down_interval);
  t.report(ok, t0);  // down, one success
  CHECK(t.next_probe() == t0 + o.fast_interval);
}

TEST_CASE(
    "jitter: every wait within interval x [1 - j, 1 + j], the first probe within one interval") {
  health_check_options o;
  o.jitter = 0.2;
  std::set<health_tracker::clock::time_point> firsts;
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    health_tracker t(o, health::healthy, t0, seed);
    CHECK(t.next_probe() >= t0);
    CHECK(t.next_probe() < t0 + o.interval);
    firsts.insert(t.next_probe());
    for (int i = 0; i < 20; ++i) {
      t.report(ok, t0);
      const auto wait = t.next_probe() - t0;
      CHECK(wait >= o.interval * 0.8);
      CHECK(wait <= o.interval * 1.2);
    }
  }
  // The first probes spread: 200 uniform draws in a 2 s window collide at nanosecond
  // resolution with negligible probability.
  CHECK(firsts.size() == 200);
}

TEST_CASE("the same seed gives the same schedule") {
  const health_check_options o;
  health_tracker a(o, health::healthy, t0, 77), b(o, health::healthy, t0, 77);
  for (int i = 0; i < 10; ++i) {
    CHECK(a.next_probe() == b.next_probe());
    a.report(i % 3 ? ok : refused, t0);
    b.report(i % 3 ? ok : refused, t0);
  }
}

TEST_CASE("invalid options are reported") {
  health_check_options o;
  o.rise = 0;
  CHECK_FALSE(validate(o));
  o = {};
  o.fast_interval = 0ms;
  CHECK_FALSE(validate(o));
  o = {};
  o.timeout = -1ms;
  CHECK_FALSE(validate(o));
  o = {};
  o.jitter = 1.0;
  const auto e = validate(o);
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("jitter") != std::string::npos);
}

TEST_CASE("a local error counts neither way and is probed again soon") {
  // Out of descriptors on the checking host says nothing about the backend (EMFILE).
  const probe_result local{probe_status::local_error, "socket: Too many open files", 0ms};
  health_tracker up(no_jitter(), health::healthy, t0, 1);
  CHECK_FALSE(up.report(refused, t0));
  CHECK_FALSE(up.report(refused, t0));
  for (int i = 0; i < 10; ++i) CHECK_FALSE(up.report(local, t0));
  CHECK(up.streak() == 2);  // neither reset nor grown
  CHECK(up.state() == health::healthy);
  CHECK(up.next_probe() == t0 + no_jitter().fast_interval);
  CHECK(up.report(refused, t0));  // the third real failure takes it down

  health_tracker down(no_jitter(), health::unhealthy, t0, 2);
  CHECK_FALSE(down.report(ok, t0));
  CHECK_FALSE(down.report(local, t0));
  CHECK(down.report(ok, t0));  // two good answers in a row, the local error between them
}
