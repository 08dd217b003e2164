// SPDX-License-Identifier: MIT
// Fuzz target for the L7 router's configuration loader, l7::parse_config in
// examples/l7_router/config.cpp: a TOML file an operator writes, reloaded on SIGHUP while the
// router serves. Built only with the router (examples/CMakeLists.txt), since it needs toml++.
// The first byte chooses the mode: even, the rest is the TOML text; odd, each following byte
// picks a line from per-section lists of real and tricky lines, so that the fuzzer reaches
// the checks behind a valid TOML document (toml++ is a prebuilt library here, so libFuzzer
// sees no coverage inside it to guide raw text there). Properties:
//   1. parse_config never throws (nothing here catches: an escaping exception is a crash)
//      and gives the same answer twice.
//   2. An error's message starts with the file name and ':', and a line number it names is
//      within the text.
//   3. An accepted configuration is one the router runs as written (runtime.hpp relies on
//      this and ignores the results it would otherwise check): listen non-empty, threads
//      1..256, durations positive and at most max_duration; every pool's policy exists, its
//      backends apply to a fresh registry (valid ids, addresses and weights, no duplicate),
//      its cookie names are tokens, its balancer, outlier detection, health check options and
//      HTTP probe validate; every route's pool exists, every route enters one route_table,
//      rate limiters validate, keyed limits and auth have what they need, retry statuses are
//      5xx.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../../examples/common/policies.hpp"
#include "../../examples/l7_router/config.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message

[[noreturn]] void fail_because(const char* what, const std::string& why, int line) {
  std::fprintf(stderr, "%s\n", why.c_str());
  fail(what, line);
}

const std::string file_name = "fuzz.toml";

// Lines to build a configuration from, by section. Each list holds valid lines, and lines
// that break one rule each.
constexpr std::string_view top_lines[] = {
    "listen = [\"127.0.0.1:8080\"]",
    "listen = \"[::1]:0\"",
    "listen = []",
    "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]",
    "listen = [\"localhost:80\"]",
    "listen = [8080]",
    "stats = \"127.0.0.1:8404\"",
    "stats = \"127.0.0.1\"",
    "threads = 4",
    "threads = 0",
    "threads = 257",
    "threads = 1.5",
    "access_log = false",
    "access_log = \"yes\"",
    "sticky_key = \"000102030405060708090a0b0c0d0e0f\"",
    "sticky_key = \"00010203\"",
    "sticky_key = \"zz0102030405060708090a0b0c0d0e0f\"",
    "colour = \"blue\"",
};
constexpr std::string_view limits_lines[] = {
    "max_header_bytes = 16384",
    "max_header_bytes = 10",
    "max_body_bytes = 0",
    "max_body_bytes = 1099511627777",
    "header_timeout = \"10s\"",
    "header_timeout = \"0s\"",
    "idle_timeout = \"87600h\"",
    "idle_timeout = \"87601h\"",
    "connect_timeout = \"2\"",
    "request_timeout = \"1000000000h\"",
    "tunnel_idle_timeout = \"5m\"",
    "read_timeout = \"30s\"",
    "send_timeout = \"87601h\"",
    "response_deadline = \"2m\"",
    "response_deadline = \"0s\"",
    "max_connections = 0",
    "cache_bytes = 67108864",
    "retry_budget = 101",
    "retry_budget = -1",
    "idle_timeout = 5",
};
constexpr std::string_view auth_lines[] = {
    "api_keys = [\"k-1234\"]",
    "bearer_tokens = [\"t-1\", \"t-2\"]",
    "api_keys = \"k-1\"",
    "api_keys = [1]",
    "tokens = []",
};
constexpr std::string_view pool_names[] = {"web", "api", "\"a b\"", "web"};
constexpr std::string_view pool_lines[] = {
    "backends = [\"127.0.0.1:9001\"]",
    "backends = [\"127.0.0.1:9001\", { address = \"127.0.0.1:9002\", weight = 2 }]",
    "backends = [{ address = \"10.0.0.1:80\", id = \"\" }]",
    "backends = [{ address = \"10.0.0.1:80\", id = \"web 1\" }]",
    "backends = [{ address = \"10.0.0.1:80\", id = \"w1\" }, { address = \"10.0.0.2:80\", id = "
    "\"w1\" }]",
    "backends = [\"0.0.0.0:80\"]",
    "backends = [\"[::]:80\"]",
    "backends = [\"127.0.0.1:0\"]",
    "backends = [\"127.0.0.1:9001\", \"127.0.0.1:9001\"]",
    "backends = [{ address = \"10.0.0.1:80\", weight = 1000001 }]",
    "backends = [{ address = \"10.0.0.1:80\", colour = 1 }]",
    "backends = []",
    "backends = \"127.0.0.1:9001\"",
    "policy = \"maglev\"",
    "policy = \"least_connections\"",
    "policy = \"bounded_maglev\"",
    "policy = \"fastest\"",
    "health = \"tcp\"",
    "health = \"http:/healthz\"",
    "health = \"http:/a b\"",
    "health = \"http:healthz\"",
    "health = \"http:/x#frag\"",
    "health = \"http:\"",
    "health = \"icmp\"",
    "health_interval = \"1ms\"",
    "health_interval = \"87600h\"",
    "rise = 0",
    "fall = 1000",
    "passive_failures = 0",
    "panic_threshold = 50.5",
    "panic_threshold = nan",
    "panic_threshold = 101",
    "sticky_cookie = \"web_session\"",
    "sticky_cookie = \"a=b\"",
    "hash_cookie = \"sid\"",
    "hash_header = \"X-User\"",
    "max_idle = 100001",
    "upstream_idle_timeout = \"1h\"",
};
constexpr std::string_view route_lines[] = {
    "pool = \"web\"",
    "pool = \"api\"",
    "pool = \"a b\"",
    "pool = \"nowhere\"",
    "path = \"/\"",
    "path = \"/api/\"",
    "path = \"api\"",
    "path = \"/a?b\"",
    "exact = true",
    "host = \"api.example.com\"",
    "host = \"*.example.com\"",
    "host = \"*\"",
    "host = \"[::1]\"",
    "host = \"a..b\"",
    "host = \"example.com:80\"",
    "methods = [\"GET\", \"HEAD\"]",
    "methods = [\"get\"]",
    "methods = [\"GET\", \"GET\"]",
    "headers = { X-Env = \"canary\" }",
    "headers = { X-Debug = true }",
    "headers = { Host = true }",
    "headers = { X-Debug = false }",
    "headers = { X-Env = \" padded\" }",
    "auth = \"api_key\"",
    "auth = \"bearer\"",
    "auth = \"basic\"",
    "rate_limit = { rate = 100, burst = 200 }",
    "rate_limit = { rate = 100, key = \"api_key\" }",
    "rate_limit = { burst = 5 }",
    "rate_limit = { rate = 0.000001 }",
    "rate_limit = { rate = 1e10 }",
    "rate_limit = { rate = 5, key = \"ip\" }",
    "retries = 11",
    "retry_on = [502, 503]",
    "retry_on = [404]",
    "retry_on = []",
    "max_body_bytes = 0",
    "required_headers = [\"X-User\"]",
    "rewrite_host = \"backend.internal\"",
    "cache = true",
    "cache = 1",
};

// Appends up to `max` lines picked from `lines` by the bytes of `in` (the first byte the
// count), each key once: a repeated key is a TOML error, which the raw-text seeds cover. When
// no line sets `required`, one that does is added unless the count byte's top bit is set, so
// that most documents get past "pools.web.backends: want a non-empty array".
template <std::size_t N>
void add_lines(std::string& out, std::string_view& in, const std::string_view (&lines)[N],
               std::size_t max, std::string_view required = {}, std::string_view fallback = {}) {
  if (in.empty()) return;
  const auto count = static_cast<std::uint8_t>(in.front());
  in.remove_prefix(1);
  std::vector<std::string_view> keys;
  for (std::size_t n = count % (max + 1); n > 0 && !in.empty(); --n) {
    const std::string_view line = lines[static_cast<std::uint8_t>(in.front()) % N];
    in.remove_prefix(1);
    const std::string_view key = line.substr(0, line.find(" ="));
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
    keys.push_back(key);
    out += line;
    out += '\n';
  }
  if (!required.empty() && (count & 0x80) == 0 &&
      std::find(keys.begin(), keys.end(), required) == keys.end()) {
    out += fallback;
    out += '\n';
  }
}

// A configuration in the usual order of sections, its lines chosen by `in`.
std::string build(std::string_view in) {
  std::string out;
  add_lines(out, in, top_lines, 6, "listen", top_lines[0]);
  if (!in.empty() && (in.front() & 1)) {
    in.remove_prefix(1);
    out += "[limits]\n";
    add_lines(out, in, limits_lines, 4);
  }
  if (!in.empty() && (in.front() & 1)) {
    in.remove_prefix(1);
    out += "[auth]\n";
    add_lines(out, in, auth_lines, 2);
  }
  // One to four pools; the fourth repeats the first's name, a TOML error.
  const std::size_t pools = in.empty() ? 1 : 1 + static_cast<std::uint8_t>(in.front()) % 4;
  if (!in.empty()) in.remove_prefix(1);
  for (std::size_t i = 0; i < pools; ++i) {
    out += "[pools.";
    out += pool_names[i];
    out += "]\n";
    add_lines(out, in, pool_lines, 6, "backends", pool_lines[0]);
  }
  // At most eight routes: more add nothing but time (route_table::add is linear).
  for (int routes = 0; routes < 8 && !in.empty(); ++routes) {
    out += "[[routes]]\n";
    add_lines(out, in, route_lines, 6, "pool", route_lines[0]);
  }
  return out;
}

std::size_t count_lines(std::string_view text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
}

void check_error(const lbkit::error& e, std::string_view text) {
  const std::string& m = e.message;
  if (!m.starts_with(file_name + ":")) fail_because("errors start with the file name", m, __LINE__);
  // "fuzz.toml:12: ..." names a line of the text.
  std::size_t at = file_name.size() + 1, line = 0;
  while (at < m.size() && m[at] >= '0' && m[at] <= '9' && line < 1'000'000'000) {
    line = line * 10 + static_cast<std::size_t>(m[at++] - '0');
  }
  if (at > file_name.size() + 1) {
    FUZZ_CHECK(at < m.size() && m[at] == ':');
    if (line == 0 || line > count_lines(text)) {
      fail_because("the line of an error is in the text", m, __LINE__);
    }
  }
  FUZZ_CHECK(m.size() > file_name.size() + 2);  // something after "fuzz.toml: "
}

void check_duration(std::chrono::milliseconds d) {
  FUZZ_CHECK(d.count() > 0 && d <= examples::max_duration);
}

// What runtime::build and the pools it makes do with a pool's configuration, checked.
void check_pool(const std::string& key, const l7::pool_config& p) {
  FUZZ_CHECK(p.name == key);
  FUZZ_CHECK(examples::with_policy(p.policy, []<class>() {}));
  FUZZ_CHECK(!p.backends.empty());
  lbkit::change_set cs;
  for (const auto& b : p.backends) cs.add(lbkit::backend(b.id, b.address, b.weight));
  lbkit::backend_registry registry;
  if (auto r = registry.apply(cs); !r) {
    fail_because("a pool's backends apply to a registry", r.error().message, __LINE__);
  }
  for (const std::string* name : {&p.sticky_cookie, &p.hash_cookie}) {
    FUZZ_CHECK(name->empty() || lbkit::validate_cookie_name(*name).has_value());
  }
  check_duration(p.health.interval);
  check_duration(p.health.timeout);
  check_duration(p.upstream_idle_timeout);
  // The pool's balancer and passive outlier detector, as runtime.hpp makes them.
  if (auto v = lbkit::validate(lbkit::balancer_options{.panic_threshold = p.panic_threshold}); !v) {
    fail_because("a pool's balancer options validate", v.error().message, __LINE__);
  }
  if (p.passive_failures > 0) {
    lbkit::outlier_detection_options o;
    o.consecutive_failures = p.passive_failures;
    if (auto v = lbkit::validate(o); !v) {
      fail_because("a pool's outlier detection options validate", v.error().message, __LINE__);
    }
  }
  if (p.health.kind != l7::health_kind::none) {
    // As pool::start_health() makes them.
    if (auto v = lbkit::validate(examples::checker_options(p.health).check); !v) {
      fail_because("a pool's health check options validate", v.error().message, __LINE__);
    }
  }
  if (p.health.kind == l7::health_kind::http) {
    lbkit::http_probe::options o;
    o.path = p.health.http_path;
    if (auto v = lbkit::http_probe::validate(o); !v) {
      fail_because("a pool's HTTP probe validates (else it is inert and the pool stays down)",
                   v.error().message, __LINE__);
    }
  }
}

void check_accepted(const l7::router_config& c) {
  FUZZ_CHECK(!c.listen.empty());
  FUZZ_CHECK(c.threads >= 1 && c.threads <= 256);
  const auto& l = c.limits;
  for (const auto d : {l.header_timeout, l.idle_timeout, l.connect_timeout, l.request_timeout,
                       l.read_timeout, l.send_timeout, l.tunnel_idle_timeout}) {
    check_duration(d);
  }
  if (l.response_deadline.count() != 0) check_duration(l.response_deadline);  // 0: none
  FUZZ_CHECK(l.max_connections >= 1);
  FUZZ_CHECK(l.retry_budget <= 100);
  FUZZ_CHECK(!c.pools.empty());
  for (const auto& [key, p] : c.pools) check_pool(key, p);

  FUZZ_CHECK(!c.routes.empty());
  lbkit::route_table<std::size_t> table;
  for (std::size_t i = 0; i < c.routes.size(); ++i) {
    const l7::route_config& r = c.routes[i];
    FUZZ_CHECK(c.pools.find(r.pool) != c.pools.end());
    if (auto a = table.add(r.match, i); !a) {
      fail_because("every route enters one route_table", a.error().message, __LINE__);
    }
    if (r.rate_limit.rate > 0) {
      lbkit::rate_limiter_options o;  // as runtime::build makes the route's limiter
      o.bucket = {.rate_per_second = r.rate_limit.rate, .burst = r.rate_limit.burst};
      if (auto v = lbkit::validate(o); !v) {
        fail_because("a route's rate limit validates", v.error().message, __LINE__);
      }
    }
    FUZZ_CHECK(!r.rate_limit.per_key || r.auth != l7::auth_kind::none);
    FUZZ_CHECK(r.auth != l7::auth_kind::api_key || !c.api_keys.empty());
    FUZZ_CHECK(r.auth != l7::auth_kind::bearer || !c.bearer_tokens.empty());
    FUZZ_CHECK(r.retries <= 10);
    for (const unsigned s : r.retry_on) FUZZ_CHECK(s >= 500 && s <= 599);
    FUZZ_CHECK(r.line >= 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string text = (data[0] & 1) != 0 ? build(in) : std::string(in);

  const auto c = l7::parse_config(text, file_name);
  const auto again = l7::parse_config(text, file_name);
  FUZZ_CHECK(c.has_value() == again.has_value());
  if (!c) {
    FUZZ_CHECK(c.error().message == again.error().message);
    check_error(c.error(), text);
    return 0;
  }
  FUZZ_CHECK(c->routes.size() == again->routes.size() && c->pools.size() == again->pools.size());
  check_accepted(*c);
  return 0;
}
