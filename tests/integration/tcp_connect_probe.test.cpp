// SPDX-License-Identifier: MIT
// tcp_connect_probe against real listeners on loopback: the handshake, refusals, resets,
// silent and slow peers (the deadline holds), and send/expect exchanges.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/health/tcp_connect_probe.hpp>

#include "../support/loopback.hpp"

using namespace std::chrono_literals;
using lbkit::probe_clock;
using lbkit::probe_status;
using lbkit::tcp_connect_probe;
using lbkit::test::loopback_server;

namespace {

// A generous deadline for probes that must succeed or fail on their own, far from it.
constexpr auto patience = 5s;
// The deadline for probes that must time out, and how late past it they may return: poll()
// rounds up to whole milliseconds, and a shared 2-core machine may delay the wake-up.
constexpr auto short_deadline = 300ms;
constexpr auto slack = 250ms;

void close_at_once(int c, const loopback_server&) { ::close(c); }

}  // namespace

TEST_CASE("a listener is healthy on IPv4 and IPv6") {
  for (bool v6 : {false, true}) {
    loopback_server server(close_at_once, v6);
    const auto r = tcp_connect_probe{}.probe(server.address(), probe_clock::now() + patience);
    CHECK_MESSAGE(r.healthy(), r.detail);
    CHECK(r.elapsed < patience);
  }
}

TEST_CASE("nothing listening: refused, quickly") {
  lbkit::endpoint closed;
  {
    loopback_server server(close_at_once);
    closed = server.address();
  }  // stopped: the port is closed now
  const auto r = tcp_connect_probe{}.probe(closed, probe_clock::now() + patience);
  CHECK(r.status == probe_status::refused);
  CHECK(r.detail.find("connect") != std::string::npos);
  CHECK(r.elapsed < patience);
}

TEST_CASE("a silent peer fails expect at the deadline, not later") {
  loopback_server server([](int c, const loopback_server& self) {
    self.wait(c, POLLRDHUP);  // says nothing until the probe hangs up (or the test ends)
    ::close(c);
  });
  tcp_connect_probe p({.send = "PING\r\n", .expect = "PONG"});
  const auto start = probe_clock::now();
  const auto r = p.probe(server.address(), start + short_deadline);
  const auto took = probe_clock::now() - start;
  CHECK(r.status == probe_status::timeout);
  CHECK(took >= short_deadline);
  CHECK(took < short_deadline + slack);
}

TEST_CASE("a peer that drips a byte at a time still ends at the deadline") {
  loopback_server server([](int c, const loopback_server& self) {
    // One byte every 50 ms, never the expected word.
    for (int i = 0; i < 100 && !self.stopping(); ++i) {
      if (!loopback_server::send_all(c, "x")) break;
      pollfd p{c, POLLRDHUP, 0};
      if (::poll(&p, 1, 50) > 0) break;  // the probe hung up
    }
    ::close(c);
  });
  tcp_connect_probe p({.expect = "READY"});
  const auto start = probe_clock::now();
  const auto r = p.probe(server.address(), start + short_deadline);
  const auto took = probe_clock::now() - start;
  CHECK(r.status == probe_status::timeout);
  CHECK(took < short_deadline + slack);
}

TEST_CASE("send and expect: the expected bytes, wrong bytes, a close, a reset, too much") {
  auto answering = [](std::string answer) {
    return [answer](int c, const loopback_server& self) {
      std::string got;
      char buf[256];
      while (got.find("\r\n") == std::string::npos && self.wait(c, POLLIN)) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
      if (got == "PING\r\n") loopback_server::send_all(c, answer);
      ::close(c);
    };
  };
  tcp_connect_probe p({.send = "PING\r\n", .expect = "+PONG", .max_answer = 64});
  {
    loopback_server server(answering("+PONG\r\n"));
    const auto r = p.probe(server.address(), probe_clock::now() + patience);
    CHECK_MESSAGE(r.healthy(), r.detail);
  }
  {
    loopback_server server(answering("-ERR not ready\r\n"));
    const auto r = p.probe(server.address(), probe_clock::now() + patience);
    CHECK(r.status == probe_status::bad_body);
  }
  {
    loopback_server server(answering(std::string(200, 'z')));  // over max_answer
    const auto r = p.probe(server.address(), probe_clock::now() + patience);
    CHECK(r.status == probe_status::bad_body);
    CHECK(r.detail.find("longer than 64") != std::string::npos);
  }
  {
    loopback_server server([](int c, const loopback_server&) { loopback_server::reset(c); });
    const auto r = p.probe(server.address(), probe_clock::now() + patience);
    // The reset may land during the send or the receive; either way it is a reset, or the
    // peer's close seen as end of stream without the expected bytes.
    CHECK((r.status == probe_status::reset || r.status == probe_status::bad_body));
  }
}

TEST_CASE("a deadline already past fails at once") {
  loopback_server server([](int c, const loopback_server& self) {
    self.wait(c, POLLRDHUP);
    ::close(c);
  });
  tcp_connect_probe p({.expect = "x"});
  const auto r = p.probe(server.address(), probe_clock::now() - 1s);
  CHECK(r.status == probe_status::timeout);
  CHECK(r.elapsed < slack);
}

TEST_CASE("out of descriptors, the probe answers local_error: the fault is not the backend's") {
  loopback_server server(close_at_once);
  // Use up every descriptor this process may open (under a lowered soft limit), probe, and
  // give them back. The server's thread may fail an accept meanwhile; it only retries.
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  rlimit low = old;
  low.rlim_cur = 256;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> taken;
  for (int f; (f = ::dup(0)) >= 0;) taken.push_back(f);
  const int err = errno;
  const auto r = tcp_connect_probe{}.probe(server.address(), probe_clock::now() + patience);
  for (int f : taken) ::close(f);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
  REQUIRE(err == EMFILE);
  CHECK(r.status == probe_status::local_error);
  CHECK_MESSAGE(r.detail.find("Too many open files") != std::string::npos, r.detail);
  // With descriptors back, the same probe passes.
  CHECK(tcp_connect_probe{}.probe(server.address(), probe_clock::now() + patience).healthy());
}
