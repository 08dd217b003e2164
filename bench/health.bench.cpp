// SPDX-License-Identifier: MIT
// health_checker at scale: can one checker keep 1 000 backends on a 1 s interval with real
// TCP probes, and what does it cost? Counters, per run of `seconds` of wall time:
//   probes_per_s    probes completed per second (the target is backends / interval)
//   keep_up         probes_per_s / (backends / interval): 1.0 means on schedule
//   cpu_cores       process CPU time / wall time while it ran (the listener included)
// The backends all point at one loopback listener that accepts and closes, so each probe is
// a real handshake. Read against the expected rate, not in absolute terms.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <benchmark/benchmark.h>

#include <lbkit/health/health_checker.hpp>
#include <lbkit/health/tcp_connect_probe.hpp>

#include "../tests/support/loopback.hpp"

namespace {

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void checker_keeps_up(benchmark::State& state) {
  const int backends = static_cast<int>(state.range(0));
  constexpr auto interval = std::chrono::seconds(1);
  constexpr auto seconds = 4;
  lbkit::test::loopback_server listener(
      [](int c, const lbkit::test::loopback_server&) { ::close(c); });
  lbkit::backend_registry registry;
  lbkit::change_set cs;
  for (int i = 0; i < backends; ++i) {
    cs.add(lbkit::backend("b" + std::to_string(i), listener.address()));
  }
  if (!registry.apply(cs)) std::abort();
  double rate = 0, cores = 0;
  for (auto _ : state) {
    lbkit::health_checker_options o;
    o.check.interval = interval;
    o.check.timeout = std::chrono::milliseconds(500);
    o.concurrency = 4;
    o.seed = 7;
    lbkit::health_checker checker(registry, lbkit::tcp_connect_probe{}, o);
    // The first interval spreads the first probes; measure the steady state after it.
    std::this_thread::sleep_for(interval);
    const auto done0 = checker.probes_done();
    const double cpu0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rate = static_cast<double>(checker.probes_done() - done0) / wall;
    cores = (cpu_seconds() - cpu0) / wall;
    checker.stop();
  }
  const double expected = backends / std::chrono::duration<double>(interval).count();
  state.counters["probes_per_s"] = rate;
  state.counters["keep_up"] = rate / expected;
  state.counters["cpu_cores"] = cores;
}
BENCHMARK(checker_keeps_up)->Arg(1000)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace
