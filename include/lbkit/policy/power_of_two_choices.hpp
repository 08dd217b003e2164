// SPDX-License-Identifier: MIT
// power_of_two_choices: the less loaded of two (or d) random backends.
#pragma once

#include "lbkit/policy/detail/least_loaded.hpp"

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
// `choices` below 2 counts as 2.
class power_of_two_choices : public detail::least_loaded_policy<2> {
 public:
  using least_loaded_policy::least_loaded_policy;  // (std::uint32_t choices)
};

}  // namespace lbkit
