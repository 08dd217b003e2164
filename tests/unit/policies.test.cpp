// SPDX-License-Identifier: MIT
// The selection policies one by one: exact schedules, shares and load bounds, fixed seeds.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_registry.hpp>
#include <lbkit/balancer.hpp>
#include <lbkit/policy/least_connections.hpp>
#include <lbkit/policy/power_of_two_choices.hpp>
#include <lbkit/policy/round_robin.hpp>
#include <lbkit/policy/weighted_random.hpp>
#include <lbkit/policy/weighted_round_robin.hpp>
#include <lbkit/selection_policy.hpp>

#include "../support/backends.hpp"

using lbkit::backend_registry;
using lbkit::balancer;
using lbkit::change_set;
using lbkit::health;
using lbkit::lease;

namespace {

using lbkit::test::add_weighted;
using lbkit::test::id_of;
using lbkit::test::make;

void add_equal(backend_registry& r, std::size_t n) {
  add_weighted(r, std::vector<std::uint32_t>(n, 1));
}

// The snapshot index of the backend a lease holds; REQUIREs that it holds one of them.
std::size_t index_of(const backend_registry& r, const lease& l) {
  REQUIRE(l);
  const auto members = r.current()->members();
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (&members[i].state() == &l.backend()) return i;
  }
  FAIL("the lease holds a backend that is not in the registry");
  return members.size();
}

// Picks `count` times, releasing each lease at once, and returns the member indices.
template <class Picker>
std::vector<std::size_t> pick_indices(const backend_registry& r, Picker& p, std::size_t count) {
  std::vector<std::size_t> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) out.push_back(index_of(r, p.pick()));
  return out;
}

std::vector<std::size_t> histogram(const std::vector<std::size_t>& picks, std::size_t n) {
  std::vector<std::size_t> h(n, 0);
  for (auto i : picks) h.at(i) += 1;
  return h;
}

// Requests begun on each member (every pick begins one), in snapshot order.
std::vector<std::uint64_t> requests(const backend_registry& r) {
  std::vector<std::uint64_t> out;
  for (const auto& m : r.current()->members()) out.push_back(m.state().requests());
  return out;
}

std::vector<std::int64_t> in_flight(const backend_registry& r) {
  std::vector<std::int64_t> out;
  for (const auto& m : r.current()->members())
    out.push_back(static_cast<std::int64_t>(m.state().totals().in_flight()));
  return out;
}

std::size_t longest_run(const std::vector<std::uint32_t>& cycle, bool (*match)(std::uint32_t)) {
  // The cycle repeats, so a run may wrap from its end to its start: walk it twice.
  std::size_t run = 0, best = 0;
  for (std::size_t k = 0; k < 2 * cycle.size(); ++k) {
    run = match(cycle[k % cycle.size()]) ? run + 1 : 0;
    best = std::max(best, run);
  }
  return std::min(best, cycle.size());
}

}  // namespace

// ---- pick_rng -----------------------------------------------------------------------------

TEST_CASE("pick_rng::below(n) is always below n, 1 and UINT32_MAX included") {
  lbkit::pick_rng rng(0x5eed);
  const std::uint32_t ns[] = {
      1, 2, 3, 7, 10, 1000, 4096, 1'000'003u, 1u << 31, (1u << 31) + 1, UINT32_MAX - 1, UINT32_MAX};
  for (const std::uint32_t n : ns) {
    CAPTURE(n);
    std::size_t out_of_range = 0;
    std::uint32_t largest = 0;
    for (int k = 0; k < 20000; ++k) {
      const std::uint32_t v = rng.below(n);
      out_of_range += v >= n;
      largest = std::max(largest, v);
    }
    CHECK(out_of_range == 0);
    // And it uses the range: the largest of 20000 uniform draws falls below 0.999 n with
    // probability 0.999^20000 < 1e-8 (for n = 1 it is 0, as it must be).
    CHECK(static_cast<double>(largest) >= (n == 1 ? 0.0 : 0.999 * static_cast<double>(n - 1)));
  }
}

TEST_CASE("pick_rng::below(n) reaches every value of a small range, and a seed fixes the stream") {
  lbkit::pick_rng rng(42);
  for (std::uint32_t n = 2; n <= 16; ++n) {
    CAPTURE(n);
    std::vector<int> seen(n, 0);
    // Missing one of n <= 16 values in 2000 uniform draws: probability < 16 (15/16)^2000.
    for (int k = 0; k < 2000; ++k) seen.at(rng.below(n)) = 1;
    CHECK(std::accumulate(seen.begin(), seen.end(), 0) == static_cast<int>(n));
  }
  lbkit::pick_rng a(7), b(7), c(8);
  bool same = true, differs = false;
  for (int k = 0; k < 100; ++k) {
    const auto x = a.next();
    same = same && x == b.next();
    differs = differs || x != c.next();
  }
  CHECK(same);
  CHECK(differs);
}

// ---- round_robin --------------------------------------------------------------------------

TEST_CASE("round_robin: one picker walks the id order, so every n consecutive picks cover all") {
  constexpr std::size_t n = 5;
  backend_registry r;
  add_equal(r, n);
  balancer<lbkit::round_robin> lb(r, lbkit::round_robin{}, {.seed = 11});
  auto picker = lb.make_picker();
  // A single picker claims batches of positions that are consecutive in the one global
  // order (nobody else claims in between), so its picks are the cyclic id order itself from a
  // seeded start: each pick is the successor of the previous one, and any window of n picks
  // is a permutation of the members.
  constexpr std::size_t batch = lbkit::detail::sequence::batch;
  const auto picks = pick_indices(r, picker, batch * n * 3 + 7);
  for (std::size_t k = 1; k < picks.size(); ++k) {
    CAPTURE(k);
    CHECK(picks[k] == (picks[k - 1] + 1) % n);
  }
  for (std::size_t k = 0; k + n <= picks.size(); ++k) {
    std::set<std::size_t> window(picks.begin() + static_cast<std::ptrdiff_t>(k),
                                 picks.begin() + static_cast<std::ptrdiff_t>(k + n));
    CHECK(window.size() == n);
  }
}

TEST_CASE("round_robin: two interleaved pickers share one global order exactly") {
  // n = 5 does not divide the batch of 256, so neither picker alone is balanced: a batch of
  // 256 positions covers one member 52 times and the others 51 times. But every batch either
  // picker claims is the next 256 positions of the one sequence (one fetch_add each), and each
  // picker makes 256 n k picks, i.e. uses exactly n k whole batches. Together they use 2 n k
  // batches = 512 n k consecutive positions of a cyclic order of length n: exactly
  // 2 * 256 * k picks of each member, however the two interleave.
  constexpr std::size_t batch = lbkit::detail::sequence::batch;
  static_assert(batch % 5 != 0);
  constexpr std::size_t n = 5, k = 3, per_picker = batch * n * k;
  backend_registry r;
  add_equal(r, n);
  balancer<lbkit::round_robin> lb(r, lbkit::round_robin{}, {.seed = 12});
  auto a = lb.make_picker();
  auto b = lb.make_picker();
  std::vector<std::size_t> from_a, from_b;
  // An irregular interleaving: a takes 1..7 picks, then b 1..5, and so on.
  for (std::size_t step = 0; from_a.size() < per_picker || from_b.size() < per_picker; ++step) {
    for (std::size_t j = 0; j <= step % 7 && from_a.size() < per_picker; ++j) {
      from_a.push_back(index_of(r, a.pick()));
    }
    for (std::size_t j = 0; j <= step % 5 && from_b.size() < per_picker; ++j) {
      from_b.push_back(index_of(r, b.pick()));
    }
  }
  const auto ha = histogram(from_a, n), hb = histogram(from_b, n);
  for (std::size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(ha[i] + hb[i] == 2 * batch * k);
  }
  // Within a batch each picker walks consecutive positions.
  for (const auto* picks : {&from_a, &from_b}) {
    for (std::size_t j = 1; j < picks->size(); ++j) {
      if (j % batch != 0) CHECK((*picks)[j] == ((*picks)[j - 1] + 1) % n);
    }
  }
}

TEST_CASE("round_robin: ineligible backends are skipped and the rest alternate") {
  backend_registry r;
  add_equal(r, 5);
  REQUIRE(r.drain(id_of(1)));
  REQUIRE(r.set_weight(id_of(3), 0));
  REQUIRE(r.set_health(id_of(4), health::unhealthy));  // 2 of 3 enabled healthy: no panic
  balancer<lbkit::round_robin> lb(r, lbkit::round_robin{}, {.seed = 13});
  REQUIRE_FALSE(lb.current_plan()->panic);
  auto picker = lb.make_picker();
  const auto picks = pick_indices(r, picker, 100);
  for (std::size_t k = 0; k < picks.size(); ++k) {
    CAPTURE(k);
    CHECK((picks[k] == 0 || picks[k] == 2));
    if (k > 0) CHECK(picks[k] != picks[k - 1]);
  }
}

// ---- weighted_round_robin -----------------------------------------------------------------

TEST_CASE("weighted_round_robin: the cycle holds each eligible member weight/gcd times") {
  struct example {
    std::vector<std::uint32_t> weights;
    std::vector<std::size_t> expected;  // slots per member in one cycle
  };
  // clang-format off
  const example examples[] = {
      {{5, 1, 1}, {5, 1, 1}},
      {{10, 20, 30}, {1, 2, 3}},
      {{6, 4}, {3, 2}},
      {{7, 7, 7, 7}, {1, 1, 1, 1}},
      {{3, 5, 7}, {3, 5, 7}},
  };
  // clang-format on
  for (const auto& ex : examples) {
    CAPTURE(ex.weights.size());
    CAPTURE(ex.weights[0]);
    backend_registry r;
    add_weighted(r, ex.weights);
    balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin{}, {.seed = 21});
    const auto& cycle = lb.current_plan()->policy_state.cycle();
    CHECK(cycle.size() == std::accumulate(ex.expected.begin(), ex.expected.end(), std::size_t{0}));
    std::vector<std::size_t> got(ex.weights.size(), 0);
    for (auto m : cycle) got.at(m) += 1;
    CHECK(got == ex.expected);
  }
}

TEST_CASE("weighted_round_robin: ineligible members are not in the cycle") {
  backend_registry r;
  add_weighted(r, {2, 3, 4, 5});
  REQUIRE(r.drain(id_of(0)));
  REQUIRE(r.set_health(id_of(2), health::unhealthy));  // 2 of 3 enabled healthy
  balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin{}, {.seed = 22});
  const auto& cycle = lb.current_plan()->policy_state.cycle();
  std::vector<std::size_t> got(4, 0);
  for (auto m : cycle) got.at(m) += 1;
  CHECK(got == std::vector<std::size_t>{0, 3, 0, 5});
}

TEST_CASE("weighted_round_robin: weights 5,1,1 give a b a a a c a up to rotation") {
  // The header's claim, derived from its deadlines: phases frac(k * 0.618...) are a 0.618,
  // b 0.236, c 0.854, so a is due at 0.124 0.324 0.524 0.724 0.924, b at 0.236, c at 0.854.
  backend_registry r;
  add_weighted(r, {5, 1, 1});
  balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin{}, {.seed = 23});
  const auto cycle = lb.current_plan()->policy_state.cycle();
  const std::vector<std::uint32_t> expected = {0, 1, 0, 0, 0, 2, 0};  // a b a a a c a
  REQUIRE(cycle.size() == expected.size());
  bool is_rotation = false;
  for (std::size_t s = 0; s < cycle.size(); ++s) {
    auto rotated = cycle;
    std::rotate(rotated.begin(), rotated.begin() + static_cast<std::ptrdiff_t>(s), rotated.end());
    is_rotation = is_rotation || rotated == expected;
  }
  CHECK(is_rotation);
}

TEST_CASE("weighted_round_robin: one picker's picks are the cycle, so 3 cycles give exact shares") {
  backend_registry r;
  add_weighted(r, {3, 5, 7});
  balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin{}, {.seed = 24});
  const auto plan = lb.current_plan();
  const auto& cycle = plan->policy_state.cycle();
  REQUIRE(cycle.size() == 15);
  auto picker = lb.make_picker();
  // A lone picker claims consecutive batches of the global order, so its picks are the cycle
  // read from a seeded offset; 3 * 15 of them are three whole cycles in some rotation.
  const auto picks = pick_indices(r, picker, 3 * cycle.size());
  CHECK(histogram(picks, 3) == std::vector<std::size_t>{9, 15, 21});
  const auto start = std::find(cycle.begin(), cycle.end(), picks[0]) - cycle.begin();
  bool follows_cycle = false;
  for (std::size_t s = static_cast<std::size_t>(start); s < cycle.size() && !follows_cycle; ++s) {
    bool ok = true;
    for (std::size_t k = 0; k < picks.size() && ok; ++k) ok = picks[k] == cycle[(s + k) % 15];
    follows_cycle = ok;
  }
  CHECK(follows_cycle);
}

TEST_CASE("weighted_round_robin: weights 1000 and 999 x 1 interleave, not burst") {
  // The heavy backend's deadlines are (k + 0.618) / 1000: one every 1/1000. The light ones
  // (members 1..999, phases frac(j * 0.618) for j = 2..1000, weight 1) are due once each at
  // their phase. By the three-distance theorem those 999 points split the circle into gaps
  // of three lengths; for the golden ratio and these j they are 0.453/999, 0.733/999 and
  // 1.185/999 (computed). A heavy run of r slots needs r heavy deadlines between two
  // consecutive light ones, i.e. a gap >= (r - 1)/1000: so r <= 2. A light run of r needs r
  // light deadlines within 1/1000 of each other: (r - 1) * 0.453/999 <= 1/1000 gives r <= 3.
  // Plain EDF without phases (all light deadlines at 0) would send the 999 light backends in
  // a row and then the heavy one 999 times in a row.
  std::vector<std::uint32_t> weights(1000, 1);
  weights[0] = 1000;
  backend_registry r;
  add_weighted(r, weights);
  balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin{}, {.seed = 25});
  const auto& cycle = lb.current_plan()->policy_state.cycle();
  REQUIRE(cycle.size() == 1999);
  CHECK(std::count(cycle.begin(), cycle.end(), 0u) == 1000);
  CHECK(std::set<std::uint32_t>(cycle.begin(), cycle.end()).size() == 1000);
  CHECK(longest_run(cycle, [](std::uint32_t m) { return m == 0; }) <= 2);
  CHECK(longest_run(cycle, [](std::uint32_t m) { return m != 0; }) <= 3);
}

TEST_CASE("weighted_round_robin: huge co-prime weights are scaled into max_table slots") {
  // 1'000'000 = 2^6 5^6, 999'999 = 3^3 7 11 13 37, 999'983 is prime: gcd 1, sum W = 2'999'982
  // > C = 2^20 slots. Each weight becomes w' = max(1, floor(w C / W)), so wC/W - 1 < w' <= wC/W
  // + 1 (the max(1) only lifts a value below 1), and the cycle length S' = sum w' lies within
  // n of C. Then |w'/S' - w/W| = |(w' - wC/W) - (w/W)(S' - C)| / S' <= (1 + n) / (C - n).
  const std::vector<std::uint32_t> weights = {1'000'000, 999'999, 999'983};
  constexpr std::size_t n = 3, table = std::size_t{1} << 20;
  const double total = 1'000'000.0 + 999'999.0 + 999'983.0;
  backend_registry r;
  add_weighted(r, weights);
  balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin{}, {.seed = 26});
  const auto& cycle = lb.current_plan()->policy_state.cycle();
  CHECK(cycle.size() <= table + n);
  CHECK(cycle.size() >= table - n);
  std::vector<std::size_t> got(n, 0);
  for (auto m : cycle) got.at(m) += 1;
  const double bound = static_cast<double>(n + 1) / static_cast<double>(table - n);
  for (std::size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    const double share = static_cast<double>(got[i]) / static_cast<double>(cycle.size());
    CHECK(std::abs(share - weights[i] / total) <= bound);
  }
}

TEST_CASE("weighted_round_robin: a tiny max_table still gives every member a slot") {
  // C = 100, weights 1 and 10^6: w' = max(1, floor(100 / 1000001)) = 1 and
  // floor(10^8 / 1000001) = 99, so the cycle is 100 slots, 1 of them the light backend's.
  backend_registry r;
  add_weighted(r, {1, 1'000'000});
  balancer<lbkit::weighted_round_robin> lb(r, lbkit::weighted_round_robin(100), {.seed = 27});
  const auto& cycle = lb.current_plan()->policy_state.cycle();
  REQUIRE(cycle.size() == 100);
  CHECK(std::count(cycle.begin(), cycle.end(), 0u) == 1);
  CHECK(std::count(cycle.begin(), cycle.end(), 1u) == 99);
}

// ---- weighted_random ----------------------------------------------------------------------

namespace {

// Each member's count of N independent picks is Binomial(N, p_i): mean N p_i, standard
// deviation sd_i = sqrt(N p_i (1 - p_i)). |count - N p_i| > 5 sd_i has probability below
// 6e-7 per member by the normal approximation (N p_i >= 10^5 here, so it is accurate): a
// correct alias table passes, and with a fixed seed it passes every run. What it can catch
// is bounded the same way: a probability off by d shows once N d is well beyond 5 sd, i.e.
// d >~ 2.5e-3 for N = 10^6 (2.5% of p = 0.1); smaller errors need a larger N.
void check_within_5_sd(const std::vector<std::uint64_t>& counts, const std::vector<double>& weights,
                       std::uint64_t n) {
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  for (std::size_t i = 0; i < counts.size(); ++i) {
    CAPTURE(i);
    CAPTURE(counts[i]);
    const double p = weights[i] / total;
    const double mean = static_cast<double>(n) * p;
    const double sd = std::sqrt(static_cast<double>(n) * p * (1 - p));
    CHECK(std::abs(static_cast<double>(counts[i]) - mean) <= 5 * sd);
  }
}

}  // namespace

TEST_CASE("weighted_random: weights 1,2,3,4 over a million picks, each count within 5 sd") {
  // p = 0.1 .. 0.4, N = 10^6: sd = 300, 400, 458, 490 picks around 100k, 200k, 300k, 400k.
  constexpr std::uint64_t n = 1'000'000;
  backend_registry r;
  add_weighted(r, {1, 2, 3, 4});
  balancer<lbkit::weighted_random> lb(r, lbkit::weighted_random{}, {.seed = 31});
  auto picker = lb.make_picker();
  std::uint64_t empty = 0;
  for (std::uint64_t k = 0; k < n; ++k) empty += !picker.pick();
  REQUIRE(empty == 0);
  const auto counts = requests(r);
  CHECK(std::accumulate(counts.begin(), counts.end(), std::uint64_t{0}) == n);
  check_within_5_sd(counts, {1, 2, 3, 4}, n);
}

TEST_CASE("weighted_random: equal weights are uniform within 5 sd") {
  // 5 members, p = 0.2, N = 500'000: mean 100'000, sd = sqrt(N 0.2 0.8) ~ 283.
  constexpr std::uint64_t n = 500'000;
  backend_registry r;
  add_weighted(r, {9, 9, 9, 9, 9});
  balancer<lbkit::weighted_random> lb(r, lbkit::weighted_random{}, {.seed = 32});
  auto picker = lb.make_picker();
  std::uint64_t empty = 0;
  for (std::uint64_t k = 0; k < n; ++k) empty += !picker.pick();
  REQUIRE(empty == 0);
  check_within_5_sd(requests(r), {1, 1, 1, 1, 1}, n);
}

TEST_CASE("weighted_random: weight-0, draining and unhealthy members are never drawn") {
  // Members: 0 weight 2, 1 weight 0, 2 weight 3 unhealthy, 3 weight 1, 4 weight 1 draining.
  // Enabled: 0, 2, 3; healthy 2 of 3 >= 50%, so no panic and the eligible weights are 2, 1.
  constexpr std::uint64_t n = 300'000;
  backend_registry r;
  add_weighted(r, {2, 0, 3, 1, 1});
  REQUIRE(r.set_health(id_of(2), health::unhealthy));
  REQUIRE(r.drain(id_of(4)));
  balancer<lbkit::weighted_random> lb(r, lbkit::weighted_random{}, {.seed = 33});
  REQUIRE_FALSE(lb.current_plan()->panic);
  auto picker = lb.make_picker();
  std::uint64_t empty = 0;
  for (std::uint64_t k = 0; k < n; ++k) empty += !picker.pick();
  REQUIRE(empty == 0);
  const auto counts = requests(r);
  CHECK(counts[1] == 0);
  CHECK(counts[2] == 0);
  CHECK(counts[4] == 0);
  check_within_5_sd({counts[0], counts[3]}, {2, 1}, n);
}

// ---- least_connections --------------------------------------------------------------------

TEST_CASE("least_connections: held leases spread exactly evenly over equal weights") {
  // Every pick goes to a backend of least load, so in-flight counts never differ by more than
  // one: after 30 held picks over 3 backends, exactly 10 each.
  backend_registry r;
  add_equal(r, 3);
  balancer<lbkit::least_connections> lb(r, lbkit::least_connections{}, {.seed = 41});
  auto picker = lb.make_picker();
  std::vector<lease> held;
  for (int k = 0; k < 30; ++k) {
    held.push_back(picker.pick());
    REQUIRE(held.back());
    const auto f = in_flight(r);
    CHECK(*std::max_element(f.begin(), f.end()) - *std::min_element(f.begin(), f.end()) <= 1);
  }
  CHECK(in_flight(r) == std::vector<std::int64_t>{10, 10, 10});
  held.clear();
  CHECK(in_flight(r) == std::vector<std::int64_t>{0, 0, 0});
}

TEST_CASE("least_connections: held leases follow weights 1,2,3 exactly") {
  // Each pick goes to a backend of least a_i / w_i. Then (a_i - 1) / w_i <= min_j a_j / w_j
  // holds throughout (backend i got its last lease when a_i - 1 was the least load, and loads
  // only grow), so after k * sum(w) picks every a_i is exactly k * w_i: one a_i above it
  // would make (a_i - 1) / w_i >= k exceed some a_j / w_j < k. That holds whatever order
  // ties are broken in along the way.
  backend_registry r;
  add_weighted(r, {1, 2, 3});
  balancer<lbkit::least_connections> lb(r, lbkit::least_connections{}, {.seed = 42});
  auto picker = lb.make_picker();
  std::vector<lease> held;
  // The first three picks find every backend idle, then each one loaded 1/w_i.
  for (int k = 0; k < 3; ++k) held.push_back(picker.pick());
  CHECK(in_flight(r) == std::vector<std::int64_t>{1, 1, 1});
  for (int k = 3; k < 60; ++k) held.push_back(picker.pick());
  CHECK(std::all_of(held.begin(), held.end(), [](const lease& l) { return bool(l); }));
  CHECK(in_flight(r) == std::vector<std::int64_t>{10, 20, 30});
  held.clear();
  CHECK(in_flight(r) == std::vector<std::int64_t>{0, 0, 0});
  CHECK(requests(r) == std::vector<std::uint64_t>{10, 20, 30});
}

// One request at a time: every load is 0 at each pick, so the picks must follow the weights
// (nginx's least_conn and Envoy's weighted least request do). A load of (a + 1) / w instead
// sent every such pick to the heaviest backend; P2C drawing its two candidates uniformly gave
// the weight-2 backend of 1,1,2 a share of 2/3 * 2/3 = 44% instead of 50%.
// Each count is Binomial(N, w_i / sum w): within 5 sd (see check_within_5_sd).
TEST_CASE_TEMPLATE("least-request policies: one request at a time follows the weights", Policy,
                   lbkit::least_connections, lbkit::power_of_two_choices) {
  constexpr std::uint64_t n = 40'000;  // sd = 87 and 100 picks around 10k, 10k, 20k
  backend_registry r;
  add_weighted(r, {1, 1, 2});
  balancer<Policy> lb(r, Policy{}, {.seed = 45});
  auto picker = lb.make_picker();
  const auto h = histogram(pick_indices(r, picker, n), 3);
  check_within_5_sd({h[0], h[1], h[2]}, {1, 1, 2}, n);
}

// Many requests at a time: the loads per weight stay level. Held leases never end, so the
// in-flight counts are the counts of picks. least_connections is exact (the case above).
// P2C: a backend whose load per weight is above another's wins only against a draw of itself
// or of a backend still heavier, so the spread stays O(1) per unit of weight (for equal
// weights the max is mean + ln ln n / ln 2 + O(1), Berenbrink et al. 2006); asserted: within
// 3 per unit of weight of k * w_i after 4 000 picks. Ignoring load (weighted_random) would
// leave the weight-1 backends at 1000 +- 27 (one sd), out of that bound nearly always.
TEST_CASE_TEMPLATE("least-request policies: many requests at a time level the load per weight",
                   Policy, lbkit::least_connections, lbkit::power_of_two_choices) {
  constexpr std::int64_t k = 1000;  // picks per unit of weight
  backend_registry r;
  add_weighted(r, {1, 1, 2});
  balancer<Policy> lb(r, Policy{}, {.seed = 46});
  auto picker = lb.make_picker();
  std::vector<lease> held;
  for (std::int64_t i = 0; i < 4 * k; ++i) {
    held.push_back(picker.pick());
    REQUIRE(held.back());
  }
  const auto f = in_flight(r);
  const std::int64_t w[] = {1, 1, 2};
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    CAPTURE(f[i]);
    CHECK(std::abs(f[i] - k * w[i]) <= 3 * w[i]);
  }
}

TEST_CASE("least_connections: the least loaded backend wins over a heavier one") {
  // Weights 1, 3: with one lease held on the weight-3 backend (load 1/3) every next pick goes
  // to the idle weight-1 backend (load 0); with that one held too (1 > 1/3), to the weight-3
  // one. Loads, not weights, decide once they differ.
  backend_registry r;
  add_weighted(r, {1, 3});
  balancer<lbkit::least_connections> lb(r, lbkit::least_connections{}, {.seed = 44});
  auto picker = lb.make_picker();
  std::vector<lease> held;
  while (held.empty()) {
    lease l = picker.pick();
    if (index_of(r, l) == 1) held.push_back(std::move(l));
  }
  CHECK(histogram(pick_indices(r, picker, 200), 2) == std::vector<std::size_t>{200, 0});
  held.push_back(picker.pick());
  REQUIRE(index_of(r, held.back()) == 0);
  CHECK(histogram(pick_indices(r, picker, 200), 2) == std::vector<std::size_t>{0, 200});
}

TEST_CASE("least_connections: above scan_limit it samples, and still spreads held picks") {
  // least_connections(4) over 50 backends draws 4 random candidates (with replacement) and
  // takes the least loaded. With m = 500 held picks (mean 10) the greedy d-choice process
  // keeps the maximum at m/n + ln ln n / ln d + O(1) = 10 + 1 + O(1) (Azar, Broder, Karlin and
  // Upfal; Berenbrink et al. for m >> n), and the minimum close to the mean too, since an
  // idle backend wins whenever it is drawn. The bound asserted, 10 +- 5, is loose; but a pick
  // that only looked at the first `scan_limit` candidates would put 125 on each of 4 backends,
  // and one that ignored load would reach about 20 (see the power_of_two_choices case).
  constexpr std::size_t n = 50, m = 500, mean = m / n;
  backend_registry r;
  add_equal(r, n);
  balancer<lbkit::least_connections> lb(r, lbkit::least_connections(4), {.seed = 43});
  auto picker = lb.make_picker();
  std::vector<lease> held;
  for (std::size_t k = 0; k < m; ++k) {
    held.push_back(picker.pick());
    REQUIRE(held.back());
  }
  const auto f = in_flight(r);
  CHECK(std::accumulate(f.begin(), f.end(), std::int64_t{0}) == std::int64_t{m});
  CHECK(*std::max_element(f.begin(), f.end()) <= std::int64_t{mean + 5});
  CHECK(*std::min_element(f.begin(), f.end()) >= std::int64_t{mean - 5});
}

// ---- power_of_two_choices -----------------------------------------------------------------

namespace {

// Max in-flight count after m held picks over n equal backends.
template <class Policy>
std::int64_t max_in_flight(Policy policy, std::size_t n, std::size_t m, std::uint64_t seed) {
  backend_registry r;
  add_equal(r, n);
  balancer<Policy> lb(r, policy, {.seed = seed});
  auto picker = lb.make_picker();
  std::vector<lease> held;
  for (std::size_t k = 0; k < m; ++k) {
    held.push_back(picker.pick());
    REQUIRE(held.back());
  }
  const auto f = in_flight(r);
  REQUIRE(std::accumulate(f.begin(), f.end(), std::int64_t{0}) == std::int64_t(m));
  return *std::max_element(f.begin(), f.end());
}

}  // namespace

TEST_CASE("power_of_two_choices: held picks stay within mean + 5, one random choice does not") {
  // m = 1000 held picks over n = 100 backends, mean 10. Two choices: the maximum is
  // m/n + ln ln n / ln 2 + O(1) = 10 + 2.2 + O(1) with high probability (Mitzenmacher 2001;
  // Berenbrink, Czumaj, Steger and Voecking 2006 for m >> n); bound asserted: 15.
  // One random choice: m/n + Theta(sqrt(m ln n / n)); sqrt(2 * 10 * ln 100) ~ 9.6, so about
  // 19-20; P(max <= 15) = P(Binomial(1000, 0.01) <= 15)^100 ~ 0.95^100 < 1%. With seed 51 both
  // hold (two choices: 12; one choice, weighted_random with equal weights: 16), which shows
  // the bound tells the two apart. (Seed 51 was the first tried.)
  constexpr std::size_t n = 100, m = 1000, mean = m / n;
  constexpr std::uint64_t seed = 51;
  CHECK(max_in_flight(lbkit::power_of_two_choices{}, n, m, seed) <= std::int64_t{mean + 5});
  CHECK(max_in_flight(lbkit::weighted_random{}, n, m, seed) > std::int64_t{mean + 5});
}

TEST_CASE("power_of_two_choices: the less loaded of two backends always wins") {
  // n = 2: with one lease held on A (load 2 against 1), every next pick must be B. (With
  // n <= choices the engine compares all candidates; the next case covers sampling.)
  backend_registry r;
  add_equal(r, 2);
  balancer<lbkit::power_of_two_choices> lb(r, lbkit::power_of_two_choices{}, {.seed = 52});
  auto picker = lb.make_picker();
  const lease held = picker.pick();
  const std::size_t a = index_of(r, held);
  for (int k = 0; k < 1000; ++k) {
    CAPTURE(k);
    CHECK(index_of(r, picker.pick()) == 1 - a);
  }
}

TEST_CASE("power_of_two_choices: the two sampled choices are distinct") {
  // n = 3 > 2 choices, so it samples (n = 2 is a full scan). With one lease held on A, A has
  // load 2 and the others 1: two distinct draws always include a lighter backend, so A is
  // never picked. Draws with replacement would give (A, A) with probability 1/9 per pick:
  // about 111 times in 1000.
  backend_registry r;
  add_equal(r, 3);
  balancer<lbkit::power_of_two_choices> lb(r, lbkit::power_of_two_choices{}, {.seed = 53});
  auto picker = lb.make_picker();
  const lease held = picker.pick();
  const std::size_t a = index_of(r, held);
  std::vector<std::size_t> counts(3, 0);
  for (int k = 0; k < 1000; ++k) counts[index_of(r, picker.pick())] += 1;
  CHECK(counts[a] == 0);
  // And the other two share the rest (each is drawn with A in 1/3 of the pairs and wins them,
  // ties between them go to the first drawn): both get picks.
  CHECK(counts[(a + 1) % 3] > 0);
  CHECK(counts[(a + 2) % 3] > 0);
}
