// SPDX-License-Identifier: MIT
// What the registry costs a reader and a writer.
//
// Readers: snapshot_cache::get() against its baseline, one atomic load of a version counter,
// and against registry::current() (a short lock and a shared_ptr copy), on 1 and 2 threads.
// docs/architecture.md property 1 ("Snapshots") says the pick path may afford the first and not the
// second; the ratio of cache_get to baseline_atomic_load is the figure to read. Writers: one
// copy-on-write change (set_weight) at N backends, which is O(N).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <benchmark/benchmark.h>

#include <lbkit/backend_registry.hpp>

namespace {

// Keeps `v` alive without letting the compiler drop the load that produced it
// (benchmark::DoNotOptimize lets g++ 12 delete such loads: shared/PITFALLS.md).
template <class T>
inline void sink(T v) {
  asm volatile("" ::"r"(v) : "memory");
}

lbkit::change_set adds(std::size_t n) {
  lbkit::change_set cs;
  for (std::size_t i = 0; i < n; ++i) {
    const auto ip =
        lbkit::ip_address::v4({10, static_cast<std::uint8_t>(i >> 16),
                               static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)});
    cs.add(lbkit::backend("b" + std::to_string(i), lbkit::endpoint(ip, 80), 1));
  }
  return cs;
}

// A registry of 16 backends shared by every reader benchmark (thread-safe static init).
lbkit::backend_registry& shared_registry() {
  static lbkit::backend_registry& reg = []() -> lbkit::backend_registry& {
    static lbkit::backend_registry r;
    if (!r.apply(adds(16))) std::abort();
    return r;
  }();
  return reg;
}

std::atomic<std::uint64_t> g_version{1};

void baseline_atomic_load(benchmark::State& state) {
  for (auto _ : state) sink(g_version.load(std::memory_order_acquire));
}
BENCHMARK(baseline_atomic_load)->Threads(1)->Threads(2);

void cache_get(benchmark::State& state) {
  lbkit::snapshot_cache cache(shared_registry());
  for (auto _ : state) sink(cache.get().size());
}
BENCHMARK(cache_get)->Threads(1)->Threads(2);

void registry_current(benchmark::State& state) {
  auto& reg = shared_registry();
  for (auto _ : state) sink(reg.current()->size());
}
BENCHMARK(registry_current)->Threads(1)->Threads(2);

void apply_set_weight(benchmark::State& state) {
  lbkit::backend_registry reg;
  const auto n = static_cast<std::size_t>(state.range(0));
  if (!reg.apply(adds(n))) std::abort();
  std::uint32_t w = 1;
  for (auto _ : state) {
    w = w % 100 + 1;
    if (!reg.set_weight("b0", w)) std::abort();
  }
  state.counters["per_backend"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate |
                                                     benchmark::Counter::kInvert);
}
BENCHMARK(apply_set_weight)->Arg(100)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
