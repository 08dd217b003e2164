// SPDX-License-Identifier: MIT
// The engine of the load-aware policies: choose, among some candidates, the one with the
// fewest requests in flight per unit of weight.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lbkit/backend_state.hpp"
#include "lbkit/policy/detail/alias_table.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit::detail {

// Load is requests in flight per unit of weight, as nginx's least_conn compares it
// (conns × other's weight); equal loads are shared by weight, as nginx's weighted round robin
// among the tied and Envoy's weighted least request share them. So with one request at a
// time (every load 0) the shares follow the weights, and under load the least loaded wins.
class least_loaded {
 public:
  struct candidate {
    const backend_state* state;
    std::uint32_t member;
    std::uint32_t weight;  // > 0
  };

  least_loaded() = default;
  least_loaded(const candidate_set& c, std::uint32_t choices) : choices_(choices) {
    std::vector<std::uint32_t> index, weight;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (!c.eligible(i)) continue;
      index.push_back(static_cast<std::uint32_t>(cands_.size()));
      weight.push_back(c.weights()[i]);
      cands_.push_back({&c.members()[i].state(), i, c.weights()[i]});
    }
    const bool uniform =
        std::all_of(weight.begin(), weight.end(), [&](auto w) { return w == weight.front(); });
    // Samples are drawn by weight when weights differ, so that among idle backends each is
    // the first drawn (and so the pick) in proportion to its weight.
    if (!uniform && choices_ < cands_.size()) by_weight_ = alias_table(index, weight);
  }

  // With at least as many choices as candidates: a full scan, ties shared by weight (a
  // weighted reservoir over the tied). Otherwise `choices` candidates drawn at random —
  // uniformly, or by weight when weights differ; two distinct ones when choices is 2 and
  // weights are equal, else with replacement (two by weight redraw a repeat up to 4 times) —
  // and the least loaded of them, ties to the first drawn.
  // Complexity: O(min(choices, n)) loads of `active`; a random number per tie in a scan.
  std::uint32_t pick(pick_rng& rng) const noexcept {
    const auto n = static_cast<std::uint32_t>(cands_.size());
    if (n == 1) return cands_[0].member;
    if (choices_ >= n) {
      const candidate* best = &cands_[0];
      std::uint64_t best_load = load(*best);
      std::uint64_t tied = best->weight;  // weight of the candidates tied with best so far
      for (std::uint32_t j = 1; j < n; ++j) {
        const candidate& c = cands_[j];
        const std::uint64_t l = load(c);
        if (lighter(l, c, best_load, *best)) {
          best = &c, best_load = l, tied = c.weight;
        } else if (!lighter(best_load, *best, l, c)) {
          // A tie: c replaces the choice with probability weight / tied weight, which leaves
          // each tied candidate chosen in proportion to its weight (weighted reservoir).
          tied += c.weight;
          if (unit(rng) * static_cast<double>(tied) < c.weight) best = &c, best_load = l;
        }
      }
      return best->member;
    }
    const std::uint32_t a = draw(rng);
    const candidate* best = &cands_[a];
    std::uint64_t best_load = load(*best);
    if (choices_ == 2 && by_weight_.empty()) {
      std::uint32_t b = rng.below(n - 1);
      b += b >= a;  // distinct from a
      const std::uint64_t l = load(cands_[b]);
      return lighter(l, cands_[b], best_load, *best) ? cands_[b].member : best->member;
    }
    if (choices_ == 2) {
      // By weight: a second draw that repeats the first is redrawn, up to 4 times, so that a
      // heavy backend is seldom compared with itself alone.
      std::uint32_t b = draw(rng);
      for (int retry = 0; retry < 4 && b == a; ++retry) b = draw(rng);
      const std::uint64_t l = load(cands_[b]);
      return lighter(l, cands_[b], best_load, *best) ? cands_[b].member : best->member;
    }
    for (std::uint32_t k = 1; k < choices_; ++k) {
      const candidate& c = cands_[draw(rng)];
      const std::uint64_t l = load(c);
      if (lighter(l, c, best_load, *best)) best = &c, best_load = l;
    }
    return best->member;
  }

 private:
  static std::uint64_t load(const candidate& c) noexcept {
    return static_cast<std::uint64_t>(c.state->active());
  }
  // la / a.weight < lb / b.weight, without division: la * b.weight < lb * a.weight. Loads
  // stay below 2^32 and weights at most 10^6, so neither product overflows 64 bits.
  static bool lighter(std::uint64_t la, const candidate& a, std::uint64_t lb,
                      const candidate& b) noexcept {
    return la * b.weight < lb * a.weight;
  }
  static double unit(pick_rng& rng) noexcept {
    return static_cast<double>(rng.next() >> 11) * 0x1p-53;
  }
  std::uint32_t draw(pick_rng& rng) const noexcept {
    return by_weight_.empty() ? rng.below(static_cast<std::uint32_t>(cands_.size()))
                              : by_weight_.draw(rng.next());
  }

  std::vector<candidate> cands_;
  alias_table by_weight_;  // over indices into cands_; empty when weights are equal
  std::uint32_t choices_ = 2;
};

// The load-aware policies, least_connections and power_of_two_choices, are this engine with
// another number of choices by default: their classes differ in that number and their docs.
template <std::uint32_t DefaultChoices>
class least_loaded_policy {
 public:
  struct local {};
  static constexpr bool counts_in_flight = true;  // it compares backend_state::active()

  least_loaded_policy() noexcept : least_loaded_policy(DefaultChoices) {}
  explicit least_loaded_policy(std::uint32_t choices) noexcept
      : choices_(std::max<std::uint32_t>(choices, 2)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
      return engine_.pick(rng);
    }

   private:
    friend class least_loaded_policy;
    least_loaded engine_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.engine_ = least_loaded(c, choices_);
    return s;
  }

 private:
  std::uint32_t choices_;
};

}  // namespace lbkit::detail
