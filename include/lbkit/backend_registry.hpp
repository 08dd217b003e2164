// SPDX-License-Identifier: MIT
// backend_registry: the thread-safe membership store. Writers (a config loader, service
// discovery, a health checker) change the backend set; readers (every thread that picks)
// see immutable, versioned snapshots of it.
//
// How it stays fast and safe (docs/architecture.md, property 1 "Snapshots"): a change is applied to
// a private copy under a writer mutex, checked in full, and only then published as a new snapshot
// with one pointer swap, so a reader never sees half of a change and never waits for a writer's
// work. A reader keeps its snapshot in a snapshot_cache and refreshes it only when the registry's
// version counter has moved: the pick path pays one atomic load, not a shared_ptr copy.
// Members keep their backend_state across versions, so live counters survive re-weighting,
// draining and health changes, and outlive removal while anything still holds them.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "lbkit/backend.hpp"
#include "lbkit/backend_state.hpp"
#include "lbkit/detail/config.hpp"
#include "lbkit/detail/mutex.hpp"
#include "lbkit/detail/publication.hpp"
#include "lbkit/result.hpp"
#include "lbkit/snapshot.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// A batch of changes, applied by backend_registry::apply all together or not at all, and
// published as one version. Operations apply in the order given, so a batch may add a
// backend and then re-weight it. Thread safety: thread-compatible (a value type).
class change_set {
 public:
  // Adds a backend that must not be present, with its initial health.
  change_set& add(backend b, health initial = health::healthy) {
    ops_.emplace_back(add_op{std::move(b), initial});
    return *this;
  }
  // Removes a present backend. Leases on it stay valid and are counted on its state.
  change_set& remove(std::string id) {
    ops_.emplace_back(remove_op{std::move(id)});
    return *this;
  }
  change_set& set_weight(std::string id, std::uint32_t weight) {
    ops_.emplace_back(weight_op{std::move(id), weight});
    return *this;
  }
  // Replaces weight, zone and labels of a present backend with those of `b` (same id). The
  // address cannot change in place: remove and add instead, so that counters and leases of
  // the old address are not attributed to the new one.
  change_set& update(backend b) {
    ops_.emplace_back(update_op{std::move(b)});
    return *this;
  }
  // Stops (draining = true) or resumes new picks of a present backend.
  change_set& drain(std::string id, bool draining = true) {
    ops_.emplace_back(drain_op{std::move(id), draining});
    return *this;
  }
  // Sets the verdict of active health checks.
  change_set& set_health(std::string id, health h) {
    ops_.emplace_back(health_op{std::move(id), h});
    return *this;
  }
  // Ejects (or restores) a backend as passive outlier detection does. A backend gets new
  // picks only when it is healthy and not ejected; the two are set independently.
  change_set& eject(std::string id, bool ejected = true) {
    return eject(std::move(id), ejected ? ejection::timed : ejection::none);
  }
  change_set& eject(std::string id, ejection how) {
    ops_.emplace_back(ejection_op{std::move(id), how, {}});
    return *this;
  }
  // An active check of the backend that began at `started` passed: ends its ejection if that
  // is one a passing check ends (ejection::until_check) and it began before the check did.
  // Anything else is left as it is (docs/health.md).
  change_set& check_passed(std::string id, std::chrono::steady_clock::time_point started) {
    ops_.emplace_back(ejection_op{std::move(id), ejection::none, started});
    return *this;
  }

  bool empty() const noexcept { return ops_.empty(); }
  std::size_t size() const noexcept { return ops_.size(); }

 private:
  friend class backend_registry;
  struct add_op {
    backend b;
    health initial;
  };
  struct remove_op {
    std::string id;
  };
  struct weight_op {
    std::string id;
    std::uint32_t weight;
  };
  struct update_op {
    backend b;
  };
  struct drain_op {
    std::string id;
    bool draining;
  };
  struct health_op {
    std::string id;
    health h;
  };
  struct ejection_op {
    std::string id;
    ejection how;
    // Set: only end an until_check ejection that began before this (check_passed).
    std::optional<std::chrono::steady_clock::time_point> check_started;
  };
  using op =
      std::variant<add_op, remove_op, weight_op, update_op, drain_op, health_op, ejection_op>;
  std::vector<op> ops_;
};

class backend_registry;

namespace detail {

// The registry's shared core: subscriptions point at it weakly so that they may outlive the
// registry.
struct registry_core {
  struct subscriber {
    std::uint64_t id;
    std::function<void(const snapshot&)> fn;
  };

  mutex mu;  // serialises writers and notifications
  std::shared_ptr<const snapshot> current LBKIT_GUARDED_BY(mu);
  std::vector<subscriber> subscribers LBKIT_GUARDED_BY(mu);
  std::uint64_t next_subscriber LBKIT_GUARDED_BY(mu) = 1;
  std::uint32_t next_shard LBKIT_GUARDED_BY(mu) = 0;

  // Requests in flight begun with in_total on any backend this registry created.
  const std::shared_ptr<in_flight_total> in_flight = std::make_shared<in_flight_total>();

  // What readers see, without ever taking `mu`.
  publication<snapshot> published;
};

// Which registry core, if any, this thread is notifying subscribers of.
inline const registry_core*& notifying_core() noexcept {
  thread_local const registry_core* core = nullptr;
  return core;
}

}  // namespace detail

// RAII handle of a change callback: destroying or reset()ting it unsubscribes. After reset()
// returns, the callback is not running and will not run again.
// Thread safety: thread-compatible. Must not be reset from inside its own callback.
class subscription {
 public:
  subscription() noexcept = default;
  subscription(subscription&& o) noexcept
      : core_(std::move(o.core_)), id_(std::exchange(o.id_, 0)) {}
  subscription& operator=(subscription&& o) noexcept {
    if (this != &o) {
      reset();
      core_ = std::move(o.core_);
      id_ = std::exchange(o.id_, 0);
    }
    return *this;
  }
  ~subscription() { reset(); }

  void reset() noexcept {
    if (auto core = core_.lock()) {
      LBKIT_ASSERT(detail::notifying_core() != core.get(),
                   "a registry subscription was changed from inside a change callback");
      detail::lock_guard lock(core->mu);
      std::erase_if(core->subscribers, [&](const auto& s) { return s.id == id_; });
    }
    core_.reset();
    id_ = 0;
  }
  bool active() const noexcept { return !core_.expired() && id_ != 0; }

 private:
  friend class backend_registry;
  subscription(std::weak_ptr<detail::registry_core> core, std::uint64_t id) noexcept
      : core_(std::move(core)), id_(id) {}

  std::weak_ptr<detail::registry_core> core_;
  std::uint64_t id_ = 0;
};

// The thread-safe backend set.
// Thread safety: thread-safe. current(), version() and snapshot_cache never block and may be
// called from any thread, including pick paths. Writers (apply and the single-change
// helpers) serialise on one mutex; they may be called from any thread except from inside a
// change callback of the same registry, where they fail with errc::failed_precondition.
class backend_registry {
 public:
  backend_registry() : core_(std::make_shared<detail::registry_core>()) {
    auto empty = std::shared_ptr<const snapshot>(new snapshot(0, {}));
    detail::lock_guard lock(core_->mu);
    core_->current = empty;
    core_->published.publish(std::move(empty), 0);
  }
  backend_registry(const backend_registry&) = delete;
  backend_registry& operator=(const backend_registry&) = delete;

  // ---- readers -------------------------------------------------------------------------

  // The newest published snapshot: a reference-count increment under a lock that is held
  // only for such copies, never while a writer works. Fine for control-plane code and for a
  // cache refresh; on a pick path use a snapshot_cache.
  std::shared_ptr<const snapshot> current() const noexcept { return core_->published.load().first; }

  // The newest published version. Complexity: one atomic load. A snapshot loaded after
  // reading version v has a version of at least v.
  std::uint64_t version() const noexcept { return core_->published.version(); }

  // ---- writers -------------------------------------------------------------------------

  // Validates every change against the set as the earlier changes of the batch leave it;
  // if all are valid, publishes the result as one new version and notifies subscribers.
  // On any error nothing is published and the message names the failing change. A batch
  // that leaves everything as it was publishes nothing.
  // Complexity: O(n + k log n) for n backends and k changes, plus the callbacks.
  result<void> apply(const change_set& changes) LBKIT_EXCLUDES(core_->mu);

  result<void> add(backend b, health initial = health::healthy) {
    return apply(change_set().add(std::move(b), initial));
  }
  result<void> remove(std::string id) { return apply(change_set().remove(std::move(id))); }
  result<void> set_weight(std::string id, std::uint32_t weight) {
    return apply(change_set().set_weight(std::move(id), weight));
  }
  result<void> update(backend b) { return apply(change_set().update(std::move(b))); }
  result<void> drain(std::string id, bool draining = true) {
    return apply(change_set().drain(std::move(id), draining));
  }
  result<void> set_health(std::string id, health h) {
    return apply(change_set().set_health(std::move(id), h));
  }
  result<void> eject(std::string id, bool ejected = true) {
    return apply(change_set().eject(std::move(id), ejected));
  }

  // Calls `fn` with the current snapshot now, and with every newly published snapshot after
  // that, in version order, on the writer's thread, while writers are held off: a policy can
  // rebuild its per-version state there exactly once per version. `fn` must not throw, must
  // not write to this registry (that fails) and must not subscribe or unsubscribe here.
  [[nodiscard]] subscription subscribe(std::function<void(const snapshot&)> fn)
      LBKIT_EXCLUDES(core_->mu) {
    LBKIT_ASSERT(detail::notifying_core() != core_.get(),
                 "subscribe() called from inside a change callback of the same registry");
    detail::lock_guard lock(core_->mu);
    const std::uint64_t id = core_->next_subscriber++;
    notify_one(fn, *core_->current);
    core_->subscribers.push_back({id, std::move(fn)});
    return subscription(core_, id);
  }

 private:
  // A write of an active verdict or an ejection, made once the whole batch is valid.
  struct health_write {
    backend_state* state;
    bool ejection;  // how, else h
    health h;
    lbkit::ejection how;
  };
  struct apply_state {
    std::vector<member>& members;
    std::vector<health_write>& health_writes;
    bool changed = false;
  };

  void notify_one(const std::function<void(const snapshot&)>& fn, const snapshot& s)
      LBKIT_REQUIRES(core_->mu) {
    struct flag {
      explicit flag(const detail::registry_core* c) noexcept { detail::notifying_core() = c; }
      ~flag() { detail::notifying_core() = nullptr; }
    } f(core_.get());
    fn(s);
  }

  static result<member*> find_member(std::vector<member>& ms, const std::string& id) {
    auto it = snapshot::lower_bound(ms, id);
    if (it == ms.end() || it->id() != id) {
      return make_error(errc::not_found, "no backend " + quote(id));
    }
    return &*it;
  }

  result<void> apply_one(apply_state& st, const change_set::op& op) LBKIT_REQUIRES(core_->mu);

  friend class snapshot_cache;
  std::shared_ptr<detail::registry_core> core_;
};

// A reader's view of a registry that refreshes itself when the registry's version moves.
// Thread safety: not thread-safe; keep one per thread or per worker (as Envoy's workers
// keep their own host sets). The registry must outlive it.
class snapshot_cache {
 public:
  explicit snapshot_cache(const backend_registry& registry)
      : follower_(registry.core_->published) {}

  // The newest snapshot. Complexity: one atomic load while the version is unchanged; after a
  // change, a locked shared_ptr copy, and the release of the old snapshot (which frees it if
  // this was its last holder).
  const snapshot& get() noexcept {
    follower_.refresh();
    return follower_.get();
  }

  // The snapshot last returned by get(), without checking for a newer one.
  const std::shared_ptr<const snapshot>& cached() const noexcept { return follower_.shared(); }

 private:
  detail::follower<snapshot> follower_;
};

// ---------------------------------------------------------------------------------------
// Implementation

inline result<void> backend_registry::apply_one(apply_state& st, const change_set::op& op) {
  auto& ms = st.members;
  if (auto* a = std::get_if<change_set::add_op>(&op)) {
    if (auto r = validate(a->b); !r) return r;
    auto it = snapshot::lower_bound(ms, a->b.id);
    if (it != ms.end() && it->id() == a->b.id) {
      return make_error(errc::already_exists, "backend " + quote(a->b.id) + " already exists");
    }
    ms.emplace(it, std::make_shared<const backend>(a->b),
               backend_state::create(a->b.id, a->b.address, a->initial, core_->in_flight,
                                     core_->next_shard++),
               false);
    st.changed = true;
    return {};
  }
  if (auto* r = std::get_if<change_set::remove_op>(&op)) {
    auto m = find_member(ms, r->id);
    if (!m) return unexpected<error>(m.error());
    ms.erase(ms.begin() + (*m - ms.data()));
    st.changed = true;
    return {};
  }
  if (auto* w = std::get_if<change_set::weight_op>(&op)) {
    auto m = find_member(ms, w->id);
    if (!m) return unexpected<error>(m.error());
    backend b = (*m)->config();
    b.weight = w->weight;
    if (auto v = validate(b); !v) return v;
    if (w->weight != (*m)->weight()) {
      **m = member(std::make_shared<const backend>(std::move(b)), (*m)->state_handle(),
                   (*m)->draining());
      st.changed = true;
    }
    return {};
  }
  if (auto* u = std::get_if<change_set::update_op>(&op)) {
    auto m = find_member(ms, u->b.id);
    if (!m) return unexpected<error>(m.error());
    if (auto v = validate(u->b); !v) return v;
    if (u->b.address != (*m)->address()) {
      return make_error(errc::failed_precondition,
                        "backend " + quote(u->b.id) + ": update cannot change the address (" +
                            (*m)->address().to_string() + " to " + u->b.address.to_string() +
                            "); remove and add it instead");
    }
    if (u->b != (*m)->config()) {
      **m = member(std::make_shared<const backend>(u->b), (*m)->state_handle(), (*m)->draining());
      st.changed = true;
    }
    return {};
  }
  if (auto* d = std::get_if<change_set::drain_op>(&op)) {
    auto m = find_member(ms, d->id);
    if (!m) return unexpected<error>(m.error());
    if (d->draining != (*m)->draining()) {
      **m = member((*m)->config_, (*m)->state_handle(), d->draining);
      st.changed = true;
    }
    return {};
  }
  // Health lives in the shared state, so it is written only once the whole batch is valid.
  if (auto* h = std::get_if<change_set::health_op>(&op)) {
    auto m = find_member(ms, h->id);
    if (!m) return unexpected<error>(m.error());
    backend_state& state = (*m)->state();
    st.health_writes.push_back({&state, false, h->h, {}});
    if (state.active_health() != h->h) st.changed = true;
    return {};
  }
  const auto& e = std::get<change_set::ejection_op>(op);
  auto m = find_member(ms, e.id);
  if (!m) return unexpected<error>(m.error());
  backend_state& state = (*m)->state();
  if (e.check_started) {
    // Writers hold the lock, so the ejection read here is the one the write replaces.
    const auto began =
        std::chrono::steady_clock::time_point(std::chrono::nanoseconds(state.ejected_since()));
    if (state.ejection_state() != ejection::until_check || began >= *e.check_started) return {};
  }
  st.health_writes.push_back({&state, true, {}, e.how});
  if (state.ejection_state() != e.how) st.changed = true;
  return {};
}

inline result<void> backend_registry::apply(const change_set& changes) {
  if (detail::notifying_core() == core_.get()) {
    return make_error(errc::failed_precondition,
                      "a registry cannot be changed from inside its own change callback");
  }
  if (changes.empty()) return {};
  detail::lock_guard lock(core_->mu);
  std::vector<member> members(core_->current->members_);
  std::vector<health_write> health_writes;
  apply_state st{members, health_writes};
  for (std::size_t i = 0; i < changes.ops_.size(); ++i) {
    if (auto r = apply_one(st, changes.ops_[i]); !r) {
      if (changes.size() == 1) return r;
      return make_error(r.error().code, "change " + std::to_string(i + 1) + " of " +
                                            std::to_string(changes.size()) + ": " +
                                            r.error().message);
    }
  }
  if (!st.changed) return {};
  for (const auto& w : health_writes) {
    if (w.ejection) {
      w.state->write_ejection(w.how);
    } else {
      w.state->write_health(w.h);
    }
  }

  const std::uint64_t v = core_->current->version() + 1;
  auto next = std::shared_ptr<const snapshot>(new snapshot(v, std::move(members)));
  core_->current = next;
  core_->published.publish(next, v);  // releases the previous snapshot outside its lock
  for (const auto& s : core_->subscribers) notify_one(s.fn, *next);
  backend_state::reclaim_retired();  // states of removed backends whose leases have ended
  return {};
}

}  // namespace lbkit
