// SPDX-License-Identifier: MIT
// base64url (lbkit/base64url.hpp): the RFC 4648 §10 vectors in the URL alphabet, unpadded,
// and the strict decoder's refusals (set low bits, impossible lengths, padding).
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include <doctest/doctest.h>

#include <lbkit/base64url.hpp>

TEST_CASE("base64url: canonical encodings only") {
  std::string out;
  lbkit::append_base64url(out, "");
  CHECK(out.empty());
  // RFC 4648 §10 vectors, unpadded, with the URL alphabet.
  const std::pair<std::string_view, std::string_view> rfc[] = {
      {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},     {"foob", "Zm9vYg"},
      {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
  };
  for (const auto& [raw, text] : rfc) {
    out.clear();
    lbkit::append_base64url(out, raw);
    CHECK(out == text);
    char buf[8];
    const auto n = lbkit::decode_base64url(text, buf);
    REQUIRE(n.has_value());
    CHECK(std::string_view(buf, *n) == raw);
  }
  char buf[8];
  CHECK_FALSE(lbkit::decode_base64url("Zh", buf).has_value());  // low bits set
  CHECK_FALSE(lbkit::decode_base64url("Zm9", buf).has_value());
  CHECK_FALSE(lbkit::decode_base64url("Z", buf).has_value());
  CHECK_FALSE(lbkit::decode_base64url("Zg==", buf).has_value());
  CHECK(lbkit::decode_base64url("", buf) == std::size_t{0});
}

TEST_CASE("base64url: every byte string round-trips, and its size is base64url_size") {
  std::string raw;
  for (int n = 0; n < 70; ++n) {
    std::string text;
    lbkit::append_base64url(text, raw);
    CHECK(text.size() == lbkit::base64url_size(raw.size()));
    std::string back(raw.size() + 3, '\0');
    const auto got = lbkit::decode_base64url(text, back.data());
    REQUIRE(got.has_value());
    CHECK(back.substr(0, *got) == raw);
    raw += static_cast<char>(n * 37 + 11);  // every byte value class, high bit included
  }
}
