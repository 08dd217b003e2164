// SPDX-License-Identifier: MIT
// The L7 router's response cache (examples/l7_router/cache.hpp): which responses a shared
// cache may keep (RFC 9111), for how long, and the byte bound with LRU eviction. Built only
// with the router (it needs Boost.Beast); without it this file is empty.
#include <doctest/doctest.h>

#if defined(LBKIT_L7_EXAMPLE)

#include "../../examples/l7_router/cache.hpp"

namespace {

using l7::response;
using namespace std::chrono_literals;
using clock_type = l7::response_cache::clock;

response ok(std::string_view cache_control, std::string body = "body") {
  response r{l7::http::status::ok, 11};
  if (!cache_control.empty()) r.set(l7::http::field::cache_control, cache_control);
  r.body().assign(body);
  r.prepare_payload();
  return r;
}

l7::http::request<l7::http::string_body> get(l7::http::verb v = l7::http::verb::get) {
  return {v, "/x", 11};
}

}  // namespace

TEST_CASE("cache_lifetime: what a shared cache may keep, and for how long") {
  CHECK(l7::cache_lifetime(ok("max-age=60")) == 60s);
  CHECK(l7::cache_lifetime(ok("public, max-age=5")) == 5s);
  CHECK(l7::cache_lifetime(ok("MAX-AGE=7")) == 7s);
  CHECK(l7::cache_lifetime(ok("max-age=\"9\"")) == 9s);
  // s-maxage is for shared caches and wins over max-age, in either order (§5.2.2.10).
  CHECK(l7::cache_lifetime(ok("max-age=60, s-maxage=10")) == 10s);
  CHECK(l7::cache_lifetime(ok("s-maxage=10,max-age=60")) == 10s);
  // Not storable.
  CHECK_FALSE(l7::cache_lifetime(ok("")));
  CHECK_FALSE(l7::cache_lifetime(ok("max-age=0")));
  CHECK_FALSE(l7::cache_lifetime(ok("max-age=60, no-store")));
  CHECK_FALSE(l7::cache_lifetime(ok("private, max-age=60")));
  CHECK_FALSE(l7::cache_lifetime(ok("no-cache, max-age=60")));
  CHECK_FALSE(l7::cache_lifetime(ok("max-age=soon")));  // malformed: stale (§4.2.1)
  CHECK_FALSE(l7::cache_lifetime(ok("max-age=-1")));
  CHECK_FALSE(l7::cache_lifetime(ok("max-age=")));
  {
    auto r = ok("max-age=60");
    r.set(l7::http::field::vary, "Accept-Encoding");
    CHECK_FALSE(l7::cache_lifetime(r));
  }
  {
    auto r = ok("max-age=60");
    r.set(l7::http::field::set_cookie, "a=b");
    CHECK_FALSE(l7::cache_lifetime(r));
  }
  {
    auto r = ok("max-age=60");
    r.result(l7::http::status::not_found);
    CHECK_FALSE(l7::cache_lifetime(r));
  }
  // A huge lifetime saturates instead of overflowing.
  CHECK(l7::cache_lifetime(ok("max-age=99999999999999999999")) == std::chrono::seconds(1ll << 31));
}

TEST_CASE("cache_may_serve: requests that neither read nor fill the cache") {
  CHECK(l7::cache_may_serve(get()));
  CHECK_FALSE(l7::cache_may_serve(get(l7::http::verb::post)));
  CHECK_FALSE(l7::cache_may_serve(get(l7::http::verb::head)));
  auto a = get();
  a.set(l7::http::field::authorization, "Bearer t");
  CHECK_FALSE(l7::cache_may_serve(a));
  auto b = get();
  b.set(l7::http::field::cache_control, "max-age=0, no-cache");
  CHECK_FALSE(l7::cache_may_serve(b));
  auto c = get();
  c.set(l7::http::field::cache_control, "no-store");
  CHECK_FALSE(l7::cache_may_serve(c));
  auto d = get();
  d.set(l7::http::field::pragma, "no-cache");
  CHECK_FALSE(l7::cache_may_serve(d));
}

TEST_CASE("response_cache: fresh until the lifetime, then a miss") {
  l7::response_cache cache(1 << 20);
  const auto t0 = clock_type::time_point() + 1h;
  REQUIRE(cache.store("h /a", ok("max-age=2", "A"), 2s, t0));
  auto e = cache.find("h /a", t0 + 1999ms);
  REQUIRE(e);
  CHECK(e->res.body().view() == "A");
  CHECK(e->stored == t0);
  CHECK_FALSE(cache.find("h /b", t0));
  CHECK_FALSE(cache.find("h /a", t0 + 2s));  // expired at exactly its lifetime, and dropped
  CHECK(cache.size() == 0);
  CHECK(cache.bytes() == 0);
  // A hit's copy outlives the entry.
  CHECK(e->res.body().view() == "A");
}

TEST_CASE("response_cache: bounded by bytes, least recently used first") {
  // Each entry: key ("h /0": 4) + body (1000) + 256 + its header fields.
  const response r = ok("max-age=60", std::string(1000, 'x'));
  std::size_t entry = 4 + 1000 + 256;
  for (const auto& f : r) entry += f.name_string().size() + f.value().size() + 4;
  l7::response_cache cache(8 * entry + 7);  // room for 8; one entry is exactly the 1/8 cap
  const auto t0 = clock_type::time_point() + 1h;
  for (int i = 0; i < 8; ++i) REQUIRE(cache.store("h /" + std::to_string(i), r, 60s, t0));
  CHECK(cache.size() == 8);
  CHECK(cache.bytes() == 8 * entry);
  REQUIRE(cache.find("h /0", t0));  // /0 becomes the most recently used; /1 the least
  REQUIRE(cache.store("h /8", r, 60s, t0));
  CHECK(cache.size() == 8);
  CHECK(cache.bytes() == 8 * entry);
  CHECK(cache.find("h /0", t0));
  CHECK_FALSE(cache.find("h /1", t0));
  CHECK(cache.find("h /2", t0));
  // Storing a key again replaces its entry; the bytes are counted once.
  REQUIRE(cache.store("h /2", r, 60s, t0));
  CHECK(cache.size() == 8);
  CHECK(cache.bytes() == 8 * entry);
}

TEST_CASE("response_cache: one response may not take more than 1/8 of the bound") {
  l7::response_cache cache(8 * 1024);
  const auto t0 = clock_type::time_point() + 1h;
  CHECK_FALSE(cache.store("h /big", ok("max-age=60", std::string(1024, 'x')), 60s, t0));
  CHECK(cache.size() == 0);
  CHECK(cache.store("h /small", ok("max-age=60", std::string(100, 'x')), 60s, t0));
  l7::response_cache none(0);
  CHECK_FALSE(none.store("h /a", ok("max-age=60", "a"), 60s, t0));
}

#endif  // LBKIT_L7_EXAMPLE
