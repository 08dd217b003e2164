// SPDX-License-Identifier: MIT
// The pieces both examples share (examples/common/): the health check by name and the
// checker's options, the type-erased balancer by policy name, and the tried-backends list
// that a retry's pick_other avoids.
#include <array>
#include <chrono>
#include <string>

#include <doctest/doctest.h>

#include <lbkit/lbkit.hpp>

#include "../../examples/common/health.hpp"
#include "../../examples/common/policies.hpp"

using examples::health_kind;
using examples::health_settings;
using namespace std::chrono_literals;

TEST_CASE("parse_health_kind: none, tcp, icmp, http:PATH; a path the probe refuses is refused") {
  health_settings s;
  CHECK(examples::parse_health_kind("tcp", s));
  CHECK(s.kind == health_kind::tcp);
  CHECK(examples::parse_health_kind("icmp", s));
  CHECK(s.kind == health_kind::icmp);
  CHECK(examples::parse_health_kind("http:/healthz?full=1", s));
  CHECK(s.kind == health_kind::http);
  CHECK(s.http_path == "/healthz?full=1");
  CHECK(examples::parse_health_kind("none", s));
  CHECK(s.kind == health_kind::none);
  for (const char* bad : {"", "http:", "HTTP:/x", "udp", "tcp ", "http:no-slash"}) {
    CAPTURE(bad);
    health_settings t;
    const auto r = examples::parse_health_kind(bad, t);
    REQUIRE_FALSE(r);
    CHECK_FALSE(r.error().message.empty());
    CHECK(t.kind == health_kind::none);  // unchanged
  }
  const auto e = examples::parse_health_kind("udp", s);
  CHECK(e.error().message.find("'udp'") != std::string::npos);
}

TEST_CASE("health settings: backends start down under active checks; the checker's options") {
  health_settings s;
  CHECK(examples::initial_health(s) == lbkit::health::healthy);
  s.kind = health_kind::tcp;
  CHECK(examples::initial_health(s) == lbkit::health::unhealthy);
  s.interval = 3s;
  s.timeout = 700ms;
  s.rise = 4;
  s.fall = 5;
  const auto o = examples::checker_options(s).check;
  CHECK(o.interval == 3s);
  CHECK(o.fast_interval == 1500ms);
  CHECK(o.down_interval == 6s);
  CHECK(o.timeout == 700ms);
  CHECK(o.rise == 4);
  CHECK(o.fall == 5);
  CHECK(lbkit::validate(o));
  s.interval = 1ms;  // the fast interval never reaches 0
  CHECK(examples::checker_options(s).check.fast_interval == 1ms);
}

TEST_CASE("make_balancer: every policy by name picks; an unknown name is an error naming it") {
  lbkit::backend_registry r;
  REQUIRE(r.add(lbkit::backend("a", *lbkit::endpoint::parse("10.0.0.1:80"), 1)));
  REQUIRE(r.add(lbkit::backend("b", *lbkit::endpoint::parse("10.0.0.2:80"), 1)));
  const std::string names = examples::policy_names;
  std::size_t from = 0;
  int count = 0;
  while (from < names.size()) {
    const auto comma = names.find(", ", from);
    const std::string name = names.substr(from, comma - from);
    from = comma == std::string::npos ? names.size() : comma + 2;
    CAPTURE(name);
    auto b = examples::make_balancer(name, r);
    REQUIRE(b);
    auto p = (*b)->make_picker();
    const auto l = p->pick(lbkit::pick_context::for_key(7));
    REQUIRE(l);
    const lbkit::backend_state* first = &l.backend();
    CHECK(&p->pick_other({}, std::span(&first, 1)).backend() != first);
    CHECK(p->pick_member("b").id() == "b");
    ++count;
  }
  CHECK(count == 14);
  const auto unknown = examples::make_balancer("fastest", r);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message.find("'fastest'") != std::string::npos);
}

TEST_CASE("tried_backends: oldest first, a repeat moves to the back, the latest four kept") {
  lbkit::backend_registry r;
  std::array<const lbkit::backend_state*, 6> s{};
  for (std::size_t i = 0; i < s.size(); ++i) {
    const std::string id = "b" + std::to_string(i);
    REQUIRE(r.add(
        lbkit::backend(id, *lbkit::endpoint::parse("10.0.0." + std::to_string(i + 1) + ":80"), 1)));
    s[i] = &r.current()->find(id)->state();
  }
  examples::tried_backends t;
  CHECK(t.empty());
  CHECK(t.span().empty());
  t.add(s[0]);
  t.add(s[1]);
  t.add(s[0]);  // failed again: now the latest
  REQUIRE(t.span().size() == 2);
  CHECK(t.span()[0] == s[1]);
  CHECK(t.span()[1] == s[0]);
  for (int i = 2; i < 6; ++i) t.add(s[static_cast<std::size_t>(i)]);
  REQUIRE(t.span().size() == 4);  // s[1] and s[0] were the oldest
  for (std::size_t i = 0; i < 4; ++i) CHECK(t.span()[i] == s[i + 2]);
}
