// SPDX-License-Identifier: MIT
// power_of_two_choices: the less loaded of two (or d) random backends.
#pragma once

#include <algorithm>
#include <cstdint>

#include "lbkit/policy/detail/least_loaded.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Least request by random sampling: draws `choices` eligible backends at random (two distinct
// ones by default; by weight, with replacement, when weights differ) and picks the one with
// the fewest requests in flight per weight, ties to the first drawn — so among equally loaded
// backends the picks follow the weights. With two choices the most loaded backend carries
// O(log log n) above the mean instead of O(log n / log log n) for one random choice
// (M. Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE TPDS 2001);
// Envoy's least_request and Finagle's P2C are this algorithm. Every picker samples with its
// own generator, so pickers on different threads do not herd onto the same backend.
// Thread safety: the state is thread-safe; pickers own their generators.
// Complexity: build O(n); pick O(choices).
class power_of_two_choices {
 public:
  struct local {};

  power_of_two_choices() noexcept : power_of_two_choices(2) {}
  explicit power_of_two_choices(std::uint32_t choices) noexcept
      : choices_(std::max<std::uint32_t>(choices, 2)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
      return engine_.pick(rng);
    }

   private:
    friend class power_of_two_choices;
    detail::least_loaded engine_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.engine_ = detail::least_loaded(c, choices_);
    return s;
  }

 private:
  std::uint32_t choices_;
};

}  // namespace lbkit
