// SPDX-License-Identifier: MIT
// AnchorHash against Maglev: lookup cost at N = 10 .. 10 000 over the same keys, and the keys
// that move when 1 of 100 members leaves (shared/PITFALLS.md: read ratios, not nanoseconds,
// on a shared 2-core machine).
//
//   lookup<P>/N          state.lookup(h) alone over a fixed table of 2^16 key hashes
//   anchor_vs_maglev/n/capacity  both lookups over the same batch of keys, interleaved batch
//                        by batch so that both see the same machine; counters: ns per lookup
//                        of each, their ratio, the anchor size, and the mean hashes per lookup
//                        (the key's own plus one per removed bucket met) against 1 + ln(a/n)
//   anchor_vs_paper/n/a_over_n  lbkit's state.lookup(h) (the member index a pick uses)
//                        against the paper's GETBUCKET as written (Algorithm 3, five separate
//                        arrays: bench/reference/anchor_hash_paper.hpp, same hashes, same
//                        buckets) over the same batch of keys, interleaved batch by batch;
//                        n = 10, 100, 1000 working buckets in an anchor of a = n, 2n, 10n;
//                        counters: ns per lookup of each and lbkit's over the paper's
//   build<P>/N           a from-scratch build, and anchor_hash's incremental build when one
//                        member leaves (a copy of the anchor plus one REMOVE)
//   disruption<P>        % of 1M keys that change backend when 1 of 100 leaves, through a
//                        balancer (anchor_hash's incremental path), and the share of them
//                        that belonged to survivors
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <lbkit/balancer.hpp>
#include <lbkit/policy/anchor_hash.hpp>
#include <lbkit/policy/maglev.hpp>

#include "reference/anchor_hash_paper.hpp"

namespace {

template <class T>
inline void sink(T v) {
  asm volatile("" ::"r"(v) : "memory");
}

// n equal backends "backend-<i>".
std::unique_ptr<lbkit::backend_registry> registry_of(std::size_t n) {
  auto r = std::make_unique<lbkit::backend_registry>();
  lbkit::change_set cs;
  for (std::size_t i = 0; i < n; ++i) {
    cs.add(
        lbkit::backend("backend-" + std::to_string(i), *lbkit::endpoint::parse("10.0.0.1:80"), 1));
  }
  if (!r->apply(cs)) std::abort();
  return r;
}

std::vector<std::uint32_t> weights_of(const lbkit::snapshot& s) {
  std::vector<std::uint32_t> w;
  for (const auto& m : s.members()) w.push_back(m.weight());
  return w;
}

template <class P>
typename P::state state_of(const lbkit::snapshot& s) {
  const auto w = weights_of(s);
  return P{}.build(lbkit::candidate_set(s.members(), w, 1));
}

// The keys every lookup benchmark uses: hashes of 0 .. 2^16-1, as pick_context::for_key.
const std::vector<std::uint64_t>& key_hashes() {
  static const std::vector<std::uint64_t> keys = [] {
    std::vector<std::uint64_t> k(1u << 16);
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = lbkit::hash_u64(i);
    return k;
  }();
  return keys;
}

template <class P>
void lookup(benchmark::State& state) {
  const auto r = registry_of(static_cast<std::size_t>(state.range(0)));
  const auto st = state_of<P>(*r->current());
  const auto& keys = key_hashes();
  std::size_t i = 0;
  for (auto _ : state) {
    sink(st.lookup(keys[i]));
    i = (i + 1) & (keys.size() - 1);
  }
}
BENCHMARK_TEMPLATE(lookup, lbkit::anchor_hash)->RangeMultiplier(10)->Range(10, 10000);
BENCHMARK_TEMPLATE(lookup, lbkit::maglev)->RangeMultiplier(10)->Range(10, 10000);

void anchor_vs_maglev(benchmark::State& state) {
  using clock = std::chrono::steady_clock;
  const auto r = registry_of(static_cast<std::size_t>(state.range(0)));
  const auto w = weights_of(*r->current());
  const lbkit::anchor_hash policy =
      state.range(1) == 0 ? lbkit::anchor_hash{}
                          : lbkit::anchor_hash(static_cast<std::uint32_t>(state.range(1)));
  const auto anchor = policy.build(lbkit::candidate_set(r->current()->members(), w, 1));
  const auto mag = state_of<lbkit::maglev>(*r->current());
  const auto& keys = key_hashes();
  constexpr std::size_t batch = 4096;
  std::size_t at = 0;
  clock::duration anchor_time{}, maglev_time{};
  std::uint64_t lookups = 0;
  for (auto _ : state) {
    const std::uint64_t* k = keys.data() + at;
    const auto t0 = clock::now();
    for (std::size_t i = 0; i < batch; ++i) sink(anchor.lookup(k[i]));
    const auto t1 = clock::now();
    for (std::size_t i = 0; i < batch; ++i) sink(mag.lookup(k[i]));
    const auto t2 = clock::now();
    anchor_time += t1 - t0;
    maglev_time += t2 - t1;
    lookups += batch;
    at = (at + batch) & (keys.size() - 1);
  }
  const double a_ns = std::chrono::duration<double, std::nano>(anchor_time).count() / lookups;
  const double m_ns = std::chrono::duration<double, std::nano>(maglev_time).count() / lookups;
  state.counters["anchor_ns"] = a_ns;
  state.counters["maglev_ns"] = m_ns;
  state.counters["ratio"] = a_ns / m_ns;
  state.counters["anchor_size"] = anchor.capacity();
  // The key's own hash plus one bucket hash per removed bucket met; the paper expects about
  // 1 + ln(a/n).
  double hashes = 0;
  for (std::uint64_t h : keys) hashes += 1 + anchor.rehashes(h);
  state.counters["hashes_per_lookup"] = hashes / static_cast<double>(keys.size());
  state.counters["one_plus_ln_a_over_n"] =
      1 + std::log(static_cast<double>(anchor.capacity()) / static_cast<double>(state.range(0)));
}
// {N, anchor size}: 0 is the default capacity (1024, doubled as needed: 16 384 at N = 10 000);
// then an anchor of 2N, the size for a pool that may double.
BENCHMARK(anchor_vs_maglev)
    ->ArgNames({"n", "capacity"})
    ->Args({10, 0})
    ->Args({100, 0})
    ->Args({1000, 0})
    ->Args({10000, 0})
    ->Args({10, 20})
    ->Args({100, 200})
    ->Args({1000, 2000})
    ->Args({10000, 20000});

void anchor_vs_paper(benchmark::State& state) {
  using clock = std::chrono::steady_clock;
  const auto n = static_cast<std::uint32_t>(state.range(0));
  const auto a = n * static_cast<std::uint32_t>(state.range(1));
  const auto r = registry_of(n);
  const auto w = weights_of(*r->current());
  const auto lbkit_state =
      lbkit::anchor_hash(a).build(lbkit::candidate_set(r->current()->members(), w, 1));
  const lbkit_bench::anchor_hash_paper paper(a, n);
  const auto& keys = key_hashes();
  // The two must compute one mapping (tests/unit/anchor_hash.test.cpp), or the ratio means
  // nothing.
  if (lbkit_state.capacity() != a) return state.SkipWithError("anchor size differs");
  for (std::uint64_t h : keys) {
    if (lbkit_state.bucket(h) != paper.get_bucket(h))
      return state.SkipWithError("lbkit and the paper disagree on a key's bucket");
  }
  constexpr std::size_t batch = 4096;
  std::size_t at = 0;
  bool lbkit_first = true;  // alternates, so that neither always runs on a warmer cache
  clock::duration lbkit_time{}, paper_time{};
  std::uint64_t lookups = 0;
  for (auto _ : state) {
    const std::uint64_t* k = keys.data() + at;
    auto run_lbkit = [&] {
      const auto t0 = clock::now();
      for (std::size_t i = 0; i < batch; ++i) sink(lbkit_state.lookup(k[i]));
      lbkit_time += clock::now() - t0;
    };
    auto run_paper = [&] {
      const auto t0 = clock::now();
      for (std::size_t i = 0; i < batch; ++i) sink(paper.get_bucket(k[i]));
      paper_time += clock::now() - t0;
    };
    if (lbkit_first) {
      run_lbkit();
      run_paper();
    } else {
      run_paper();
      run_lbkit();
    }
    lbkit_first = !lbkit_first;
    lookups += batch;
    at = (at + batch) & (keys.size() - 1);
  }
  const double l_ns = std::chrono::duration<double, std::nano>(lbkit_time).count() / lookups;
  const double p_ns = std::chrono::duration<double, std::nano>(paper_time).count() / lookups;
  state.counters["lbkit_ns"] = l_ns;
  state.counters["paper_ns"] = p_ns;
  state.counters["ratio"] = l_ns / p_ns;
}
// {n, a / n}.
BENCHMARK(anchor_vs_paper)->ArgNames({"n", "a_over_n"})->ArgsProduct({{10, 100, 1000}, {1, 2, 10}});

template <class P>
void build(benchmark::State& state) {
  const auto r = registry_of(static_cast<std::size_t>(state.range(0)));
  const auto snap = r->current();
  const auto w = weights_of(*snap);
  for (auto _ : state) {
    auto st = P{}.build(lbkit::candidate_set(snap->members(), w, 1));
    benchmark::DoNotOptimize(&st);
  }
}
BENCHMARK_TEMPLATE(build, lbkit::anchor_hash)
    ->Arg(100)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(build, lbkit::maglev)
    ->Arg(100)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);

void build_incremental(benchmark::State& state) {
  const auto r = registry_of(static_cast<std::size_t>(state.range(0)));
  const auto full = r->current();
  const auto previous = state_of<lbkit::anchor_hash>(*full);
  if (!r->remove("backend-0")) std::abort();
  const auto snap = r->current();
  const auto w = weights_of(*snap);
  for (auto _ : state) {
    auto st = lbkit::anchor_hash{}.build(lbkit::candidate_set(snap->members(), w, 1), previous);
    benchmark::DoNotOptimize(&st);
  }
}
BENCHMARK(build_incremental)->Arg(100)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

template <class P>
void disruption(benchmark::State& state) {
  constexpr int n = 100, keys = 1'000'000;
  double moved_pct = 0, from_survivors_pct = 0;
  for (auto _ : state) {
    auto r = registry_of(n);
    lbkit::balancer<P> lb(*r, P{}, {.seed = 1});
    auto picker = lb.make_picker();
    std::vector<const lbkit::backend_state*> before(keys);
    for (int k = 0; k < keys; ++k)
      before[k] = &picker.pick(lbkit::pick_context::for_key(k)).backend();
    const auto held = r->current();  // keeps the leaving state alive for the comparison
    const lbkit::backend_state* gone = &held->find("backend-42")->state();
    if (!r->remove("backend-42")) std::abort();
    int moved = 0, from_survivors = 0;
    for (int k = 0; k < keys; ++k) {
      if (&picker.pick(lbkit::pick_context::for_key(k)).backend() == before[k]) continue;
      ++moved;
      from_survivors += before[k] != gone;
    }
    moved_pct = 100.0 * moved / keys;
    from_survivors_pct = 100.0 * from_survivors / keys;
  }
  state.counters["moved_pct"] = moved_pct;
  state.counters["optimal_pct"] = 1.0;
  state.counters["moved_from_survivors_pct"] = from_survivors_pct;
}
BENCHMARK_TEMPLATE(disruption, lbkit::anchor_hash)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(disruption, lbkit::maglev)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
