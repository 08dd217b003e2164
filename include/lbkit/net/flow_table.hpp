// SPDX-License-Identifier: MIT
// flow_table<Value>: connection tracking for an L4 front end, I/O free and clock free. It maps
// a flow (a 5-tuple, or a client address alone) to a value, typically the backend the flow was
// sent to, so that an established flow keeps its backend when membership changes and the
// consistent hash would now choose another. Maglev pairs its consistent hashing with exactly
// such a table (D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016, §3.3): the hash handles the first packet, the table the rest.
//
// The table is bounded twice over: an entry idle for longer than the idle timeout is gone,
// and when the table is full the least recently used entry makes room. The caller passes the
// time (`now_ns`, nanoseconds of a monotonic clock: std::chrono::steady_clock, or
// CLOCK_MONOTONIC_COARSE, whose millisecond resolution is plenty for timeouts of seconds), so
// tests run on synthetic time and nothing here reads a clock or sleeps.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "lbkit/endpoint.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/net/detail/lru_map.hpp"
#include "lbkit/result.hpp"

namespace lbkit {

// What identifies a flow. Either a full 5-tuple, or (protocol 0, ports 0, server ::/0.0.0.0)
// the client address alone, for "source IP" affinity. Keys compare field by field and exactly:
// 10.0.0.1 and ::ffff:10.0.0.1 are different clients here, so key one listener's flows
// consistently. Thread safety: thread-compatible (a value type).
struct flow_key {
  ip_address client;
  std::uint16_t client_port = 0;
  ip_address server;
  std::uint16_t server_port = 0;
  std::uint8_t protocol = 0;  // IPPROTO_TCP, IPPROTO_UDP, ...; 0 for client-address affinity

  // The key of every flow from `client`, whatever its ports and protocol.
  static constexpr flow_key for_client(const ip_address& client) noexcept {
    flow_key k;
    k.client = client;
    return k;
  }
  // The key of one transport flow: client endpoint, server (listener) endpoint, protocol.
  static constexpr flow_key for_five_tuple(const endpoint& client, const endpoint& server,
                                           std::uint8_t protocol) noexcept {
    return {client.address(), client.port(), server.address(), server.port(), protocol};
  }

  friend constexpr bool operator==(const flow_key&, const flow_key&) = default;
};

// XXH64 of the key's fields: client address bytes (4 or 16), client port, server address
// bytes, server port (ports in network order), protocol, and one byte of the two families.
// Stable across platforms and releases, like every lbkit hash.
// Thread safety: thread-safe (pure). Complexity: O(1), one XXH64 of 14 to 38 bytes.
inline std::uint64_t hash_value(const flow_key& k, std::uint64_t seed = 0) noexcept {
  char buf[16 + 2 + 16 + 2 + 1 + 1];
  std::size_t n = 0;
  const auto put_address = [&](const ip_address& a, std::uint16_t port) {
    // Two fixed-size copies rather than one of b.size() bytes: both inline to moves.
    const auto b = a.bytes();
    if (a.is_v4()) {
      std::memcpy(buf + n, b.data(), 4);
      n += 4;
    } else {
      std::memcpy(buf + n, b.data(), 16);
      n += 16;
    }
    buf[n++] = static_cast<char>(port >> 8);
    buf[n++] = static_cast<char>(port & 0xff);
  };
  put_address(k.client, k.client_port);
  put_address(k.server, k.server_port);
  buf[n++] = static_cast<char>(k.protocol);
  buf[n++] = static_cast<char>((k.client.is_v6() ? 1 : 0) | (k.server.is_v6() ? 2 : 0));
  return hash_bytes(std::string_view(buf, n), seed);
}

// How big a flow_table is and how long an idle flow lives.
struct flow_table_options {
  // Most entries held at once, split evenly across the shards. A shard that is full evicts
  // its own least recently used entry, so with uneven keys eviction may start a little before
  // the whole table is full.
  std::size_t capacity = 65536;
  // An entry not used for longer than this is expired: find() no longer returns it and
  // expire() removes it. Typical values: a few minutes for TCP, tens of seconds for UDP.
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  // Independent locks, a power of two. More shards, less contention; each holds at least one
  // entry, so a capacity below the shard count lowers the shard count to fit.
  std::size_t shards = 16;
  // Seed of the key hash; 0 draws one from std::random_device. A client chooses its own
  // ports, so with a hash it could predict it could aim many flows at one shard and one
  // probe sequence; fix the seed only for reproducible tests.
  std::uint64_t seed = 0;
};

// Checks options a user configured; the table itself clamps out-of-range values to the
// nearest valid one, so check first to report them.
inline result<void> validate(const flow_table_options& o) {
  if (auto r = detail::check_lru_capacity("flow table", o.capacity); !r) return r;
  if (o.idle_timeout.count() <= 0) {
    return make_error(errc::out_of_range, "flow table: idle_timeout must be positive, not " +
                                              std::to_string(o.idle_timeout.count()) + " ns");
  }
  return detail::check_lru_shards("flow table", o.capacity, o.shards);
}

namespace detail {

struct flow_key_hash {
  std::uint64_t operator()(const flow_key& k, std::uint64_t seed) const noexcept {
    return hash_value(k, seed);
  }
};

}  // namespace detail

// Connection tracking: a bounded map from flow_key to Value with an idle timeout and LRU
// eviction. Value is typically a backend index or id or a shared_ptr to a connection; find()
// needs it copyable, the other members only movable.
//
// Times come from the callers' clock reads and may arrive slightly out of order from several
// threads: a time earlier than one a shard has already seen counts as that later time, so it
// never makes an entry look older than it is.
//
// Thread safety: thread-safe. Every member may be called from any thread at once. Keys are
// spread over independent shards by hash, each with its own lock, so threads contend only
// when they touch the same shard at the same moment. find() copies the value under the lock
// (so Value's copy must not call back into the table); replaced, evicted, erased and expired
// values are destroyed, and expire()'s callback runs, outside the locks.
// Complexity: find, insert, erase: O(1) expected: one hash, one lock, a short probe;
// find() does not allocate (beyond what copying Value does). expire(): O(expired + shards).
// Memory: an entry is sizeof(flow_key) (42) + sizeof(Value) + 20 bytes, rounded up (72 bytes
// for a 4-byte Value), plus 16 to 32 bytes of index (8-byte slots, at most half full). Both
// grow with use, up to the capacity; nothing is allocated up front.
template <class Value>
class flow_table {
 public:
  using value_type = Value;

  // Out-of-range options are clamped: capacity to at least 1, a non-positive idle timeout to
  // 1 ns, shards to a power of two from 1 to 65536 and at most the capacity (validate()
  // reports them instead).
  explicit flow_table(flow_table_options o = {})
      : map_(o.capacity, o.shards, o.seed), timeout_(clamp_timeout(o.idle_timeout)) {}
  flow_table(const flow_table&) = delete;
  flow_table& operator=(const flow_table&) = delete;

  // The value for `key` if present and used within the idle timeout before `now_ns` (idle for
  // exactly the timeout still counts as live); marks it used at `now_ns`. An expired entry
  // found here is removed.
  std::optional<Value> find(const flow_key& key, std::int64_t now_ns) {
    return map_.find(key, now_ns, timeout_);
  }

  // Maps `key` to `v`, used at `now_ns`, replacing any value it had. When the key is new and
  // its shard is full, evicts the shard's least recently used entry and returns it, so that
  // the caller can release what it held (close a socket, decrement a backend's count).
  std::optional<std::pair<flow_key, Value>> insert(const flow_key& key, Value v,
                                                   std::int64_t now_ns) {
    auto evicted = map_.insert(key, v, now_ns);
    if (!evicted) return std::nullopt;
    return std::pair<flow_key, Value>(std::move(evicted->key), std::move(evicted->value));
  }

  // Removes `key`. Returns whether it was present (expired or not).
  bool erase(const flow_key& key) { return map_.erase(key).has_value(); }

  // Removes every entry idle for longer than the timeout at `now_ns` and calls
  // on_expired(const flow_key&, Value&) for each, outside the shard locks (it may use the
  // table). Returns how many were removed. Call it periodically, e.g. once a second, so that
  // the table's memory and anything the values hold are released without waiting for find()
  // or eviction to come across them.
  template <class F>
  std::size_t expire(std::int64_t now_ns, F&& on_expired) {
    return map_.expire(now_ns, timeout_, std::forward<F>(on_expired));
  }
  std::size_t expire(std::int64_t now_ns) {
    return expire(now_ns, [](const flow_key&, Value&) {});
  }

  // Entries held now, expired ones not yet removed included. Locks every shard in turn, so
  // under concurrent change the sum is approximate.
  std::size_t size() const { return map_.size(); }

  // Most entries held at once: the configured capacity.
  std::size_t capacity() const noexcept { return map_.capacity(); }
  std::chrono::nanoseconds idle_timeout() const noexcept {
    return std::chrono::nanoseconds(static_cast<std::int64_t>(timeout_));
  }

 private:
  static std::uint64_t clamp_timeout(std::chrono::nanoseconds t) noexcept {
    return t.count() > 0 ? static_cast<std::uint64_t>(t.count()) : 1;
  }

  detail::lru_shards<flow_key, Value, detail::flow_key_hash> map_;
  std::uint64_t timeout_;
};

}  // namespace lbkit

template <>
struct std::hash<lbkit::flow_key> {
  std::size_t operator()(const lbkit::flow_key& k) const noexcept {
    return static_cast<std::size_t>(lbkit::hash_value(k));
  }
};
