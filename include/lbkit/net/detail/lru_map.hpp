// SPDX-License-Identifier: MIT
// lru_shards<Key, Value, Hash>: the bounded, sharded, thread-safe LRU map under flow_table
// (keyed by flow_key, with an idle timeout) and rate_limiter (keyed by std::string, looked up
// by std::string_view). Internal: users include those headers, never this one.
//
// Keys are spread over shards by a seeded hash, each shard with its own mutex, a dense entry
// vector, an open-addressing index and an exact LRU list. A shard that is full evicts its own
// least recently used entry. Idle expiry is the caller's choice: the map keeps each entry's
// last use and removes idle ones when find() or expire() is given a timeout; find_or_insert()
// ignores idle time.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/detail/config.hpp"
#include "lbkit/detail/mutex.hpp"
#include "lbkit/result.hpp"

namespace lbkit::detail {

// The checks every user of lru_shards makes on its options; `what` names the user in the
// message ("flow table: capacity must be at least 1").
inline result<void> check_lru_capacity(std::string_view what, std::size_t capacity) {
  if (capacity < 1) {
    return make_error(errc::out_of_range, std::string(what) + ": capacity must be at least 1");
  }
  return {};
}
inline result<void> check_lru_shards(std::string_view what, std::size_t capacity,
                                     std::size_t shards) {
  if (shards < 1 || shards > 65536 || !std::has_single_bit(shards)) {
    return make_error(errc::invalid_argument, std::string(what) +
                                                  ": shards must be a power of two from 1 to "
                                                  "65536, not " +
                                                  std::to_string(shards));
  }
  if ((capacity - 1) / shards >= (std::size_t{1} << 31)) {
    return make_error(errc::out_of_range,
                      std::string(what) + ": capacity " + std::to_string(capacity) + " over " +
                          std::to_string(shards) + " shards is more than 2^31 entries a shard");
  }
  return {};
}

// One lock's worth of an lru_shards: entries in a dense vector, found through an
// open-addressing index (linear probing, at most half full, backward-shift deletion) and
// chained by index into an LRU list whose order is also the order of last use, most recent
// first. A lookup that hits moves its entry to the front without allocating. Lookups take any
// K that compares equal to Key with == (std::string_view for a std::string key).
// Thread safety: thread-safe.
template <class Key, class Value>
class lru_shard {
 public:
  static constexpr std::uint32_t npos = 0xffffffff;        // no entry
  static constexpr std::size_t no_slot = ~std::size_t{0};  // no index slot

  struct entry {
    Key key;
    Value value;
    std::int64_t last_used;  // never below that of the entry after it in the LRU list
    std::uint32_t hash;      // low 32 bits of the key's hash: its home in the index
    std::uint32_t prev;      // toward the most recently used
    std::uint32_t next;      // toward the least recently used
  };

  // Called once, before the shard is shared.
  void set_capacity(std::uint32_t c) noexcept { capacity_ = c; }
  std::uint32_t capacity() const noexcept { return capacity_; }

  // A copy of the value of `key` if present and not idle for longer than `timeout`; marks it
  // used. An expired entry found here is removed.
  template <class K>
  std::optional<Value> find(const K& key, std::uint32_t h, std::int64_t now, std::uint64_t timeout)
      LBKIT_EXCLUDES(mu_) {
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

  // Calls f(Value&) under the lock on the value of `key`, first inserting Key(key) with the
  // value make() returns when the key is absent (evicting the least recently used entry if
  // the shard is full); marks it used and returns what f returns. Idle time is not checked.
  template <class K, class Make, class F>
  decltype(auto) find_or_insert(const K& key, std::uint32_t h, std::int64_t now, Make&& make, F&& f)
      LBKIT_EXCLUDES(mu_) {
    std::optional<entry> evicted;  // destroyed after the lock is released
    lock_guard lock(mu_);
    std::uint32_t i;
    if (const std::size_t pos = position(key, h); pos != no_slot) {
      i = index_[pos].entry_index;
      touch(i, now);
    } else {
      // As in insert(), which keeps its own copy of these lines: with one shared helper, g++
      // inlined differently and flow_table's evicting insert ran 10% slower.
      if (entries_.size() >= capacity_) evicted.emplace(remove(position_of(tail_)));
      if ((entries_.size() + 1) * 2 > index_.size()) grow();
      i = static_cast<std::uint32_t>(entries_.size());
      entries_.push_back(entry{Key(key), std::invoke(make), latest(now), h, npos, npos});
      place(i, h);
      push_front(i);
    }
    return std::invoke(f, entries_[i].value);
  }

  // Inserts or replaces; returns the entry evicted to make room, if one was.
  std::optional<entry> insert(const Key& key, std::uint32_t h, Value& v, std::int64_t now)
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

  template <class K>
  std::optional<entry> erase(const K& key, std::uint32_t h) LBKIT_EXCLUDES(mu_) {
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

  template <class K>
  std::size_t position(const K& key, std::uint32_t h) const LBKIT_REQUIRES(mu_) {
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

// A bounded map from Key to Value split into independently locked lru_shards. `Hash` is a
// stateless function object: Hash{}(key, seed) returns a 64-bit hash, for Key and for every
// other K the members are called with (it must agree on equal keys: for std::string and
// std::string_view, hash the bytes).
// Thread safety: thread-safe. Complexity: every operation on one key is O(1) expected: one
// hash, one lock, a short probe. expire(): O(expired + shards).
template <class Key, class Value, class Hash>
class lru_shards {
 public:
  using shard_type = lru_shard<Key, Value>;
  using entry = typename shard_type::entry;

  // Clamps out-of-range values: capacity to at least 1, shards to a power of two from 1 to
  // 65536 and at most the capacity, entries a shard to 2^31. Seed 0 draws one from
  // std::random_device.
  lru_shards(std::size_t capacity, std::size_t shards, std::uint64_t seed) : seed_(seed) {
    capacity = std::max<std::size_t>(capacity, 1);
    shards = std::bit_ceil(std::clamp<std::size_t>(shards, 1, 65536));
    while (shards > capacity) shards /= 2;
    shards_ = std::make_unique<shard[]>(shards);
    shard_mask_ = shards - 1;
    for (std::size_t s = 0; s < shards; ++s) {
      const std::size_t c = capacity / shards + (s < capacity % shards ? 1 : 0);
      // Indices are 32-bit: at most 2^31 entries a shard.
      shards_[s].set_capacity(static_cast<std::uint32_t>(std::min(c, std::size_t{1} << 31)));
      capacity_ += shards_[s].capacity();
    }
    if (seed_ == 0) {
      std::random_device rd;
      seed_ = (std::uint64_t{rd()} << 32 | rd()) | 1;
    }
  }
  lru_shards(const lru_shards&) = delete;
  lru_shards& operator=(const lru_shards&) = delete;

  template <class K>
  std::optional<Value> find(const K& key, std::int64_t now, std::uint64_t timeout) {
    const std::uint64_t h = Hash{}(key, seed_);
    return shard_of(h).find(key, static_cast<std::uint32_t>(h), now, timeout);
  }

  template <class K, class Make, class F>
  decltype(auto) find_or_insert(const K& key, std::int64_t now, Make&& make, F&& f) {
    const std::uint64_t h = Hash{}(key, seed_);
    return shard_of(h).find_or_insert(key, static_cast<std::uint32_t>(h), now,
                                      std::forward<Make>(make), std::forward<F>(f));
  }

  std::optional<entry> insert(const Key& key, Value& v, std::int64_t now) {
    const std::uint64_t h = Hash{}(key, seed_);
    return shard_of(h).insert(key, static_cast<std::uint32_t>(h), v, now);
  }

  template <class K>
  std::optional<entry> erase(const K& key) {
    const std::uint64_t h = Hash{}(key, seed_);
    return shard_of(h).erase(key, static_cast<std::uint32_t>(h));
  }

  // Removes every entry idle for longer than `timeout` at `now` and calls
  // on_expired(const Key&, Value&) for each, outside the shard locks. Returns the count.
  template <class F>
  std::size_t expire(std::int64_t now, std::uint64_t timeout, F&& on_expired) {
    std::size_t count = 0;
    std::vector<entry> batch;
    for (std::size_t s = 0; s <= shard_mask_; ++s) {
      shards_[s].expire(now, timeout, batch);
      count += batch.size();
      for (auto& e : batch) std::invoke(on_expired, std::as_const(e.key), e.value);
      batch.clear();
    }
    return count;
  }

  // Entries held now. Locks every shard in turn, so under concurrent change the sum is
  // approximate.
  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t s = 0; s <= shard_mask_; ++s) n += shards_[s].size();
    return n;
  }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  // One cache line or more each, so that two shards' locks never share a line.
  struct alignas(64) shard : shard_type {};

  shard& shard_of(std::uint64_t h) noexcept {
    // The top bits pick the shard; the low 32 place the key within it.
    return shards_[(h >> 48) & shard_mask_];
  }

  std::unique_ptr<shard[]> shards_;
  std::size_t shard_mask_ = 0;
  std::size_t capacity_ = 0;
  std::uint64_t seed_;
};

}  // namespace lbkit::detail
