// SPDX-License-Identifier: MIT
// Every selection policy through balancer<Policy>: docs/architecture.md properties 3-7, one suite
// for all.
//
// Each case runs once per policy type in LBKIT_CONFORMANCE_POLICIES. Every pick passes a
// varying pick_context::for_key(k), so that hash policies, once listed, are exercised over
// many keys; the other policies ignore the key.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend.hpp>
#include <lbkit/backend_registry.hpp>
#include <lbkit/backend_state.hpp>
#include <lbkit/balancer.hpp>
#include <lbkit/policy/anchor_hash.hpp>
#include <lbkit/policy/bounded_load.hpp>
#include <lbkit/policy/jump_hash.hpp>
#include <lbkit/policy/least_connections.hpp>
#include <lbkit/policy/least_response_time.hpp>
#include <lbkit/policy/maglev.hpp>
#include <lbkit/policy/modulo_hash.hpp>
#include <lbkit/policy/power_of_two_choices.hpp>
#include <lbkit/policy/rendezvous_hash.hpp>
#include <lbkit/policy/ring_hash.hpp>
#include <lbkit/policy/round_robin.hpp>
#include <lbkit/policy/weighted_random.hpp>
#include <lbkit/policy/weighted_round_robin.hpp>
#include <lbkit/selection_policy.hpp>

using bounded_maglev = lbkit::bounded_load<lbkit::maglev>;
using bounded_ring = lbkit::bounded_load<lbkit::ring_hash>;

// The policies the suite runs over, one per line. doctest 2.4.9 names each instance after its
// type (doctest::toString<T>() reads __PRETTY_FUNCTION__), so no TYPE_TO_STRING is needed.
// clang-format off
#define LBKIT_CONFORMANCE_POLICIES \
  lbkit::round_robin,              \
  lbkit::weighted_round_robin,     \
  lbkit::weighted_random,          \
  lbkit::least_connections,        \
  lbkit::power_of_two_choices,     \
  lbkit::modulo_hash,              \
  lbkit::ring_hash,                \
  lbkit::maglev,                   \
  lbkit::jump_hash,                \
  lbkit::rendezvous_hash,          \
  lbkit::anchor_hash,              \
  lbkit::least_response_time,      \
  bounded_maglev,                  \
  bounded_ring
// clang-format on

using lbkit::backend_registry;
using lbkit::health;
using lbkit::lease;
using lbkit::outcome;
using lbkit::pick_error;

namespace {

constexpr std::uint64_t seed = 0x5eed'1234;

// The policy as the suite configures it. The suite checks behaviour, not balance (the unit
// tests do that with the defaults), so the table-building hash policies get small tables:
// the churn case rebuilds 2 000 times.
template <class Policy>
Policy make_policy() {
  return Policy{};
}
template <>
lbkit::ring_hash make_policy<lbkit::ring_hash>() {
  return lbkit::ring_hash(16, 1u << 14);
}
template <>
lbkit::maglev make_policy<lbkit::maglev>() {
  return lbkit::maglev(1009);
}
template <>
bounded_maglev make_policy<bounded_maglev>() {
  return bounded_maglev(1.25, lbkit::maglev(1009));
}
template <>
bounded_ring make_policy<bounded_ring>() {
  return bounded_ring(1.25, lbkit::ring_hash(16, 1u << 14));
}

// Policies whose share of picks follows the configured weights whatever the load, so that a
// backend with 10^6 times the weight of another gets nearly all picks.
template <class Policy>
inline constexpr bool shares_follow_weights = false;
template <>
inline constexpr bool shares_follow_weights<lbkit::weighted_round_robin> = true;
template <>
inline constexpr bool shares_follow_weights<lbkit::weighted_random> = true;

// Backend i of a test: id "n00".."n99", address 10.1.0.1:(9000 + i).
std::string id_of(int i) { return std::string{'n', char('0' + i / 10), char('0' + i % 10)}; }

lbkit::endpoint address_of(int i) {
  return *lbkit::endpoint::parse("10.1.0.1:" + std::to_string(9000 + i));
}

lbkit::backend make(int i, std::uint32_t weight = 1) {
  return lbkit::backend(id_of(i), address_of(i), weight);
}

// Whether a lease's id and address are those of one test backend.
bool consistent(const lease& l) {
  const std::string& id = l.id();
  if (id.size() != 3 || id[0] != 'n' || id[1] < '0' || id[1] > '9' || id[2] < '0' || id[2] > '9') {
    return false;
  }
  return l.address() == address_of((id[1] - '0') * 10 + (id[2] - '0'));
}

// Adds backends 0..n-1 with these weights and initial health, as one version.
void add_all(backend_registry& r, const std::vector<std::uint32_t>& weights,
             const std::vector<health>& healths = {}) {
  lbkit::change_set cs;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    cs.add(make(static_cast<int>(i), weights[i]),
           i < healths.size() ? healths[i] : health::healthy);
  }
  REQUIRE(r.apply(cs));
}

// What `count` picks gave, each released at once.
struct tally {
  std::map<std::string, std::size_t> by_id;
  std::map<pick_error, std::size_t> empty;  // empty leases by reason
  std::size_t inconsistent = 0;             // leases whose id and address disagree

  std::size_t of(const std::string& id) const {
    auto it = by_id.find(id);
    return it == by_id.end() ? 0 : it->second;
  }
  std::size_t empties() const {
    std::size_t n = 0;
    for (const auto& [why, count] : empty) n += count;
    return n;
  }
  // True when every pick was empty for exactly this reason.
  bool all_empty_because(pick_error why, std::size_t count) const {
    return by_id.empty() && empty.size() == 1 && empty.count(why) == 1 && empty.at(why) == count;
  }
};

template <class Picker>
tally pick_many(Picker& picker, std::size_t count, std::uint64_t first_key) {
  tally t;
  for (std::size_t k = 0; k < count; ++k) {
    const lease l = picker.pick(lbkit::pick_context::for_key(first_key + k));
    if (l) {
      t.by_id[l.id()] += 1;
      t.inconsistent += !consistent(l);
    } else {
      t.empty[l.error()] += 1;
    }
  }
  return t;
}

// The state of a present backend.
lbkit::backend_state& state_of(const backend_registry& r, int i) {
  const auto* m = r.current()->find(id_of(i));
  REQUIRE(m != nullptr);
  return m->state();
}

}  // namespace

// Not everything is a policy: the concept checks what it lists.
struct not_noexcept_policy {
  struct local {};
  struct state {
    std::uint32_t pick(const lbkit::pick_context&, lbkit::pick_rng&, local&) const { return 0; }
  };
  state build(const lbkit::candidate_set&) const { return {}; }
};
static_assert(!lbkit::selection_policy<int>);
static_assert(!lbkit::selection_policy<not_noexcept_policy>);

TEST_CASE_TEMPLATE("conformance: the type models selection_policy", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  static_assert(lbkit::selection_policy<Policy>);
  static_assert(
      std::is_nothrow_invocable_r_v<std::uint32_t, decltype(&Policy::state::pick),
                                    const typename Policy::state&, const lbkit::pick_context&,
                                    lbkit::pick_rng&, typename Policy::local&>);
  backend_registry r;
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  const auto plan = lb.current_plan();
  REQUIRE(plan != nullptr);
  CHECK(plan->version == 0);
  CHECK(lb.options().seed == seed);
}

TEST_CASE_TEMPLATE("conformance: an empty registry gives no_backends", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  backend_registry r;
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  auto picker = lb.make_picker();
  const lease l = picker.pick(lbkit::pick_context::for_key(1));
  CHECK_FALSE(l);
  CHECK(l.error() == pick_error::no_backends);
  CHECK(pick_many(picker, 50, 2).all_empty_because(pick_error::no_backends, 50));
  CHECK(lb.current_plan()->eligible == 0);
  CHECK(lb.current_plan()->unavailable == pick_error::no_backends);

  // Emptied again after holding backends: the same answer.
  REQUIRE(r.add(make(0)));
  CHECK(pick_many(picker, 10, 100).of(id_of(0)) == 10);
  REQUIRE(r.remove(id_of(0)));
  CHECK(pick_many(picker, 50, 200).all_empty_because(pick_error::no_backends, 50));
}

TEST_CASE_TEMPLATE("conformance: with one backend every pick returns it", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  backend_registry r;
  REQUIRE(r.add(make(7)));
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  auto picker = lb.make_picker();
  const auto& state = state_of(r, 7);
  std::size_t wrong = 0;
  for (std::uint64_t k = 0; k < 300; ++k) {
    const lease l = picker.pick(lbkit::pick_context::for_key(k));
    REQUIRE(l);
    wrong += l.error() != pick_error::none || l.id() != "n07" || l.address() != address_of(7) ||
             &l.backend() != &state;
  }
  CHECK(wrong == 0);
  CHECK(state.requests() == 300);
  CHECK(state.totals().in_flight() == 0);
}

TEST_CASE_TEMPLATE("conformance: drained and weight-0 backends get no picks", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  backend_registry r;
  SUBCASE("all drained: no_available_backends") {
    add_all(r, {1, 2, 3});
    for (int i = 0; i < 3; ++i) REQUIRE(r.drain(id_of(i)));
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    auto picker = lb.make_picker();
    CHECK(pick_many(picker, 100, 0).all_empty_because(pick_error::no_available_backends, 100));
    CHECK(lb.current_plan()->unavailable == pick_error::no_available_backends);
  }
  SUBCASE("all weight 0: no_available_backends") {
    add_all(r, {0, 0, 0});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    auto picker = lb.make_picker();
    CHECK(pick_many(picker, 100, 0).all_empty_because(pick_error::no_available_backends, 100));
  }
  SUBCASE("a drained and a weight-0 backend among others are never picked") {
    add_all(r, {1, 1, 1, 0, 1});
    REQUIRE(r.drain(id_of(1)));
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    auto picker = lb.make_picker();
    const tally t = pick_many(picker, 1200, 0);
    CHECK(t.empties() == 0);
    CHECK(t.inconsistent == 0);
    CHECK(t.of(id_of(1)) == 0);
    CHECK(t.of(id_of(3)) == 0);
    CHECK(t.of(id_of(0)) > 0);
    CHECK(t.of(id_of(2)) > 0);
    CHECK(t.of(id_of(4)) > 0);

    // Undrained and re-weighted, both get picks again.
    REQUIRE(r.drain(id_of(1), false));
    REQUIRE(r.set_weight(id_of(3), 1));
    const tally after = pick_many(picker, 1200, 5000);
    for (int i = 0; i < 5; ++i) CHECK(after.of(id_of(i)) > 0);
  }
}

TEST_CASE_TEMPLATE("conformance: unhealthy backends and the panic threshold", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  constexpr auto up = health::healthy, down = health::unhealthy;
  backend_registry r;
  SUBCASE("1 of 4 unhealthy (75% healthy >= 50%): it is never picked") {
    add_all(r, {1, 1, 1, 1}, {up, down, up, up});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    CHECK_FALSE(lb.current_plan()->panic);
    CHECK(lb.current_plan()->eligible == 3);
    auto picker = lb.make_picker();
    const tally t = pick_many(picker, 1200, 0);
    CHECK(t.empties() == 0);
    CHECK(t.of(id_of(1)) == 0);
    CHECK(t.of(id_of(0)) > 0);
    CHECK(t.of(id_of(2)) > 0);
    CHECK(t.of(id_of(3)) > 0);
  }
  SUBCASE("3 of 4 unhealthy (25% < 50%): panic spreads over all four") {
    add_all(r, {1, 1, 1, 1}, {down, down, up, down});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    CHECK(lb.current_plan()->panic);
    CHECK(lb.current_plan()->eligible == 4);
    auto picker = lb.make_picker();
    const tally t = pick_many(picker, 1200, 0);
    CHECK(t.empties() == 0);
    for (int i = 0; i < 4; ++i) CHECK(t.of(id_of(i)) > 0);
  }
  SUBCASE("all unhealthy with fail_on_panic: no_healthy_backends") {
    add_all(r, {1, 1, 1, 1}, {down, down, down, down});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.fail_on_panic = true, .seed = seed});
    CHECK(lb.current_plan()->panic);
    auto picker = lb.make_picker();
    CHECK(pick_many(picker, 100, 0).all_empty_because(pick_error::no_healthy_backends, 100));
  }
  SUBCASE("all unhealthy with panic_threshold 0: no_healthy_backends") {
    add_all(r, {1, 1, 1, 1}, {down, down, down, down});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.panic_threshold = 0, .seed = seed});
    CHECK_FALSE(lb.current_plan()->panic);
    auto picker = lb.make_picker();
    CHECK(pick_many(picker, 100, 0).all_empty_because(pick_error::no_healthy_backends, 100));
  }
  SUBCASE("2 of 4 healthy is exactly the threshold: no panic, the unhealthy get nothing") {
    add_all(r, {1, 1, 1, 1}, {down, up, down, up});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.panic_threshold = 50, .seed = seed});
    CHECK_FALSE(lb.current_plan()->panic);
    CHECK(lb.current_plan()->eligible == 2);
    auto picker = lb.make_picker();
    const tally t = pick_many(picker, 1200, 0);
    CHECK(t.empties() == 0);
    CHECK(t.of(id_of(0)) == 0);
    CHECK(t.of(id_of(2)) == 0);
    CHECK(t.of(id_of(1)) > 0);
    CHECK(t.of(id_of(3)) > 0);

    // One more goes down (25%): panic, and the picker follows it on its next pick.
    REQUIRE(r.set_health(id_of(3), down));
    CHECK(lb.current_plan()->panic);
    const tally panic = pick_many(picker, 1200, 9000);
    for (int i = 0; i < 4; ++i) CHECK(panic.of(id_of(i)) > 0);
  }
}

TEST_CASE_TEMPLATE("conformance: weights up to max_weight", Policy, LBKIT_CONFORMANCE_POLICIES) {
  constexpr auto heavy = lbkit::max_weight;
  backend_registry r;
  SUBCASE("all at max_weight: every pick valid, every backend picked") {
    add_all(r, std::vector<std::uint32_t>(6, heavy));
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    auto picker = lb.make_picker();
    const tally t = pick_many(picker, 1200, 0);
    CHECK(t.empties() == 0);
    CHECK(t.inconsistent == 0);
    for (int i = 0; i < 6; ++i) CHECK(t.of(id_of(i)) > 0);
  }
  SUBCASE("1 and max_weight mixed: every pick valid; the heavy ones dominate when weighted") {
    add_all(r, {heavy, 1, heavy, 1});
    lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
    auto picker = lb.make_picker();
    constexpr std::size_t n = 10'000;
    const tally t = pick_many(picker, n, 0);
    CHECK(t.empties() == 0);
    CHECK(t.inconsistent == 0);
    CHECK(t.of(id_of(0)) + t.of(id_of(1)) + t.of(id_of(2)) + t.of(id_of(3)) == n);
    if constexpr (shares_follow_weights<Policy>) {
      // Each light backend's share is 1 / 2'000'002. weighted_random: the light picks in 10^4
      // are Poisson with mean 0.005 each, P(3 or more in total) ~ 0.01^3 / 6 < 2e-7.
      // weighted_round_robin: the sum exceeds 2^20, so the cycle is scaled to 2^20 slots with
      // max(1, floor(2^20 / 2'000'002)) = 1 slot per light backend, and a lone picker's 10^4
      // picks are consecutive slots of that cycle: at most one each.
      CHECK(t.of(id_of(1)) + t.of(id_of(3)) <= 2);
      CHECK(t.of(id_of(0)) > 0);
      CHECK(t.of(id_of(2)) > 0);
    }
    // Held leases too (load-aware policies multiply loads by weights).
    std::vector<lease> held;
    for (std::uint64_t k = 0; k < 200; ++k) {
      held.push_back(picker.pick(lbkit::pick_context::for_key(k)));
      CHECK(held.back());
    }
    held.clear();
    for (int i = 0; i < 4; ++i) CHECK(state_of(r, i).totals().in_flight() == 0);
  }
}

TEST_CASE_TEMPLATE("conformance: a lease counts its request until it ends, exactly once", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  backend_registry r;
  REQUIRE(r.add(make(0)));
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  auto picker = lb.make_picker();
  const auto& s = state_of(r, 0);

  SUBCASE("report(success) ends it; a second report does nothing") {
    lease l = picker.pick(lbkit::pick_context::for_key(1));
    REQUIRE(l);
    CHECK(s.totals().in_flight() == 1);
    CHECK(s.requests() == 1);
    l.report(outcome::success, std::chrono::milliseconds(5));
    CHECK_FALSE(l);
    CHECK(s.totals().in_flight() == 0);
    CHECK(s.successes() == 1);
    CHECK(s.failures() == 0);
    CHECK(s.totals().latency_ns == 5'000'000);  // the estimate only for policies that read it
    l.report(outcome::failure, std::chrono::milliseconds(1));
    l.release();
    CHECK(s.totals().in_flight() == 0);
    CHECK(s.successes() == 1);
    CHECK(s.failures() == 0);
    CHECK(s.totals().latency_ns == 5'000'000);  // the estimate only for policies that read it
  }
  SUBCASE("report(failure) counts a failure") {
    lease l = picker.pick(lbkit::pick_context::for_key(2));
    l.report(outcome::failure);
    CHECK(s.totals().in_flight() == 0);
    CHECK(s.failures() == 1);
    CHECK(s.consecutive_failures() == 1);
    CHECK(s.successes() == 0);
  }
  SUBCASE("destroyed unreported: ends with outcome::none") {
    {
      const lease l = picker.pick(lbkit::pick_context::for_key(3));
      REQUIRE(l);
      CHECK(s.totals().in_flight() == 1);
    }
    CHECK(s.totals().in_flight() == 0);
    CHECK(s.requests() == 1);
    CHECK(s.successes() == 0);
    CHECK(s.failures() == 0);
    CHECK(s.totals().latency_samples == 0);
  }
  SUBCASE("a moved-from lease is empty and does not end the request again") {
    lease a = picker.pick(lbkit::pick_context::for_key(4));
    lease b = std::move(a);
    CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): that is the point
    CHECK(b);
    CHECK(s.totals().in_flight() == 1);
    a.report(outcome::success);  // NOLINT(bugprone-use-after-move)
    CHECK(s.totals().in_flight() == 1);
    CHECK(s.successes() == 0);

    lease c = picker.pick(lbkit::pick_context::for_key(5));
    CHECK(s.totals().in_flight() == 2);
    c = std::move(b);  // c's own request ends (outcome::none), b's moves in
    CHECK_FALSE(b);    // NOLINT(bugprone-use-after-move)
    CHECK(c);
    CHECK(s.totals().in_flight() == 1);
    CHECK(s.successes() == 0);
    c.report(outcome::success);
    CHECK(s.totals().in_flight() == 0);
    CHECK(s.successes() == 1);
  }
  // Whatever the subcase did, nothing is left in flight (a double end would wrap the count).
  CHECK(s.totals().in_flight() == 0);
}

TEST_CASE_TEMPLATE("conformance: a lease outlives its backend's removal", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  backend_registry r;
  add_all(r, {1, 1, 1});
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  auto picker = lb.make_picker();
  lease l = picker.pick(lbkit::pick_context::for_key(1));
  REQUIRE(l);
  const std::string id = l.id();
  lbkit::state_ref kept;
  SUBCASE("with a state_ref kept to read the counters after the report") {
    kept = r.current()->find(id)->state_handle();
  }
  SUBCASE("with the lease as the last holder of the state") {}

  REQUIRE(r.remove(id));
  // More picks move the picker to the new plan, which frees the old plan and snapshot.
  const tally t = pick_many(picker, 300, 100);
  CHECK(t.empties() == 0);
  CHECK(t.of(id) == 0);
  CHECK(picker.current().version == r.version());
  CHECK(picker.current().members->find(id) == nullptr);

  REQUIRE(l);
  CHECK(l.id() == id);
  CHECK(l.backend().totals().in_flight() == 1);
  CHECK(l.backend().requests() == 1);
  const std::size_t waiting = lbkit::backend_state::reclaim_retired();
  l.report(outcome::success, std::chrono::microseconds(250));  // ASan: the state is still there
  CHECK_FALSE(l);
  if (kept) {
    CHECK(kept->totals().in_flight() == 0);
    CHECK(kept->requests() == 1);
    CHECK(kept->successes() == 1);
    CHECK(kept->totals().latency_ns == 250'000);
  } else {
    // The lease was the last to use it: reclaiming frees it now (ASan checks).
    CHECK(lbkit::backend_state::reclaim_retired() == waiting - 1);
  }
  for (const auto& m : r.current()->members()) CHECK(m.state().totals().in_flight() == 0);
}

TEST_CASE_TEMPLATE("conformance: membership changes are followed on the next pick", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  backend_registry r;
  add_all(r, {1, 1, 1});
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  auto picker = lb.make_picker();
  CHECK(pick_many(picker, 300, 0).of(id_of(3)) == 0);

  REQUIRE(r.add(make(3)));
  const tally added = pick_many(picker, 1200, 1000);
  CHECK(picker.current().version == r.version());
  CHECK(added.empties() == 0);
  CHECK(added.of(id_of(3)) > 0);

  REQUIRE(r.remove(id_of(0)));
  // The very next pick, on the same picker, already uses the new membership.
  lease next = picker.pick(lbkit::pick_context::for_key(5000));
  REQUIRE(next);
  CHECK(next.id() != id_of(0));
  CHECK(picker.current().version == r.version());
  next.release();  // held, it would steer the load-aware policies away from its backend
  const tally removed = pick_many(picker, 1200, 5001);
  CHECK(removed.empties() == 0);
  CHECK(removed.of(id_of(0)) == 0);
  for (int i = 1; i < 4; ++i) CHECK(removed.of(id_of(i)) > 0);
}

TEST_CASE_TEMPLATE("conformance: concurrent picks while the membership churns", Policy,
                   LBKIT_CONFORMANCE_POLICIES) {
  // Two picker threads pick and report while a writer adds, removes, re-weights, drains and
  // flips the health of backends from a pool of 12, 2000 times. Run under TSan (the tsan
  // preset) this checks the plan hand-over; everywhere it checks that no pick returns a
  // backend the writer never made and that every request is counted once on the state it
  // began on. Whether a pick finds a backend depends on the interleaving, so that is not
  // asserted during the churn.
  constexpr int pool = 12;
  constexpr int writes = 2000;
  constexpr std::uint64_t min_picks = 2000, max_picks = 300'000;

  backend_registry r;
  // Every state the writer created, kept alive so that its address is never reused. Only the
  // writer thread touches it until the threads are joined.
  std::vector<lbkit::state_ref> created;
  auto add = [&](int i, std::uint32_t weight, health h) {
    if (!r.add(make(i, weight), h)) return false;
    created.push_back(r.current()->find(id_of(i))->state_handle());
    return true;
  };
  for (int i = 0; i < 6; ++i) REQUIRE(add(i, 1, health::healthy));
  lbkit::balancer<Policy> lb(r, make_policy<Policy>(), {.seed = seed});
  auto survivor = lb.make_picker();  // made before the churn, used after it
  REQUIRE(survivor.pick(lbkit::pick_context::for_key(0)));

  struct picker_tally {
    std::uint64_t leases = 0, empty_without_reason = 0, inconsistent = 0;
    std::uint64_t successes = 0, failures = 0;
    std::set<const lbkit::backend_state*> seen;
  };
  picker_tally tallies[2];
  std::uint64_t write_errors = 0;
  std::atomic<bool> writer_done{false};
  std::latch start(3);

  auto pick_loop = [&](picker_tally& t, std::uint64_t salt) {
    auto picker = lb.make_picker();
    start.arrive_and_wait();
    for (std::uint64_t k = 0;
         k < max_picks && (k < min_picks || !writer_done.load(std::memory_order_acquire)); ++k) {
      lease l = picker.pick(lbkit::pick_context::for_key(2 * k + salt));
      if (!l) {
        t.empty_without_reason += l.error() == pick_error::none;
        continue;
      }
      ++t.leases;
      t.seen.insert(&l.backend());
      t.inconsistent += !consistent(l);
      switch (k % 3) {
        case 0:
          l.report(outcome::success, std::chrono::microseconds(1 + k % 100));
          ++t.successes;
          break;
        case 1:
          l.report(outcome::failure);
          ++t.failures;
          break;
        default:
          break;  // destroyed unreported
      }
    }
  };
  auto write_loop = [&] {
    std::mt19937_64 rng(seed);
    start.arrive_and_wait();
    for (int op = 0; op < writes; ++op) {
      const int i = static_cast<int>(rng() % pool);
      const std::string id = id_of(i);
      const auto snap = r.current();
      const lbkit::member* m = snap->find(id);
      bool ok = true;
      if (m == nullptr) {
        ok = add(i, static_cast<std::uint32_t>(1 + rng() % 8),
                 rng() % 4 == 0 ? health::unhealthy : health::healthy);
      } else {
        switch (rng() % 5) {
          case 0:
            ok = bool(r.remove(id));
            break;
          case 1:
            ok = bool(r.set_weight(id, static_cast<std::uint32_t>(rng() % 9)));  // 0 included
            break;
          case 2:
            ok = bool(r.drain(id, !m->draining()));
            break;
          case 3:
            ok = bool(r.set_health(id, m->state().current_health() == health::healthy
                                           ? health::unhealthy
                                           : health::healthy));
            break;
          default:
            ok = bool(r.apply(lbkit::change_set()
                                  .set_weight(id, static_cast<std::uint32_t>(1 + rng() % 8))
                                  .drain(id, false)
                                  .set_health(id, health::healthy)));
            break;
        }
      }
      write_errors += !ok;
    }
    writer_done.store(true, std::memory_order_release);
  };

  std::thread a(pick_loop, std::ref(tallies[0]), 0);
  std::thread b(pick_loop, std::ref(tallies[1]), 1);
  std::thread w(write_loop);
  a.join();
  b.join();
  w.join();

  CHECK(write_errors == 0);
  std::set<const lbkit::backend_state*> made;
  for (const auto& s : created) made.insert(s.get());
  std::uint64_t leases = 1, successes = 0, failures = 0;  // 1: the survivor's first pick
  for (const auto& t : tallies) {
    CHECK(t.empty_without_reason == 0);
    CHECK(t.inconsistent == 0);
    std::size_t unknown = 0;
    for (const auto* p : t.seen) unknown += made.count(p) == 0;
    CHECK(unknown == 0);
    leases += t.leases;
    successes += t.successes;
    failures += t.failures;
  }
  // Every request began on one of the writer's states and ended there, once.
  std::uint64_t requests = 0, reported_successes = 0, reported_failures = 0;
  std::size_t still_active = 0;
  for (const auto& s : created) {
    requests += s->requests();
    reported_successes += s->successes();
    reported_failures += s->failures();
    still_active += s->active() != 0;
  }
  CHECK(requests == leases);
  CHECK(reported_successes == successes);
  CHECK(reported_failures == failures);
  CHECK(still_active == 0);

  // After the churn, a picker made before it follows the final membership.
  const auto plan = lb.current_plan();
  REQUIRE(plan->version == r.version());
  const tally t = pick_many(survivor, 500, 1'000'000);
  CHECK(survivor.current().version == r.version());
  if (plan->eligible == 0) {
    CHECK(t.all_empty_because(plan->unavailable, 500));
  } else {
    CHECK(t.empties() == 0);
    for (const auto& entry : t.by_id) {
      const std::string& picked = entry.first;  // not a structured binding: CAPTURE is a lambda
      CAPTURE(picked);
      const auto* m = plan->members->find(picked);
      REQUIRE(m != nullptr);
      CHECK(plan->weights[static_cast<std::size_t>(m - plan->members->members().data())] > 0);
    }
  }
}
