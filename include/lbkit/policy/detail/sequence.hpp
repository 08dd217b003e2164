// SPDX-License-Identifier: MIT
// A shared cyclic sequence of member indices that many threads walk in order: the engine of
// round_robin and weighted_round_robin.
//
// One global cursor gives a strictly fair order, but one atomic that every pick of every
// thread increments is a hot cache line (two threads pay ~10 to 100 ns per fetch_add here). So each
// thread claims `batch` consecutive positions with one fetch_add and walks them locally: the
// global order is still the sequence's, each position is used once, and the shared line is
// touched once per `batch` picks. The cursor starts at a random offset so that a fleet of
// balancers built alike does not send its first picks to the same backend (gRPC's round
// robin does the same; Envoy issue 31378 is what happens without it).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "lbkit/backend_state.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit::detail {

class sequence {
 public:
  // Positions a thread claims at once. A thread that stops picking strands at most
  // batch - 1 positions, consecutive in the cyclic order, so each member loses
  // floor or ceil((batch - 1) / n) picks: never more than one pick apart from another's.
  // 256 makes the claim's contended fetch_add (~100 ns between two cores here) cost under
  // half a nanosecond per pick; at 16 it cost ~5 ns, more than the rest of a pick.
  static constexpr std::uint32_t batch = 256;

  // Per-thread walk state.
  struct local {
    std::uint32_t pos = 0;   // next position in the sequence
    std::uint32_t left = 0;  // positions of the claimed batch not yet used
  };

  sequence() = default;
  sequence(std::vector<std::uint32_t> order, std::uint64_t start)
      : order_(std::move(order)), cursor_(std::make_unique<aligned_cursor>()) {
    cursor_->next.store(start, std::memory_order_relaxed);
  }

  // The next member index of the sequence. Precondition: not empty.
  // Complexity: O(1); one relaxed fetch_add per `batch` picks.
  std::uint32_t next(local& l) const noexcept {
    const auto n = static_cast<std::uint32_t>(order_.size());
    if (l.left == 0) [[unlikely]] {
      l.pos =
          static_cast<std::uint32_t>(cursor_->next.fetch_add(batch, std::memory_order_relaxed) % n);
      l.left = batch;
    }
    const std::uint32_t i = order_[l.pos];
    if (++l.pos == n) l.pos = 0;
    --l.left;
    return i;
  }

  const std::vector<std::uint32_t>& order() const noexcept { return order_; }

 private:
  struct alignas(cache_line) aligned_cursor {
    std::atomic<std::uint64_t> next{0};
  };
  std::vector<std::uint32_t> order_;
  std::unique_ptr<aligned_cursor> cursor_;
};

}  // namespace lbkit::detail
