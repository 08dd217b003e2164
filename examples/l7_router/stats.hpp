// SPDX-License-Identifier: MIT
// The router's counters, one set per thread, and the stats page that sums them and lists
// every backend with what lbkit's backend_state knows of it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace l7 {

struct runtime;
struct thread_state;

// A thread's counters for the stats page: written by their thread, read by the stats page.
struct counters {
  using counter = std::atomic<std::uint64_t>;
  counter connections_active{0}, connections_total{0}, connections_refused{0};
  counter requests{0};
  std::array<counter, 5> responses{};  // 1xx .. 5xx
  counter retries{0}, retries_over_budget{0};
  counter cache_hits{0}, cache_misses{0};
  counter tunnels_active{0}, tunnels_total{0};
  counter client_timeouts{0};     // header, idle-between-requests excluded
  counter upstream_truncated{0};  // streamed answers the backend broke off

  static void add(counter& c, std::int64_t d = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(d),
            std::memory_order_relaxed);  // one writer: no read-modify-write needed
  }
};

// The stats page: `key value` lines summed over the threads, then one `backend key=value ...`
// line per backend of each pool of `rt`.
std::string stats_text(const runtime& rt, const std::vector<std::unique_ptr<thread_state>>& threads,
                       std::chrono::steady_clock::time_point started);

}  // namespace l7
