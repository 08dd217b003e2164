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
//
// The pieces: net/proxy_header.hpp (the header and its vocabulary), net/proxy_v1.hpp and
// net/proxy_v2.hpp (one wire format each), lbkit/crc32c.hpp (v2's checksum). Verdicts are
// lbkit::parse_result (result.hpp), the shape every incremental parser of lbkit reports in.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lbkit/net/proxy_header.hpp"
#include "lbkit/net/proxy_v1.hpp"
#include "lbkit/net/proxy_v2.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

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

// The bytes write_proxy_header needs for `h`. Meaningless for a header it rejects.
// Thread safety: thread-safe.
inline std::size_t encoded_size(const proxy_header& h);

// Writes `h` at the start of `out` and returns the bytes written. Fails, leaving `out` as it
// was, when `out` is too small (errc::out_of_range) or `h` cannot be encoded: endpoints not of
// the header's family, a family other than unspec without a transport, v1 with LOCAL, TLVs, a
// checksum, AF_UNIX or datagrams; a path above 108 bytes or with a NUL; a CRC32C TLV in `tlvs`
// (ask for one with proxy_header::crc32c); a TLV value above 65535 bytes or a UNIQUE_ID above 128;
// a v2 header above proxy_v2_max_size.
// Thread safety: thread-safe.
inline result<std::size_t> write_proxy_header(const proxy_header& h, std::span<std::uint8_t> out);

// The encoded header in a new buffer; fails as write_proxy_header does.
inline result<std::vector<std::uint8_t>> encode_proxy_header(const proxy_header& h);

// ---------------------------------------------------------------------------------------
// Implementation

namespace detail::proxy_protocol {

// Whether `h` can be encoded: its enums in range, then the rules of its version.
inline result<void> check(const proxy_header& h) {
  if (static_cast<unsigned>(h.command) > 1 || static_cast<unsigned>(h.family) > 3 ||
      static_cast<unsigned>(h.transport) > 2) {
    return make_error(errc::invalid_argument,
                      "PROXY header has a command, family or transport outside its enum");
  }
  if (h.version == proxy_version::v1) return check_v1(h);
  if (h.version != proxy_version::v2) {
    return make_error(errc::invalid_argument, "PROXY header has version " +
                                                  std::to_string(static_cast<unsigned>(h.version)) +
                                                  " (want 1 or 2)");
  }
  return check_v2(h);
}

}  // namespace detail::proxy_protocol

inline proxy_parse_result parse_proxy_header(std::span<const std::uint8_t> bytes,
                                             const proxy_parse_options& options) {
  namespace pp = detail::proxy_protocol;
  if (!options.accept_v1 && !options.accept_v2) {
    return pp::verdict::invalid("proxy_parse_options accepts neither v1 nor v2 headers");
  }
  if (bytes.empty()) {
    return pp::verdict::incomplete(options.accept_v1 ? pp::v1_min_size : pp::v2_fixed_size);
  }
  if (bytes[0] == 'P' && options.accept_v1) return pp::parse_v1(pp::chars(bytes), options);
  if (bytes[0] == '\r' && options.accept_v2) return pp::parse_v2(bytes, options);
  const char* want = options.accept_v1 && options.accept_v2 ? "'P' (v1) or CR (v2)"
                     : options.accept_v1                    ? "'P' (only v1 is accepted)"
                                                            : "CR (only v2 is accepted)";
  return pp::verdict::invalid(
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

inline std::size_t encoded_size(const proxy_header& h) {
  namespace pp = detail::proxy_protocol;
  if (h.version == proxy_version::v1) return pp::v1_line(h).size();
  const std::size_t block =
      h.command == proxy_command::proxy ? pp::address_block_size(h.family) : 0;
  return pp::v2_fixed_size + block + pp::tlv_bytes(h);
}

inline result<std::size_t> write_proxy_header(const proxy_header& h, std::span<std::uint8_t> out) {
  namespace pp = detail::proxy_protocol;
  if (auto ok = pp::check(h); !ok) return unexpected<error>(ok.error());
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
  const std::size_t total = encoded_size(h);
  if (out.size() < total) {
    return make_error(errc::out_of_range, "the buffer holds " + std::to_string(out.size()) +
                                              " bytes; the v2 PROXY header needs " +
                                              std::to_string(total));
  }
  pp::write_v2(h, out, total);
  return total;
}

inline result<std::vector<std::uint8_t>> encode_proxy_header(const proxy_header& h) {
  if (auto ok = detail::proxy_protocol::check(h); !ok) {
    return unexpected<error>(ok.error());
  }
  std::vector<std::uint8_t> out(encoded_size(h));
  auto n = write_proxy_header(h, out);
  if (!n) return unexpected<error>(n.error());
  return out;
}

}  // namespace lbkit
