// SPDX-License-Identifier: MIT
// Shared by the examples: log lines from hot error paths, bounded in rate. A flood of bad
// input (a PROXY header scanner, a descriptor shortage under load) must not turn into a flood
// of log lines that fills the disk and costs more than the traffic itself: each call site
// writes at most `per_second` lines a second and then says how many it left out.
#pragma once

#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <mutex>

namespace examples {

// One call site's budget of log lines (a function-local static, or a member).
// Thread safety: thread-safe.
class rate_limited_log {
 public:
  explicit rate_limited_log(unsigned per_second = 10) noexcept : per_second_(per_second) {}

  // Writes one line (printf format, to stderr, '\n' appended) if this second's budget has
  // room; else counts it, and the first line of the next second that has room says how many
  // were left out. Returns whether the line was written.
  bool operator()(const char* format, ...) __attribute__((format(printf, 2, 3))) {
    const auto now = std::chrono::steady_clock::now();
    std::uint64_t dropped = 0;
    {
      std::lock_guard lock(mu_);
      if (now - window_ >= std::chrono::seconds(1)) {
        window_ = now;
        written_ = 0;
      }
      if (written_ >= per_second_) {
        ++dropped_;
        return false;
      }
      ++written_;
      dropped = dropped_;
      dropped_ = 0;
    }
    if (dropped > 0) {
      std::fprintf(stderr, "(%llu similar lines left out)\n",
                   static_cast<unsigned long long>(dropped));
    }
    va_list args;
    va_start(args, format);
    std::vfprintf(stderr, format, args);
    va_end(args);
    std::fputc('\n', stderr);
    return true;
  }

  // Lines left out since the last one written.
  std::uint64_t dropped() const {
    std::lock_guard lock(mu_);
    return dropped_;
  }

 private:
  mutable std::mutex mu_;
  const unsigned per_second_;
  std::chrono::steady_clock::time_point window_{};
  unsigned written_ = 0;
  std::uint64_t dropped_ = 0;
};

}  // namespace examples
