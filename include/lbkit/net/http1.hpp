// SPDX-License-Identifier: MIT
// The HTTP/1 grammar every lbkit piece that reads HTTP shares: the character classes and small
// rules of RFC 9110 and RFC 9112 (tokens, optional whitespace, field values, comma-separated
// lists, hex digits, quoted strings), written once. The route table, sticky cookies, the
// request and response checks, the HTTP probe and the L7 router's cache all use these.
//
// Everything here is pure, constexpr and allocation-free.
// Thread safety: thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <string_view>
#include <type_traits>

#include "lbkit/text.hpp"

namespace lbkit::http1 {

// tchar of RFC 9110 §5.6.2: the characters of a method, a field name, a transfer-coding, a
// cookie name (RFC 6265 §4.1.1) and a chunk-extension name.
constexpr bool is_tchar(char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// token = 1*tchar.
constexpr bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// DIGIT, and the value of a HEXDIG (either case) or -1 (RFC 5234 appendix B.1).
using lbkit::hex_digit;
using lbkit::is_digit;

// OWS = *( SP / HTAB ) (RFC 9110 §5.6.3).
constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

constexpr std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// A byte allowed inside a field value or a reason phrase: HTAB, SP, VCHAR or obs-text
// (RFC 9110 §5.5). Everything else (CR, LF, NUL, the other controls, DEL) is refused.
constexpr bool is_field_char(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

constexpr bool is_field_value(std::string_view s) noexcept {
  for (char c : s) {
    if (!is_field_char(c)) return false;
  }
  return true;
}

constexpr char ascii_lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Case-insensitive ASCII comparison, as field names, methods' schemes and codings compare.
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// Calls f(element) on each non-empty, OWS-trimmed element of a comma-separated list (RFC 9110
// §5.6.1: empty elements are allowed and skipped). `f` returns bool (false stops the walk) or
// void. Returns how many elements there were, or -1 when `f` stopped the walk.
template <class F>
constexpr int for_each_element(std::string_view list, F&& f) {
  int n = 0;
  for (;;) {
    const auto comma = list.find(',');
    const std::string_view e = trim_ows(list.substr(0, comma));
    if (!e.empty()) {
      if constexpr (std::is_void_v<decltype(f(e))>) {
        f(e);
      } else if (!f(e)) {
        return -1;
      }
      ++n;
    }
    if (comma == std::string_view::npos) return n;
    list.remove_prefix(comma + 1);
  }
}

// quoted-string (RFC 9110 §5.6.4) at the start of `s`: its length with both quotes, or 0
// when `s` does not start with a well-formed one.
constexpr std::size_t quoted_length(std::string_view s) noexcept {
  if (s.empty() || s.front() != '"') return 0;
  for (std::size_t i = 1; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') return i + 1;
    if (c == '\\') {
      if (++i == s.size()) return 0;
      continue;
    }
    if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
  }
  return 0;
}

}  // namespace lbkit::http1
