// SPDX-License-Identifier: MIT
// icmp_echo_probe: an L3 health check — an ICMP echo request ("ping", RFC 792) or ICMPv6 echo
// request (RFC 4443 §4) and its reply, for backends where "the host is up" is the question,
// or whose service ports say nothing a probe can check.
//
// Linux offers two ways to ping. An ICMP datagram socket (SOCK_DGRAM, IPPROTO_ICMP or
// IPPROTO_ICMPV6) needs no privilege but only opens when one of the process's groups is in
// the sysctl net.ipv4.ping_group_range (which governs ICMPv6 too; the default "1 0" allows
// nobody); the kernel then picks the echo identifier and delivers only the replies that carry
// it. A raw socket (SOCK_RAW) needs CAP_NET_RAW (root has it) and sees every ICMP message the
// host receives, so replies are matched here. The probe tries the first, falls back to the
// second, and with neither answers not_permitted naming both remedies.
#pragma once

#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/endpoint.hpp"
#include "lbkit/health/detail/socket.hpp"
#include "lbkit/health/probe.hpp"

namespace lbkit {

namespace detail {

// ICMP message types (RFC 792; RFC 4443 §2.1 for ICMPv6).
inline constexpr std::uint8_t icmp4_echo_reply = 0;
inline constexpr std::uint8_t icmp4_dest_unreachable = 3;
inline constexpr std::uint8_t icmp4_echo_request = 8;
inline constexpr std::uint8_t icmp4_time_exceeded = 11;
inline constexpr std::uint8_t icmp6_dest_unreachable = 1;
inline constexpr std::uint8_t icmp6_time_exceeded = 3;
inline constexpr std::uint8_t icmp6_echo_request = 128;
inline constexpr std::uint8_t icmp6_echo_reply = 129;
inline constexpr std::uint8_t ip_proto_icmp6 = 58;
// Socket options of raw ICMP sockets: ICMP_FILTER from <linux/icmp.h> (level SOL_RAW; that
// header's struct icmphdr clashes with glibc's), ICMP6_FILTER from <netinet/icmp6.h>.
// Both take a bit mask of ICMP types in which a set bit drops the type.
inline constexpr int icmp4_filter_option = 1;
inline constexpr int icmp6_filter_option = 1;

// The Internet checksum of RFC 1071: the one's complement of the one's complement sum of
// the message as big-endian 16-bit words, an odd last byte padded with a zero byte. Stored
// big-endian in the ICMP header, it makes the checksum of the whole message zero.
constexpr std::uint16_t internet_checksum(std::span<const std::uint8_t> bytes) noexcept {
  std::uint64_t sum = 0;
  std::size_t i = 0;
  for (; i + 1 < bytes.size(); i += 2) sum += std::uint64_t{bytes[i]} << 8 | bytes[i + 1];
  if (i < bytes.size()) sum += std::uint64_t{bytes[i]} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xffff);
}

constexpr std::uint16_t load_be16(std::span<const std::uint8_t> b, std::size_t at) noexcept {
  return static_cast<std::uint16_t>(b[at] << 8 | b[at + 1]);
}

// 64 random bits: getrandom(2), or if it cannot answer now, SplitMix64 (Steele, Lea, Flood,
// "Fast splittable pseudorandom number generators", OOPSLA 2014) of the clock and a counter,
// which still differs on every call within the process.
inline std::uint64_t random_u64() noexcept {
  std::uint64_t v = 0;
  if (::getrandom(&v, sizeof v, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof v)) return v;
  static std::atomic<std::uint64_t> calls{0};
  std::uint64_t z = static_cast<std::uint64_t>(probe_clock::now().time_since_epoch().count()) +
                    calls.fetch_add(0x9e3779b97f4a7c15, std::memory_order_relaxed);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

// Echo sequence numbers, process-wide: one relaxed fetch_add from a random start, so that
// concurrent probes (and probe objects) differ in sequence as well as in cookie.
inline std::uint16_t next_icmp_sequence() noexcept {
  static std::atomic<std::uint16_t> next{static_cast<std::uint16_t>(random_u64())};
  return next.fetch_add(1, std::memory_order_relaxed);
}

// What makes an ICMP message the answer to one echo request.
struct icmp_echo_key {
  bool v6 = false;
  std::uint16_t ident = 0;
  std::uint16_t sequence = 0;
  std::span<const std::uint8_t> payload;  // starts with the per-probe random cookie
  std::span<const std::uint8_t> target;   // the 4 or 16 address bytes the request went to
};

enum class icmp_verdict : std::uint8_t {
  other,        // not about our echo: someone else's traffic, our own request looped back
  echo_reply,   // our echo request answered, payload intact
  unreachable,  // an ICMP error quoting our echo request (destination unreachable, time
                // exceeded)
};

struct icmp_classification {
  icmp_verdict verdict = icmp_verdict::other;
  std::uint8_t type = 0;
  std::uint8_t code = 0;
};

// Whether `quoted`, the start of an ICMP message quoted in an ICMP error (RFC 792 quotes the
// first 8 bytes at least; Linux quotes up to 576 bytes in all), is our echo request. The
// part of the payload that is quoted must match too.
constexpr bool quotes_our_request(const icmp_echo_key& key,
                                  std::span<const std::uint8_t> quoted) noexcept {
  if (quoted.size() < 8) return false;
  if (quoted[0] != (key.v6 ? icmp6_echo_request : icmp4_echo_request)) return false;
  if (load_be16(quoted, 4) != key.ident || load_be16(quoted, 6) != key.sequence) return false;
  const auto body = quoted.subspan(8);
  const auto n = std::min(body.size(), key.payload.size());
  return std::equal(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(n),
                    key.payload.begin());
}

// Classifies one message read from an ICMP socket. `ip_header`: the message starts with an
// IPv4 header (raw IPv4 sockets; raw IPv6 and datagram sockets deliver the ICMP message
// alone). Never reads out of bounds, whatever the bytes.
constexpr icmp_classification classify_icmp(const icmp_echo_key& key,
                                            std::span<const std::uint8_t> msg,
                                            bool ip_header) noexcept {
  if (ip_header) {
    if (msg.size() < 20 || (msg[0] >> 4) != 4 || msg[9] != IPPROTO_ICMP) return {};
    const std::size_t ihl = std::size_t{msg[0] & 0x0fu} * 4;
    if (ihl < 20 || msg.size() < ihl) return {};
    msg = msg.subspan(ihl);
  }
  if (msg.size() < 8) return {};
  const std::uint8_t type = msg[0];
  const std::uint8_t code = msg[1];
  if (type == (key.v6 ? icmp6_echo_reply : icmp4_echo_reply)) {
    const auto body = msg.subspan(8);
    const bool ours = load_be16(msg, 4) == key.ident && load_be16(msg, 6) == key.sequence &&
                      std::equal(body.begin(), body.end(), key.payload.begin(), key.payload.end());
    return {ours ? icmp_verdict::echo_reply : icmp_verdict::other, type, code};
  }
  const bool error = key.v6 ? (type == icmp6_dest_unreachable || type == icmp6_time_exceeded)
                            : (type == icmp4_dest_unreachable || type == icmp4_time_exceeded);
  if (!error) return {};
  // The error quotes the datagram it is about: its IP header, then our ICMP message.
  const auto inner = msg.subspan(8);
  std::span<const std::uint8_t> quoted;
  if (key.v6) {
    // A fixed 40-byte IPv6 header; an echo request of ours carries no extension headers.
    if (inner.size() < 40 || (inner[0] >> 4) != 6 || inner[6] != ip_proto_icmp6) return {};
    if (!std::equal(inner.begin() + 24, inner.begin() + 40, key.target.begin(), key.target.end()))
      return {};
    quoted = inner.subspan(40);
  } else {
    if (inner.size() < 20 || (inner[0] >> 4) != 4 || inner[9] != IPPROTO_ICMP) return {};
    const std::size_t ihl = std::size_t{inner[0] & 0x0fu} * 4;
    if (ihl < 20 || inner.size() < ihl) return {};
    if (!std::equal(inner.begin() + 16, inner.begin() + 20, key.target.begin(), key.target.end()))
      return {};
    quoted = inner.subspan(ihl);
  }
  if (!quotes_our_request(key, quoted)) return {};
  return {icmp_verdict::unreachable, type, code};
}

// "destination unreachable (host unreachable)" and the like, for a probe's detail.
inline std::string describe_icmp_error(bool v6, std::uint8_t type, std::uint8_t code) {
  std::string_view what = "ICMP error";
  std::string_view why;
  if (!v6 && type == icmp4_dest_unreachable) {
    what = "ICMP destination unreachable";
    static constexpr std::string_view codes[] = {
        "network unreachable",
        "host unreachable",
        "protocol unreachable",
        "port unreachable",
        "fragmentation needed",
        "source route failed",
        "destination network unknown",
        "destination host unknown",
        "source host isolated",
        "network administratively prohibited",
        "host administratively prohibited",
        "network unreachable for type of service",
        "host unreachable for type of service",
        "communication administratively prohibited",
        "host precedence violation",
        "precedence cutoff in effect",
    };
    if (code < std::size(codes)) why = codes[code];
  } else if (!v6 && type == icmp4_time_exceeded) {
    what = "ICMP time exceeded";
    why = code == 0 ? "TTL expired in transit" : "fragment reassembly time exceeded";
  } else if (v6 && type == icmp6_dest_unreachable) {
    what = "ICMPv6 destination unreachable";
    static constexpr std::string_view codes[] = {
        "no route to destination",
        "communication administratively prohibited",
        "beyond scope of source address",
        "address unreachable",
        "port unreachable",
        "source address failed ingress/egress policy",
        "reject route to destination",
    };
    if (code < std::size(codes)) why = codes[code];
  } else if (v6 && type == icmp6_time_exceeded) {
    what = "ICMPv6 time exceeded";
    why = code == 0 ? "hop limit exceeded in transit" : "fragment reassembly time exceeded";
  }
  std::string out(what);
  out += " (";
  if (why.empty()) {
    out += "type " + std::to_string(type) + " code " + std::to_string(code);
  } else {
    out += why;
  }
  out += ')';
  return out;
}

// The address in a sockaddr_in or sockaddr_in6, as text ("?" if it is neither).
inline std::string sockaddr_text(const sockaddr_storage& ss, socklen_t len) {
  auto e = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  return e ? e->address().to_string() : std::string("?");
}

// net.ipv4.ping_group_range as the kernel shows it ("1 0"), or "unreadable".
inline std::string read_ping_group_range() {
  const fd f(::open("/proc/sys/net/ipv4/ping_group_range", O_RDONLY | O_CLOEXEC));
  char buf[64];
  const ssize_t n = f ? ::read(f.get(), buf, sizeof buf) : -1;
  if (n <= 0) return "unreadable";
  std::string s(buf, static_cast<std::size_t>(n));
  std::replace(s.begin(), s.end(), '\t', ' ');
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// What each socket kind needs, for not_permitted details.
inline std::string datagram_socket_needs() {
  return "needs one of the process's groups (egid " + std::to_string(::getegid()) +
         ") in the sysctl net.ipv4.ping_group_range (now \"" + read_ping_group_range() + "\")";
}
inline constexpr std::string_view raw_socket_needs =
    "needs CAP_NET_RAW (e.g. root, or setcap cap_net_raw+ep on the program)";

// Reads one report from the error queue of a datagram ICMP socket (IP_RECVERR): an ICMP error
// the kernel matched to our echo, or a local error. Returns false if the queue was empty.
inline bool read_icmp_error_queue(int f, bool v6, io_status& out) {
  std::uint8_t data[576];
  iovec iov{data, sizeof data};
  sockaddr_storage from{};
  alignas(cmsghdr) char control[512];
  msghdr m{};
  m.msg_name = &from;
  m.msg_namelen = sizeof from;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(f, &m, MSG_ERRQUEUE | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
    const bool recverr = v6 ? (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR)
                            : (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR);
    if (!recverr || c->cmsg_len < CMSG_LEN(sizeof(sock_extended_err))) continue;
    sock_extended_err ee;
    std::memcpy(&ee, CMSG_DATA(c), sizeof ee);
    if (ee.ee_origin != (v6 ? SO_EE_ORIGIN_ICMP6 : SO_EE_ORIGIN_ICMP)) {
      out = io_error("echo request", static_cast<int>(ee.ee_errno));
      return true;
    }
    // SO_EE_OFFENDER: the address of the node that sent the ICMP error follows the struct.
    const std::size_t room = c->cmsg_len - CMSG_LEN(sizeof ee);
    sockaddr_storage offender{};
    const std::size_t olen = std::min(room, sizeof offender);
    std::memcpy(&offender, CMSG_DATA(c) + sizeof ee, olen);
    out = {probe_status::unreachable, describe_icmp_error(v6, ee.ee_type, ee.ee_code) + " from " +
                                          sockaddr_text(offender, static_cast<socklen_t>(olen))};
    return true;
  }
  return true;  // a report without a readable cause: drained, keep waiting
}

}  // namespace detail

// Sends one ICMP echo request (ICMPv6 for an IPv6 target) to the target's address and waits
// for the matching echo reply: healthy once it arrives, unreachable if an ICMP destination
// unreachable or time exceeded message about it (or a local routing error) comes first,
// timeout at the deadline. The target's port is ignored: ICMP has none. An IPv4-mapped IPv6
// address (::ffff:192.0.2.1) is pinged over IPv4.
//
// The request carries an identifier, a process-wide sequence number and a payload that
// starts with 8 random bytes drawn per probe; a reply must echo all three. On a datagram
// socket the kernel replaces the identifier with the socket's own (its "port", read back
// with getsockname) and fills in the checksum; on a raw socket the identifier is random and
// the ICMPv4 checksum (RFC 1071) is ours to compute. For ICMPv6 the kernel computes the
// checksum on both kinds (it covers a pseudo-header with the source address, which only the
// kernel knows; RFC 3542 §3.1 makes this the rule for raw ICMPv6 sockets, and Linux rejects
// IPV6_CHECKSUM on them). A raw socket sees all the host's ICMP traffic: a kernel filter
// (ICMP_FILTER, ICMP6_FILTER) passes only echo replies and errors, and everything that is not
// about our request — other pings, our own request looped back — is skipped until the
// deadline. ICMP errors reach a datagram socket through its error queue (IP_RECVERR).
//
// With socket_kind::any each probe tries a datagram socket and, if the kernel refuses it, a
// raw one; nothing is cached, so a changed sysctl or capability takes effect at the next
// probe.
// Thread safety: thread-safe (probe() is const and keeps nothing between calls; each probe
// uses its own socket).
// Complexity: one socket and one echo request per probe; blocks the calling thread up to the
// deadline. On a raw socket, each unrelated ICMP message received meanwhile costs one read.
class icmp_echo_probe {
 public:
  enum class socket_kind : std::uint8_t {
    any,       // a datagram socket if the kernel allows it, else a raw socket
    datagram,  // only a datagram socket (never needs privilege)
    raw,       // only a raw socket (CAP_NET_RAW)
  };

  struct options {
    socket_kind sockets = socket_kind::any;
    // Bytes after the 8-byte ICMP header, as ping's -s; at least 8 (the cookie) and at most
    // 1452, so that the request fits a 1500-byte packet with an IPv6 header.
    std::size_t payload_size = 56;
  };

  static constexpr std::size_t min_payload = 8;
  static constexpr std::size_t max_payload = 1452;

  icmp_echo_probe() = default;
  explicit icmp_echo_probe(options o) : o_(o) {
    o_.payload_size = std::clamp(o_.payload_size, min_payload, max_payload);
  }

  probe_result probe(const endpoint& target, probe_clock::time_point deadline) const {
    const auto start = probe_clock::now();
    auto done = [&](detail::io_status s) {
      return probe_result{s.status, std::move(s.detail), probe_clock::now() - start};
    };
    if (detail::ms_left(deadline) == 0) {
      return done({probe_status::timeout, "deadline passed before the echo request was sent"});
    }
    // An ICMPv6 echo cannot reach an IPv4-mapped address; an ICMP one can.
    const ip_address to = target.address().unmapped();
    const bool v6 = to.is_v6();
    sockaddr_storage ss{};
    const socklen_t sslen = endpoint(to, 0).to_sockaddr(ss);

    bool raw = false;
    detail::fd s;
    if (auto o = open_socket(v6, s, raw); !o.ok()) return done(std::move(o));

    // The request: type, code, checksum, identifier, sequence (big-endian), then the payload.
    std::vector<std::uint8_t> request(8 + o_.payload_size);
    const std::uint64_t cookie = detail::random_u64();
    std::uint16_t ident = static_cast<std::uint16_t>(cookie >> 48 ^ cookie);
    const std::uint16_t sequence = detail::next_icmp_sequence();
    request[0] = v6 ? detail::icmp6_echo_request : detail::icmp4_echo_request;
    for (std::size_t i = 0; i < 8; ++i) request[8 + i] = static_cast<std::uint8_t>(cookie >> 8 * i);
    for (std::size_t i = 16; i < request.size(); ++i) request[i] = static_cast<std::uint8_t>(i);
    put_header(request, ident, sequence, v6);

    if (auto w = send_request(s.get(), request, ss, sslen, deadline); !w.ok()) {
      return done(std::move(w));
    }
    if (!raw) {
      // The kernel bound the socket when sending; its port is the identifier it put in.
      sockaddr_storage local{};
      socklen_t llen = sizeof local;
      if (::getsockname(s.get(), reinterpret_cast<sockaddr*>(&local), &llen) != 0) {
        return done(detail::io_error("getsockname", errno));
      }
      ident = ntohs(v6 ? reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port
                       : reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
    }

    const detail::icmp_echo_key key{v6, ident, sequence,
                                    std::span<const std::uint8_t>(request).subspan(8), to.bytes()};
    const std::string kind = raw ? "raw socket" : "datagram socket";
    std::array<std::uint8_t, 2048> buf;
    for (;;) {
      sockaddr_storage from{};
      socklen_t flen = sizeof from;
      const ssize_t n =
          ::recvfrom(s.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        // Datagram sockets: an ICMP error about our echo sets the socket error (this recv
        // fails with it) and queues a report that names the ICMP message and its sender. A
        // report may also wake poll() with no socket error; reading it drains it.
        if (detail::io_status e; !raw && detail::read_icmp_error_queue(s.get(), v6, e) && !e.ok()) {
          return done({e.status, e.detail + " (" + kind + ")"});
        }
        if (err != EAGAIN && err != EWOULDBLOCK) return done(detail::io_error("recv", err));
        if (auto w = detail::wait_for(s.get(), POLLIN, deadline, "echo reply"); !w.ok()) {
          if (w.status == probe_status::timeout) {
            w.detail =
                "no echo reply from " + to.to_string() + " before the deadline (" + kind + ")";
          }
          return done(std::move(w));
        }
        continue;
      }
      const auto c = detail::classify_icmp(
          key, std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)), raw && !v6);
      if (c.verdict == detail::icmp_verdict::echo_reply) {
        return done({probe_status::healthy,
                     "echo reply from " + detail::sockaddr_text(from, flen) + " (" + kind + ")"});
      }
      if (c.verdict == detail::icmp_verdict::unreachable) {
        return done({probe_status::unreachable, detail::describe_icmp_error(v6, c.type, c.code) +
                                                    " from " + detail::sockaddr_text(from, flen) +
                                                    " (" + kind + ")"});
      }
      // Not ours. A busy host may keep the socket readable: the deadline still holds.
      if (detail::ms_left(deadline) == 0) {
        return done({probe_status::timeout, "no echo reply from " + to.to_string() +
                                                " before the deadline (" + kind + ")"});
      }
    }
  }

  const options& config() const noexcept { return o_; }

 private:
  // Type, code and identifier are set; the sequence and (ICMPv4) checksum written here.
  static void put_header(std::vector<std::uint8_t>& m, std::uint16_t ident, std::uint16_t seq,
                         bool v6) noexcept {
    m[4] = static_cast<std::uint8_t>(ident >> 8);
    m[5] = static_cast<std::uint8_t>(ident);
    m[6] = static_cast<std::uint8_t>(seq >> 8);
    m[7] = static_cast<std::uint8_t>(seq);
    if (v6) return;  // the kernel computes ICMPv6 checksums (see the class comment)
    m[2] = m[3] = 0;
    const std::uint16_t sum = detail::internet_checksum(m);
    m[2] = static_cast<std::uint8_t>(sum >> 8);
    m[3] = static_cast<std::uint8_t>(sum);
  }

  // A datagram socket, else (socket_kind::any) a raw one, as the options allow.
  detail::io_status open_socket(bool v6, detail::fd& out, bool& raw) const {
    const int af = v6 ? AF_INET6 : AF_INET;
    const int proto = v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP};
    // Refusals that mean "not allowed here" (EACCES: no group in ping_group_range) or "no
    // such socket in this kernel"; anything else (out of descriptors, no IPv6) is reported.
    auto refused = [](int e) {
      return e == EACCES || e == EPERM || e == EPROTONOSUPPORT || e == ESOCKTNOSUPPORT;
    };
    int dgram_err = 0;
    if (o_.sockets != socket_kind::raw) {
      detail::fd s(::socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto));
      if (s) {
        // ICMP errors about our echo are then queued for us to read (not reported otherwise
        // on an unconnected socket).
        const int one = 1;
        if (v6 ? ::setsockopt(s.get(), SOL_IPV6, IPV6_RECVERR, &one, sizeof one)
               : ::setsockopt(s.get(), SOL_IP, IP_RECVERR, &one, sizeof one)) {
          return detail::io_error("setsockopt(IP_RECVERR)", errno);
        }
        out = std::move(s);
        raw = false;
        return {};
      }
      dgram_err = errno;
      if (!refused(dgram_err)) return detail::io_error("socket(SOCK_DGRAM)", dgram_err);
      if (o_.sockets == socket_kind::datagram) {
        if (dgram_err == EPROTONOSUPPORT || dgram_err == ESOCKTNOSUPPORT) {
          return detail::io_error("socket(SOCK_DGRAM)", dgram_err);
        }
        return {probe_status::not_permitted,
                "ICMP datagram socket not permitted: it " + detail::datagram_socket_needs()};
      }
    }
    detail::fd s(::socket(af, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto));
    if (!s) {
      const int e = errno;
      if (e != EPERM && e != EACCES) return detail::io_error("socket(SOCK_RAW)", e);
      if (o_.sockets == socket_kind::raw) {
        return {probe_status::not_permitted,
                "raw ICMP socket not permitted: it " + std::string(detail::raw_socket_needs)};
      }
      return {probe_status::not_permitted, "ICMP not permitted: a datagram socket " +
                                               detail::datagram_socket_needs() + "; a raw socket " +
                                               std::string(detail::raw_socket_needs)};
    }
    // Only echo replies and the errors that may quote our request reach the socket.
    if (v6) {
      std::uint32_t drop[8];
      std::fill(std::begin(drop), std::end(drop), 0xffffffffu);
      for (std::uint8_t t : {detail::icmp6_echo_reply, detail::icmp6_dest_unreachable,
                             detail::icmp6_time_exceeded}) {
        drop[t >> 5] &= ~(1u << (t & 31));
      }
      if (::setsockopt(s.get(), IPPROTO_ICMPV6, detail::icmp6_filter_option, drop, sizeof drop)) {
        return detail::io_error("setsockopt(ICMP6_FILTER)", errno);
      }
    } else {
      const std::uint32_t drop =
          ~(1u << detail::icmp4_echo_reply | 1u << detail::icmp4_dest_unreachable |
            1u << detail::icmp4_time_exceeded);
      if (::setsockopt(s.get(), SOL_RAW, detail::icmp4_filter_option, &drop, sizeof drop)) {
        return detail::io_error("setsockopt(ICMP_FILTER)", errno);
      }
    }
    out = std::move(s);
    raw = true;
    return {};
  }

  // Sends the request in one datagram before the deadline.
  static detail::io_status send_request(int f, std::span<const std::uint8_t> m,
                                        const sockaddr_storage& to, socklen_t tolen,
                                        probe_clock::time_point deadline) {
    for (;;) {
      const ssize_t n = ::sendto(f, m.data(), m.size(), MSG_NOSIGNAL,
                                 reinterpret_cast<const sockaddr*>(&to), tolen);
      if (n >= 0) return {};
      const int err = errno;
      if (err == EINTR) continue;
      if (err != EAGAIN && err != EWOULDBLOCK) return detail::io_error("send echo request", err);
      if (auto w = detail::wait_for(f, POLLOUT, deadline, "send echo request"); !w.ok()) return w;
    }
  }

  options o_;
};

static_assert(health_probe<icmp_echo_probe>);

}  // namespace lbkit
