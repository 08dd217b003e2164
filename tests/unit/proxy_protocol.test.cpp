// SPDX-License-Identifier: MIT
// proxy_protocol: CRC32C known answers, the spec's examples byte for byte, round trips of every
// version, family, transport and command, incremental parsing, early rejection with a reason,
// checksum corruption, and encoder errors.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/crc32c.hpp>
#include <lbkit/endpoint.hpp>
#include <lbkit/net/proxy_protocol.hpp>

using lbkit::endpoint;
using lbkit::errc;
using lbkit::parse_status;
using lbkit::proxy_command;
using lbkit::proxy_family;
using lbkit::proxy_header;
using lbkit::proxy_parse_options;
using lbkit::proxy_parse_result;
using lbkit::proxy_tlv;
using lbkit::proxy_transport;
using lbkit::proxy_version;

namespace {

using bytes = std::vector<std::uint8_t>;

bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

// Raw bytes from numbers, for hand-assembled v2 headers.
bytes raw(std::initializer_list<int> values) {
  bytes out;
  for (int v : values) out.push_back(static_cast<std::uint8_t>(v));
  return out;
}

bytes cat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const bytes signature =
    raw({0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A});

std::string as_string(const bytes& b) { return std::string(b.begin(), b.end()); }

endpoint ep(std::string_view s) {
  auto r = endpoint::parse(s, lbkit::port_zero::allow);
  if (!r) FAIL("endpoint::parse(\"" << std::string(s) << "\") failed: " << r.error().message);
  return *r;
}

proxy_parse_result parse(const bytes& b, const proxy_parse_options& o = {}) {
  return lbkit::parse_proxy_header(std::span<const std::uint8_t>(b), o);
}

bytes encode(const proxy_header& h) {
  auto r = lbkit::encode_proxy_header(h);
  if (!r) FAIL("encode_proxy_header(" << lbkit::to_string(h) << ") failed: " << r.error().message);
  return *r;
}

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
  });
}

void require_complete(const proxy_parse_result& r, std::size_t size, const proxy_header& h) {
  INFO("error: " << r.error);
  REQUIRE(r.status == parse_status::complete);
  CHECK(r.size == size);
  CHECK(r.value == h);
  if (!(r.value == h)) {
    MESSAGE("got " << lbkit::to_string(r.value) << ", want " << lbkit::to_string(h));
  }
}

// `h` with a CRC32C TLV.
proxy_header with_crc(proxy_header h) {
  h.crc32c = true;
  return h;
}

// Every proper prefix is incomplete with a hint above its length and at most the header's
// size; feeding one byte at a time completes exactly at the end, with the same header.
void check_prefixes(const bytes& wire, const proxy_header& h, bool crc = false) {
  for (std::size_t k = 0; k < wire.size(); ++k) {
    const auto r = parse(bytes(wire.begin(), wire.begin() + static_cast<std::ptrdiff_t>(k)));
    CAPTURE(k);
    INFO("error: " << r.error);
    REQUIRE(r.status == parse_status::incomplete);
    CHECK(r.size > k);
    CHECK(r.size <= wire.size());
  }
  bytes fed;
  for (std::size_t k = 0; k < wire.size(); ++k) {
    fed.push_back(wire[k]);
    const auto r = parse(fed);
    if (k + 1 < wire.size()) {
      REQUIRE(r.status == parse_status::incomplete);
    } else {
      require_complete(r, wire.size(), crc ? with_crc(h) : h);
    }
  }
}

std::vector<proxy_tlv> sample_tlvs() {
  return {
      {lbkit::proxy_tlv_alpn, "h2"},
      {lbkit::proxy_tlv_authority, "example.com"},
      {lbkit::proxy_tlv_unique_id, std::string(16, '\x5a')},
      {lbkit::proxy_tlv_noop, ""},
      {lbkit::proxy_tlv_ssl, std::string("\x01\x00\x00\x00\x00\x21\x00\x07TLSv1.3", 15)},
      {0xE0, std::string("\x00\xff\r\n\x00", 5)},
      {lbkit::proxy_tlv_netns, "blue"},
  };
}

struct sample {
  std::string name;
  proxy_header header;
};

// Headers in the form the decoder produces them, so that encode + parse gives them back.
std::vector<sample> samples() {
  std::vector<sample> out;
  const auto ip = [](proxy_version v, proxy_transport t, const char* s, const char* d) {
    proxy_header h;
    h.version = v;
    h.transport = t;
    h.source = ep(s);
    h.destination = ep(d);
    h.family = h.source.address().is_v4() ? proxy_family::inet : proxy_family::inet6;
    return h;
  };
  out.push_back({"v1 TCP4", ip(proxy_version::v1, proxy_transport::stream, "192.168.0.1:56324",
                               "192.168.0.11:443")});
  out.push_back({"v1 TCP6", ip(proxy_version::v1, proxy_transport::stream, "[2001:db8::1]:65535",
                               "[::ffff:10.0.0.1]:0")});
  {
    proxy_header h;
    h.version = proxy_version::v1;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    out.push_back({"v1 UNKNOWN", h});
  }
  std::vector<sample> v2;
  v2.push_back({"v2 TCP4", ip(proxy_version::v2, proxy_transport::stream, "192.168.0.1:56324",
                              "192.168.0.11:443")});
  v2.push_back(
      {"v2 UDP4", ip(proxy_version::v2, proxy_transport::dgram, "10.1.2.3:53", "10.3.2.1:5353")});
  v2.push_back({"v2 TCP6", ip(proxy_version::v2, proxy_transport::stream,
                              "[2001:db8:0:1::ff]:40000", "[fe80::1]:443")});
  v2.push_back({"v2 UDP6", ip(proxy_version::v2, proxy_transport::dgram, "[::]:0",
                              "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")});
  for (const auto t : {proxy_transport::stream, proxy_transport::dgram}) {
    proxy_header h;
    h.family = proxy_family::unix_socket;
    h.transport = t;
    h.source_path = "/run/client.sock";
    h.destination_path = std::string(108, 'd');  // fills the field: no NUL on the wire
    v2.push_back({t == proxy_transport::stream ? "v2 UNIX stream" : "v2 UNIX dgram", h});
  }
  {
    proxy_header h;
    h.family = proxy_family::unix_socket;
    h.transport = proxy_transport::stream;  // empty paths, e.g. unnamed sockets
    v2.push_back({"v2 UNIX unnamed", h});
  }
  {
    proxy_header h;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    v2.push_back({"v2 PROXY UNSPEC", h});
  }
  {
    proxy_header h;
    h.command = proxy_command::local;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    v2.push_back({"v2 LOCAL", h});
  }
  for (auto s : v2) {
    out.push_back(s);
    s.name += " + TLVs";
    s.header.tlvs = sample_tlvs();
    out.push_back(s);
  }
  return out;
}

}  // namespace

TEST_CASE("crc32c: RFC 3720 B.4 known answers, the check value, chaining") {
  bytes zeros(32, 0x00), ones(32, 0xff), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
    down[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(31 - i);
  }
  CHECK(lbkit::crc32c(zeros) == 0x8A9136AAu);
  CHECK(lbkit::crc32c(ones) == 0x62A8AB43u);
  CHECK(lbkit::crc32c(up) == 0x46DD794Eu);
  CHECK(lbkit::crc32c(down) == 0x113FDB5Cu);
  const auto check = to_bytes("123456789");
  CHECK(lbkit::crc32c(check) == 0xE3069283u);  // the catalogue's check value for CRC-32C
  CHECK(lbkit::crc32c({}) == 0u);
  for (std::size_t cut = 0; cut <= check.size(); ++cut) {
    const std::span<const std::uint8_t> all(check);
    CHECK(lbkit::crc32c(all.subspan(cut), lbkit::crc32c(all.first(cut))) == 0xE3069283u);
  }
  static constexpr std::uint8_t nine[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  static_assert(lbkit::crc32c(nine) == 0xE3069283u, "crc32c is usable in constant expressions");
}

TEST_CASE("v1: the spec's example, byte for byte, both ways") {
  const std::string line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  const auto h =
      proxy_header::for_stream(ep("192.168.0.1:56324"), ep("192.168.0.11:443"), proxy_version::v1);
  CHECK(as_string(encode(h)) == line);
  CHECK(lbkit::encoded_size(h) == line.size());

  const auto r = lbkit::parse_proxy_header(line + "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
  require_complete(r, line.size(), h);
  CHECK(r.value.version == proxy_version::v1);
  CHECK(r.value.command == proxy_command::proxy);
  CHECK(r.value.family == proxy_family::inet);
  CHECK(r.value.transport == proxy_transport::stream);
  CHECK(r.value.source == ep("192.168.0.1:56324"));
  CHECK(r.value.destination == ep("192.168.0.11:443"));
  CHECK_FALSE(r.value.crc32c);
  CHECK(r.error.empty());
}

TEST_CASE("v1: TCP6, UNKNOWN and the longest lines the spec allows") {
  {
    const std::string line = "PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n";
    const auto h = proxy_header::for_stream(ep("[2001:db8::1]:1234"), ep("[2001:db8::2]:443"),
                                            proxy_version::v1);
    CHECK(as_string(encode(h)) == line);
    require_complete(lbkit::parse_proxy_header(line), line.size(), h);
  }
  proxy_header unknown;
  unknown.version = proxy_version::v1;
  unknown.transport = proxy_transport::unspec;
  CHECK(as_string(encode(unknown)) == "PROXY UNKNOWN\r\n");
  require_complete(lbkit::parse_proxy_header(std::string_view("PROXY UNKNOWN\r\n")), 15, unknown);
  // "the receiver must ignore anything presented before the CRLF is found" (§2.1)
  require_complete(lbkit::parse_proxy_header(std::string_view("PROXY UNKNOWN whatever\tgoes\r\nX")),
                   29, unknown);

  const std::string f39 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string worst = "PROXY UNKNOWN " + f39 + " " + f39 + " 65535 65535\r\n";
  REQUIRE(worst.size() == 107);
  require_complete(lbkit::parse_proxy_header(worst), 107, unknown);
  const std::string over = "PROXY UNKNOWN " + f39 + " " + f39 + " 65535 655355\r\n";
  const auto r = lbkit::parse_proxy_header(over);
  CHECK(r.status == parse_status::invalid);
  CHECK(r.error.find("no CRLF within its first 107 bytes") != std::string::npos);

  const std::string tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
  CHECK(tcp4.size() == 56);
  CHECK(lbkit::parse_proxy_header(tcp4).status == parse_status::complete);
  const std::string tcp6 = "PROXY TCP6 " + f39 + " " + f39 + " 65535 65535\r\n";
  CHECK(tcp6.size() == 104);
  CHECK(lbkit::parse_proxy_header(tcp6).status == parse_status::complete);
  // Upper-case hex (§2.1 allows it), a trailing dotted quad, port 0.
  const auto mixed = lbkit::parse_proxy_header(
      std::string_view("PROXY TCP6 2001:DB8::A ::ffff:192.0.2.1 0 0\r\n"));
  require_complete(mixed, 45,
                   proxy_header::for_stream(ep("[2001:db8::a]:0"), ep("[::ffff:192.0.2.1]:0"),
                                            proxy_version::v1));
}

TEST_CASE("v2: hand-assembled headers, byte for byte, both ways") {
  SUBCASE("TCP over IPv4 with an ALPN TLV") {
    const bytes wire = cat({signature, raw({0x21, 0x11, 0x00, 0x11}),  // v2 PROXY, TCP4, 17 bytes
                            raw({192, 168, 0, 1, 192, 168, 0, 11}),    // addresses
                            raw({0xDC, 0x04, 0x01, 0xBB}),             // 56324, 443
                            raw({0x01, 0x00, 0x02, 'h', '2'})});       // ALPN "h2"
    auto h = proxy_header::for_stream(ep("192.168.0.1:56324"), ep("192.168.0.11:443"));
    h.tlvs.push_back({lbkit::proxy_tlv_alpn, "h2"});
    CHECK(encode(h) == wire);
    CHECK(lbkit::encoded_size(h) == wire.size());
    require_complete(parse(wire), wire.size(), h);
  }
  SUBCASE("UDP over IPv6") {
    const bytes wire = cat({signature, raw({0x21, 0x22, 0x00, 0x24}),
                            raw({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01}),
                            raw({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7}),
                            raw({0x00, 0x35, 0xFF, 0xFF})});
    proxy_header h;
    h.family = proxy_family::inet6;
    h.transport = proxy_transport::dgram;
    h.source = ep("[2001:db8::1]:53");
    h.destination = ep("[::ffff:192.0.2.7]:65535");
    CHECK(encode(h) == wire);
    require_complete(parse(wire), wire.size(), h);
  }
  SUBCASE("LOCAL, as HAProxy sends for a health check") {
    const bytes wire = cat({signature, raw({0x20, 0x00, 0x00, 0x00})});
    proxy_header h;
    h.command = proxy_command::local;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    CHECK(encode(h) == wire);
    require_complete(parse(wire), 16, h);
    // The encoder writes no addresses for LOCAL, whatever the header holds.
    auto full = proxy_header::for_stream(ep("10.0.0.1:1"), ep("10.0.0.2:2"));
    full.command = proxy_command::local;
    CHECK(encode(full) == wire);
  }
  SUBCASE("UNIX stream: paths NUL-padded to 108 bytes") {
    bytes src(108, 0), dst(108, 0);
    std::string_view s = "/tmp/a", d = "/var/run/b.sock";
    std::copy(s.begin(), s.end(), src.begin());
    std::copy(d.begin(), d.end(), dst.begin());
    const bytes wire = cat({signature, raw({0x21, 0x31, 0x00, 0xD8}), src, dst});
    proxy_header h;
    h.family = proxy_family::unix_socket;
    h.source_path = std::string(s);
    h.destination_path = std::string(d);
    CHECK(encode(h) == wire);
    require_complete(parse(wire), wire.size(), h);
  }
  SUBCASE("a CRC32C TLV, computed over the header with its value zeroed") {
    bytes wire = cat({signature, raw({0x21, 0x11, 0x00, 0x13}), raw({10, 0, 0, 1, 10, 0, 0, 2}),
                      raw({0x04, 0xD2, 0x00, 0x50}), raw({0x03, 0x00, 0x04, 0, 0, 0, 0})});
    const std::uint32_t sum = lbkit::crc32c(wire);
    for (int i = 0; i < 4; ++i) {
      wire[wire.size() - 4 + static_cast<std::size_t>(i)] =
          static_cast<std::uint8_t>(sum >> (24 - 8 * i));  // network byte order
    }
    const auto h = proxy_header::for_stream(ep("10.0.0.1:1234"), ep("10.0.0.2:80"));
    CHECK(encode(with_crc(h)) == wire);
    const auto r = parse(wire);
    require_complete(r, wire.size(), with_crc(h));
    CHECK(r.value.tlvs.empty());  // checked and dropped
  }
}

TEST_CASE("v2: the decoder's reading of LOCAL, UNSPEC and AF_UNIX corners") {
  SUBCASE("LOCAL with a defined family: addresses skipped, TLVs read") {
    const bytes wire = cat({signature, raw({0x20, 0x11, 0x00, 0x11}), bytes(12, 0xAA),
                            raw({0x01, 0x00, 0x02, 'h', '2'})});
    proxy_header h;
    h.command = proxy_command::local;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    h.tlvs = {{lbkit::proxy_tlv_alpn, "h2"}};
    require_complete(parse(wire), wire.size(), h);
  }
  SUBCASE("LOCAL with an undefined family byte: the whole block skipped unread") {
    const bytes wire =
        cat({signature, raw({0x20, 0xFF, 0x00, 0x05}), raw({1, 2, 3, 4, 5}), to_bytes("app")});
    proxy_header h;
    h.command = proxy_command::local;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    require_complete(parse(wire), 21, h);
  }
  SUBCASE("LOCAL with a length too short for its family: skipped unread") {
    const bytes wire = cat({signature, raw({0x20, 0x21, 0x00, 0x04}), raw({1, 2, 3, 4})});
    CHECK(parse(wire).status == parse_status::complete);
  }
  SUBCASE("PROXY UNSPEC with TLVs right after the fixed bytes") {
    const bytes wire = cat(
        {signature, raw({0x21, 0x00, 0x00, 0x07}), raw({0x02, 0x00, 0x04, 'a', '.', 'b', 'c'})});
    proxy_header h;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
    h.tlvs = {{lbkit::proxy_tlv_authority, "a.bc"}};
    require_complete(parse(wire), wire.size(), h);
  }
  SUBCASE("AF_UNIX: a path is read up to its first NUL; a leading NUL gives an empty path") {
    bytes src(108, 'x'), dst(108, 0);
    src[3] = 0;  // "xxx", then bytes that are ignored
    dst[1] = '@';
    const bytes wire = cat({signature, raw({0x21, 0x32, 0x00, 0xD8}), src, dst});
    const auto r = parse(wire);
    REQUIRE(r.status == parse_status::complete);
    CHECK(r.value.source_path == "xxx");
    CHECK(r.value.destination_path.empty());
    CHECK(r.value.transport == proxy_transport::dgram);
  }
  SUBCASE("incomplete: the hint is the exact size once the length is known") {
    const auto wire = encode(proxy_header::for_stream(ep("10.0.0.1:1"), ep("10.0.0.2:2")));
    for (std::size_t k = 0; k < wire.size(); ++k) {
      const auto r = parse(bytes(wire.begin(), wire.begin() + static_cast<std::ptrdiff_t>(k)));
      CHECK(r.size == (k == 0 ? 15 : k < 16 ? 16 : wire.size()));  // 15: a v1 line may come
    }
  }
}

TEST_CASE("round trips: every version, family, transport and command, with TLVs and CRC32C") {
  int count = 0;
  for (const auto& s : samples()) {
    for (const bool crc : {false, true}) {
      if (crc && s.header.version == proxy_version::v1) continue;
      CAPTURE(s.name);
      CAPTURE(crc);
      const proxy_header h = crc ? with_crc(s.header) : s.header;
      const bytes wire = encode(h);
      CHECK(wire.size() == lbkit::encoded_size(h));

      // write_proxy_header into an exact buffer, and into a larger one.
      bytes buf(wire.size() + 10, 0xEE);
      auto n = lbkit::write_proxy_header(h, buf);
      REQUIRE(n.has_value());
      CHECK(*n == wire.size());
      CHECK(std::equal(wire.begin(), wire.end(), buf.begin()));
      CHECK(buf[wire.size()] == 0xEE);

      const auto r = parse(wire);
      require_complete(r, wire.size(), h);

      // Application data after the header stays where it is.
      for (const std::string& data :
           {std::string("GET / HTTP/1.1\r\n\r\n"), std::string("\r\n"), std::string("\n"),
            std::string("PROXY "), std::string(1, '\0')}) {
        bytes more = wire;
        more.insert(more.end(), data.begin(), data.end());
        require_complete(parse(more), wire.size(), h);
      }
      // Re-encoding the decoded header gives the same bytes.
      CHECK(encode(r.value) == wire);
      check_prefixes(wire, s.header, crc);
      ++count;
    }
  }
  CHECK(count == 3 + 2 * 2 * 9);
}

TEST_CASE("for_stream: TCP4, or TCP6 with IPv4 addresses mapped when the families differ") {
  const auto h4 = proxy_header::for_stream(ep("192.0.2.1:1000"), ep("192.0.2.2:80"));
  CHECK(h4.version == proxy_version::v2);
  CHECK(h4.command == proxy_command::proxy);
  CHECK(h4.family == proxy_family::inet);
  CHECK(h4.transport == proxy_transport::stream);

  const auto mixed =
      proxy_header::for_stream(ep("192.0.2.1:1000"), ep("[2001:db8::2]:80"), proxy_version::v1);
  CHECK(mixed.family == proxy_family::inet6);
  CHECK(mixed.source == ep("[::ffff:192.0.2.1]:1000"));
  CHECK(mixed.destination == ep("[2001:db8::2]:80"));
  CHECK(as_string(encode(mixed)) == "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1000 80\r\n");
}

TEST_CASE("to_string: one line for a log") {
  auto h = proxy_header::for_stream(ep("192.0.2.1:56324"), ep("192.0.2.11:443"));
  h.tlvs = {{lbkit::proxy_tlv_alpn, "h2"}, {lbkit::proxy_tlv_unique_id, "0123"}, {0xE1, "x"}};
  CHECK(lbkit::to_string(h) ==
        "v2 PROXY TCP4 192.0.2.1:56324 -> 192.0.2.11:443, TLVs: ALPN 'h2', UNIQUE_ID (4 bytes), "
        "0xe1 (1 bytes)");
  proxy_header local;
  local.command = proxy_command::local;
  CHECK(lbkit::to_string(local) == "v2 LOCAL");
  proxy_header unknown;
  unknown.version = proxy_version::v1;
  CHECK(lbkit::to_string(unknown) == "v1 PROXY UNKNOWN");
  proxy_header ux;
  ux.family = proxy_family::unix_socket;
  ux.transport = proxy_transport::dgram;
  ux.source_path = "/a\nb";
  CHECK(lbkit::to_string(ux) == "v2 PROXY UNIX DGRAM '/a\\x0ab' -> ''");
}

namespace {

struct bad_input {
  const char* name;
  bytes input;
  std::size_t at;  // the length of the shortest prefix that is already invalid
  const char* reason;
  proxy_parse_options options{};
};

bytes v2_prefix(std::initializer_list<int> after_signature) {
  return cat({signature, raw(after_signature)});
}

std::vector<bad_input> bad_inputs() {
  const auto text = [](const char* name, std::string s, std::size_t at, const char* reason) {
    return bad_input{name, to_bytes(s), at, reason};
  };
  const auto at_end = [](const char* name, std::string s, const char* reason) {
    return bad_input{name, to_bytes(s), s.size(), reason};
  };
  std::vector<bad_input> v;
  v.push_back(
      text("HTTP request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1, "not a PROXY protocol header"));
  v.push_back(text("HTTP POST", "POST / HTTP/1.1\r\n", 2, "not a PROXY protocol header"));
  v.push_back(
      text("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 3, "not a PROXY protocol header"));
  v.push_back(text("TLS ClientHello", std::string("\x16\x03\x01\x02\x00", 5), 1,
                   "not a PROXY protocol header"));
  v.push_back(text("lower-case keyword", "proxy TCP4 1.2.3.4 1.2.3.5 1 2\r\n", 1,
                   "not a PROXY protocol header"));
  v.push_back(text("keyword run on", "PROXYTCP4 1.2.3.4 1.2.3.5 1 2\r\n", 6,
                   "not a PROXY protocol header"));
  v.push_back(
      text("v1 unknown protocol", "PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n", 10, "protocol 'TCP5'"));
  v.push_back(text("v1 UDP", "PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n", 8, "protocol 'UD"));
  v.push_back(text("v1 UNKNOWN run on", "PROXY UNKNOWNX\r\n", 14, "protocol 'UNKNOWNX'"));
  v.push_back(text("v1 too long", "PROXY UNKNOWN " + std::string(200, 'x'), 106,
                   "no CRLF within its first 107 bytes"));
  v.push_back(text("v1 bad address octet", "PROXY TCP4 192.168.0.256 1.2.3.5 1 2\r\n", 24,
                   "bad source address"));
  v.push_back(text("v1 address leading zero", "PROXY TCP4 1.2.3.4 01.2.3.5 1 2\r\n", 21,
                   "bad destination address"));
  v.push_back(text("v1 short address", "PROXY TCP4 1.2.3 1.2.3.5 1 2\r\n", 17,
                   "does not have four dotted parts"));
  v.push_back(
      text("v1 bad IPv6 address", "PROXY TCP6 1:::2 ::1 1 2\r\n", 15, "bad source address"));
  v.push_back(
      text("v1 IPv6 with two '::'", "PROXY TCP6 1::2::3 ::1 1 2\r\n", 17, "bad source address"));
  v.push_back(
      text("v1 IPv6 too few groups", "PROXY TCP6 1:2:3 ::1 1 2\r\n", 17, "fewer than 8 groups"));
  v.push_back(text("v1 port 65536", "PROXY TCP4 1.2.3.4 1.2.3.5 65536 443\r\n", 32,
                   "source port 65536 above 65535"));
  v.push_back(text("v1 port 70000", "PROXY TCP4 1.2.3.4 1.2.3.5 1 70000\r\n", 34,
                   "destination port 70000 above 65535"));
  v.push_back(
      text("v1 leading-zero port", "PROXY TCP4 1.2.3.4 1.2.3.5 080 443\r\n", 29, "leading zero"));
  v.push_back(
      text("v1 signed port", "PROXY TCP4 1.2.3.4 1.2.3.5 +80 443\r\n", 28, "bad source port '+"));
  v.push_back(text("v1 TCP4 with IPv6", "PROXY TCP4 ::1 ::1 1 2\r\n", 12, "is not IPv4"));
  v.push_back(text("v1 TCP6 with IPv4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 13, "is not IPv6"));
  v.push_back(text("v1 TCP6 with hex only", "PROXY TCP6 abcd ::1 1 2\r\n", 16, "is not IPv6"));
  v.push_back(
      text("v1 double space", "PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n", 12, "empty source address"));
  v.push_back(
      text("v1 tab separator", "PROXY TCP4\t1.2.3.4 1.2.3.5 1 2\r\n", 11, "protocol 'TCP4\\x09"));
  v.push_back(at_end("v1 LF without CR", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n", "bare LF"));
  v.push_back(at_end("v1 CR without LF", "PROXY UNKNOWN\rX", "CR not followed by LF"));
  v.push_back(at_end("v1 missing field", "PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n",
                     "missing the destination port"));
  v.push_back(at_end("v1 missing protocol", "PROXY\r\n", "missing the protocol"));
  v.push_back(text("v1 extra field", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n", 31,
                   "space after the destination port"));
  v.push_back(text("v1 space before CRLF", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2 \r\n", 31,
                   "space after the destination port"));
  v.push_back(
      at_end("v1 empty last field", "PROXY TCP4 1.2.3.4 1.2.3.5 1 \r\n", "empty destination port"));
  v.push_back(
      text("v1 NUL in a field", std::string("PROXY TCP4 1.2.3.4\0", 19), 19, "bad source address"));

  v.push_back({"v2 bad signature", cat({raw({0x0D, 0x0A, 0x0D, 0x0A, 0x01})}), 5, "signature"});
  v.push_back({"v2 signature of a blank line", to_bytes("\r\n\r\nGET"), 5, "signature"});
  v.push_back({"v2 version 3", v2_prefix({0x31, 0x11, 0x00, 0x0C}), 13, "version 3"});
  v.push_back({"v2 version 1", v2_prefix({0x11, 0x11, 0x00, 0x0C}), 13, "version 1"});
  v.push_back({"v2 command 2", v2_prefix({0x22, 0x11, 0x00, 0x0C}), 13, "command 2"});
  v.push_back({"v2 command 15", v2_prefix({0x2F, 0x11, 0x00, 0x0C}), 13, "command 15"});
  v.push_back({"v2 family 5", v2_prefix({0x21, 0x51, 0x00, 0x0C}), 14, "address family 5"});
  v.push_back({"v2 transport 3", v2_prefix({0x21, 0x13, 0x00, 0x0C}), 14, "transport 3"});
  v.push_back({"v2 INET without transport", v2_prefix({0x21, 0x10, 0x00, 0x0C}), 14,
               "a family with transport UNSPEC"});
  v.push_back({"v2 UNSPEC with a transport", v2_prefix({0x21, 0x01, 0x00, 0x00}), 14,
               "family UNSPEC with a transport"});
  v.push_back({"v2 length too short for INET", v2_prefix({0x21, 0x11, 0x00, 0x0B}), 16,
               "too short for the 12-byte INET address block"});
  v.push_back({"v2 length too short for INET6", v2_prefix({0x21, 0x21, 0x00, 0x0C}), 16,
               "too short for the 36-byte INET6 address block"});
  v.push_back({"v2 length too short for UNIX", v2_prefix({0x21, 0x31, 0x00, 0x64}), 16,
               "too short for the 216-byte UNIX address block"});
  v.push_back(
      {"v2 above max_size", v2_prefix({0x21, 0x11, 0x10, 0x00}), 16, "above the limit of 4096"});
  v.push_back({"v2 truncated TLV value",
               cat({v2_prefix({0x21, 0x11, 0x00, 0x10}), bytes(12, 1), raw({0x01, 0x00, 0x05})}),
               31, "truncated TLV"});
  v.push_back({"v2 truncated TLV header",
               cat({v2_prefix({0x21, 0x11, 0x00, 0x0E}), bytes(12, 1), raw({0x01, 0x00})}), 28,
               "truncated TLV at offset 28"});
  v.push_back({"v2 CRC32C TLV of 3 bytes",
               cat({v2_prefix({0x21, 0x00, 0x00, 0x06}), raw({0x03, 0x00, 0x03, 1, 2, 3})}), 19,
               "CRC32C TLV with a 3-byte value"});
  v.push_back({"v2 two CRC32C TLVs",
               cat({v2_prefix({0x21, 0x00, 0x00, 0x0E}), raw({0x03, 0x00, 0x04, 1, 2, 3, 4}),
                    raw({0x03, 0x00, 0x04, 1, 2, 3, 4})}),
               26, "more than one CRC32C TLV"});
  {
    bytes uid = cat({v2_prefix({0x21, 0x00, 0x00, 0x84}), raw({0x05, 0x00, 0x81})});
    uid.resize(16 + 0x84, 7);
    v.push_back({"v2 UNIQUE_ID of 129 bytes", uid, 19, "UNIQUE_ID TLV of 129 bytes"});
  }
  {
    auto wire = encode(with_crc(proxy_header::for_stream(ep("10.0.0.1:1234"), ep("10.0.0.2:80"))));
    wire[17] ^= 0x40;  // a bit of the source address
    v.push_back({"v2 bad CRC32C", wire, wire.size(), "fails its CRC32C check"});
  }
  {
    auto big = cat({v2_prefix({0x21, 0x00, 0x00, 0x40})});
    big.resize(16 + 64, 0);  // 64 bytes of NOOP-free zeros: type 0, length 0, repeated
    bad_input b{"v2 above a small max_size", big, 16, "above the limit of 50"};
    b.options.max_size = 50;
    v.push_back(b);
  }
  {
    bad_input b{"v1 when only v2 is accepted", to_bytes("PROXY UNKNOWN\r\n"), 1,
                "only v2 is accepted"};
    b.options.accept_v1 = false;
    v.push_back(b);
  }
  {
    bad_input b{"v2 when only v1 is accepted", v2_prefix({0x20, 0x00, 0x00, 0x00}), 1,
                "only v1 is accepted"};
    b.options.accept_v2 = false;
    v.push_back(b);
  }
  {
    bad_input b{"v1 above a small max_size", to_bytes("PROXY TCP4 1.2.3.4 1.2.3.5 1 2\r\n"), 19,
                "no CRLF within its first 20 bytes (proxy_parse_options::max_size)"};
    b.options.max_size = 20;
    v.push_back(b);
  }
  return v;
}

}  // namespace

TEST_CASE("bad inputs: invalid with a reason, as soon as the bytes rule out a header") {
  const auto cases = bad_inputs();
  for (const auto& c : cases) {
    INFO("case: " << c.name);
    const auto whole = parse(c.input, c.options);
    INFO("error: " << whole.error);
    REQUIRE(whole.status == parse_status::invalid);
    CHECK(whole.error.find(c.reason) != std::string::npos);
    CHECK(printable(whole.error));
    CHECK(whole.size == 0);
    CHECK(whole.value == proxy_header{});

    REQUIRE(c.at >= 1);
    REQUIRE(c.at <= c.input.size());
    const bytes decisive(c.input.begin(), c.input.begin() + static_cast<std::ptrdiff_t>(c.at));
    const auto early = parse(decisive, c.options);
    CHECK(early.status == parse_status::invalid);
    INFO("at the decisive byte: " << early.error);
    CHECK(early.error.find(c.reason) != std::string::npos);
    const bytes before(c.input.begin(), c.input.begin() + static_cast<std::ptrdiff_t>(c.at - 1));
    const auto wait = parse(before, c.options);
    INFO("one byte earlier: " << wait.error);
    CHECK(wait.status == parse_status::incomplete);
  }
  CHECK(cases.size() >= 50);

  const auto none =
      lbkit::parse_proxy_header(std::string_view(), {.accept_v1 = false, .accept_v2 = false});
  CHECK(none.status == parse_status::invalid);
  CHECK(none.error.find("neither v1 nor v2") != std::string::npos);
}

TEST_CASE("a CRC-protected header: every corrupted bit is caught or changes the header") {
  auto h = proxy_header::for_stream(ep("[2001:db8::7]:4433"), ep("[2001:db8::8]:443"));
  h.tlvs = sample_tlvs();
  const auto wire = encode(with_crc(h));
  int invalid = 0, incomplete = 0, other = 0;
  for (std::size_t i = 0; i < wire.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = wire;
      bad[i] = static_cast<std::uint8_t>(bad[i] ^ (1u << bit));
      const auto r = parse(bad, {.max_size = lbkit::proxy_v2_max_size});
      CAPTURE(i);
      CAPTURE(bit);
      switch (r.status) {
        case parse_status::invalid:
          ++invalid;
          CHECK(printable(r.error));
          break;
        case parse_status::incomplete:  // the length grew: the header waits for more
          ++incomplete;
          CHECK(r.size > bad.size());
          break;
        case parse_status::complete:
          // The length shrank past the checksum, or the checksum's type byte now names another
          // TLV: either way no checksum was verified, and the header differs.
          ++other;
          CHECK_FALSE(r.value.crc32c);
          CHECK_FALSE(r.value == h);
          break;
      }
    }
  }
  CHECK(invalid + incomplete + other == static_cast<int>(wire.size() * 8));
  // Only the two length bytes and the checksum's type byte can do anything but fail.
  CHECK(incomplete + other <= 24);
}

TEST_CASE("the parse options: max_size bounds v2 headers; huge ones pass when allowed") {
  proxy_header h;
  h.family = proxy_family::unspec;
  h.transport = proxy_transport::unspec;
  h.tlvs = {{0xE0, std::string(65535 - 3 - 7, 'z')}};
  const auto wire = encode(with_crc(h));
  CHECK(wire.size() == lbkit::proxy_v2_max_size);
  const auto r = parse(wire, {.max_size = lbkit::proxy_v2_max_size});
  require_complete(r, wire.size(), with_crc(h));
  const auto refused = parse(wire);
  CHECK(refused.status == parse_status::invalid);
  CHECK(refused.error.find("65551 bytes, above the limit of 4096") != std::string::npos);

  const auto v1 = to_bytes("PROXY UNKNOWN\r\n");
  CHECK(parse(v1, {.accept_v1 = true, .accept_v2 = false}).status == parse_status::complete);
  CHECK(parse({}, {.accept_v1 = false}).size == 16);
  CHECK(parse({}).size == 15);
}

TEST_CASE("encoder errors: nothing is written and the reason names the problem") {
  const auto v4 = proxy_header::for_stream(ep("10.0.0.1:1"), ep("10.0.0.2:2"));
  const auto fails = [](const proxy_header& h, errc code, const char* reason) {
    bytes out(70000, 0xEE);
    const auto r = lbkit::write_proxy_header(h, out);
    INFO(lbkit::to_string(h));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == code);
    INFO("error: " << r.error().message);
    CHECK(r.error().message.find(reason) != std::string::npos);
    CHECK(std::all_of(out.begin(), out.end(), [](std::uint8_t b) { return b == 0xEE; }));
    CHECK_FALSE(lbkit::encode_proxy_header(h).has_value());
  };

  SUBCASE("buffer too small, at every size below the need") {
    for (const auto version : {proxy_version::v1, proxy_version::v2}) {
      auto h = v4;
      h.version = version;
      const std::size_t need = lbkit::encoded_size(h);
      for (std::size_t size = 0; size < need; ++size) {
        bytes out(size, 0xEE);
        const auto r = lbkit::write_proxy_header(h, out);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().code == errc::out_of_range);
        CHECK(r.error().message.find("needs " + std::to_string(need)) != std::string::npos);
        CHECK(std::all_of(out.begin(), out.end(), [](std::uint8_t b) { return b == 0xEE; }));
      }
    }
  }
  SUBCASE("v1 limits") {
    auto h = v4;
    h.version = proxy_version::v1;
    auto t = h;
    t.tlvs = {{lbkit::proxy_tlv_alpn, "h2"}};
    fails(t, errc::invalid_argument, "v1 PROXY header cannot carry TLVs");
    fails(with_crc(h), errc::invalid_argument, "cannot carry a CRC32C checksum");
    auto l = h;
    l.command = proxy_command::local;
    fails(l, errc::invalid_argument, "cannot carry the LOCAL command");
    auto u = h;
    u.family = proxy_family::unix_socket;
    fails(u, errc::invalid_argument, "cannot carry AF_UNIX addresses");
    auto d = h;
    d.transport = proxy_transport::dgram;
    fails(d, errc::invalid_argument, "transport other than stream");
  }
  SUBCASE("endpoints of the wrong family") {
    auto h = v4;
    h.destination = ep("[::1]:2");
    fails(h, errc::invalid_argument, "family INET but its destination address ::1 is IPv6");
    h.version = proxy_version::v1;
    fails(h, errc::invalid_argument, "family INET but its destination address ::1 is IPv6");
    auto h6 = proxy_header::for_stream(ep("[::1]:1"), ep("[::2]:2"));
    h6.source = ep("127.0.0.1:1");
    fails(h6, errc::invalid_argument, "family INET6 but its source address 127.0.0.1 is IPv4");
  }
  SUBCASE("v2 limits") {
    auto h = v4;
    h.transport = proxy_transport::unspec;
    fails(h, errc::invalid_argument, "needs transport stream or dgram");
    proxy_header u;
    u.family = proxy_family::unix_socket;
    u.source_path = std::string(109, 'p');
    fails(u, errc::out_of_range, "source path is 109 bytes, above the 108");
    u.source_path = std::string("a\0b", 3);
    fails(u, errc::invalid_argument, "contains a NUL byte");
    auto c = v4;
    c.tlvs = {{lbkit::proxy_tlv_crc32c, "abcd"}};
    fails(c, errc::invalid_argument, "set proxy_header::crc32c instead");
    auto big = v4;
    big.tlvs = {{0xE0, std::string(65536, 'x')}};
    fails(big, errc::out_of_range, "65536 bytes, above the 65535 a TLV holds");
    auto uid = v4;
    uid.tlvs = {{lbkit::proxy_tlv_unique_id, std::string(129, 'x')}};
    fails(uid, errc::out_of_range, "UNIQUE_ID TLV of 129 bytes");
    auto sum = v4;
    sum.tlvs = {{0xE0, std::string(65000, 'x')}, {0xE1, std::string(600, 'y')}};
    fails(sum, errc::out_of_range, "at most 65535 fit");
    auto exact = v4;  // 12 address bytes + 3 + 65520 = 65535: just fits
    exact.tlvs = {{0xE0, std::string(65520, 'x')}};
    CHECK(lbkit::encode_proxy_header(exact).has_value());
    fails(with_crc(exact), errc::out_of_range, "at most 65535 fit");
  }
  SUBCASE("values outside the enums") {
    auto h = v4;
    h.version = static_cast<proxy_version>(3);
    fails(h, errc::invalid_argument, "version 3");
    h = v4;
    h.family = static_cast<proxy_family>(9);
    fails(h, errc::invalid_argument, "outside its enum");
  }
}
