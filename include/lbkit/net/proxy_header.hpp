// SPDX-License-Identifier: MIT
// proxy_header: the vocabulary of the HAProxy PROXY protocol (versions, commands, families,
// TLV types, the decoded header) shared by its v1 and v2 wire formats
// (net/proxy_v1.hpp, net/proxy_v2.hpp) and the public entry points in net/proxy_protocol.hpp.
// Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/endpoint.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// The protocol version: v1 is the text line "PROXY TCP4 ...\r\n", v2 the binary header.
enum class proxy_version : std::uint8_t { v1 = 1, v2 = 2 };

// The v2 command. LOCAL: the proxy opened the connection itself (a health check), so the
// receiver uses the real endpoints. PROXY: the connection is relayed for the client described.
// v1 has no command; a v1 header decodes as `proxy`, "PROXY UNKNOWN" included.
enum class proxy_command : std::uint8_t { local = 0, proxy = 1 };

// The address family of the relayed connection, in the order of the v2 family nibble.
// `unspec` is v1's "UNKNOWN" and v2's AF_UNSPEC: no addresses.
enum class proxy_family : std::uint8_t { unspec, inet, inet6, unix_socket };

// The transport of the relayed connection, in the order of the v2 transport nibble.
enum class proxy_transport : std::uint8_t { unspec, stream, dgram };

// Registered v2 TLV types (spec §2.2.1-2.2.7). The SSL TLV's value holds a client flags byte,
// a 4-byte verify result and sub-TLVs of the proxy_tlv_ssl_* types; lbkit keeps it raw.
inline constexpr std::uint8_t proxy_tlv_alpn = 0x01;       // ALPN protocol, e.g. "h2"
inline constexpr std::uint8_t proxy_tlv_authority = 0x02;  // host name (TLS SNI), UTF-8
inline constexpr std::uint8_t proxy_tlv_crc32c = 0x03;     // checksum of the whole header
inline constexpr std::uint8_t proxy_tlv_noop = 0x04;       // padding, to be ignored
inline constexpr std::uint8_t proxy_tlv_unique_id = 0x05;  // opaque connection id, <= 128 bytes
inline constexpr std::uint8_t proxy_tlv_ssl = 0x20;
inline constexpr std::uint8_t proxy_tlv_ssl_version = 0x21;
inline constexpr std::uint8_t proxy_tlv_ssl_cn = 0x22;
inline constexpr std::uint8_t proxy_tlv_ssl_cipher = 0x23;
inline constexpr std::uint8_t proxy_tlv_ssl_sig_alg = 0x24;
inline constexpr std::uint8_t proxy_tlv_ssl_key_alg = 0x25;
inline constexpr std::uint8_t proxy_tlv_netns = 0x30;  // network namespace name, US-ASCII
// 0xE0..0xEF are reserved for applications, 0xF0..0xF7 for experiments (spec §2.2.8).

// The longest v1 line, CRLF included (spec §2.1: "PROXY UNKNOWN" with two full IPv6 addresses).
inline constexpr std::size_t proxy_v1_max_size = 107;
// The longest v2 header: 16 fixed bytes and a 16-bit length.
inline constexpr std::size_t proxy_v2_max_size = 16 + 65535;
// The bytes of each AF_UNIX path field in a v2 header (sizeof sockaddr_un::sun_path on Linux).
inline constexpr std::size_t proxy_unix_path_size = 108;
// The most bytes a UNIQUE_ID TLV may hold (spec §2.2.5).
inline constexpr std::size_t proxy_unique_id_max_size = 128;

// One v2 Type-Length-Value extension, its value kept as raw bytes.
// Thread safety: thread-compatible (a value type).
struct proxy_tlv {
  std::uint8_t type = 0;
  std::string value{};

  friend bool operator==(const proxy_tlv&, const proxy_tlv&) = default;
};

// A PROXY protocol header, decoded or to be encoded. Thread safety: thread-compatible.
//
// Which members mean something depends on the others:
//   - command `local` (v2 only): nothing but the TLVs. The encoder writes family UNSPEC and no
//     addresses, whatever family and endpoints hold; the decoder reports family and transport
//     `unspec`, as the receiver must ignore them (spec §2.2).
//   - family `inet` / `inet6`: `source` and `destination`, both of that IP version (an
//     IPv4-mapped IPv6 address counts as IPv6); a port may be 0.
//   - family `unix_socket` (v2 only): `source_path` and `destination_path`, at most 108 bytes
//     each and without NUL bytes. The decoder takes each 108-byte field up to its first NUL.
//   - family `unspec`: no addresses; transport is not on the wire (v2 defines only the byte
//     0x00 for it) and decodes as `unspec`.
//   - `tlvs` (v2 only), in wire order. The CRC32C TLV is never among them: `crc32c` stands for
//     it, as its value is computed over the final bytes.
//   - `crc32c` (v2 only): a CRC32C TLV covers the header (spec §2.2.3). The encoder appends one
//     when it is set; the decoder sets it when the header carried one and its checksum
//     matched (a mismatch makes the header invalid). So a decoded header re-encodes as it was.
struct proxy_header {
  proxy_version version = proxy_version::v2;
  proxy_command command = proxy_command::proxy;
  proxy_family family = proxy_family::unspec;
  proxy_transport transport = proxy_transport::stream;
  endpoint source{};       // inet / inet6: the client
  endpoint destination{};  // inet / inet6: the address the client connected to
  std::string source_path{};
  std::string destination_path{};
  std::vector<proxy_tlv> tlvs{};
  bool crc32c = false;

  // The header a proxy sends for a TCP connection from `client` accepted on `local`: TCP4 when
  // both are IPv4, else TCP6 with any IPv4 address written IPv4-mapped (::ffff:a.b.c.d), as
  // HAProxy does, since one header carries a single family.
  static proxy_header for_stream(const endpoint& client, const endpoint& local,
                                 proxy_version v = proxy_version::v2);

  friend bool operator==(const proxy_header&, const proxy_header&) = default;
};

// What parse_proxy_header accepts. Thread safety: thread-compatible (a value type).
struct proxy_parse_options {
  bool accept_v1 = true;
  bool accept_v2 = true;
  // The largest header accepted, in bytes. v1 lines are also capped at 107 bytes by the spec.
  // 4096 holds the addresses and the TLVs senders are known to emit (HAProxy's SSL TLV, AWS's
  // endpoint id) with room to spare, while bounding what a peer can make the receiver buffer;
  // raise it, up to proxy_v2_max_size, to accept any v2 header.
  std::size_t max_size = 4096;
};

// The verdict of parse_proxy_header: complete with the header and the bytes it occupies (the
// application data starts there), incomplete with a lower bound on the bytes it needs (exact
// for v2 once its 16 fixed bytes have arrived), or invalid with the reason, safe to log ("v1
// header has source port 70000 above 65535").
using proxy_parse_result = parse_result<proxy_header>;

// A one-line description for logs: "v2 PROXY TCP4 192.0.2.1:56324 -> 192.0.2.11:443,
// TLVs: ALPN 'h2'". Paths and TLV values are quoted and escaped.
inline std::string to_string(const proxy_header& h);

namespace detail::proxy_protocol {

using verdict = proxy_parse_result;

inline constexpr std::array<std::uint8_t, 12> v2_signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                              0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
inline constexpr std::size_t v2_fixed_size = 16;
inline constexpr std::size_t crc_tlv_size = 3 + 4;
inline constexpr std::size_t npos = std::string_view::npos;

// The v2 address block of each family (spec §2.2): two addresses, then two ports for IP.
constexpr std::size_t address_block_size(proxy_family f) noexcept {
  switch (f) {
    case proxy_family::inet:
      return 4 + 4 + 2 + 2;
    case proxy_family::inet6:
      return 16 + 16 + 2 + 2;
    case proxy_family::unix_socket:
      return 2 * proxy_unix_path_size;
    case proxy_family::unspec:
      break;
  }
  return 0;
}

constexpr std::string_view family_name(proxy_family f) noexcept {
  switch (f) {
    case proxy_family::unspec:
      return "UNSPEC";
    case proxy_family::inet:
      return "INET";
    case proxy_family::inet6:
      return "INET6";
    case proxy_family::unix_socket:
      return "UNIX";
  }
  return "unknown";
}

inline std::string hex(std::uint32_t v, int digits) {
  static constexpr char x[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) s += x[(v >> shift) & 0xfu];
  return s;
}

inline std::string_view chars(std::span<const std::uint8_t> b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

inline result<void> check_endpoints(const proxy_header& h) {
  const bool v6 = h.family == proxy_family::inet6;
  const std::pair<const endpoint*, const char*> ends[] = {{&h.source, "source"},
                                                          {&h.destination, "destination"}};
  for (const auto& [e, name] : ends) {
    if (e->address().is_v6() != v6) {
      return make_error(errc::invalid_argument,
                        "PROXY header has family " + std::string(family_name(h.family)) +
                            " but its " + name + " address " + e->address().to_string() + " is " +
                            (v6 ? "IPv4" : "IPv6"));
    }
  }
  return {};
}

constexpr std::string_view tlv_name(std::uint8_t type) noexcept {
  switch (type) {
    case proxy_tlv_alpn:
      return "ALPN";
    case proxy_tlv_authority:
      return "AUTHORITY";
    case proxy_tlv_crc32c:
      return "CRC32C";
    case proxy_tlv_noop:
      return "NOOP";
    case proxy_tlv_unique_id:
      return "UNIQUE_ID";
    case proxy_tlv_ssl:
      return "SSL";
    case proxy_tlv_netns:
      return "NETNS";
    default:
      return {};
  }
}

}  // namespace detail::proxy_protocol

inline proxy_header proxy_header::for_stream(const endpoint& client, const endpoint& local,
                                             proxy_version v) {
  proxy_header h;
  h.version = v;
  h.command = proxy_command::proxy;
  h.transport = proxy_transport::stream;
  if (client.address().is_v4() && local.address().is_v4()) {
    h.family = proxy_family::inet;
    h.source = client;
    h.destination = local;
    return h;
  }
  const auto as_v6 = [](const endpoint& e) {
    if (e.address().is_v6()) return e;
    std::array<std::uint8_t, 16> b{};
    b[10] = b[11] = 0xff;  // ::ffff:a.b.c.d (RFC 4291 §2.5.5.2)
    const auto v4 = e.address().bytes();
    std::copy(v4.begin(), v4.end(), b.begin() + 12);
    return endpoint(ip_address::v6(b), e.port());
  };
  h.family = proxy_family::inet6;
  h.source = as_v6(client);
  h.destination = as_v6(local);
  return h;
}

inline std::string to_string(const proxy_header& h) {
  namespace pp = detail::proxy_protocol;
  std::string s = h.version == proxy_version::v1 ? "v1 " : "v2 ";
  if (h.command == proxy_command::local) {
    s += "LOCAL";
  } else {
    s += "PROXY ";
    const char* transport = h.transport == proxy_transport::stream  ? "STREAM"
                            : h.transport == proxy_transport::dgram ? "DGRAM"
                                                                    : "UNSPEC";
    switch (h.family) {
      case proxy_family::unspec:
        s += h.version == proxy_version::v1 ? "UNKNOWN" : "UNSPEC";
        break;
      case proxy_family::inet:
      case proxy_family::inet6:
        s += h.transport == proxy_transport::stream  ? "TCP"
             : h.transport == proxy_transport::dgram ? "UDP"
                                                     : "IP";
        s += h.family == proxy_family::inet ? '4' : '6';
        s += ' ' + h.source.to_string() + " -> " + h.destination.to_string();
        break;
      case proxy_family::unix_socket:
        s += std::string("UNIX ") + transport + ' ' + quote(h.source_path) + " -> " +
             quote(h.destination_path);
        break;
    }
  }
  for (std::size_t i = 0; i < h.tlvs.size(); ++i) {
    const auto& t = h.tlvs[i];
    s += i == 0 ? ", TLVs: " : ", ";
    const auto name = pp::tlv_name(t.type);
    s += name.empty() ? pp::hex(t.type, 2) : std::string(name);
    if (t.type == proxy_tlv_alpn || t.type == proxy_tlv_authority || t.type == proxy_tlv_netns) {
      s += ' ' + quote(t.value);
    } else {
      s += " (" + std::to_string(t.value.size()) + " bytes)";
    }
  }
  if (h.crc32c) s += ", CRC32C";
  return s;
}

}  // namespace lbkit
