// SPDX-License-Identifier: MIT
// A std::mutex and a scoped lock that clang's -Wthread-safety analysis understands.
// libstdc++'s own types carry no capability attributes, so annotated members (GUARDED_BY)
// need these thin wrappers to be checked.
#pragma once

#include <mutex>

#include "lbkit/detail/config.hpp"

namespace lbkit::detail {

// A std::mutex with capability annotations. Thread safety: thread-safe.
class LBKIT_CAPABILITY("mutex") mutex {
 public:
  void lock() LBKIT_ACQUIRE() { m_.lock(); }
  void unlock() LBKIT_RELEASE() { m_.unlock(); }

 private:
  std::mutex m_;
};

// Holds a detail::mutex for the lifetime of the object. Thread safety: not thread-safe.
class LBKIT_SCOPED_CAPABILITY lock_guard {
 public:
  explicit lock_guard(mutex& m) LBKIT_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~lock_guard() LBKIT_RELEASE() { m_.unlock(); }
  lock_guard(const lock_guard&) = delete;
  lock_guard& operator=(const lock_guard&) = delete;

 private:
  mutex& m_;
};

}  // namespace lbkit::detail
