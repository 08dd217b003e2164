// SPDX-License-Identifier: MIT
// The clock of the data plane: a coarse monotonic clock for what decays over seconds (latency
// estimates, slow-start ramps), cheap enough to read on every pick, and the same clock at
// full resolution for the rare events it is compared with.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

namespace lbkit::detail {

// Monotonic nanoseconds since an unspecified epoch. On Linux, CLOCK_MONOTONIC_COARSE: a few
// nanoseconds per read (no hardware counter read) at a resolution of 1-4 ms, which is fine for
// windows of hundreds of milliseconds and more; elsewhere std::chrono::steady_clock.
inline std::int64_t coarse_now_ns() noexcept {
#ifdef CLOCK_MONOTONIC_COARSE
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
#else
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
#endif
}

// The same clock at full resolution (CLOCK_MONOTONIC, which CLOCK_MONOTONIC_COARSE follows a
// tick behind), for rare events that must be ordered finely: when a backend became healthy.
inline std::int64_t precise_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace lbkit::detail
