// SPDX-License-Identifier: MIT
// sticky_session: the cookie format pinned against an independent computation, encode/decode round
// trips, rejection of every single-byte change, of other keys and names and of malformed values,
// Cookie header parsing, Set-Cookie text, and key parsing.
#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include <lbkit/net/sticky_session.hpp>

using lbkit::find_cookie;
using lbkit::siphash_key;
using lbkit::sticky_cookie;
using namespace std::string_view_literals;

namespace {

// The key of SipHash's reference vectors: 00 01 02 ... 0f.
constexpr siphash_key reference_key() {
  siphash_key k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(i);
  return k;
}

siphash_key key_of(std::uint8_t fill) {
  siphash_key k;
  k.fill(fill);
  return k;
}

}  // namespace

static_assert(find_cookie("a=1; b=2", "b") == "2"sv);

TEST_CASE("sticky_cookie: the value format is fixed, so routers of mixed versions agree") {
  // Computed independently: OpenSSL's SIPHASH (key 00..0f, size 8) over
  // "lbkit sticky_cookie v1:lbkit_sticky=web-1" is eb 65 23 9b 37 12 7a c9, and Python's
  // base64.urlsafe_b64encode without padding gives the two parts.
  const sticky_cookie c(reference_key());
  CHECK(c.name() == "lbkit_sticky");
  CHECK(c.encode("web-1") == "d2ViLTE.62UjmzcSesk");
  CHECK(c.decode("d2ViLTE.62UjmzcSesk") == "web-1");
}

TEST_CASE("sticky_cookie: encode/decode round trip over every id length") {
  const sticky_cookie c(sticky_cookie::random_key());
  std::mt19937 rng(1);
  for (std::size_t len = 1; len <= lbkit::max_id_length; ++len) {
    CAPTURE(len);
    std::string id;
    for (std::size_t i = 0; i < len; ++i) id += static_cast<char>('!' + rng() % 94);
    const std::string v = c.encode(id);
    CHECK(v.size() <= sticky_cookie::max_value_size);
    CHECK(
        v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") ==
        std::string::npos);
    CHECK(c.decode(v) == id);
  }
  // The longest id gives the longest value.
  CHECK(c.encode(std::string(255, 'x')).size() == sticky_cookie::max_value_size);
  // Ids are bytes: anything round-trips, though registry ids are visible ASCII.
  CHECK(c.decode(c.encode("a\xff\x01 b"sv)) == "a\xff\x01 b"sv);
  // Deterministic for a key.
  CHECK(c.encode("web-2") == c.encode("web-2"));
  CHECK(c.encode("web-2") != c.encode("web-3"));
}

TEST_CASE("sticky_cookie: every single-byte change of a valid value is rejected") {
  const sticky_cookie c(reference_key());
  for (const std::string id : {"w", "web-1", "backend-with-a-longer-id.example:8080"}) {
    const std::string v = c.encode(id);
    CAPTURE(v);
    REQUIRE(c.decode(v) == id);
    std::size_t tried = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      for (int b = 0; b < 256; ++b) {
        if (static_cast<char>(b) == v[i]) continue;
        std::string w = v;
        w[i] = static_cast<char>(b);
        if (c.decode(w).has_value()) FAIL_CHECK("accepted " << w);
        ++tried;
      }
      // Dropping, duplicating or inserting a byte too.
      CHECK_FALSE(c.decode(std::string(v).erase(i, 1)).has_value());
      CHECK_FALSE(c.decode(std::string(v).insert(i, 1, v[i])).has_value());
    }
    CHECK(tried == v.size() * 255);
    CHECK_FALSE(c.decode(v + "A").has_value());
    CHECK_FALSE(c.decode(v + ".").has_value());
  }
}

TEST_CASE("sticky_cookie: a value from another key or another cookie name is rejected") {
  const sticky_cookie a(reference_key());
  const sticky_cookie other_key(key_of(7));
  const sticky_cookie other_name(reference_key(), "pool_b");
  const std::string v = a.encode("web-1");
  CHECK(a.decode(v) == "web-1");
  CHECK_FALSE(other_key.decode(v).has_value());
  CHECK_FALSE(other_name.decode(v).has_value());
  CHECK_FALSE(a.decode(other_name.encode("web-1")).has_value());
  CHECK(other_name.decode(other_name.encode("web-1")) == "web-1");
  // A key differing in one bit of one byte is another key.
  siphash_key k = reference_key();
  k[15] ^= 1;
  CHECK_FALSE(sticky_cookie(k).decode(v).has_value());
  // The tag of one id does not vouch for another (swap the id part).
  const std::string w = a.encode("web-2");
  CHECK_FALSE(a.decode(w.substr(0, w.find('.')) + v.substr(v.find('.'))).has_value());
}

TEST_CASE("sticky_cookie: malformed values are rejected") {
  const sticky_cookie c(reference_key());
  const std::string v = c.encode("web-1");  // d2ViLTE.62UjmzcSesk
  const std::string tag = v.substr(v.find('.'));
  for (const std::string_view bad : {
           ""sv,
           "."sv,
           "d2ViLTE"sv,             // no dot, no tag
           "d2ViLTE."sv,            // empty tag
           ".62UjmzcSesk"sv,        // empty id
           "d2ViLTE62UjmzcSesk"sv,  // dot missing
           "d2ViLTE.62UjmzcSes"sv,  // tag one character short
           "d2ViLTE.62UjmzcSeskA"sv,
           "d2ViLTE=.62UjmzcSesk"sv,  // padding
           "d2ViLTE.62UjmzcSesk="sv,  // padding
           "d2Vi+TE.62UjmzcSesk"sv,   // the other alphabet
           "d2Vi/TE.62UjmzcSesk"sv,   //
           "d2ViLTF.62UjmzcSesk"sv,   // unused low bits set: same bytes, not canonical
           "d2ViLTE.62UjmzcSesl"sv,   // the same in the tag
           "d2ViLTE.62Ujmz.cSesk"sv,  // a second dot
           "d2ViL.TE.62UjmzcSesk"sv,  //
           " d2ViLTE.62UjmzcSesk"sv,  // spaces are not trimmed here (find_cookie does that)
           "\"d2ViLTE.62UjmzcSesk\""sv,
           "d2ViLTE\0.62UjmzcSesk"sv,  // embedded NUL
           "d2ViLTE.62Ujmzc\0esk"sv,
           "d2ViLTE.62UjmzcSes\0"sv,
       }) {
    CAPTURE(std::string(bad));
    CHECK_FALSE(c.decode(bad).has_value());
  }
  // A length no base64 has (4k + 1 characters) for the id.
  CHECK_FALSE(c.decode("d2ViL" + tag).has_value());
  // Oversized: one past the longest possible value, and far past it, rejected before decoding.
  const std::string longest = c.encode(std::string(255, 'x'));
  CHECK(c.decode(longest) == std::string(255, 'x'));
  CHECK_FALSE(c.decode("A" + longest).has_value());
  CHECK_FALSE(c.decode(std::string(100000, 'A') + tag).has_value());
  // A well-formed 256-byte id under a forged tag: too long either way.
  std::string id256;
  lbkit::append_base64url(id256, std::string(256, 'x'));
  CHECK_FALSE(c.decode(id256 + tag).has_value());
}

TEST_CASE("find_cookie: RFC 6265 pairs, tolerant of real browsers, exact about names") {
  // The form browsers send.
  CHECK(find_cookie("lbkit_sticky=abc", "lbkit_sticky") == "abc"sv);
  CHECK(find_cookie("a=1; lbkit_sticky=abc; b=2", "lbkit_sticky") == "abc"sv);
  CHECK(find_cookie("a=1; b=2", "a") == "1"sv);
  CHECK(find_cookie("a=1; b=2", "b") == "2"sv);
  // Missing or extra spaces and tabs.
  CHECK(find_cookie("a=1;lbkit_sticky=abc;b=2", "lbkit_sticky") == "abc"sv);
  CHECK(find_cookie("a=1 ;  lbkit_sticky = abc \t; b=2", "lbkit_sticky") == "abc"sv);
  CHECK(find_cookie("\tlbkit_sticky=abc", "lbkit_sticky") == "abc"sv);
  // Quoted values lose their quotes; a lone quote stays.
  CHECK(find_cookie("lbkit_sticky=\"abc\"", "lbkit_sticky") == "abc"sv);
  CHECK(find_cookie("lbkit_sticky=\"\"", "lbkit_sticky") == ""sv);
  CHECK(find_cookie("lbkit_sticky=\"abc", "lbkit_sticky") == "\"abc"sv);
  CHECK(find_cookie("lbkit_sticky=\"", "lbkit_sticky") == "\""sv);
  // Names match exactly: not as a suffix, prefix or in another case.
  CHECK_FALSE(find_cookie("xlbkit_sticky=abc", "lbkit_sticky").has_value());
  CHECK_FALSE(find_cookie("lbkit_sticky_old=abc", "lbkit_sticky").has_value());
  CHECK_FALSE(find_cookie("LBKIT_STICKY=abc", "lbkit_sticky").has_value());
  CHECK(find_cookie("xlbkit_sticky=forged; lbkit_sticky=real", "lbkit_sticky") == "real"sv);
  CHECK_FALSE(find_cookie("a=lbkit_sticky=abc", "lbkit_sticky").has_value());
  // The first of duplicates wins (the most specific path comes first).
  CHECK(find_cookie("lbkit_sticky=first; lbkit_sticky=second", "lbkit_sticky") == "first"sv);
  // Values may contain '='; empty values are values.
  CHECK(find_cookie("t=a=b=c", "t") == "a=b=c"sv);
  CHECK(find_cookie("a=; b=2", "a") == ""sv);
  // Empty pairs, pairs without '=', nameless pairs, trailing separators.
  CHECK(find_cookie(";; ;a=1;;", "a") == "1"sv);
  CHECK(find_cookie("lbkit_sticky; lbkit_sticky=v", "lbkit_sticky") == "v"sv);
  CHECK(find_cookie("=v; a=1", "a") == "1"sv);
  CHECK_FALSE(find_cookie("=v", "").has_value());
  CHECK_FALSE(find_cookie("", "a").has_value());
  CHECK_FALSE(find_cookie("   ", "a").has_value());
  CHECK_FALSE(find_cookie("a", "a").has_value());
  CHECK_FALSE(find_cookie("a=1", "").has_value());
  // The view points into the header: no copy.
  const std::string_view h = "x=1; lbkit_sticky=abc";
  const auto v = find_cookie(h, "lbkit_sticky");
  REQUIRE(v.has_value());
  CHECK(v->data() == h.data() + 18);
  // Round trip with a cookie from set_cookie, as a browser would send it back.
  const sticky_cookie c(reference_key());
  const std::string set = c.set_cookie("web-1");
  const std::string sent = "other=1; " + set.substr(0, set.find(';'));
  CHECK(c.decode(*find_cookie(sent, c.name())) == "web-1");
}

TEST_CASE("sticky_cookie::set_cookie: the attribute text") {
  const sticky_cookie c(reference_key());
  CHECK(c.set_cookie("web-1") ==
        "lbkit_sticky=d2ViLTE.62UjmzcSesk; Path=/; HttpOnly; SameSite=Lax");
  lbkit::cookie_attributes a;
  a.max_age = std::chrono::hours(1);
  CHECK(c.set_cookie("web-1", a) ==
        "lbkit_sticky=d2ViLTE.62UjmzcSesk; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax");
  a.secure = true;
  CHECK(c.set_cookie("web-1", a) ==
        "lbkit_sticky=d2ViLTE.62UjmzcSesk; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax");
  a.max_age = std::chrono::seconds(-5);
  a.secure = false;
  CHECK(c.set_cookie("web-1", a) ==
        "lbkit_sticky=d2ViLTE.62UjmzcSesk; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
  a.max_age.reset();
  a.secure = true;
  CHECK(c.set_cookie("web-1", a) ==
        "lbkit_sticky=d2ViLTE.62UjmzcSesk; Path=/; Secure; HttpOnly; SameSite=Lax");
  const sticky_cookie named(reference_key(), "route");
  CHECK(named.set_cookie("web-1").rfind("route=d2ViLTE.", 0) == 0);
}

TEST_CASE("sticky_cookie: keys and names from configuration") {
  const auto k = sticky_cookie::parse_key("000102030405060708090A0b0c0d0e0F");
  REQUIRE(k.has_value());
  CHECK(*k == reference_key());
  CHECK(sticky_cookie(*k).encode("web-1") == "d2ViLTE.62UjmzcSesk");

  auto bad = sticky_cookie::parse_key("0001");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message ==
        "sticky cookie key must be 32 hexadecimal digits (16 bytes), not 4 characters");
  bad = sticky_cookie::parse_key("000102030405060708090a0b0c0d0e0g");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == lbkit::errc::invalid_argument);
  // The message locates the fault without repeating the secret.
  CHECK(bad.error().message.find("position 32") != std::string::npos);
  CHECK(bad.error().message.find("0001") == std::string::npos);
  CHECK_FALSE(sticky_cookie::parse_key(" 00102030405060708090a0b0c0d0e0f").has_value());
  CHECK_FALSE(sticky_cookie::parse_key("").has_value());

  // Random keys differ (a 2^-128 chance that they do not).
  CHECK(sticky_cookie::random_key() != sticky_cookie::random_key());

  CHECK(lbkit::validate_cookie_name("lbkit_sticky").has_value());
  CHECK(lbkit::validate_cookie_name("__Host-route").has_value());
  CHECK(lbkit::validate_cookie_name("a!#$%&'*+-.^_`|~9").has_value());
  for (const std::string_view bad_name : {""sv, "a b"sv, "a=b"sv, "a;b"sv, "a\"b"sv, "a,b"sv,
                                          "a\tb"sv, "caf\xc3\xa9"sv, "a\0b"sv, "(a)"sv}) {
    CAPTURE(std::string(bad_name));
    const auto r = lbkit::validate_cookie_name(bad_name);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("must be a non-empty token") != std::string::npos);
  }
}
