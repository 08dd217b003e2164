// SPDX-License-Identifier: MIT
// hash_bytes and hash_u64: XXH64 test vectors, constant evaluation, seeds and avalanche.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/hash.hpp>

using lbkit::hash_bytes;
using lbkit::hash_u64;
using namespace std::string_view_literals;

// hash_bytes takes only a std::string_view: with a (pointer, length, seed) overload next to
// it, hash_bytes("abc", seed) would pick that one and read `seed` bytes. The seeded literal
// check below keeps it that way.

namespace {

// b[i] = i & 0xff: the buffer the reference vectors below were computed over.
constexpr std::array<char, 512> counting_bytes() {
  std::array<char, 512> b{};
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i & 0xff);
  return b;
}
constexpr std::array<char, 512> counting = counting_bytes();

// The 8 little-endian bytes of v.
std::array<char, 8> le_bytes(std::uint64_t v) {
  std::array<char, 8> b{};
  for (std::size_t i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return b;
}

}  // namespace

// hash_bytes must be usable in constant expressions, on every code path: short input, the
// 4-byte and 8-byte tails, and the 32-byte stripe loop.
static_assert(hash_bytes("") == 0xEF46DB3751D8E999ULL);
static_assert(hash_bytes("abc") == 0x44BC2CF5AD770999ULL);
static_assert(hash_bytes(std::string_view(counting.data(), 37)) == 0xD93FA2DFEE5C24C9ULL);
static_assert(hash_bytes(std::string_view(counting.data(), 512)) == 0x7B3BFCAAC0348AC0ULL);
static_assert(hash_u64(0) == hash_bytes(std::string_view("\0\0\0\0\0\0\0\0", 8)));
static_assert(noexcept(hash_bytes("x")) && noexcept(hash_u64(1)));

TEST_CASE("hash_bytes matches published XXH64 test vectors") {
  // Seed 0 vectors from the xxHash project and python-xxhash's README.
  CHECK(hash_bytes("") == 0xEF46DB3751D8E999ULL);
  CHECK(hash_bytes("a") == 0xD24EC4F1A98C6E5BULL);
  CHECK(hash_bytes("abc") == 0x44BC2CF5AD770999ULL);
  CHECK(hash_bytes("xxhash") == 0x32DD38952C4BC720ULL);
  CHECK(hash_bytes("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ULL);
  // python-xxhash README: xxhash.xxh64('xxhash', seed=20141025) -> b559b98d844e0635.
  CHECK(hash_bytes("xxhash"sv, 20141025) == 0xB559B98D844E0635ULL);
  // A bare literal with a seed is the same call, not a length.
  CHECK(hash_bytes("xxhash", 20141025) == 0xB559B98D844E0635ULL);
}

TEST_CASE("hash_bytes matches the reference on every code path") {
  // Computed with the reference implementation (`xxhsum -H64`, xxHash 0.8.1) over the first
  // n bytes of 0, 1, 2, ..., 255, 0, 1, ... Lengths chosen per path of the algorithm:
  //   4   -> only the 4-byte tail          8   -> only one 8-byte lane
  //   32  -> one stripe, no tail           37  -> one stripe + 4-byte tail + 1 single byte
  //   100 -> 3 stripes + 8-byte lane + 4   512 -> 16 stripes, bytes >= 0x80 (signed char)
  struct vec {
    std::size_t len;
    std::uint64_t want;
  };
  const vec vectors[] = {
      {4, 0xFFCED8604453CC1EULL},  {8, 0x884A173614B81B8DULL},   {32, 0xCBF59C5116FF32B4ULL},
      {37, 0xD93FA2DFEE5C24C9ULL}, {100, 0x6AC1E58032166597ULL}, {512, 0x7B3BFCAAC0348AC0ULL},
  };
  for (const auto& v : vectors) {
    CAPTURE(v.len);
    CHECK(hash_bytes(std::string_view(counting.data(), v.len)) == v.want);
  }
}

TEST_CASE("hash_bytes does not depend on alignment or on bytes outside the range") {
  // The same bytes at every offset of a buffer hash the same, and bytes just before and after
  // the range (set to different garbage each time) do not matter.
  std::mt19937_64 rng(12345);
  for (std::size_t len : {0u, 1u, 3u, 4u, 7u, 8u, 15u, 31u, 32u, 33u, 63u, 64u, 65u, 200u}) {
    std::vector<char> src(len);
    for (auto& c : src) c = static_cast<char>(rng());
    const auto want = hash_bytes(std::string_view(src.data(), len), 99);
    for (std::size_t off = 0; off < 16; ++off) {
      std::vector<char> buf(len + 32);
      for (auto& c : buf) c = static_cast<char>(rng());
      if (len != 0) std::memcpy(buf.data() + off + 8, src.data(), len);
      CAPTURE(len);
      CAPTURE(off);
      CHECK(hash_bytes(std::string_view(buf.data() + off + 8, len), 99) == want);
    }
  }
}

TEST_CASE("every prefix length gives a distinct hash") {
  // 513 prefixes of one buffer: a length-handling bug (a dropped tail byte, a lane read twice)
  // would make two of them collide; honest 64-bit collisions among 513 values have
  // probability about 513^2 / 2^65, i.e. never.
  std::set<std::uint64_t> seen;
  for (std::size_t n = 0; n <= counting.size(); ++n)
    seen.insert(hash_bytes(std::string_view(counting.data(), n)));
  CHECK(seen.size() == counting.size() + 1);
}

TEST_CASE("hash_u64 equals hash_bytes over the 8 little-endian bytes") {
  std::mt19937_64 rng(20240601);
  const std::uint64_t fixed_values[] = {0,
                                        1,
                                        0xff,
                                        0x100,
                                        0x8000000000000000ULL,
                                        0x7fffffffffffffffULL,
                                        ~0ULL,
                                        0x0123456789abcdefULL};
  const std::uint64_t fixed_seeds[] = {0, 1, 20141025, ~0ULL};
  for (auto v : fixed_values) {
    for (auto seed : fixed_seeds) {
      const auto b = le_bytes(v);
      CAPTURE(v);
      CAPTURE(seed);
      CHECK(hash_u64(v, seed) == hash_bytes(std::string_view(b.data(), b.size()), seed));
    }
  }
  int mismatches = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t v = rng();
    const std::uint64_t seed = (i % 4 == 0) ? 0 : rng();
    const auto b = le_bytes(v);
    if (hash_u64(v, seed) != hash_bytes(std::string_view(b.data(), b.size()), seed)) ++mismatches;
  }
  CHECK(mismatches == 0);
  CHECK(hash_u64(42) == hash_u64(42, 0));  // the default seed is 0
}

TEST_CASE("the seed changes the result") {
  CHECK(hash_bytes("xxhash"sv, 0) != hash_bytes("xxhash"sv, 1));
  CHECK(hash_bytes(""sv, 0) != hash_bytes(""sv, 1));
  CHECK(hash_bytes(std::string_view(counting.data(), 100), 0) !=
        hash_bytes(std::string_view(counting.data(), 100), 1));
  CHECK(hash_u64(7, 0) != hash_u64(7, 1));
  // 2000 different seeds on one input (short and long) give 2000 different hashes; by the
  // birthday bound a collision has probability about 2000^2 / 2^65 < 1e-12.
  std::mt19937_64 rng(7);
  std::set<std::uint64_t> u64s, shorts, longs;
  for (int i = 0; i < 2000; ++i) {
    const std::uint64_t seed = (i < 1000) ? static_cast<std::uint64_t>(i) : rng();
    u64s.insert(hash_u64(0x5eed, seed));
    shorts.insert(hash_bytes("abc"sv, seed));
    longs.insert(hash_bytes(std::string_view(counting.data(), 64), seed));
  }
  CHECK(u64s.size() == 2000);
  CHECK(shorts.size() == 2000);
  CHECK(longs.size() == 2000);
}

TEST_CASE("hash_u64 avalanche: one flipped input bit flips each output bit half the time") {
  // For an ideal 64-bit hash, flipping input bit i flips output bit j with probability 1/2,
  // independently over random inputs. Over K samples the flip count of a given (i, j) pair is
  // Binomial(K, 1/2), so the observed rate has standard deviation sqrt(0.25 / K). With
  // K = 2000 that is sqrt(0.25 / 2000) ~= 0.0112; we allow 5 sd ~= 0.0559. For an ideal hash,
  // P(|Z| > 5) ~= 5.7e-7 per pair, so over all 64 x 64 = 4096 pairs the chance of a spurious
  // failure is ~= 2.3e-3 (union bound) — and the inputs come from a fixed seed, so the result
  // is deterministic anyway. A hash with weak diffusion (for example one missing the final
  // avalanche step) sits far outside: low input bits never reach high-order rates near 1/2.
  constexpr int k_samples = 2000;
  const double sd = std::sqrt(0.25 / k_samples);
  const double tolerance = 5 * sd;

  for (std::uint64_t seed : {0ULL, 0x9E3779B97F4A7C15ULL}) {
    CAPTURE(seed);
    std::mt19937_64 rng(31337);
    std::vector<std::array<int, 64>> flips(64, std::array<int, 64>{});
    for (int s = 0; s < k_samples; ++s) {
      const std::uint64_t x = rng();
      const std::uint64_t h = hash_u64(x, seed);
      for (int i = 0; i < 64; ++i) {
        const std::uint64_t d = h ^ hash_u64(x ^ (1ULL << i), seed);
        for (int j = 0; j < 64; ++j)
          flips[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] +=
              static_cast<int>((d >> j) & 1);
      }
    }
    double worst = 0;
    int worst_i = -1, worst_j = -1;
    for (int i = 0; i < 64; ++i) {
      for (int j = 0; j < 64; ++j) {
        const double rate =
            flips[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] / double(k_samples);
        const double dev = std::fabs(rate - 0.5);
        if (dev > worst) worst = dev, worst_i = i, worst_j = j;
      }
    }
    CAPTURE(worst_i);
    CAPTURE(worst_j);
    CAPTURE(tolerance);
    CHECK(worst <= tolerance);
  }
}
