// SPDX-License-Identifier: MIT
// Selection policies and the balancer: pick cost at N = 10 .. 10 000 on 1 and 2 threads, state
// build cost, and picks while the registry changes — each read against baselines measured in
// the same run (shared/PITFALLS.md: read ratios, not nanoseconds, on a shared 2-core machine).
//
//   baseline_fetch_add    one relaxed fetch_add on a shared counter (the RR target's unit)
//   baseline_hash_load    hash_u64 + one load from a 65 537-entry table (hash policies' unit)
//   state_pick<P>/N       the policy alone, picking from a fixed state
//   state_pick_lease<P>/N the same plus begin/end on the chosen backend, as a lease does
//   balancer_pick<P>/N    picker.pick() and lease release: version check, policy, lease
//   build<P>/N            building the per-version state; counters: the heap the state keeps
//                         (state_KiB, bytes_per_backend), counted by a replaced operator new
//   pick_during_updates   balancer_pick<round_robin>/100 while another thread changes the
//                         registry every millisecond
//   balancer_pick_ramping balancer_pick<weighted_random>/100 while one backend slow-starts
//   maglev_table/N        lbkit's Maglev build at M = 65 537, with the table's balance
//   maglev_table_paper/N  its baseline: the NSDI'16 populate loop as written, same table
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <benchmark/benchmark.h>

#include <lbkit/lbkit.hpp>

#include "reference/maglev_paper.hpp"

// Every allocation of this program is counted, so that a benchmark can tell how much heap a
// policy's state keeps: the live bytes after building it, less those before.
std::atomic<std::int64_t> g_heap_live{0};

void* operator new(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  g_heap_live.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)),
                        std::memory_order_relaxed);
  return p;
}
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  g_heap_live.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                        std::memory_order_relaxed);
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }

namespace {

template <class T>
inline void sink(T v) {
  asm volatile("" ::"r"(v) : "memory");
}

// A registry of n backends with weights 1..100 (fixed seed), built once per n and shared.
lbkit::backend_registry& registry_of(std::size_t n) {
  static std::mutex mu;
  static std::vector<std::pair<std::size_t, std::unique_ptr<lbkit::backend_registry>>> made;
  std::lock_guard lock(mu);
  for (auto& [k, r] : made) {
    if (k == n) return *r;
  }
  auto r = std::make_unique<lbkit::backend_registry>();
  std::mt19937_64 rng(n);
  lbkit::change_set cs;
  for (std::size_t i = 0; i < n; ++i) {
    const auto ip =
        lbkit::ip_address::v4({10, static_cast<std::uint8_t>(i >> 16),
                               static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)});
    cs.add(lbkit::backend("backend-" + std::to_string(i), lbkit::endpoint(ip, 80),
                          static_cast<std::uint32_t>(rng() % 100 + 1)));
  }
  if (!r->apply(cs)) std::abort();
  made.emplace_back(n, std::move(r));
  return *made.back().second;
}

// The weights a balancer would give a fully healthy set: the configured ones.
std::vector<std::uint32_t> weights_of(const lbkit::snapshot& s) {
  std::vector<std::uint32_t> w;
  for (const auto& m : s.members()) w.push_back(m.weight());
  return w;
}

std::atomic<std::uint64_t> g_counter{0};

void baseline_fetch_add(benchmark::State& state) {
  for (auto _ : state) sink(g_counter.fetch_add(1, std::memory_order_relaxed));
}
BENCHMARK(baseline_fetch_add)->Threads(1)->Threads(2);

void baseline_hash_load(benchmark::State& state) {
  static const std::vector<std::uint32_t> table = [] {
    std::vector<std::uint32_t> t(65537);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::uint32_t>(i % 1000);
    return t;
  }();
  std::uint64_t key = static_cast<std::uint64_t>(state.thread_index()) << 40;
  for (auto _ : state) {
    const std::uint64_t h = lbkit::hash_u64(key++);
    sink(table[static_cast<std::size_t>(((h >> 32) * table.size()) >> 32)]);
  }
}
BENCHMARK(baseline_hash_load)->Threads(1)->Threads(2);

// Picks from a fixed state of policy P over the benchmark's N backends; with `lease`, also
// begins and ends a request on the chosen backend, as a lease does.
template <class P, bool lease>
void fixed_state_pick(benchmark::State& state) {
  auto snap = registry_of(static_cast<std::size_t>(state.range(0))).current();
  const auto w = weights_of(*snap);
  const auto st = P{}.build(lbkit::candidate_set(snap->members(), w, 12345));
  lbkit::pick_rng rng(99 + static_cast<std::uint64_t>(state.thread_index()));
  typename P::local local{};
  std::uint64_t key = static_cast<std::uint64_t>(state.thread_index()) << 40;
  const auto ms = snap->members();
  for (auto _ : state) {
    const auto i = st.pick(lbkit::pick_context::for_key(key++), rng, local);
    if constexpr (lease) {
      lbkit::backend_state& s = ms[i].state();
      s.begin_request(lbkit::counting_of<P>);
      s.end_request(lbkit::outcome::success, {}, lbkit::counting_of<P>);
    } else {
      sink(i);
    }
  }
}
template <class P>
void state_pick(benchmark::State& state) {
  fixed_state_pick<P, false>(state);
}
template <class P>
void state_pick_lease(benchmark::State& state) {
  fixed_state_pick<P, true>(state);
}

template <class P>
void balancer_pick(benchmark::State& state) {
  static std::mutex mu;
  static std::map<std::int64_t, std::unique_ptr<lbkit::balancer<P>>> lbs;
  lbkit::balancer<P>* lb;
  {
    std::lock_guard lock(mu);
    auto& slot = lbs[state.range(0)];
    if (!slot) {
      slot = std::make_unique<lbkit::balancer<P>>(
          registry_of(static_cast<std::size_t>(state.range(0))), P{},
          lbkit::balancer_options{.seed = 12345});
    }
    lb = slot.get();
  }
  auto picker = lb->make_picker();
  std::uint64_t key = static_cast<std::uint64_t>(state.thread_index()) << 40;
  for (auto _ : state) {
    auto l = picker.pick(lbkit::pick_context::for_key(key++));
    sink(&l.backend());
  }
}

template <class P>
void build(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  auto snap = registry_of(n).current();
  const auto w = weights_of(*snap);
  for (auto _ : state) {
    auto st = P{}.build(lbkit::candidate_set(snap->members(), w, 12345));
    benchmark::DoNotOptimize(&st);
  }
  // Heap bytes the state keeps, measured by the counting operator new below.
  const std::int64_t before = g_heap_live.load();
  {
    const auto st = P{}.build(lbkit::candidate_set(snap->members(), w, 12345));
    const auto kept = static_cast<double>(g_heap_live.load() - before);
    state.counters["state_KiB"] = kept / 1024;
    state.counters["bytes_per_backend"] = kept / static_cast<double>(n);
  }
}

#define LBKIT_POLICY_BENCH(P)                                                    \
  BENCHMARK_TEMPLATE(state_pick, P)                                              \
      ->RangeMultiplier(10)                                                      \
      ->Range(10, 10000)                                                         \
      ->Threads(1)                                                               \
      ->Threads(2);                                                              \
  BENCHMARK_TEMPLATE(state_pick_lease, P)                                        \
      ->RangeMultiplier(10)                                                      \
      ->Range(10, 10000)                                                         \
      ->Threads(1)                                                               \
      ->Threads(2);                                                              \
  BENCHMARK_TEMPLATE(balancer_pick, P)                                           \
      ->RangeMultiplier(10)                                                      \
      ->Range(10, 10000)                                                         \
      ->Threads(1)                                                               \
      ->Threads(2);                                                              \
  BENCHMARK_TEMPLATE(build, P)->Arg(100)->Arg(500)->Arg(1000)->Arg(10000)->Unit( \
      benchmark::kMicrosecond)

LBKIT_POLICY_BENCH(lbkit::round_robin);
LBKIT_POLICY_BENCH(lbkit::weighted_round_robin);
LBKIT_POLICY_BENCH(lbkit::weighted_random);
LBKIT_POLICY_BENCH(lbkit::least_connections);
LBKIT_POLICY_BENCH(lbkit::power_of_two_choices);
LBKIT_POLICY_BENCH(lbkit::modulo_hash);
LBKIT_POLICY_BENCH(lbkit::ring_hash);
LBKIT_POLICY_BENCH(lbkit::maglev);
LBKIT_POLICY_BENCH(lbkit::jump_hash);
LBKIT_POLICY_BENCH(lbkit::least_response_time);
LBKIT_POLICY_BENCH(lbkit::anchor_hash);
using bounded_maglev = lbkit::bounded_load<lbkit::maglev>;
using bounded_ring = lbkit::bounded_load<lbkit::ring_hash>;
LBKIT_POLICY_BENCH(bounded_maglev);
LBKIT_POLICY_BENCH(bounded_ring);
BENCHMARK_TEMPLATE(state_pick, lbkit::rendezvous_hash)
    ->Arg(10)
    ->Arg(100)
    ->Arg(1000)
    ->Threads(1)
    ->Threads(2);
BENCHMARK_TEMPLATE(balancer_pick, lbkit::rendezvous_hash)->Arg(10)->Arg(100)->Arg(1000);

// Balance and memory of a Maglev table (M = 65537) over N equal members, exactly from the
// table's slot counts, and the time to build it.
std::shared_ptr<const lbkit::snapshot> equal_members(std::size_t n) {
  lbkit::backend_registry r;
  lbkit::change_set cs;
  for (std::size_t i = 0; i < n; ++i) {
    cs.add(
        lbkit::backend("backend-" + std::to_string(i), *lbkit::endpoint::parse("10.0.0.1:80"), 1));
  }
  if (!r.apply(cs)) std::abort();
  return r.current();
}

void maglev_table(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto snap = equal_members(n);
  const auto w = weights_of(*snap);
  lbkit::maglev::state st;
  for (auto _ : state) {
    st = lbkit::maglev{}.build(lbkit::candidate_set(snap->members(), w, 1));
    benchmark::DoNotOptimize(&st);
  }
  std::vector<double> count(n);
  for (std::uint32_t s = 0; s < st.size(); ++s) ++count[st.slot(s)];
  double mean = static_cast<double>(st.size()) / static_cast<double>(n), max = 0, var = 0;
  for (double c : count) max = std::max(max, c), var += (c - mean) * (c - mean);
  state.counters["max_over_mean"] = max / mean;
  state.counters["rel_stddev"] = std::sqrt(var / static_cast<double>(n)) / mean;
  state.counters["table_KiB"] = static_cast<double>(st.size()) * (n < 65536 ? 2 : 4) / 1024.0;
}
BENCHMARK(maglev_table)->Arg(100)->Arg(500)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

// The baseline of maglev_table's build time: the paper's populate loop as written
// (bench/reference/maglev_paper.hpp) over the same members and M, permutations included as in
// lbkit's build. tests/unit/hash_policies.test.cpp shows that both build the same table.
void maglev_table_paper(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto snap = equal_members(n);
  // M is a run-time value, as in lbkit's build (and Katran's, Envoy's): a constant would let
  // the compiler turn the paper's `mod M` into a multiplication that no real table size gets.
  std::uint32_t m = 65537;
  benchmark::DoNotOptimize(m);
  for (auto _ : state) {
    std::vector<lbkit::maglev::permutation> perm;
    perm.reserve(n);
    for (const auto& mem : snap->members())
      perm.push_back(lbkit::maglev::permutation_of(mem.id(), m));
    auto table = lbkit_bench::maglev_paper_populate(perm, m);
    benchmark::DoNotOptimize(table.data());
  }
}
BENCHMARK(maglev_table_paper)
    ->Arg(100)
    ->Arg(500)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);

// Disruption: the percentage of 1M keys (100k for rendezvous) that change backend when k of 500
// equal members leave, against the optimal k/500; and the share of moved keys that belonged to
// survivors.
template <class P>
void disruption(benchmark::State& state) {
  const int leave = static_cast<int>(state.range(0));
  // Rendezvous costs O(n) per pick: 100k keys keep its run short; the others use 1M.
  constexpr int n = 500, keys = std::is_same_v<P, lbkit::rendezvous_hash> ? 100'000 : 1'000'000;
  double moved_pct = 0, from_survivors_pct = 0;
  for (auto _ : state) {
    lbkit::backend_registry r;
    lbkit::change_set cs;
    for (int i = 0; i < n; ++i) {
      cs.add(lbkit::backend("backend-" + std::to_string(i), *lbkit::endpoint::parse("10.0.0.1:80"),
                            1));
    }
    if (!r.apply(cs)) std::abort();
    lbkit::balancer<P> lb(r, P{}, {.seed = 1});
    auto picker = lb.make_picker();
    std::vector<lbkit::backend_state*> before(keys);
    for (int k = 0; k < keys; ++k)
      before[k] = &picker.pick(lbkit::pick_context::for_key(k)).backend();
    std::vector<lbkit::backend_state*> gone;
    lbkit::change_set rm;
    for (int j = 0; j < leave; ++j) {
      const std::string id = "backend-" + std::to_string(j * 97 % n);
      gone.push_back(&r.current()->find(id)->state());
      rm.remove(id);
    }
    auto held = r.current();  // keeps the leaving states alive for the comparison
    if (!r.apply(rm)) std::abort();
    int moved = 0, from_survivors = 0;
    for (int k = 0; k < keys; ++k) {
      if (&picker.pick(lbkit::pick_context::for_key(k)).backend() == before[k]) continue;
      ++moved;
      from_survivors += std::find(gone.begin(), gone.end(), before[k]) == gone.end();
    }
    moved_pct = 100.0 * moved / keys;
    from_survivors_pct = 100.0 * from_survivors / keys;
  }
  state.counters["moved_pct"] = moved_pct;
  state.counters["optimal_pct"] = 100.0 * leave / n;
  state.counters["moved_from_survivors_pct"] = from_survivors_pct;
}
BENCHMARK_TEMPLATE(disruption, lbkit::maglev)
    ->DenseRange(1, 3)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(disruption, lbkit::ring_hash)
    ->DenseRange(1, 3)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(disruption, lbkit::anchor_hash)
    ->DenseRange(1, 3)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(disruption, lbkit::rendezvous_hash)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// The cost of slow start while a ramp is under way: balancer_pick<weighted_random>/100 with
// one of 101 backends ramping (a 1 h window, so it ramps throughout), to read against
// balancer_pick<weighted_random>/100.
void balancer_pick_ramping(benchmark::State& state) {
  static lbkit::backend_registry r;
  static std::unique_ptr<lbkit::balancer<lbkit::weighted_random>> lb;
  static std::once_flag once;
  std::call_once(once, [] {
    lbkit::change_set cs;
    for (int i = 0; i < 100; ++i) {
      cs.add(lbkit::backend("b" + std::to_string(i), *lbkit::endpoint::parse("10.0.0.1:80"), 1));
    }
    if (!r.apply(cs)) std::abort();
    lb = std::make_unique<lbkit::balancer<lbkit::weighted_random>>(
        r, lbkit::weighted_random{},
        lbkit::balancer_options{.seed = 1, .slow_start = {std::chrono::hours(1), 1.0, 10.0}});
    if (!r.add(lbkit::backend("new", *lbkit::endpoint::parse("10.0.0.2:80"), 1))) std::abort();
  });
  auto picker = lb->make_picker();
  for (auto _ : state) {
    auto l = picker.pick();
    sink(&l.backend());
  }
  state.counters["ramping"] = static_cast<double>(!lb->current_plan()->ramp_start.empty());
}
BENCHMARK(balancer_pick_ramping)->Threads(1)->Threads(2);

// Picks on this thread while another changes the registry 1 000 times a second.
void pick_during_updates(benchmark::State& state) {
  lbkit::backend_registry r;
  lbkit::change_set cs;
  for (int i = 0; i < 100; ++i) {
    cs.add(lbkit::backend("b" + std::to_string(i), *lbkit::endpoint::parse("10.0.0.1:80"), 1));
  }
  if (!r.apply(cs)) std::abort();
  lbkit::balancer<lbkit::round_robin> lb(r, {}, {.seed = 1});
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> changes{0};
  std::thread writer([&] {
    auto next = std::chrono::steady_clock::now();
    std::uint32_t w = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      next += std::chrono::milliseconds(1);
      std::this_thread::sleep_until(next);
      w = w % 10 + 1;
      if (!r.set_weight("b0", w)) std::abort();
      changes.fetch_add(1, std::memory_order_relaxed);
    }
  });
  auto picker = lb.make_picker();
  for (auto _ : state) {
    auto l = picker.pick();
    sink(&l.backend());
  }
  stop = true;
  writer.join();
  state.counters["registry_changes"] = static_cast<double>(changes.load());
}
BENCHMARK(pick_during_updates)->UseRealTime();

}  // namespace
