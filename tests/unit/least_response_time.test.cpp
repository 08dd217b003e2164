// SPDX-License-Identifier: MIT
// least_response_time: the cost formula term by term (cost_of against the header's formula),
// the choices P2C makes from it, the decay it sets on members, and shares through a balancer.
//
// Time: no test waits. Latencies are fed with observe_latency(sample, t0) at one instant t0
// read once from detail::coarse_now_ns(), and costs are read with cost_of(member, t0) at that
// same instant, where the decay factor is exactly 1. Picks read the clock themselves, a few ms
// after t0; every measured backend of a case then carries the same stamp t0, so all their
// estimates are scaled by the same factor exp(-dt / decay) and compare as at t0.
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_registry.hpp>
#include <lbkit/backend_state.hpp>
#include <lbkit/balancer.hpp>
#include <lbkit/detail/clock.hpp>
#include <lbkit/policy/least_response_time.hpp>
#include <lbkit/selection_policy.hpp>

#include "../support/backends.hpp"

using namespace std::chrono_literals;
using lbkit::backend_registry;
using lbkit::balancer;
using lbkit::change_set;
using lbkit::health;
using lbkit::lease;
using lbkit::least_response_time;
using lbkit::outcome;

namespace {

using lbkit::test::add_weighted;
using lbkit::test::id_of;
using lbkit::test::make;

lbkit::backend_state& state(const backend_registry& r, std::size_t i) {
  return r.current()->members()[i].state();
}

// The snapshot index of the backend a lease holds; REQUIREs that it holds one.
std::size_t index_of(const backend_registry& r, const lease& l) {
  REQUIRE(l);
  const auto members = r.current()->members();
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (&members[i].state() == &l.backend()) return i;
  }
  FAIL("the lease holds a backend that is not in the registry");
  return members.size();
}

// What a least_response_time balancer counts on its leases.
constexpr lbkit::request_counting counted = lbkit::counting_of<least_response_time>;

// `k` requests begun on a backend and held until the guard goes, as leases would hold them.
class held_requests {
 public:
  held_requests(lbkit::backend_state& s, int k) : s_(&s), k_(k) {
    for (int j = 0; j < k_; ++j) s_->begin_request(counted);
  }
  held_requests(const held_requests&) = delete;
  held_requests& operator=(const held_requests&) = delete;
  ~held_requests() {
    for (int j = 0; j < k_; ++j) s_->end_request(outcome::none, {}, counted);
  }

 private:
  lbkit::backend_state* s_;
  int k_;
};

// Ends `f` requests on `s` as failures, without a latency sample (so the estimate stays).
void fail(lbkit::backend_state& s, int f) {
  for (int j = 0; j < f; ++j) {
    s.begin_request(counted);
    s.end_request(outcome::failure, {}, counted);
  }
}

// Picks `count` times, releasing each lease at once; how often each member was chosen.
std::vector<int> pick_counts(const backend_registry& r, balancer<least_response_time>& lb,
                             int count) {
  auto picker = lb.make_picker();
  std::vector<int> counts(r.current()->size(), 0);
  for (int k = 0; k < count; ++k) counts.at(index_of(r, picker.pick())) += 1;
  return counts;
}

constexpr double ms = 1e6;  // in the estimate's unit, nanoseconds

}  // namespace

TEST_CASE("least_response_time: an unmeasured idle backend costs 0 and gets the next pick") {
  // Member 0 measured at 1 ms, member 1 without history. Idle, 1 costs 0 < 1 ms, and with two
  // eligible members P2C compares both, so every pick (released at once) goes to 1.
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(1ms, t0);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 101});
  const auto& st = lb.current_plan()->policy_state;
  CHECK(st.cost_of(0, t0) == 1 * ms);
  CHECK(st.cost_of(1, t0) == 0);
  CHECK(pick_counts(r, lb, 200) == std::vector<int>{0, 200});
}

TEST_CASE(
    "least_response_time: an unmeasured backend with a request in flight costs more "
    "than measured ones") {
  // While its first request is under way, the unmeasured backend costs active x 2^1000,
  // above every measured cost (those are capped at 1e300): here one of 1 hour (3.6e12; the
  // estimate is a float, so within 2^-24 of it) with 9 requests in flight (x 10) and two
  // consecutive failures (x 3): 1.08e14.
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(1h, t0);
  fail(state(r, 0), 2);
  const held_requests busy(state(r, 0), 9);
  const held_requests first(state(r, 1), 1);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 102});
  const auto& st = lb.current_plan()->policy_state;
  const double estimate = state(r, 0).latency_at(t0);
  CHECK(estimate == doctest::Approx(3600e9).epsilon(1e-7));
  CHECK(st.cost_of(0, t0) == estimate * 10 * 3);
  CHECK(st.cost_of(1, t0) == std::ldexp(1.0, 1000));
  CHECK(st.cost_of(1, t0) > st.cost_of(0, t0));
  CHECK(pick_counts(r, lb, 200) == std::vector<int>{200, 0});
}

// Found by these tests: a fixed no-history penalty of 1e15 ns lay below
// backend_state::max_latency (2^50 ns), so a backend measured near that cost more than an
// unmeasured one in flight.
TEST_CASE(
    "least_response_time: an unmeasured backend in flight costs more than one measured "
    "at max_latency") {
  // The same claim at its edge: samples are clipped to backend_state::max_latency (2^50 ns,
  // ~13 days), so an idle, failure-free, weight-1 backend measured there costs 2^50 =
  // 1.1259e15, the most an idle measured backend can cost. The header promises that an
  // unmeasured backend with a request in flight costs more than any measured backend.
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(lbkit::backend_state::max_latency, t0);
  const held_requests first(state(r, 1), 1);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 103});
  const auto& st = lb.current_plan()->policy_state;
  const double clipped = static_cast<double>(lbkit::backend_state::max_latency.count());
  CHECK(st.cost_of(0, t0) == clipped);
  CHECK(st.cost_of(1, t0) > clipped);
  CHECK(pick_counts(r, lb, 50) == std::vector<int>{50, 0});
}

TEST_CASE("least_response_time: of two backends with equal in flight, the faster always wins") {
  // Estimates 2 ms and 3 ms; with k requests in flight on each, costs 2(k+1) < 3(k+1) ms.
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(3ms, t0);
  state(r, 1).observe_latency(2ms, t0);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 104});
  const auto& st = lb.current_plan()->policy_state;
  for (int k = 0; k <= 5; ++k) {
    CAPTURE(k);
    const held_requests a(state(r, 0), k), b(state(r, 1), k);
    CHECK(st.cost_of(0, t0) == 3 * ms * (k + 1));
    CHECK(st.cost_of(1, t0) == 2 * ms * (k + 1));
    CHECK(pick_counts(r, lb, 200) == std::vector<int>{0, 200});
  }
}

TEST_CASE("least_response_time: requests in flight multiply the estimate") {
  // Member 0: 1 ms with a in flight costs (a + 1) ms; member 1: 5 ms, idle. 0 wins while
  // a + 1 < 5, i.e. a <= 3; at a = 4 they tie (the first drawn wins: both get picks); from
  // a = 5 on, 1 wins. At a = 9: 10 ms against 5 ms.
  //
  // The tie must be exact when picks compare, a few ms after the samples: at a decay factor
  // f < 1, (1 ms x f) x 5 and 5 ms x f can round 1 ulp apart and turn the tie into a win (a
  // flake seen under load). So the samples are stamped an hour ahead: a stamp later than the
  // reading counts as no time elapsed (decay factor exactly 1) for the whole case.
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns() + std::int64_t{3600} * 1'000'000'000;
  state(r, 0).observe_latency(1ms, t0);
  state(r, 1).observe_latency(5ms, t0);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 105});
  const auto& st = lb.current_plan()->policy_state;
  for (int a = 0; a <= 9; ++a) {
    CAPTURE(a);
    const held_requests busy(state(r, 0), a);
    CHECK(st.cost_of(0, t0) == 1 * ms * (a + 1));
    CHECK(st.cost_of(1, t0) == 5 * ms);
    const auto counts = pick_counts(r, lb, 200);
    if (a < 4) CHECK(counts == std::vector<int>{200, 0});
    if (a > 4) CHECK(counts == std::vector<int>{0, 200});
    // A tie goes to the first drawn, a fair coin: both sides of 200 flips are > 0 except
    // with probability 2^-199.
    if (a == 4) CHECK((counts[0] > 0 && counts[1] > 0));
  }
  // And member 1's own requests count the same way: 5 ms x 3 = 15 ms against 0's 1 ms x 10.
  const held_requests busy0(state(r, 0), 9), busy1(state(r, 1), 2);
  CHECK(st.cost_of(1, t0) == 15 * ms);
  CHECK(pick_counts(r, lb, 200) == std::vector<int>{200, 0});
}

TEST_CASE("least_response_time: consecutive failures raise the cost by (1 + penalty x f)") {
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(1ms, t0);
  state(r, 1).observe_latency(2ms, t0);

  SUBCASE("the default penalty, 1") {
    balancer<least_response_time> lb(r, least_response_time{}, {.seed = 106});
    CHECK(least_response_time{}.failure_penalty() == 1.0);
    const auto& st = lb.current_plan()->policy_state;
    CHECK(pick_counts(r, lb, 100) == std::vector<int>{100, 0});
    fail(state(r, 0), 1);  // 1 ms x 2 = 2 ms: a tie with member 1
    CHECK(st.cost_of(0, t0) == 2 * ms);
    fail(state(r, 0), 2);  // 1 ms x (1 + 3) = 4 ms: member 1 wins
    CHECK(state(r, 0).consecutive_failures() == 3);
    CHECK(st.cost_of(0, t0) == 4 * ms);
    CHECK(st.cost_of(1, t0) == 2 * ms);
    CHECK(pick_counts(r, lb, 100) == std::vector<int>{0, 100});
    // In flight and failures multiply: 1 ms x (2 + 1) x 4.
    {
      const held_requests busy(state(r, 0), 2);
      CHECK(st.cost_of(0, t0) == 12 * ms);
    }
    // One success (without a sample: the estimate stays 1 ms) resets the count.
    state(r, 0).begin_request(counted);
    state(r, 0).end_request(outcome::success, {}, counted);
    CHECK(state(r, 0).consecutive_failures() == 0);
    CHECK(st.cost_of(0, t0) == 1 * ms);
    CHECK(pick_counts(r, lb, 100) == std::vector<int>{100, 0});
  }
  SUBCASE("penalty 2.5") {
    balancer<least_response_time> lb(r, least_response_time(10s, 2.5), {.seed = 107});
    const auto& st = lb.current_plan()->policy_state;
    fail(state(r, 0), 3);
    CHECK(st.cost_of(0, t0) == 1 * ms * (1 + 2.5 * 3));
    fail(state(r, 1), 1);
    CHECK(st.cost_of(1, t0) == 2 * ms * (1 + 2.5 * 1));
    CHECK(pick_counts(r, lb, 100) == std::vector<int>{0, 100});  // 8.5 ms against 7 ms
  }
  SUBCASE("penalty 0 disables it") {
    balancer<least_response_time> lb(r, least_response_time(10s, 0.0), {.seed = 108});
    const auto& st = lb.current_plan()->policy_state;
    fail(state(r, 0), 50);
    CHECK(state(r, 0).consecutive_failures() == 50);
    CHECK(st.cost_of(0, t0) == 1 * ms);
    CHECK(pick_counts(r, lb, 100) == std::vector<int>{100, 0});
  }
}

TEST_CASE("least_response_time: the failure penalty is clamped to [0, 10^6]") {
  CHECK(least_response_time(10s, -3.0).failure_penalty() == 0.0);
  CHECK(least_response_time(10s, 1e9).failure_penalty() == 1e6);
  CHECK(least_response_time(10s, std::numeric_limits<double>::infinity()).failure_penalty() == 1e6);
  CHECK(least_response_time(10s, -std::numeric_limits<double>::infinity()).failure_penalty() ==
        0.0);
  // A negative penalty read as 0: failures cost nothing (a negative one would make them
  // attractive, even a negative cost).
  backend_registry r;
  add_weighted(r, {1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(1ms, t0);
  fail(state(r, 0), 4);
  balancer<least_response_time> lb(r, least_response_time(10s, -3.0), {.seed = 109});
  CHECK(lb.current_plan()->policy_state.cost_of(0, t0) == 1 * ms);
}

// Found by these tests: std::clamp returns NaN unchanged, so the constructor once kept a NaN
// penalty.
TEST_CASE("least_response_time: a NaN failure penalty is clamped into [0, 10^6] too") {
  // NaN passes through std::clamp unchanged (every comparison with it is false). The header
  // promises a penalty in [0, 10^6]; a NaN one would make every measured backend's cost NaN
  // (NaN x 0 failures is NaN too), and every comparison with it false, so that the first
  // drawn always won: latency and load would be ignored.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double p = least_response_time(10s, nan).failure_penalty();
  CHECK(p >= 0.0);
  CHECK(p <= 1e6);
  backend_registry r;
  add_weighted(r, {1, 1});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(1ms, t0);
  state(r, 1).observe_latency(9ms, t0);
  balancer<least_response_time> lb(r, least_response_time(10s, nan), {.seed = 110});
  CHECK(lb.current_plan()->policy_state.cost_of(0, t0) == 1 * ms);  // no failures: 1 ms
  CHECK(pick_counts(r, lb, 100) == std::vector<int>{100, 0});
}

TEST_CASE("least_response_time: the weight divides the cost") {
  // Member 0: 2 ms, weight 1, cost 2 ms. Member 1: 6 ms, weight 4, cost 1.5 ms: it wins.
  // With 1 request in flight on member 1: 6 x 2 / 4 = 3 ms: member 0 wins.
  backend_registry r;
  add_weighted(r, {1, 4});
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  state(r, 0).observe_latency(2ms, t0);
  state(r, 1).observe_latency(6ms, t0);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 111});
  const auto& st = lb.current_plan()->policy_state;
  CHECK(st.cost_of(0, t0) == 2 * ms);
  CHECK(st.cost_of(1, t0) == 1.5 * ms);
  CHECK(pick_counts(r, lb, 100) == std::vector<int>{0, 100});
  {
    const held_requests busy(state(r, 1), 1);
    CHECK(st.cost_of(1, t0) == 3 * ms);
    CHECK(pick_counts(r, lb, 100) == std::vector<int>{100, 0});
  }
  // A re-weighting rebuilds: weight 2 gives 6 / 2 = 3 ms.
  REQUIRE(r.set_weight(id_of(1), 2));
  CHECK(lb.current_plan()->policy_state.cost_of(1, t0) == 3 * ms);
  CHECK(pick_counts(r, lb, 100) == std::vector<int>{100, 0});
}

TEST_CASE("least_response_time: build sets every member's decay; decay is at least 1 ms") {
  CHECK(least_response_time{}.decay() == 10s);
  CHECK(least_response_time(250ms).decay() == 250ms);
  CHECK(least_response_time(0ns).decay() == 1ms);
  CHECK(least_response_time(1ns).decay() == 1ms);
  CHECK(least_response_time(-5s).decay() == 1ms);
  CHECK(least_response_time(999us).decay() == 1ms);
  CHECK(least_response_time(1ms).decay() == 1ms);

  // Members 0..3: healthy, unhealthy, draining, weight 0. Every one gets the decay, eligible
  // or not (the estimate is updated where no policy is at hand).
  backend_registry r;
  add_weighted(r, {1, 1, 1, 0});
  REQUIRE(r.set_health(id_of(1), health::unhealthy));
  REQUIRE(r.drain(id_of(2)));
  for (std::size_t i = 0; i < 4; ++i) CHECK(state(r, i).latency_decay() == 10s);
  {
    balancer<least_response_time> lb(r, least_response_time(250ms), {.seed = 112});
    for (std::size_t i = 0; i < 4; ++i) CHECK(state(r, i).latency_decay() == 250ms);
    // A member added later gets it on the rebuild its version triggers.
    REQUIRE(r.add(make(4)));
    CHECK(state(r, 4).latency_decay() == 250ms);

    // The estimate decays with it: a sample of 8 ms at t0, read k stamp units (2^20 ns) later,
    // is 8 ms x exp(-k 2^20 / 250 ms) (k whole units from t0, so the elapsed time is exact).
    const std::int64_t t0 = lbkit::detail::coarse_now_ns();
    state(r, 0).observe_latency(8ms, t0);
    const auto& st = lb.current_plan()->policy_state;
    for (const std::int64_t k : {0, 1, 100, 239, 1000}) {
      CAPTURE(k);
      const double dt = static_cast<double>(k << 20);
      CHECK(st.cost_of(0, t0 + (k << 20)) == doctest::Approx(8 * ms * std::exp(-dt / 250e6)));
    }
  }
  {
    // The clamp reaches the members: 0 ns is stored as 1 ms.
    balancer<least_response_time> lb(r, least_response_time(0ns), {.seed = 113});
    for (std::size_t i = 0; i < 5; ++i) CHECK(state(r, i).latency_decay() == 1ms);
  }
  state(r, 0).set_latency_decay(0ns);  // backend_state clamps on its own too
  CHECK(state(r, 0).latency_decay() == 1ms);
  state(r, 0).set_latency_decay(-1s);
  CHECK(state(r, 0).latency_decay() == 1ms);
}

TEST_CASE(
    "least_response_time: through leases, a 10x slower backend gets no picks once all "
    "are measured") {
  // N = 10 backends; each lease is reported with 1 ms, or 10 ms for member 7, the slow one.
  // At most 4 leases are held at a pick; each pick takes one more and the oldest is reported
  // when 5 are held.
  //
  // The bound. A fast backend's estimate is at most 1 ms: every sample it gets is 1 ms (a
  // peak replaces the estimate, a lower sample only blends in, and decay only lowers it), so
  // once measured, with at most 4 held, it costs at most 1 ms x 5 = 5 ms. Once the slow one
  // has a sample, its estimate is at least 10 ms x exp(-D / 10 s) for D the time since its
  // last sample; that is above 5 ms while D < 10 s ln 2 = 6.9 s, and this test takes a few ms
  // (tens under TSan). So from the pick at which every backend has a sample on, the slow one
  // loses every comparison: it gets no pick at all. Before that ("warm-up") it can win only
  // while unmeasured and idle (cost 0: once) or against a fast backend that is itself
  // unmeasured with its first request under way (2^1000). The warm-up is short: an
  // unmeasured idle backend wins whenever it is drawn (or ties with another unmeasured one),
  // and is measured at most 4 picks after; all 10 are drawn within 200 picks except with
  // probability 10 x 0.8^200 ~ 4e-19. So the slow share is at most (warm-up + 1) / 10 000
  // < 2%, against its even share of 10%, and 0 after the warm-up.
  //
  // And each fast backend wins every pick after the warm-up whose pair is itself and the
  // slow one: such pairs come up with probability 2 / (10 x 9) = 1/45 per pick, independent
  // of the state, so it gets at least Binomial(~9800, 1/45) picks: mean 218, sd 14.6; 5 sd
  // below is 145.
  constexpr std::size_t n = 10, slow = 7;
  constexpr int picks = 10'000;
  backend_registry r;
  add_weighted(r, std::vector<std::uint32_t>(n, 1));
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 114});
  auto picker = lb.make_picker();
  auto all_measured = [&] {
    for (std::size_t i = 0; i < n; ++i) {
      if (state(r, i).latency_estimate() == 0ns) return false;
    }
    return true;
  };
  std::vector<int> counts(n, 0);
  int warm_up = -1, slow_after_warm_up = 0;
  std::deque<std::pair<lease, std::size_t>> held;
  for (int k = 0; k < picks; ++k) {
    if (warm_up < 0 && all_measured()) warm_up = k;
    lease l = picker.pick();
    const std::size_t i = index_of(r, l);
    counts[i] += 1;
    slow_after_warm_up += warm_up >= 0 && i == slow;
    held.emplace_back(std::move(l), i);
    if (held.size() == 5) {
      auto& [oldest, j] = held.front();
      oldest.report(outcome::success, j == slow ? 10ms : 1ms);
      held.pop_front();
    }
  }
  CAPTURE(warm_up);
  CAPTURE(counts[slow]);
  REQUIRE(warm_up >= 0);
  CHECK(warm_up < 200);
  CHECK(slow_after_warm_up == 0);
  CHECK(counts[slow] >= 1);  // it was tried
  CHECK(counts[slow] <= warm_up + 1);
  CHECK(static_cast<double>(counts[slow]) / picks < 0.02);
  for (std::size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    if (i != slow) CHECK(counts[i] >= 145);
  }
  CHECK(state(r, slow).latency_estimate() == 10ms);
  CHECK(state(r, 0).latency_estimate() == 1ms);
  held.clear();
  for (std::size_t i = 0; i < n; ++i) CHECK(state(r, i).active() == 0);
}

TEST_CASE("least_response_time: unhealthy and draining members are never picked") {
  // Members 0..4: 1 and 3 are ineligible (unhealthy, draining) and as attractive as can be:
  // unmeasured and idle, cost 0 if they were candidates. 0, 2 and 4 are measured and slow.
  // Enabled 0, 1, 2, 4; healthy 3 of 4: no panic.
  backend_registry r;
  add_weighted(r, {1, 1, 1, 1, 1});
  REQUIRE(r.set_health(id_of(1), health::unhealthy));
  REQUIRE(r.drain(id_of(3)));
  const std::int64_t t0 = lbkit::detail::coarse_now_ns();
  for (std::size_t i : {0, 2, 4}) state(r, i).observe_latency(100ms, t0);
  balancer<least_response_time> lb(r, least_response_time{}, {.seed = 115});
  REQUIRE_FALSE(lb.current_plan()->panic);
  const auto& st = lb.current_plan()->policy_state;
  CHECK(st.cost_of(1, t0) == -1);  // not a candidate
  CHECK(st.cost_of(3, t0) == -1);
  CHECK(st.cost_of(0, t0) == 100 * ms);

  SUBCASE("released at once") {
    const auto counts = pick_counts(r, lb, 3000);
    CHECK(counts[1] == 0);
    CHECK(counts[3] == 0);
    CHECK(counts[0] + counts[2] + counts[4] == 3000);
  }
  SUBCASE("held, so that the eligible ones grow expensive") {
    auto picker = lb.make_picker();
    std::vector<lease> leases;
    for (int k = 0; k < 300; ++k) {
      leases.push_back(picker.pick());
      const std::size_t i = index_of(r, leases.back());
      CHECK((i == 0 || i == 2 || i == 4));
    }
    CHECK(state(r, 1).active() == 0);
    CHECK(state(r, 3).active() == 0);
  }
  SUBCASE("a single eligible member takes every pick") {
    REQUIRE(r.drain(id_of(0)));
    REQUIRE(r.drain(id_of(2)));
    const auto counts = pick_counts(r, lb, 100);
    CHECK(counts == std::vector<int>{0, 0, 0, 0, 100});
  }
}
