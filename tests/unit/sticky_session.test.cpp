// SPDX-License-Identifier: MIT
// sticky_session: SipHash-2-4 against the reference test vectors, the cookie format pinned
// against an independent computation, encode/decode round trips, rejection of every
// single-byte change, of other keys and names and of malformed values, Cookie header parsing,
// Set-Cookie text, and key parsing.
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
using lbkit::siphash24;
using lbkit::siphash_key;
using lbkit::sticky_cookie;
using namespace std::string_view_literals;

namespace {

// The key of the reference vectors: 00 01 02 ... 0f.
constexpr siphash_key reference_key() {
  siphash_key k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(i);
  return k;
}

// vectors_sip64 of the reference implementation (github.com/veorq/SipHash, vectors.h): entry i
// is SipHash-2-4 under key 00..0f of the i-byte message 00 01 .. (i-1), as its eight output
// bytes, least significant first. Every entry was also checked against OpenSSL 3's SIPHASH
// MAC at size 8, an implementation independent of this one.
constexpr const char* vectors_sip64[64] = {
    "310e0edd47db6f72", "fd67dc93c539f874", "5a4fa9d909806c0d", "2d7efbd796666785",
    "b7877127e09427cf", "8da699cd64557618", "cee3fe586e46c9cb", "37d1018bf50002ab",
    "6224939a79f5f593", "b0e4a90bdf82009e", "f3b9dd94c5bb5d7a", "a7ad6b22462fb3f4",
    "fbe50e86bc8f1e75", "903d84c02756ea14", "eef27a8e90ca23f7", "e545be4961ca29a1",
    "db9bc2577fcc2a3f", "9447be2cf5e99a69", "9cd38d96f0b3c14b", "bd6179a71dc96dbb",
    "98eea21af25cd6be", "c7673b2eb0cbf2d0", "883ea3e395675393", "c8ce5ccd8c030ca8",
    "94af49f6c650adb8", "eab8858ade92e1bc", "f315bb5bb835d817", "adcf6b0763612e2f",
    "a5c91da7acaa4dde", "716595876650a2a6", "28ef495c53a387ad", "42c341d8fa92d832",
    "ce7cf2722f512771", "e37859f94623f3a7", "381205bb1ab0e012", "ae97a10fd434e015",
    "b4a31508beff4d31", "81396229f0907902", "4d0cf49ee5d4dcca", "5c73336a76d8bf9a",
    "d0a704536ba93e0e", "925958fcd6420cad", "a915c29bc8067318", "952b79f3bc0aa6d4",
    "f21df2e41d4535f9", "87577519048f53a9", "10a56cf5dfcd9adb", "eb75095ccd986cd0",
    "51a9cb9ecba312e6", "96afadfc2ce666c7", "72fe52975a4364ee", "5a1645b276d592a1",
    "b274cb8ebf87870a", "6f9bb4203de7b381", "eaecb2a30b22a87f", "9924a43cc1315724",
    "bd838d3aafbf8db7", "0b1a2a3265d51aea", "135079a3231ce660", "932b2846e4d70666",
    "e1915f5cb1eca46c", "f325965ca16d629f", "575ff28e60381be5", "724506eb4c328a95",
};

std::uint64_t from_le_hex(std::string_view hex) {
  std::uint64_t v = 0;
  for (std::size_t i = 16; i >= 2; i -= 2) {
    v = v << 8 | std::stoul(std::string(hex.substr(i - 2, 2)), nullptr, 16);
  }
  return v;
}

std::string message(std::size_t n) {
  std::string m;
  for (std::size_t i = 0; i < n; ++i) m += static_cast<char>(i);
  return m;
}

siphash_key key_of(std::uint8_t fill) {
  siphash_key k;
  k.fill(fill);
  return k;
}

}  // namespace

// Usable in constant expressions: the empty message of the reference table.
static_assert(siphash24(reference_key(), "") == 0x726fdb47dd0e0e31ULL);
static_assert(find_cookie("a=1; b=2", "b") == "2"sv);

TEST_CASE("siphash24: the 64 reference vectors, whole and fed in two pieces") {
  // Lengths 0..63 cover every final-block length, the empty message, 7/8/9, 15/16/17 bytes.
  for (std::size_t n = 0; n < 64; ++n) {
    CAPTURE(n);
    const std::string m = message(n);
    const std::uint64_t expected = from_le_hex(vectors_sip64[n]);
    CHECK(siphash24(reference_key(), m) == expected);
    // Split at every point: the streaming state must not care where pieces end.
    for (std::size_t cut = 0; cut <= n; ++cut) {
      lbkit::detail::siphash24_state s(reference_key());
      s.update(std::string_view(m).substr(0, cut)).update(std::string_view(m).substr(cut));
      CHECK(s.finish() == expected);
    }
  }
  // The ones quoted most often, spelled out.
  CHECK(siphash24(reference_key(), message(0)) == 0x726fdb47dd0e0e31ULL);
  CHECK(siphash24(reference_key(), message(8)) == 0x93f5f5799a932462ULL);
  CHECK(siphash24(reference_key(), message(15)) == 0xa129ca6149be45e5ULL);  // the paper's example
  CHECK(siphash24(reference_key(), message(16)) == 0x3f2acc7f57c29bdbULL);
  // A different key, a different output.
  CHECK(siphash24(key_of(0), message(15)) != siphash24(reference_key(), message(15)));
}

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
  lbkit::detail::append_base64url(id256, std::string(256, 'x'));
  CHECK_FALSE(c.decode(id256 + tag).has_value());
}

TEST_CASE("base64url: canonical encodings only") {
  std::string out;
  lbkit::detail::append_base64url(out, "");
  CHECK(out.empty());
  // RFC 4648 §10 vectors, unpadded, with the URL alphabet.
  const std::pair<std::string_view, std::string_view> rfc[] = {
      {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},     {"foob", "Zm9vYg"},
      {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
  };
  for (const auto& [raw, text] : rfc) {
    out.clear();
    lbkit::detail::append_base64url(out, raw);
    CHECK(out == text);
    char buf[8];
    const auto n = lbkit::detail::decode_base64url(text, buf);
    REQUIRE(n.has_value());
    CHECK(std::string_view(buf, *n) == raw);
  }
  char buf[8];
  CHECK_FALSE(lbkit::detail::decode_base64url("Zh", buf).has_value());  // low bits set
  CHECK_FALSE(lbkit::detail::decode_base64url("Zm9", buf).has_value());
  CHECK_FALSE(lbkit::detail::decode_base64url("Z", buf).has_value());
  CHECK_FALSE(lbkit::detail::decode_base64url("Zg==", buf).has_value());
  CHECK(lbkit::detail::decode_base64url("", buf) == std::size_t{0});
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
