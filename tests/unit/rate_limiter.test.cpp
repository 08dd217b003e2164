// SPDX-License-Identifier: MIT
// rate_limiter: token_bucket arithmetic on synthetic time (burst, refill rate, wait_time exact
// to the nanosecond, time going backwards, huge gaps, bad counts), options, and rate_limiter
// (independent keys, LRU eviction at capacity, retry_after, address keys, expire(), no
// allocation on a hit), and four threads whose total admitted per key never exceeds
// burst + rate × window. No test sleeps.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/net/rate_limiter.hpp>

#include "../support/allocation_counter.hpp"

using lbkit::rate_limiter;
using lbkit::rate_limiter_options;
using lbkit::token_bucket;
using lbkit::token_bucket_options;
using std::chrono::nanoseconds;

namespace {

constexpr std::int64_t ms = 1'000'000;  // one millisecond in nanoseconds
constexpr std::int64_t s = 1'000'000'000;
constexpr auto never = nanoseconds::max();

token_bucket_options bucket(double rate, double burst) {
  token_bucket_options o;
  o.rate_per_second = rate;
  o.burst = burst;
  return o;
}

rate_limiter_options limiter(double rate, double burst, std::size_t capacity,
                             std::size_t shards = 1) {
  rate_limiter_options o;
  o.bucket = bucket(rate, burst);
  o.capacity = capacity;
  o.shards = shards;
  o.seed = 42;
  return o;
}

lbkit::ip_address ip(std::string_view text) {
  auto r = lbkit::ip_address::parse(text);
  if (!r) FAIL("bad address " << std::string(text));
  return *r;
}

}  // namespace

TEST_CASE("token_bucket: starts full, lets a burst through, then refills at the rate") {
  token_bucket b(bucket(10, 5));  // 10 a second, bursts of 5
  CHECK(b.available(0) == 5);
  for (int i = 0; i < 5; ++i) CHECK(b.try_acquire(0));
  CHECK_FALSE(b.try_acquire(0));
  CHECK(b.available(0) == 0);
  // One token every 100 ms, exactly.
  CHECK_FALSE(b.try_acquire(100 * ms - 1));
  CHECK(b.try_acquire(100 * ms));
  CHECK_FALSE(b.try_acquire(100 * ms));
  CHECK(b.available(150 * ms) == doctest::Approx(0.5));
  CHECK(b.try_acquire(200 * ms));
  // Idle for long: back to the burst, no more.
  CHECK(b.available(10 * s) == 5);
  for (int i = 0; i < 5; ++i) CHECK(b.try_acquire(10 * s));
  CHECK_FALSE(b.try_acquire(10 * s));
  // Over a window of w seconds: burst + rate × w, here 5 + 10 × 2 = 25 at one call a ms.
  token_bucket c(bucket(10, 5));
  int allowed = 0;
  for (std::int64_t t = 0; t <= 2 * s; t += ms) allowed += c.try_acquire(t);
  CHECK(allowed == 25);
}

TEST_CASE("token_bucket: costs other than one, fractional rates") {
  token_bucket b(bucket(0.5, 4));  // one token every two seconds
  CHECK(b.try_acquire(0, 3));
  CHECK_FALSE(b.try_acquire(0, 2));  // 1 left: refused whole, nothing taken
  CHECK(b.available(0) == 1);
  CHECK(b.try_acquire(0, 1));
  CHECK(b.try_acquire(0, 0));  // free
  CHECK(b.wait_time(0, 2) == nanoseconds(4 * s));
  CHECK(b.try_acquire(4 * s, 2));
  CHECK(b.try_acquire(5 * s, 0.5));
  CHECK(b.available(5 * s) == 0);
  // More than the burst can never be taken; bad counts are refused.
  CHECK_FALSE(b.try_acquire(100 * s, 4.5));
  CHECK(b.wait_time(100 * s, 4.5) == never);
  CHECK_FALSE(b.try_acquire(100 * s, -1));
  CHECK_FALSE(b.try_acquire(100 * s, std::nan("")));
  CHECK(b.wait_time(100 * s, -1) == never);
  CHECK(b.wait_time(100 * s, std::nan("")) == never);
  CHECK(b.available(100 * s) == 4);  // refused calls took nothing
}

TEST_CASE("token_bucket: wait_time is exact to the nanosecond") {
  token_bucket b(bucket(10, 5));
  CHECK(b.wait_time(0) == nanoseconds(0));
  for (int i = 0; i < 5; ++i) CHECK(b.try_acquire(0));
  CHECK(b.wait_time(0) == nanoseconds(100 * ms));
  CHECK(b.wait_time(0, 3) == nanoseconds(300 * ms));
  CHECK(b.wait_time(40 * ms) == nanoseconds(60 * ms));
  CHECK(b.wait_time(100 * ms) == nanoseconds(0));
  CHECK(b.wait_time(0, 5) == nanoseconds(500 * ms));

  // The property, over many rates, levels and counts: acquiring at now + wait succeeds, at
  // now + wait - 1 fails. Rates like 3/s and 0.7/s have no exact nanosecond period.
  std::mt19937_64 rng(3);
  const double rates[] = {3, 0.7, 7, 10, 1234.5, 1e6, 1e9, 3e9, 1e-3};
  int checked = 0;
  for (const double rate : rates) {
    for (int round = 0; round < 300; ++round) {
      const double burst = 1 + static_cast<double>(rng() % 1000) / 7.0;
      token_bucket t(bucket(rate, burst));
      std::int64_t now = static_cast<std::int64_t>(rng() % (1000 * s)) - 500 * s;
      // Spend a random share, at a random time.
      (void)t.try_acquire(now, burst * static_cast<double>(rng() % 1000) / 1000.0);
      now += static_cast<std::int64_t>(rng() % (10 * ms));
      const double want = std::min(burst, static_cast<double>(rng() % 1000) / 100.0);
      const nanoseconds d = t.wait_time(now, want);
      CAPTURE(rate);
      CAPTURE(burst);
      CAPTURE(want);
      CAPTURE(d.count());
      REQUIRE(d != never);
      if (d.count() > 0) {
        token_bucket early = t;
        CHECK_FALSE(early.try_acquire(now + d.count() - 1, want));
      }
      token_bucket on_time = t;
      CHECK(on_time.try_acquire(now + d.count(), want));
      ++checked;
    }
  }
  CHECK(checked == 2700);

  // Deficits tiny next to the level, where the closed form loses its digits, at rates far
  // apart: the search still lands on the exact nanosecond.
  for (const double burst : {1.0, 1e6, 1e9, 1e12}) {
    for (const double deficit : {1e-7, 1e-3, 0.5, 1.0}) {
      for (const double rate : {1e-3, 1.0, 3.0, 1e6, 1e15}) {
        token_bucket t(bucket(rate, burst));
        (void)t.try_acquire(7, std::min(deficit, burst));
        const nanoseconds d = t.wait_time(7, burst);
        CAPTURE(burst);
        CAPTURE(deficit);
        CAPTURE(rate);
        CAPTURE(d.count());
        REQUIRE(d != never);
        if (d.count() > 0) {
          token_bucket early = t;
          CHECK_FALSE(early.try_acquire(7 + d.count() - 1, burst));
        }
        CHECK(t.try_acquire(7 + d.count(), burst));
      }
    }
  }
}

TEST_CASE("token_bucket: time going backwards adds nothing and breaks nothing") {
  token_bucket b(bucket(10, 5));
  for (int i = 0; i < 5; ++i) CHECK(b.try_acquire(s));
  // An earlier time (another thread's clock read): no refill, no refund.
  CHECK_FALSE(b.try_acquire(0));
  CHECK_FALSE(b.try_acquire(s - 1));
  CHECK(b.available(0) == 0);
  // Its wait counts from the latest time seen: 100 ms after 1 s.
  CHECK(b.wait_time(s - 40 * ms) == nanoseconds(140 * ms));
  // Then forward again: refilled from the latest time, not twice over the gap.
  CHECK(b.try_acquire(s + 100 * ms));
  CHECK_FALSE(b.try_acquire(s + 100 * ms));
  // Tokens present can still be taken at an earlier time.
  CHECK(b.available(s + 300 * ms) == doctest::Approx(2));
  CHECK(b.try_acquire(s + 300 * ms));
  CHECK(b.try_acquire(0));
  CHECK_FALSE(b.try_acquire(0));
  CHECK(b.available(s + 300 * ms) == doctest::Approx(0).epsilon(1e-9));

  // A wait from very far back saturates instead of overflowing.
  token_bucket slow(bucket(1e-9, 1));
  CHECK(slow.try_acquire(std::numeric_limits<std::int64_t>::max()));
  CHECK(slow.wait_time(std::numeric_limits<std::int64_t>::min()) == never);
}

TEST_CASE("token_bucket: huge gaps and extreme times refill without overflow") {
  constexpr auto lo = std::numeric_limits<std::int64_t>::min();
  constexpr auto hi = std::numeric_limits<std::int64_t>::max();
  token_bucket b(bucket(1e9, 3));
  CHECK(b.try_acquire(lo, 3));
  CHECK_FALSE(b.try_acquire(lo));
  CHECK(b.wait_time(lo) == nanoseconds(1));
  CHECK(b.available(hi) == 3);  // the whole int64 range in one step
  CHECK(b.try_acquire(hi, 3));
  CHECK_FALSE(b.try_acquire(hi));
  CHECK(b.wait_time(hi) == nanoseconds(1));  // would be past the int64 range; still finite

  // Slow rates: the wait may not fit in int64 nanoseconds.
  token_bucket slow(bucket(1e-12, 2));
  CHECK(slow.try_acquire(0, 2));
  CHECK(slow.wait_time(0) == never);  // 10^21 ns
  token_bucket year(bucket(1.0 / (365.0 * 86400.0), 1));
  CHECK(year.try_acquire(0));
  const auto w = year.wait_time(0);  // a year, give or take the rounding of 1 / 31536000
  CHECK(std::abs(w.count() - 365LL * 86400 * s) < 1000);
  token_bucket early = year;
  CHECK_FALSE(early.try_acquire(w.count() - 1));
  CHECK(year.try_acquire(w.count()));

  // The largest rate and burst (1e15), near the end of time: still exact.
  constexpr double top = token_bucket_options::max_value;
  token_bucket fast(bucket(top, top));
  CHECK(fast.try_acquire(hi - 2 * s, top));
  CHECK_FALSE(fast.try_acquire(hi - 2 * s));
  CHECK(fast.wait_time(hi - 2 * s, top) == nanoseconds(s));
  CHECK(fast.try_acquire(hi - s, top));
  CHECK(fast.wait_time(hi - s, 1e6) == nanoseconds(1));
}

TEST_CASE("token_bucket: options are validated, and clamped when not") {
  CHECK(lbkit::validate(bucket(10, 1)).has_value());
  CHECK(lbkit::validate(bucket(0.001, 1e6)).has_value());
  auto r = lbkit::validate(bucket(0, 5));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == lbkit::errc::out_of_range);
  CHECK(r.error().message ==
        "token bucket: rate_per_second must be a positive number up to 1e15, not 0");
  CHECK_FALSE(lbkit::validate(bucket(-1, 5)).has_value());
  CHECK_FALSE(lbkit::validate(bucket(std::nan(""), 5)).has_value());
  CHECK_FALSE(lbkit::validate(bucket(INFINITY, 5)).has_value());
  CHECK(lbkit::validate(bucket(1e15, 1e15)).has_value());
  r = lbkit::validate(bucket(2e15, 5));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message ==
        "token bucket: rate_per_second must be a positive number up to 1e15, not 2e+15");
  r = lbkit::validate(bucket(10, 0.5));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message == "token bucket: burst must be a number from 1 to 1e15, not 0.5");
  CHECK_FALSE(lbkit::validate(bucket(10, INFINITY)).has_value());
  CHECK_FALSE(lbkit::validate(bucket(10, 1.5e15)).has_value());
  CHECK_FALSE(lbkit::validate(bucket(10, std::nan(""))).has_value());
  CHECK_FALSE(lbkit::validate(token_bucket_options{}).has_value());  // both must be set

  // Clamped: a bucket always holds at least one token and refills at a positive rate.
  token_bucket z(bucket(0, 0));
  CHECK(z.options().burst == 1);
  CHECK(z.options().rate_per_second > 0);
  CHECK(z.try_acquire(0));
  CHECK_FALSE(z.try_acquire(100 * s));
  CHECK(z.wait_time(100 * s) == never);
  token_bucket n(bucket(std::nan(""), std::nan("")));
  CHECK(n.options().burst == 1);
  CHECK(n.options().rate_per_second > 0);
  token_bucket inf(bucket(INFINITY, 1e300));
  CHECK(inf.options().rate_per_second == token_bucket_options::max_value);
  CHECK(inf.options().burst == token_bucket_options::max_value);
  CHECK(inf.try_acquire(0, 1e15));
  CHECK_FALSE(inf.try_acquire(0, 1e300));
}

TEST_CASE("rate_limiter: keys have independent buckets; retry_after says when to come back") {
  rate_limiter l(limiter(10, 2, 100, 4));
  CHECK(l.capacity() == 100);
  CHECK(l.size() == 0);
  CHECK(l.acquire("alice", 0).allowed);
  CHECK(l.acquire("alice", 0).allowed);
  auto d = l.acquire("alice", 0);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == nanoseconds(100 * ms));
  d = l.acquire("alice", 30 * ms);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == nanoseconds(70 * ms));
  CHECK(std::chrono::ceil<std::chrono::seconds>(d.retry_after).count() == 1);  // Retry-After: 1
  // Others are untouched.
  CHECK(l.acquire("bob", 30 * ms).allowed);
  CHECK(l.acquire(std::string("bob"), 30 * ms).allowed);
  CHECK_FALSE(l.acquire("bob", 30 * ms).allowed);
  CHECK(l.acquire("", 30 * ms).allowed);  // the empty key is a key
  CHECK(l.size() == 3);
  // Coming back on time works, and an allowed decision has no wait.
  d = l.acquire("alice", 100 * ms);
  CHECK(d.allowed);
  CHECK(d.retry_after == nanoseconds(0));
  // Costs: more than the burst is refused for good.
  d = l.acquire("carol", 0, 3);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == never);
  d = l.acquire("carol", 0, 2);
  CHECK(d.allowed);
  d = l.acquire("carol", 0, 2);
  CHECK(d.retry_after == nanoseconds(200 * ms));
}

TEST_CASE("rate_limiter: at capacity the least recently used key is evicted, and comes back full") {
  rate_limiter l(limiter(1, 3, 2));  // one shard of two keys; a token a second
  for (int i = 0; i < 3; ++i) CHECK(l.acquire("a", 0).allowed);
  CHECK_FALSE(l.acquire("a", 0).allowed);
  for (int i = 0; i < 3; ++i) CHECK(l.acquire("b", 0).allowed);
  CHECK(l.size() == 2);
  // "a" is now the least recently used... until it is used again (refused requests count).
  CHECK_FALSE(l.acquire("a", 1).allowed);
  CHECK(l.acquire("c", 2).allowed);  // evicts "b"
  CHECK(l.size() == 2);
  CHECK_FALSE(l.acquire("a", 3).allowed);  // "a" kept its empty bucket
  // "b" was forgotten: it returns with a full bucket (the documented trade-off).
  for (int i = 0; i < 3; ++i) CHECK(l.acquire("b", 4).allowed);  // evicts "c"
  CHECK_FALSE(l.acquire("b", 4).allowed);
  CHECK(l.size() == 2);
}

TEST_CASE("rate_limiter: address keys, long keys, expire(), and no allocation on a hit") {
  rate_limiter l(limiter(1, 1, 1000, 8));
  CHECK(l.acquire(ip("192.0.2.1"), 0).allowed);
  // A mapped IPv4 address is the IPv4 client.
  CHECK_FALSE(l.acquire(ip("::ffff:192.0.2.1"), 0).allowed);
  CHECK(l.acquire(ip("192.0.2.2"), 0).allowed);
  CHECK(l.acquire(ip("2001:db8::1"), 0).allowed);
  CHECK_FALSE(l.acquire(ip("2001:db8::1"), 0).allowed);
  CHECK(l.acquire(ip("2001:db8::2"), 0).allowed);
  // Keyed by the address bytes.
  CHECK_FALSE(l.acquire(std::string_view("\xc0\x00\x02\x01", 4), 0).allowed);

  // Keys longer than max_key_length are refused without being stored.
  auto o = limiter(1, 1, 10);
  o.max_key_length = 8;
  rate_limiter short_keys(o);
  CHECK(short_keys.acquire("12345678", 0).allowed);
  const auto d = short_keys.acquire("123456789", 0);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == never);
  CHECK(short_keys.size() == 1);

  // expire() forgets exactly the keys whose buckets are full again: here after 1 s idle.
  rate_limiter e(limiter(1, 1, 100, 4));
  CHECK(e.acquire("old", 0).allowed);
  CHECK(e.acquire("new", 500 * ms).allowed);
  CHECK(e.expire(s) == 0);  // "old" idle for exactly its refill time: kept
  CHECK(e.expire(s + 1) == 1);
  CHECK(e.size() == 1);
  CHECK(e.acquire("old", s + 1).allowed);        // as it would have been
  CHECK_FALSE(e.acquire("new", s + 1).allowed);  // still spending its refill
  CHECK(e.expire(std::numeric_limits<std::int64_t>::max()) == 2);

  // A hit allocates nothing, even for a key too long for the small-string buffer.
  const std::string key(40, 'k');
  CHECK(l.acquire(key, 0).allowed);
  const std::size_t before = lbkit::test::allocations.load();
  int allowed = 0;
  for (int i = 1; i <= 1000; ++i) allowed += l.acquire(key, i * s).allowed;
  if (lbkit::test::counting_allocations) CHECK(lbkit::test::allocations.load() == before);
  CHECK(allowed == 1000);
}

TEST_CASE("rate_limiter: options are validated, and clamped when not") {
  CHECK(lbkit::validate(limiter(10, 20, 1000, 16)).has_value());
  auto r = lbkit::validate(limiter(0, 20, 1000, 16));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message ==
        "rate limiter: token bucket: rate_per_second must be a positive number up to 1e15, not 0");
  r = lbkit::validate(limiter(10, 20, 0, 16));
  CHECK(r.error().message == "rate limiter: capacity must be at least 1");
  r = lbkit::validate(limiter(10, 20, 1000, 12));
  CHECK(r.error().message == "rate limiter: shards must be a power of two from 1 to 65536, not 12");
  auto o = limiter(10, 20, 1000, 16);
  o.max_key_length = 0;
  CHECK(lbkit::validate(o).error().message == "rate limiter: max_key_length must be at least 1");

  rate_limiter clamped(limiter(-1, 0, 0, 12));
  CHECK(clamped.capacity() == 1);
  CHECK(clamped.bucket_options().burst == 1);
  CHECK(clamped.acquire("a", 0).allowed);
  CHECK_FALSE(clamped.acquire("a", 0).allowed);
  // Default seed: works the same.
  rate_limiter_options d;
  d.bucket = bucket(5, 5);
  rate_limiter def(d);
  CHECK(def.capacity() == 65536);
  CHECK(def.acquire("x", 0).allowed);
}

TEST_CASE("rate_limiter: four threads never get more than burst + rate x window per key") {
  // Synthetic time from one counter, 10 µs a call, taken in an order the threads then race
  // to apply: each key's bucket sees its times slightly out of order.
  constexpr double rate = 1000;  // a token a millisecond; calls come 100 times faster
  constexpr double burst = 20;
  constexpr int keys = 3;
  constexpr int calls = 20000;
  rate_limiter l(limiter(rate, burst, 64, 4));
  std::atomic<std::int64_t> clock{5 * s};
  struct per_key {
    std::atomic<std::int64_t> first{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> last{std::numeric_limits<std::int64_t>::min()};
    std::atomic<std::int64_t> allowed{0};
    std::atomic<std::int64_t> bad_retry{0};
  };
  std::array<per_key, keys> stats;
  const std::array<std::string, keys> names = {"key-a", "key-b", "a-much-longer-key-c-0123456789"};

  const auto worker = [&](unsigned id) {
    std::mt19937 rng(id);
    for (int n = 0; n < calls; ++n) {
      const auto k = rng() % keys;
      const std::int64_t now = clock.fetch_add(10'000, std::memory_order_relaxed);
      auto& st = stats[k];
      std::int64_t v = st.first.load();
      while (now < v && !st.first.compare_exchange_weak(v, now)) {
      }
      v = st.last.load();
      while (now > v && !st.last.compare_exchange_weak(v, now)) {
      }
      const auto d = l.acquire(names[k], now);
      if (d.allowed) {
        st.allowed.fetch_add(1, std::memory_order_relaxed);
        if (d.retry_after.count() != 0) st.bad_retry.fetch_add(1);
      } else {
        // Refused: the wait is positive, and at most one token's time (1 ms) past the latest
        // time any thread has taken, which the bucket may already have seen.
        const std::int64_t ahead = clock.load() - now;
        if (d.retry_after.count() <= 0 || d.retry_after.count() > ahead + ms) {
          st.bad_retry.fetch_add(1);
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned id = 0; id < 4; ++id) threads.emplace_back(worker, id);
  for (auto& t : threads) t.join();

  for (int k = 0; k < keys; ++k) {
    const auto& st = stats[static_cast<std::size_t>(k)];
    const double window = static_cast<double>(st.last.load() - st.first.load()) / 1e9;
    const double bound = burst + rate * window;
    const auto allowed = static_cast<double>(st.allowed.load());
    CAPTURE(k);
    CAPTURE(window);
    CAPTURE(allowed);
    CHECK(allowed <= bound + 1e-6);
    // Calls outpace the rate a hundredfold, so nearly every token is used: far from 0.
    CHECK(allowed >= 0.9 * rate * window);
    CHECK(st.bad_retry.load() == 0);
  }
  CHECK(l.size() == keys);
}

TEST_CASE("rate_limiter: four threads churning many keys through a small map") {
  // Eviction, insertion and hits all under contention (run under TSan in CI).
  rate_limiter l(limiter(100, 5, 64, 4));
  std::atomic<std::int64_t> clock{0};
  std::atomic<std::int64_t> allowed{0}, over_capacity{0};
  const auto worker = [&](unsigned id) {
    std::mt19937 rng(id + 10);
    for (int n = 0; n < 20000; ++n) {
      const std::string key = "client-" + std::to_string(rng() % 512);
      const std::int64_t now = clock.fetch_add(1000, std::memory_order_relaxed);
      allowed += l.acquire(key, now).allowed;
      if (n % 500 == 0) {
        if (l.size() > l.capacity()) ++over_capacity;
        if (id == 0) (void)l.expire(now);
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned id = 0; id < 4; ++id) threads.emplace_back(worker, id);
  for (auto& t : threads) t.join();
  CHECK(over_capacity.load() == 0);
  CHECK(l.size() <= 64);
  CHECK(allowed.load() > 0);
}
