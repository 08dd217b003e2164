// SPDX-License-Identifier: MIT
// The L7 router's configuration loader (examples/l7_router/config.cpp): an accepted file is
// one the router runs as written, since runtime.hpp builds pools and probes from it without
// checking again (tests/fuzz/l7_config.fuzz.cpp checks the same on fuzzed files). Built only
// with the router (it needs toml++); without it this file is empty.
#include <doctest/doctest.h>

#if defined(LBKIT_L7_EXAMPLE)

#include <string>

#include "../../examples/l7_router/config.hpp"

namespace {

// A configuration with one pool, "p", whose lines are `pool`, and one route to it.
std::string with_pool(const std::string& pool) {
  return "listen = \"127.0.0.1:8080\"\n[pools.p]\n" + pool + "\n[[routes]]\npool = \"p\"\n";
}

std::string error_of(const std::string& text) {
  const auto c = l7::parse_config(text, "router.toml");
  if (c) return "";
  return c.error().message;
}

}  // namespace

TEST_CASE("parse_config accepts a pool the router can run") {
  const auto c = l7::parse_config(
      with_pool("backends = [\"10.0.0.1:80\", { address = \"10.0.0.2:80\", id = \"b-2\" }]\n"
                "health = \"http:/healthz?full=1\""),
      "router.toml");
  REQUIRE(c);
  const auto& p = c->pools.at("p");
  REQUIRE(p.backends.size() == 2);
  CHECK(p.backends[0].id == "10.0.0.1:80");
  CHECK(p.backends[1].id == "b-2");
  CHECK(p.health.kind == l7::health_kind::http);
  CHECK(p.health.http_path == "/healthz?full=1");
}

TEST_CASE("parse_config refuses backends the registry would refuse") {
  // Each was accepted; runtime.hpp then ignored the registry's refusal, so the pool served
  // with no backend at all (every request a 503) and nothing said why.
  for (const char* backend :
       {"{ address = \"10.0.0.1:80\", id = \"\" }", "{ address = \"10.0.0.1:80\", id = \"web 1\" }",
        "\"0.0.0.0:80\"", "\"[::]:443\""}) {
    CAPTURE(std::string(backend));
    const std::string e = error_of(with_pool(std::string("backends = [") + backend + "]"));
    REQUIRE_FALSE(e.empty());
    CHECK(e.rfind("router.toml:3: pools.p.backends[0]: ", 0) == 0);
  }
}

TEST_CASE("parse_config refuses an HTTP health path the probe would refuse") {
  // Accepted, the probe was built inert (every check an error), so the pool's backends, which
  // start down under active checks, never came up.
  for (const char* path : {"http:/a b", "http:healthz", "http:/x#frag", "http:/\\u0001"}) {
    CAPTURE(std::string(path));
    const std::string e =
        error_of(with_pool("backends = [\"10.0.0.1:80\"]\nhealth = \"" + std::string(path) + "\""));
    REQUIRE_FALSE(e.empty());
    CHECK(e.rfind("router.toml:4: pools.p.health: ", 0) == 0);
  }
}

#endif  // LBKIT_L7_EXAMPLE
