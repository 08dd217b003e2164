// SPDX-License-Identifier: MIT
// icmp_echo_probe on loopback: echo replies over IPv4 and IPv6, on raw and on datagram ICMP
// sockets, the not_permitted answer, silent and unroutable hosts (the deadline holds), many
// probes at once; and the packet matching on hand-made packets (ICMP errors from routers do
// not happen on loopback).
//
// Raw sockets need CAP_NET_RAW: as root (CI) these tests must pass, elsewhere they say why
// they skip. Datagram sockets need net.ipv4.ping_group_range to admit the process, which the
// default ("1 0") does not; so, as root, the tests that need a given setting run on a thread
// of their own in a private network namespace (unshare(CLONE_NEWNET)) whose sysctls they set
// freely: the host's settings are never touched, and the namespace ends with the thread.
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/health/icmp_echo_probe.hpp>

using namespace std::chrono_literals;
using lbkit::endpoint;
using lbkit::icmp_echo_probe;
using lbkit::ip_address;
using lbkit::probe_clock;
using lbkit::probe_result;
using lbkit::probe_status;
using socket_kind = lbkit::icmp_echo_probe::socket_kind;

namespace {

// A generous deadline for probes that must succeed or fail on their own, far from it.
constexpr auto patience = 5s;
// The deadline for probes that must time out, and how late past it they may return: poll()
// rounds up to whole milliseconds, and a shared 2-core machine may delay the wake-up.
constexpr auto short_deadline = 300ms;
constexpr auto slack = 250ms;

const endpoint v4_loopback(*ip_address::parse("127.0.0.1"), 9);  // the port is ignored
const endpoint v6_loopback(*ip_address::parse("::1"), 9);

bool is_root() { return ::geteuid() == 0; }

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

std::string kind_name(socket_kind k) {
  switch (k) {
    case socket_kind::any:
      return "any";
    case socket_kind::datagram:
      return "datagram";
    case socket_kind::raw:
      return "raw";
  }
  return "?";
}

// --- a private network namespace for one thread ------------------------------------------

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.flush();
  return static_cast<bool>(f);
}

// Brings up "lo" of the calling thread's network namespace (127.0.0.1 and ::1 come with it).
bool loopback_up() {
  const lbkit::detail::fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (!s || ::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return false;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  return ::ioctl(s.get(), SIOCSIFFLAGS, &ifr) == 0;
}

// Drops CAP_NET_RAW from the calling thread's effective capabilities (capabilities are per
// thread in Linux; the raw capset system call, unlike libcap's helpers, touches one thread).
bool drop_net_raw() {
  __user_cap_header_struct head{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, 2> data{};
  if (::syscall(SYS_capget, &head, data.data()) != 0) return false;
  data[0].effective &= ~(1u << CAP_NET_RAW);
  return ::syscall(SYS_capset, &head, data.data()) == 0;
}

struct netns_setup {
  // /proc/sys files and what to write there, inside the namespace.
  std::vector<std::pair<std::string, std::string>> sysctls;
  bool drop_net_raw = false;
};

// ping_group_range values: every group, and no group (the kernel's default).
const std::pair<std::string, std::string> ping_allowed{"/proc/sys/net/ipv4/ping_group_range",
                                                       "0 2147483647"};
const std::pair<std::string, std::string> ping_refused{"/proc/sys/net/ipv4/ping_group_range",
                                                       "1 0"};

// Runs `body` on a new thread in a new network namespace that has only "lo", up, with
// `setup` applied (threads that `body` starts share the namespace). Returns "" once `body`
// ran, or why the namespace could not be made (it needs CAP_SYS_ADMIN). Assertions belong
// after the call, on the test's thread: `body` records what it saw.
std::string in_private_netns(const netns_setup& setup, const std::function<void()>& body) {
  std::string why;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      why = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    if (!loopback_up()) {
      why = std::string("bringing up lo: ") + std::strerror(errno);
      return;
    }
    for (const auto& [path, value] : setup.sysctls) {
      if (!write_file(path, value)) {
        why = "cannot write " + path;
        return;
      }
    }
    if (setup.drop_net_raw && !drop_net_raw()) {
      why = std::string("capset: ") + std::strerror(errno);
      return;
    }
    body();
  });
  t.join();
  return why;
}

// --- hand-made ICMP messages ------------------------------------------------------------

using bytes = std::vector<std::uint8_t>;

bytes echo_message(bool v6, bool reply, std::uint16_t id, std::uint16_t seq, const bytes& payload) {
  bytes m{static_cast<std::uint8_t>(v6 ? (reply ? 129 : 128) : (reply ? 0 : 8)),
          0,
          0,
          0,
          static_cast<std::uint8_t>(id >> 8),
          static_cast<std::uint8_t>(id),
          static_cast<std::uint8_t>(seq >> 8),
          static_cast<std::uint8_t>(seq)};
  m.insert(m.end(), payload.begin(), payload.end());
  return m;
}

// An IPv4 header (with `option_words` words of options) for an ICMP message of `len` bytes.
bytes ipv4_header(std::array<std::uint8_t, 4> src, std::array<std::uint8_t, 4> dst, std::size_t len,
                  int option_words = 0) {
  const std::size_t hlen = 20 + 4 * static_cast<std::size_t>(option_words);
  bytes h(hlen, 0);
  h[0] = static_cast<std::uint8_t>(0x40 | hlen / 4);
  h[2] = static_cast<std::uint8_t>((hlen + len) >> 8);
  h[3] = static_cast<std::uint8_t>(hlen + len);
  h[8] = 64;  // TTL
  h[9] = IPPROTO_ICMP;
  std::copy(src.begin(), src.end(), h.begin() + 12);
  std::copy(dst.begin(), dst.end(), h.begin() + 16);
  for (std::size_t i = 20; i < hlen; ++i) h[i] = 1;  // NOP options
  return h;
}

bytes ipv6_header(const std::array<std::uint8_t, 16>& src, const std::array<std::uint8_t, 16>& dst,
                  std::size_t len) {
  bytes h(40, 0);
  h[0] = 0x60;
  h[4] = static_cast<std::uint8_t>(len >> 8);
  h[5] = static_cast<std::uint8_t>(len);
  h[6] = 58;  // next header: ICMPv6
  h[7] = 64;
  std::copy(src.begin(), src.end(), h.begin() + 8);
  std::copy(dst.begin(), dst.end(), h.begin() + 24);
  return h;
}

bytes concat(bytes a, const bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// An ICMP error of `type`/`code` quoting `original` (an IP header and what followed it).
bytes icmp_error(std::uint8_t type, std::uint8_t code, const bytes& original) {
  return concat(bytes{type, code, 0, 0, 0, 0, 0, 0}, original);
}

}  // namespace

TEST_CASE("the Internet checksum (RFC 1071)") {
  using lbkit::detail::internet_checksum;
  // RFC 1071 §3's example: the words sum to 0xddf2; the checksum is its complement.
  const bytes rfc{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  CHECK(internet_checksum(rfc) == 0x220d);
  // An odd length pads with a zero byte.
  CHECK(internet_checksum(bytes{0x01}) == static_cast<std::uint16_t>(~0x0100));
  CHECK(internet_checksum(bytes{}) == 0xffff);
  // Stored in the message, it makes the checksum of the whole zero (all ones summed).
  bytes m = echo_message(false, false, 0x1234, 0xabcd, bytes{'p', 'i', 'n', 'g', '!'});
  const auto sum = internet_checksum(m);
  m[2] = static_cast<std::uint8_t>(sum >> 8);
  m[3] = static_cast<std::uint8_t>(sum);
  CHECK(internet_checksum(m) == 0);
  // Carries wrap around: 0xffff + 0xffff + 0x0002 = 0x20000 -> 0x0002 ... complemented.
  CHECK(internet_checksum(bytes{0xff, 0xff, 0xff, 0xff, 0x00, 0x02}) ==
        static_cast<std::uint16_t>(~0x0002));
}

TEST_CASE("matching: our reply, not others' traffic; errors that quote our request") {
  using lbkit::detail::classify_icmp;
  using lbkit::detail::icmp_echo_key;
  using lbkit::detail::icmp_verdict;
  const bytes payload{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};
  const std::array<std::uint8_t, 4> us{192, 0, 2, 2}, target{198, 51, 100, 7},
      router{203, 0, 113, 1};

  SUBCASE("ICMPv4 on a raw socket: behind an IP header") {
    const icmp_echo_key key{false, 0x4242, 7, payload, target};
    const auto reply = echo_message(false, true, 0x4242, 7, payload);
    for (int options : {0, 3}) {  // the header length is read, not assumed
      const auto packet = concat(ipv4_header(target, us, reply.size(), options), reply);
      CHECK(classify_icmp(key, packet, true).verdict == icmp_verdict::echo_reply);
    }
    // Datagram sockets deliver the ICMP message alone.
    CHECK(classify_icmp(key, reply, false).verdict == icmp_verdict::echo_reply);

    auto other = [&](const bytes& m) {
      return classify_icmp(key, concat(ipv4_header(target, us, m.size()), m), true).verdict ==
             icmp_verdict::other;
    };
    CHECK(other(echo_message(false, true, 0x4243, 7, payload)));  // another identifier
    CHECK(other(echo_message(false, true, 0x4242, 8, payload)));  // another sequence
    bytes forged = payload;
    forged[0] ^= 1;
    CHECK(other(echo_message(false, true, 0x4242, 7, forged)));  // another cookie
    CHECK(other(echo_message(false, true, 0x4242, 7, bytes(payload.begin(), payload.end() - 1))));
    CHECK(other(echo_message(false, false, 0x4242, 7, payload)));  // our request, looped back

    // Destination unreachable from a router, quoting our request (IP header + ICMP message).
    const auto request = echo_message(false, false, 0x4242, 7, payload);
    const auto quoted = concat(ipv4_header(us, target, request.size()), request);
    const auto unreachable = icmp_error(3, 1, quoted);
    const auto c =
        classify_icmp(key, concat(ipv4_header(router, us, unreachable.size()), unreachable), true);
    CHECK(c.verdict == icmp_verdict::unreachable);
    CHECK(c.type == 3);
    CHECK(c.code == 1);
    // Time exceeded counts too; a quote of only the first 8 bytes (RFC 792's minimum) as well.
    const auto short_quote =
        concat(ipv4_header(us, target, 8), bytes(request.begin(), request.begin() + 8));
    CHECK(classify_icmp(key, concat(ipv4_header(router, us, 36), icmp_error(11, 0, short_quote)),
                        true)
              .verdict == icmp_verdict::unreachable);
    // An error about someone else's echo, or one to another host, is not ours.
    const auto theirs = echo_message(false, false, 0x9999, 7, payload);
    CHECK(classify_icmp(key, icmp_error(3, 1, concat(ipv4_header(us, target, 20), theirs)), false)
              .verdict == icmp_verdict::other);
    CHECK(classify_icmp(key, icmp_error(3, 1, concat(ipv4_header(us, router, 20), request)), false)
              .verdict == icmp_verdict::other);
    // Every truncation is harmless. A cut reply is not ours (the payload must come back
    // whole); a cut error is ours as long as the first 8 bytes of our request are quoted.
    const auto reply_packet = concat(ipv4_header(target, us, reply.size()), reply);
    for (std::size_t n = 0; n < reply_packet.size(); ++n) {
      CHECK(classify_icmp(key, std::span(reply_packet.data(), n), true).verdict ==
            icmp_verdict::other);
    }
    const auto error_packet = concat(ipv4_header(router, us, unreachable.size()), unreachable);
    const std::size_t enough = 20 + 8 + 20 + 8;
    for (std::size_t n = 0; n <= error_packet.size(); ++n) {
      CAPTURE(n);
      CHECK(classify_icmp(key, std::span(error_packet.data(), n), true).verdict ==
            (n < enough ? icmp_verdict::other : icmp_verdict::unreachable));
    }
  }

  SUBCASE("ICMPv6: no IP header before the message; errors quote a 40-byte IPv6 header") {
    const std::array<std::uint8_t, 16> target6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                               0,    0,    0,    0,    0, 0, 0, 7};
    std::array<std::uint8_t, 16> us6{};
    us6[15] = 1;
    const icmp_echo_key key{true, 0x0101, 65535, payload, target6};
    CHECK(classify_icmp(key, echo_message(true, true, 0x0101, 65535, payload), false).verdict ==
          icmp_verdict::echo_reply);
    CHECK(classify_icmp(key, echo_message(true, false, 0x0101, 65535, payload), false).verdict ==
          icmp_verdict::other);
    // An ICMPv4 echo reply type (0) is not an ICMPv6 one.
    CHECK(classify_icmp(key, echo_message(false, true, 0x0101, 65535, payload), false).verdict ==
          icmp_verdict::other);
    const auto request = echo_message(true, false, 0x0101, 65535, payload);
    const auto quoted = concat(ipv6_header(us6, target6, request.size()), request);
    const auto c = classify_icmp(key, icmp_error(1, 3, quoted), false);
    CHECK(c.verdict == icmp_verdict::unreachable);
    CHECK(c.code == 3);
    CHECK(classify_icmp(key, icmp_error(3, 0, quoted), false).verdict == icmp_verdict::unreachable);
    // Packet too big (2) and parameter problem (4) are not answers.
    CHECK(classify_icmp(key, icmp_error(2, 0, quoted), false).verdict == icmp_verdict::other);
    const auto elsewhere = concat(ipv6_header(us6, us6, request.size()), request);
    CHECK(classify_icmp(key, icmp_error(1, 3, elsewhere), false).verdict == icmp_verdict::other);
  }
}

TEST_CASE("error details name the ICMP message") {
  using lbkit::detail::describe_icmp_error;
  CHECK(describe_icmp_error(false, 3, 1) == "ICMP destination unreachable (host unreachable)");
  CHECK(describe_icmp_error(false, 11, 0) == "ICMP time exceeded (TTL expired in transit)");
  CHECK(describe_icmp_error(true, 1, 0) ==
        "ICMPv6 destination unreachable (no route to destination)");
  CHECK(describe_icmp_error(false, 3, 200) == "ICMP destination unreachable (type 3 code 200)");
}

TEST_CASE("options: the payload size is kept within one packet") {
  CHECK(icmp_echo_probe({.payload_size = 0}).config().payload_size == icmp_echo_probe::min_payload);
  CHECK(icmp_echo_probe({.payload_size = 1 << 20}).config().payload_size ==
        icmp_echo_probe::max_payload);
  CHECK(icmp_echo_probe{}.config().payload_size == 56);
}

TEST_CASE("echo to 127.0.0.1 and ::1 in this host's network namespace") {
  // socket_kind::any here is a raw socket as root (ping_group_range is "1 0" on CI) or a
  // datagram socket where the sysctl admits the process.
  for (socket_kind kind : {socket_kind::any, socket_kind::raw, socket_kind::datagram}) {
    for (const endpoint& target : {v4_loopback, v6_loopback}) {
      CAPTURE(kind_name(kind));
      CAPTURE(target.to_string());
      icmp_echo_probe p({.sockets = kind, .payload_size = 56});
      const auto r = p.probe(target, probe_clock::now() + patience);
      if (r.status == probe_status::not_permitted) {
        MESSAGE("skipped: socket_kind::", kind_name(kind), " is not permitted here: ", r.detail);
        // As root, only the datagram socket may be refused (by ping_group_range).
        if (is_root()) REQUIRE(kind == socket_kind::datagram);
        if (kind != socket_kind::raw) CHECK(contains(r.detail, "ping_group_range"));
        if (kind != socket_kind::datagram) CHECK(contains(r.detail, "CAP_NET_RAW"));
        continue;
      }
      REQUIRE_MESSAGE(r.healthy(), r.detail);
      CHECK(contains(r.detail, "echo reply from " + target.address().to_string()));
      if (kind == socket_kind::raw) CHECK(contains(r.detail, "raw socket"));
      if (kind == socket_kind::datagram) CHECK(contains(r.detail, "datagram socket"));
      CHECK(r.elapsed > 0ns);
      CHECK(r.elapsed < patience);
    }
  }
  if (is_root()) {
    // The largest payload, and an IPv4-mapped address (pinged over IPv4).
    icmp_echo_probe big({.payload_size = icmp_echo_probe::max_payload});
    const auto r = big.probe(v4_loopback, probe_clock::now() + patience);
    CHECK_MESSAGE(r.healthy(), r.detail);
    const endpoint mapped(*ip_address::parse("::ffff:127.0.0.1"), 0);
    const auto m = icmp_echo_probe{}.probe(mapped, probe_clock::now() + patience);
    CHECK_MESSAGE(m.healthy(), m.detail);
    CHECK(contains(m.detail, "from 127.0.0.1 "));
  }
}

TEST_CASE("datagram sockets, admitted by ping_group_range (private network namespace)") {
  std::vector<std::pair<std::string, probe_result>> seen;
  const auto why = in_private_netns({.sysctls = {ping_allowed}}, [&] {
    for (socket_kind kind : {socket_kind::any, socket_kind::datagram, socket_kind::raw}) {
      for (const endpoint& target : {v4_loopback, v6_loopback}) {
        seen.emplace_back(
            kind_name(kind) + " " + target.to_string(),
            icmp_echo_probe({.sockets = kind}).probe(target, probe_clock::now() + patience));
      }
    }
  });
  if (!why.empty()) {
    MESSAGE("skipped: no private network namespace to open ping_group_range in (", why, ")");
    return;
  }
  REQUIRE(seen.size() == 6);
  for (const auto& s : seen) {
    const std::string& what = s.first;
    const probe_result& r = s.second;
    CAPTURE(what);
    CHECK_MESSAGE(r.healthy(), r.detail);
    // any prefers the datagram socket once it is allowed.
    CHECK(contains(r.detail, contains(what, "raw") ? "raw socket" : "datagram socket"));
  }
}

TEST_CASE("neither socket kind permitted: not_permitted, naming both remedies") {
  std::vector<std::pair<socket_kind, probe_result>> seen;
  const auto why = in_private_netns({.sysctls = {ping_refused}, .drop_net_raw = true}, [&] {
    for (socket_kind kind : {socket_kind::any, socket_kind::datagram, socket_kind::raw}) {
      seen.emplace_back(
          kind,
          icmp_echo_probe({.sockets = kind}).probe(v4_loopback, probe_clock::now() + patience));
    }
  });
  if (!why.empty()) {
    // Without privilege this host's own namespace is the test: see the loopback test case.
    MESSAGE("skipped: no private network namespace without CAP_NET_RAW (", why, ")");
    return;
  }
  REQUIRE(seen.size() == 3);
  for (const auto& s : seen) {
    const socket_kind kind = s.first;
    const probe_result& r = s.second;
    CAPTURE(kind_name(kind));
    CAPTURE(r.detail);
    CHECK(r.status == probe_status::not_permitted);
    CHECK(r.elapsed < slack);
    CHECK(contains(r.detail, "ping_group_range") == (kind != socket_kind::raw));
    CHECK(contains(r.detail, "CAP_NET_RAW") == (kind != socket_kind::datagram));
  }
  CHECK(contains(seen[0].second.detail, "(now \"1 0\")"));
}

TEST_CASE("a host that does not answer: timeout at the deadline, not later") {
  // In a private namespace the kernel is told to ignore echo requests: nothing answers, and
  // raw sockets see only their own requests looped back, which they must skip.
  struct attempt {
    std::string what;
    probe_result r;
    probe_clock::duration took;
  };
  std::vector<attempt> seen;
  bool v6_silenced = false;
  const auto why = in_private_netns(
      {.sysctls = {ping_allowed, {"/proc/sys/net/ipv4/icmp_echo_ignore_all", "1"}}}, [&] {
        // Older kernels have no switch for ICMPv6 echo (Linux 4.20 added it).
        v6_silenced = write_file("/proc/sys/net/ipv6/icmp/echo_ignore_all", "1");
        for (socket_kind kind : {socket_kind::datagram, socket_kind::raw}) {
          for (const endpoint& target : {v4_loopback, v6_loopback}) {
            if (target == v6_loopback && !v6_silenced) continue;
            const auto start = probe_clock::now();
            auto r = icmp_echo_probe({.sockets = kind}).probe(target, start + short_deadline);
            seen.push_back({kind_name(kind) + " " + target.to_string(), std::move(r),
                            probe_clock::now() - start});
          }
        }
      });
  if (!why.empty()) {
    MESSAGE("skipped: no private network namespace to silence echo in (", why, ")");
    return;
  }
  if (!v6_silenced) MESSAGE("IPv6 part skipped: no net.ipv6.icmp.echo_ignore_all here");
  REQUIRE(seen.size() == (v6_silenced ? 4u : 2u));
  for (const attempt& a : seen) {
    const std::string& what = a.what;
    const probe_result& r = a.r;
    const probe_clock::duration took = a.took;
    CAPTURE(what);
    CHECK_MESSAGE(r.status == probe_status::timeout, r.detail);
    CHECK(contains(r.detail, "no echo reply"));
    CHECK(took >= short_deadline);
    CHECK(took < short_deadline + slack);
    CHECK(r.elapsed <= took);
  }
}

TEST_CASE("no route to the host: unreachable at once") {
  // A namespace with only "lo" has no route to the documentation prefixes.
  std::vector<std::pair<std::string, probe_result>> seen;
  const auto why = in_private_netns({.sysctls = {ping_allowed}}, [&] {
    for (socket_kind kind : {socket_kind::datagram, socket_kind::raw}) {
      for (const char* address : {"198.51.100.1", "2001:db8::1"}) {
        seen.emplace_back(
            kind_name(kind) + " " + address,
            icmp_echo_probe({.sockets = kind})
                .probe(endpoint(*ip_address::parse(address), 0), probe_clock::now() + patience));
      }
    }
  });
  if (!why.empty()) {
    MESSAGE("skipped: no private network namespace (", why, ")");
    return;
  }
  REQUIRE(seen.size() == 4);
  for (const auto& s : seen) {
    const std::string& what = s.first;
    const probe_result& r = s.second;
    CAPTURE(what);
    CHECK_MESSAGE(r.status == probe_status::unreachable, r.detail);
    CHECK(r.elapsed < slack);
  }
}

TEST_CASE("a TEST-NET-2 address on this host's network: over by the deadline") {
  // 198.51.100.0/24 (RFC 5737) is never routed on the Internet: the host's gateway may say
  // unreachable, or nothing answers and the probe times out; either way no later than the
  // deadline. (Not 192.0.2.1: on some CI machines TEST-NET-1 is the local subnet, and its .1
  // the gateway, which answers.) No answer from the network is needed for this test.
  const endpoint target(*ip_address::parse("198.51.100.1"), 0);
  const auto start = probe_clock::now();
  const auto r = icmp_echo_probe{}.probe(target, start + short_deadline);
  const auto took = probe_clock::now() - start;
  CAPTURE(r.detail);
  if (r.status == probe_status::not_permitted) {
    REQUIRE_FALSE(is_root());
    MESSAGE("skipped: ICMP not permitted here: ", r.detail);
    return;
  }
  CHECK((r.status == probe_status::timeout || r.status == probe_status::unreachable));
  CHECK(took < short_deadline + slack);
}

TEST_CASE("many probes at once, from one probe object, all get their own replies") {
  constexpr int threads = 8;
  constexpr int rounds = 10;
  // Every raw socket sees every reply to every thread: matching by identifier, sequence and
  // cookie keeps them apart. Datagram sockets get their own identifiers from the kernel.
  auto run = [](socket_kind kind) {
    const icmp_echo_probe p({.sockets = kind});
    std::vector<std::vector<probe_result>> results(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&p, &results, t] {
        for (int i = 0; i < rounds; ++i) {
          const endpoint& target = (t + i) % 2 ? v6_loopback : v4_loopback;
          results[static_cast<std::size_t>(t)].push_back(
              p.probe(target, probe_clock::now() + patience));
        }
      });
    }
    for (auto& th : pool) th.join();
    return results;
  };
  auto check_all = [](const std::vector<std::vector<probe_result>>& results) {
    int healthy = 0;
    for (const auto& per_thread : results) {
      for (const auto& r : per_thread) {
        CHECK_MESSAGE(r.healthy(), r.detail);
        CHECK(r.elapsed < patience);
        healthy += r.healthy();
      }
    }
    CHECK(healthy == threads * rounds);
  };

  SUBCASE("in this host's namespace (raw sockets as root)") {
    const auto first = icmp_echo_probe{}.probe(v4_loopback, probe_clock::now() + patience);
    if (first.status == probe_status::not_permitted) {
      REQUIRE_FALSE(is_root());
      MESSAGE("skipped: ICMP not permitted here: ", first.detail);
      return;
    }
    check_all(run(socket_kind::any));
  }
  SUBCASE("datagram sockets (private network namespace)") {
    std::vector<std::vector<probe_result>> results;
    const auto why = in_private_netns({.sysctls = {ping_allowed}},
                                      [&] { results = run(socket_kind::datagram); });
    if (!why.empty()) {
      MESSAGE("skipped: no private network namespace (", why, ")");
      return;
    }
    check_all(results);
  }
}

TEST_CASE("a deadline already past fails at once, sending nothing") {
  const auto r = icmp_echo_probe{}.probe(v4_loopback, probe_clock::now() - 1s);
  CHECK(r.status == probe_status::timeout);
  CHECK(r.elapsed < slack);
}
