// SPDX-License-Identifier: MIT
// maglev: consistent hashing by a lookup table, O(1) per pick (Google's Maglev).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string_view>
#include <vector>

#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Maglev hashing (D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016, §3.4). Each member fills slots of a prime-sized table in the order of
// its own permutation (offset + j * skip mod M, both from hashes of its id), members taking
// turns in proportion to their weights (the weighted turn-taking is Envoy's, written here
// anew); a pick is one hash and one table load. Tables built from the same membership are
// identical everywhere. When one of N members leaves, about 1/N of keys move plus a small
// extra share (the paper measures a few percent of the table at M >= 100 N); slot counts
// differ from the exact weight shares by at most one slot.
//
// A key whose member is ineligible (unhealthy, draining) takes the fallback sequence of
// detail::hash_eligibility: rehashes into the same table until an eligible member comes up.
// A pick without a key is random.
// Thread safety: the state is thread-safe (immutable).
// Complexity: build O(M log M) expected (M = table size); pick O(1): one hash, one load.
// Memory: 2 bytes per slot below 65 536 members (128 KiB at the default M), else 4.
class maglev {
 public:
  static constexpr bool keyed = true;
  struct local {};

  // `table_size` is clamped to at most 2^24, then rounded up to a prime and to at least the
  // member count. It should be at least 100 times the member count for the balance and
  // disruption figures above.
  maglev() noexcept : maglev(65537) {}
  explicit maglev(std::uint32_t table_size) noexcept
      : table_size_(std::min<std::uint32_t>(table_size, 1u << 24)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local&) const noexcept {
      return elig_.pick(ctx, rng, [this](std::uint64_t h) { return lookup(h); });
    }

    // The member index that owns slot `s` (for tests and diagnostics).
    std::uint32_t slot(std::uint32_t s) const noexcept {
      return narrow_.empty() ? wide_[s] : narrow_[s];
    }
    std::uint32_t size() const noexcept { return size_; }
    std::uint32_t lookup(std::uint64_t h) const noexcept { return slot(detail::reduce(h, size_)); }

   private:
    friend class maglev;
    std::vector<std::uint16_t> narrow_;
    std::vector<std::uint32_t> wide_;
    std::uint32_t size_ = 0;
    detail::hash_eligibility elig_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.elig_ = detail::hash_eligibility(c);
    std::vector<entry> es;
    std::uint64_t max_w = 0;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      const std::uint32_t w = c.members()[i].weight();
      if (w == 0) continue;
      es.push_back({i, w, 0, 0, 0});
      max_w = std::max<std::uint64_t>(max_w, w);
    }
    if (es.empty()) return s;
    const std::uint32_t m =
        next_prime(std::max<std::uint32_t>(table_size_, static_cast<std::uint32_t>(es.size())));
    s.size_ = m;
    for (auto& e : es) {
      const permutation p = permutation_of(c.members()[e.member].id(), m);
      e.pos = p.offset;
      e.skip = p.skip;
    }
    if (c.size() < 65536) {
      s.narrow_ = fill<std::uint16_t>(es, m, max_w);
    } else {
      s.wide_ = fill<std::uint32_t>(es, m, max_w);
    }
    return s;
  }

  // A member's permutation of a table of prime size `m` (§3.4): its first preferred slot and
  // the step to the next, from two hashes of its id, so that it prefers slot
  // (offset + j * skip) mod m j-th. Public so that a test and the benchmark's reference build
  // (bench/reference/maglev_paper.hpp) use the same permutations.
  struct permutation {
    std::uint32_t offset;
    std::uint32_t skip;  // in [1, m): with m prime, the permutation visits every slot
  };
  static permutation permutation_of(std::string_view id, std::uint32_t m) noexcept {
    return {static_cast<std::uint32_t>(hash_bytes(id, 0x6d61676c6576ULL) % m),
            static_cast<std::uint32_t>(hash_bytes(id, 0x736b6970ULL) % (m - 1) + 1)};
  }

  static constexpr std::uint32_t next_prime(std::uint32_t n) noexcept {
    if (n <= 2) return 2;
    for (std::uint32_t p = n | 1;; p += 2) {
      bool prime = true;
      for (std::uint32_t d = 3; d <= p / d; d += 2) {
        if (p % d == 0) {
          prime = false;
          break;
        }
      }
      if (prime) return p;
    }
  }

 private:
  struct entry {
    std::uint32_t member;
    std::uint64_t weight;
    std::uint64_t credit = 0;
    std::uint32_t pos;  // the next preference to try, in the member's permutation
    std::uint32_t skip;
  };

  // Fills a table of m slots. Each round every member earns its weight in credit; a member
  // with max_w of credit takes its next preferred free slot. The heaviest member fills one
  // slot per round, a member of half that weight one every other round, and so on; with equal
  // weights this is the paper's populate loop, slot for slot (tests/unit/hash_policies).
  template <class Slot>
  static std::vector<Slot> fill(std::vector<entry>& es, std::uint32_t m, std::uint64_t max_w) {
    std::vector<Slot> table(m);
    // Which slots are taken, as bits: the ~M ln M probes of the fill then read 8 KiB that
    // stay in L1 instead of the table (measured: the build is about 10% faster).
    std::vector<std::uint64_t> taken((m + 63) / 64, 0);
    auto is_taken = [&](std::uint32_t p) noexcept {
      return static_cast<std::uint32_t>(taken[p >> 6] >> (p & 63) & 1);
    };
    std::uint32_t filled = 0;
    while (filled < m) {
      for (auto& e : es) {
        e.credit += e.weight;
        if (e.credit < max_w) continue;
        e.credit -= max_w;
        // The next free preference, four at a time: their bits are read without a branch
        // between them and the first free one is found by counting trailing ones. Whether a
        // slot is free is a coin toss while the table fills, so a branch per preference was
        // mispredicted about every other time (measured: the build takes 0.55-0.65x the time
        // of one preference per step, 1 000 members, M = 65 537).
        std::uint32_t p = e.pos;
        for (;;) {
          std::uint32_t at[4];
          std::uint32_t busy = 0;
          for (std::uint32_t k = 0; k < 4; ++k) {
            at[k] = p;
            busy |= is_taken(p) << k;
            p += e.skip;
            p -= p >= m ? m : 0;
          }
          if (busy != 0xF) {
            p = at[std::countr_one(busy)];
            break;
          }
        }
        e.pos = p;
        taken[p >> 6] |= std::uint64_t{1} << (p & 63);
        table[p] = static_cast<Slot>(e.member);
        if (++filled == m) break;
      }
    }
    return table;
  }

  std::uint32_t table_size_;
};

}  // namespace lbkit
