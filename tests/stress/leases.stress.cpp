// SPDX-License-Identifier: MIT
// Lease accounting under concurrency: picker threads take leases, hold some, end some
// themselves and hand others to a finisher thread that ends them later, while a writer
// removes and re-adds the backends under them and a reader sums their counters. Run it under
// TSan (the tsan preset) to check the memory model of the per-thread shards and of retiring.
//
// There are more picker threads than thread slots, so some share the shared shard.
// Checks: every state's totals equal, exactly, what the threads did to it (begun, ended by
// outcome, latency sums), for states still owned and for states removed while leases were
// open; active() counts exactly the in-flight requests of a policy that reads it, and none
// of one that does not; reads during the run never see more ended than begun; and every
// removed state is freed once its last lease has ended (none is left retired).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/lbkit.hpp>

using namespace lbkit;

namespace {

constexpr int backends = 16;
constexpr int picks_per_thread = 20'000;

// What the threads did to one state, keyed by its serial (an address may be reused).
struct tally {
  std::uint64_t started = 0;
  std::uint64_t ended[5] = {};
  std::uint64_t latency_ns = 0;
};
using tallies = std::map<std::uint64_t, tally>;

void merge(tallies& into, const tallies& from) {
  for (const auto& [serial, t] : from) {
    auto& x = into[serial];
    x.started += t.started;
    for (int k = 0; k < 5; ++k) x.ended[k] += t.ended[k];
    x.latency_ns += t.latency_ns;
  }
}

backend make(int i) {
  return backend("b" + std::to_string(i),
                 endpoint(ip_address::v4({10, 0, 0, static_cast<std::uint8_t>(i + 1)}), 80));
}

// Leases handed from the pickers to the finisher.
struct handoff {
  std::mutex mu;
  std::deque<lease> queue;
  std::atomic<bool> done{false};
};

void end_one(lease& l, std::mt19937_64& rng, tallies& t) {
  const auto o = static_cast<outcome>(rng() % 5);
  const auto latency = std::chrono::nanoseconds(rng() % 3 == 0 ? 0 : 1 + rng() % 1000);
  auto& x = t[l.backend().serial()];
  ++x.ended[static_cast<std::size_t>(o)];
  if (o != outcome::none && latency.count() > 0) x.latency_ns += latency.count();
  if (o == outcome::none) {
    l.release();
  } else {
    l.report(o, latency);
  }
}

template <class Policy>
void run() {
  backend_registry reg;
  change_set cs;
  for (int i = 0; i < backends; ++i) cs.add(make(i));
  REQUIRE(reg.apply(cs));
  const std::size_t retired_before = backend_state::reclaim_retired();
  balancer<Policy> lb(reg, Policy{}, {.seed = 7});

  // Half the states are watched: a state_ref keeps them owned to the end, so that their
  // totals can be read then. The others are freed once removed and their leases ended.
  std::mutex watched_mu;
  std::vector<state_ref> watched;
  auto watch = [&](int i) {
    if (i % 2 != 0) return;
    const member* m = reg.current()->find("b" + std::to_string(i));
    if (m == nullptr) return;
    std::lock_guard lock(watched_mu);
    watched.push_back(m->state_handle());
  };
  for (int i = 0; i < backends; ++i) watch(i);

  const int pickers = static_cast<int>(detail::thread_slot::count()) + 2;
  std::vector<tallies> picked(static_cast<std::size_t>(pickers));
  tallies finished;
  handoff h;
  std::atomic<int> pickers_left{pickers};
  std::atomic<bool> read_ok{true}, write_ok{true};

  std::vector<std::thread> threads;
  for (int p = 0; p < pickers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937_64 rng(1000 + static_cast<unsigned>(p));
      auto picker = lb.make_picker();
      auto& t = picked[static_cast<std::size_t>(p)];
      std::vector<lease> held;
      for (int k = 0; k < picks_per_thread; ++k) {
        lease l = picker.pick(pick_context::for_key(rng()));
        if (!l) continue;  // every backend may be removed for a moment
        ++t[l.backend().serial()].started;
        switch (rng() % 4) {
          case 0:
            end_one(l, rng, t);
            break;
          case 1: {
            std::lock_guard lock(h.mu);
            h.queue.push_back(std::move(l));
            break;
          }
          default:
            held.push_back(std::move(l));
            if (held.size() > 8) {
              end_one(held.front(), rng, t);
              held.erase(held.begin());
            }
        }
      }
      for (auto& l : held) end_one(l, rng, t);
      pickers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  threads.emplace_back([&] {  // the finisher: ends leases begun on other threads
    std::mt19937_64 rng(77);
    while (true) {
      lease l;
      {
        std::lock_guard lock(h.mu);
        if (!h.queue.empty()) {
          l = std::move(h.queue.front());
          h.queue.pop_front();
        }
      }
      if (l) {
        end_one(l, rng, finished);
      } else if (pickers_left.load(std::memory_order_acquire) == 0) {
        std::lock_guard lock(h.mu);
        if (h.queue.empty()) break;
      } else {
        std::this_thread::yield();
      }
    }
  });
  std::thread writer([&] {  // removes and re-adds backends while leases are open on them
    std::mt19937_64 rng(5);
    while (pickers_left.load(std::memory_order_acquire) > 0) {
      const int i = static_cast<int>(rng() % backends);
      if (reg.current()->find("b" + std::to_string(i)) != nullptr) {
        if (!reg.remove("b" + std::to_string(i))) write_ok = false;
      } else {
        if (!reg.add(make(i))) write_ok = false;
        watch(i);
      }
      std::this_thread::yield();
    }
  });
  std::thread reader([&] {  // sums counters while they move
    while (pickers_left.load(std::memory_order_acquire) > 0) {
      const auto snap = reg.current();
      for (const auto& m : snap->members()) {
        const auto t = m.state().totals();
        if (t.finished() > t.started || m.state().active() < 0) read_ok = false;
        if (!in_flight_counting_policy<Policy> && m.state().active() != 0) read_ok = false;
      }
    }
  });
  for (auto& t : threads) t.join();
  writer.join();
  reader.join();
  CHECK(read_ok.load());
  CHECK(write_ok.load());

  tallies all = finished;
  for (const auto& t : picked) merge(all, t);
  std::uint64_t started = 0;
  for (const auto& [serial, t] : all) started += t.started;
  CHECK(started > picks_per_thread);  // most picks found a backend

  // Watched states: totals exactly as counted.
  std::size_t removed_watched = 0;
  for (const auto& ref : watched) {
    const auto it = all.find(ref->serial());
    const tally expect = it == all.end() ? tally{} : it->second;
    const auto got = ref->totals();
    CAPTURE(ref->id());
    CHECK(got.started == expect.started);
    for (int k = 0; k < 5; ++k) CHECK(got.ended[k] == expect.ended[k]);
    CHECK(got.latency_ns == expect.latency_ns);
    CHECK(got.in_flight() == 0);
    CHECK(ref->active() == 0);
    removed_watched += reg.current()->find(ref->id()) == nullptr ||
                       &reg.current()->find(ref->id())->state() != ref.get();
  }
  CHECK(removed_watched > 0);
  watched.clear();  // the removed ones go now, with nothing in flight: freed at once
  // Unwatched removed states: all their leases ended, so reclaiming frees every one.
  CHECK(backend_state::reclaim_retired() == retired_before);
  MESSAGE("pickers: " << pickers << ", states: " << all.size() << ", picks: " << started
                      << ", registry versions: " << reg.version());
}

}  // namespace

TEST_CASE("leases across threads while their backends are removed: round_robin") {
  run<round_robin>();  // counts no in-flight: active() stays 0
}

TEST_CASE("leases across threads while their backends are removed: least_connections") {
  run<least_connections>();  // counts in flight exactly
}
