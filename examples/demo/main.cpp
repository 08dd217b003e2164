// SPDX-License-Identifier: MIT
// lbkit demo: worker threads pick backends through a balancer while a control thread changes
// the registry under them (re-weight, drain, mark unhealthy, add, remove). Each worker owns a
// picker, which follows the registry with one atomic load per pick; every pick is a lease
// that counts the request on the backend's live state and reports its outcome. After every
// phase the control thread prints where that phase's requests went. Then consistent hashing:
// clients stick to backends, and when one backend fails only its own clients move. Last,
// least response time: backends answer at different (simulated) speeds, and the faster ones
// get more of the traffic.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <lbkit/lbkit.hpp>

namespace {

lbkit::backend make(const char* id, const char* addr, std::uint32_t weight) {
  auto ep = lbkit::endpoint::parse(addr);
  if (!ep) {
    std::fprintf(stderr, "demo: %s\n", ep.error().message.c_str());
    std::exit(1);
  }
  return lbkit::backend(id, *ep, weight);
}

void check(const lbkit::result<void>& r) {
  if (!r) {
    std::fprintf(stderr, "demo: %s\n", r.error().message.c_str());
    std::exit(1);
  }
}

constexpr int workers = 2;
constexpr int picks_per_phase = 200'000;

// What the control thread and the workers share: the phase to run (-1: stop), how many
// workers have finished it, and the picks that found no backend available.
struct phase_sync {
  std::atomic<int> phase{0};
  std::atomic<int> done_in_phase{0};
  std::atomic<std::uint64_t> no_backend{0};
};

// Bad input is refused with a reason, and the registry stays as it was.
void show_refusals(lbkit::backend_registry& registry) {
  for (auto r : {registry.add(make("web-1", "10.0.0.9:8080", 1)),
                 registry.set_weight("web-2", 5'000'000), registry.remove("web-9")}) {
    std::printf("refused: %s\n", r.error().message.c_str());
  }
  auto bad = lbkit::endpoint::parse("[fe80::1%eth0]:80");
  std::printf("refused: %s\n\n", bad.error().message.c_str());
}

// One worker thread: waits for each new phase and makes its share of the phase's picks,
// until the phase is -1.
void pick_in_phases(const lbkit::balancer<lbkit::weighted_round_robin>& balancer,
                    phase_sync& sync) {
  auto picker = balancer.make_picker();
  int my_phase = 0;
  while (true) {
    while (sync.phase.load(std::memory_order_acquire) == my_phase) std::this_thread::yield();
    my_phase = sync.phase.load(std::memory_order_acquire);
    if (my_phase < 0) return;
    for (int i = 0; i < picks_per_phase / workers; ++i) {
      lbkit::lease l = picker.pick();
      if (!l) {
        sync.no_backend.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      l.report(lbkit::outcome::success, std::chrono::microseconds(1));
    }
    sync.done_in_phase.fetch_add(1, std::memory_order_acq_rel);
  }
}

// Runs phase n on the workers and prints where its requests went. `before` holds each
// backend's request count at the end of the previous phase, and is brought up to date.
void run_phase(const lbkit::backend_registry& registry, phase_sync& sync,
               std::map<std::string, std::uint64_t>& before, int n, const char* what) {
  auto s = registry.current();
  for (const auto& m : s->members()) before.try_emplace(m.id(), 0);
  sync.done_in_phase.store(0);
  sync.phase.store(n, std::memory_order_release);
  while (sync.done_in_phase.load(std::memory_order_acquire) < workers) std::this_thread::yield();
  std::printf("phase %d (registry version %llu): %s\n", n,
              static_cast<unsigned long long>(s->version()), what);
  for (const auto& m : s->members()) {
    const auto total = m.state().requests();
    const auto share = 100.0 * static_cast<double>(total - before[m.id()]) / picks_per_phase;
    std::printf("  %-6s %-22s weight %-2u %-9s %-9s %5.1f%%\n", m.id().c_str(),
                m.address().to_string().c_str(), m.weight(),
                lbkit::to_string(m.state().current_health()).data(), m.draining() ? "draining" : "",
                share);
    before[m.id()] = total;
  }
  std::printf("\n");
}

// The worker threads pick through `balancer` while this thread changes the registry
// between phases.
void show_registry_changes(lbkit::backend_registry& registry,
                           const lbkit::balancer<lbkit::weighted_round_robin>& balancer) {
  phase_sync sync;
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] { pick_in_phases(balancer, sync); });
  }

  std::map<std::string, std::uint64_t> before;
  run_phase(registry, sync, before, 1, "weights 1:1:2:4");
  check(registry.set_weight("web-1", 4));
  run_phase(registry, sync, before, 2, "web-1 re-weighted to 4");
  check(registry.drain("web-4"));
  run_phase(registry, sync, before, 3, "web-4 draining");
  check(registry.apply(lbkit::change_set()
                           .set_health("web-2", lbkit::health::unhealthy)
                           .add(make("web-5", "10.0.0.5:8080", 2))
                           .remove("web-4")));
  run_phase(registry, sync, before, 4, "one batch: web-2 unhealthy, web-5 added, web-4 removed");

  sync.phase.store(-1, std::memory_order_release);
  for (auto& t : threads) t.join();
  std::printf("picks with no backend available: %llu\n\n",
              static_cast<unsigned long long>(sync.no_backend.load()));
}

// Consistent hashing: each client address sticks to one backend; when a backend fails,
// only its clients move, and they come back when it recovers.
void show_consistent_hashing(lbkit::backend_registry& registry) {
  lbkit::balancer<lbkit::maglev> sticky(registry);
  auto picker = sticky.make_picker();
  auto owners = [&] {
    std::vector<std::string> out;
    for (int c = 1; c <= 8; ++c) {
      const auto client = lbkit::ip_address::v4({198, 51, 100, static_cast<std::uint8_t>(c)});
      out.push_back(picker.pick(lbkit::pick_context::for_client(client)).id());
    }
    return out;
  };
  const auto first = owners();
  const std::string failing = first[0];
  check(registry.set_health(failing, lbkit::health::unhealthy));
  const auto during = owners();
  check(registry.set_health(failing, lbkit::health::healthy));
  const auto after = owners();
  std::printf("maglev, clients 198.51.100.1-8 (%s fails, then recovers):\n", failing.c_str());
  for (std::size_t c = 0; c < first.size(); ++c) {
    std::printf("  198.51.100.%zu  %-6s -> %-6s -> %-6s%s\n", c + 1, first[c].c_str(),
                during[c].c_str(), after[c].c_str(), first[c] == during[c] ? "" : "  (moved)");
  }
}

// Least response time (peak EWMA x requests in flight, two random choices): each lease
// reports the latency its backend would have answered in. Keeping 8 requests in flight at
// a time, the policy sends most of them to the fast backends.
void show_least_response_time() {
  lbkit::backend_registry pool;
  const std::map<std::string, std::chrono::microseconds> latency = {
      {"api-1", std::chrono::microseconds(500)},
      {"api-2", std::chrono::microseconds(1000)},
      {"api-3", std::chrono::microseconds(5000)}};
  for (const auto& [id, lat] : latency) check(pool.add(make(id.c_str(), "10.1.0.1:80", 1)));
  lbkit::balancer<lbkit::least_response_time> fastest(pool);
  auto lrt = fastest.make_picker();
  std::map<std::string, int> picked;
  std::vector<lbkit::lease> in_flight;
  constexpr int requests = 100'000;
  for (int i = 0; i < requests; ++i) {
    if (in_flight.size() == 8) {  // the oldest request answers
      auto& done = in_flight.front();
      done.report(lbkit::outcome::success, latency.at(done.id()));
      in_flight.erase(in_flight.begin());
    }
    in_flight.push_back(lrt.pick());
    ++picked[in_flight.back().id()];
  }
  std::printf("\nleast_response_time, 8 requests in flight:\n");
  for (const auto& [id, lat] : latency) {
    std::printf("  %-6s answers in %5lld us  %5.1f%% of requests\n", id.c_str(),
                static_cast<long long>(lat.count()), 100.0 * picked[id] / requests);
  }
}

}  // namespace

int main() {
  lbkit::backend_registry registry;
  check(registry.apply(lbkit::change_set()
                           .add(make("web-1", "10.0.0.1:8080", 1))
                           .add(make("web-2", "10.0.0.2:8080", 1))
                           .add(make("web-3", "10.0.0.3:8080", 2))
                           .add(make("web-4", "[2001:db8::4]:8080", 4))));
  show_refusals(registry);

  // Smooth weighted round robin; any policy in <lbkit/policy/> plugs in the same way.
  lbkit::balancer<lbkit::weighted_round_robin> balancer(registry);
  show_registry_changes(registry, balancer);
  show_consistent_hashing(registry);
  show_least_response_time();
  return 0;
}
