// SPDX-License-Identifier: MIT
// weighted_round_robin: a smooth weighted cycle, precomputed once per version, O(1) per pick.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <queue>
#include <vector>

#include "lbkit/policy/detail/sequence.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Each eligible backend gets exactly `weight` picks in every cycle of sum(weights) picks (after
// dividing the weights by their gcd), interleaved smoothly.
//
// The cycle is an earliest-deadline-first schedule (as Envoy's EDF scheduler) computed once
// per version into a table: backend i's k-th slot has deadline (k + phase_i) / weight_i, and
// the table lists the slots in deadline order. Exactly weight_i deadlines of i fall in every
// unit of time, which gives the exact proportions; the phases, spread by the golden ratio
// over the members, keep equal-weight backends from falling due together, which is what
// makes plain EDF bursty (with weights 1000,1,...,1 it sends the 999 light backends one
// after another; here the heavy backend never comes more than twice in a row). The order
// differs from nginx's smooth WRR (for weights 5,1,1 this gives a b a a a c a where nginx
// gives a a b a c a a); both interleave.
//
// Picks walk the table through detail::sequence, from a random offset, in batches per thread.
// A cycle longer than `max_table` slots (huge, co-prime weights) is scaled down to fit: each
// weight becomes max(1, floor(weight * max_table / sum)), so each share then differs from the
// configured one by at most (n + 1) / (max_table - n) for n eligible backends — keep
// max_table far above n (the default, 2^20, is).
// Thread safety: the state is thread-safe; `local` is per picker.
// Complexity: build O(W log n) time and O(W) memory for a cycle of W slots; pick O(1).
class weighted_round_robin {
 public:
  using local = detail::sequence::local;

  weighted_round_robin() noexcept : weighted_round_robin(1u << 20) {}
  explicit weighted_round_robin(std::uint32_t max_table) noexcept
      : max_table_(std::max<std::uint32_t>(max_table, 1)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng&, local& l) const noexcept {
      return seq_.next(l);
    }
    // One cycle of the schedule, as member indices.
    const std::vector<std::uint32_t>& cycle() const noexcept { return seq_.order(); }

   private:
    friend class weighted_round_robin;
    detail::sequence seq_;
  };

  state build(const candidate_set& c) const {
    struct entry {
      std::uint32_t member;
      std::uint64_t weight;
      double phase;
    };
    std::vector<entry> es;
    std::uint64_t g = 0;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (!c.eligible(i)) continue;
      // Golden-ratio phases: well spread for any number of members (Weyl sequence).
      const double phase = static_cast<double>(es.size() + 1) * 0.6180339887498949;
      es.push_back(
          {i, c.weights()[i], phase - static_cast<double>(static_cast<std::uint64_t>(phase))});
      g = std::gcd(g, std::uint64_t{c.weights()[i]});
    }
    state s;
    if (es.empty()) return s;
    std::uint64_t total = 0;
    for (auto& e : es) total += e.weight /= g;
    if (total > max_table_) {
      const std::uint64_t before = total;
      total = 0;
      for (auto& e : es)
        total += e.weight = std::max<std::uint64_t>(1, e.weight * max_table_ / before);
    }

    // Earliest deadline first over the members; a tie goes to the lower member index.
    struct due {
      double deadline;
      std::uint32_t slot;  // index into es
      std::uint64_t k;     // how many slots it has had
    };
    auto later = [](const due& a, const due& b) {
      return a.deadline != b.deadline ? a.deadline > b.deadline : a.slot > b.slot;
    };
    std::priority_queue<due, std::vector<due>, decltype(later)> heap(later);
    for (std::uint32_t j = 0; j < es.size(); ++j) {
      heap.push({es[j].phase / static_cast<double>(es[j].weight), j, 0});
    }
    std::vector<std::uint32_t> table;
    table.reserve(total);
    while (!heap.empty()) {
      due d = heap.top();
      heap.pop();
      const entry& e = es[d.slot];
      table.push_back(e.member);
      if (++d.k < e.weight) {
        d.deadline = (static_cast<double>(d.k) + e.phase) / static_cast<double>(e.weight);
        heap.push(d);
      }
    }
    s.seq_ = detail::sequence(std::move(table), hash_u64(c.seed()));
    return s;
  }

 private:
  std::uint32_t max_table_;
};

}  // namespace lbkit
