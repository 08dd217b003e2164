// SPDX-License-Identifier: MIT
// token_bucket and rate_limiter: request rate limits for an L7 front end (an API gateway's
// "100 requests a second per API key, bursts of 200"), I/O free and clock free. A
// token_bucket is one client's budget; a rate_limiter holds one bucket per key (an API key, a
// client address) in a bounded, sharded LRU map, and says both whether a request may pass and,
// when it may not, how long until it could, which is what an HTTP 429 response puts in its
// Retry-After field.
//
// The caller passes the time (`now_ns`, nanoseconds of a monotonic clock such as
// std::chrono::steady_clock), so tests run on synthetic time and nothing here reads a clock.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>

#include "lbkit/endpoint.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/net/detail/lru_map.hpp"
#include "lbkit/result.hpp"

namespace lbkit {

// A bucket's refill rate and size. Both must be set; validate() rejects the zeros.
struct token_bucket_options {
  // The most either may be: far above any real limit, and low enough that the refill
  // arithmetic (rate × nanoseconds, over the whole int64 range) can never overflow.
  static constexpr double max_value = 1e15;

  // Tokens added per second, continuously (0.5 is one every two seconds). Positive, at most
  // max_value.
  double rate_per_second = 0;
  // Most tokens a bucket holds: the largest burst it lets through at once, and what a new
  // bucket starts with. From 1 to max_value.
  double burst = 0;
};

namespace detail {

inline std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace detail

// Checks options a user configured; token_bucket itself clamps out-of-range values to the
// nearest valid one, so check first to report them.
inline result<void> validate(const token_bucket_options& o) {
  constexpr double max = token_bucket_options::max_value;
  if (!(o.rate_per_second > 0 && o.rate_per_second <= max)) {
    return make_error(errc::out_of_range,
                      "token bucket: rate_per_second must be a positive number up to 1e15, not " +
                          detail::format_number(o.rate_per_second));
  }
  if (!(o.burst >= 1 && o.burst <= max)) {
    return make_error(errc::out_of_range,
                      "token bucket: burst must be a number from 1 to 1e15, not " +
                          detail::format_number(o.burst));
  }
  return {};
}

// One token bucket, the classic rate limiter of traffic shaping: it holds up to
// `burst` tokens, gains `rate_per_second` tokens a second, and a request takes tokens (one,
// or its cost) if that many are there. Over any window of w seconds it lets through at most
// burst + rate × w tokens. It starts full.
//
// Times are int64 nanoseconds of the caller's monotonic clock. A time earlier than one the
// bucket has seen (another thread's clock read, a synthetic test time) adds nothing and
// moves nothing back; the tokens present can still be taken. Any gap, up to the whole int64
// range, refills without overflow.
// Thread safety: not thread-safe (a value type); rate_limiter locks around its buckets.
// Complexity: try_acquire() and available() are O(1), a few floating-point operations;
// wait_time() is O(1) as well: a closed form corrected by a short exact search.
class token_bucket {
 public:
  // Out-of-range options are clamped: a rate that is not positive (or NaN) becomes the
  // smallest positive normal double (the bucket then in effect never refills), a burst below
  // 1 (or NaN) becomes 1, and values above max_value (infinity too) become max_value.
  explicit token_bucket(token_bucket_options o) noexcept
      : rate_(o.rate_per_second), burst_(o.burst) {
    constexpr double max = token_bucket_options::max_value;
    if (!(rate_ > 0)) rate_ = std::numeric_limits<double>::min();
    if (!(burst_ >= 1)) burst_ = 1;
    rate_ = std::min(rate_, max);
    burst_ = std::min(burst_, max);
    tokens_ = burst_;
  }

  // Takes `tokens` (finite, at least 0) at `now_ns` if the bucket holds that many after
  // refilling; otherwise takes nothing and returns false. A negative or NaN count is refused.
  bool try_acquire(std::int64_t now_ns, double tokens = 1) noexcept {
    if (now_ns > last_) {
      tokens_ = level_after(elapsed(last_, now_ns));
      last_ = now_ns;
    }
    if (!(tokens >= 0) || tokens > tokens_) return false;
    tokens_ -= tokens;  // tokens <= tokens_, so never below 0
    return true;
  }

  // How long from `now_ns` until `tokens` could be taken, if nothing else takes any: zero
  // when they are there now. Exact to the nanosecond under the bucket's own arithmetic:
  // try_acquire(now_ns + d, tokens) succeeds for d = wait_time(now_ns, tokens) and fails for
  // d - 1. nanoseconds::max() for a count that can never be taken (more than the burst,
  // negative, NaN, or a refill too slow to arrive within the int64 range).
  std::chrono::nanoseconds wait_time(std::int64_t now_ns, double tokens = 1) const noexcept {
    constexpr auto never = std::chrono::nanoseconds::max();
    if (!(tokens >= 0) || tokens > burst_) return never;
    const std::uint64_t from = now_ns > last_ ? elapsed(last_, now_ns) : 0;
    if (level_after(from) >= tokens) return std::chrono::nanoseconds(0);
    const std::uint64_t d = first_sufficient(tokens, from);
    if (d == no_time) return never;
    // From `now_ns` to the last refill (if `now_ns` is earlier), then on to last refill + d.
    constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    const std::uint64_t ahead = d - from;
    const std::uint64_t behind = now_ns < last_ ? elapsed(now_ns, last_) : 0;
    if (ahead > max || behind > max - ahead) return never;
    return std::chrono::nanoseconds(static_cast<std::int64_t>(ahead + behind));
  }

  // The tokens the bucket holds at `now_ns` (for a RateLimit-Remaining header or a stats
  // page), without taking any.
  double available(std::int64_t now_ns) const noexcept {
    return now_ns > last_ ? level_after(elapsed(last_, now_ns)) : tokens_;
  }

  // The options in effect, after clamping.
  token_bucket_options options() const noexcept { return {rate_, burst_}; }

 private:
  static constexpr std::uint64_t no_time = ~std::uint64_t{0};

  // b - a for a <= b, exactly, whatever the two times.
  static std::uint64_t elapsed(std::int64_t a, std::int64_t b) noexcept {
    return static_cast<std::uint64_t>(b) - static_cast<std::uint64_t>(a);
  }

  // The tokens held `d` nanoseconds after the last refill. The refill is computed as
  // rate × d / 1e9 so that round rates and times give exact token counts (10/s for 100 ms
  // is 1.0, not 0.9999...). Non-decreasing in d, as every IEEE operation in it is monotone:
  // first_sufficient() relies on that.
  double level_after(std::uint64_t d) const noexcept {
    return std::min(burst_, tokens_ + rate_ * static_cast<double>(d) / 1e9);
  }

  // The least d > lo with level_after(d) >= n, given level_after(lo) < n; no_time if there
  // is none below 2^64 - 1. The closed form (n - tokens) / rate is only an estimate in
  // floating point (usually right or one off), so the search gallops out from it until it
  // brackets the answer, then bisects: two or three evaluations as a rule, 130 at worst.
  std::uint64_t first_sufficient(double n, std::uint64_t lo) const noexcept {
    std::uint64_t hi = no_time;
    if (level_after(hi) < n) return no_time;
    // Invariant from here on: level_after(lo) < n <= level_after(hi).
    const double estimate = (n - tokens_) * 1e9 / rate_;
    if (estimate > static_cast<double>(lo) && estimate < 0x1p63) {
      const auto e = static_cast<std::uint64_t>(estimate);
      const bool above = level_after(e) >= n;
      (above ? hi : lo) = e;
      for (std::uint64_t step = 1; hi - lo > 1; step *= 2) {
        const std::uint64_t probe =
            above ? hi - std::min(step, hi - lo - 1) : lo + std::min(step, hi - lo - 1);
        const bool enough = level_after(probe) >= n;
        (enough ? hi : lo) = probe;
        if (enough != above) break;
      }
    }
    while (hi - lo > 1) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      (level_after(mid) >= n ? hi : lo) = mid;
    }
    return hi;
  }

  double rate_;
  double burst_;
  double tokens_ = 0;
  // When tokens_ was last refilled. The minimum means "never": the first call refills a full
  // bucket, whatever its time.
  std::int64_t last_ = std::numeric_limits<std::int64_t>::min();
};

// How a rate_limiter limits and how much it remembers.
struct rate_limiter_options {
  // Every key's bucket.
  token_bucket_options bucket;
  // Most keys held at once, split evenly across the shards. When a shard is full, a new key
  // evicts the shard's least recently used one, which comes back later with a full bucket:
  // make the capacity comfortably larger than the number of clients active within
  // burst / rate seconds (see rate_limiter).
  std::size_t capacity = 65536;
  // Independent locks, a power of two from 1 to 65536, at most the capacity.
  std::size_t shards = 16;
  // Longest key accepted; acquire() refuses longer ones. Keys are stored, so this bounds the
  // memory a client that chooses its own keys (an API key header) can make the map hold.
  std::size_t max_key_length = 256;
  // Seed of the key hash; 0 draws one from std::random_device. Clients choose their keys, so
  // with a hash they could predict they could aim every key at one shard; fix the seed only
  // for reproducible tests.
  std::uint64_t seed = 0;
};

inline result<void> validate(const rate_limiter_options& o) {
  if (auto r = validate(o.bucket); !r) {
    return make_error(r.error().code, "rate limiter: " + r.error().message);
  }
  if (auto r = detail::check_lru_capacity("rate limiter", o.capacity); !r) return r;
  if (auto r = detail::check_lru_shards("rate limiter", o.capacity, o.shards); !r) return r;
  if (o.max_key_length < 1) {
    return make_error(errc::out_of_range, "rate limiter: max_key_length must be at least 1");
  }
  return {};
}

namespace detail {

struct bytes_hash {
  std::uint64_t operator()(std::string_view key, std::uint64_t seed) const noexcept {
    return hash_bytes(key, seed);
  }
};

}  // namespace detail

// Token buckets by key: one bucket per API key, client address or any other byte string,
// created full on a key's first request. Use one limiter per kind of key (a per-address limit
// and a per-API-key limit are two limiters with their own rates), so that keys of different
// kinds never share a bucket.
//
// Memory is bounded: at most `capacity` keys, and when the shard a new key falls in is full,
// its least recently used key is evicted. An evicted key that returns starts again with a full
// bucket, so eviction forgives a client the tokens it had spent. That is the standard trade-off
// of a bounded limiter (the alternative, refusing new keys when full, would let a flood of
// keys lock out every new client), and it costs nothing as long as the capacity exceeds the
// number of keys active within burst / rate seconds: a key idle for that long has a full
// bucket anyway, so forgetting it changes no decision (expire() removes exactly those). A
// client that can mint keys (rotating addresses or API keys) gets a full bucket per new key
// anyway; it can reset *another* key's bucket only by pushing that key out of its shard,
// which takes about capacity / shards new keys within that key's refill time. Size the
// capacity above what your clients, attackers included, can mint in that time, and limit
// per address (or per network) in front of per-key limits.
//
// Thread safety: thread-safe. Every member may be called from any thread at once. Keys are
// spread over independent shards by a seeded hash; acquire() holds one shard's lock while it
// refills and takes from the bucket, so concurrent requests of one key are serialised and
// never together take more than the bucket allows.
// Complexity: acquire() is O(1) expected: one hash, one lock, a short probe, the bucket's
// arithmetic; a hit does not allocate (a new key allocates its entry, and its copy of the key
// when longer than 15 bytes). expire(): O(expired + shards).
// Memory: about 90 bytes an entry plus 16 to 32 bytes of index, plus keys longer than 15
// bytes; nothing is allocated up front.
class rate_limiter {
 public:
  // What acquire() decided.
  struct decision {
    // True: the request may pass, and its tokens are taken.
    bool allowed;
    // When refused, how long until the tokens could be taken (token_bucket::wait_time), for
    // an HTTP 429's Retry-After, which takes whole seconds: send
    // std::chrono::ceil<std::chrono::seconds>(retry_after), so that a retry is not early.
    // nanoseconds::max() when no wait suffices (more tokens than the burst, a key longer
    // than max_key_length): answer without Retry-After. Zero when allowed.
    std::chrono::nanoseconds retry_after;
  };

  // Out-of-range options are clamped: the bucket's as token_bucket does, capacity and shards
  // as flow_table does, max_key_length to at least 1 (validate() reports them instead).
  explicit rate_limiter(rate_limiter_options o)
      : map_(o.capacity, o.shards, o.seed),
        bucket_(token_bucket(o.bucket).options()),
        max_key_length_(std::max<std::size_t>(o.max_key_length, 1)),
        full_after_(time_to_fill(bucket_)) {}
  rate_limiter(const rate_limiter&) = delete;
  rate_limiter& operator=(const rate_limiter&) = delete;

  // Takes `tokens` (usually 1, or a request's cost) from the bucket of `key` at `now_ns`,
  // creating a full bucket for a new key.
  [[nodiscard]] decision acquire(std::string_view key, std::int64_t now_ns, double tokens = 1) {
    if (key.size() > max_key_length_) return {false, std::chrono::nanoseconds::max()};
    return map_.find_or_insert(
        key, now_ns, [this] { return token_bucket(bucket_); },
        [&](token_bucket& b) -> decision {
          if (b.try_acquire(now_ns, tokens)) return {true, std::chrono::nanoseconds(0)};
          return {false, b.wait_time(now_ns, tokens)};
        });
  }

  // The same for a client address, keyed by its bytes (4 or 16). An IPv4-mapped IPv6 address
  // (::ffff:a.b.c.d, as a dual-stack socket reports IPv4 clients) counts as the IPv4 address
  // it carries, as in cidr_table. An IPv6 client usually holds a whole /64: to limit it
  // rather than each of its addresses, pass the address with its host bits cleared.
  [[nodiscard]] decision acquire(const ip_address& client, std::int64_t now_ns, double tokens = 1) {
    const ip_address a = client.unmapped();
    const auto b = a.bytes();
    return acquire(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), now_ns,
                   tokens);
  }

  // Removes the keys idle long enough for their buckets to be full again (burst / rate
  // seconds): forgetting them changes no decision. Returns how many. Optional: eviction bounds
  // the memory anyway; calling this now and then (once a minute) returns it after a burst of
  // clients has gone.
  std::size_t expire(std::int64_t now_ns) {
    return map_.expire(now_ns, full_after_, [](const std::string&, token_bucket&) {});
  }

  // Keys held now. Locks every shard in turn, so under concurrent change it is approximate.
  std::size_t size() const { return map_.size(); }
  // Most keys held at once: the configured capacity.
  std::size_t capacity() const noexcept { return map_.capacity(); }
  // Every bucket's options, after clamping.
  const token_bucket_options& bucket_options() const noexcept { return bucket_; }

 private:
  // How long an empty bucket takes to fill, by the bucket's own arithmetic: a bucket idle for
  // longer holds `burst` tokens whatever it held before.
  static std::uint64_t time_to_fill(const token_bucket_options& o) noexcept {
    token_bucket b(o);
    (void)b.try_acquire(0, o.burst);
    return static_cast<std::uint64_t>(b.wait_time(0, o.burst).count());
  }

  detail::lru_shards<std::string, token_bucket, detail::bytes_hash> map_;
  token_bucket_options bucket_;
  std::size_t max_key_length_;
  std::uint64_t full_after_;
};

}  // namespace lbkit
