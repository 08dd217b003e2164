// SPDX-License-Identifier: MIT
// least_connections: the eligible backend with the fewest requests in flight per weight.
#pragma once

#include "lbkit/policy/detail/least_loaded.hpp"

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
// `scan_limit` below 2 counts as 2.
class least_connections : public detail::least_loaded_policy<16> {
 public:
  using least_loaded_policy::least_loaded_policy;  // (std::uint32_t scan_limit)
};

}  // namespace lbkit
