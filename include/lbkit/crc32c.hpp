// SPDX-License-Identifier: MIT
// CRC32C (Castagnoli), the checksum of the PROXY protocol v2 CRC32C TLV (and of iSCSI, SCTP
// and ext4): reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF, as
// RFC 3720 §12.1 and Appendix B.4 define it. A table-driven byte-at-a-time implementation:
// PROXY headers are small, so the SSE4.2 instruction would buy nothing worth a CPU check.
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace lbkit {
namespace detail {

constexpr std::array<std::uint32_t, 256> make_crc32c_table() noexcept {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

inline constexpr std::array<std::uint32_t, 256> crc32c_table = make_crc32c_table();

}  // namespace detail

// CRC32C of `bytes`. Pass a previous result as `crc` to continue it:
// crc32c(b, crc32c(a)) == crc32c(a followed by b).
// Thread safety: thread-safe. Complexity: linear, one table look-up per byte.
constexpr std::uint32_t crc32c(std::span<const std::uint8_t> bytes,
                               std::uint32_t crc = 0) noexcept {
  crc = ~crc;
  for (const std::uint8_t b : bytes) crc = detail::crc32c_table[(crc ^ b) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

}  // namespace lbkit
