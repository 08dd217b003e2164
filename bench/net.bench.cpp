// SPDX-License-Identifier: MIT
// net/: longest-prefix match in cidr_table and connection tracking in flow_table, each read
// against a baseline measured in the same run (shared/PITFALLS.md: read ratios, not
// nanoseconds, on a shared 2-core machine).
//
//   baseline_hash_v4/v6     hash_value(ip_address): what a hash-based classifier pays per
//                           address, the unit cidr_find is compared with
//   cidr_find_v4/v6/N       cidr_table::find over N prefixes; 65 536 addresses cycled, half
//                           inside a stored prefix, half random; counter: hit share
//   baseline_flow_hash      hash_value(flow_key) of a TCP 5-tuple: the floor of a flow lookup
//   flow_find_hit/N         flow_table::find of present keys, N entries, 1 and 2 threads
//   flow_find_miss/N        flow_table::find of absent keys
//   flow_insert_evict/N     flow_table::insert of new keys into a full table of N: every
//                           insert evicts the least recently used entry
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <lbkit/net/cidr_table.hpp>
#include <lbkit/net/flow_table.hpp>

namespace {

template <class T>
inline void sink(T v) {
  asm volatile("" ::"r"(v) : "memory");
}

constexpr std::size_t address_count = 1 << 16;

lbkit::ip_address random_address(std::mt19937_64& rng, bool v6) {
  std::array<std::uint8_t, 16> b{};
  for (auto& x : b) x = static_cast<std::uint8_t>(rng());
  if (!v6) return lbkit::ip_address::v4({b[0], b[1], b[2], b[3]});
  b[0] = 0x20;  // global unicast, 2000::/3, as real IPv6 tables hold
  b[1] = static_cast<std::uint8_t>(b[1] & 0x0f);
  return lbkit::ip_address::v6(b);
}

// `a` with every bit past `len` cleared.
lbkit::ip_address masked(const lbkit::ip_address& a, int len) {
  std::array<std::uint8_t, 16> b{};
  const auto src = a.bytes();
  std::copy(src.begin(), src.end(), b.begin());
  const int width = a.is_v4() ? 32 : 128;
  for (int bit = len; bit < width; ++bit) {
    b[static_cast<std::size_t>(bit / 8)] &= static_cast<std::uint8_t>(~(0x80 >> (bit % 8)));
  }
  return a.is_v4() ? lbkit::ip_address::v4({b[0], b[1], b[2], b[3]}) : lbkit::ip_address::v6(b);
}

// A prefix length shaped like a routing table's: IPv4 mostly /16../24 (the /24 peak of the
// Internet table) with some /8../15 and hosts; IPv6 mostly /32../48 with /64s and hosts.
int random_length(std::mt19937_64& rng, bool v6) {
  const auto r = rng() % 100;
  if (!v6) {
    if (r < 10) return 8 + static_cast<int>(rng() % 8);
    if (r < 50) return 16 + static_cast<int>(rng() % 8);
    if (r < 90) return 24;
    return 25 + static_cast<int>(rng() % 8);
  }
  if (r < 10) return 19 + static_cast<int>(rng() % 13);
  if (r < 70) return 32 + static_cast<int>(rng() % 17);
  if (r < 95) return 64;
  return 128;
}

// A table of n prefixes of one family and addresses to look up: half inside a stored prefix,
// half random. Built once per (family, n) and shared.
struct cidr_fixture {
  lbkit::cidr_table<std::uint32_t> table;
  std::vector<lbkit::ip_address> addresses;
};

const cidr_fixture& cidr_fixture_of(bool v6, std::size_t n) {
  static std::mutex mu;
  static std::map<std::pair<bool, std::size_t>, std::unique_ptr<cidr_fixture>> made;
  std::lock_guard lock(mu);
  auto& f = made[{v6, n}];
  if (f) return *f;
  f = std::make_unique<cidr_fixture>();
  std::mt19937_64 rng(n * 2 + (v6 ? 1 : 0));
  std::vector<lbkit::ip_address> stored;
  while (f->table.size() < n) {
    const auto a = random_address(rng, v6);
    const int len = random_length(rng, v6);
    auto p = lbkit::cidr::make(masked(a, len), len);
    if (!p || !f->table.insert(*p, static_cast<std::uint32_t>(f->table.size()))) std::abort();
    stored.push_back(a);
  }
  for (std::size_t i = 0; i < address_count; ++i) {
    f->addresses.push_back(i % 2 == 0 ? stored[rng() % stored.size()] : random_address(rng, v6));
  }
  return *f;
}

void baseline_hash(benchmark::State& state, bool v6) {
  const auto& addrs = cidr_fixture_of(v6, 10).addresses;
  std::size_t i = 0;
  for (auto _ : state) {
    sink(lbkit::hash_value(addrs[i]));
    i = (i + 1) & (address_count - 1);
  }
}
void baseline_hash_v4(benchmark::State& state) { baseline_hash(state, false); }
void baseline_hash_v6(benchmark::State& state) { baseline_hash(state, true); }
BENCHMARK(baseline_hash_v4);
BENCHMARK(baseline_hash_v6);

void cidr_find(benchmark::State& state, bool v6) {
  const auto& f = cidr_fixture_of(v6, static_cast<std::size_t>(state.range(0)));
  std::size_t i = 0, hits = 0, n = 0;
  for (auto _ : state) {
    const std::uint32_t* v = f.table.find(f.addresses[i]);
    sink(v);
    hits += v != nullptr;
    ++n;
    i = (i + 1) & (address_count - 1);
  }
  state.counters["hit_share"] = static_cast<double>(hits) / static_cast<double>(n ? n : 1);
}
void cidr_find_v4(benchmark::State& state) { cidr_find(state, false); }
void cidr_find_v6(benchmark::State& state) { cidr_find(state, true); }
BENCHMARK(cidr_find_v4)->Arg(10)->Arg(1000)->Arg(100000);
BENCHMARK(cidr_find_v6)->Arg(10)->Arg(1000)->Arg(100000);

// Client 10.x.y.z:port to 192.0.2.1:443 over TCP, numbered by `i`.
lbkit::flow_key tcp_flow(std::uint64_t i) {
  const auto client =
      lbkit::ip_address::v4({10, static_cast<std::uint8_t>(i >> 16),
                             static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)});
  return lbkit::flow_key::for_five_tuple(
      lbkit::endpoint(client, static_cast<std::uint16_t>(1024 + (i >> 24))),
      lbkit::endpoint(lbkit::ip_address::v4({192, 0, 2, 1}), 443), IPPROTO_TCP);
}

constexpr std::int64_t bench_now = 1'000'000'000;

// A table holding keys 0..n-1 (capacity 2n, so none was evicted), shared by the threads.
lbkit::flow_table<std::uint32_t>& flow_table_of(std::size_t n) {
  static std::mutex mu;
  static std::map<std::size_t, std::unique_ptr<lbkit::flow_table<std::uint32_t>>> made;
  std::lock_guard lock(mu);
  auto& t = made[n];
  if (t) return *t;
  t = std::make_unique<lbkit::flow_table<std::uint32_t>>(lbkit::flow_table_options{
      .capacity = 2 * n, .idle_timeout = std::chrono::hours(1), .shards = 16, .seed = 7});
  for (std::size_t i = 0; i < n; ++i) {
    if (t->insert(tcp_flow(i), static_cast<std::uint32_t>(i), bench_now)) std::abort();
  }
  return *t;
}

void baseline_flow_hash(benchmark::State& state) {
  std::uint64_t i = 0;
  for (auto _ : state) sink(lbkit::hash_value(tcp_flow(i++ & 0xfffff), 7));
}
BENCHMARK(baseline_flow_hash);

void flow_find(benchmark::State& state, bool hit) {
  const auto n = static_cast<std::uint64_t>(state.range(0));
  auto& t = flow_table_of(n);
  // Keys in a scattered order; misses use key numbers past n.
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    const std::uint64_t k = (i++ * 40503) % n + (hit ? 0 : n);
    const auto v = t.find(tcp_flow(k), bench_now);
    sink(v ? *v : 0u);
  }
}
void flow_find_hit(benchmark::State& state) { flow_find(state, true); }
void flow_find_miss(benchmark::State& state) { flow_find(state, false); }
BENCHMARK(flow_find_hit)->Arg(1000)->Arg(100000)->Threads(1)->Threads(2);
BENCHMARK(flow_find_miss)->Arg(1000)->Arg(100000)->Threads(1)->Threads(2);

void flow_insert_evict(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  static std::mutex mu;
  static std::map<std::size_t, std::unique_ptr<lbkit::flow_table<std::uint32_t>>> made;
  lbkit::flow_table<std::uint32_t>* t;
  {
    std::lock_guard lock(mu);
    auto& slot = made[n];
    if (!slot) {
      slot = std::make_unique<lbkit::flow_table<std::uint32_t>>(lbkit::flow_table_options{
          .capacity = n, .idle_timeout = std::chrono::hours(1), .shards = 16, .seed = 7});
      for (std::size_t i = 0; i < 2 * n; ++i) {
        (void)slot->insert(tcp_flow(i), static_cast<std::uint32_t>(i), bench_now);
      }
    }
    t = slot.get();
  }
  // Fresh keys per thread and per run, far from the ones already in.
  static std::atomic<std::uint64_t> next{1u << 28};
  std::uint64_t k = next.fetch_add(1u << 24);
  std::size_t evicted = 0, inserts = 0;
  for (auto _ : state) {
    const auto ev = t->insert(tcp_flow(k), static_cast<std::uint32_t>(k), bench_now);
    ++k;
    evicted += ev.has_value();
    ++inserts;
  }
  state.counters["evicted_share"] =
      benchmark::Counter(static_cast<double>(evicted) / static_cast<double>(inserts ? inserts : 1),
                         benchmark::Counter::kAvgThreads);
}
BENCHMARK(flow_insert_evict)->Arg(1000)->Arg(100000)->Threads(1)->Threads(2);

}  // namespace
