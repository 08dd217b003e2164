// SPDX-License-Identifier: MIT
// Registry stress: writers add, remove, re-weight, drain and mark health thousands of times
// while readers follow snapshots through snapshot_cache, hold backends across their removal
// and count requests on them. Run it under TSan (the tsan preset) to check the memory model.
//
// Checks: every version is published once and in order; snapshots never show duplicated or
// unsorted members; the final membership equals the writers' own record of what they did
// (no lost and no phantom backends); failed changes change nothing; and counters on
// backends that were removed while held match, exactly, what the readers did to them.
#include <atomic>
#include <cstdint>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_registry.hpp>

using namespace lbkit;

namespace {

constexpr int writers = 2;
constexpr int readers = 2;
constexpr int ids_per_writer = 48;
constexpr int ops_per_writer = 4000;

struct model_entry {
  std::uint32_t weight;
  bool draining;
  health h;
};

// What one writer did to its own ids (no other writer touches them).
struct writer_record {
  std::map<std::string, model_entry> members;
  std::uint64_t published_changes = 0;  // successful calls that must have published a version
  std::uint64_t rejected = 0;
};

void run_writer(backend_registry& reg, int w, writer_record& rec) {
  std::mt19937_64 rng(0x5eed0000u + static_cast<unsigned>(w));
  auto pick_id = [&] {
    return "w" + std::to_string(w) + "-" + std::to_string(rng() % ids_per_writer);
  };
  auto addr = [&](std::uint64_t i) {
    return endpoint(ip_address::v4({10, static_cast<std::uint8_t>(w), 0,
                                    static_cast<std::uint8_t>(i % 250 + 1)}),
                    static_cast<std::uint16_t>(1000 + i % 60000));
  };
  for (int i = 0; i < ops_per_writer; ++i) {
    const std::string id = pick_id();
    auto it = rec.members.find(id);
    const bool present = it != rec.members.end();
    const auto kind = rng() % 8;
    if (kind == 0 && rng() % 4 == 0) {
      // A batch: add or remove this id, then re-weight another present one.
      change_set cs;
      std::string other;
      for (auto& [k, v] : rec.members) {
        if (k != id) other = k;
      }
      if (present)
        cs.remove(id);
      else
        cs.add(backend(id, addr(rng()), 1));
      const auto w2 = static_cast<std::uint32_t>(rng() % 100);
      if (!other.empty()) cs.set_weight(other, w2);
      REQUIRE(reg.apply(cs));
      if (present)
        rec.members.erase(it);
      else
        rec.members[id] = {1, false, health::healthy};
      if (!other.empty()) rec.members[other].weight = w2;
      ++rec.published_changes;
      continue;
    }
    if (!present) {
      if (kind == 1) {  // an invalid change mixed into a batch: nothing must happen
        auto res = reg.apply(change_set().add(backend(id, addr(i), 1)).remove(id + "-missing"));
        REQUIRE(!res);
        ++rec.rejected;
        continue;
      }
      const auto h = rng() % 2 ? health::healthy : health::unhealthy;
      const auto wt = static_cast<std::uint32_t>(rng() % 1000);
      REQUIRE(reg.add(backend(id, addr(rng()), wt), h));
      rec.members[id] = {wt, false, h};
      ++rec.published_changes;
      continue;
    }
    model_entry& e = it->second;
    switch (kind) {
      case 1: {
        auto res = reg.add(backend(id, addr(i), 1));  // duplicate
        REQUIRE(!res);
        CHECK(res.error().code == errc::already_exists);
        ++rec.rejected;
        break;
      }
      case 2:
      case 3: {
        REQUIRE(reg.remove(id));
        rec.members.erase(it);
        ++rec.published_changes;
        break;
      }
      case 4: {
        const auto wt = static_cast<std::uint32_t>(rng() % (max_weight + 1));
        REQUIRE(reg.set_weight(id, wt));
        if (wt != e.weight) ++rec.published_changes;
        e.weight = wt;
        break;
      }
      case 5: {
        const bool d = rng() % 2;
        REQUIRE(reg.drain(id, d));
        if (d != e.draining) ++rec.published_changes;
        e.draining = d;
        break;
      }
      default: {
        const auto h = rng() % 2 ? health::healthy : health::unhealthy;
        REQUIRE(reg.set_health(id, h));
        if (h != e.h) ++rec.published_changes;
        e.h = h;
        break;
      }
    }
  }
}

// A reader's holds on backends: shared state plus how many requests it began on each.
struct reader_record {
  std::unordered_map<backend_state*, std::pair<state_ref, std::uint64_t>> began;
  std::uint64_t snapshots_seen = 0;
  bool ok = true;
};

// Counts down `started` once it has loaded its first snapshot (before any writer starts),
// and reads once more after `stop`: so it sees at least the first version and the last one,
// whatever the scheduler does (a reader that got no CPU while the writers ran saw only one
// version, and failed the check below, in a release build where they finish in 40 ms).
void run_reader(const backend_registry& reg, int r, const std::atomic<bool>& stop,
                std::latch& started, reader_record& rec) {
  std::mt19937_64 rng(0xabcd0000u + static_cast<unsigned>(r));
  snapshot_cache cache(reg);
  std::vector<member> held;  // requests in flight, possibly on removed backends
  std::optional<std::uint64_t> last_version;
  for (bool last = false; !last;) {
    last = stop.load(std::memory_order_acquire);
    const snapshot& s = cache.get();
    if (last_version && s.version() < *last_version) rec.ok = false;  // versions never go back
    if (s.version() != last_version) ++rec.snapshots_seen;
    if (!last_version) started.count_down();
    last_version = s.version();
    const auto ms = s.members();
    for (std::size_t i = 1; i < ms.size(); ++i) {
      if (ms[i - 1].id().compare(ms[i].id()) >= 0) rec.ok = false;  // sorted, no duplicates
    }
    if (!ms.empty()) {
      const member& m = ms[rng() % ms.size()];
      m.state().begin_request();
      auto& slot = rec.began[&m.state()];
      if (!slot.first) slot.first = m.state_handle();
      ++slot.second;
      held.push_back(m);
    }
    if (held.size() > 64 || (!held.empty() && rng() % 3 == 0)) {
      const std::size_t k = rng() % held.size();
      if (held[k].id().empty()) rec.ok = false;  // config must still be readable
      held[k].state().end_request(outcome::success);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }
  for (auto& m : held) m.state().end_request(outcome::success);
}

}  // namespace

TEST_CASE("registry under concurrent writers and readers") {
  backend_registry reg;

  std::atomic<std::uint64_t> notified_last{0};
  std::atomic<bool> notify_ok{true};
  auto sub = reg.subscribe([&](const snapshot& s) {
    // Called under the writer mutex: versions arrive consecutively, and the snapshot is the
    // one readers can load right now.
    const auto last = notified_last.load(std::memory_order_relaxed);
    if (s.version() != last + 1 && !(last == 0 && s.version() == 0)) notify_ok = false;
    if (reg.version() != s.version() || reg.current()->version() != s.version()) notify_ok = false;
    notified_last.store(s.version(), std::memory_order_relaxed);
  });

  std::atomic<bool> stop{false};
  std::vector<writer_record> wrec(writers);
  std::vector<reader_record> rrec(readers);
  std::vector<std::thread> rs, ws;
  std::latch readers_started(readers);
  for (int r = 0; r < readers; ++r) {
    rs.emplace_back(
        [&, r] { run_reader(reg, r, stop, readers_started, rrec[static_cast<std::size_t>(r)]); });
  }
  readers_started.wait();  // every reader holds the first version before any change
  for (int w = 0; w < writers; ++w) {
    ws.emplace_back([&, w] { run_writer(reg, w, wrec[static_cast<std::size_t>(w)]); });
  }
  for (auto& t : ws) t.join();
  stop.store(true, std::memory_order_release);
  for (auto& t : rs) t.join();

  // Versions: exactly one per change that changed something.
  std::uint64_t expected_versions = 0, rejected = 0;
  for (const auto& w : wrec) {
    expected_versions += w.published_changes;
    rejected += w.rejected;
  }
  CHECK(rejected > 0);
  CHECK(reg.version() == expected_versions);
  CHECK(notify_ok.load());
  CHECK(notified_last.load() == expected_versions);

  // Membership: exactly what the writers' records say.
  auto final_snapshot = reg.current();
  std::map<std::string, model_entry> expected;
  for (const auto& w : wrec) expected.insert(w.members.begin(), w.members.end());
  REQUIRE(final_snapshot->size() == expected.size());
  for (const auto& [id, e] : expected) {
    const member* m = final_snapshot->find(id);
    REQUIRE(m != nullptr);
    CHECK(m->weight() == e.weight);
    CHECK(m->draining() == e.draining);
    CHECK(m->state().current_health() == e.h);
  }

  // Live counters, including those of backends removed while readers held them.
  std::unordered_map<backend_state*, std::pair<state_ref, std::uint64_t>> total;
  for (const auto& r : rrec) {
    CHECK(r.ok);
    CHECK(r.snapshots_seen > 1);  // the first version and the last, at least
    for (const auto& [p, v] : r.began) {
      auto& t = total[p];
      t.first = v.first;
      t.second += v.second;
    }
  }
  std::size_t removed_states = 0;
  for (const auto& [p, v] : total) {
    CHECK(p->active() == 0);
    CHECK(p->requests() == v.second);
    CHECK(p->successes() == v.second);
    bool still_member = false;
    for (const auto& m : final_snapshot->members()) still_member |= &m.state() == p;
    removed_states += !still_member;
  }
  MESSAGE("versions: " << reg.version() << ", rejected changes: " << rejected
                       << ", backends held across removal: " << removed_states);
  CHECK(removed_states > 0);
}
