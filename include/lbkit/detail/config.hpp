// SPDX-License-Identifier: MIT
// Internal configuration: the overridable assertion macro and clang thread-safety annotations.
// Users never include this header directly; every lbkit header includes it.
#pragma once

#include <cstdio>
#include <cstdlib>

// LBKIT_ASSERT(cond, msg) checks a programming error (a broken invariant or a misuse of the
// API that the type system cannot prevent), never bad input from outside: that is reported as
// a result. Define LBKIT_ASSERT before including any lbkit header to route failures into your
// own handler; the default prints the location and aborts, in every build mode, because the
// checks are cheap and sit on control-plane paths only.
#ifndef LBKIT_ASSERT
#define LBKIT_ASSERT(cond, msg) \
  ((cond) ? static_cast<void>(0) : ::lbkit::detail::assert_fail(__FILE__, __LINE__, #cond, msg))
#endif

namespace lbkit::detail {

[[noreturn]] inline void assert_fail(const char* file, int line, const char* cond,
                                     const char* msg) noexcept {
  std::fprintf(stderr, "lbkit: %s:%d: assertion '%s' failed: %s\n", file, line, cond, msg);
  std::abort();
}

}  // namespace lbkit::detail

// Clang's -Wthread-safety annotations (Abseil's thread_annotations.h names, LBKIT_ prefix).
// Other compilers see nothing.
#if defined(__clang__)
#define LBKIT_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define LBKIT_THREAD_ANNOTATION(x)
#endif

#define LBKIT_CAPABILITY(x) LBKIT_THREAD_ANNOTATION(capability(x))
#define LBKIT_SCOPED_CAPABILITY LBKIT_THREAD_ANNOTATION(scoped_lockable)
#define LBKIT_GUARDED_BY(x) LBKIT_THREAD_ANNOTATION(guarded_by(x))
#define LBKIT_PT_GUARDED_BY(x) LBKIT_THREAD_ANNOTATION(pt_guarded_by(x))
#define LBKIT_REQUIRES(...) LBKIT_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define LBKIT_EXCLUDES(...) LBKIT_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define LBKIT_ACQUIRE(...) LBKIT_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define LBKIT_RELEASE(...) LBKIT_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
