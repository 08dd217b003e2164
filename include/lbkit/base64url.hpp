// SPDX-License-Identifier: MIT
// Unpadded base64url (RFC 4648 §5, without the '=' padding of §3.2): an encoding whose 64
// characters ("A-Za-z0-9-_") are all valid in a cookie value, a URL path and a header field.
// The decoder is strict, so that every byte string has exactly one accepted text.
// Thread safety: thread-safe (pure functions). Complexity: linear.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lbkit {

// The characters unpadded base64url takes for `bytes` bytes.
constexpr std::size_t base64url_size(std::size_t bytes) noexcept {
  return bytes / 3 * 4 + (bytes % 3 == 0 ? 0 : bytes % 3 + 1);
}

// Appends the unpadded base64url text of `in` to `out`.
inline void append_base64url(std::string& out, std::string_view in) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const auto byte = [&](std::size_t i) { return std::uint32_t{static_cast<unsigned char>(in[i])}; };
  std::size_t i = 0;
  for (; in.size() - i >= 3; i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int shift = 18; shift >= 0; shift -= 6) out += alphabet[(v >> shift) & 63];
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    const std::uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    if (rest == 2) out += alphabet[(v >> 6) & 63];
  }
}

// The 6-bit value of a base64url character, or -1.
constexpr int base64url_value(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Decodes unpadded base64url into `out`, which has room for in.size() * 3 / 4 bytes, and
// returns the byte count. Strict, so that every byte string has exactly one accepted text:
// nothing for a character outside the alphabet (padding included), a length no encoding has
// (4k + 1), or unused low bits in the last character that are not zero.
constexpr std::optional<std::size_t> decode_base64url(std::string_view in, char* out) noexcept {
  if (in.size() % 4 == 1) return std::nullopt;
  std::size_t n = 0;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = base64url_value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6 | static_cast<std::uint32_t>(v)) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return n;
}

}  // namespace lbkit
