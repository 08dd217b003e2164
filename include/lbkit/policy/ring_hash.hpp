// SPDX-License-Identifier: MIT
// ring_hash: consistent hashing on a ring of virtual nodes (Karger et al.; ketama).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "lbkit/policy/detail/hash_common.hpp"
#include "lbkit/selection_policy.hpp"

namespace lbkit {

// Consistent hashing (D. Karger et al., "Consistent Hashing and Random Trees", STOC 1997) as
// libketama does it: every member puts `nodes_per_weight` virtual nodes per unit of weight
// (default 1024: a member's share then deviates from its weight share by about 1/sqrt(1024)
// = 3%) on a 64-bit ring, at hashes of its id and the node number; a key belongs to the first node
// clockwise from its hash. A member's nodes depend on nothing but its id and weight, so when a
// member leaves exactly its keys move, each to the next node clockwise, and no other key moves.
// Rings built from the same membership are identical everywhere.
//
// The ring holds at most `max_nodes`; a membership whose weights ask for more is scaled down
// to fit (every member keeps at least one node). Then nodes depend on the total weight, and
// a change of membership also moves a few keys between surviving members: size the budget
// for the largest pool you run.
//
// A key whose member is ineligible (unhealthy, draining) walks on clockwise to the first node
// of an eligible member, which is where it would go if that member had left the ring. A pick
// without a key is random.
// Thread safety: the state is thread-safe (immutable).
// Complexity: build O(R log R) for R nodes; pick O(1) expected: a 2^16-bucket index narrows
// the search to the nodes of one bucket.
// Memory: 12 bytes per node (1.2 MiB for 100 members of weight 1; 12 MiB at the default
// budget of 2^20 nodes) plus a 256 KiB index.
class ring_hash {
 public:
  static constexpr bool keyed = true;
  struct local {};

  ring_hash() noexcept : ring_hash(1024) {}
  explicit ring_hash(std::uint32_t nodes_per_weight, std::uint32_t max_nodes = 1u << 20) noexcept
      : nodes_per_weight_(std::max<std::uint32_t>(nodes_per_weight, 1)),
        max_nodes_(std::max<std::uint32_t>(max_nodes, 1)) {}

  class state {
   public:
    std::uint32_t pick(const pick_context& ctx, pick_rng& rng, local&) const noexcept {
      if (!ctx.has_hash) [[unlikely]]
        return elig_.random(rng);
      std::size_t i = first_at_or_after(ctx.hash);
      if (elig_.all_eligible() || elig_.eligible(members_[i])) [[likely]]
        return members_[i];
      for (std::size_t step = 1; step < members_.size(); ++step) {
        if (++i == members_.size()) i = 0;
        if (elig_.eligible(members_[i])) return members_[i];
      }
      return elig_.last_resort(ctx.hash);
    }

    std::size_t nodes() const noexcept { return hashes_.size(); }
    // The member that owns hash `h`, whatever its eligibility. Not for an empty ring.
    std::uint32_t lookup(std::uint64_t h) const noexcept { return members_[first_at_or_after(h)]; }

   private:
    friend class ring_hash;
    // The first node at or after h: the bucket of h's top 16 bits gives the range of nodes
    // to search, so a lookup is a table load and a short binary search, not a search of the
    // whole ring.
    std::size_t first_at_or_after(std::uint64_t h) const noexcept {
      const std::size_t b = h >> (64 - index_bits);
      const auto lo = hashes_.begin() + index_[b];
      const auto hi = hashes_.begin() + index_[b + 1];
      const auto it = std::lower_bound(lo, hi, h);
      return it == hashes_.end() ? 0 : static_cast<std::size_t>(it - hashes_.begin());
    }
    static constexpr int index_bits = 16;
    std::vector<std::uint32_t> index_;    // first node of each bucket; one extra at the end
    std::vector<std::uint64_t> hashes_;   // sorted node hashes
    std::vector<std::uint32_t> members_;  // the member of each node
    detail::hash_eligibility elig_;
  };

  state build(const candidate_set& c) const {
    state s;
    s.elig_ = detail::hash_eligibility(c);
    const std::uint64_t total = c.configured_weight();
    if (total == 0) return s;
    // Nodes per unit of weight, scaled down only when the ring would exceed its budget.
    const double per_weight = std::min<double>(
        nodes_per_weight_, static_cast<double>(max_nodes_) / static_cast<double>(total));
    std::vector<std::pair<std::uint64_t, std::uint32_t>> nodes;
    for (std::uint32_t i = 0; i < c.size(); ++i) {
      const auto& m = c.members()[i];
      if (m.weight() == 0) continue;
      const auto count = std::max<std::uint64_t>(
          1, static_cast<std::uint64_t>(static_cast<double>(m.weight()) * per_weight));
      const std::uint64_t base = hash_bytes(m.id());
      for (std::uint64_t k = 0; k < count; ++k) nodes.emplace_back(hash_u64(k, base), i);
    }
    // Equal hashes (probability ~R^2 / 2^65) are ordered by member index, which is the same
    // in every build from the same membership.
    std::sort(nodes.begin(), nodes.end());
    s.hashes_.reserve(nodes.size());
    s.members_.reserve(nodes.size());
    for (const auto& [h, m] : nodes) {
      s.hashes_.push_back(h);
      s.members_.push_back(m);
    }
    s.index_.resize((std::size_t{1} << state::index_bits) + 1);
    std::size_t node = 0;
    for (std::size_t b = 0; b < (std::size_t{1} << state::index_bits); ++b) {
      while (node < s.hashes_.size() && (s.hashes_[node] >> (64 - state::index_bits)) < b) ++node;
      s.index_[b] = static_cast<std::uint32_t>(node);
    }
    s.index_.back() = static_cast<std::uint32_t>(s.hashes_.size());
    return s;
  }

 private:
  std::uint32_t nodes_per_weight_;
  std::uint32_t max_nodes_;
};

}  // namespace lbkit
