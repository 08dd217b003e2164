// SPDX-License-Identifier: MIT
// The L4 proxy's --backend parser (examples/l4_proxy/config.hpp): ADDR:PORT, then weight=N and
// id=NAME options, and no spec the registry would refuse later, after the proxy had opened
// its listeners (tests/fuzz/l4_flags.fuzz.cpp checks the same against a reference).
#include <string>

#include <doctest/doctest.h>

#include "../../examples/l4_proxy/config.hpp"

using l4::parse_backend;

TEST_CASE("parse_backend: address, weight and id") {
  const auto a = parse_backend("10.0.0.1:80");
  REQUIRE(a);
  CHECK(a->address.to_string() == "10.0.0.1:80");
  CHECK(a->weight == 1);
  CHECK(a->id == "10.0.0.1:80");
  const auto b = parse_backend("[::1]:8080,weight=3,id=web-2");
  REQUIRE(b);
  CHECK(b->weight == 3);
  CHECK(b->id == "web-2");
  CHECK(parse_backend("10.0.0.1:80,weight=0")->weight == 0);  // configured off
  CHECK(parse_backend("10.0.0.1:80,weight=1000000"));
  CHECK_FALSE(parse_backend("10.0.0.1:80,weight=1000001"));
  CHECK_FALSE(parse_backend("10.0.0.1:80,color=red"));
  CHECK_FALSE(parse_backend("10.0.0.1"));
}

TEST_CASE("parse_backend refuses what the registry would refuse") {
  // Each was accepted, and the proxy died at startup with the registry's message, which does
  // not name --backend, after it had bound its listeners.
  const std::string bad_specs[] = {"10.0.0.1:80,id=",
                                   "10.0.0.1:80,id=web 1",
                                   "10.0.0.1:80,id=w\x01",
                                   "0.0.0.0:80",
                                   "[::]:443",
                                   "10.0.0.1:80,id=" + std::string(256, 'x')};
  for (const std::string& bad : bad_specs) {
    CAPTURE(bad);
    const auto r = parse_backend(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.rfind("backend ", 0) == 0);
  }
  CHECK(parse_backend("10.0.0.1:80,id=" + std::string(255, 'x')));
}
