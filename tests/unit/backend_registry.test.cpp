// SPDX-License-Identifier: MIT
// backend_registry: membership changes, validation, batches, snapshots, subscriptions and
// the snapshot cache, on one thread (tests/stress covers concurrency), and the registry's count
// of requests in flight, also from a few threads.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_registry.hpp>

using lbkit::backend;
using lbkit::backend_registry;
using lbkit::change_set;
using lbkit::errc;
using lbkit::health;

namespace {

backend make(std::string id, std::string addr = "10.0.0.1:80", std::uint32_t weight = 1) {
  return backend(std::move(id), *lbkit::endpoint::parse(addr), weight);
}

std::vector<std::string> ids(const lbkit::snapshot& s) {
  std::vector<std::string> out;
  for (const auto& m : s.members()) out.push_back(m.id());
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("a new registry holds an empty snapshot of version 0") {
  backend_registry r;
  CHECK(r.version() == 0);
  auto s = r.current();
  REQUIRE(s != nullptr);
  CHECK(s->version() == 0);
  CHECK(s->empty());
  CHECK(s->find("x") == nullptr);
}

TEST_CASE("members are kept sorted by id whatever the order of adds") {
  backend_registry r;
  REQUIRE(r.add(make("web-3")));
  REQUIRE(r.add(make("web-1")));
  REQUIRE(r.add(make("web-2")));
  auto s = r.current();
  CHECK(s->version() == 3);
  CHECK(r.version() == 3);
  CHECK(ids(*s) == std::vector<std::string>{"web-1", "web-2", "web-3"});
  const auto* m = s->find("web-2");
  REQUIRE(m != nullptr);
  CHECK(m->id() == "web-2");
  CHECK(m->weight() == 1);
  CHECK(!m->draining());
  CHECK(m->state().current_health() == health::healthy);
  CHECK(s->find("web-4") == nullptr);
  CHECK(s->find("") == nullptr);
}

TEST_CASE("bad operations return a clear error and change nothing") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  const auto before = r.current();

  SUBCASE("duplicate id") {
    auto e = r.add(make("a", "10.0.0.2:80"));
    REQUIRE(!e);
    CHECK(e.error().code == errc::already_exists);
    CHECK(contains(e.error().message, "'a' already exists"));
  }
  SUBCASE("invalid backend") {
    auto e = r.add(make("b", "10.0.0.2:80", lbkit::max_weight + 1));
    REQUIRE(!e);
    CHECK(e.error().code == errc::out_of_range);
    CHECK(contains(e.error().message, "weight"));
  }
  SUBCASE("unknown ids") {
    for (auto res : {r.remove("zz"), r.set_weight("zz", 2), r.drain("zz"),
                     r.set_health("zz", health::unhealthy), r.update(make("zz"))}) {
      REQUIRE(!res);
      CHECK(res.error().code == errc::not_found);
      CHECK(contains(res.error().message, "'zz'"));
    }
  }
  SUBCASE("weight out of range") {
    auto e = r.set_weight("a", lbkit::max_weight + 1);
    REQUIRE(!e);
    CHECK(e.error().code == errc::out_of_range);
  }
  SUBCASE("address change through update") {
    auto e = r.update(make("a", "10.0.0.9:80"));
    REQUIRE(!e);
    CHECK(e.error().code == errc::failed_precondition);
    CHECK(contains(e.error().message, "remove and add"));
  }
  CHECK(r.version() == before->version());
  CHECK(r.current() == before);
  CHECK(before->find("a")->weight() == 1);
}

TEST_CASE("weight, update and drain change config but keep the live state") {
  backend_registry r;
  REQUIRE(r.add(make("a", "10.0.0.1:80", 5)));
  auto v1 = r.current();
  auto* state = &v1->find("a")->state();
  state->begin_request();

  REQUIRE(r.set_weight("a", 7));
  auto v2 = r.current();
  CHECK(v2->version() == 2);
  CHECK(v2->find("a")->weight() == 7);
  CHECK(&v2->find("a")->state() == state);
  CHECK(v1->find("a")->weight() == 5);  // published snapshots never change

  backend b = make("a", "10.0.0.1:80", 7);
  b.zone = "eu-west-1a";
  b.labels["canary"] = "true";
  REQUIRE(r.update(b));
  auto v3 = r.current();
  CHECK(v3->find("a")->config().zone == "eu-west-1a");
  CHECK(v3->find("a")->config().labels.at("canary") == "true");
  CHECK(&v3->find("a")->state() == state);

  REQUIRE(r.drain("a"));
  CHECK(r.current()->find("a")->draining());
  CHECK(&r.current()->find("a")->state() == state);
  REQUIRE(r.drain("a", false));
  CHECK(!r.current()->find("a")->draining());
  CHECK(r.version() == 5);
  CHECK(state->totals().in_flight() == 1);
  state->end_request(lbkit::outcome::success);
}

TEST_CASE("changes that change nothing publish nothing") {
  backend_registry r;
  REQUIRE(r.add(make("a", "10.0.0.1:80", 3)));
  const auto v = r.version();
  CHECK(r.set_weight("a", 3));
  CHECK(r.update(make("a", "10.0.0.1:80", 3)));
  CHECK(r.drain("a", false));
  CHECK(r.set_health("a", health::healthy));
  CHECK(r.apply(change_set()));
  CHECK(r.version() == v);
}

TEST_CASE("health lives in the shared state and each change publishes a version") {
  backend_registry r;
  REQUIRE(r.add(make("a"), health::unhealthy));
  auto v1 = r.current();
  CHECK(v1->find("a")->state().current_health() == health::unhealthy);
  REQUIRE(r.set_health("a", health::healthy));
  CHECK(r.version() == v1->version() + 1);
  // Live state is shared, so the older snapshot sees the new health too.
  CHECK(v1->find("a")->state().current_health() == health::healthy);
}

TEST_CASE("a batch applies in order, all or nothing, as one version") {
  backend_registry r;
  REQUIRE(r.add(make("a")));

  SUBCASE("success") {
    auto res = r.apply(change_set()
                           .add(make("b", "10.0.0.2:80"))
                           .set_weight("b", 9)
                           .remove("a")
                           .set_health("b", health::unhealthy)
                           .drain("b"));
    REQUIRE(res);
    auto s = r.current();
    CHECK(s->version() == 2);
    CHECK(ids(*s) == std::vector<std::string>{"b"});
    CHECK(s->find("b")->weight() == 9);
    CHECK(s->find("b")->draining());
    CHECK(s->find("b")->state().current_health() == health::unhealthy);
  }
  SUBCASE("failure in the middle") {
    auto a_state = r.current()->find("a")->state_handle();
    auto res = r.apply(change_set()
                           .set_health("a", health::unhealthy)
                           .add(make("b", "10.0.0.2:80"))
                           .remove("nope")
                           .set_weight("a", 4));
    REQUIRE(!res);
    CHECK(res.error().code == errc::not_found);
    CHECK(contains(res.error().message, "change 3 of 4"));
    CHECK(contains(res.error().message, "'nope'"));
    CHECK(r.version() == 1);
    CHECK(ids(*r.current()) == std::vector<std::string>{"a"});
    // The health write of the rejected batch never happened.
    CHECK(a_state->current_health() == health::healthy);
  }
  SUBCASE("an add of an id the same batch removed is a fresh backend") {
    auto old_state = r.current()->find("a")->state_handle();
    REQUIRE(r.apply(change_set().remove("a").add(make("a", "10.0.0.3:80"))));
    CHECK(r.current()->find("a")->address().to_string() == "10.0.0.3:80");
    CHECK(r.current()->find("a")->state_handle() != old_state);
  }
}

TEST_CASE("the state of a removed backend outlives it and counts leases correctly") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  lbkit::member held = r.current()->members()[0];  // as a lease would hold it
  held.state().begin_request();
  REQUIRE(r.remove("a"));
  CHECK(r.current()->empty());
  // Nothing else holds the backend now; the copy is all that keeps it alive (ASan would
  // report a use after free below otherwise).
  CHECK(held.id() == "a");
  CHECK(held.state().id() == "a");
  held.state().end_request(lbkit::outcome::failure);
  CHECK(held.state().totals().in_flight() == 0);
  CHECK(held.state().requests() == 1);
  CHECK(held.state().failures() == 1);
}

TEST_CASE("subscribers see the current snapshot, then every version once and in order") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  std::vector<std::uint64_t> seen;
  auto sub = r.subscribe([&](const lbkit::snapshot& s) { seen.push_back(s.version()); });
  CHECK(sub.active());
  CHECK(seen == std::vector<std::uint64_t>{1});

  REQUIRE(r.add(make("b", "10.0.0.2:80")));
  CHECK(!r.add(make("b", "10.0.0.2:80")));  // failed: no notification
  CHECK(r.set_weight("a", 1));              // no-op: no notification
  REQUIRE(r.apply(change_set().set_weight("a", 2).set_weight("b", 3)));
  CHECK(seen == std::vector<std::uint64_t>{1, 2, 3});

  sub.reset();
  CHECK(!sub.active());
  REQUIRE(r.remove("a"));
  CHECK(seen.size() == 3);
}

TEST_CASE("a change callback cannot write to its own registry") {
  backend_registry r;
  std::vector<lbkit::errc> errors;
  auto sub = r.subscribe([&](const lbkit::snapshot&) {
    auto res = r.add(make("x"));
    if (!res) errors.push_back(res.error().code);
  });
  REQUIRE(errors.size() == 1);  // from the initial call
  CHECK(errors[0] == errc::failed_precondition);
  REQUIRE(r.add(make("a")));
  CHECK(errors.size() == 2);
  CHECK(r.current()->find("x") == nullptr);
}

TEST_CASE("a subscription may outlive its registry and may be moved") {
  lbkit::subscription outer;
  int calls = 0;
  {
    backend_registry r;
    auto sub = r.subscribe([&](const lbkit::snapshot&) { ++calls; });
    outer = std::move(sub);
    CHECK(!sub.active());  // NOLINT(bugprone-use-after-move): moved-from state is specified
    CHECK(outer.active());
    REQUIRE(r.add(make("a")));
    CHECK(calls == 2);
  }
  CHECK(!outer.active());
  outer.reset();  // no registry left: nothing to do, and no crash
}

TEST_CASE("snapshot_cache reloads only when the version moves") {
  backend_registry r;
  lbkit::snapshot_cache cache(r);
  const lbkit::snapshot* first = &cache.get();
  CHECK(first->version() == 0);
  CHECK(&cache.get() == first);  // same object while nothing changed
  REQUIRE(r.add(make("a")));
  const lbkit::snapshot& second = cache.get();
  CHECK(second.version() == 1);
  CHECK(second.find("a") != nullptr);
  CHECK(cache.cached().get() == &second);
  CHECK(&cache.get() == &second);
}

TEST_CASE("two registries given the same membership in different orders agree") {
  backend_registry x, y;
  const char* names[] = {"d", "a", "c", "b"};
  for (int i = 0; i < 4; ++i) REQUIRE(x.add(make(names[i], "10.0.0.1:8" + std::to_string(i))));
  for (int i = 3; i >= 0; --i) REQUIRE(y.add(make(names[i], "10.0.0.1:8" + std::to_string(i))));
  auto sx = x.current(), sy = y.current();
  REQUIRE(sx->size() == sy->size());
  for (std::size_t i = 0; i < sx->size(); ++i) {
    CHECK(sx->members()[i].config() == sy->members()[i].config());
  }
}

TEST_CASE("a request in flight keeps the state alive after every owner is gone") {
  backend_registry r;
  REQUIRE(r.add(make("a", "10.0.0.7:81")));
  lbkit::backend_state* s = &r.current()->find("a")->state();
  const std::size_t waiting = lbkit::backend_state::reclaim_retired();  // earlier tests' states
  s->begin_request();                                                   // as a lease does
  REQUIRE(r.remove("a"));
  // No snapshot or member holds "a" any more: only the request does. It is retired, and
  // reclaiming keeps it while the request is open.
  CHECK(lbkit::backend_state::reclaim_retired() == waiting + 1);
  CHECK(s->totals().in_flight() == 1);
  CHECK(s->id() == "a");
  CHECK(s->address().to_string() == "10.0.0.7:81");
  s->end_request(lbkit::outcome::success);
  CHECK(s->totals().in_flight() == 0);
  // Now it is freed (ASan would report a use after free of s from here on, LeakSanitizer a
  // leak if it never were).
  CHECK(lbkit::backend_state::reclaim_retired() == waiting);
}

TEST_CASE("a removed backend with nothing in flight is freed at once") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  const std::size_t waiting = lbkit::backend_state::reclaim_retired();
  r.current()->find("a")->state().begin_request();
  r.current()->find("a")->state().end_request(lbkit::outcome::success);
  REQUIRE(r.remove("a"));
  CHECK(lbkit::backend_state::reclaim_retired() == waiting);
}

TEST_CASE("the registry's total in flight counts in_total requests until they end") {
  // The registry gives each backend it creates its one total; any member's
  // backend_state::total_in_flight() reads it. Only requests begun with in_total count (as a
  // bounded-load balancer begins them), removed backends' included, until they end.
  constexpr lbkit::request_counting counted{.in_flight = true, .in_total = true};
  backend_registry r;
  // 10 backends: more than the 8 shards of the count, so some share one.
  change_set cs;
  for (int i = 0; i < 10; ++i) {
    cs.add(make("n" + std::to_string(i), "10.0.0.1:" + std::to_string(8000 + i)));
  }
  REQUIRE(r.apply(cs));
  auto state = [&r](int i) -> lbkit::backend_state& {
    return r.current()->find("n" + std::to_string(i))->state();
  };
  auto total = [&] { return state(0).total_in_flight(); };
  auto sum_active = [&r] {
    std::int64_t t = 0;
    for (const auto& m : r.current()->members()) t += m.state().active();
    return t;
  };
  CHECK(total() == 0);

  // i + 1 requests on backend i: 55 in all, and every member reads the same total.
  std::int64_t expected = 0;
  for (int i = 0; i < 10; ++i) {
    for (int j = 0; j <= i; ++j) {
      state(i).begin_request(counted);
      ++expected;
      CHECK(total() == expected);
    }
  }
  CHECK(total() == 55);
  CHECK(sum_active() == 55);
  for (int i = 0; i < 10; ++i) CHECK(state(i).total_in_flight() == 55);

  state(0).end_request(lbkit::outcome::success, {}, counted);
  state(9).end_request(lbkit::outcome::failure, {}, counted);
  state(9).end_request(lbkit::outcome::none, {}, counted);
  CHECK(total() == 52);
  CHECK(sum_active() == 52);

  // Requests begun without in_total are in the backend's load, not in the total; without
  // in_flight, in its totals only.
  state(4).begin_request({.in_flight = true});
  CHECK(state(4).active() == 5 + 1);
  CHECK(total() == 52);
  state(4).end_request(lbkit::outcome::success, {}, {.in_flight = true});
  CHECK(total() == 52);
  state(4).begin_request();
  CHECK(state(4).active() == 5);
  CHECK(state(4).totals().in_flight() == 5 + 1);
  state(4).end_request(lbkit::outcome::success);
  CHECK(state(4).totals().in_flight() == 5);

  // Draining and health do not change what is in flight.
  REQUIRE(r.drain("n5"));
  REQUIRE(r.set_health("n6", health::unhealthy));
  CHECK(total() == 52);

  // A standalone state has no total; another registry's backends count in their own.
  auto lone = lbkit::backend_state::create("lone", *lbkit::endpoint::parse("10.0.0.2:80"));
  lone->begin_request(counted);
  CHECK(lone->total_in_flight() == 0);
  backend_registry other;
  REQUIRE(other.add(make("x")));
  lbkit::backend_state& x = other.current()->find("x")->state();
  x.begin_request(counted);
  CHECK(total() == 52);
  CHECK(x.total_in_flight() == 1);
  x.end_request(lbkit::outcome::none, {}, counted);
  lone->end_request(lbkit::outcome::none, {}, counted);
  CHECK(x.total_in_flight() == 0);

  // Removing n3 with its 4 requests: they stay counted until they end, though no member has
  // them any more; after the last end, reclaiming frees the state (ASan checks both).
  const std::size_t waiting = lbkit::backend_state::reclaim_retired();
  lbkit::backend_state* removed = &state(3);
  REQUIRE(r.remove("n3"));
  CHECK(r.current()->find("n3") == nullptr);
  CHECK(total() == 52);
  CHECK(sum_active() == 48);
  for (int j = 0; j < 3; ++j) removed->end_request(lbkit::outcome::success, {}, counted);
  CHECK(total() == 49);
  // A backend added again under the same id is a new one, with nothing in flight, counting
  // in the same total.
  REQUIRE(r.add(make("n3", "10.0.0.1:8003")));
  CHECK(state(3).active() == 0);
  state(3).begin_request(counted);
  CHECK(total() == 50);
  CHECK(state(3).total_in_flight() == 50);
  CHECK(lbkit::backend_state::reclaim_retired() == waiting + 1);
  removed->end_request(lbkit::outcome::none, {}, counted);  // the old n3's last request
  CHECK(lbkit::backend_state::reclaim_retired() == waiting);
  CHECK(total() == 49);
  CHECK(sum_active() == 49);

  // Ending everything brings it to 0.
  for (const auto& m : r.current()->members()) {
    while (m.state().active() > 0) m.state().end_request(lbkit::outcome::none, {}, counted);
  }
  CHECK(total() == 0);
  CHECK(sum_active() == 0);

  // A few threads, each beginning and ending requests on its own backend, at most 3 at a time
  // each; a reader meanwhile sees a total within [0, 3 x threads] (every shard is exact at
  // some instant of the read, and each thread's begin precedes its end), and 0 at the end.
  constexpr int threads = 4, rounds = 20'000;
  backend_registry mt;
  change_set mcs;
  for (int t = 0; t < threads; ++t) {
    mcs.add(make("t" + std::to_string(t), "10.0.1.1:" + std::to_string(9000 + t)));
  }
  REQUIRE(mt.apply(mcs));
  const auto snap = mt.current();  // keeps the states alive while the threads use them
  const lbkit::backend_state& any = snap->members()[0].state();
  std::atomic<bool> done{false};
  std::int64_t lowest = 0, highest = 0;
  std::thread reader([&] {
    while (!done.load(std::memory_order_acquire)) {
      const std::int64_t v = any.total_in_flight();
      lowest = std::min(lowest, v);
      highest = std::max(highest, v);
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&snap, t, counted] {
      lbkit::backend_state& s = snap->members()[static_cast<std::size_t>(t)].state();
      for (int k = 0; k < rounds; ++k) {
        const int held = 1 + k % 3;
        for (int j = 0; j < held; ++j) s.begin_request(counted);
        for (int j = 0; j < held; ++j) s.end_request(lbkit::outcome::success, {}, counted);
      }
    });
  }
  for (auto& w : workers) w.join();
  done.store(true, std::memory_order_release);
  reader.join();
  CHECK(lowest >= 0);
  CHECK(highest <= 3 * threads);
  CHECK(any.total_in_flight() == 0);
  for (const auto& m : snap->members()) {
    CHECK(m.state().active() == 0);
    // 20 000 rounds = 3 x 6666 + 2: 6666 each of 1, 2 and 3 requests, then 1 and 2 once more.
    CHECK(m.state().successes() == 6666 * 6 + 1 + 2);
  }
}
