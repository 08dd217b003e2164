// SPDX-License-Identifier: MIT
// Fuzz target for the text and socket-address parsers of lbkit/endpoint.hpp: ip_address::parse
// (an address alone, as in a CIDR or a Host literal), endpoint::parse (ADDR:PORT, with port 0
// refused or allowed) and endpoint::from_sockaddr. The first byte chooses the port_zero mode;
// the rest is the text. Properties:
//   1. ip_address::parse accepts exactly what glibc's inet_pton accepts (AF_INET when the text
//      has no ':', AF_INET6 otherwise), with the same bytes; an accepted address prints as
//      inet_ntop prints it (RFC 5952) wherever glibc does not choose the deprecated
//      "::a.b.c.d" form, and its text parses back to it.
//   2. endpoint::parse agrees with a reference written from its contract: "v4:port" with one
//      ':' or "[v6]:port", the port decimal digits within range; an accepted endpoint's
//      to_string() parses back to it in both modes (port 0 only where allowed).
//   3. Every rejection has a message that is non-empty, free of control characters and
//      bounded however long the input is (parsers quote at most 64 bytes of untrusted text
//      each time).
//   4. Endpoints survive to_sockaddr/from_sockaddr, and the input read as a socket address
//      either is refused with a message or makes an endpoint that survives the same trip.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <lbkit/endpoint.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message

// What glibc makes of `text` as an address of the family parse() would try; nothing when
// inet_pton refuses it or the text holds a NUL (inet_pton reads a C string).
std::optional<lbkit::ip_address> reference_address(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  const std::string s(text);
  if (text.find(':') == std::string_view::npos) {
    std::array<std::uint8_t, 4> b{};
    if (::inet_pton(AF_INET, s.c_str(), b.data()) != 1) return std::nullopt;
    return lbkit::ip_address::v4(b);
  }
  std::array<std::uint8_t, 16> b{};
  if (::inet_pton(AF_INET6, s.c_str(), b.data()) != 1) return std::nullopt;
  return lbkit::ip_address::v6(b);
}

void check_address(std::string_view text) {
  const auto a = lbkit::ip_address::parse(text);
  const auto want = reference_address(text);
  if (text.find('\0') == std::string_view::npos) {
    if (a.has_value() != want.has_value()) {
      std::fprintf(stderr, "ip_address::parse(%s) %s, inet_pton %s\n", lbkit::quote(text).c_str(),
                   a ? "accepts" : "rejects", want ? "accepts" : "rejects");
      fail("ip_address::parse agrees with inet_pton", __LINE__);
    }
  }
  if (!a) {
    check_message(a.error());
    return;
  }
  FUZZ_CHECK(!want || *a == *want);
  const std::string shown = a->to_string();
  const auto again = lbkit::ip_address::parse(shown);
  FUZZ_CHECK(again && *again == *a);
  FUZZ_CHECK(again->to_string() == shown);

  // RFC 5952 text, as inet_ntop writes it; glibc alone writes ::a.b.c.d for the deprecated
  // IPv4-compatible addresses (and 0.0.0.0/8 inside ::/96), which lbkit writes in hex.
  const auto b = a->bytes();
  const bool compatible =
      a->is_v6() && std::all_of(b.begin(), b.begin() + 12, [](auto x) { return x == 0; });
  if (!compatible) {
    char buf[INET6_ADDRSTRLEN];
    FUZZ_CHECK(::inet_ntop(a->is_v4() ? AF_INET : AF_INET6, b.data(), buf, sizeof buf) != nullptr);
    if (shown != buf) {
      std::fprintf(stderr, "to_string %s, inet_ntop %s\n", shown.c_str(), buf);
      fail("to_string is the RFC 5952 text", __LINE__);
    }
  }
}

// endpoint::parse's contract, written out: nothing when it should refuse `text`.
std::optional<lbkit::endpoint> reference_endpoint(std::string_view text, lbkit::port_zero zero) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (host.find(':') == std::string_view::npos) return std::nullopt;  // brackets: IPv6 only
  } else {
    const auto colon = text.find(':');
    if (colon == std::string_view::npos || text.find(':', colon + 1) != std::string_view::npos) {
      return std::nullopt;  // a bare IPv6 address with a port is ambiguous
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  // Decimal digits, leading zeros allowed; as parse_decimal, at most 20 of them.
  if (port.empty() || port.size() > 20) return std::nullopt;
  std::uint64_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    p = std::min<std::uint64_t>(p * 10 + static_cast<std::uint64_t>(c - '0'), 1'000'000);
  }
  if (p > 65535 || (p == 0 && zero == lbkit::port_zero::reject)) return std::nullopt;
  const auto a = lbkit::ip_address::parse(host);
  if (!a) return std::nullopt;
  return lbkit::endpoint(*a, static_cast<std::uint16_t>(p));
}

void check_roundtrip_sockaddr(const lbkit::endpoint& e) {
  sockaddr_storage ss;
  const socklen_t len = e.to_sockaddr(ss);
  FUZZ_CHECK(len == (e.address().is_v4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)));
  const auto back = lbkit::endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  FUZZ_CHECK(back && *back == e);
  FUZZ_CHECK(lbkit::hash_value(*back) == lbkit::hash_value(e));
}

void check_endpoint(std::string_view text, lbkit::port_zero zero) {
  const auto e = lbkit::endpoint::parse(text, zero);
  const auto want = reference_endpoint(text, zero);
  if (e.has_value() != want.has_value()) {
    std::fprintf(stderr, "endpoint::parse(%s) %s, the reference %s\n", lbkit::quote(text).c_str(),
                 e ? "accepts" : "rejects", want ? "accepts" : "rejects");
    fail("endpoint::parse agrees with its contract", __LINE__);
  }
  if (!e) {
    check_message(e.error());
    return;
  }
  FUZZ_CHECK(*e == *want);
  FUZZ_CHECK(e->port() != 0 || zero == lbkit::port_zero::allow);
  const std::string shown = e->to_string();
  const auto again = lbkit::endpoint::parse(shown, zero);
  FUZZ_CHECK(again && *again == *e);
  FUZZ_CHECK(again->to_string() == shown);
  // The allowing mode accepts everything the refusing one does.
  FUZZ_CHECK(lbkit::endpoint::parse(text, lbkit::port_zero::allow).has_value());
  check_roundtrip_sockaddr(*e);
}

// The input's bytes as a socket address of the length they give.
void check_sockaddr(std::string_view bytes) {
  sockaddr_storage ss{};
  const std::size_t n = std::min(bytes.size(), sizeof ss);
  std::memcpy(&ss, bytes.data(), n);
  const auto e = lbkit::endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss),
                                                static_cast<socklen_t>(n));
  if (!e) {
    check_message(e.error());
    return;
  }
  FUZZ_CHECK(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
  check_roundtrip_sockaddr(*e);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto zero = (data[0] & 1) != 0 ? lbkit::port_zero::allow : lbkit::port_zero::reject;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  check_address(text);
  check_endpoint(text, zero);
  // The host part alone too, bracketed or not, so that addresses the fuzzer finds for
  // endpoints are checked against inet_pton as well.
  if (!text.empty() && text.front() == '[') {
    check_address(text.substr(1, text.find(']') - 1));
  } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    check_address(text.substr(0, colon));
  }
  check_sockaddr(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
