// SPDX-License-Identifier: MIT
// member and snapshot: what a registry publishes. A snapshot is one immutable version of the
// backend set; a member is one backend in it (configuration, admin state, live state). The
// policies read snapshots and never need the registry that writes them, so these two live
// here, apart from backend_registry.hpp (docs/architecture.md, "Snapshots").
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/backend.hpp"
#include "lbkit/backend_state.hpp"

namespace lbkit {

class backend_registry;

// One backend as a snapshot holds it: its configuration, its admin state, its live state.
// Thread safety: thread-safe for reading (immutable; the backend_state it points to is
// itself thread-safe).
class member {
 public:
  member(std::shared_ptr<const backend> config, state_ref state, bool draining) noexcept
      : config_(std::move(config)), state_(std::move(state)), draining_(draining) {}

  const backend& config() const noexcept { return *config_; }
  const std::string& id() const noexcept { return config_->id; }
  const endpoint& address() const noexcept { return config_->address; }
  std::uint32_t weight() const noexcept { return config_->weight; }
  // Draining: no new picks; requests already under way continue.
  bool draining() const noexcept { return draining_; }
  backend_state& state() const noexcept { return *state_; }
  // Shares ownership of the live state, e.g. to keep it beyond the snapshot.
  const state_ref& state_handle() const noexcept { return state_; }

 private:
  friend class backend_registry;
  std::shared_ptr<const backend> config_;
  state_ref state_;
  bool draining_;
};

// An immutable, versioned view of the backend set, members sorted by id (so two registries
// with the same membership present it identically, whatever order it was built in).
// Thread safety: thread-safe (immutable after publication).
class snapshot : public std::enable_shared_from_this<snapshot> {
 public:
  // 0 for the empty set a registry starts with; +1 for every published change.
  std::uint64_t version() const noexcept { return version_; }
  std::span<const member> members() const noexcept { return members_; }
  std::size_t size() const noexcept { return members_.size(); }
  bool empty() const noexcept { return members_.empty(); }

  // The member with this id, or nullptr. Complexity: O(log n).
  const member* find(std::string_view id) const noexcept {
    auto it = lower_bound(members_, id);
    return it != members_.end() && it->id() == id ? &*it : nullptr;
  }

 private:
  friend class backend_registry;

  snapshot(std::uint64_t version, std::vector<member> members) noexcept
      : version_(version), members_(std::move(members)) {}

  template <class Vec>
  static decltype(std::declval<Vec&>().begin()) lower_bound(Vec& v, std::string_view id) noexcept {
    return std::lower_bound(v.begin(), v.end(), id, [](const member& m, std::string_view k) {
      return m.id().compare(k) < 0;
    });
  }

  std::uint64_t version_;
  std::vector<member> members_;
};

}  // namespace lbkit
