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

#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lbkit/detail/config.hpp"
#include "lbkit/detail/mutex.hpp"
#include "lbkit/endpoint.hpp"
#include "lbkit/hash.hpp"
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
  if (o.capacity < 1) {
    return make_error(errc::out_of_range, "flow table: capacity must be at least 1");
  }
  if (o.idle_timeout.count() <= 0) {
    return make_error(errc::out_of_range, "flow table: idle_timeout must be positive, not " +
                                              std::to_string(o.idle_timeout.count()) + " ns");
  }
  if (o.shards < 1 || o.shards > 65536 || !std::has_single_bit(o.shards)) {
    return make_error(errc::invalid_argument,
                      "flow table: shards must be a power of two from 1 to 65536, not " +
                          std::to_string(o.shards));
  }
  if ((o.capacity - 1) / o.shards >= (std::size_t{1} << 31)) {
    return make_error(errc::out_of_range, "flow table: capacity " + std::to_string(o.capacity) +
                                              " over " + std::to_string(o.shards) +
                                              " shards is more than 2^31 entries a shard");
  }
  return {};
}

namespace detail {

// One lock's worth of a flow_table: entries in a dense vector, found through an open-addressing
// index (linear probing, at most half full, backward-shift deletion) and chained by index into
// an LRU list whose order is also the order of last use, most recent first. A find() that hits
// moves its entry to the front without allocating.
// Thread safety: thread-safe.
template <class Value>
class flow_shard {
 public:
  static constexpr std::uint32_t npos = 0xffffffff;        // no entry
  static constexpr std::size_t no_slot = ~std::size_t{0};  // no index slot

  struct entry {
    flow_key key;
    Value value;
    std::int64_t last_used;  // never below that of the entry after it in the LRU list
    std::uint32_t hash;      // low 32 bits of the key's hash: its home in the index
    std::uint32_t prev;      // toward the most recently used
    std::uint32_t next;      // toward the least recently used
  };

  // Called once, before the shard is shared.
  void set_capacity(std::uint32_t c) noexcept { capacity_ = c; }
  std::uint32_t capacity() const noexcept { return capacity_; }

  std::optional<Value> find(const flow_key& key, std::uint32_t h, std::int64_t now,
                            std::uint64_t timeout) LBKIT_EXCLUDES(mu_) {
    std::optional<entry> expired;  // destroyed after the lock is released
    lock_guard lock(mu_);
    const std::size_t pos = position(key, h);
    if (pos == no_slot) return std::nullopt;
    const std::uint32_t i = index_[pos].entry_index;
    if (idle_too_long(entries_[i].last_used, now, timeout)) {
      expired.emplace(remove(pos));
      return std::nullopt;
    }
    touch(i, now);
    return entries_[i].value;
  }

  // Inserts or replaces; returns the entry evicted to make room, if one was.
  std::optional<entry> insert(const flow_key& key, std::uint32_t h, Value& v, std::int64_t now)
      LBKIT_EXCLUDES(mu_) {
    lock_guard lock(mu_);
    const std::size_t pos = position(key, h);
    if (pos != no_slot) {
      // The old value goes back to the caller's `v`, to be destroyed after the lock.
      using std::swap;
      const std::uint32_t i = index_[pos].entry_index;
      swap(entries_[i].value, v);
      touch(i, now);
      return std::nullopt;
    }
    std::optional<entry> evicted;
    if (entries_.size() >= capacity_) evicted.emplace(remove(position_of(tail_)));
    if ((entries_.size() + 1) * 2 > index_.size()) grow();
    const auto i = static_cast<std::uint32_t>(entries_.size());
    entries_.push_back(entry{key, std::move(v), latest(now), h, npos, npos});
    place(i, h);
    push_front(i);
    return evicted;
  }

  std::optional<entry> erase(const flow_key& key, std::uint32_t h) LBKIT_EXCLUDES(mu_) {
    lock_guard lock(mu_);
    const std::size_t pos = position(key, h);
    if (pos == no_slot) return std::nullopt;
    return remove(pos);
  }

  // Moves every entry idle for longer than `timeout` at `now` into `out`.
  void expire(std::int64_t now, std::uint64_t timeout, std::vector<entry>& out)
      LBKIT_EXCLUDES(mu_) {
    lock_guard lock(mu_);
    // The LRU list is in order of last use, so the expired entries are its tail.
    while (tail_ != npos && idle_too_long(entries_[tail_].last_used, now, timeout)) {
      out.push_back(remove(position_of(tail_)));
    }
  }

  std::size_t size() const LBKIT_EXCLUDES(mu_) {
    lock_guard lock(mu_);
    return entries_.size();
  }

 private:
  struct slot {
    std::uint32_t entry_index = npos;  // npos: empty
    std::uint32_t hash = 0;            // the entry's hash, to skip most mismatches unread
  };

  static bool idle_too_long(std::int64_t last_used, std::int64_t now,
                            std::uint64_t timeout) noexcept {
    // Unsigned difference: no overflow whatever the synthetic times.
    return now > last_used &&
           static_cast<std::uint64_t>(now) - static_cast<std::uint64_t>(last_used) > timeout;
  }

  // A time no earlier than any entry's last use. Threads read the clock at slightly different
  // moments; taking the latest keeps the LRU list sorted by last use, which expire() needs.
  std::int64_t latest(std::int64_t now) const LBKIT_REQUIRES(mu_) {
    return head_ == npos ? now : std::max(now, entries_[head_].last_used);
  }

  std::size_t position(const flow_key& key, std::uint32_t h) const LBKIT_REQUIRES(mu_) {
    if (index_.empty()) return no_slot;
    const std::size_t mask = index_.size() - 1;
    for (std::size_t p = h & mask;; p = (p + 1) & mask) {
      const slot& s = index_[p];
      if (s.entry_index == npos) return no_slot;
      if (s.hash == h && entries_[s.entry_index].key == key) return p;
    }
  }

  // The index slot of entry i (which is present).
  std::size_t position_of(std::uint32_t i) const LBKIT_REQUIRES(mu_) {
    const std::size_t mask = index_.size() - 1;
    std::size_t p = entries_[i].hash & mask;
    while (index_[p].entry_index != i) p = (p + 1) & mask;
    return p;
  }

  void place(std::uint32_t i, std::uint32_t h) LBKIT_REQUIRES(mu_) {
    const std::size_t mask = index_.size() - 1;
    std::size_t p = h & mask;
    while (index_[p].entry_index != npos) p = (p + 1) & mask;
    index_[p] = {i, h};
  }

  void grow() LBKIT_REQUIRES(mu_) {
    std::vector<slot> old(std::max<std::size_t>(16, index_.size() * 2));
    old.swap(index_);
    for (const slot& s : old) {
      if (s.entry_index != npos) place(s.entry_index, s.hash);
    }
  }

  void push_front(std::uint32_t i) LBKIT_REQUIRES(mu_) {
    entries_[i].prev = npos;
    entries_[i].next = head_;
    (head_ == npos ? tail_ : entries_[head_].prev) = i;
    head_ = i;
  }

  void unlink(std::uint32_t i) LBKIT_REQUIRES(mu_) {
    const entry& e = entries_[i];
    (e.prev == npos ? head_ : entries_[e.prev].next) = e.next;
    (e.next == npos ? tail_ : entries_[e.next].prev) = e.prev;
  }

  void touch(std::uint32_t i, std::int64_t now) LBKIT_REQUIRES(mu_) {
    entries_[i].last_used = latest(now);
    if (head_ != i) {
      unlink(i);
      push_front(i);
    }
  }

  // Removes the entry in index slot `pos` and returns it. The last entry of the vector moves
  // into its place, so the vector stays dense.
  entry remove(std::size_t pos) LBKIT_REQUIRES(mu_) {
    const std::uint32_t i = index_[pos].entry_index;
    // Backward-shift deletion (Knuth, TAOCP vol. 3, §6.4, Algorithm R): pull later slots of
    // the probe run into the hole unless their home lies cyclically in (hole, slot].
    const std::size_t mask = index_.size() - 1;
    std::size_t hole = pos;
    for (std::size_t p = (hole + 1) & mask; index_[p].entry_index != npos; p = (p + 1) & mask) {
      const std::size_t home = index_[p].hash & mask;
      const bool stays = hole <= p ? (hole < home && home <= p) : (hole < home || home <= p);
      if (!stays) {
        index_[hole] = index_[p];
        hole = p;
      }
    }
    index_[hole] = slot{};

    unlink(i);
    entry out = std::move(entries_[i]);
    const auto last = static_cast<std::uint32_t>(entries_.size() - 1);
    if (i != last) {
      index_[position_of(last)].entry_index = i;
      entries_[i] = std::move(entries_[last]);
      const entry& e = entries_[i];
      (e.prev == npos ? head_ : entries_[e.prev].next) = i;
      (e.next == npos ? tail_ : entries_[e.next].prev) = i;
    }
    entries_.pop_back();
    return out;
  }

  mutable mutex mu_;
  std::vector<entry> entries_ LBKIT_GUARDED_BY(mu_);
  std::vector<slot> index_ LBKIT_GUARDED_BY(mu_);  // a power of two in size, or empty
  std::uint32_t head_ LBKIT_GUARDED_BY(mu_) = npos;
  std::uint32_t tail_ LBKIT_GUARDED_BY(mu_) = npos;
  std::uint32_t capacity_ = 1;
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
  explicit flow_table(flow_table_options o = {}) : timeout_(clamp_timeout(o.idle_timeout)) {
    const std::size_t capacity = std::max<std::size_t>(o.capacity, 1);
    std::size_t shards = std::bit_ceil(std::clamp<std::size_t>(o.shards, 1, 65536));
    while (shards > capacity) shards /= 2;
    shards_ = std::make_unique<shard[]>(shards);
    shard_mask_ = shards - 1;
    for (std::size_t s = 0; s < shards; ++s) {
      const std::size_t c = capacity / shards + (s < capacity % shards ? 1 : 0);
      // Indices are 32-bit: at most 2^31 entries a shard.
      shards_[s].set_capacity(static_cast<std::uint32_t>(std::min(c, std::size_t{1} << 31)));
      capacity_ += shards_[s].capacity();
    }
    seed_ = o.seed;
    if (seed_ == 0) {
      std::random_device rd;
      seed_ = (std::uint64_t{rd()} << 32 | rd()) | 1;
    }
  }
  flow_table(const flow_table&) = delete;
  flow_table& operator=(const flow_table&) = delete;

  // The value for `key` if present and used within the idle timeout before `now_ns` (idle for
  // exactly the timeout still counts as live); marks it used at `now_ns`. An expired entry
  // found here is removed.
  std::optional<Value> find(const flow_key& key, std::int64_t now_ns) {
    const std::uint64_t h = hash_value(key, seed_);
    return shard_of(h).find(key, static_cast<std::uint32_t>(h), now_ns, timeout_);
  }

  // Maps `key` to `v`, used at `now_ns`, replacing any value it had. When the key is new and
  // its shard is full, evicts the shard's least recently used entry and returns it, so that
  // the caller can release what it held (close a socket, decrement a backend's count).
  std::optional<std::pair<flow_key, Value>> insert(const flow_key& key, Value v,
                                                   std::int64_t now_ns) {
    const std::uint64_t h = hash_value(key, seed_);
    auto evicted = shard_of(h).insert(key, static_cast<std::uint32_t>(h), v, now_ns);
    if (!evicted) return std::nullopt;
    return std::pair<flow_key, Value>(std::move(evicted->key), std::move(evicted->value));
  }

  // Removes `key`. Returns whether it was present (expired or not).
  bool erase(const flow_key& key) {
    const std::uint64_t h = hash_value(key, seed_);
    return shard_of(h).erase(key, static_cast<std::uint32_t>(h)).has_value();
  }

  // Removes every entry idle for longer than the timeout at `now_ns` and calls
  // on_expired(const flow_key&, Value&) for each, outside the shard locks (it may use the
  // table). Returns how many were removed. Call it periodically, e.g. once a second, so that
  // the table's memory and anything the values hold are released without waiting for find()
  // or eviction to come across them.
  template <class F>
  std::size_t expire(std::int64_t now_ns, F&& on_expired) {
    std::size_t count = 0;
    std::vector<typename shard::entry> batch;
    for (std::size_t s = 0; s <= shard_mask_; ++s) {
      shards_[s].expire(now_ns, timeout_, batch);
      count += batch.size();
      for (auto& e : batch) std::invoke(on_expired, std::as_const(e.key), e.value);
      batch.clear();
    }
    return count;
  }
  std::size_t expire(std::int64_t now_ns) {
    return expire(now_ns, [](const flow_key&, Value&) {});
  }

  // Entries held now, expired ones not yet removed included. Locks every shard in turn, so
  // under concurrent change the sum is approximate.
  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t s = 0; s <= shard_mask_; ++s) n += shards_[s].size();
    return n;
  }

  // Most entries held at once: the configured capacity.
  std::size_t capacity() const noexcept { return capacity_; }
  std::chrono::nanoseconds idle_timeout() const noexcept {
    return std::chrono::nanoseconds(static_cast<std::int64_t>(timeout_));
  }

 private:
  // One cache line or more each, so that two shards' locks never share a line.
  struct alignas(64) shard : detail::flow_shard<Value> {};

  static std::uint64_t clamp_timeout(std::chrono::nanoseconds t) noexcept {
    return t.count() > 0 ? static_cast<std::uint64_t>(t.count()) : 1;
  }

  shard& shard_of(std::uint64_t h) noexcept {
    // The top bits pick the shard; the low 32 place the key within it.
    return shards_[(h >> 48) & shard_mask_];
  }

  std::unique_ptr<shard[]> shards_;
  std::size_t shard_mask_ = 0;
  std::size_t capacity_ = 0;
  std::uint64_t timeout_;
  std::uint64_t seed_ = 0;
};

}  // namespace lbkit

template <>
struct std::hash<lbkit::flow_key> {
  std::size_t operator()(const lbkit::flow_key& k) const noexcept {
    return static_cast<std::size_t>(lbkit::hash_value(k));
  }
};
