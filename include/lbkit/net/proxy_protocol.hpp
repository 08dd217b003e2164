// SPDX-License-Identifier: MIT
// proxy_protocol: an I/O-free encoder and decoder of the HAProxy PROXY protocol, version 1 (one
// line of text) and version 2 (binary, with TLV extensions), as specified in
// https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. An L4 proxy writes such a header
// at the start of each upstream connection so that the backend learns the client's address; a
// server behind a proxy reads one at the start of each accepted connection.
//
// Nothing here touches a socket. parse_proxy_header is handed the bytes received so far and
// answers incomplete, complete (with the header and its exact size, so that the application
// data after it stays untouched) or invalid (with a reason for the log). It rejects as soon as
// the bytes cannot begin any valid header, so a client that does not speak the protocol is
// turned away at its first wrong byte rather than after a read timeout. write_proxy_header fills
// a caller's buffer. Both are strict: the spec tells receivers to drop any header that does not
// match it exactly (§2.1), and tells senders not to emit undefined values (§2.2); every rejection
// names the field at fault.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/text.hpp"
#include "lbkit/endpoint.hpp"
#include "lbkit/result.hpp"

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
//   - `tlvs` (v2 only), in wire order. The CRC32C TLV is never among them: the encoder adds it
//     when proxy_write_options::crc32c is set, and the decoder checks it, drops it and reports
//     it in proxy_parse_result::crc32c.
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

  // The header a proxy sends for a TCP connection from `client` accepted on `local`: TCP4 when
  // both are IPv4, else TCP6 with any IPv4 address written IPv4-mapped (::ffff:a.b.c.d), as
  // HAProxy does, since one header carries a single family.
  static proxy_header for_stream(const endpoint& client, const endpoint& local,
                                 proxy_version v = proxy_version::v2);

  friend bool operator==(const proxy_header&, const proxy_header&) = default;
};

enum class proxy_parse_status : std::uint8_t {
  incomplete,  // every byte so far fits a valid header; read more and parse again
  complete,    // a valid header occupies the first `size` bytes
  invalid,     // no valid header starts with these bytes; close the connection
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

// The verdict of parse_proxy_header. Thread safety: thread-compatible (a value type).
struct proxy_parse_result {
  proxy_parse_status status = proxy_parse_status::incomplete;
  // complete: the bytes the header occupies; the application data starts there.
  // incomplete: a lower bound on the total bytes the header needs, always above the input size.
  // For v2 it is exact once the 16 fixed bytes have arrived.
  std::size_t size = 0;
  proxy_header header{};  // complete only
  // complete: the v2 header carried a CRC32C TLV and its checksum matched. Passing this to
  // proxy_write_options::crc32c re-encodes the header with a checksum again.
  bool crc32c = false;
  // invalid only: why, for a log line ("v1 header has source port 70000 above 65535").
  // Bytes from the input appear in it quoted and escaped, so it is safe to log.
  std::string error{};
};

// Parses the PROXY header at the start of `bytes`: everything received on the connection so
// far. Call it again with the longer input after `incomplete` (it re-parses from the start,
// which costs little: headers are small and bounded by options.max_size). The verdict is `invalid`
// as soon as the bytes cannot be the start of a valid header, e.g. a first byte that is neither 'P'
// (v1) nor CR (v2), a v1 line with no CRLF in its first 107 bytes or a v2 header with a version
// other than 2. v1 fields are checked character by character as they arrive (IPv6 text only for the
// mistakes a prefix can show) and in full at the space that ends them.
//
// v1 (§2.1): "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n" with single spaces, addresses
// as ip_address::parse reads them (strict, of the announced family), ports 0..65535 without
// leading zeros; or "PROXY UNKNOWN", then anything up to CRLF, which is ignored.
// v2 (§2.2): the 12-byte signature, version 2, command LOCAL or PROXY, one of the family and
// transport bytes the spec defines (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32; ignored under
// LOCAL), a length that covers the address block, then TLVs that fill the rest exactly. A
// CRC32C TLV must hold 4 bytes and match; a UNIQUE_ID TLV must hold at most 128 bytes. Under
// LOCAL the address block is skipped, and the TLVs after it are read only when the family
// byte is a defined one (else the whole block is skipped unread).
// Thread safety: thread-safe (a pure function). Throws nothing but std::bad_alloc.
// Complexity: linear in the header's size.
inline proxy_parse_result parse_proxy_header(std::span<const std::uint8_t> bytes,
                                             const proxy_parse_options& options = {});
// The same for bytes held as characters, e.g. a std::string read buffer.
inline proxy_parse_result parse_proxy_header(std::string_view bytes,
                                             const proxy_parse_options& options = {});

// How write_proxy_header encodes. Thread safety: thread-compatible (a value type).
struct proxy_write_options {
  // v2: append a CRC32C TLV holding the checksum of the whole header (spec §2.2.3), so the
  // receiver can detect corruption.
  bool crc32c = false;
};

// The bytes write_proxy_header needs for `h`. Meaningless for a header it rejects.
// Thread safety: thread-safe.
inline std::size_t encoded_size(const proxy_header& h, const proxy_write_options& options = {});

// Writes `h` at the start of `out` and returns the bytes written. Fails, leaving `out` as it
// was, when `out` is too small (errc::out_of_range) or `h` cannot be encoded: endpoints not of
// the header's family, a family other than unspec without a transport, v1 with LOCAL, TLVs, a
// checksum, AF_UNIX or datagrams; a path above 108 bytes or with a NUL; a CRC32C TLV in `tlvs`
// (ask for one with options.crc32c); a TLV value above 65535 bytes or a UNIQUE_ID above 128;
// a v2 header above proxy_v2_max_size.
// Thread safety: thread-safe.
inline result<std::size_t> write_proxy_header(const proxy_header& h, std::span<std::uint8_t> out,
                                              const proxy_write_options& options = {});

// The encoded header in a new buffer; fails as write_proxy_header does.
inline result<std::vector<std::uint8_t>> encode_proxy_header(
    const proxy_header& h, const proxy_write_options& options = {});

// A one-line description for logs: "v2 PROXY TCP4 192.0.2.1:56324 -> 192.0.2.11:443,
// TLVs: ALPN 'h2'". Paths and TLV values are quoted and escaped.
inline std::string to_string(const proxy_header& h);

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of `bytes`, as defined by RFC 3720
// §12.1 and Appendix B.4 and used by the PROXY v2 CRC32C TLV. Pass a previous result as `crc`
// to continue it: crc32c(b, crc32c(a)) == crc32c(a followed by b).
// Thread safety: thread-safe. Complexity: linear, one table look-up per byte.
constexpr std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept;

// ---------------------------------------------------------------------------------------
// Implementation

namespace detail {

constexpr std::array<std::uint32_t, 256> make_crc32c_table() noexcept {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

inline constexpr std::array<std::uint32_t, 256> crc32c_table = make_crc32c_table();

}  // namespace detail

constexpr std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc) noexcept {
  crc = ~crc;
  for (const std::uint8_t b : bytes) crc = detail::crc32c_table[(crc ^ b) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

namespace detail::proxy_protocol {

inline constexpr std::array<std::uint8_t, 12> v2_signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                              0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
inline constexpr std::size_t v2_fixed_size = 16;
inline constexpr std::size_t v1_min_size = 15;  // "PROXY UNKNOWN\r\n"
inline constexpr std::size_t v6_text_max = 45;  // ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255
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

inline proxy_parse_result incomplete(std::size_t need) {
  proxy_parse_result r;
  r.size = need;
  return r;
}

inline proxy_parse_result invalid(std::string why) {
  proxy_parse_result r;
  r.status = proxy_parse_status::invalid;
  r.error = std::move(why);
  return r;
}

inline proxy_parse_result complete(std::size_t size, proxy_header h, bool crc) {
  proxy_parse_result r;
  r.status = proxy_parse_status::complete;
  r.size = size;
  r.header = std::move(h);
  r.crc32c = crc;
  return r;
}

// --- v1 ----------------------------------------------------------------------------------

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Whether `f` can begin a dotted-quad IPv4 address without leading zeros.
constexpr bool v4_prefix_ok(std::string_view f) noexcept {
  int parts = 1, digits = 0, value = 0;
  for (const char c : f) {
    if (c == '.') {
      if (digits == 0 || ++parts > 4) return false;
      digits = value = 0;
    } else if (is_digit(c)) {
      if (digits == 1 && value == 0) return false;  // a leading zero
      value = value * 10 + (c - '0');
      if (++digits > 3 || value > 255) return false;
    } else {
      return false;
    }
  }
  return true;
}

// Whether `f` can begin an IPv6 address in a form ip_address::parse reads. It catches what can
// be caught as the bytes arrive (a bad character, a fifth hex digit, ":::", a second "::", a bad
// dotted-quad tail); the full parse at the end of the field decides the rest.
constexpr bool v6_prefix_ok(std::string_view f) noexcept {
  if (f.size() > v6_text_max) return false;
  if (f.size() >= 2 && f[0] == ':' && f[1] != ':') return false;
  bool double_colon = false;
  int group = 0;            // hex digits since the last ':'
  std::size_t tail = npos;  // where a dotted-quad tail starts
  for (std::size_t i = 0; i < f.size(); ++i) {
    const char c = f[i];
    if (c == ':') {
      if (tail != npos) return false;
      if (i > 0 && f[i - 1] == ':') {
        if (double_colon) return false;
        double_colon = true;
      }
      group = 0;
    } else if (c == '.') {
      if (tail == npos) tail = i - static_cast<std::size_t>(group);
    } else if (is_hex(c)) {
      if (tail == npos && ++group > 4) return false;
    } else {
      return false;
    }
  }
  return tail == npos || v4_prefix_ok(f.substr(tail));
}

inline constexpr std::string_view v1_field_names[] = {"keyword",        "protocol",
                                                      "source address", "destination address",
                                                      "source port",    "destination port"};

// Checks an address field: all of it when `ended`, else the part that has arrived. Sets `out`
// when `ended` and valid. Returns the reason it is invalid, or "".
inline std::string v1_address_error(std::string_view f, bool ended, bool v6, std::string_view name,
                                    ip_address& out) {
  const bool colon = f.find(':') != npos;
  const bool dot = f.find('.') != npos;
  // A colon makes it IPv6; a dot with no colon (or, at the end, no colon at all) IPv4.
  if (v6 ? (!colon && (dot || ended)) : colon) {
    return "v1 header says " + std::string(v6 ? "TCP6" : "TCP4") + " but its " + std::string(name) +
           " " + quote(f) + " is not " + (v6 ? "IPv6" : "IPv4");
  }
  if (!ended) {
    if (v6 ? v6_prefix_ok(f) : v4_prefix_ok(f)) return {};
    return "v1 header has a bad " + std::string(name) + " " + quote(f) + " (not an " +
           (v6 ? "IPv6" : "IPv4") + " address)";
  }
  auto a = ip_address::parse(f);
  if (!a) return "v1 header has a bad " + std::string(name) + ": " + a.error().message;
  LBKIT_ASSERT(a->is_v6() == v6, "the colon test decides the family ip_address::parse reads");
  out = *a;
  return {};
}

// Checks a port field (or the part that has arrived): digits, no leading zero, <= 65535.
inline std::string v1_port_error(std::string_view f, std::string_view name, std::uint16_t& out) {
  if (f.empty()) return {};
  for (const char c : f) {
    if (!is_digit(c)) {
      return "v1 header has a bad " + std::string(name) + " " + quote(f) +
             " (want a decimal number 0..65535)";
    }
  }
  if (f.size() > 1 && f[0] == '0') {
    return "v1 header has " + std::string(name) + " " + quote(f) +
           " with a leading zero (not allowed: some parsers read it as octal)";
  }
  const auto v = parse_decimal(f, 65535);
  if (!v) return "v1 header has " + std::string(name) + " " + std::string(f) + " above 65535";
  out = static_cast<std::uint16_t>(*v);
  return {};
}

// Checks the text of a v1 line before its CRLF: all of it when `whole`, else the part that has
// arrived. Fills `h` when `whole` and valid. Returns the reason it is invalid, or "".
inline std::string v1_check(std::string_view line, bool whole, proxy_header& h) {
  static constexpr std::string_view protocols[] = {"TCP4", "TCP6", "UNKNOWN"};
  bool v6 = false;
  ip_address addresses[2];
  std::uint16_t ports[2] = {};
  std::size_t start = 0;
  std::size_t index = 0;
  for (;; ++index) {
    const auto space = line.find(' ', start);
    const bool ended = space != npos || whole;
    const auto f = line.substr(start, space == npos ? npos : space - start);
    const auto name = index < 6 ? v1_field_names[index] : std::string_view();
    if (index == 0) {
      if (ended ? f != "PROXY" : !std::string_view("PROXY").starts_with(f)) {
        return "not a PROXY protocol header: a v1 header starts with 'PROXY ', these bytes with " +
               quote(line.substr(0, 16));
      }
    } else if (index == 1) {
      const bool known =
          std::any_of(std::begin(protocols), std::end(protocols),
                      [&](std::string_view p) { return ended ? f == p : p.starts_with(f); });
      if (!known) {
        if (f.empty()) {
          return "v1 header has an empty protocol (fields are separated by exactly one space)";
        }
        return "v1 header has protocol " + quote(f) + " (want TCP4, TCP6 or UNKNOWN)";
      }
      if (ended && f == "UNKNOWN") {
        // §2.1: the receiver ignores whatever follows, up to the CRLF.
        h = proxy_header{};
        h.version = proxy_version::v1;
        h.family = proxy_family::unspec;
        h.transport = proxy_transport::unspec;
        return {};
      }
      v6 = f == "TCP6";
    } else if (index <= 5) {
      if (ended && f.empty()) {
        return "v1 header has an empty " + std::string(name) +
               " (fields are separated by exactly one space)";
      }
      auto e = index <= 3 ? v1_address_error(f, ended, v6, name, addresses[index - 2])
                          : v1_port_error(f, name, ports[index - 4]);
      if (!e.empty()) return e;
    } else {
      return "v1 header has a space after the destination port, where CRLF must follow";
    }
    if (space == npos) break;
    start = space + 1;
  }
  if (!whole) return {};
  if (index < 5) return "v1 header is missing the " + std::string(v1_field_names[index + 1]);
  h = proxy_header{};
  h.version = proxy_version::v1;
  h.family = v6 ? proxy_family::inet6 : proxy_family::inet;
  h.transport = proxy_transport::stream;
  h.source = endpoint(addresses[0], ports[0]);
  h.destination = endpoint(addresses[1], ports[1]);
  return {};
}

inline proxy_parse_result parse_v1(std::string_view s, const proxy_parse_options& o) {
  const std::size_t limit = std::min(proxy_v1_max_size, o.max_size);
  if (limit < v1_min_size) {
    return invalid("a v1 header takes at least 15 bytes, above proxy_parse_options::max_size " +
                   std::to_string(o.max_size));
  }
  // The CR of the CRLF must sit at offset limit - 2 or before; look no further.
  const auto window = s.substr(0, std::min(s.size(), limit - 1));
  const auto end = window.find_first_of("\r\n");
  proxy_header h;
  if (auto e = v1_check(window.substr(0, end), false, h); !e.empty()) return invalid(std::move(e));
  if (end == npos) {
    if (s.size() + 1 >= limit) {
      return invalid("v1 header has no CRLF within its first " + std::to_string(limit) + " bytes" +
                     (limit < proxy_v1_max_size ? " (proxy_parse_options::max_size)" : ""));
    }
    return incomplete(std::max(s.size() + 1, v1_min_size));
  }
  if (s[end] == '\n') {
    return invalid("v1 header has a bare LF at offset " + std::to_string(end) +
                   " (the line must end in CRLF)");
  }
  if (end + 1 == s.size()) return incomplete(s.size() + 1);
  if (s[end + 1] != '\n') {
    return invalid("v1 header has a CR not followed by LF at offset " + std::to_string(end));
  }
  if (auto e = v1_check(window.substr(0, end), true, h); !e.empty()) return invalid(std::move(e));
  return complete(end + 2, std::move(h), false);
}

// --- v2 ----------------------------------------------------------------------------------

constexpr std::uint16_t load16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
constexpr std::uint32_t load32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

// A 108-byte AF_UNIX path field, up to its first NUL.
inline std::string unix_path(const std::uint8_t* p) {
  const auto* end = std::find(p, p + proxy_unix_path_size, std::uint8_t{0});
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p));
}

inline proxy_parse_result parse_v2(std::span<const std::uint8_t> b, const proxy_parse_options& o) {
  const std::size_t n = b.size();
  if (o.max_size < v2_fixed_size) {
    return invalid("a v2 header takes at least 16 bytes, above proxy_parse_options::max_size " +
                   std::to_string(o.max_size));
  }
  for (std::size_t i = 0; i < std::min(n, v2_signature.size()); ++i) {
    if (b[i] != v2_signature[i]) {
      return invalid("not a PROXY protocol header: byte " + std::to_string(i) + " is " +
                     hex(b[i], 2) + " where the v2 signature has " + hex(v2_signature[i], 2) +
                     " (the bytes start " + quote(chars(b.first(std::min(n, std::size_t{16})))) +
                     ")");
    }
  }
  if (n <= 12) return incomplete(v2_fixed_size);
  const unsigned version = b[12] >> 4;
  const unsigned command = b[12] & 0xfu;
  if (version != 2) {
    return invalid("v2 header has version " + std::to_string(version) +
                   " in its 13th byte (only 2 is defined)");
  }
  if (command > 1) {
    return invalid("v2 header has command " + std::to_string(command) +
                   " (want 0 LOCAL or 1 PROXY)");
  }
  const bool local = command == 0;
  if (n <= 13) return incomplete(v2_fixed_size);
  const unsigned fam = b[13] >> 4;
  const unsigned tr = b[13] & 0xfu;
  const bool defined = fam <= 3 && tr <= 2 && (fam == 0) == (tr == 0);
  if (!local && !defined) {
    if (fam > 3) {
      return invalid("v2 header has address family " + std::to_string(fam) +
                     " (want 0 UNSPEC, 1 INET, 2 INET6 or 3 UNIX)");
    }
    if (tr > 2) {
      return invalid("v2 header has transport " + std::to_string(tr) +
                     " (want 0 UNSPEC, 1 STREAM or 2 DGRAM)");
    }
    return invalid(
        "v2 header has family and transport byte " + hex(b[13], 2) +
        (fam == 0 ? ": family UNSPEC with a transport" : ": a family with transport UNSPEC") +
        ", which the spec does not define");
  }
  if (n < v2_fixed_size) return incomplete(v2_fixed_size);
  const std::size_t length = load16(&b[14]);
  const std::size_t total = v2_fixed_size + length;
  if (total > o.max_size) {
    return invalid("v2 header is " + std::to_string(total) + " bytes, above the limit of " +
                   std::to_string(o.max_size) + " (proxy_parse_options::max_size)");
  }
  const auto family = defined ? static_cast<proxy_family>(fam) : proxy_family::unspec;
  const std::size_t block = address_block_size(family);
  // Under LOCAL the family is ignored; its TLVs can be found only where the family is defined
  // and its address block fits.
  bool read_tlvs = true;
  if (length < block) {
    if (!local) {
      return invalid("v2 header has length " + std::to_string(length) + ", too short for the " +
                     std::to_string(block) + "-byte " + std::string(family_name(family)) +
                     " address block");
    }
    read_tlvs = false;
  }
  if (!defined) read_tlvs = false;
  const std::size_t skip = read_tlvs ? block : length;
  if (n < v2_fixed_size + skip) return incomplete(total);

  proxy_header h;
  h.version = proxy_version::v2;
  if (local) {
    h.command = proxy_command::local;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
  } else {
    h.command = proxy_command::proxy;
    h.family = family;
    h.transport = static_cast<proxy_transport>(tr);
    const std::uint8_t* a = &b[v2_fixed_size];
    if (family == proxy_family::inet) {
      std::array<std::uint8_t, 4> src, dst;
      std::copy(a, a + 4, src.begin());
      std::copy(a + 4, a + 8, dst.begin());
      h.source = endpoint(ip_address::v4(src), load16(a + 8));
      h.destination = endpoint(ip_address::v4(dst), load16(a + 10));
    } else if (family == proxy_family::inet6) {
      std::array<std::uint8_t, 16> src, dst;
      std::copy(a, a + 16, src.begin());
      std::copy(a + 16, a + 32, dst.begin());
      h.source = endpoint(ip_address::v6(src), load16(a + 32));
      h.destination = endpoint(ip_address::v6(dst), load16(a + 34));
    } else if (family == proxy_family::unix_socket) {
      h.source_path = unix_path(a);
      h.destination_path = unix_path(a + proxy_unix_path_size);
    }
  }

  std::size_t pos = v2_fixed_size + skip;
  std::size_t crc_at = 0;  // offset of the CRC32C value, if any
  while (pos < total) {
    const std::size_t left = total - pos;
    if (left < 3) {
      return invalid("v2 header has a truncated TLV at offset " + std::to_string(pos) + ": " +
                     std::to_string(left) + " byte(s) left where a TLV needs at least 3");
    }
    if (n < pos + 3) return incomplete(total);
    const std::uint8_t type = b[pos];
    const std::size_t size = load16(&b[pos + 1]);
    if (size > left - 3) {
      return invalid("v2 header has a truncated TLV: type " + hex(type, 2) + " at offset " +
                     std::to_string(pos) + " declares a " + std::to_string(size) +
                     "-byte value, but the header has " + std::to_string(left - 3) +
                     " byte(s) left");
    }
    if (type == proxy_tlv_crc32c) {
      if (size != 4) {
        return invalid("v2 header has a CRC32C TLV with a " + std::to_string(size) +
                       "-byte value (want 4)");
      }
      if (crc_at != 0) return invalid("v2 header has more than one CRC32C TLV");
      crc_at = pos + 3;
    } else if (type == proxy_tlv_unique_id && size > proxy_unique_id_max_size) {
      return invalid("v2 header has a UNIQUE_ID TLV of " + std::to_string(size) +
                     " bytes, above the 128 the spec allows");
    }
    if (n < pos + 3 + size) return incomplete(total);
    if (type != proxy_tlv_crc32c) {
      h.tlvs.push_back(proxy_tlv{type, std::string(chars(b.subspan(pos + 3, size)))});
    }
    pos += 3 + size;
  }
  if (n < total) return incomplete(total);  // a LOCAL block skipped unread

  if (crc_at != 0) {
    // §2.2.3: the checksum of the whole header with the checksum field zeroed.
    static constexpr std::uint8_t zeros[4] = {};
    const std::uint32_t want = load32(&b[crc_at]);
    std::uint32_t got = crc32c(b.first(crc_at));
    got = crc32c(zeros, got);
    got = crc32c(b.subspan(crc_at + 4, total - crc_at - 4), got);
    if (got != want) {
      return invalid("v2 header fails its CRC32C check: the TLV holds " + hex(want, 8) +
                     ", the header sums to " + hex(got, 8));
    }
  }
  return complete(total, std::move(h), crc_at != 0);
}

// --- encoding ----------------------------------------------------------------------------

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

inline result<void> check_path(const std::string& path, const char* name) {
  if (path.size() > proxy_unix_path_size) {
    return make_error(errc::out_of_range, std::string("PROXY header's ") + name + " path is " +
                                              std::to_string(path.size()) +
                                              " bytes, above the 108 an AF_UNIX address holds");
  }
  if (path.find('\0') != std::string::npos) {
    return make_error(errc::invalid_argument, std::string("PROXY header's ") + name + " path " +
                                                  quote(path) +
                                                  " contains a NUL byte, which would end it early");
  }
  return {};
}

inline std::size_t tlv_bytes(const proxy_header& h, const proxy_write_options& o) noexcept {
  std::size_t n = o.crc32c ? crc_tlv_size : 0;
  for (const auto& t : h.tlvs) n += 3 + t.value.size();
  return n;
}

inline result<void> check(const proxy_header& h, const proxy_write_options& o) {
  if (static_cast<unsigned>(h.command) > 1 || static_cast<unsigned>(h.family) > 3 ||
      static_cast<unsigned>(h.transport) > 2) {
    return make_error(errc::invalid_argument,
                      "PROXY header has a command, family or transport outside its enum");
  }
  const bool ip = h.family == proxy_family::inet || h.family == proxy_family::inet6;
  if (h.version == proxy_version::v1) {
    const auto no = [](const char* what) {
      return make_error(errc::invalid_argument,
                        std::string("a v1 PROXY header cannot carry ") + what + "; use v2");
    };
    if (h.command == proxy_command::local) {
      return no("the LOCAL command (send family unspec, 'PROXY UNKNOWN', or the real endpoints)");
    }
    if (!h.tlvs.empty()) return no("TLVs");
    if (o.crc32c) return no("a CRC32C checksum");
    if (h.family == proxy_family::unix_socket) return no("AF_UNIX addresses");
    if (ip && h.transport != proxy_transport::stream)
      return no("a transport other than stream (TCP)");
    if (ip) return check_endpoints(h);
    return {};
  }
  if (h.version != proxy_version::v2) {
    return make_error(errc::invalid_argument, "PROXY header has version " +
                                                  std::to_string(static_cast<unsigned>(h.version)) +
                                                  " (want 1 or 2)");
  }
  if (h.command == proxy_command::proxy) {
    if (h.family != proxy_family::unspec && h.transport == proxy_transport::unspec) {
      return make_error(errc::invalid_argument, "a v2 PROXY header of family " +
                                                    std::string(family_name(h.family)) +
                                                    " needs transport stream or dgram, not unspec");
    }
    if (ip) {
      if (auto r = check_endpoints(h); !r) return r;
    }
    if (h.family == proxy_family::unix_socket) {
      if (auto r = check_path(h.source_path, "source"); !r) return r;
      if (auto r = check_path(h.destination_path, "destination"); !r) return r;
    }
  }
  for (const auto& t : h.tlvs) {
    if (t.type == proxy_tlv_crc32c) {
      return make_error(errc::invalid_argument,
                        "PROXY header has a CRC32C TLV in tlvs; set proxy_write_options::crc32c "
                        "instead, so that it is computed over the final bytes");
    }
    if (t.value.size() > 65535) {
      return make_error(errc::out_of_range, "PROXY header has a TLV of type " + hex(t.type, 2) +
                                                " with " + std::to_string(t.value.size()) +
                                                " bytes, above the 65535 a TLV holds");
    }
    if (t.type == proxy_tlv_unique_id && t.value.size() > proxy_unique_id_max_size) {
      return make_error(errc::out_of_range, "PROXY header has a UNIQUE_ID TLV of " +
                                                std::to_string(t.value.size()) +
                                                " bytes, above the 128 the spec allows");
    }
  }
  const std::size_t block = h.command == proxy_command::proxy ? address_block_size(h.family) : 0;
  const std::size_t length = block + tlv_bytes(h, o);
  if (length > 65535) {
    return make_error(errc::out_of_range, "v2 PROXY header would need " + std::to_string(length) +
                                              " bytes after its 16 fixed ones; at most 65535 fit");
  }
  return {};
}

inline std::string v1_line(const proxy_header& h) {
  if (h.family == proxy_family::unspec) return "PROXY UNKNOWN\r\n";
  std::string s = h.family == proxy_family::inet ? "PROXY TCP4 " : "PROXY TCP6 ";
  s += h.source.address().to_string();
  s += ' ';
  s += h.destination.address().to_string();
  s += ' ';
  s += std::to_string(h.source.port());
  s += ' ';
  s += std::to_string(h.destination.port());
  s += "\r\n";
  return s;
}

inline void store16(std::uint8_t* p, std::size_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v & 0xffu);
}

inline void write_v2(const proxy_header& h, std::span<std::uint8_t> out, std::size_t total,
                     const proxy_write_options& o) noexcept {
  std::uint8_t* p = out.data();
  std::copy(v2_signature.begin(), v2_signature.end(), p);
  const bool local = h.command == proxy_command::local;
  p[12] = static_cast<std::uint8_t>(0x20u | (local ? 0u : 1u));
  p[13] = local || h.family == proxy_family::unspec
              ? std::uint8_t{0}
              : static_cast<std::uint8_t>(static_cast<unsigned>(h.family) << 4 |
                                          static_cast<unsigned>(h.transport));
  store16(p + 14, total - v2_fixed_size);
  std::size_t pos = v2_fixed_size;
  if (!local) {
    if (h.family == proxy_family::inet || h.family == proxy_family::inet6) {
      const auto src = h.source.address().bytes();
      const auto dst = h.destination.address().bytes();
      std::copy(src.begin(), src.end(), p + pos);
      std::copy(dst.begin(), dst.end(), p + pos + src.size());
      pos += 2 * src.size();
      store16(p + pos, h.source.port());
      store16(p + pos + 2, h.destination.port());
      pos += 4;
    } else if (h.family == proxy_family::unix_socket) {
      for (const std::string* path : {&h.source_path, &h.destination_path}) {
        std::memset(p + pos, 0, proxy_unix_path_size);
        std::memcpy(p + pos, path->data(), path->size());
        pos += proxy_unix_path_size;
      }
    }
  }
  for (const auto& t : h.tlvs) {
    p[pos] = t.type;
    store16(p + pos + 1, t.value.size());
    if (!t.value.empty()) std::memcpy(p + pos + 3, t.value.data(), t.value.size());
    pos += 3 + t.value.size();
  }
  if (o.crc32c) {
    p[pos] = proxy_tlv_crc32c;
    store16(p + pos + 1, 4);
    std::memset(p + pos + 3, 0, 4);
    const std::uint32_t sum = crc32c(out.first(total));
    for (int i = 0; i < 4; ++i)
      p[pos + 3 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sum >> (24 - 8 * i));
    pos += crc_tlv_size;
  }
  LBKIT_ASSERT(pos == total, "write_v2 wrote a different size than encoded_size computed");
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

inline proxy_parse_result parse_proxy_header(std::span<const std::uint8_t> bytes,
                                             const proxy_parse_options& options) {
  namespace pp = detail::proxy_protocol;
  if (!options.accept_v1 && !options.accept_v2) {
    return pp::invalid("proxy_parse_options accepts neither v1 nor v2 headers");
  }
  if (bytes.empty()) {
    return pp::incomplete(options.accept_v1 ? pp::v1_min_size : pp::v2_fixed_size);
  }
  if (bytes[0] == 'P' && options.accept_v1) return pp::parse_v1(pp::chars(bytes), options);
  if (bytes[0] == '\r' && options.accept_v2) return pp::parse_v2(bytes, options);
  const char* want = options.accept_v1 && options.accept_v2 ? "'P' (v1) or CR (v2)"
                     : options.accept_v1                    ? "'P' (only v1 is accepted)"
                                                            : "CR (only v2 is accepted)";
  return pp::invalid(
      "not a PROXY protocol header: the bytes start " +
      quote(pp::chars(bytes.first(std::min(bytes.size(), std::size_t{16})))) +
      ", and a header starts with " + want);
}

inline proxy_parse_result parse_proxy_header(std::string_view bytes,
                                             const proxy_parse_options& options) {
  return parse_proxy_header(std::span<const std::uint8_t>(
                                reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
                            options);
}

inline std::size_t encoded_size(const proxy_header& h, const proxy_write_options& options) {
  namespace pp = detail::proxy_protocol;
  if (h.version == proxy_version::v1) return pp::v1_line(h).size();
  const std::size_t block =
      h.command == proxy_command::proxy ? pp::address_block_size(h.family) : 0;
  return pp::v2_fixed_size + block + pp::tlv_bytes(h, options);
}

inline result<std::size_t> write_proxy_header(const proxy_header& h, std::span<std::uint8_t> out,
                                              const proxy_write_options& options) {
  namespace pp = detail::proxy_protocol;
  if (auto ok = pp::check(h, options); !ok) return unexpected<error>(ok.error());
  if (h.version == proxy_version::v1) {
    const std::string line = pp::v1_line(h);
    if (out.size() < line.size()) {
      return make_error(errc::out_of_range, "the buffer holds " + std::to_string(out.size()) +
                                                " bytes; the v1 PROXY header needs " +
                                                std::to_string(line.size()));
    }
    std::memcpy(out.data(), line.data(), line.size());
    return line.size();
  }
  const std::size_t total = encoded_size(h, options);
  if (out.size() < total) {
    return make_error(errc::out_of_range, "the buffer holds " + std::to_string(out.size()) +
                                              " bytes; the v2 PROXY header needs " +
                                              std::to_string(total));
  }
  pp::write_v2(h, out, total, options);
  return total;
}

inline result<std::vector<std::uint8_t>> encode_proxy_header(const proxy_header& h,
                                                             const proxy_write_options& options) {
  if (auto ok = detail::proxy_protocol::check(h, options); !ok) {
    return unexpected<error>(ok.error());
  }
  std::vector<std::uint8_t> out(encoded_size(h, options));
  auto n = write_proxy_header(h, out, options);
  if (!n) return unexpected<error>(n.error());
  return out;
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
  return s;
}

}  // namespace lbkit
