// SPDX-License-Identifier: MIT
// pick_rng: the small, fast random generator that every picker and every health tracker owns
// one of, so that no two threads ever draw from a shared line.
#pragma once

#include <cstdint>

namespace lbkit {

// A fast per-thread random generator: SplitMix64 (Steele, Lea and Flood, "Fast splittable
// pseudorandom number generators", OOPSLA 2014). Not for cryptography.
// Thread safety: not thread-safe; every picker owns one.
class pick_rng {
 public:
  explicit constexpr pick_rng(std::uint64_t seed = 0) noexcept : s_(seed) {}

  constexpr std::uint64_t next() noexcept {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // A number in [0, n), by Lemire's multiply-shift ("Fast random integer generation in an
  // interval", ACM TOMACS 2019) on 32 random bits, without the rejection step: each value's
  // probability is off by less than 1 / 2^32 (relative error n / 2^32: 2.3e-6 at n = 10 000).
  constexpr std::uint32_t below(std::uint32_t n) noexcept {
    return static_cast<std::uint32_t>(((next() >> 32) * n) >> 32);
  }

 private:
  std::uint64_t s_;
};

}  // namespace lbkit
