// SPDX-License-Identifier: MIT
// net/route_table: match() over tables of 10, 100 and 1 000 routes shaped like a gateway's
// (a few hosts, many path prefixes, some exact paths, some method and header conditions), read
// against baselines measured in the same run (shared/PITFALLS.md: read ratios, not
// nanoseconds, on a shared 2-core machine).
//
//   baseline_path_eq        one std::string_view == of a request path with a route path of the
//                           same length: the unit of a route comparison
//   baseline_path_hash      lbkit::hash_bytes of the request path: what a hash-based exact
//                           router pays per request
//   route_hit_first/N       the most specific route of the table: exact host, exact path
//   route_hit_last/N        the least specific: a catch-all for any host, reached from a host
//                           with its own routes and a wildcard that also match
//   route_miss/N            no route matches (404) after the same three host groups
//   route_mixed/N           1 024 requests aimed at random routes, most with a query
//   linear_hit_last/N       a first-match scan of the routes sorted by the documented order, the
//   linear_miss/N           simplest correct router: what the index saves
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <benchmark/benchmark.h>

#include <lbkit/hash.hpp>
#include <lbkit/net/route_table.hpp>

namespace {

template <class T>
inline void sink(T v) {
  asm volatile("" ::"r"(v) : "memory");
}

using table = lbkit::route_table<std::uint32_t>;

struct request {
  std::string method{}, host{}, path{};
  std::vector<lbkit::request_header> headers{};
  lbkit::request_view view() const {
    return {.method = method, .host = host, .path = path, .headers = headers};
  }
};

// A route of the linear reference: the normalized match, and its place in the documented order.
struct linear_route {
  const lbkit::route_match* m;
  std::uint32_t target;
};

struct fixture {
  table t;
  std::vector<linear_route> linear;  // sorted most specific first
  std::vector<request> mixed;        // 1 024, each aimed at a route
};

const std::vector<std::string> host_patterns = {"api.example.com",   "www.example.com",
                                                "admin.example.com", "*.example.com",
                                                "*.eu.example.com",  ""};

// The key of the documented order (greater is more specific), for the linear reference.
std::tuple<int, std::size_t, bool, std::size_t, std::size_t> specificity(
    const lbkit::route_match& m) {
  const int host_rank = m.host.empty() ? 0 : m.host.starts_with("*.") ? 1 : 2;
  return {host_rank, m.host.size(), !m.path_is_prefix, m.path.size(),
          (m.methods.empty() ? 0 : 1) + m.headers.size()};
}

const fixture& fixture_of(std::size_t n) {
  static std::mutex mu;
  static std::map<std::size_t, std::unique_ptr<fixture>> made;
  std::lock_guard lock(mu);
  auto& f = made[n];
  if (f) return *f;
  f = std::make_unique<fixture>();
  std::mt19937_64 rng(n);
  std::uint32_t target = 0;
  auto add = [&](lbkit::route_match m) {
    if (!f->t.add(std::move(m), target++)) std::abort();
  };
  // Hosts weighted as a gateway's: most routes on the API host.
  auto host_of = [&] {
    const auto r = rng() % 100;
    return host_patterns[r < 40 ? 0 : r < 60 ? 1 : r < 70 ? 2 : r < 85 ? 3 : r < 90 ? 4 : 5];
  };
  add({.path = "/", .methods = {"GET"}});  // the catch-all: last in the order
  for (std::size_t i = 2; i < n; ++i) {
    lbkit::route_match m{.host = host_of()};
    const auto shape = rng() % 10;
    const std::string svc = "/svc" + std::to_string(i);
    if (shape < 5) {
      m.path = svc + "/";
    } else if (shape < 7) {
      m.path = svc + "/v" + std::to_string(rng() % 3) + "/";
    } else if (shape < 8) {
      m.path = svc + "/status";
      m.path_is_prefix = false;
    } else if (shape < 9) {
      m.path = svc + "/";
      m.methods = {"GET", "POST"};
    } else {
      m.path = svc + "/";
      m.headers = {{"x-tenant", "t" + std::to_string(i % 7)}};
    }
    add(std::move(m));
  }
  // The most specific route, added last so that the order added is not the order matched.
  add({.host = "api.example.com",
       .path = "/health",
       .path_is_prefix = false,
       .methods = {"GET", "HEAD"}});

  const auto routes = f->t.routes();
  for (std::size_t i = 0; i < routes.size(); ++i) {
    f->linear.push_back({&routes[i].match, routes[i].target});
  }
  std::stable_sort(f->linear.begin(), f->linear.end(), [](const auto& a, const auto& b) {
    return specificity(*a.m) > specificity(*b.m);
  });

  for (std::size_t i = 0; i < 1024; ++i) {
    const auto& m = routes[rng() % routes.size()].match;
    request r{.method = m.methods.empty() ? "GET" : m.methods.back()};
    r.host = m.host.empty()             ? "other.org"
             : m.host.starts_with("*.") ? "w" + std::to_string(i) + m.host.substr(1)
                                        : m.host;
    if (i % 2 == 0) r.host = r.host + ":443";
    r.path = m.path_is_prefix ? m.path + "items/" + std::to_string(i) + "?page=2" : m.path;
    for (const auto& h : m.headers) r.headers.push_back({h.name, *h.value});
    r.headers.push_back({"user-agent", "bench"});
    f->mixed.push_back(std::move(r));
  }
  return *f;
}

const request hit_first{.method = "GET", .host = "api.example.com", .path = "/health"};
const request hit_last{.method = "GET", .host = "api.example.com:443", .path = "/nothing?x=1"};
const request miss{.method = "POST", .host = "api.example.com:443", .path = "/nothing?x=1"};

// The linear reference: the first route, in the documented order, whose conditions hold.
const linear_route* linear_find(const fixture& f, const lbkit::request_view& r) {
  using namespace lbkit::detail::routing;
  const std::string_view host = request_host(r.host);
  const std::string_view path = request_path(r.path);
  for (const auto& x : f.linear) {
    const auto& m = *x.m;
    if (m.host.starts_with("*.")) {
      const std::string_view dotted = std::string_view(m.host).substr(1);
      if (host.size() <= dotted.size() ||
          compare_folded(dotted, host.substr(host.size() - dotted.size())) != 0) {
        continue;
      }
    } else if (!m.host.empty() && compare_folded(m.host, host) != 0) {
      continue;
    }
    if (m.path_is_prefix ? !path.starts_with(m.path) : path != m.path) continue;
    if (conditions_hold(m, r)) return &x;
  }
  return nullptr;
}

void baseline_path_eq(benchmark::State& state) {
  const auto& f = fixture_of(1000);
  std::vector<std::string> same;  // a copy of each path, so that == compares the bytes
  for (const auto& r : f.mixed) same.push_back(r.path);
  std::size_t i = 0;
  for (auto _ : state) {
    sink(std::string_view(f.mixed[i].path) == std::string_view(same[i]));
    i = (i + 1) & 1023;
  }
}
BENCHMARK(baseline_path_eq);

void baseline_path_hash(benchmark::State& state) {
  const auto& f = fixture_of(1000);
  std::size_t i = 0;
  for (auto _ : state) {
    sink(lbkit::hash_bytes(f.mixed[i].path));
    i = (i + 1) & 1023;
  }
}
BENCHMARK(baseline_path_hash);

void route_one(benchmark::State& state, const request& q, bool expect_hit) {
  const auto& f = fixture_of(static_cast<std::size_t>(state.range(0)));
  const lbkit::request_view v = q.view();
  if ((f.t.match(v) != nullptr) != expect_hit) {
    state.SkipWithError("the request does not route as the benchmark expects");
    return;
  }
  for (auto _ : state) sink(f.t.match(v));
}
void route_hit_first(benchmark::State& state) { route_one(state, hit_first, true); }
void route_hit_last(benchmark::State& state) { route_one(state, hit_last, true); }
void route_miss(benchmark::State& state) { route_one(state, miss, false); }
BENCHMARK(route_hit_first)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(route_hit_last)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(route_miss)->Arg(10)->Arg(100)->Arg(1000);

void route_mixed(benchmark::State& state) {
  const auto& f = fixture_of(static_cast<std::size_t>(state.range(0)));
  std::vector<lbkit::request_view> views;
  for (const auto& r : f.mixed) views.push_back(r.view());
  std::size_t i = 0, hits = 0, n = 0;
  for (auto _ : state) {
    const std::uint32_t* t = f.t.match(views[i]);
    sink(t);
    hits += t != nullptr;
    ++n;
    i = (i + 1) & 1023;
  }
  state.counters["hit_share"] = static_cast<double>(hits) / static_cast<double>(n ? n : 1);
}
BENCHMARK(route_mixed)->Arg(10)->Arg(100)->Arg(1000);

void linear_one(benchmark::State& state, const request& q, bool expect_hit) {
  const auto& f = fixture_of(static_cast<std::size_t>(state.range(0)));
  const lbkit::request_view v = q.view();
  const linear_route* want = linear_find(f, v);
  const std::uint32_t* got = f.t.match(v);
  if ((want != nullptr) != expect_hit || (got != nullptr) != expect_hit ||
      (want != nullptr && want->target != *got)) {
    state.SkipWithError("the linear reference disagrees with route_table");
    return;
  }
  for (auto _ : state) sink(linear_find(f, v));
}
void linear_hit_last(benchmark::State& state) { linear_one(state, hit_last, true); }
void linear_miss(benchmark::State& state) { linear_one(state, miss, false); }
BENCHMARK(linear_hit_last)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(linear_miss)->Arg(10)->Arg(100)->Arg(1000);

}  // namespace
