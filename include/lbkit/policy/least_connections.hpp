// SPDX-License-Identifier: MIT
// least_connections: the eligible backend with the fewest requests in flight per weight.
#pragma once

#include <algorithm>
#include <cstdint>

#include "lbkit/policy/detail/least_loaded.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Picks the backend with the fewest requests in flight per weight, counting the leases the
// balancer hands out (nginx least_conn, HAProxy leastconn); backends whose loads tie share
// the picks by weight, so one request at a time is spread as the weights say. Exact for sets
// of up to `scan_limit` eligible backends (default 16), by a full scan. Above that it examines
// `scan_limit` random backends per pick instead of all of them: an O(n) scan per pick does not
// scale to thousands of backends, and the least loaded of 16 random ones is, by the power of d
// choices, within ln ln n / ln 16 of the mean (about 1 request at n = 10 000).
// Thread safety: the state is thread-safe; pickers own their generators.
// Complexity: build O(n); pick O(min(n, scan_limit)).
class least_connections {
 public:
  struct local {};

  least_connections() noexcept : least_connections(16) {}
  explicit least_connections(std::uint32_t scan_limit) noexcept
      : scan_limit_(std::max<std::uint32_t>(scan_limit, 2)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context&, pick_rng& rng, local&) const noexcept {
      return engine_.pick(rng);
    }

   private:
    friend class least_connections;
    detail::least_loaded engine_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.engine_ = detail::least_loaded(c, scan_limit_);
    return s;
  }

 private:
  std::uint32_t scan_limit_;
};

}  // namespace lbkit
