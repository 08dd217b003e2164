// SPDX-License-Identifier: MIT
// anchor_hash: AnchorHash, a consistent hash that moves exactly the keys of a leaving member
// and carries its mapping from one registry version to the next (an incremental_policy).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/detail/config.hpp"
#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// AnchorHash (G. Mendelson, S. Vargaftik, K. Barabash, D. H. Lorenz, I. Keslassy and A. Orda,
// "AnchorHash: A Scalable Consistent Hash", IEEE/ACM Transactions on Networking 29(2), 2021,
// Algorithm 3), written here from the paper. A fixed anchor of `a` buckets holds a working set
// of n buckets, one per member with a non-zero configured weight; the others are removed, each
// remembering the working set it left behind. A key hashes to one of the `a` buckets and, while
// that bucket is removed, rehashes into the working set as it was when that bucket left.
//
// Guarantees (tested in tests/unit/anchor_hash.test.cpp):
//   - Minimal disruption: when a member leaves, exactly its keys move, spread evenly over the
//     others; no key of a surviving member moves. When a member joins, it takes keys only
//     from the others, 1/(n+1) of them in expectation.
//   - Undo: buckets are freed and reused last-in first-out (the paper's stack R), so a member
//     that comes back right after leaving gets its bucket and exactly its old keys back. A
//     member that returns in the same version as others that left before it still gets its
//     own bucket whenever that bucket is among the ones reused.
//   - Balance: every working bucket gets 1/n of the key space in expectation (with an ideal
//     hash; XXH64 here). AnchorHash is unweighted: weights above zero are ignored, and weight
//     0 counts as absent. Use maglev or rendezvous_hash for weighted shares.
//
// The mapping depends on the order of changes, not only on the membership: agents agree when
// they apply the same changes in the same order. This policy therefore
// builds each version from the previous one (incremental_policy): members that left give up
// their buckets in id order, then members that joined take freed buckets in id order. Two
// balancers agree on every key when they were built from scratch from the same membership, or
// followed the same sequence of registry versions from such a start. A balancer started later
// (a restart) builds from scratch and may disagree with peers that saw removals, for the keys
// of members that joined or left in between. Adding members one by one in id order to an
// empty registry gives exactly the from-scratch state.
//
// Capacity: the anchor size `a` bounds the working set. When the membership outgrows it, the
// state is rebuilt from scratch with the capacity doubled (as often as needed): that one change
// moves most keys. Size the capacity for the largest pool you run, but not far beyond it: a
// lookup computes about ln(a/n) bucket hashes in expectation (see state::rehashes), so an
// anchor much larger than the pool makes picks slower.
//
// A key whose member is ineligible (unhealthy, draining) takes the fallback sequence of
// detail::hash_eligibility. A pick without a key is random.
// Thread safety: the state is thread-safe (immutable).
// Complexity: build O(a + n) plus O(log n) per joining member; pick expected O(1 + ln(a/n)).
// Memory: 20 bytes per anchor bucket (20 KiB at the default a = 1024), plus every working
// member's id and the former owner's id of every bucket freed by a leaving member.
class anchor_hash {
 public:
  static constexpr bool keyed = true;
  struct local {};

  // The largest anchor size a constructor accepts (320 MiB of state); growth past it is
  // still possible when the membership itself needs more buckets.
  static constexpr std::uint32_t max_capacity = 1u << 24;

  // `capacity` (the anchor size a) is clamped to [1, max_capacity].
  anchor_hash() noexcept : anchor_hash(1024) {}
  explicit anchor_hash(std::uint32_t capacity) noexcept
      : capacity_(std::clamp<std::uint32_t>(capacity, 1, max_capacity)) {}

  std::uint32_t capacity() const noexcept { return capacity_; }

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local&) const noexcept {
      return elig_.pick(ctx, rng, [this](std::uint64_t h) { return lookup(h); });
    }

    // The member index that owns the bucket of `h`. Requires working() > 0.
    std::uint32_t lookup(std::uint64_t h) const noexcept { return slots_[bucket(h)].k; }

    // The paper's GETBUCKET: the working bucket of `h`. Requires working() > 0. It terminates
    // for every input (the proof is at walk()).
    std::uint32_t bucket(std::uint64_t h) const noexcept {
      std::uint32_t rounds = 0;  // unused here: the compiler drops the count
      return walk(h, rounds);
    }

    // How many bucket hashes (H_b) the lookup of `h` computes: one per removed bucket it
    // meets. For benchmarks and diagnostics. In a state built from scratch the expectation is
    // H(a) - H(n) ~ ln(a/n) (harmonic numbers: a key in a removed bucket b >= n rehashes
    // uniformly into [0, b), so f(m) = f(m-1) + 1/m for a key uniform in [0, m)).
    std::uint32_t rehashes(std::uint64_t h) const noexcept {
      std::uint32_t rounds = 0;
      walk(h, rounds);
      return rounds;
    }

    // The paper's H_b: the hash of `h` for removed bucket `b`. Independent for every bucket.
    static constexpr std::uint64_t bucket_hash(std::uint64_t h, std::uint32_t b) noexcept {
      return hash_u64(h, 0x616e63686f72ULL + b);  // "anchor" + b as the seed
    }

    // The anchor size a, and the number of working buckets (members with a weight).
    std::uint32_t capacity() const noexcept { return size_; }
    std::uint32_t working() const noexcept { return n_; }

    // The bucket of the member with this id, or no_pick when it has none (absent, weight 0).
    // Complexity: O(log n).
    std::uint32_t bucket_of(std::string_view id) const noexcept {
      auto it = std::lower_bound(owners_.begin(), owners_.end(), id,
                                 [](const owner& o, std::string_view k) { return o.id < k; });
      return it != owners_.end() && it->id == id ? it->bucket : no_pick;
    }

   private:
    friend class anchor_hash;

    // A[b] and K[b] side by side: a lookup reads both of a bucket in one load. K of a working
    // bucket is never read by the algorithm (GETBUCKET follows K only of removed buckets, and
    // REMOVE writes it first), so there it holds the bucket's member index instead of b.
    struct slot {
      std::uint32_t a;  // 0: working; else the size of the working set the bucket left
      std::uint32_t k;  // removed: its successor in W; working: its member index
    };
    struct owner {
      std::string id;
      std::uint32_t bucket;
    };

    // Termination, for every input. ADD exactly undoes the latest REMOVE still in effect, so
    // the state is always the one INITANCHOR reaches by REMOVEs of the buckets in R, bottom to
    // top; reason about that sequence. REMOVE sets A[b] to the size of the working set b leaves,
    // one less per REMOVE: a bucket removed later has a strictly smaller A, and every removed
    // A is > 0 except that of a bucket that emptied the working set (no lookup runs then).
    // Working buckets have A = 0. In W, bucket b starts at position b and only moves down (a
    // REMOVE fills the hole with the last bucket).
    //   - Inner walk, from a position p < A[b]: it follows h <- K[h] only while A[h] >= A[b]
    //     > p. K[h] is the bucket that filled h's position when h left. By induction every h
    //     met left from a position <= p < A[h], not from the last position A[h] (the only case
    //     where K[h] = h). So K[h] was another bucket, working when h left: it is working now
    //     (A = 0, the walk stops) or left later, with A[K[h]] < A[h]. A strictly decreases
    //     along the walk, so it ends.
    //   - Outer loop: it moves on only to a bucket with A[next] < A[b], so A strictly
    //     decreases and reaches 0, a working bucket, within A[first bucket] < a rounds.
    std::uint32_t walk(std::uint64_t h, std::uint32_t& rounds) const noexcept {
      const slot* const s = slots_.data();
      std::uint32_t b = detail::reduce(h, size_);
      while (s[b].a > 0) {  // b is removed: rehash into the working set b left, W_b
        const std::uint32_t size = s[b].a;
        std::uint32_t next = detail::reduce(bucket_hash(h, b), size);  // a position in W_b
        while (s[next].a >= size) next = s[next].k;  // left before b: find who held it then
        b = next;
        ++rounds;
      }
      return b;
    }

    // The paper's REMOVEBUCKET(b).
    void remove_bucket(std::uint32_t b) {
      r_.push_back(b);
      --n_;
      slots_[b].a = n_;
      const std::uint32_t last = w_[n_];
      w_[l_[b]] = last;
      slots_[b].k = last;
      l_[last] = l_[b];
    }

    // The paper's ADDBUCKET(): reuses the most recently removed bucket, undoing its removal.
    std::uint32_t add_bucket() noexcept {
      const std::uint32_t b = r_.back();
      r_.pop_back();
      slots_[b].a = 0;
      l_[w_[n_]] = n_;
      w_[l_[b]] = b;
      slots_[b].k = b;
      ++n_;
      return b;
    }

    // A member left (or its weight became 0): REMOVE its bucket and remember who held it.
    void release(const owner& o) {
      remove_bucket(o.bucket);
      freed_.push_back(o);
    }

    // Records which member holds each working bucket, by id and in K.
    void finish(const candidate_set& c, const std::vector<std::uint32_t>& bucket_by_member) {
      const auto ms = c.members();
      owners_.reserve(n_);
      for (std::uint32_t i = 0; i < ms.size(); ++i) {
        const std::uint32_t b = bucket_by_member[i];
        if (b == no_pick) continue;
        owners_.push_back({ms[i].id(), b});
        slots_[b].k = i;
      }
      LBKIT_ASSERT(owners_.size() == n_, "anchor_hash: every working bucket has one member");
      elig_ = detail::hash_eligibility(c);
    }

    std::vector<slot> slots_;       // A and K, by bucket
    std::vector<std::uint32_t> w_;  // W: working buckets in positions [0, n)
    std::vector<std::uint32_t> l_;  // L: each bucket's last position in W
    std::vector<std::uint32_t> r_;  // R: removed buckets, most recent last
    std::vector<owner> owners_;     // working members, sorted by id
    std::vector<owner> freed_;      // who held a bucket now in R; a sub-stack of R
    std::uint32_t n_ = 0;           // N: working buckets
    // a = slots_.size(), kept as a number: the lookup's first reduce reads one word instead of
    // computing (end - begin) / 8. With a = n that was 1.35x the paper's lookup (clang -O2),
    // 1.1x with it (bench/anchor_hash.bench.cpp, anchor_vs_paper).
    std::uint32_t size_ = 0;
    detail::hash_eligibility elig_;
  };

  // From scratch: the members with a weight, in id order, get buckets 0..n-1; buckets a-1 down
  // to n are removed in that order, as the paper's INITANCHOR does.
  state build(const candidate_set& c) const { return fresh(c, working_count(c)); }

  // From the previous version's state: members that left (or now have weight 0) give up their
  // buckets in id order, then members that joined take buckets from R in id order, except that
  // a member gets back the very bucket it gave up when that bucket comes off R. Rebuilds from
  // scratch, with a larger anchor, when the members outgrow it.
  state build(const candidate_set& c, const state& previous) const {
    const std::uint32_t n = working_count(c);
    if (previous.slots_.empty() || n > previous.capacity()) return fresh(c, n);

    state s;
    s.slots_ = previous.slots_;
    s.w_ = previous.w_;
    s.l_ = previous.l_;
    s.r_ = previous.r_;
    s.freed_ = previous.freed_;
    s.n_ = previous.n_;
    s.size_ = previous.size_;

    // Merge the previous owners with the members, both sorted by id.
    const auto ms = c.members();
    std::vector<std::uint32_t> bucket_by_member(ms.size(), no_pick);
    std::vector<std::uint32_t> joined;  // member indices, in id order
    auto old = previous.owners_.begin();
    const auto old_end = previous.owners_.end();
    for (std::uint32_t i = 0; i < ms.size(); ++i) {
      if (ms[i].weight() == 0) continue;
      const std::string& id = ms[i].id();
      for (; old != old_end && old->id < id; ++old) s.release(*old);
      if (old != old_end && old->id == id) {
        bucket_by_member[i] = old->bucket;
        ++old;
      } else {
        joined.push_back(i);
      }
    }
    for (; old != old_end; ++old) s.release(*old);

    // One ADD per joining member. A popped bucket whose former owner is joining goes back to
    // it; the other popped buckets go to the other joining members in id order.
    std::vector<std::uint32_t> popped(joined.size());
    std::vector<std::uint8_t> placed(joined.size(), 0);
    std::vector<std::uint8_t> taken(joined.size(), 0);
    for (std::size_t j = 0; j < joined.size(); ++j) {
      popped[j] = s.add_bucket();
      if (s.freed_.empty() || s.freed_.back().bucket != popped[j]) continue;
      const std::string former = std::move(s.freed_.back().id);
      s.freed_.pop_back();
      auto it =
          std::lower_bound(joined.begin(), joined.end(), former,
                           [&](std::uint32_t m, const std::string& k) { return ms[m].id() < k; });
      if (it == joined.end() || ms[*it].id() != former) continue;
      const auto x = static_cast<std::size_t>(it - joined.begin());
      if (taken[x]) continue;  // it held two freed buckets; it takes the newer one
      bucket_by_member[*it] = popped[j];
      taken[x] = placed[j] = 1;
    }
    std::size_t next = 0;
    for (std::size_t j = 0; j < joined.size(); ++j) {
      if (placed[j]) continue;
      while (taken[next]) ++next;
      bucket_by_member[joined[next]] = popped[j];
      taken[next] = 1;
    }

    s.finish(c, bucket_by_member);
    return s;
  }

 private:
  static std::uint32_t working_count(const candidate_set& c) noexcept {
    std::uint32_t n = 0;
    for (const auto& m : c.members()) n += m.weight() != 0;
    return n;
  }

  // The anchor size for n working buckets: the configured capacity, doubled until it fits.
  // From-scratch builds and growth use the same rule, so a grown state is a fresh one.
  std::uint32_t anchor_size(std::uint32_t n) const noexcept {
    std::uint64_t a = capacity_;
    while (a < n) a *= 2;
    return a > UINT32_MAX ? n : static_cast<std::uint32_t>(a);
  }

  state fresh(const candidate_set& c, std::uint32_t n) const {
    const std::uint32_t a = anchor_size(n);
    state s;
    s.slots_.resize(a);
    s.w_.resize(a);
    s.l_.resize(a);
    s.r_.reserve(a - n);
    for (std::uint32_t b = 0; b < a; ++b) {
      s.slots_[b] = {0, b};
      s.w_[b] = s.l_[b] = b;
    }
    s.n_ = a;
    s.size_ = a;
    for (std::uint32_t b = a; b-- > n;) s.remove_bucket(b);
    const auto ms = c.members();
    std::vector<std::uint32_t> bucket_by_member(ms.size(), no_pick);
    std::uint32_t next = 0;
    for (std::uint32_t i = 0; i < ms.size(); ++i) {
      if (ms[i].weight() != 0) bucket_by_member[i] = next++;
    }
    s.finish(c, bucket_by_member);
    return s;
  }

  std::uint32_t capacity_;
};

}  // namespace lbkit
