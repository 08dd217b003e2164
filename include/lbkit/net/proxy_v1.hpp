// SPDX-License-Identifier: MIT
// PROXY protocol version 1 (spec §2.1), the text line
// "PROXY TCP4|TCP6|UNKNOWN <src> <dst> <sport> <dport>\r\n": its decoder, which checks each field
// as its bytes arrive, and its encoder. The entry points are in net/proxy_protocol.hpp.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/endpoint.hpp"
#include "lbkit/net/proxy_header.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit::detail::proxy_protocol {

inline constexpr std::size_t v1_min_size = 15;  // "PROXY UNKNOWN\r\n"
inline constexpr std::size_t v6_text_max = 45;  // ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255

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
    } else if (hex_digit(c) >= 0) {
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
    return verdict::invalid(
        "a v1 header takes at least 15 bytes, above proxy_parse_options::max_size " +
        std::to_string(o.max_size));
  }
  // The CR of the CRLF must sit at offset limit - 2 or before; look no further.
  const auto window = s.substr(0, std::min(s.size(), limit - 1));
  const auto end = window.find_first_of("\r\n");
  proxy_header h;
  if (auto e = v1_check(window.substr(0, end), false, h); !e.empty())
    return verdict::invalid(std::move(e));
  if (end == npos) {
    if (s.size() + 1 >= limit) {
      return verdict::invalid(
          "v1 header has no CRLF within its first " + std::to_string(limit) + " bytes" +
          (limit < proxy_v1_max_size ? " (proxy_parse_options::max_size)" : ""));
    }
    return verdict::incomplete(std::max(s.size() + 1, v1_min_size));
  }
  if (s[end] == '\n') {
    return verdict::invalid("v1 header has a bare LF at offset " + std::to_string(end) +
                            " (the line must end in CRLF)");
  }
  if (end + 1 == s.size()) return verdict::incomplete(s.size() + 1);
  if (s[end + 1] != '\n') {
    return verdict::invalid("v1 header has a CR not followed by LF at offset " +
                            std::to_string(end));
  }
  if (auto e = v1_check(window.substr(0, end), true, h); !e.empty())
    return verdict::invalid(std::move(e));
  return verdict::complete(end + 2, std::move(h));
}

// An error naming what `h` holds that a v1 line cannot carry, or success.
inline result<void> check_v1(const proxy_header& h) {
  const bool ip = h.family == proxy_family::inet || h.family == proxy_family::inet6;
  const auto no = [](const char* what) {
    return make_error(errc::invalid_argument,
                      std::string("a v1 PROXY header cannot carry ") + what + "; use v2");
  };
  if (h.command == proxy_command::local) {
    return no("the LOCAL command (send family unspec, 'PROXY UNKNOWN', or the real endpoints)");
  }
  if (!h.tlvs.empty()) return no("TLVs");
  if (h.crc32c) return no("a CRC32C checksum");
  if (h.family == proxy_family::unix_socket) return no("AF_UNIX addresses");
  if (ip && h.transport != proxy_transport::stream)
    return no("a transport other than stream (TCP)");
  if (ip) return check_endpoints(h);
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

}  // namespace lbkit::detail::proxy_protocol
