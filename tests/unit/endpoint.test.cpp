// SPDX-License-Identifier: MIT
// ip_address and endpoint: strict parsing, RFC 5952 text, inet_pton/inet_ntop parity, sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/endpoint.hpp>
#include <lbkit/hash.hpp>

using lbkit::endpoint;
using lbkit::errc;
using lbkit::ip_address;
using lbkit::port_zero;

namespace {

std::vector<std::uint8_t> bytes_of(const ip_address& a) {
  return {a.bytes().begin(), a.bytes().end()};
}

ip_address ip(std::string_view s) {
  auto r = ip_address::parse(s);
  if (!r) FAIL("ip_address::parse(\"" << std::string(s) << "\") failed: " << r.error().message);
  return *r;
}

endpoint ep(std::string_view s, port_zero zero = port_zero::reject) {
  auto r = endpoint::parse(s, zero);
  if (!r) FAIL("endpoint::parse(\"" << std::string(s) << "\") failed: " << r.error().message);
  return *r;
}

template <class T>
lbkit::error error_of(const lbkit::result<T>& r) {
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

// True when every byte is printable ASCII: what an error message must be, whatever the input.
bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
  });
}

// glibc's text for an IPv6 address; inet_ntop cannot fail with a large enough buffer.
std::string ntop6(const std::array<std::uint8_t, 16>& b) {
  char buf[INET6_ADDRSTRLEN];
  if (inet_ntop(AF_INET6, b.data(), buf, sizeof buf) == nullptr) FAIL("inet_ntop failed");
  return buf;
}

std::array<std::uint16_t, 8> groups_of(const std::array<std::uint8_t, 16>& b) {
  std::array<std::uint16_t, 8> g{};
  for (std::size_t i = 0; i < 8; ++i)
    g[i] = static_cast<std::uint16_t>(b[2 * i] << 8 | b[2 * i + 1]);
  return g;
}

std::array<std::uint8_t, 16> bytes_from_groups(const std::array<std::uint16_t, 8>& g) {
  std::array<std::uint8_t, 16> b{};
  for (std::size_t i = 0; i < 8; ++i) {
    b[2 * i] = static_cast<std::uint8_t>(g[i] >> 8);
    b[2 * i + 1] = static_cast<std::uint8_t>(g[i] & 0xff);
  }
  return b;
}

// Random IPv6 addresses biased towards the cases that matter for text forms: runs of zero
// groups of every length and position (ties included), groups with leading zeros to drop,
// IPv4-mapped addresses, addresses whose first 96 bits are zero, and near misses of both.
class address_generator {
 public:
  explicit address_generator(std::uint64_t seed) : rng_(seed) {}

  std::uint64_t next() { return rng_(); }
  std::uint64_t below(std::uint64_t n) { return rng_() % n; }

  // A group of 1 to 4 significant hex digits (sometimes zero).
  std::uint16_t group() {
    const auto nibbles = 1 + below(4);
    return static_cast<std::uint16_t>(rng_() & ((1ULL << (4 * nibbles)) - 1));
  }

  std::array<std::uint8_t, 16> v6() {
    std::array<std::uint16_t, 8> g{};
    switch (below(16)) {
      case 0:  // IPv4-mapped ::ffff:a.b.c.d
        g[5] = 0xffff, g[6] = group(), g[7] = group();
        break;
      case 1:  // first 96 bits zero: ::, ::1, ::a.b.c.d (IPv4-compatible, deprecated)
        g[6] = below(3) == 0 ? 0 : group();
        g[7] = below(4) == 0 ? 0 : group();
        break;
      case 2:  // near misses of the mapped form
        g[5] = 0xffff, g[6] = group(), g[7] = group();
        g[below(5)] = static_cast<std::uint16_t>(1 + below(0xffff));
        break;
      case 3:  // ::ffff:0:a.b.c.d (IPv4-translated, printed in hex by both sides)
        g[4] = 0xffff, g[6] = group(), g[7] = group();
        break;
      case 4:  // no zeros at all
        for (auto& x : g) x = static_cast<std::uint16_t>(1 + below(0xffff));
        break;
      default: {
        for (auto& x : g) x = below(2) == 0 ? 0 : group();
        // Zero one or two explicit runs so that long runs and equal-length ties are common.
        for (auto runs = below(3); runs > 0; --runs) {
          const auto start = below(8);
          const auto len = 1 + below(8 - start);
          for (auto i = start; i < start + len; ++i) g[i] = 0;
        }
      }
    }
    return bytes_from_groups(g);
  }

  std::array<std::uint8_t, 4> v4() {
    std::array<std::uint8_t, 4> b{};
    for (auto& x : b) {
      switch (below(4)) {
        case 0:
          x = 0;
          break;
        case 1:
          x = 255;
          break;
        case 2:
          x = static_cast<std::uint8_t>(below(10));
          break;
        default:
          x = static_cast<std::uint8_t>(rng_());
      }
    }
    return b;
  }

 private:
  std::mt19937_64 rng_;
};

std::string hex_group(std::uint16_t g, bool upper, bool pad) {
  char buf[8];
  std::snprintf(buf, sizeof buf, pad ? (upper ? "%04X" : "%04x") : (upper ? "%X" : "%x"), g);
  return buf;
}

std::string dotted(const std::uint8_t* b) {
  return std::to_string(b[0]) + '.' + std::to_string(b[1]) + '.' + std::to_string(b[2]) + '.' +
         std::to_string(b[3]);
}

// Uncompressed text: 8 groups, or 6 groups and a dotted quad.
std::string full_form(const std::array<std::uint8_t, 16>& b, bool upper, bool pad,
                      bool dotted_tail) {
  const auto g = groups_of(b);
  std::string out;
  const int n = dotted_tail ? 6 : 8;
  for (int i = 0; i < n; ++i) {
    if (i) out += ':';
    out += hex_group(g[static_cast<std::size_t>(i)], upper, pad);
  }
  if (dotted_tail) out += ':' + dotted(b.data() + 12);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Accepted forms

TEST_CASE("ip_address::parse accepts IPv4 dotted quads") {
  CHECK(ip("192.0.2.1") == ip_address::v4({192, 0, 2, 1}));
  CHECK(ip("0.0.0.0") == ip_address());
  CHECK(ip("255.255.255.255") == ip_address::v4({255, 255, 255, 255}));
  CHECK(ip("10.0.0.1").is_v4());
  CHECK(ip("10.0.0.1").af() == ip_address::family::v4);
  CHECK(bytes_of(ip("1.2.3.4")) == std::vector<std::uint8_t>{1, 2, 3, 4});
  CHECK(bytes_of(ip("0.10.100.200")) == std::vector<std::uint8_t>{0, 10, 100, 200});
}

TEST_CASE("ip_address::parse accepts the RFC 4291 IPv6 forms") {
  const auto loopback = ip_address::v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  const auto doc = ip_address::v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  CHECK(ip("0:0:0:0:0:0:0:1") == loopback);
  CHECK(ip("0000:0000:0000:0000:0000:0000:0000:0001") == loopback);
  CHECK(ip("::1") == loopback);
  CHECK(ip("2001:db8:0:0:0:0:0:1") == doc);
  CHECK(ip("2001:0db8:0000:0000:0000:0000:0000:0001") == doc);
  CHECK(ip("2001:db8::1") == doc);
  CHECK(ip("2001:DB8::1") == doc);
  CHECK(ip("2001:Db8::0:1") == doc);
  CHECK(ip("::") == ip_address::v6({}));
  CHECK(ip("::").is_v6());
  CHECK(ip("::").af() == ip_address::family::v6);
  CHECK(ip("1::") == ip_address::v6({0, 1}));
  CHECK(ip("1:2:3:4:5:6:7::") == ip("1:2:3:4:5:6:7:0"));
  CHECK(ip("::2:3:4:5:6:7:8") == ip("0:2:3:4:5:6:7:8"));
  CHECK(ip("ABCD:EF01:2345:6789:abcd:ef01:2345:6789") ==
        ip("abcd:ef01:2345:6789:ABCD:EF01:2345:6789"));
  CHECK(ip("::ffff:1.2.3.4") ==
        ip_address::v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4}));
  CHECK(ip("::FFFF:1.2.3.4") == ip("::ffff:102:304"));
  CHECK(ip("::1.2.3.4") == ip("::102:304"));
  CHECK(ip("1:2:3:4:5:6:1.2.3.4") == ip("1:2:3:4:5:6:102:304"));
  CHECK(ip("1::1.2.3.4") == ip("1::102:304"));
  CHECK(ip("::ffff:1.2.3.4").bytes().size() == 16);
}

TEST_CASE("endpoint::parse accepts IPv4 and bracketed IPv6 with a port") {
  const auto a = ep("192.0.2.1:8080");
  CHECK(a.address() == ip_address::v4({192, 0, 2, 1}));
  CHECK(a.port() == 8080);
  CHECK(ep("1.2.3.4:1").port() == 1);
  CHECK(ep("1.2.3.4:65535").port() == 65535);
  const auto b = ep("[2001:db8::1]:443");
  CHECK(b.address() == ip("2001:db8::1"));
  CHECK(b.port() == 443);
  CHECK(ep("[::1]:80").address() == ip("::1"));
  CHECK(ep("[::]:80").address() == ip_address::v6({}));
  CHECK(ep("[::ffff:1.2.3.4]:80").address() == ip("::ffff:1.2.3.4"));
  CHECK(ep("[2001:DB8::1]:1") == endpoint(ip("2001:db8::1"), 1));
}

TEST_CASE("port 0 is rejected unless port_zero::allow") {
  const auto e = error_of(endpoint::parse("1.2.3.4:0"));
  CHECK(e.code == errc::out_of_range);
  CHECK(e.message.find("port 0") != std::string::npos);
  CHECK(error_of(endpoint::parse("[::1]:0", port_zero::reject)).code == errc::out_of_range);
  CHECK(ep("1.2.3.4:0", port_zero::allow) == endpoint(ip("1.2.3.4"), 0));
  CHECK(ep("[::1]:0", port_zero::allow) == endpoint(ip("::1"), 0));
  // allow only lifts the zero rule: everything else is still checked.
  CHECK(error_of(endpoint::parse("1.2.3.4:65536", port_zero::allow)).code == errc::out_of_range);
  CHECK(error_of(endpoint::parse("1.2.3.4:x", port_zero::allow)).code == errc::invalid_argument);
  // The message states the range that applies.
  CHECK(error_of(endpoint::parse("1.2.3.4:x", port_zero::allow)).message.find("0..65535") !=
        std::string::npos);
  CHECK(error_of(endpoint::parse("1.2.3.4:x")).message.find("1..65535") != std::string::npos);
}

// ---------------------------------------------------------------------------------------
// Rejected forms

TEST_CASE("ip_address::parse rejects malformed text with a message naming the problem") {
  struct bad {
    std::string_view text;
    std::string_view word;  // a distinctive part of the message
  };
  const bad cases[] = {
      {"", "empty"},
      {"256.1.1.1", "0..255"},
      {"1.2.3.256", "'256'"},
      {"01.2.3.4", "leading zero"},
      {"1.2.3.00", "leading zero"},
      {"1.2.3", "four dotted parts"},
      {"1", "four dotted parts"},
      {"1.2.3.4.5", "four dotted parts"},
      {"1..2.3", "empty part"},
      {".1.2.3", "empty part"},
      {"1.2.3.", "empty part"},
      {"-1.2.3.4", "'-1'"},
      {"+1.2.3.4", "'+1'"},
      {" 1.2.3.4", "bad part"},
      {"1.2.3.4 ", "bad part"},
      {"0x1.2.3.4", "'0x1'"},
      {"localhost", "IPv4 address 'localhost'"},
      {"example.com", "IPv4 address 'example.com'"},
      {"1::2::3", "more than one '::'"},
      {":::", "more than one '::'"},
      {"::1::", "more than one '::'"},
      {"1:2:3:4:5:6:7:8:9", "too many groups"},
      {"1:2:3:4:5:6:7:1.2.3.4", "too many groups"},
      {"1:2:3:4::5:6:7:8", "too many groups"},
      {"1:2:3:4:5:6::1.2.3.4", "too many groups"},
      {"1:2:3:4:5:6:7", "fewer than 8 groups"},
      {"1:2:3:4:5:1.2.3.4", "fewer than 8 groups"},
      {"12345::", "longer than 4 hex digits"},
      {"::00000", "longer than 4 hex digits"},
      {"::g", "non-hex"},
      {"::1x", "non-hex"},
      {"[::1]", "non-hex"},
      {"::-1", "non-hex"},
      {"1.2.3.4::", "not at the end"},
      {"::1.2.3.4:5", "not at the end"},
      {"1:2:3:4:5:1.2.3.4:6:7", "not at the end"},
      {"::01.2.3.4", "leading zero"},
      {"::1.2.3", "four dotted parts"},
      {"::256.0.0.0", "0..255"},
      {"fe80::1%eth0", "zone id"},
      {"fe80::1%1", "zone id"},
      {":1:2:3:4:5:6:7", "empty group"},
      {"1:2:3:4:5:6:7:", "empty group"},
      {"1:", "empty group"},
      {":", "empty group"},
      {"::1:", "empty group"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.text));
    const auto r = ip_address::parse(c.text);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == errc::invalid_argument);
    CAPTURE(r.error().message);
    CHECK(r.error().message.find(c.word) != std::string::npos);
    CHECK(printable(r.error().message));
  }
}

TEST_CASE("endpoint::parse rejects malformed text with a message naming the problem") {
  struct bad {
    std::string_view text;
    errc code;
    std::string_view word;
  };
  const bad cases[] = {
      {"", errc::invalid_argument, "empty"},
      {"1.2.3.4", errc::invalid_argument, "missing ':port'"},
      {"1.2.3.4:", errc::invalid_argument, "decimal number"},
      {"1.2.3.4:0", errc::out_of_range, "port 0"},
      {"1.2.3.4:65536", errc::out_of_range, "above 65535"},
      {"1.2.3.4:70000", errc::out_of_range, "'70000'"},
      {"1.2.3.4:99999999999999999999", errc::out_of_range, "above 65535"},
      {"1.2.3.4:999999999999999999999999", errc::out_of_range, "above 65535"},
      {"1.2.3.4:80x", errc::invalid_argument, "decimal number"},
      {"1.2.3.4:+80", errc::invalid_argument, "decimal number"},
      {"1.2.3.4:-80", errc::invalid_argument, "decimal number"},
      {"1.2.3.4: 80", errc::invalid_argument, "decimal number"},
      {"1.2.3.4:80 ", errc::invalid_argument, "decimal number"},
      {"1.2.3.4:0x50", errc::invalid_argument, "decimal number"},
      {"1.2.3.4:http", errc::invalid_argument, "'http'"},
      {"256.1.1.1:80", errc::invalid_argument, "0..255"},
      {"01.2.3.4:80", errc::invalid_argument, "leading zero"},
      {"1.2.3:80", errc::invalid_argument, "four dotted parts"},
      {"1.2.3.4.5:80", errc::invalid_argument, "four dotted parts"},
      {"1..2.3:80", errc::invalid_argument, "empty part"},
      {":80", errc::invalid_argument, "empty IP address"},
      {"::1:80", errc::invalid_argument, "bracket"},
      {"2001:db8::1:443", errc::invalid_argument, "bracket"},
      {"[::1:80", errc::invalid_argument, "closing ']'"},
      {"[::1", errc::invalid_argument, "closing ']'"},
      {"[1.2.3.4]:80", errc::invalid_argument, "only for IPv6"},
      {"[]:80", errc::invalid_argument, "only for IPv6"},
      {"[localhost]:80", errc::invalid_argument, "only for IPv6"},
      {"[fe80::1%eth0]:80", errc::invalid_argument, "zone id"},
      {"[::1]x:80", errc::invalid_argument, "after the ']'"},
      {"[::1]", errc::invalid_argument, "after the ']'"},
      {"[::1] :80", errc::invalid_argument, "after the ']'"},
      {"[::1]:", errc::invalid_argument, "decimal number"},
      {"[::1]:65536", errc::out_of_range, "above 65535"},
      {"[::1]:80x", errc::invalid_argument, "decimal number"},
      {"[1::2::3]:80", errc::invalid_argument, "more than one '::'"},
      {"[1:2:3:4:5:6:7:8:9]:80", errc::invalid_argument, "too many groups"},
      {"[12345::1]:80", errc::invalid_argument, "longer than 4 hex digits"},
      {"[::g]:80", errc::invalid_argument, "non-hex"},
      {"[1.2.3.4::]:80", errc::invalid_argument, "not at the end"},
      {"[[::1]]:80", errc::invalid_argument, "after the ']'"},
      {"localhost:80", errc::invalid_argument, "'localhost'"},
      {"example.com:443", errc::invalid_argument, "'example.com'"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.text));
    const auto r = endpoint::parse(c.text);
    REQUIRE_FALSE(r.has_value());
    CAPTURE(r.error().message);
    CHECK(r.error().code == c.code);
    CHECK(r.error().message.find(c.word) != std::string::npos);
    CHECK(printable(r.error().message));
  }
}

TEST_CASE("an address error inside an endpoint keeps the address parser's message") {
  const auto addr = error_of(ip_address::parse("01.2.3.4"));
  const auto e = error_of(endpoint::parse("01.2.3.4:80"));
  CHECK(e.code == errc::invalid_argument);
  CHECK(e.message.find(addr.message) != std::string::npos);
  CHECK(e.message.find("'01.2.3.4:80'") != std::string::npos);
}

TEST_CASE("embedded NUL bytes are rejected and escaped in the message") {
  using namespace std::string_view_literals;
  for (std::string_view text : {"1.2.3.4\0"sv, "1.2\0.3.4"sv, "\0"sv, "::1\0"sv, "::\0:1"sv}) {
    CAPTURE(text.size());
    const auto e = error_of(ip_address::parse(text));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("\\x00") != std::string::npos);
    CHECK(e.message.find('\0') == std::string::npos);
    CHECK(printable(e.message));
  }
  for (std::string_view text :
       {"1.2.3.4\0:80"sv, "1.2.3.4:80\0"sv, "1.2.3.4:8\0"sv, "[::1\0]:80"sv, "[::1]\0:80"sv}) {
    CAPTURE(text.size());
    const auto e = error_of(endpoint::parse(text));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("\\x00") != std::string::npos);
    CHECK(e.message.find('\0') == std::string::npos);
    CHECK(printable(e.message));
  }
}

TEST_CASE("a huge input is an error with a short message") {
  const std::string ones(1 << 20, '1');
  const auto check_short = [](const lbkit::error& e, std::size_t limit = 300) {
    CAPTURE(e.message.substr(0, 1000));
    CHECK(e.message.size() < limit);
    CHECK(printable(e.message));
  };
  {
    const auto e = error_of(ip_address::parse(ones));
    CHECK(e.code == errc::invalid_argument);
    check_short(e);
  }
  {
    const auto e = error_of(endpoint::parse(ones));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("missing ':port'") != std::string::npos);
    check_short(e);
  }
  {
    const auto e = error_of(endpoint::parse(ones + ":80"));
    CHECK(e.code == errc::invalid_argument);
    check_short(e);
  }
  {
    const auto e = error_of(endpoint::parse("1.2.3.4:" + ones));
    CHECK(e.code == errc::out_of_range);
    check_short(e);
  }
  {
    std::string groups;
    for (int i = 0; i < (1 << 18); ++i) groups += "1:";
    groups += '1';
    const auto e = error_of(ip_address::parse(groups));
    CHECK(e.message.find("too many groups") != std::string::npos);
    check_short(e);
    check_short(error_of(endpoint::parse('[' + groups + "]:80")));
  }
  {
    // A megabyte of control bytes. Each quote of untrusted text shows at most 64 input bytes,
    // each escaped to at most 4 characters ("\x01"), plus 2 quote marks and "...": at most
    // 261 characters. The worst message below quotes three such strings (the endpoint, the
    // address, the bad part) around under 150 characters of fixed text: 3 * 261 + 150 = 933,
    // so the bound is 1000 however long the input is.
    const std::string controls(1 << 20, '\x01');
    check_short(error_of(ip_address::parse(controls)), 1000);
    check_short(error_of(endpoint::parse(controls)), 1000);
    const auto e = error_of(endpoint::parse("0" + controls + ".1.2.3:80"));
    CHECK(e.message.find("leading zero") != std::string::npos);
    check_short(e, 1000);
  }
}

// ---------------------------------------------------------------------------------------
// Canonical text

TEST_CASE("to_string gives RFC 5952 canonical IPv6 text") {
  struct canon {
    std::string_view in;
    std::string_view want;
  };
  const canon cases[] = {
      {"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},  // first of two equal runs (§4.2.3)
      {"2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"},  // no leading zeros (§4.1)
      {"2001:DB8::1", "2001:db8::1"},                              // lower case (§4.3)
      {"0:0:0:0:0:0:0:0", "::"},
      {"0:0:0:0:0:0:0:1", "::1"},
      {"1:0:0:0:0:0:0:0", "1::"},
      {"1:0:0:2:0:0:0:3", "1:0:0:2::3"},  // longest run wins (§4.2.3)
      {"1:0:0:0:2:0:0:3", "1::2:0:0:3"},
      {"0:0:1:0:0:0:0:2", "0:0:1::2"},
      {"1:2:3:4:5:6:0:0", "1:2:3:4:5:6::"},
      {"2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},  // one zero group stays (§4.2.2)
      {"0:1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7"},
      {"1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"},
      {"abcd:ef01:2345:6789:ABCD:EF01:2345:6789", "abcd:ef01:2345:6789:abcd:ef01:2345:6789"},
      {"0001:0010:0100:1000:0:0:0:0", "1:10:100:1000::"},
      {"::ffff:192.0.2.1", "::ffff:192.0.2.1"},  // IPv4-mapped keeps the dotted quad (§5)
      {"0:0:0:0:0:FFFF:C000:0201", "::ffff:192.0.2.1"},
      {"::ffff:0:0", "::ffff:0.0.0.0"},
      {"::ffff:255.255.255.255", "::ffff:255.255.255.255"},
      {"::1.2.3.4", "::102:304"},                // IPv4-compatible: deprecated, shown in hex
      {"::ffff:0:1.2.3.4", "::ffff:0:102:304"},  // not mapped
      {"::1:ffff:1.2.3.4", "::1:ffff:102:304"},  // not mapped
      {"1::ffff:1.2.3.4", "1::ffff:102:304"},    // not mapped
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.in));
    const auto a = ip(c.in);
    CHECK(a.to_string() == c.want);
    CHECK(ip(a.to_string()) == a);
  }
}

TEST_CASE("to_string of IPv4 and of endpoints") {
  CHECK(ip("0.0.0.0").to_string() == "0.0.0.0");
  CHECK(ip("255.255.255.255").to_string() == "255.255.255.255");
  CHECK(ip("10.0.100.1").to_string() == "10.0.100.1");
  CHECK(ip_address().to_string() == "0.0.0.0");
  CHECK(endpoint().to_string() == "0.0.0.0:0");
  CHECK(ep("192.0.2.1:8080").to_string() == "192.0.2.1:8080");
  CHECK(ep("[2001:DB8:0:0::1]:443").to_string() == "[2001:db8::1]:443");
  CHECK(ep("[::ffff:1.2.3.4]:65535").to_string() == "[::ffff:1.2.3.4]:65535");
  CHECK(ep("[::]:1").to_string() == "[::]:1");
  // parse(to_string()) gives the endpoint back, port 0 included when allowed.
  address_generator gen(99);
  for (int i = 0; i < 2000; ++i) {
    const std::uint16_t port = static_cast<std::uint16_t>(gen.below(65536));
    const endpoint e =
        i % 2 ? endpoint(ip_address::v6(gen.v6()), port) : endpoint(ip_address::v4(gen.v4()), port);
    const auto back = endpoint::parse(e.to_string(), port_zero::allow);
    REQUIRE(back.has_value());
    CHECK(*back == e);
  }
}

// ---------------------------------------------------------------------------------------
// Differential tests against the C library (glibc inet_pton / inet_ntop)

TEST_CASE("IPv6 parsing and formatting agree with inet_pton and inet_ntop") {
  // glibc's inet_ntop prints an address whose first 96 bits are zero and whose 7th group is
  // not zero in the IPv4-compatible dotted form ("::1.2.3.4"). RFC 4291 §2.5.5.1 deprecates
  // IPv4-compatible addresses, and lbkit documents the dotted form for IPv4-mapped addresses
  // only (RFC 5952 §5), so for those we print hex groups ("::102:304") and check that exact
  // text instead. Every other address must print byte-for-byte as glibc prints it (glibc also
  // follows RFC 5952: lower case, no leading zeros, first longest run of >= 2 zero groups).
  address_generator gen(0x1b7c0ffee);
  constexpr int n = 100000;
  int parse_mismatch = 0, round_trip_mismatch = 0, text_mismatch = 0, compat_seen = 0,
      premise_broken = 0, mapped_seen = 0, compressed_seen = 0;
  std::vector<std::string> examples;
  for (int i = 0; i < n; ++i) {
    const auto b = gen.v6();
    const auto g = groups_of(b);
    const std::string theirs = ntop6(b);

    // 1. Our parser reads glibc's text to the same bytes as glibc's parser.
    std::array<std::uint8_t, 16> c_parsed{};
    if (inet_pton(AF_INET6, theirs.c_str(), c_parsed.data()) != 1 || c_parsed != b) {
      FAIL("inet_pton does not read back inet_ntop's " << theirs);
    }
    const auto parsed = ip_address::parse(theirs);
    if (!parsed || !parsed->is_v6() || !std::ranges::equal(parsed->bytes(), b)) {
      if (++parse_mismatch <= 5) examples.push_back("parse(" + theirs + ")");
      continue;
    }

    // 2. Our text parses back, by us and by glibc.
    const std::string ours = ip_address::v6(b).to_string();
    const auto back = ip_address::parse(ours);
    std::array<std::uint8_t, 16> c_back{};
    if (!back || *back != ip_address::v6(b) ||
        inet_pton(AF_INET6, ours.c_str(), c_back.data()) != 1 || c_back != b) {
      if (++round_trip_mismatch <= 5) examples.push_back("round trip of " + ours);
    }

    // 3. Our text is glibc's text, except for the IPv4-compatible form described above.
    const bool first_96_zero = std::all_of(g.begin(), g.begin() + 6, [](auto x) { return x == 0; });
    std::string expected = theirs;
    if (first_96_zero && g[6] != 0) {
      ++compat_seen;
      if (theirs.find('.') == std::string::npos) ++premise_broken;  // glibc printed hex after all
      expected = "::" + hex_group(g[6], false, false) + ':' + hex_group(g[7], false, false);
    }
    if (ours != expected) {
      if (++text_mismatch <= 5) examples.push_back("ours " + ours + " vs " + expected);
    }
    mapped_seen += ours.rfind("::ffff:", 0) == 0 && ours.find('.') != std::string::npos;
    compressed_seen += ours.find("::") != std::string::npos;
  }
  std::string all;
  for (const auto& e : examples) all += e + "\n";
  INFO(all);
  CHECK(parse_mismatch == 0);
  CHECK(round_trip_mismatch == 0);
  CHECK(text_mismatch == 0);
  CHECK(premise_broken == 0);
  // The generator exercised what it is meant to.
  CHECK(compat_seen > 1000);
  CHECK(mapped_seen > 1000);
  CHECK(compressed_seen > n / 2);
}

TEST_CASE("IPv4 parsing and formatting agree with inet_pton and inet_ntop") {
  address_generator gen(4);
  int mismatches = 0;
  std::vector<std::string> examples;
  for (int i = 0; i < 20000; ++i) {
    const auto b = gen.v4();
    char buf[INET_ADDRSTRLEN];
    REQUIRE(inet_ntop(AF_INET, b.data(), buf, sizeof buf) != nullptr);
    const std::string theirs = buf;
    const auto parsed = ip_address::parse(theirs);
    const std::string ours = ip_address::v4(b).to_string();
    if (!parsed || *parsed != ip_address::v4(b) || ours != theirs) {
      if (++mismatches <= 5) examples.push_back(theirs + " / " + ours);
    }
  }
  std::string all;
  for (const auto& e : examples) all += e + "\n";
  INFO(all);
  CHECK(mismatches == 0);
}

TEST_CASE("the parser accepts exactly what inet_pton accepts, on mutated addresses") {
  // Valid addresses in many spellings, then 1-3 random insertions, deletions or replacements
  // from the characters that matter to the grammar. A string with a ':' is compared with
  // inet_pton(AF_INET6), otherwise with inet_pton(AF_INET): the same dispatch as
  // ip_address::parse. Both must accept or both reject, and agree on the bytes.
  //
  // Deliberate choices that happen to coincide with glibc (checked here, not special-cased):
  // leading zeros in an IPv4 part ("01.2.3.4") are rejected by both — lbkit because some
  // parsers read them as octal, glibc's inet_pton4 because it takes only canonical decimal;
  // zone ids ("fe80::1%eth0") are rejected by both, as inet_pton does not take them either.
  static constexpr std::string_view alphabet = ":.0123456789abcdefABCDEFxg%[] ";
  address_generator gen(0x5eed5eed);
  constexpr int n = 60000;
  int disagreements = 0, accepted = 0, rejected = 0;
  std::vector<std::string> examples;
  for (int i = 0; i < n; ++i) {
    std::string s;
    const auto form = gen.below(8);
    if (form == 7) {
      const auto b = gen.v4();
      s = dotted(b.data());
    } else {
      const auto b = gen.v6();
      switch (form) {
        case 0:
          s = ip_address::v6(b).to_string();
          break;
        case 1:
          s = ntop6(b);
          break;
        case 2:
          s = full_form(b, false, false, false);
          break;
        case 3:
          s = full_form(b, true, true, false);
          break;
        case 4:
          s = full_form(b, gen.below(2) == 0, gen.below(2) == 0, true);
          break;
        case 5: {  // compressed with a dotted tail, e.g. "1::2:1.2.3.4" or "::ffff:1.2.3.4"
          // Format the first 6 groups canonically with a placeholder tail (18.52.86.120 is
          // 1234:5678), then swap the placeholder for the real last 32 bits, dotted.
          auto head = b;
          const std::uint8_t marker[4] = {0x12, 0x34, 0x56, 0x78};
          std::copy(marker, marker + 4, head.begin() + 12);
          s = ip_address::v6(head).to_string();
          const std::string tail = s.find('.') != std::string::npos ? "18.52.86.120" : "1234:5678";
          if (s.size() <= tail.size() ||
              s.compare(s.size() - tail.size(), tail.size(), tail) != 0) {
            FAIL("unexpected placeholder text " << s);
          }
          s.erase(s.size() - tail.size());
          s += dotted(b.data() + 12);
          break;
        }
        default:
          s = ntop6(b);
          break;
      }
    }
    for (auto m = 1 + gen.below(3); m > 0; --m) {
      const char c = alphabet[gen.below(alphabet.size())];
      const auto op = gen.below(3);
      if (op == 0 || s.empty()) {
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(gen.below(s.size() + 1)), c);
      } else if (op == 1) {
        s.erase(gen.below(s.size()), 1);
      } else {
        s[gen.below(s.size())] = c;
      }
    }

    const bool v6 = s.find(':') != std::string::npos;
    std::array<std::uint8_t, 16> theirs{};
    const bool c_ok = inet_pton(v6 ? AF_INET6 : AF_INET, s.c_str(), theirs.data()) == 1;
    const auto ours = ip_address::parse(s);
    bool agree = ours.has_value() == c_ok;
    if (agree && c_ok) {
      agree = ours->is_v6() == v6 &&
              std::ranges::equal(ours->bytes(), std::span(theirs.data(), v6 ? 16u : 4u));
    }
    if (!agree) {
      if (++disagreements <= 10) {
        examples.push_back('"' + s + "\" lbkit " + (ours ? "accepts" : "rejects") + ", inet_pton " +
                           (c_ok ? "accepts" : "rejects"));
      }
    }
    (c_ok ? accepted : rejected) += 1;
  }
  std::string all;
  for (const auto& e : examples) all += e + "\n";
  INFO(all);
  CHECK(disagreements == 0);
  // Both outcomes are well represented, so the comparison means something.
  CHECK(accepted > n / 10);
  CHECK(rejected > n / 4);
}

// ---------------------------------------------------------------------------------------
// Sockets API

TEST_CASE("to_sockaddr and from_sockaddr round trip") {
  SUBCASE("IPv4") {
    const auto e = ep("192.0.2.1:8080");
    sockaddr_storage ss;
    std::memset(&ss, 0xAA, sizeof ss);
    const socklen_t len = e.to_sockaddr(ss);
    CHECK(len == sizeof(sockaddr_in));
    sockaddr_in in;
    std::memcpy(&in, &ss, sizeof in);
    CHECK(in.sin_family == AF_INET);
    CHECK(in.sin_port == htons(8080));
    in_addr want{};
    REQUIRE(inet_pton(AF_INET, "192.0.2.1", &want) == 1);
    CHECK(in.sin_addr.s_addr == want.s_addr);
    const auto back = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    REQUIRE(back.has_value());
    CHECK(*back == e);
    // A caller that passes the whole storage's size is fine too.
    const auto whole = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), sizeof ss);
    REQUIRE(whole.has_value());
    CHECK(*whole == e);
  }
  SUBCASE("IPv6") {
    const auto e = ep("[2001:db8::42]:443");
    sockaddr_storage ss;
    std::memset(&ss, 0xAA, sizeof ss);
    const socklen_t len = e.to_sockaddr(ss);
    CHECK(len == sizeof(sockaddr_in6));
    sockaddr_in6 in6;
    std::memcpy(&in6, &ss, sizeof in6);
    CHECK(in6.sin6_family == AF_INET6);
    CHECK(in6.sin6_port == htons(443));
    CHECK(in6.sin6_flowinfo == 0);
    CHECK(in6.sin6_scope_id == 0);
    in6_addr want{};
    REQUIRE(inet_pton(AF_INET6, "2001:db8::42", &want) == 1);
    CHECK(std::memcmp(&in6.sin6_addr, &want, sizeof want) == 0);
    const auto back = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    REQUIRE(back.has_value());
    CHECK(*back == e);
  }
  SUBCASE("random endpoints") {
    address_generator gen(7);
    for (int i = 0; i < 2000; ++i) {
      const auto port = static_cast<std::uint16_t>(gen.below(65536));
      const endpoint e = i % 2 ? endpoint(ip_address::v6(gen.v6()), port)
                               : endpoint(ip_address::v4(gen.v4()), port);
      sockaddr_storage ss;
      const socklen_t len = e.to_sockaddr(ss);
      const auto back = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
      REQUIRE(back.has_value());
      CHECK(*back == e);
    }
  }
  SUBCASE("from a socket address built by hand") {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(53);
    REQUIRE(inet_pton(AF_INET, "10.1.2.3", &in.sin_addr) == 1);
    const auto r = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&in), sizeof in);
    REQUIRE(r.has_value());
    CHECK(*r == ep("10.1.2.3:53"));

    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(8443);
    in6.sin6_flowinfo = htonl(0x12345);  // flow labels do not affect the endpoint
    REQUIRE(inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr) == 1);
    const auto r6 = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&in6), sizeof in6);
    REQUIRE(r6.has_value());
    CHECK(*r6 == ep("[fe80::1]:8443"));
  }
}

TEST_CASE("from_sockaddr rejects what it cannot represent") {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(80);
  const auto* sa4 = reinterpret_cast<const sockaddr*>(&in);
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  in6.sin6_addr.s6_addr[15] = 1;
  const auto* sa6 = reinterpret_cast<const sockaddr*>(&in6);

  CHECK(error_of(endpoint::from_sockaddr(nullptr, sizeof(sockaddr_in))).code ==
        errc::invalid_argument);
  CHECK(error_of(endpoint::from_sockaddr(nullptr, 0)).message.find("missing") != std::string::npos);
  CHECK_FALSE(endpoint::from_sockaddr(sa4, 0).has_value());
  CHECK_FALSE(endpoint::from_sockaddr(sa4, 1).has_value());
  {
    const auto e = error_of(endpoint::from_sockaddr(sa4, sizeof(sockaddr_in) - 1));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("too short") != std::string::npos);
  }
  {
    const auto e = error_of(endpoint::from_sockaddr(sa6, sizeof(sockaddr_in6) - 1));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("too short") != std::string::npos);
  }
  // sizeof(sockaddr_in) is enough for AF_INET but not for AF_INET6.
  CHECK_FALSE(endpoint::from_sockaddr(sa6, sizeof(sockaddr_in)).has_value());
  {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::strcpy(un.sun_path, "/tmp/sock");
    const auto e =
        error_of(endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&un), sizeof un));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("neither AF_INET nor AF_INET6") != std::string::npos);
  }
  {
    sockaddr_storage ss{};
    ss.ss_family = AF_UNSPEC;
    CHECK_FALSE(
        endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), sizeof ss).has_value());
  }
  {
    sockaddr_in6 scoped = in6;
    REQUIRE(inet_pton(AF_INET6, "fe80::1", &scoped.sin6_addr) == 1);
    scoped.sin6_scope_id = 2;
    const auto e = error_of(
        endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&scoped), sizeof scoped));
    CHECK(e.code == errc::invalid_argument);
    CHECK(e.message.find("scope") != std::string::npos);
  }
  // The unscoped originals are accepted, so the rejections above are for the stated reason.
  CHECK(endpoint::from_sockaddr(sa4, sizeof in).has_value());
  CHECK(endpoint::from_sockaddr(sa6, sizeof in6).has_value());
}

// ---------------------------------------------------------------------------------------
// Ordering, equality, hashing

TEST_CASE("every IPv4 address sorts before every IPv6 address") {
  CHECK(ip("255.255.255.255") < ip("::"));
  CHECK(ip("1.2.3.4") < ip("::ffff:1.2.3.4"));
  CHECK(ip("1.2.3.4") != ip("::ffff:1.2.3.4"));
  CHECK(ip("1.2.3.4") != ip("::1.2.3.4"));
  CHECK(ip("0.0.0.0") != ip("::"));
  CHECK(endpoint(ip("255.255.255.255"), 65535) < endpoint(ip("::"), 1));

  address_generator gen(11);
  std::vector<ip_address> all;
  for (int i = 0; i < 500; ++i) {
    all.push_back(ip_address::v4(gen.v4()));
    all.push_back(ip_address::v6(gen.v6()));
  }
  std::sort(all.begin(), all.end());
  const auto first_v6 =
      std::find_if(all.begin(), all.end(), [](const auto& a) { return a.is_v6(); });
  CHECK(std::distance(all.begin(), first_v6) == 500);
  CHECK(std::all_of(first_v6, all.end(), [](const auto& a) { return a.is_v6(); }));
  // Within a family the order is the byte order (network order, most significant first).
  CHECK(std::is_sorted(all.begin(), first_v6, [](const auto& a, const auto& b) {
    return std::lexicographical_compare(a.bytes().begin(), a.bytes().end(), b.bytes().begin(),
                                        b.bytes().end());
  }));
  CHECK(std::is_sorted(first_v6, all.end(), [](const auto& a, const auto& b) {
    return std::lexicographical_compare(a.bytes().begin(), a.bytes().end(), b.bytes().begin(),
                                        b.bytes().end());
  }));
  CHECK(ip("9.0.0.1") < ip("10.0.0.1"));  // numeric, not textual
  CHECK(ip("1.2.3.4") < ip("1.2.3.5"));
  CHECK(ip("::ffff") < ip("::1:0"));
  CHECK(ip("fe80::") > ip("2001:db8::"));
}

TEST_CASE("endpoints order by address, then port") {
  CHECK(ep("1.2.3.4:80") < ep("1.2.3.4:81"));
  CHECK(ep("1.2.3.4:65535") < ep("1.2.3.5:1"));
  CHECK(ep("[::1]:80") < ep("[::1]:443"));
  CHECK(ep("[::1]:443") < ep("[::2]:80"));
  CHECK((ep("1.2.3.4:80") <=> ep("1.2.3.4:80")) == 0);
  CHECK(ep("1.2.3.4:80") == ep("1.2.3.4:80"));
  CHECK(ep("1.2.3.4:80") != ep("1.2.3.4:81"));
}

TEST_CASE("equal endpoints hash equal, and unordered containers work") {
  // Different spellings of one address are one key.
  const std::string_view spellings[] = {"[2001:db8::1]:80", "[2001:DB8:0:0:0:0:0:1]:80",
                                        "[2001:0db8::0:0001]:80"};
  for (auto s : spellings) {
    CHECK(ep(s) == ep(spellings[0]));
    CHECK(std::hash<endpoint>{}(ep(s)) == std::hash<endpoint>{}(ep(spellings[0])));
    CHECK(lbkit::hash_value(ep(s)) == lbkit::hash_value(ep(spellings[0])));
  }
  CHECK(std::hash<ip_address>{}(ip("::ffff:1.2.3.4")) ==
        std::hash<ip_address>{}(ip("::FFFF:102:304")));

  std::unordered_set<endpoint> set;
  address_generator gen(5);
  std::vector<endpoint> inserted;
  for (int i = 0; i < 1000; ++i) {
    const auto port = static_cast<std::uint16_t>(1 + gen.below(4));
    const endpoint e =
        i % 2 ? endpoint(ip_address::v6(gen.v6()), port) : endpoint(ip_address::v4(gen.v4()), port);
    inserted.push_back(e);
    set.insert(e);
    set.insert(*endpoint::parse(e.to_string()));  // a re-parsed copy is the same key
  }
  std::sort(inserted.begin(), inserted.end());
  const auto distinct = std::unique(inserted.begin(), inserted.end()) - inserted.begin();
  CHECK(set.size() == static_cast<std::size_t>(distinct));
  for (const auto& e : inserted) CHECK(set.count(e) == 1);
  CHECK(set.count(endpoint(ip("203.0.113.1"), 9)) == 0);

  std::unordered_set<ip_address> addrs{ip("1.2.3.4"), ip("::ffff:1.2.3.4"), ip("::1.2.3.4"),
                                       ip("1.2.3.4"), ip("::102:304")};
  CHECK(addrs.size() == 3);  // v4, mapped, compatible (== ::102:304)
}

TEST_CASE("hash_value is XXH64 of the address bytes and the big-endian port") {
  address_generator gen(3);
  for (int i = 0; i < 1000; ++i) {
    const auto port = static_cast<std::uint16_t>(gen.below(65536));
    const ip_address a = i % 2 ? ip_address::v6(gen.v6()) : ip_address::v4(gen.v4());
    const endpoint e(a, port);
    const std::uint64_t seed = i % 3 == 0 ? 0 : gen.next();
    std::string layout(a.bytes().begin(), a.bytes().end());
    CHECK(lbkit::hash_value(a, seed) ==
          lbkit::hash_bytes(std::string_view(layout.data(), layout.size()), seed));
    layout += static_cast<char>(port >> 8);
    layout += static_cast<char>(port & 0xff);
    CHECK(layout.size() == (a.is_v4() ? 6u : 18u));
    CHECK(lbkit::hash_value(e, seed) ==
          lbkit::hash_bytes(std::string_view(layout.data(), layout.size()), seed));
    CHECK(std::hash<endpoint>{}(e) == static_cast<std::size_t>(lbkit::hash_value(e)));
    CHECK(std::hash<ip_address>{}(a) == static_cast<std::size_t>(lbkit::hash_value(a)));
  }
  // Pinned examples: the layout is part of lbkit's stable hashing contract.
  const char v4_layout[] = {'\xc0', '\x00', '\x02', '\x01', '\x1f', '\x90'};  // 192.0.2.1:8080
  CHECK(lbkit::hash_value(ep("192.0.2.1:8080")) ==
        lbkit::hash_bytes(std::string_view(v4_layout, 6)));
  CHECK(lbkit::hash_value(ep("1.2.3.4:80")) != lbkit::hash_value(ep("1.2.3.4:81")));
  CHECK(lbkit::hash_value(ep("1.2.3.4:80")) != lbkit::hash_value(ep("1.2.3.4:80"), 1));
}

TEST_CASE("ip_address factories and accessors") {
  constexpr auto a = ip_address::v4({10, 0, 0, 1});
  static_assert(a.is_v4() && !a.is_v6());
  static_assert(a.bytes().size() == 4);
  static_assert(ip_address().is_v4());
  constexpr auto b = ip_address::v6({0xfe, 0x80});
  static_assert(b.is_v6() && b.bytes().size() == 16);
  static_assert(a < b);
  CHECK(bytes_of(a) == std::vector<std::uint8_t>{10, 0, 0, 1});
  CHECK(b.bytes()[0] == 0xfe);
  CHECK(b.bytes()[1] == 0x80);
  CHECK(b.to_string() == "fe80::");
  constexpr endpoint e(a, 80);
  static_assert(e.port() == 80 && e.address() == a);
  static_assert(endpoint().port() == 0);
}

TEST_CASE("ip_address: IPv4-mapped addresses unmap to IPv4, others stay") {
  const auto mapped = *lbkit::ip_address::parse("::ffff:192.0.2.7");
  CHECK(mapped.is_v4_mapped());
  CHECK(mapped.unmapped() == *lbkit::ip_address::parse("192.0.2.7"));
  for (const char* text :
       {"192.0.2.7", "::1", "::192.0.2.7", "::fffe:192.0.2.7", "1::ffff:c000:207"}) {
    const auto a = *lbkit::ip_address::parse(text);
    CHECK_FALSE(a.is_v4_mapped());
    CHECK(a.unmapped() == a);
  }
}
