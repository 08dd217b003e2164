// SPDX-License-Identifier: MIT
// route_table: host patterns (exact, wildcard, any; port, case, trailing dot, IPv6 literals),
// paths (exact, prefix, query), methods, header conditions, the documented specificity order
// (independent of insertion order, and against a brute-force reference on random tables),
// duplicates, every validation error, is_normalized_path, and no allocation in match().
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/net/route_table.hpp>

#include "../support/allocation_counter.hpp"

using lbkit::errc;
using lbkit::header_match;
using lbkit::request_header;
using lbkit::request_view;
using lbkit::route_match;
using table = lbkit::route_table<std::string>;

namespace {

void add(table& t, route_match m, std::string target) {
  const std::string shown = lbkit::to_string(m);
  auto r = t.add(std::move(m), std::move(target));
  if (!r) FAIL("add(" << shown << ") failed: " << r.error().message);
}

// The target that `t` routes the request to, or "404".
std::string route(const table& t, std::string_view method, std::string_view host,
                  std::string_view path, std::vector<request_header> headers = {}) {
  const std::string* x =
      t.match({.method = method, .host = host, .path = path, .headers = headers});
  return x != nullptr ? *x : "404";
}

route_match host_path(std::string host, std::string path, bool prefix = true) {
  return {.host = std::move(host), .path = std::move(path), .path_is_prefix = prefix};
}

}  // namespace

TEST_CASE("an exact host beats wildcards, a longer wildcard a shorter one, and any host last") {
  table t;
  add(t, host_path("", "/"), "any");
  add(t, host_path("*.example.com", "/"), "wild");
  add(t, host_path("*.eu.example.com", "/"), "wild-eu");
  add(t, host_path("api.eu.example.com", "/"), "api-eu");
  CHECK(route(t, "GET", "api.eu.example.com", "/x") == "api-eu");
  CHECK(route(t, "GET", "web.eu.example.com", "/x") == "wild-eu");
  CHECK(route(t, "GET", "a.b.eu.example.com", "/x") == "wild-eu");  // any depth
  CHECK(route(t, "GET", "eu.example.com", "/x") == "wild");
  CHECK(route(t, "GET", "www.example.com", "/x") == "wild");
  CHECK(route(t, "GET", "example.com", "/x") == "any");  // a wildcard is not the bare domain
  CHECK(route(t, "GET", "notexample.com", "/x") == "any");
  CHECK(route(t, "GET", "example.org", "/x") == "any");
  CHECK(route(t, "GET", "", "/x") == "any");
}

TEST_CASE("the Host's port, case and trailing dot are ignored") {
  table t;
  add(t, host_path("API.Example.com", "/"), "api");
  add(t, host_path("*.Example.COM.", "/"), "wild");
  CHECK(route(t, "GET", "api.example.com", "/") == "api");
  CHECK(route(t, "GET", "API.EXAMPLE.COM:8443", "/") == "api");
  CHECK(route(t, "GET", "api.example.com.", "/") == "api");
  CHECK(route(t, "GET", "api.example.com.:80", "/") == "api");
  CHECK(route(t, "GET", "Www.Example.Com:80", "/") == "wild");
  CHECK(route(t, "GET", "api.example.co", "/") == "404");
  CHECK(route(t, "GET", "api.example.comx", "/") == "404");
  CHECK(route(t, "GET", "xapi.example.com", "/") == "wild");
  CHECK(t.routes()[0].match.host == "api.example.com");  // stored normalized
  CHECK(t.routes()[1].match.host == "*.example.com");
}

TEST_CASE("IPv6 literal hosts, with and without a port") {
  table t;
  add(t, host_path("[::1]", "/"), "loopback");
  add(t, host_path("[2001:DB8:0:0::1]", "/"), "doc");  // stored in RFC 5952 form
  add(t, host_path("192.0.2.1", "/"), "v4");
  add(t, host_path("", "/"), "any");
  CHECK(t.routes()[1].match.host == "[2001:db8::1]");
  CHECK(route(t, "GET", "[::1]", "/") == "loopback");
  CHECK(route(t, "GET", "[::1]:8080", "/") == "loopback");
  CHECK(route(t, "GET", "[2001:db8::1]:443", "/") == "doc");
  CHECK(route(t, "GET", "[2001:DB8::1]", "/") == "doc");
  CHECK(route(t, "GET", "192.0.2.1:80", "/") == "v4");
  CHECK(route(t, "GET", "[::2]:8080", "/") == "any");
  CHECK(route(t, "GET", "[::1", "/") == "any");  // malformed: any-host routes only
  CHECK(route(t, "GET", "::1", "/") == "any");
}

TEST_CASE("exact paths, prefixes, and the query") {
  table t;
  add(t, host_path("", "/api"), "api-prefix");
  add(t, host_path("", "/api/"), "api-dir");
  add(t, host_path("", "/api", false), "api-exact");
  add(t, host_path("", "/api/v1/users", false), "users-exact");
  add(t, host_path("", "/static/"), "static");
  CHECK(route(t, "GET", "h", "/api") == "api-exact");  // exact beats the same text as prefix
  CHECK(route(t, "GET", "h", "/api?x=1") == "api-exact");
  CHECK(route(t, "GET", "h", "/apix") == "api-prefix");  // a raw byte prefix
  CHECK(route(t, "GET", "h", "/api.json") == "api-prefix");
  CHECK(route(t, "GET", "h", "/api/") == "api-dir");
  CHECK(route(t, "GET", "h", "/api/v1/users") == "users-exact");
  CHECK(route(t, "GET", "h", "/api/v1/users?page=2&q=/x") == "users-exact");
  CHECK(route(t, "GET", "h", "/api/v1/users/7") == "api-dir");
  CHECK(route(t, "GET", "h", "/API/") == "404");    // paths are case-sensitive
  CHECK(route(t, "GET", "h", "/static") == "404");  // "/static/" needs the slash
  CHECK(route(t, "GET", "h", "/static/app.js?v=3") == "static");
  CHECK(route(t, "GET", "h", "/ap") == "404");
  CHECK(route(t, "GET", "h", "") == "404");
  CHECK(route(t, "OPTIONS", "h", "*") == "404");
  CHECK(route(t, "GET", "h", "?/api") == "404");
}

TEST_CASE("the longest prefix wins whatever the insertion order") {
  const std::vector<std::pair<route_match, std::string>> routes = {
      {host_path("", "/"), "root"},
      {host_path("", "/a"), "a"},
      {host_path("", "/a/"), "a/"},
      {host_path("", "/a/b"), "a/b"},
      {host_path("", "/a/b/c/"), "a/b/c/"},
      {host_path("", "/a/bc"), "a/bc"},
      {host_path("", "/a/b", false), "=a/b"},
      {host_path("", "/b/"), "b/"},
      {host_path("", "/ab"), "ab"},
      {host_path("api.example.com", "/a/"), "api a/"},
      {host_path("api.example.com", "/"), "api root"},
      {host_path("*.example.com", "/a/b/"), "wild a/b/"},
      {host_path("*.example.com", "/", false), "wild =/"},
  };
  const std::vector<std::pair<std::string, std::string>> requests = {
      {"h", "/"},
      {"h", "/x"},
      {"h", "/a"},
      {"h", "/a/"},
      {"h", "/a/b"},
      {"h", "/a/b/"},
      {"h", "/a/b/c"},
      {"h", "/a/b/c/d"},
      {"h", "/a/bc/d"},
      {"h", "/a/bd"},
      {"h", "/ab"},
      {"h", "/abc"},
      {"h", "/b"},
      {"h", "/b/c"},
      {"h", "/aa"},
      {"api.example.com", "/a/b"},
      {"api.example.com", "/b"},
      {"www.example.com", "/a/b/x"},
      {"www.example.com", "/"},
      {"www.example.com", "/a/bc"},
  };
  std::vector<std::string> expected;
  {
    table t;
    for (const auto& [m, target] : routes) add(t, m, target);
    for (const auto& [h, p] : requests) expected.push_back(route(t, "GET", h, p));
  }
  CHECK(expected[0] == "root");
  CHECK(expected[4] == "=a/b");
  CHECK(expected[5] == "a/b");
  CHECK(expected[7] == "a/b/c/");
  CHECK(expected[8] == "a/bc");
  CHECK(expected[9] == "a/b");
  CHECK(expected[11] == "ab");
  CHECK(expected[15] == "api a/");
  CHECK(expected[16] == "api root");
  CHECK(expected[17] == "wild a/b/");
  CHECK(expected[18] == "wild =/");
  CHECK(expected[19] == "a/bc");  // the host matched a wildcard, whose routes do not match

  std::mt19937_64 rng(20240601);
  for (int round = 0; round < 50; ++round) {
    auto shuffled = routes;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    table t;
    for (const auto& [m, target] : shuffled) add(t, m, target);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      CAPTURE(round);
      CAPTURE(requests[i].second);
      CHECK(route(t, "GET", requests[i].first, requests[i].second) == expected[i]);
    }
  }
}

TEST_CASE("methods: any when none are listed, case-sensitive, GET does not imply HEAD") {
  table t;
  add(t, {.path = "/items", .methods = {"GET", "HEAD"}}, "read");
  add(t, {.path = "/items", .methods = {"POST", "PUT", "PURGE"}}, "write");
  add(t, {.path = "/items"}, "other");
  add(t, {.path = "/ro", .methods = {"GET"}}, "ro");
  CHECK(route(t, "GET", "h", "/items") == "read");
  CHECK(route(t, "HEAD", "h", "/items") == "read");
  CHECK(route(t, "POST", "h", "/items/1") == "write");
  CHECK(route(t, "PURGE", "h", "/items") == "write");
  CHECK(route(t, "DELETE", "h", "/items") == "other");
  CHECK(route(t, "get", "h", "/items") == "other");
  CHECK(route(t, "GET", "h", "/ro") == "ro");
  CHECK(route(t, "HEAD", "h", "/ro") == "404");
  CHECK(route(t, "get", "h", "/ro") == "404");
}

TEST_CASE("headers: present or equal, names case-insensitive, values exact") {
  table t;
  add(t, {.path = "/", .headers = {{"X-Canary", "1"}}}, "canary");
  add(t, {.path = "/", .headers = {{"x-debug", std::nullopt}}}, "debug");
  add(t, {.path = "/"}, "stable");
  CHECK(route(t, "GET", "h", "/") == "stable");
  CHECK(route(t, "GET", "h", "/", {{"x-canary", "1"}}) == "canary");
  CHECK(route(t, "GET", "h", "/", {{"X-CANARY", "1"}}) == "canary");
  CHECK(route(t, "GET", "h", "/", {{"x-canary", "0"}}) == "stable");
  CHECK(route(t, "GET", "h", "/", {{"x-canary", "1 "}}) == "stable");
  CHECK(route(t, "GET", "h", "/", {{"x-canary", ""}}) == "stable");
  CHECK(route(t, "GET", "h", "/", {{"x-canary", "0"}, {"X-Canary", "1"}}) == "canary");  // any line
  CHECK(route(t, "GET", "h", "/", {{"x-canary", "0, 1"}}) == "stable");  // compared whole
  CHECK(route(t, "GET", "h", "/", {{"X-Debug", ""}}) == "debug");
  CHECK(route(t, "GET", "h", "/", {{"x-debug-not", "1"}}) == "stable");
  // Both conditions count one: the route added first wins the tie.
  CHECK(route(t, "GET", "h", "/", {{"x-debug", "yes"}, {"x-canary", "1"}}) == "canary");

  table v;
  add(v, {.path = "/", .headers = {{"x-env", "EU"}}}, "eu");
  add(v, {.path = "/", .headers = {{"x-env", "eu"}}}, "lower eu");
  CHECK(route(v, "GET", "h", "/", {{"x-env", "EU"}}) == "eu");
  CHECK(route(v, "GET", "h", "/", {{"x-env", "eu"}}) == "lower eu");
  CHECK(route(v, "GET", "h", "/", {{"x-env", "Eu"}}) == "404");
}

TEST_CASE("more conditions win, then the route added first") {
  table t;
  add(t, {.path = "/", .methods = {"GET"}}, "get");
  add(t, {.path = "/", .headers = {{"x-a", std::nullopt}}}, "a");
  add(t, {.path = "/", .methods = {"GET"}, .headers = {{"x-a", std::nullopt}}}, "get+a");
  add(t, {.path = "/", .headers = {{"x-a", std::nullopt}, {"x-b", "1"}}}, "a+b");
  CHECK(route(t, "GET", "h", "/") == "get");
  CHECK(route(t, "POST", "h", "/", {{"x-a", ""}}) == "a");
  CHECK(route(t, "GET", "h", "/", {{"x-a", ""}}) == "get+a");
  CHECK(route(t, "GET", "h", "/", {{"x-a", ""}, {"x-b", "1"}}) == "get+a");  // 2 vs 2: first
  CHECK(route(t, "POST", "h", "/", {{"x-a", ""}, {"x-b", "1"}}) == "a+b");
  CHECK(route(t, "POST", "h", "/") == "404");

  // Conditions never outrank the path, nor the path the host.
  table u;
  add(u, {.path = "/", .methods = {"GET"}, .headers = {{"x-a", std::nullopt}}}, "root+2");
  add(u, {.path = "/a"}, "a");
  add(u, {.host = "h", .path = "/"}, "host h");
  CHECK(route(u, "GET", "h", "/a", {{"x-a", ""}}) == "host h");
  CHECK(route(u, "GET", "g", "/a", {{"x-a", ""}}) == "a");
  CHECK(route(u, "GET", "g", "/b", {{"x-a", ""}}) == "root+2");
}

TEST_CASE("no match is nullptr; an empty table matches nothing") {
  table empty;
  CHECK(empty.empty());
  CHECK(empty.match({.method = "GET", .host = "h", .path = "/"}) == nullptr);
  CHECK(empty.find({}) == nullptr);

  table t;
  add(t, {.host = "api.example.com", .path = "/v1/", .methods = {"GET"}}, "v1");
  CHECK(t.match({.method = "GET", .host = "web.example.com", .path = "/v1/"}) == nullptr);
  CHECK(t.match({.method = "GET", .host = "api.example.com", .path = "/v2/"}) == nullptr);
  CHECK(t.match({.method = "PUT", .host = "api.example.com", .path = "/v1/"}) == nullptr);
  const auto* r = t.find({.method = "GET", .host = "api.example.com", .path = "/v1/x"});
  REQUIRE(r != nullptr);
  CHECK(r->target == "v1");
  CHECK(r == &t.routes()[0]);
  CHECK(t.size() == 1);
}

TEST_CASE("a second route with the same match is refused, naming it") {
  table t;
  add(t,
      {.host = "API.example.com",
       .path = "/v1/",
       .methods = {"POST", "GET"},
       .headers = {{"X-Env", "eu"}, {"x-a", std::nullopt}}},
      "first");
  add(t, host_path("api.example.com", "/v1/", false), "exact is different");
  add(t, {.host = "api.example.com", .path = "/v1/", .methods = {"GET"}}, "fewer methods");
  add(t,
      {.host = "api.example.com",
       .path = "/v1/",
       .methods = {"POST", "GET"},
       .headers = {{"X-Env", "us"}, {"x-a", std::nullopt}}},
      "other header value");

  // The same after normalization: host case and trailing dot, method and header order, name
  // case.
  auto r = t.add({.host = "api.example.com.",
                  .path = "/v1/",
                  .methods = {"GET", "POST"},
                  .headers = {{"x-a", std::nullopt}, {"x-env", "eu"}}},
                 "second");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::already_exists);
  const std::string& msg = r.error().message;
  CHECK(msg.find("host 'api.example.com'") != std::string::npos);
  CHECK(msg.find("path prefix '/v1/'") != std::string::npos);
  CHECK(msg.find("methods GET POST") != std::string::npos);
  CHECK(msg.find("header x-env = 'eu'") != std::string::npos);
  CHECK(msg.find("route #1") != std::string::npos);
  CHECK(t.size() == 4);

  auto any = t.add({.host = "*"}, "star");
  REQUIRE(any);
  auto again = t.add({}, "default");  // "*" and "" are both any host
  REQUIRE_FALSE(again);
  CHECK(again.error().code == errc::already_exists);
  CHECK(again.error().message.find("any host, path prefix '/'") != std::string::npos);
  CHECK(again.error().message.find("route #5") != std::string::npos);
  CHECK(t.size() == 5);
}

TEST_CASE("validate names what is wrong") {
  struct bad_case {
    route_match m;
    std::string_view reason;
  };
  const std::vector<bad_case> cases = {
      {{.host = "*."}, "no domain after '*.'"},
      {{.host = "*.."}, "no domain after '*.'"},
      {{.host = "a.*.b"}, "not a whole first label"},
      {{.host = "*example.com"}, "not a whole first label"},
      {{.host = "www.*"}, "not a whole first label"},
      {{.host = "**.example.com"}, "not a whole first label"},
      {{.host = "api example.com"}, "contains a space"},
      {{.host = "api.example.com\r\n"}, "control character"},
      {{.host = "bücher.example"}, "xn--"},
      {{.host = "api.example.com:8080"}, "has a port"},
      {{.host = "[::1]:8080"}, "has a port"},
      {{.host = "[::1"}, "without closing it"},
      {{.host = "[not-v6]"}, "not an IPv6 address in brackets"},
      {{.host = "[192.0.2.1]"}, "IPv4 address in brackets"},
      {{.host = "2001:db8::1"}, "write it in brackets, '[2001:db8::1]'"},
      {{.host = "a..b"}, "empty label"},
      {{.host = ".example.com"}, "empty label"},
      {{.host = "example.com.."}, "empty label"},
      {{.host = "."}, "has no name"},
      {{.host = "api/v1.example.com"}, "has the character '/'"},
      {{.host = std::string(64, 'a') + ".com"}, "label longer than 63"},
      {{.host = std::string(60, 'a') + '.' + std::string(60, 'b') + '.' + std::string(60, 'c') +
                '.' + std::string(60, 'd') + '.' + std::string(60, 'e')},
       "longer than 253"},
      {{.path = ""}, "path is empty"},
      {{.path = "api/"}, "does not start with '/'"},
      {{.path = "/a b"}, "contains a space"},
      {{.path = "/a\tb"}, "control character"},
      {{.path = "/caf\xc3\xa9"}, "non-ASCII"},
      {{.path = "/search?q=1"}, "contains '?'"},
      {{.path = "/page#top"}, "contains '#'"},
      {{.methods = {""}}, "method is empty"},
      {{.methods = {"GE T"}}, "'GE T' is not a token"},
      {{.methods = {"GET", "POST", "GET"}}, "'GET' is listed twice"},
      {{.methods = {"get"}}, "would not match GET requests"},
      {{.methods = {"Post"}}, "would not match POST requests"},
      {{.headers = {{"x y", std::nullopt}}}, "header name 'x y' is not a token"},
      {{.headers = {{"", std::nullopt}}}, "header name '' is not a token"},
      {{.headers = {{"x-a:", "1"}}}, "is not a token"},
      {{.headers = {{"Host", "a"}}}, "match it with route_match::host"},
      {{.headers = {{"x-a", "1"}, {"X-A", "2"}}}, "'X-A' has two conditions"},
      {{.headers = {{"x-a", "1\r\nx-b: 2"}}}, "control character"},
      {{.headers = {{"x-a", " 1"}}}, "leading or trailing whitespace"},
      {{.headers = {{"x-a", "1\t"}}}, "leading or trailing whitespace"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.reason);
    const auto r = lbkit::validate(c.m);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid_argument);
    CAPTURE(r.error().message);
    CHECK(r.error().message.find(c.reason) != std::string::npos);
    // add() refuses it with the same message and adds nothing.
    table t;
    const auto a = t.add(c.m, "x");
    REQUIRE_FALSE(a);
    CHECK(a.error() == r.error());
    CHECK(t.empty());
  }

  // Accepted: what the cases above are near to.
  for (const route_match& m : std::vector<route_match>{
           {},
           {.host = "*"},
           {.host = "*.example.com."},
           {.host = "API.Example.COM"},
           {.host = "xn--bcher-kva.example"},
           {.host = "_srv.example.com"},
           {.host = "localhost"},
           {.host = "192.0.2.1"},
           {.host = "[::ffff:192.0.2.1]"},
           {.host = std::string(63, 'a') + ".com"},
           {.path = "/a%20b/%2e"},
           {.path = "/a;b=c/~x@y:z!$&'()*+,="},
           {.path = "/api", .path_is_prefix = false},
           {.methods = {"PURGE", "M-SEARCH", "get-ish"}},
           {.headers = {{"X-A", ""}, {"x-b", "a b\tc"}, {"x-c", "\xc3\xa9"}}},
       }) {
    CAPTURE(lbkit::to_string(m));
    const auto r = lbkit::validate(m);
    CHECK_MESSAGE(r.has_value(), (r ? std::string() : r.error().message));
  }
}

TEST_CASE("to_string describes a route on one line") {
  CHECK(lbkit::to_string(route_match{}) == "any host, path prefix '/'");
  CHECK(lbkit::to_string({.host = "*.example.com",
                          .path = "/api/",
                          .methods = {"GET", "POST"},
                          .headers = {{"x-env", "canary"}, {"x-debug", std::nullopt}}}) ==
        "host '*.example.com', path prefix '/api/', methods GET POST, header x-env = 'canary', "
        "header x-debug present");
  CHECK(lbkit::to_string(
            {.host = "h", .path = "/health", .path_is_prefix = false, .methods = {"GET"}}) ==
        "host 'h', exact path '/health', method GET");
  // Unvalidated text is escaped.
  CHECK(lbkit::to_string({.path = "/\r\n", .methods = {"G T"}}) ==
        "any host, path prefix '/\\x0d\\x0a', method 'G T'");
}

TEST_CASE("routes() keeps the order added and the normalized match") {
  table t;
  add(t,
      {.host = "B.example.com.",
       .path = "/z",
       .methods = {"PUT", "GET"},
       .headers = {{"X-Z", "1"}, {"X-A", std::nullopt}}},
      "b");
  add(t, {.host = "*", .path = "/a"}, "any");
  REQUIRE(t.size() == 2);
  const auto& m = t.routes()[0].match;
  CHECK(m.host == "b.example.com");
  CHECK(m.methods == std::vector<std::string>{"GET", "PUT"});
  REQUIRE(m.headers.size() == 2);
  CHECK(m.headers[0] == header_match{"x-a", std::nullopt});
  CHECK(m.headers[1] == header_match{"x-z", "1"});
  CHECK(t.routes()[0].target == "b");
  CHECK(t.routes()[1].match.host.empty());
}

TEST_CASE("a copied table routes on its own") {
  std::optional<table> original(std::in_place);
  add(*original, host_path("api.example.com", "/v1/"), "v1");
  add(*original, host_path("*.example.com", "/"), "wild");
  table copy = *original;
  table moved = std::move(*original);
  original.reset();
  CHECK(route(copy, "GET", "api.example.com", "/v1/x") == "v1");
  CHECK(route(copy, "GET", "w.example.com", "/v1/x") == "wild");
  CHECK(route(moved, "GET", "api.example.com", "/v1/x") == "v1");
}

TEST_CASE("match() does not allocate") {
  if (!lbkit::test::counting_allocations) return;
  table t;
  for (int i = 0; i < 50; ++i) {
    add(t, host_path("h" + std::to_string(i % 5) + ".example.com", "/p/" + std::to_string(i)),
        std::to_string(i));
  }
  add(t,
      {.host = "*.example.com",
       .path = "/",
       .methods = {"GET"},
       .headers = {{"x-a", "a-long-value-beyond-small-string-optimization"}}},
      "wild");
  add(t, {}, "any");
  const std::vector<request_header> headers = {
      {"x-a", "a-long-value-beyond-small-string-optimization"}};
  const std::vector<request_view> requests = {
      {.method = "GET", .host = "H3.EXAMPLE.COM:80", .path = "/p/13/x?y=z"},
      {.method = "GET", .host = "h3.example.com", .path = "/q", .headers = headers},
      {.method = "GET", .host = "[::1]:8080", .path = "/p/1"},
  };
  const std::size_t before = lbkit::test::allocations.load();
  std::size_t hits = 0;
  for (int round = 0; round < 100; ++round) {
    for (const auto& r : requests) hits += t.match(r) != nullptr;
  }
  CHECK(lbkit::test::allocations.load() == before);
  CHECK(hits == 300);
  CHECK(*t.match(requests[0]) == "13");
  CHECK(*t.match(requests[1]) == "wild");
  CHECK(*t.match(requests[2]) == "any");
}

TEST_CASE("is_normalized_path") {
  static_assert(lbkit::is_normalized_path("/"));
  for (std::string_view p : {"/", "/a", "/a/", "/a/b.c", "/a/.b/c", "/a/b..", "/a/...", "/%41",
                             "/a%20b", "/a?x=../..//", "/a/b?", "/~user/x;y"}) {
    CAPTURE(p);
    CHECK(lbkit::is_normalized_path(p));
  }
  for (std::string_view p :
       {"", "a", "*", "?/", "//", "/a//b", "/.", "/..", "/a/./b", "/a/../b", "/a/..", "/a/.",
        "/a\\b", "/%2e%2e/x", "/%2E/x", "/a%2fb", "/a%2Fb", "/a%5cb", "/a%5C"}) {
    CAPTURE(p);
    CHECK_FALSE(lbkit::is_normalized_path(p));
  }
  CHECK(lbkit::is_normalized_path("/a%2"));  // too short to be an escape of '.' or '/'
  CHECK(lbkit::is_normalized_path("/a%"));
}

// --- randomized comparison with a brute-force reading of the documented order ---------------

namespace {

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

// The host a request names, as the header documents it.
std::string reference_host(std::string_view h) {
  if (!h.empty() && h[0] == '[') {
    const auto close = h.find(']');
    return close == std::string_view::npos ? std::string() : lowered(h.substr(0, close + 1));
  }
  std::string s = lowered(h.substr(0, h.find(':')));
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// A pattern as the test writes it (lower case IPv6 only), in the form a request is compared.
std::string reference_pattern(std::string p) {
  if (p == "*") return "";
  p = lowered(p);
  if (!p.empty() && p.back() == '.') p.pop_back();
  return p;
}

struct reference_route {
  route_match m;  // as given
  std::string target;
};

// The key of the documented order; greater is more specific. Steps 1-3; step 4 is the index.
using key = std::tuple<int, std::size_t, int, std::size_t, std::size_t>;

std::optional<key> reference_key(const route_match& m, const request_view& r) {
  const std::string host = reference_host(r.host);
  const std::string pattern = reference_pattern(m.host);
  int host_rank = 0;
  std::size_t suffix = 0;
  if (pattern.empty()) {
    host_rank = 0;
  } else if (pattern.starts_with("*.")) {
    const std::string dotted = pattern.substr(1);
    if (host.size() <= dotted.size() || !host.ends_with(dotted)) return std::nullopt;
    host_rank = 1;
    suffix = dotted.size();
  } else {
    if (host != pattern) return std::nullopt;
    host_rank = 2;
  }
  const std::string_view path = r.path.substr(0, r.path.find('?'));
  if (m.path_is_prefix ? !path.starts_with(m.path) : path != m.path) return std::nullopt;
  if (!m.methods.empty() &&
      std::find(m.methods.begin(), m.methods.end(), r.method) == m.methods.end()) {
    return std::nullopt;
  }
  for (const auto& h : m.headers) {
    bool found = false;
    for (const auto& f : r.headers) {
      found = found || (lowered(f.name) == lowered(h.name) && (!h.value || f.value == *h.value));
    }
    if (!found) return std::nullopt;
  }
  return key{host_rank, suffix, m.path_is_prefix ? 0 : 1, m.path.size(),
             (m.methods.empty() ? 0 : 1) + m.headers.size()};
}

const reference_route* reference_find(const std::vector<reference_route>& routes,
                                      const request_view& r) {
  const reference_route* best = nullptr;
  key best_key{};
  for (const auto& x : routes) {
    const auto k = reference_key(x.m, r);
    if (k && (best == nullptr || *k > best_key)) best = &x, best_key = *k;  // ties: the first
  }
  return best;
}

// Whether a and b are the same match, as the header documents "identical".
bool reference_same(route_match a, route_match b) {
  for (route_match* m : {&a, &b}) {
    m->host = reference_pattern(m->host);
    std::sort(m->methods.begin(), m->methods.end());
    for (auto& h : m->headers) h.name = lowered(h.name);
    std::sort(m->headers.begin(), m->headers.end(),
              [](const auto& x, const auto& y) { return x.name < y.name; });
  }
  return a == b;
}

template <class T>
const T& pick(std::mt19937_64& rng, const std::vector<T>& v) {
  return v[rng() % v.size()];
}

}  // namespace

TEST_CASE("randomized: route_table agrees with a brute-force reading of the documented order") {
  const std::vector<std::string> hosts = {"",
                                          "*",
                                          "api.example.com",
                                          "API.Example.com.",
                                          "*.example.com",
                                          "*.eu.example.com",
                                          "*.b.eu.example.com",
                                          "eu.example.com",
                                          "[::1]",
                                          "other.org",
                                          "*.org"};
  const std::vector<std::string> paths = {"/",   "/a", "/a/",    "/a/b", "/a/b/",
                                          "/ab", "/b", "/a/b/c", "/b/c", "/a/bc"};
  const std::vector<std::string> methods = {"GET", "POST", "HEAD"};
  const std::vector<header_match> conditions = {
      {"x-a", std::nullopt}, {"X-A", "1"}, {"x-b", "2"}, {"X-C", std::nullopt}, {"x-c", ""}};
  const std::vector<std::string> request_hosts = {"api.example.com",
                                                  "API.EXAMPLE.COM:8443",
                                                  "x.api.example.com",
                                                  "eu.example.com.",
                                                  "a.eu.example.com",
                                                  "x.b.eu.example.com",
                                                  "example.com",
                                                  "[::1]:80",
                                                  "other.org",
                                                  "www.other.org.",
                                                  "",
                                                  "[::1",
                                                  "org"};
  const std::vector<std::string> request_paths = {"/",        "/a",    "/a?x",  "/a/", "/a/b",
                                                  "/a/b/c/d", "/ab",   "/abc",  "/b/", "/b/c?d",
                                                  "/c",       "/a/bc", "/a/b/", ""};
  const std::vector<std::string> request_methods = {"GET", "POST", "HEAD", "PUT"};
  const std::vector<request_header> request_fields = {
      {"x-a", "1"}, {"X-A", "2"}, {"x-b", "2"}, {"x-b", "3"}, {"X-C", ""}};

  std::mt19937_64 rng(42);
  std::size_t matched = 0, unmatched = 0, duplicates = 0;
  for (int round = 0; round < 300; ++round) {
    table t;
    std::vector<reference_route> reference;
    const std::size_t n = 1 + rng() % 40;
    for (std::size_t i = 0; i < n; ++i) {
      route_match m{
          .host = pick(rng, hosts), .path = pick(rng, paths), .path_is_prefix = rng() % 3 != 0};
      for (const auto& x : methods) {
        if (rng() % 4 == 0) m.methods.push_back(x);
      }
      for (const auto& c : conditions) {
        const bool taken = std::any_of(m.headers.begin(), m.headers.end(), [&](const auto& h) {
          return lowered(h.name) == lowered(c.name);
        });
        if (!taken && rng() % 5 == 0) m.headers.push_back(c);
      }
      const std::string target = std::to_string(i);
      const bool duplicate = std::any_of(reference.begin(), reference.end(),
                                         [&](const auto& x) { return reference_same(x.m, m); });
      auto r = t.add(m, target);
      CHECK(r.has_value() == !duplicate);
      if (!r) {
        CHECK(r.error().code == errc::already_exists);
        ++duplicates;
        continue;
      }
      reference.push_back({m, target});
    }
    for (int q = 0; q < 200; ++q) {
      std::vector<request_header> fields;
      for (const auto& f : request_fields) {
        if (rng() % 3 == 0) fields.push_back(f);
      }
      const request_view r{.method = pick(rng, request_methods),
                           .host = pick(rng, request_hosts),
                           .path = pick(rng, request_paths),
                           .headers = fields};
      const reference_route* want = reference_find(reference, r);
      const std::string* got = t.match(r);
      CAPTURE(round);
      CAPTURE(r.method);
      CAPTURE(r.host);
      CAPTURE(r.path);
      REQUIRE((got == nullptr) == (want == nullptr));
      if (want != nullptr) {
        CHECK(*got == want->target);
        ++matched;
      } else {
        ++unmatched;
      }
    }
  }
  // The random tables exercise every outcome.
  CHECK(matched > 10'000);
  CHECK(unmatched > 5'000);
  CHECK(duplicates > 10);
}
