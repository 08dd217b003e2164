// SPDX-License-Identifier: MIT
// Shared by the examples: checks that the addresses a program listens on are its own. Both
// examples give every thread its own SO_REUSEPORT socket; the kernel then lets any other
// socket with SO_REUSEPORT (a second instance, a duplicate entry of the same configuration)
// join the group and silently take a share of the connections. So the addresses of one
// configuration must not overlap, and each must be free before the group binds it.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <lbkit/lbkit.hpp>

namespace examples {

// An address to listen on and what names it in the configuration ("--listen 0.0.0.0:80",
// "stats"), for messages.
struct named_address {
  std::string what;
  lbkit::endpoint address;
};

// Whether a socket bound to `a` and one bound to `b` would take the same connections: the
// same port, and the same address or a wildcard of a family that covers the other (a dual
// stack [::] covers IPv4 too). Port 0 asks for a fresh port: it overlaps nothing.
inline bool overlap(const lbkit::endpoint& a, const lbkit::endpoint& b) {
  if (a.port() != b.port() || a.port() == 0) return false;
  const auto wildcard = [](const lbkit::ip_address& ip) {
    const auto bytes = ip.bytes();
    return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t x) { return x == 0; });
  };
  const lbkit::ip_address x = a.address().unmapped(), y = b.address().unmapped();
  if (x == y) return true;
  if (wildcard(x) && (x.is_v6() || y.is_v4())) return true;
  return wildcard(y) && (y.is_v6() || x.is_v4());
}

// Refuses two entries of one configuration that overlap: "--listen 127.0.0.1:8080 and stats
// 0.0.0.0:8080 overlap (the same port on the same or a wildcard address)".
inline lbkit::result<void> check_distinct(const std::vector<named_address>& addresses) {
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    for (std::size_t j = i + 1; j < addresses.size(); ++j) {
      if (overlap(addresses[i].address, addresses[j].address)) {
        return lbkit::make_error(lbkit::errc::invalid_argument,
                                 addresses[i].what + " " + addresses[i].address.to_string() +
                                     " and " + addresses[j].what + " " +
                                     addresses[j].address.to_string() +
                                     " overlap (the same port on the same or a wildcard "
                                     "address): each address may be given once");
      }
    }
  }
  return {};
}

// Refuses an address that another socket holds, by binding it once without SO_REUSEPORT:
// the kernel then refuses it if anything else is bound there, a second instance included.
// Call it before the SO_REUSEPORT group binds; port 0 needs no check. `type`: SOCK_STREAM
// (with SO_REUSEADDR, so that connections left in TIME_WAIT do not count) or SOCK_DGRAM
// (without: on UDP it would let two sockets that both set it share the port). `v6only`: as
// the program's own IPv6 sockets are (IPV6_V6ONLY), so that an IPv4 socket on the same port
// counts only when they would clash.
inline lbkit::result<void> check_free(const named_address& a, int type = SOCK_STREAM,
                                      bool v6only = false) {
  if (a.address.port() == 0) return {};
  sockaddr_storage ss{};
  const socklen_t len = a.address.to_sockaddr(ss);
  const int fd = ::socket(ss.ss_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return lbkit::make_error(
        lbkit::errc::failed_precondition,
        a.what + " " + a.address.to_string() + ": socket: " + std::strerror(errno));
  }
  const int one = 1;
  if (type == SOCK_STREAM) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6) {
    const int only = v6only ? 1 : 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only);
  }
  const int r = ::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len);
  const int err = errno;
  ::close(fd);
  if (r == 0) return {};
  std::string why = std::strerror(err);
  if (err == EADDRINUSE) why = "address in use: another program (or another instance) holds it";
  return lbkit::make_error(lbkit::errc::failed_precondition,
                           a.what + " " + a.address.to_string() + ": " + why);
}

}  // namespace examples
