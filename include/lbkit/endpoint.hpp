// SPDX-License-Identifier: MIT
// IP addresses and endpoints (address + port): strict parsing from text, canonical text
// (RFC 5952 for IPv6), conversion to and from the sockets API, ordering and hashing.
//
// Parsing never resolves names and never trusts its input: every rejection says what was
// wrong. Accepted forms are dotted-quad IPv4 without leading zeros ("10.0.0.1") and the
// RFC 4291 §2.2 IPv6 text forms, including one "::" and a trailing dotted quad. Zone ids
// ("fe80::1%eth0") are rejected: a backend address must mean the same thing on every host.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "lbkit/hash.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// An IPv4 or IPv6 address. Thread safety: thread-compatible (a value type).
// Ordering puts every IPv4 address before every IPv6 one, then compares bytes.
class ip_address {
 public:
  enum class family : std::uint8_t { v4, v6 };

  // 0.0.0.0
  constexpr ip_address() noexcept = default;

  static constexpr ip_address v4(std::array<std::uint8_t, 4> b) noexcept {
    ip_address a;
    std::copy(b.begin(), b.end(), a.bytes_.begin());
    return a;
  }
  static constexpr ip_address v6(const std::array<std::uint8_t, 16>& b) noexcept {
    ip_address a;
    a.family_ = family::v6;
    a.bytes_ = b;
    return a;
  }

  // Parses "192.0.2.1" or "2001:db8::1" (no brackets, no port, no zone).
  static result<ip_address> parse(std::string_view text);

  constexpr family af() const noexcept { return family_; }
  constexpr bool is_v4() const noexcept { return family_ == family::v4; }
  constexpr bool is_v6() const noexcept { return family_ == family::v6; }

  // The address in network order: 4 bytes for IPv4, 16 for IPv6.
  constexpr std::span<const std::uint8_t> bytes() const noexcept {
    return {bytes_.data(), is_v4() ? 4u : 16u};
  }

  // True for ::ffff:a.b.c.d, the form in which an AF_INET6 socket reports an IPv4 peer.
  constexpr bool is_v4_mapped() const noexcept {
    if (!is_v6()) return false;
    for (std::size_t i = 0; i < 10; ++i) {
      if (bytes_[i] != 0) return false;
    }
    return bytes_[10] == 0xff && bytes_[11] == 0xff;
  }
  // An IPv4-mapped address as the IPv4 address it carries; any other address unchanged.
  constexpr ip_address unmapped() const noexcept {
    return is_v4_mapped() ? v4({bytes_[12], bytes_[13], bytes_[14], bytes_[15]}) : *this;
  }

  // Canonical text: dotted quad, or RFC 5952 for IPv6 (lower case, longest run of two or
  // more zero groups shown as "::", IPv4-mapped addresses as ::ffff:a.b.c.d).
  std::string to_string() const;

  friend constexpr auto operator<=>(const ip_address&, const ip_address&) = default;
  friend constexpr bool operator==(const ip_address&, const ip_address&) = default;

 private:
  family family_ = family::v4;
  std::array<std::uint8_t, 16> bytes_{};  // IPv4 uses the first 4; the rest stay zero
};

// Whether endpoint::parse accepts port 0 (useful for "bind any free port"; never valid for
// a backend address).
enum class port_zero { reject, allow };

// An IP address and a port. Thread safety: thread-compatible (a value type).
class endpoint {
 public:
  constexpr endpoint() noexcept = default;
  constexpr endpoint(ip_address address, std::uint16_t port) noexcept
      : address_(address), port_(port) {}

  // Parses "192.0.2.1:8080" or "[2001:db8::1]:443". An IPv6 address must be bracketed when
  // a port follows; the port is decimal, 1..65535 (0 too if `zero` is port_zero::allow).
  static result<endpoint> parse(std::string_view text, port_zero zero = port_zero::reject);

  // Reads an AF_INET or AF_INET6 socket address of `len` bytes. Rejects other families,
  // short lengths and scoped (link-local with a scope id) IPv6 addresses.
  static result<endpoint> from_sockaddr(const sockaddr* sa, socklen_t len);

  // Writes the address into `out` and returns the length to pass to connect(2)/bind(2).
  socklen_t to_sockaddr(sockaddr_storage& out) const noexcept;

  constexpr const ip_address& address() const noexcept { return address_; }
  constexpr std::uint16_t port() const noexcept { return port_; }

  // "192.0.2.1:8080" or "[2001:db8::1]:443"; parse(to_string()) gives the endpoint back.
  std::string to_string() const;

  friend constexpr auto operator<=>(const endpoint&, const endpoint&) = default;
  friend constexpr bool operator==(const endpoint&, const endpoint&) = default;

 private:
  ip_address address_;
  std::uint16_t port_ = 0;
};

// XXH64 of the address bytes (4 or 16, network order) followed by the port in network
// order. Stable across platforms and releases, like every lbkit hash.
inline std::uint64_t hash_value(const ip_address& a, std::uint64_t seed = 0) noexcept {
  const auto b = a.bytes();
  char buf[16];
  std::memcpy(buf, b.data(), b.size());
  return hash_bytes(std::string_view(buf, b.size()), seed);
}
inline std::uint64_t hash_value(const endpoint& e, std::uint64_t seed = 0) noexcept {
  const auto b = e.address().bytes();
  char buf[18];
  std::memcpy(buf, b.data(), b.size());
  buf[b.size()] = static_cast<char>(e.port() >> 8);
  buf[b.size() + 1] = static_cast<char>(e.port() & 0xff);
  return hash_bytes(std::string_view(buf, b.size() + 2), seed);
}

// ---------------------------------------------------------------------------------------
// Implementation

namespace detail {

inline result<std::array<std::uint8_t, 4>> parse_v4(std::string_view s) {
  std::array<std::uint8_t, 4> out{};
  std::string_view rest = s;
  for (int i = 0; i < 4; ++i) {
    const auto dot = rest.find('.');
    const std::string_view part = i < 3 ? rest.substr(0, dot) : rest;
    if ((i < 3) == (dot == std::string_view::npos)) {
      return make_error(errc::invalid_argument,
                        "IPv4 address " + quote(s) + " does not have four dotted parts");
    }
    if (part.empty()) {
      return make_error(errc::invalid_argument, "IPv4 address " + quote(s) + " has an empty part");
    }
    if (part.size() > 1 && part[0] == '0') {
      return make_error(errc::invalid_argument, "IPv4 address " + quote(s) +
                                                    " has a leading zero in " + quote(part) +
                                                    " (ambiguous: some parsers read it as octal)");
    }
    const auto v = parse_decimal(part, 255);
    if (!v) {
      return make_error(errc::invalid_argument, "IPv4 address " + quote(s) + " has a bad part " +
                                                    quote(part) +
                                                    " (want a decimal number 0..255)");
    }
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(*v);
    if (i < 3) rest = rest.substr(dot + 1);
  }
  return out;
}

// Parses colon-separated hex groups (and, if `v4_tail`, a final dotted quad counted as two
// groups) into out[0..max). Returns the number of groups written.
inline result<int> parse_v6_groups(std::string_view whole, std::string_view part,
                                   std::uint16_t* out, int max, bool v4_tail) {
  if (part.empty()) return 0;
  int n = 0;
  while (true) {
    const auto colon = part.find(':');
    const std::string_view tok = part.substr(0, colon);
    const bool last = colon == std::string_view::npos;
    if (tok.empty()) {
      return make_error(errc::invalid_argument,
                        "IPv6 address " + quote(whole) + " has an empty group");
    }
    if (tok.find('.') != std::string_view::npos) {
      if (!last || !v4_tail) {
        return make_error(
            errc::invalid_argument,
            "IPv6 address " + quote(whole) + " has a dotted IPv4 part that is not at the end");
      }
      auto v4 = parse_v4(tok);
      if (!v4) return unexpected<error>(v4.error());
      if (n + 2 > max) break;
      out[n++] = static_cast<std::uint16_t>((*v4)[0] << 8 | (*v4)[1]);
      out[n++] = static_cast<std::uint16_t>((*v4)[2] << 8 | (*v4)[3]);
      return n;
    }
    if (tok.size() > 4) {
      return make_error(errc::invalid_argument, "IPv6 address " + quote(whole) + " has group " +
                                                    quote(tok) + " longer than 4 hex digits");
    }
    std::uint16_t g = 0;
    for (char c : tok) {
      const int d = hex_digit(c);
      if (d < 0) {
        return make_error(errc::invalid_argument, "IPv6 address " + quote(whole) +
                                                      " has a non-hex character in " + quote(tok));
      }
      g = static_cast<std::uint16_t>(g << 4 | d);
    }
    if (n == max) break;
    out[n++] = g;
    if (last) return n;
    part = part.substr(colon + 1);
  }
  return make_error(errc::invalid_argument,
                    "IPv6 address " + quote(whole) + " has too many groups");
}

inline result<std::array<std::uint8_t, 16>> parse_v6(std::string_view s) {
  if (s.find('%') != std::string_view::npos) {
    return make_error(errc::invalid_argument,
                      "IPv6 address " + quote(s) + " has a zone id; zone ids are not supported");
  }
  std::uint16_t groups[8] = {};
  const auto dc = s.find("::");
  if (dc == std::string_view::npos) {
    auto n = parse_v6_groups(s, s, groups, 8, true);
    if (!n) return unexpected<error>(n.error());
    if (*n != 8) {
      return make_error(errc::invalid_argument,
                        "IPv6 address " + quote(s) + " has fewer than 8 groups and no '::'");
    }
  } else {
    if (s.find("::", dc + 1) != std::string_view::npos) {
      return make_error(errc::invalid_argument,
                        "IPv6 address " + quote(s) + " has more than one '::'");
    }
    std::uint16_t right[8] = {};
    auto nl = parse_v6_groups(s, s.substr(0, dc), groups, 7, false);
    if (!nl) return unexpected<error>(nl.error());
    auto nr = parse_v6_groups(s, s.substr(dc + 2), right, 7 - *nl, true);
    if (!nr) return unexpected<error>(nr.error());
    std::copy(right, right + *nr, groups + (8 - *nr));
  }
  std::array<std::uint8_t, 16> out{};
  for (int i = 0; i < 8; ++i) {
    out[static_cast<std::size_t>(2 * i)] = static_cast<std::uint8_t>(groups[i] >> 8);
    out[static_cast<std::size_t>(2 * i + 1)] = static_cast<std::uint8_t>(groups[i] & 0xff);
  }
  return out;
}

inline void append_v4(std::string& out, const std::uint8_t* b) {
  for (int i = 0; i < 4; ++i) {
    if (i) out += '.';
    out += std::to_string(b[i]);
  }
}

}  // namespace detail

inline result<ip_address> ip_address::parse(std::string_view text) {
  if (text.empty()) return make_error(errc::invalid_argument, "empty IP address");
  if (text.find(':') != std::string_view::npos) {
    auto b = detail::parse_v6(text);
    if (!b) return unexpected<error>(b.error());
    return ip_address::v6(*b);
  }
  auto b = detail::parse_v4(text);
  if (!b) return unexpected<error>(b.error());
  return ip_address::v4(*b);
}

inline std::string ip_address::to_string() const {
  std::string out;
  if (is_v4()) {
    detail::append_v4(out, bytes_.data());
    return out;
  }
  std::uint16_t g[8];
  for (int i = 0; i < 8; ++i) {
    g[i] = static_cast<std::uint16_t>(bytes_[static_cast<std::size_t>(2 * i)] << 8 |
                                      bytes_[static_cast<std::size_t>(2 * i + 1)]);
  }
  // RFC 5952 §5: IPv4-mapped addresses keep the dotted quad.
  const bool mapped =
      g[0] == 0 && g[1] == 0 && g[2] == 0 && g[3] == 0 && g[4] == 0 && g[5] == 0xffff;
  const int ngroups = mapped ? 6 : 8;
  // RFC 5952 §4.2: compress the longest run (the first of equals) of two or more zero groups.
  int best = -1, best_len = 0;
  for (int i = 0; i < ngroups;) {
    if (g[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < ngroups && g[j] == 0) ++j;
    if (j - i > best_len && j - i >= 2) best = i, best_len = j - i;
    i = j;
  }
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = 0; i < ngroups; ++i) {
    if (i == best) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (i != 0 && i != best + best_len) out += ':';
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const int d = (g[i] >> shift) & 0xf;
      if (d != 0 || started || shift == 0) {
        out += hex[d];
        started = true;
      }
    }
  }
  if (mapped) {
    if (best + best_len != ngroups) out += ':';
    detail::append_v4(out, bytes_.data() + 12);
  }
  return out;
}

inline result<endpoint> endpoint::parse(std::string_view text, port_zero zero) {
  if (text.empty()) return make_error(errc::invalid_argument, "empty endpoint");
  std::string_view host, port;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      return make_error(errc::invalid_argument, "endpoint " + quote(text) + " has no closing ']'");
    }
    host = text.substr(1, close - 1);
    const auto after = text.substr(close + 1);
    if (after.empty() || after.front() != ':') {
      return make_error(errc::invalid_argument,
                        "endpoint " + quote(text) + " needs ':port' after the ']'");
    }
    port = after.substr(1);
    if (host.find(':') == std::string_view::npos) {
      return make_error(errc::invalid_argument,
                        "endpoint " + quote(text) + ": brackets are only for IPv6 addresses");
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return make_error(errc::invalid_argument, "endpoint " + quote(text) + " is missing ':port'");
    }
    if (text.find(':') != colon) {
      return make_error(errc::invalid_argument,
                        "endpoint " + quote(text) +
                            ": an IPv6 address with a port must be bracketed, as in [::1]:443");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  const auto p = parse_decimal(port, 65535);
  if (!p) {
    const bool digits =
        !port.empty() && port.find_first_not_of("0123456789") == std::string_view::npos;
    return make_error(digits ? errc::out_of_range : errc::invalid_argument,
                      "endpoint " + quote(text) + " has port " + quote(port) +
                          (digits                     ? ", above 65535"
                           : zero == port_zero::allow ? "; want a decimal number 0..65535"
                                                      : "; want a decimal number 1..65535"));
  }
  if (*p == 0 && zero == port_zero::reject) {
    return make_error(errc::out_of_range, "endpoint " + quote(text) + " has port 0");
  }
  auto addr = ip_address::parse(host);
  if (!addr) {
    return make_error(errc::invalid_argument,
                      "endpoint " + quote(text) + ": " + addr.error().message);
  }
  return endpoint(*addr, static_cast<std::uint16_t>(*p));
}

inline result<endpoint> endpoint::from_sockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) {
    return make_error(errc::invalid_argument, "socket address is missing or too short");
  }
  if (sa->sa_family == AF_INET) {
    if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) {
      return make_error(errc::invalid_argument, "AF_INET socket address is too short");
    }
    sockaddr_in in;
    std::memcpy(&in, sa, sizeof in);
    std::array<std::uint8_t, 4> b;
    std::memcpy(b.data(), &in.sin_addr, 4);
    return endpoint(ip_address::v4(b), ntohs(in.sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) {
      return make_error(errc::invalid_argument, "AF_INET6 socket address is too short");
    }
    sockaddr_in6 in6;
    std::memcpy(&in6, sa, sizeof in6);
    if (in6.sin6_scope_id != 0) {
      return make_error(errc::invalid_argument, "scoped IPv6 socket addresses are not supported");
    }
    std::array<std::uint8_t, 16> b;
    std::memcpy(b.data(), &in6.sin6_addr, 16);
    return endpoint(ip_address::v6(b), ntohs(in6.sin6_port));
  }
  return make_error(errc::invalid_argument, "socket address family " +
                                                std::to_string(sa->sa_family) +
                                                " is neither AF_INET nor AF_INET6");
}

inline socklen_t endpoint::to_sockaddr(sockaddr_storage& out) const noexcept {
  std::memset(&out, 0, sizeof out);
  const auto b = address_.bytes();
  if (address_.is_v4()) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port_);
    std::memcpy(&in.sin_addr, b.data(), 4);
    std::memcpy(&out, &in, sizeof in);
    return sizeof in;
  }
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port_);
  std::memcpy(&in6.sin6_addr, b.data(), 16);
  std::memcpy(&out, &in6, sizeof in6);
  return sizeof in6;
}

inline std::string endpoint::to_string() const {
  if (address_.is_v4()) return address_.to_string() + ':' + std::to_string(port_);
  return '[' + address_.to_string() + "]:" + std::to_string(port_);
}

}  // namespace lbkit

template <>
struct std::hash<lbkit::ip_address> {
  std::size_t operator()(const lbkit::ip_address& a) const noexcept {
    return static_cast<std::size_t>(lbkit::hash_value(a));
  }
};

template <>
struct std::hash<lbkit::endpoint> {
  std::size_t operator()(const lbkit::endpoint& e) const noexcept {
    return static_cast<std::size_t>(lbkit::hash_value(e));
  }
};
