// SPDX-License-Identifier: MIT
// The engine of the load-aware policies: choose, among some candidates, the one with the
// fewest requests in flight per unit of weight.
#pragma once

#include <cstdint>
#include <vector>

#include "lbkit/backend_state.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit::detail {

class least_loaded {
 public:
  struct candidate {
    const backend_state* state;
    std::uint32_t member;
    std::uint32_t weight;  // > 0
  };

  least_loaded() = default;
  least_loaded(const candidate_set& c, std::uint32_t choices) : choices_(choices) {
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      if (c.eligible(i)) cands_.push_back({&c.members()[i].state(), i, c.weights()[i]});
    }
  }

  // With at least as many choices as candidates: a full scan from a random start (ties go to
  // the first in scan order). Otherwise `choices` random candidates (two distinct ones when
  // choices is 2; with replacement above), the least loaded of them, ties to the first drawn.
  // Complexity: O(min(choices, n)) loads of `active`.
  std::uint32_t pick(pick_rng& rng) const noexcept {
    const auto n = static_cast<std::uint32_t>(cands_.size());
    if (n == 1) return cands_[0].member;
    if (choices_ >= n) {
      std::uint32_t j = rng.below(n);
      const candidate* best = &cands_[j];
      std::uint64_t best_load = load(*best);
      for (std::uint32_t step = 1; step < n; ++step) {
        if (++j == n) j = 0;
        const std::uint64_t l = load(cands_[j]);
        if (lighter(l, cands_[j], best_load, *best)) best = &cands_[j], best_load = l;
      }
      return best->member;
    }
    const std::uint32_t a = rng.below(n);
    const candidate* best = &cands_[a];
    std::uint64_t best_load = load(*best);
    if (choices_ == 2) {
      std::uint32_t b = rng.below(n - 1);
      b += b >= a;  // distinct from a
      const std::uint64_t l = load(cands_[b]);
      return lighter(l, cands_[b], best_load, *best) ? cands_[b].member : best->member;
    }
    for (std::uint32_t k = 1; k < choices_; ++k) {
      const candidate& c = cands_[rng.below(n)];
      const std::uint64_t l = load(c);
      if (lighter(l, c, best_load, *best)) best = &c, best_load = l;
    }
    return best->member;
  }

 private:
  // Requests in flight plus the one about to be sent, so that weights matter among idle
  // backends too (as nginx's least_conn and Envoy's least request do).
  static std::uint64_t load(const candidate& c) noexcept {
    return static_cast<std::uint64_t>(c.state->active()) + 1;
  }
  // la / a.weight < lb / b.weight, without division: la * b.weight < lb * a.weight. Loads
  // stay below 2^32 and weights at most 10^6, so neither product overflows 64 bits.
  static bool lighter(std::uint64_t la, const candidate& a, std::uint64_t lb,
                      const candidate& b) noexcept {
    return la * b.weight < lb * a.weight;
  }

  std::vector<candidate> cands_;
  std::uint32_t choices_ = 2;
};

}  // namespace lbkit::detail
