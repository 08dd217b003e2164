// SPDX-License-Identifier: MIT
// flow_table: find/insert/refresh, idle expiry at the exact timeout boundary on synthetic time,
// LRU eviction returned to the caller, expire() callbacks, options, and concurrent use from
// four threads (run under TSan in CI).
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/net/flow_table.hpp>

#include "../support/allocation_counter.hpp"

using lbkit::endpoint;
using lbkit::errc;
using lbkit::flow_key;
using lbkit::flow_table;
using lbkit::flow_table_options;
using lbkit::ip_address;

namespace {

constexpr std::int64_t s = 1'000'000'000;  // one second in nanoseconds

ip_address ip(std::string_view text) {
  auto r = ip_address::parse(text);
  if (!r) FAIL("bad address " << std::string(text));
  return *r;
}

// Client 10.x.y.z:port to 192.0.2.1:443 over TCP, numbered by `i`.
flow_key tcp_flow(std::uint32_t i) {
  const auto client =
      ip_address::v4({10, static_cast<std::uint8_t>(i >> 16), static_cast<std::uint8_t>(i >> 8),
                      static_cast<std::uint8_t>(i)});
  return flow_key::for_five_tuple(endpoint(client, static_cast<std::uint16_t>(1024 + i % 60000)),
                                  endpoint(ip("192.0.2.1"), 443), IPPROTO_TCP);
}

flow_table_options opts(std::size_t capacity, std::chrono::nanoseconds timeout,
                        std::size_t shards = 1) {
  flow_table_options o;
  o.capacity = capacity;
  o.idle_timeout = timeout;
  o.shards = shards;
  o.seed = 42;
  return o;
}

}  // namespace

TEST_CASE("flow_key: constructors, equality and hashing") {
  const auto a = flow_key::for_client(ip("10.0.0.1"));
  CHECK(a.client == ip("10.0.0.1"));
  CHECK(a.client_port == 0);
  CHECK(a.server_port == 0);
  CHECK(a.protocol == 0);
  CHECK(a == flow_key::for_client(ip("10.0.0.1")));
  CHECK_FALSE(a == flow_key::for_client(ip("10.0.0.2")));
  CHECK_FALSE(a == flow_key::for_client(ip("::ffff:10.0.0.1")));  // exact, not unmapped

  const auto t = flow_key::for_five_tuple(*endpoint::parse("10.0.0.1:40000"),
                                          *endpoint::parse("[2001:db8::1]:443"), IPPROTO_TCP);
  CHECK(t.client_port == 40000);
  CHECK(t.server == ip("2001:db8::1"));
  CHECK(t.server_port == 443);
  CHECK(t.protocol == IPPROTO_TCP);
  auto u = t;
  u.protocol = IPPROTO_UDP;
  CHECK_FALSE(t == u);

  // Deterministic for a seed, different across seeds and across fields.
  CHECK(lbkit::hash_value(t, 7) == lbkit::hash_value(t, 7));
  CHECK(lbkit::hash_value(t, 7) != lbkit::hash_value(t, 8));
  CHECK(lbkit::hash_value(t) != lbkit::hash_value(u));
  CHECK(std::hash<flow_key>{}(t) == static_cast<std::size_t>(lbkit::hash_value(t)));
  // Swapping ports between client and server is another flow.
  auto swapped = t;
  std::swap(swapped.client_port, swapped.server_port);
  CHECK(lbkit::hash_value(t) != lbkit::hash_value(swapped));

  std::unordered_set<std::uint64_t> hashes;
  for (std::uint32_t i = 0; i < 10000; ++i) hashes.insert(lbkit::hash_value(tcp_flow(i)));
  CHECK(hashes.size() == 10000);
}

TEST_CASE("flow_table: insert, find, replace, erase") {
  flow_table<std::string> t(opts(100, std::chrono::seconds(60), 4));
  CHECK(t.size() == 0);
  CHECK(t.capacity() == 100);
  CHECK(t.idle_timeout() == std::chrono::seconds(60));

  const auto k = flow_key::for_client(ip("192.0.2.7"));
  CHECK_FALSE(t.find(k, 0).has_value());
  CHECK_FALSE(t.insert(k, "backend-1", 0).has_value());
  CHECK(t.size() == 1);
  CHECK(t.find(k, 1 * s) == "backend-1");
  CHECK_FALSE(t.find(flow_key::for_client(ip("192.0.2.8")), 1 * s).has_value());

  // Replacing keeps one entry.
  CHECK_FALSE(t.insert(k, "backend-2", 2 * s).has_value());
  CHECK(t.size() == 1);
  CHECK(t.find(k, 3 * s) == "backend-2");

  CHECK(t.erase(k));
  CHECK_FALSE(t.erase(k));
  CHECK(t.size() == 0);
  CHECK_FALSE(t.find(k, 4 * s).has_value());
}

TEST_CASE("flow_table: idle expiry at exactly the timeout, on synthetic time") {
  flow_table<int> t(opts(16, std::chrono::nanoseconds(1000)));
  const auto a = tcp_flow(1), b = tcp_flow(2);
  const std::int64_t t0 = 5'000'000;
  t.insert(a, 1, t0);
  t.insert(b, 2, t0);

  // Idle for exactly the timeout: still live, and the find refreshes it.
  CHECK(t.find(a, t0 + 1000) == 1);
  // a was used at t0 + 1000, so it lives until t0 + 2000 inclusive.
  CHECK(t.find(a, t0 + 2000) == 1);
  // b, untouched since t0, is idle for longer than the timeout: gone, and removed.
  CHECK(t.size() == 2);
  CHECK_FALSE(t.find(b, t0 + 1001).has_value());
  CHECK(t.size() == 1);
  CHECK_FALSE(t.find(b, t0 + 1001).has_value());

  // One nanosecond past the timeout after its last use.
  CHECK_FALSE(t.find(a, t0 + 3001).has_value());
  CHECK(t.size() == 0);

  // insert() refreshes too, and a replaced entry takes the new time.
  t.insert(a, 10, t0);
  t.insert(a, 11, t0 + 900);
  CHECK(t.find(a, t0 + 1900) == 11);

  // A time earlier than the last use (another thread's clock read) does not expire anything.
  CHECK(t.find(a, t0) == 11);
  CHECK(t.find(a, t0 + 2900) == 11);
  CHECK_FALSE(t.find(a, t0 + 3901).has_value());

  // Extreme synthetic times do not overflow.
  t.insert(b, 3, INT64_MIN);
  CHECK_FALSE(t.find(b, INT64_MAX).has_value());
  t.insert(b, 4, INT64_MAX);
  CHECK(t.find(b, INT64_MAX) == 4);
}

TEST_CASE("flow_table: find() does not allocate") {
  flow_table<std::uint32_t> t(opts(4096, std::chrono::seconds(60), 16));
  for (std::uint32_t i = 0; i < 2000; ++i) t.insert(tcp_flow(i), i, 0);
  std::vector<flow_key> keys;
  for (std::uint32_t i = 0; i < 4000; ++i) keys.push_back(tcp_flow(i));  // half miss
  std::size_t hits = 0;
  const std::size_t before = lbkit::test::allocations.load();
  for (const auto& k : keys) hits += t.find(k, 1).has_value();
  if (lbkit::test::counting_allocations) CHECK(lbkit::test::allocations.load() == before);
  CHECK(hits == 2000);
}

TEST_CASE("flow_table: a full table evicts its least recently used entry, to the caller") {
  flow_table<int> t(opts(3, std::chrono::seconds(60)));
  CHECK(t.capacity() == 3);
  CHECK_FALSE(t.insert(tcp_flow(1), 1, 1).has_value());
  CHECK_FALSE(t.insert(tcp_flow(2), 2, 2).has_value());
  CHECK_FALSE(t.insert(tcp_flow(3), 3, 3).has_value());

  // Using 1 makes 2 the least recently used.
  CHECK(t.find(tcp_flow(1), 4) == 1);
  auto ev = t.insert(tcp_flow(4), 4, 5);
  REQUIRE(ev.has_value());
  CHECK(ev->first == tcp_flow(2));
  CHECK(ev->second == 2);
  CHECK(t.size() == 3);
  CHECK_FALSE(t.find(tcp_flow(2), 6).has_value());

  // Replacing a present key never evicts; it makes the key the most recent.
  CHECK_FALSE(t.insert(tcp_flow(3), 33, 7).has_value());
  ev = t.insert(tcp_flow(5), 5, 8);
  REQUIRE(ev.has_value());
  CHECK(ev->first == tcp_flow(1));
  ev = t.insert(tcp_flow(6), 6, 9);
  REQUIRE(ev.has_value());
  CHECK(ev->first == tcp_flow(4));
  CHECK(t.find(tcp_flow(3), 10) == 33);
  CHECK(t.find(tcp_flow(5), 10) == 5);
  CHECK(t.find(tcp_flow(6), 10) == 6);

  // The evicted value is handed over, not destroyed: a shared_ptr's count shows it.
  flow_table<std::shared_ptr<int>> p(opts(1, std::chrono::seconds(60)));
  auto conn = std::make_shared<int>(7);
  p.insert(tcp_flow(1), conn, 0);
  CHECK(conn.use_count() == 2);
  auto out = p.insert(tcp_flow(2), std::make_shared<int>(8), 1);
  REQUIRE(out.has_value());
  CHECK(out->second == conn);
  out.reset();
  CHECK(conn.use_count() == 1);
}

TEST_CASE("flow_table: many keys through a small table, sharded, keep every invariant") {
  flow_table<std::uint32_t> t(opts(1000, std::chrono::seconds(60), 8));
  CHECK(t.capacity() == 1000);
  std::map<std::uint32_t, std::uint32_t> present;  // key number -> value
  std::size_t evictions = 0;
  for (std::uint32_t i = 0; i < 20000; ++i) {
    const std::uint32_t k = i % 3000;
    auto ev = t.insert(tcp_flow(k), i, i);
    if (ev) {
      ++evictions;
      CHECK(ev->second < i);
    }
    CHECK(t.size() <= 1000);
    if (i % 7 == 0) {
      const auto v = t.find(tcp_flow((i * 31) % 3000), i);
      if (v) CHECK(*v % 3000 == (i * 31) % 3000);
    }
    if (i % 11 == 0) t.erase(tcp_flow((i * 17) % 3000));
  }
  CHECK(evictions > 0);
  // What remains maps each key to the last value inserted for it.
  std::size_t found = 0;
  for (std::uint32_t k = 0; k < 3000; ++k) {
    const auto v = t.find(tcp_flow(k), 20000);
    if (!v) continue;
    ++found;
    CHECK(*v % 3000 == k);
    CHECK(*v >= 17000);  // the last insert of key k was in the final 3000
  }
  CHECK(found == t.size());
  CHECK(found > 500);  // uneven shards may evict early, but not that early
}

TEST_CASE("flow_table: expire() removes the idle entries and reports each once") {
  flow_table<int> t(opts(1000, std::chrono::nanoseconds(100), 4));
  for (int i = 0; i < 50; ++i) t.insert(tcp_flow(static_cast<std::uint32_t>(i)), i, i * 10);
  // At 300, entries used at or after 200 (i >= 20) are live: idle for 100 or less.
  std::set<int> expired;
  std::size_t calls = 0;
  const auto n = t.expire(300, [&](const flow_key& k, int& v) {
    ++calls;
    CHECK(k == tcp_flow(static_cast<std::uint32_t>(v)));
    expired.insert(v);
  });
  CHECK(n == 20);
  CHECK(calls == 20);
  CHECK(expired.size() == 20);
  CHECK(*expired.begin() == 0);
  CHECK(*expired.rbegin() == 19);
  CHECK(t.size() == 30);
  CHECK(t.expire(300) == 0);

  // Using an entry keeps it alive.
  CHECK(t.find(tcp_flow(20), 300) == 20);
  t.insert(tcp_flow(20), 20, 500);
  CHECK(t.expire(600) == 29);  // 21..49, used at 210..490; 20 was used at 500
  CHECK(t.size() == 1);
  CHECK(t.find(tcp_flow(20), 600) == 20);
  CHECK(t.expire(INT64_MAX) == 1);
  CHECK(t.size() == 0);

  // The callback may use the table: its locks are not held.
  t.insert(tcp_flow(1), 1, 0);
  CHECK(t.expire(1000, [&](const flow_key& k, int&) { CHECK_FALSE(t.erase(k)); }) == 1);

  // Values can be moved out in the callback.
  flow_table<std::unique_ptr<int>> u(opts(4, std::chrono::nanoseconds(1)));
  u.insert(tcp_flow(1), std::make_unique<int>(5), 0);
  std::unique_ptr<int> taken;
  u.expire(10, [&](const flow_key&, std::unique_ptr<int>& v) { taken = std::move(v); });
  REQUIRE(taken != nullptr);
  CHECK(*taken == 5);
}

TEST_CASE("flow_table: options are validated, and clamped when not") {
  CHECK(lbkit::validate(flow_table_options{}).has_value());
  auto o = flow_table_options{};
  o.capacity = 0;
  CHECK(lbkit::validate(o).error().message.find("capacity must be at least 1") !=
        std::string::npos);
  o = {};
  o.idle_timeout = std::chrono::nanoseconds(0);
  CHECK(lbkit::validate(o).error().message.find("idle_timeout must be positive, not 0 ns") !=
        std::string::npos);
  o.idle_timeout = std::chrono::seconds(-1);
  CHECK(lbkit::validate(o).error().code == errc::out_of_range);
  o = {};
  o.shards = 12;
  CHECK(lbkit::validate(o).error().message.find("power of two from 1 to 65536, not 12") !=
        std::string::npos);
  o.shards = 0;
  CHECK_FALSE(lbkit::validate(o).has_value());
  o.shards = 131072;
  CHECK_FALSE(lbkit::validate(o).has_value());
  o = {};
  o.shards = 1;
  o.capacity = std::size_t{1} << 40;
  CHECK(lbkit::validate(o).error().message.find("more than 2^31 entries a shard") !=
        std::string::npos);
  o.shards = 1024;
  CHECK(lbkit::validate(o).has_value());

  // Clamped: a capacity below the shard count lowers the shard count; every slot is usable.
  flow_table<int> small(opts(3, std::chrono::nanoseconds(0), 16));
  CHECK(small.capacity() == 3);
  CHECK(small.idle_timeout() == std::chrono::nanoseconds(1));
  flow_table<int> zero(opts(0, std::chrono::seconds(1), 12));
  CHECK(zero.capacity() == 1);
  zero.insert(tcp_flow(1), 1, 0);
  CHECK(zero.insert(tcp_flow(2), 2, 0).has_value());
  CHECK(zero.size() == 1);

  // Default options, random seed: works the same.
  flow_table<int> d;
  CHECK(d.capacity() == 65536);
  d.insert(tcp_flow(9), 9, 0);
  CHECK(d.find(tcp_flow(9), 0) == 9);
}

TEST_CASE("flow_table: four threads insert, find, erase and expire concurrently") {
  // Small and short-lived, so that eviction, expiry and index growth all happen under
  // contention. Values encode their key (value % keys == key), so any value find() returns
  // can be checked against the key it was looked up by.
  constexpr std::uint32_t keys = 512;
  constexpr std::size_t capacity = 256;
  flow_table<std::uint64_t> t(opts(capacity, std::chrono::nanoseconds(5000), 4));
  std::atomic<std::int64_t> clock{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, hits{0}, evicted{0}, expired{0}, over_capacity{0};

  const auto worker = [&](std::uint32_t id) {
    std::mt19937 rng(id);
    for (std::uint64_t n = 0; n < 30000; ++n) {
      const std::uint32_t k = rng() % keys;
      const std::int64_t now = clock.fetch_add(1, std::memory_order_relaxed);
      switch (rng() % 8) {
        case 0:
        case 1:
        case 2: {
          auto ev = t.insert(tcp_flow(k), (n * 4 + id) * keys + k, now);
          if (ev) {
            evicted.fetch_add(1, std::memory_order_relaxed);
            if (ev->second % keys != ev->first.client_port - 1024u) {
              bad.fetch_add(1, std::memory_order_relaxed);
            }
          }
          break;
        }
        case 7:
          t.erase(tcp_flow(k));
          break;
        default:
          if (const auto v = t.find(tcp_flow(k), now)) {
            hits.fetch_add(1, std::memory_order_relaxed);
            if (*v % keys != k) bad.fetch_add(1, std::memory_order_relaxed);
          }
      }
      if (n % 64 == 0 && t.size() > capacity) over_capacity.fetch_add(1);
    }
  };
  const auto expirer = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const std::int64_t now = clock.load(std::memory_order_relaxed);
      expired.fetch_add(t.expire(now, [&](const flow_key& k, std::uint64_t& v) {
        if (v % keys != k.client_port - 1024u) bad.fetch_add(1, std::memory_order_relaxed);
      }));
      if (t.size() > capacity) over_capacity.fetch_add(1);
      std::this_thread::yield();
    }
  };

  std::thread e(expirer);
  std::vector<std::thread> workers;
  for (std::uint32_t id = 0; id < 3; ++id) workers.emplace_back(worker, id);
  for (auto& w : workers) w.join();
  stop = true;
  e.join();

  CHECK(bad.load() == 0);
  CHECK(over_capacity.load() == 0);
  CHECK(hits.load() > 0);
  CHECK(evicted.load() + expired.load() > 0);
  CHECK(t.size() <= capacity);
  // Every survivor still maps to its own key.
  for (std::uint32_t k = 0; k < keys; ++k) {
    if (const auto v = t.find(tcp_flow(k), clock.load())) CHECK(*v % keys == k);
  }
}
