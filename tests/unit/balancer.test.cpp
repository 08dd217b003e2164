// SPDX-License-Identifier: MIT
// balancer: per-version plans, eligibility and panic decisions, leases, and a user policy.
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/lbkit.hpp>

using namespace lbkit;
using namespace std::chrono_literals;

namespace {

backend make(std::string id, std::uint32_t weight = 1) {
  return backend(std::move(id), *endpoint::parse("10.0.0.1:80"), weight);
}

// A user-written policy: the eligible member with the lowest index, and a count of builds.
// It is all a policy needs to be: a build and a noexcept pick.
struct first_eligible {
  struct local {};
  std::shared_ptr<std::atomic<int>> builds = std::make_shared<std::atomic<int>>(0);

  struct state {
    std::uint32_t first = no_pick;
    std::uint32_t pick(const pick_context&, pick_rng&, local&) const noexcept { return first; }
  };
  state build(const candidate_set& c) const {
    builds->fetch_add(1);
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (c.eligible(i)) return {i};
    }
    return {};
  }
};
static_assert(selection_policy<first_eligible>);

// Not a policy: its pick may throw.
struct throwing_pick {
  struct local {};
  struct state {
    std::uint32_t pick(const pick_context&, pick_rng&, local&) const { return 0; }
  };
  state build(const candidate_set&) const { return {}; }
};
static_assert(!selection_policy<throwing_pick>);

}  // namespace

TEST_CASE("the policy state is built once per registry version, not per pick") {
  backend_registry r;
  first_eligible policy;
  balancer<first_eligible> lb(r, policy);
  CHECK(policy.builds->load() == 1);  // the empty initial version
  auto picker = lb.make_picker();
  CHECK(picker.pick().error() == pick_error::no_backends);

  REQUIRE(r.apply(change_set().add(make("b")).add(make("a"))));
  CHECK(policy.builds->load() == 2);
  for (int i = 0; i < 100; ++i) CHECK(picker.pick().id() == "a");
  CHECK(policy.builds->load() == 2);

  REQUIRE(r.drain("a"));
  CHECK(policy.builds->load() == 3);
  CHECK(picker.pick().id() == "b");  // the very next pick follows the new version
  CHECK(picker.current().version == r.version());
}

TEST_CASE("eligibility: health, draining, weight 0, and the panic threshold") {
  backend_registry r;
  REQUIRE(r.apply(change_set().add(make("a")).add(make("b")).add(make("c")).add(make("d"))));
  balancer<round_robin> lb(r, {}, {.seed = 7});

  auto eligible = [&] {
    auto p = lb.current_plan();
    std::vector<std::string> out;
    for (std::size_t i = 0; i < p->weights.size(); ++i) {
      if (p->weights[i] != 0) out.push_back(p->members->members()[i].id());
    }
    return out;
  };
  CHECK(eligible() == std::vector<std::string>{"a", "b", "c", "d"});

  REQUIRE(r.set_health("a", health::unhealthy));
  REQUIRE(r.drain("b"));
  REQUIRE(r.set_weight("c", 0));
  // Enabled: a (unhealthy) and d; 1 of 2 healthy = 50%, not below the 50% threshold.
  CHECK(eligible() == std::vector<std::string>{"d"});
  CHECK(!lb.current_plan()->panic);

  REQUIRE(r.set_health("d", health::unhealthy));
  // 0 of 2 healthy: panic spreads over the enabled members, never the drained or weight-0.
  CHECK(lb.current_plan()->panic);
  CHECK(eligible() == std::vector<std::string>{"a", "d"});
}

TEST_CASE("panic can be disabled or turned into failure") {
  backend_registry r;
  REQUIRE(
      r.apply(change_set().add(make("a"), health::unhealthy).add(make("b"), health::unhealthy)));
  SUBCASE("threshold 0: never panic") {
    balancer<round_robin> lb(r, {}, {.panic_threshold = 0});
    CHECK(!lb.current_plan()->panic);
    CHECK(lb.make_picker().pick().error() == pick_error::no_healthy_backends);
  }
  SUBCASE("fail_on_panic") {
    balancer<round_robin> lb(r, {}, {.fail_on_panic = true});
    CHECK(lb.current_plan()->panic);
    CHECK(lb.make_picker().pick().error() == pick_error::no_healthy_backends);
  }
  SUBCASE("fail_on_panic fails the healthy members too") {
    REQUIRE(r.apply(change_set().add(make("c"), health::unhealthy).add(make("d"))));
    balancer<round_robin> lb(r, {}, {.fail_on_panic = true});  // 1 of 4 healthy: panic
    CHECK(lb.current_plan()->panic);
    CHECK(lb.current_plan()->eligible == 0);
    CHECK(lb.make_picker().pick().error() == pick_error::no_healthy_backends);
  }
  SUBCASE("threshold 100: panic unless every enabled member is healthy") {
    REQUIRE(r.set_health("a", health::healthy));
    balancer<round_robin> lb(r, {}, {.panic_threshold = 100});
    CHECK(lb.current_plan()->panic);
    CHECK(lb.current_plan()->eligible == 2);
  }
}

TEST_CASE("the reasons for an empty lease") {
  backend_registry r;
  balancer<round_robin> lb(r);
  auto picker = lb.make_picker();
  auto l = picker.pick();
  CHECK(!l);
  CHECK(l.error() == pick_error::no_backends);
  REQUIRE(r.add(make("a", 0)));
  CHECK(picker.pick().error() == pick_error::no_available_backends);
  REQUIRE(r.set_weight("a", 1));
  auto ok = picker.pick();
  CHECK(ok);
  CHECK(ok.error() == pick_error::none);
  CHECK(to_string(pick_error::no_healthy_backends) == "no healthy backend");
}

TEST_CASE("leases count requests and take outcomes") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  balancer<round_robin> lb(r);
  auto picker = lb.make_picker();
  backend_state& s = r.current()->find("a")->state();

  {
    auto l1 = picker.pick();
    auto l2 = picker.pick();
    CHECK(s.totals().in_flight() == 2);
    l1.report(outcome::success, std::chrono::microseconds(5));
    l1.report(outcome::failure);  // already reported: ignored
    CHECK(!l1);
    CHECK(s.totals().in_flight() == 1);
    CHECK(s.successes() == 1);
    CHECK(s.failures() == 0);
    CHECK(s.totals().latency_ns == 5000);
    lease moved = std::move(l2);
    CHECK(!l2);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(moved);
    CHECK(s.totals().in_flight() == 1);
  }  // `moved` ends unreported
  CHECK(s.totals().in_flight() == 0);
  CHECK(s.requests() == 2);
  CHECK(s.successes() + s.failures() == 1);
  CHECK(s.totals().of(outcome::none) == 1);
}

TEST_CASE("a balancer counts what its policy reads, and every lease in the totals") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  backend_state& s = r.current()->find("a")->state();
  balancer<round_robin> plain(r);
  balancer<least_connections> loaded(r);
  balancer<least_response_time> timed(r);
  auto p = plain.make_picker();
  auto l = loaded.make_picker();
  auto t = timed.make_picker();
  {
    lease a = p.pick(), b = l.pick(), c = t.pick();
    CHECK(s.active() == 2);  // least_connections' and least_response_time's
    CHECK(s.totals().in_flight() == 3);
    a.report(outcome::success, std::chrono::microseconds(9));
    CHECK(s.latency_estimate() == 0ns);  // round robin reads no latency: none estimated
    b.report(outcome::success, std::chrono::microseconds(9));
    CHECK(s.latency_estimate() == 0ns);
    CHECK(s.active() == 1);
    c.report(outcome::success, std::chrono::microseconds(7));
    CHECK(s.latency_estimate() == std::chrono::microseconds(7));
    CHECK(s.active() == 0);
  }
  CHECK(s.totals().latency_samples == 3);
  CHECK(s.totals().latency_ns == 25000);
  static_assert(!in_flight_counting_policy<round_robin>);
  static_assert(in_flight_counting_policy<power_of_two_choices>);
  static_assert(in_flight_counting_policy<bounded_load<maglev>> &&
                total_counting_policy<bounded_load<maglev>>);
  static_assert(latency_tracking_policy<least_response_time>);
  static_assert(!latency_tracking_policy<least_connections>);
}

TEST_CASE("a lease stays valid after its backend is removed and the plan is gone") {
  backend_registry r;
  REQUIRE(r.apply(change_set().add(make("a")).add(make("b"))));
  balancer<first_eligible> lb(r);
  auto picker = lb.make_picker();
  lease l = picker.pick();
  REQUIRE(l.id() == "a");
  REQUIRE(r.remove("a"));
  CHECK(picker.pick().id() == "b");  // the picker drops the old plan here
  // Nothing but the lease holds "a" now.
  CHECK(l.id() == "a");
  CHECK(l.backend().totals().in_flight() == 1);
  const std::size_t waiting = backend_state::reclaim_retired();  // the lease's state
  l.report(outcome::failure);
  // The request ended: the next registry change (or this) frees the state (ASan checks).
  CHECK(backend_state::reclaim_retired() == waiting - 1);
}

TEST_CASE("pickers of one balancer draw different random streams") {
  backend_registry r;
  lbkit::change_set cs;
  for (int i = 0; i < 64; ++i) cs.add(make("b" + std::to_string(i)));
  REQUIRE(r.apply(cs));
  struct random_index {
    struct local {};
    struct state {
      std::uint32_t n;
      std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
        return rng.below(n);
      }
    };
    state build(const candidate_set& c) const { return {static_cast<std::uint32_t>(c.size())}; }
  };
  balancer<random_index> lb(r, {}, {.seed = 42});
  auto p1 = lb.make_picker(), p2 = lb.make_picker();
  int same = 0;
  for (int i = 0; i < 64; ++i) same += p1.pick().id() == p2.pick().id();
  // Independent uniform streams agree on 64 * 1/64 = 1 pick on average; identical streams on
  // all 64. 16 is far above the former (P(Binomial(64, 1/64) >= 16) < 1e-12).
  CHECK(same < 16);
}

TEST_CASE_TEMPLATE("every policy is default-constructible from {} and usable by default", P,
                   round_robin, weighted_round_robin, weighted_random, least_connections,
                   power_of_two_choices, modulo_hash, ring_hash, maglev, jump_hash,
                   rendezvous_hash) {
  // balancer's `Policy policy = {}` default argument needs copy-list-initialisation.
  static_assert(selection_policy<P>);
  P copy_list_initialised = {};
  (void)copy_list_initialised;
  backend_registry r;
  REQUIRE(r.add(make("a")));
  balancer<P> b(r);
  CHECK(b.make_picker().pick(pick_context::for_key(1)).id() == "a");
}

TEST_CASE("round robin starts somewhere new after every change") {
  // A fixed start would send the first pick after every change to the same backend: with
  // frequent changes and light traffic, one backend would get everything.
  backend_registry r;
  change_set cs;
  for (int i = 0; i < 10; ++i) cs.add(make("n" + std::to_string(i)));
  REQUIRE(r.apply(cs));
  balancer<round_robin> lb(r, {}, {.seed = 11});
  auto picker = lb.make_picker();
  std::set<std::string> firsts;
  for (int k = 0; k < 100; ++k) {
    firsts.insert(picker.pick().id());
    REQUIRE(r.set_weight("n9", k % 2 ? 1 : 2));
  }
  // Uniform starts over 10 backends in 100 draws: P(at most 5 distinct) < 1e-15.
  CHECK(firsts.size() > 5);
}

// ---- slow start ---------------------------------------------------------------------------

namespace {

// Shares of picks per backend id over `n` picks.
template <class P>
std::map<std::string, double> shares(balancer<P>& lb, int n) {
  auto picker = lb.make_picker();
  std::map<std::string, double> out;
  for (int i = 0; i < n; ++i) {
    auto l = picker.pick(pick_context::for_key(static_cast<std::uint64_t>(i)));
    REQUIRE(l);
    out[l.id()] += 1.0 / n;
  }
  return out;
}

// A window far longer than any test run: a ramping member stays at its minimum share
// throughout (after at most a few seconds of a 1 h window, (t / window) < 0.002, well below
// the 10% and 50% floors used here).
constexpr slow_start_options hour_ramp(double min_percent) {
  return {std::chrono::hours(1), 1.0, min_percent};
}

}  // namespace

TEST_CASE("slow start: a backend added later gets min_weight_percent of its weight") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  balancer<weighted_random> lb(r, {}, {.seed = 41, .slow_start = hour_ramp(10)});
  REQUIRE(r.add(make("b")));  // added after the balancer was made: ramps
  REQUIRE(lb.current_plan()->ramp_start.size() == 2);
  CHECK(lb.current_plan()->ramp_start[0] == 0);  // "a" was there first: no ramp
  CHECK(lb.current_plan()->ramp_start[1] != 0);

  // Rejection: each try picks b with probability 1/2 and keeps it with probability f = 0.1;
  // after 7 rejected tries the 8th pick stands. So
  //   P(b) = sum_{k<7} 0.45^k * 0.05 + 0.45^7 * 0.5 = 0.0924   (ideal f / (1 + f) = 0.0909).
  const double q = 0.45, expected = 0.05 * (1 - std::pow(q, 7)) / (1 - q) + std::pow(q, 7) * 0.5;
  // 200 000 picks: sd = sqrt(p (1 - p) / n) = 0.00065; 5 sd = 0.0032.
  const auto s = shares(lb, 200'000);
  CHECK(std::abs(s.at("b") - expected) < 0.0032);
}

TEST_CASE("slow start: min_weight_percent sets the floor, for round robin too") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  balancer<round_robin> lb(r, {}, {.seed = 42, .slow_start = hour_ramp(50)});
  REQUIRE(r.add(make("b")));
  // Round robin with rejection alternates turns: from a turn of b, b stands with
  // probability f, else the next turn (a) is taken. The chain's stationary share of b is
  // f / (1 + f) = 1/3 at f = 0.5; 200 000 picks: sd ~ 0.0011, 5 sd = 0.0053.
  const auto s = shares(lb, 200'000);
  CHECK(std::abs(s.at("b") - 1.0 / 3) < 0.0053);
}

TEST_CASE("slow start: not for members present at creation, nor when disabled, nor when keyed") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  REQUIRE(r.add(make("b")));
  {
    balancer<weighted_random> lb(r, {}, {.seed = 43, .slow_start = hour_ramp(10)});
    CHECK(lb.current_plan()->ramp_start.empty());
  }
  {
    balancer<weighted_random> off(r, {}, {.seed = 44});  // window 0: disabled
    balancer<maglev> keyed(r, {}, {.seed = 45, .slow_start = hour_ramp(10)});
    maglev plain_policy;
    balancer<maglev> plain(r, plain_policy, {.seed = 46});
    REQUIRE(r.add(make("c")));
    CHECK(off.current_plan()->ramp_start.empty());
    // A hash policy never ramps: a ramp would move keys. Its picks match a balancer without
    // slow start, key for key.
    CHECK(keyed.current_plan()->ramp_start.empty());
    auto pk = keyed.make_picker(), pp = plain.make_picker();
    for (std::uint64_t k = 0; k < 10'000; ++k) {
      const auto ctx = pick_context::for_key(k);
      CHECK(pk.pick(ctx).id() == pp.pick(ctx).id());
    }
  }
}

TEST_CASE("slow start: a backend that becomes healthy again ramps again, and ramps end") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  REQUIRE(r.add(make("b")));
  const auto window = std::chrono::milliseconds(20);
  balancer<weighted_random> lb(r, {}, {.seed = 47, .slow_start = {window, 1.0, 10}});
  REQUIRE(r.set_health("b", health::unhealthy));
  CHECK(lb.current_plan()->ramp_start.empty());
  REQUIRE(r.set_health("b", health::healthy));
  const auto plan = lb.current_plan();
  REQUIRE(plan->ramp_start.size() == 2);
  CHECK(plan->ramp_start[1] == r.current()->find("b")->state().healthy_since());
  CHECK(plan->ramp_end == plan->ramp_start[1] + std::chrono::nanoseconds(window).count());

  // Once the clock is past the ramp, picks are even again. A bounded wait on the clock
  // itself, not a sleep: at most 2 s, normally 20-24 ms.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (detail::coarse_now_ns() < plan->ramp_end && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  REQUIRE(detail::coarse_now_ns() >= plan->ramp_end);
  // 100 000 picks, p = 1/2: sd = 0.0016, 5 sd = 0.008.
  const auto s = shares(lb, 100'000);
  CHECK(std::abs(s.at("b") - 0.5) < 0.008);
}

TEST_CASE("balancer options are validated, and clamped when not") {
  CHECK(validate(balancer_options{}));
  CHECK_FALSE(validate(balancer_options{.panic_threshold = 101}));
  CHECK_FALSE(validate(balancer_options{.panic_threshold = std::nan("")}));
  CHECK_FALSE(validate(balancer_options{.slow_start = {std::chrono::milliseconds(-1), 1, 10}}));
  CHECK_FALSE(validate(balancer_options{.slow_start = {std::chrono::seconds(1), 0, 10}}));
  CHECK_FALSE(validate(balancer_options{.slow_start = {std::chrono::seconds(1), 1, 0}}));
  const auto e = validate(balancer_options{.slow_start = {std::chrono::seconds(1), -2, 10}});
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("aggression") != std::string::npos);

  backend_registry r;
  balancer<round_robin> lb(
      r, {}, {.panic_threshold = 400, .slow_start = {std::chrono::milliseconds(-5), -1, 1000}});
  CHECK(lb.options().panic_threshold == 100);
  CHECK(lb.options().slow_start.window.count() == 0);
  CHECK(lb.options().slow_start.aggression == 1);
  CHECK(lb.options().slow_start.min_weight_percent == 100);
}

TEST_CASE("pick_member pins a named backend while it may get requests, and says why not") {
  backend_registry r;
  REQUIRE(r.add(make("a")));
  REQUIRE(r.add(make("b")));
  REQUIRE(r.add(make("c")));
  balancer<round_robin> lb(r);
  auto picker = lb.make_picker();

  {
    lease l = picker.pick_member("b");
    REQUIRE(l);
    CHECK(l.id() == "b");
    CHECK(l.backend().totals().in_flight() == 1);  // counted in flight like any pick
  }
  CHECK(r.current()->find("b")->state().totals().in_flight() == 0);

  CHECK(picker.pick_member("nope").error() == pick_error::member_unavailable);

  // Unhealthy (with the others healthy, so no panic), draining, weight 0, removed: not pinned.
  REQUIRE(r.set_health("b", health::unhealthy));
  CHECK(picker.pick_member("b").error() == pick_error::member_unavailable);
  REQUIRE(r.set_health("b", health::healthy));
  CHECK(picker.pick_member("b"));
  REQUIRE(r.drain("b"));
  CHECK(picker.pick_member("b").error() == pick_error::member_unavailable);
  REQUIRE(r.drain("b", false));
  REQUIRE(r.set_weight("b", 0));
  CHECK(picker.pick_member("b").error() == pick_error::member_unavailable);
  REQUIRE(r.set_weight("b", 1));
  REQUIRE(r.remove("b"));
  CHECK(picker.pick_member("b").error() == pick_error::member_unavailable);

  // In panic every enabled member is eligible, so a pin to an unhealthy one holds.
  REQUIRE(r.set_health("a", health::unhealthy));
  REQUIRE(r.set_health("c", health::unhealthy));
  CHECK(picker.pick_member("a"));
  CHECK(to_string(pick_error::member_unavailable).find("requested backend") !=
        std::string_view::npos);
}

TEST_CASE("pick_other with every backend tried so far avoids them all while one is left") {
  backend_registry r;
  REQUIRE(r.apply(change_set().add(make("a", 1)).add(make("b", 1)).add(make("c", 1))));
  const auto s = r.current();
  const backend_state* a = &s->find("a")->state();
  const backend_state* b = &s->find("b")->state();
  const backend_state* c = &s->find("c")->state();
  // first_eligible answers a every time, so only the exclusion can move it; with a and b
  // tried, c is the one backend left, for every key and without one.
  balancer<first_eligible> fixed(r);
  auto p = fixed.make_picker();
  const backend_state* ab[] = {a, b};
  for (std::uint64_t key = 0; key < 500; ++key) {
    CHECK(p.pick_other(pick_context::for_key(key), ab).id() == "c");
    CHECK(p.pick_other({}, ab).id() == "c");
  }
  // All tried: the latest of them still eligible (b after c was drained).
  const backend_state* abc[] = {a, c, b};
  CHECK(p.pick_other({}, abc).id() == "b");
  REQUIRE(r.apply(change_set().drain("b")));
  CHECK(p.pick_other({}, abc).id() == "c");
  // Nothing tried: the policy's own pick.
  CHECK(p.pick_other({}, std::span<const backend_state* const>()).id() == "a");
}

TEST_CASE("pick_other avoids the backend that failed, whatever the policy would pick") {
  backend_registry r;
  REQUIRE(r.apply(change_set().add(make("a", 1)).add(make("b", 1)).add(make("c", 2))));
  const backend_state* a = &r.current()->find("a")->state();

  // first_eligible always answers a: the rehashed picks cannot move it, the draw by weight
  // does (b 1, c 2 of the others).
  balancer<first_eligible> fixed(r);
  auto p = fixed.make_picker();
  std::map<std::string, int> counts;
  constexpr int n = 30'000;
  for (int i = 0; i < n; ++i) ++counts[p.pick_other({}, a).id()];
  CHECK(counts["a"] == 0);
  // Binomial(30 000, 1/3) for b: sd = 82; 5 sd.
  CHECK(std::abs(counts["b"] - n / 3) < 5 * 82);

  // least_connections: an idle a (a backend failing at once keeps nothing in flight) would
  // be its pick every time.
  balancer<least_connections> least(r);
  auto q = least.make_picker();
  std::vector<lease> held;
  for (const char* id : {"b", "c", "c"}) held.push_back(q.pick_member(id));
  for (int i = 0; i < 1000; ++i) CHECK(q.pick_other({}, a).id() != "a");

  // A hash policy retries a key the same way on every balancer of a fleet.
  balancer<maglev> one(r), two(r);
  auto x = one.make_picker(), y = two.make_picker();
  for (std::uint64_t key = 0; key < 200; ++key) {
    const auto c = pick_context::for_key(key);
    const lease first = x.pick(c);
    const lease retry = x.pick_other(c, &first.backend());
    CHECK(retry.id() != first.id());
    CHECK(y.pick_other(c, &first.backend()).id() == retry.id());
  }

  // Nothing else eligible: the failed backend it is.
  REQUIRE(r.apply(change_set().drain("b").drain("c")));
  CHECK(p.pick_other({}, a).id() == "a");
  REQUIRE(r.apply(change_set().drain("a")));
  CHECK(p.pick_other({}, a).error() == pick_error::no_available_backends);
}
