// SPDX-License-Identifier: MIT
// Small text helpers for parsers and error messages: quoting untrusted input safely and
// parsing unsigned decimals without locale, sign or overflow surprises.
// Thread safety: thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lbkit {

// Quotes untrusted text for an error message: at most `limit` characters, control and
// non-ASCII bytes escaped as \xNN, so a hostile input cannot forge log lines or flood them.
inline std::string quote(std::string_view s, std::size_t limit = 64) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "'";
  std::size_t n = 0;
  for (char c : s) {
    if (n++ == limit) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '\'' || c == '\\') {
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

// Parses a non-empty run of decimal digits (no sign, no spaces) that is at most `max`.
// Returns nothing on any other text or on overflow.
inline std::optional<std::uint64_t> parse_decimal(std::string_view s, std::uint64_t max) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (max - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// An ASCII decimal digit (DIGIT of RFC 5234)?
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// The value of a hex digit (either case), or -1.
constexpr int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// True when every byte is visible ASCII (0x21..0x7e): no spaces, controls or non-ASCII.
constexpr bool is_visible_ascii(std::string_view s) noexcept {
  for (char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace lbkit
