// SPDX-License-Identifier: MIT
// The HTTP/1 grammar (lbkit/net/http1.hpp) that the route table, sticky cookies, the framing
// checks, the response parser and the probe share: each rule against RFC 9110's definition.
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/net/http1.hpp>

using namespace lbkit::http1;

TEST_CASE("tchar is exactly RFC 9110 §5.6.2's set") {
  const std::string_view specials = "!#$%&'*+-.^_`|~";
  for (int i = 0; i < 256; ++i) {
    const char c = static_cast<char>(i);
    const bool expected = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') ||
                          (c != '\0' && specials.find(c) != std::string_view::npos);
    CAPTURE(i);
    CHECK(is_tchar(c) == expected);
  }
  CHECK(is_token("GET"));
  CHECK(is_token("X-Forwarded-For"));
  CHECK_FALSE(is_token(""));
  CHECK_FALSE(is_token("a b"));
  CHECK_FALSE(is_token("a:b"));
  CHECK_FALSE(is_token(std::string_view("a\0b", 3)));
}

TEST_CASE("OWS trimming, case-insensitive compare, hex digits") {
  CHECK(trim_ows(" \t a b \t") == "a b");
  CHECK(trim_ows(" \t ").empty());
  CHECK(trim_ows("\r a") == "\r a");  // CR is not OWS
  CHECK(iequals("Content-Length", "content-LENGTH"));
  CHECK_FALSE(iequals("Content-Length", "Content-Lengt"));
  CHECK_FALSE(iequals("\xc9", "\xe9"));  // ASCII only: no Latin-1 folding
  CHECK(hex_digit('0') == 0);
  CHECK(hex_digit('f') == 15);
  CHECK(hex_digit('F') == 15);
  CHECK(hex_digit('g') == -1);
  CHECK(hex_digit('/') == -1);
}

TEST_CASE("field values refuse CR, LF, NUL and the other controls, and accept obs-text") {
  CHECK(is_field_value("text/html; q=0.9\t\x80\xff"));
  for (char c : std::string_view("\r\n\x01\x1f\x7f", 5)) CHECK_FALSE(is_field_char(c));
  CHECK_FALSE(is_field_char('\0'));
  CHECK_FALSE(is_field_value(std::string_view("a\0b", 3)));
}

TEST_CASE("list elements: trimmed, empty ones skipped, the walk stops when asked") {
  std::vector<std::string> seen;
  CHECK(for_each_element(" a ,, b\t, ,c", [&](std::string_view e) { seen.emplace_back(e); }) == 3);
  CHECK(seen == std::vector<std::string>{"a", "b", "c"});
  CHECK(for_each_element(",, ,", [](std::string_view) {}) == 0);
  int calls = 0;
  CHECK(for_each_element("a, b, c", [&](std::string_view e) { return ++calls, e != "b"; }) == -1);
  CHECK(calls == 2);
}

TEST_CASE("quoted-string length, escapes included, or 0 when malformed") {
  CHECK(quoted_length("\"abc\" rest") == 5);
  CHECK(quoted_length("\"a\\\"b\"") == 6);
  CHECK(quoted_length("\"unterminated") == 0);
  CHECK(quoted_length("\"ends in escape\\") == 0);
  CHECK(quoted_length("\"bad\x01\"") == 0);
  CHECK(quoted_length("abc") == 0);
}
