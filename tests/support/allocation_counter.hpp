// SPDX-License-Identifier: MIT
// Counts heap allocations, so that a test can check that a lookup makes none. Include it in
// exactly one file of a test executable: it replaces the global operator new and delete.
// TSan's runtime defines operator new itself (a replacement clashes with it at link time), so
// there the count stays off and lbkit::test::counting_allocations is false.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LBKIT_TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define LBKIT_TEST_TSAN 1
#endif

namespace lbkit::test {
inline std::atomic<std::size_t> allocations{0};
#ifndef LBKIT_TEST_TSAN
inline constexpr bool counting_allocations = true;
#else
inline constexpr bool counting_allocations = false;
#endif
}  // namespace lbkit::test

#ifndef LBKIT_TEST_TSAN
// None of these is inlined: g++ 12 at -O2 would otherwise see malloc() in operator new, or
// free() in operator delete, across an inlined container and warn (-Wmismatched-new-delete)
// that they do not match.
[[gnu::noinline]] void* operator new(std::size_t n) {
  lbkit::test::allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif
