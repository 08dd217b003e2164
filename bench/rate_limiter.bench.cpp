// SPDX-License-Identifier: MIT
// net/rate_limiter.hpp: the cost of a rate-limit decision, read against a baseline measured
// in the same run (shared/PITFALLS.md: read ratios, not nanoseconds, on a shared 2-core
// machine). Keys are 32-character API keys, looked up in a scattered order; time is
// synthetic, so no clock read is measured.
//
//   baseline_hash_key/N     hash_bytes of the key: what any keyed lookup pays first, and the
//                           memory traffic of reading N keys in that order
//   acquire_hit/N           rate_limiter::acquire of present keys, allowed (the bucket never
//                           runs dry), N keys, 1 and 2 threads
//   acquire_refused/N       the same with every bucket empty: adds wait_time()
//   token_bucket_try_acquire      one bucket alone: the arithmetic of a decision
//   token_bucket_wait_time        one empty bucket's exact wait
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <lbkit/net/rate_limiter.hpp>

namespace {

template <class T>
inline void sink(T v) {
  asm volatile("" ::"r"(v) : "memory");
}

// N API keys ("k-" and 30 hex digits) and a limiter holding them all (capacity 2N, so none
// was evicted), one of each kind: never dry, or always dry. Built once per (N, dry), shared.
struct fixture {
  std::vector<std::string> keys;
  std::unique_ptr<lbkit::rate_limiter> limiter;
};

constexpr std::int64_t bench_now = 1'000'000'000;

const fixture& fixture_of(std::size_t n, bool dry) {
  static std::mutex mu;
  static std::map<std::pair<std::size_t, bool>, std::unique_ptr<fixture>> made;
  std::lock_guard lock(mu);
  auto& f = made[{n, dry}];
  if (f) return *f;
  f = std::make_unique<fixture>();
  std::mt19937_64 rng(n);
  static constexpr char hex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < n; ++i) {
    std::string k = "k-";
    for (int j = 0; j < 30; ++j) k += hex[rng() & 15];
    f->keys.push_back(std::move(k));
  }
  lbkit::rate_limiter_options o;
  // Never dry: a billion tokens a second. Dry: one token an hour, spent at once.
  o.bucket =
      dry ? lbkit::token_bucket_options{1.0 / 3600, 1} : lbkit::token_bucket_options{1e9, 1e9};
  o.capacity = 2 * n;
  o.shards = 16;
  o.seed = 7;
  f->limiter = std::make_unique<lbkit::rate_limiter>(o);
  for (const auto& k : f->keys) (void)f->limiter->acquire(k, bench_now);
  return *f;
}

// Key i of the scattered order that every benchmark here follows.
std::size_t scattered(std::uint64_t i, std::size_t n) { return (i * 40503) % n; }

void baseline_hash_key(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& keys = fixture_of(n, false).keys;
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * 7919;
  for (auto _ : state) sink(lbkit::hash_bytes(keys[scattered(i++, n)], 7));
}
BENCHMARK(baseline_hash_key)->Arg(1000)->Arg(100000)->Threads(1)->Threads(2);

void acquire(benchmark::State& state, bool dry) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& f = fixture_of(n, dry);
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * 7919;
  std::int64_t now = bench_now;
  std::size_t allowed = 0, calls = 0;
  for (auto _ : state) {
    const auto d = f.limiter->acquire(f.keys[scattered(i++, n)], ++now);
    sink(d.retry_after.count());
    allowed += d.allowed;
    ++calls;
  }
  state.counters["allowed_share"] =
      benchmark::Counter(static_cast<double>(allowed) / static_cast<double>(calls ? calls : 1),
                         benchmark::Counter::kAvgThreads);
}
void acquire_hit(benchmark::State& state) { acquire(state, false); }
void acquire_refused(benchmark::State& state) { acquire(state, true); }
BENCHMARK(acquire_hit)->Arg(1000)->Arg(100000)->Threads(1)->Threads(2);
BENCHMARK(acquire_refused)->Arg(1000)->Arg(100000)->Threads(1)->Threads(2);

void token_bucket_try_acquire(benchmark::State& state) {
  lbkit::token_bucket b({1e9, 1e9});
  std::int64_t now = bench_now;
  for (auto _ : state) sink(b.try_acquire(++now));
}
BENCHMARK(token_bucket_try_acquire);

void token_bucket_wait_time(benchmark::State& state) {
  lbkit::token_bucket b({0.7, 5});
  (void)b.try_acquire(bench_now, 5);
  std::int64_t now = bench_now;
  for (auto _ : state) sink(b.wait_time(++now).count());
}
BENCHMARK(token_bucket_wait_time);

}  // namespace
