// SPDX-License-Identifier: MIT
// The L7 router under faults for a while (60 s; LBKIT_SOAK_SECONDS sets another length):
// three backends behind it, keep-alive load from 16 clients throughout, and
//   - "restarts" killed (listener closed, open connections cut) every 6 s and brought back
//     1.5 s later on the same port;
//   - "flaky" answering 500 to everything, health checks included, for the middle sixth;
//   - "slow" taking 20 ms over every answer, and the only one never faulty.
// Asserted: no request fails (retries hide every fault while "slow" is up: 500 is in
// retry_on); each restart gets traffic again within rise x interval + 1 s; the router never
// crashes and exits cleanly; after the load its descriptors come back to where they were
// before it, and its memory to within a bound of where it was after a warm-up. The figures
// are printed, a line a second and a summary.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#if !defined(LBKIT_L7_ROUTER_PATH)

TEST_CASE("lbkit_l7_router is not built (Boost, toml++ or CLI11 missing): its soak is skipped") {
  MESSAGE("examples/CMakeLists.txt did not build lbkit_l7_router");
}

#else

#include "../support/http_backend.hpp"
#include "../support/l7_router.hpp"

using namespace lbkit::test;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

std::chrono::seconds soak_length() {
  const char* s = std::getenv("LBKIT_SOAK_SECONDS");
  const long n = s != nullptr ? std::atol(s) : 0;
  return std::chrono::seconds(n > 0 ? n : 60);
}

// Statuses of the load, counted by all clients, and the connections that broke.
struct tally {
  std::mutex mu;
  std::map<unsigned, long> statuses;
  long broken = 0;
  long total() {
    std::lock_guard lock(mu);
    long n = broken;
    for (const auto& entry : statuses) n += entry.second;
    return n;
  }
};

}  // namespace

TEST_CASE("soak: the router through kills, restarts, a slow backend and a failing one") {
  const auto length = soak_length();
  std::atomic<bool> failing{false};
  auto flaky_handler = [&](const http_backend::request&, http_backend::response& res,
                           const http_backend&) {
    if (failing.load()) res.result(http::status::internal_server_error);
  };
  http_backend flaky("flaky", flaky_handler), restarts("restarts"),
      slow("slow", [](const http_backend::request&, http_backend::response&,
                      const http_backend&self) { self.pause(20ms); });
  constexpr auto interval = 500ms;
  constexpr int rise = 2;
  // A small ASan quarantine, so that freed memory is given back as it would be without ASan
  // and the memory bound means something (ignored by builds without ASan).
  std::string asan = std::getenv("ASAN_OPTIONS") != nullptr ? std::getenv("ASAN_OPTIONS") : "";
  ::setenv("ASAN_OPTIONS", (asan + (asan.empty() ? "" : ":") + "quarantine_size_mb=16").c_str(), 1);
  router_process r(
      "listen = [\"127.0.0.1:0\"]\nthreads = 2\nstats = \"127.0.0.1:0\"\naccess_log = false\n"
      "[limits]\nretry_budget = 100\n" +
          pool_toml("web", {&flaky, &restarts, &slow},
                    "policy = \"least_connections\"\nhealth = \"http:/health\"\n"
                    "health_interval = \"500ms\"\nrise = 2\nfall = 2\npassive_failures = 5\n"
                    "upstream_idle_timeout = \"1s\"") +
          // While "flaky" answers 500 and is not yet ejected or marked down (up to a second),
          // a third of the first attempts need a retry after a bad answer, which takes room in
          // the retry budget: the default 20% of requests in flight would refuse some, 100%
          // lets every request have its retry (the budget's test is in l7_router.test.cpp).
          route_toml("path = \"/\"\npool = \"web\"\nretries = 2\nretry_on = [500, 502, 503, 504]"),
      true);
  ::setenv("ASAN_OPTIONS", asan.c_str(), 1);
  const pid_t pid = r.process().pid();
  // Under active checks the backends start down and need `rise` good checks each.
  REQUIRE(eventually([&] {
    const std::string page = r.stats_page();
    return stats_field(page, "web", "flaky", "health") == "up" &&
           stats_field(page, "web", "restarts", "health") == "up" &&
           stats_field(page, "web", "slow", "health") == "up";
  }));
  const long fds_before = open_descriptors(pid);

  tally t;
  std::atomic<bool> stop{false};
  auto run_clients = [&](int clients) {
    std::vector<std::thread> threads;
    for (int i = 0; i < clients; ++i) {
      threads.emplace_back([&] {
        while (!stop.load()) {
          http_client c(r.address());
          for (int k = 0; k < 1000 && !stop.load(); ++k) {  // a new connection now and then
            const auto res = c.request(get("/load"));
            std::lock_guard lock(t.mu);
            if (!res) {
              ++t.broken;
              break;
            }
            ++t.statuses[res->result_int()];
          }
        }
      });
    }
    return threads;
  };

  // Warm-up: the memory the router needs for this load, before any fault.
  auto threads = run_clients(16);
  REQUIRE(eventually([&] { return t.total() >= 2000; }, 20s));
  const long rss_warm = rss_kib(pid);

  const auto start = steady_clock::now();
  std::vector<milliseconds> recoveries;
  // The faults, driven every 10 ms: flaky fails in the middle sixth; restarts goes down at
  // 3 s, 9 s, 15 s, ... for 1.5 s, and each return is timed until it has traffic again.
  std::thread faults([&] {
    const double whole = static_cast<double>(length.count());
    bool down = false, waiting = false;
    steady_clock::time_point since{};
    std::size_t hits = 0;
    for (int next_kill = 3; !stop.load(); std::this_thread::sleep_for(10ms)) {
      const double secs = std::chrono::duration<double>(steady_clock::now() - start).count();
      failing = secs >= whole * 5 / 12 && secs < whole * 7 / 12;
      if (!down && !waiting && secs >= next_kill && secs + 4 < whole) {
        restarts.stop();
        down = true;
        since = steady_clock::now();
        next_kill += 6;
      } else if (down && steady_clock::now() - since >= 1500ms) {
        if (!restarts.start()) return;
        down = false;
        waiting = true;
        since = steady_clock::now();
        hits = restarts.hits();
      } else if (waiting && (restarts.hits() > hits || steady_clock::now() - since > 10s)) {
        waiting = false;
        recoveries.push_back(std::chrono::duration_cast<milliseconds>(steady_clock::now() - since));
      }
    }
  });

  // A line a second: what the clients saw, where the requests went, the router's footprint.
  long last_total = 0;
  std::size_t last_hits[3] = {};
  for (auto next = start + 1s; next <= start + length; next += 1s) {
    std::this_thread::sleep_until(next);  // the soak's clock, not a wait for a condition
    std::map<unsigned, long> statuses;
    long broken;
    {
      std::lock_guard lock(t.mu);
      statuses = t.statuses;
      broken = t.broken;
    }
    long total = broken, bad = broken;
    for (const auto& entry : statuses) {
      total += entry.second;
      if (entry.first != 200) bad += entry.second;
    }
    const std::size_t hits[3] = {flaky.hits(), restarts.hits(), slow.hits()};
    std::printf(
        "soak %3llds: %5ld req/s, failed %ld; flaky %zu restarts %zu slow %zu%s; fds %ld, rss %ld "
        "KiB\n",
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::seconds>(next - start).count()),
        total - last_total, bad, hits[0] - last_hits[0], hits[1] - last_hits[1],
        hits[2] - last_hits[2], failing.load() ? " (flaky failing)" : "", open_descriptors(pid),
        rss_kib(pid));
    std::fflush(stdout);
    last_total = total;
    std::copy(std::begin(hits), std::end(hits), std::begin(last_hits));
  }
  stop = true;
  faults.join();
  for (auto& th : threads) th.join();
  failing = false;

  // After the load: client connections closed, idle upstream ones gone within their 1 s.
  CHECK(eventually([&] { return open_descriptors(pid) <= fds_before; }, 10s, 50ms));
  const long fds_after = open_descriptors(pid);
  const long rss_after = rss_kib(pid);
  const std::string page = r.stats_page();

  long total = 0, failed = t.broken;
  std::string statuses;
  for (const auto& entry : t.statuses) {
    total += entry.second;
    if (entry.first != 200) failed += entry.second;
    statuses += std::to_string(entry.first) + " x" + std::to_string(entry.second) + " ";
  }
  milliseconds worst{0};
  std::string each;
  for (auto d : recoveries) {
    worst = std::max(worst, d);
    each += std::to_string(d.count()) + " ";
  }
  std::printf(
      "soak summary: %lld s, %ld requests (%s), %ld broken connections, %zu restarts, traffic "
      "back after (ms) %s(worst %lld), retries %lld, over budget %lld; fds %ld before, %ld "
      "after; rss %ld KiB warm, %ld KiB after\n",
      static_cast<long long>(length.count()), total, statuses.c_str(), t.broken, recoveries.size(),
      each.c_str(), static_cast<long long>(worst.count()), stats_counter(page, "retries"),
      stats_counter(page, "retries_over_budget"), fds_before, fds_after, rss_warm, rss_after);
  std::fflush(stdout);
  INFO(page);
  CHECK(failed == 0);
  CHECK(total > 1000);
  CHECK(!recoveries.empty());
  CHECK(worst <= rise * interval + 1000ms);
  CHECK(fds_after <= fds_before);
  // Memory: the warm-up's plus at most 32 MiB (allocator caches, buffers kept for reuse).
  CHECK(rss_after <= rss_warm + 32 * 1024);
  CHECK(r.process().running());
  r.stop();
}

#endif  // LBKIT_L7_ROUTER_PATH
