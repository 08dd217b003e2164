// SPDX-License-Identifier: MIT
// publication<T> and follower<T>: how lbkit hands an immutable, versioned value from one
// writer to many readers. The registry publishes snapshots this way and the balancer its
// per-version pick plans.
//
// A reader's steady state is one atomic load (the version) per use. Only when the version
// moved does it copy the shared_ptr, under a lock that writers hold just long enough to swap
// the pointer, never while they build the next value. std::atomic<std::shared_ptr> would
// do the same with a lock bit, but libstdc++ 12's load() releases that bit with relaxed
// ordering: a data race that ThreadSanitizer reports (the registry stress test caught it).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <tuple>
#include <utility>

#include "lbkit/detail/config.hpp"
#include "lbkit/detail/mutex.hpp"

namespace lbkit::detail {

// One published value and its version. Thread safety: thread-safe; publish() calls must be
// serialised by the caller (versions must grow).
template <class T>
class publication {
 public:
  // The newest value and its version, read together.
  std::pair<std::shared_ptr<const T>, std::uint64_t> load() const LBKIT_EXCLUDES(mu_) {
    lock_guard lock(mu_);
    return {value_, loaded_version_};
  }

  // The newest version. Complexity: one atomic load. A value loaded after reading version v
  // has a version of at least v.
  std::uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }

  // Publishes `next` as version `v` and returns the previous value, so that the caller
  // releases it outside the lock.
  std::shared_ptr<const T> publish(std::shared_ptr<const T> next, std::uint64_t v)
      LBKIT_EXCLUDES(mu_) {
    {
      lock_guard lock(mu_);
      value_.swap(next);
      loaded_version_ = v;
    }
    // Value first, version second: whoever sees v then loads a value of at least v.
    version_.store(v, std::memory_order_release);
    return next;
  }

 private:
  mutable mutex mu_;
  std::shared_ptr<const T> value_ LBKIT_GUARDED_BY(mu_);
  std::uint64_t loaded_version_ LBKIT_GUARDED_BY(mu_) = 0;
  std::atomic<std::uint64_t> version_{0};
};

// A reader's cached copy of a publication. Thread safety: not thread-safe; one per thread.
// The publication must outlive it.
template <class T>
class follower {
 public:
  explicit follower(const publication<T>& pub) : pub_(&pub) {
    std::tie(value_, seen_) = pub.load();
  }

  // Reloads if the version moved; returns true when it did. Complexity: one atomic load while
  // nothing changed; otherwise a locked shared_ptr copy and the release of the old value.
  bool refresh() noexcept {
    if (pub_->version() == seen_) [[likely]]
      return false;
    std::tie(value_, seen_) = pub_->load();
    return true;
  }

  const T& get() const noexcept { return *value_; }
  const std::shared_ptr<const T>& shared() const noexcept { return value_; }

 private:
  const publication<T>* pub_;
  std::shared_ptr<const T> value_;
  std::uint64_t seen_ = 0;
};

}  // namespace lbkit::detail
