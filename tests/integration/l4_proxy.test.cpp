// SPDX-License-Identifier: MIT
// lbkit_l4_proxy end to end: the real binary (LBKIT_L4_PROXY_PATH, built in the same preset,
// so sanitized alike) between test clients and test backends, all on loopback with ports
// picked by the kernel. Covered: how connections spread (round robin exactly, weighted round
// robin within a derived bound), consistent-hash stickiness per client address, failover
// under active TCP checks with retries that hide refused connects, byte-exact bulk transfer
// both ways at once and half-close, PROXY protocol v1/v2 out and in (and garbage in), interop
// with HAProxy both ways, UDP sessions, ACLs, command-line errors, and graceful shutdown.
//
// Every wait is bounded and waits on a condition; no assertion rests on a sleep. Each proxy
// is stopped with SIGTERM and must exit 0 with nothing from the sanitizers on stderr (its
// destructor kills it by pid whatever happens). Client addresses other than 127.0.0.1 are
// other addresses of 127.0.0.0/8, which Linux routes to lo.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/endpoint.hpp>
#include <lbkit/net/proxy_protocol.hpp>

#include "../support/end_to_end.hpp"
#include "../support/loopback.hpp"
#include "../support/process.hpp"
#include "../support/udp_echo.hpp"

#ifndef LBKIT_L4_PROXY_PATH

TEST_CASE("lbkit_l4_proxy is not built (CLI11 missing): its integration test is skipped") {
  MESSAGE("examples/CMakeLists.txt did not build lbkit_l4_proxy; install libcli11-dev");
}

#else

using namespace std::chrono_literals;
using namespace lbkit::test;  // tests/support: servers, child processes, client sockets
using lbkit::endpoint;
using lbkit::ip_address;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

ip_address ip(std::string_view text) { return *ip_address::parse(text); }

// --- sockets -----------------------------------------------------------------------------

// The local address of a socket.
endpoint local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return *endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// A bound (and for TCP listening) socket on `at`.
socket_fd open_socket(int type, const endpoint& at) {
  sockaddr_storage ss{};
  const socklen_t len = at.to_sockaddr(ss);
  socket_fd s(::socket(ss.ss_family, type | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
  return s;
}

// The next line (without "\n") from a socket, reading byte by byte; empty on an error.
std::optional<std::string> read_line(int fd) {
  std::string line;
  char ch;
  for (;;) {
    const ssize_t n = ::recv(fd, &ch, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    if (ch == '\n') return line;
    line += ch;
  }
}

// A closed-by-the-proxy check: the read ends at once with nothing, by FIN or RST.
bool closed_without_data(int fd) {
  const auto r = read_to_end(fd);
  return r.data.empty() && (r.eof || r.error == ECONNRESET);
}

// Test data that does not repeat at any power-of-two stride: byte `i` of the stream is
// pattern[i % size]. The size is odd, so a lost, repeated or reordered chunk of any buffer
// size shows up in a byte-by-byte comparison.
class pattern {
 public:
  static constexpr std::size_t size = (std::size_t{1} << 20) + 13;
  pattern() : bytes_(pattern_bytes(size)) {}
  // The bytes of the stream from `offset` on, at most `max` of them, without wrapping.
  std::string_view at(std::uint64_t offset, std::size_t max) const {
    const auto pos = static_cast<std::size_t>(offset % size);
    return {bytes_.data() + pos, std::min(max, size - pos)};
  }
  // Whether `data` is the stream from `offset` on.
  bool matches(std::string_view data, std::uint64_t offset) const {
    while (!data.empty()) {
      const auto want = at(offset, data.size());
      if (std::memcmp(data.data(), want.data(), want.size()) != 0) return false;
      data.remove_prefix(want.size());
      offset += want.size();
    }
    return true;
  }

 private:
  std::string bytes_;
};

// --- test backends -----------------------------------------------------------------------

// A TCP backend that sends its name and closes: a client learns which backend it reached.
struct named_backend {
  named_backend(std::string n, std::uint16_t port = 0)
      : name(std::move(n)),
        server(
            [reply = name](int c, const loopback_server&) {
              loopback_server::send_all(c, reply);
              ::close(c);
            },
            false, port) {}
  std::string arg() const { return server.address().to_string() + ",id=" + name; }
  std::string name;
  loopback_server server;
};

// One connection through the proxy to a named backend: the name, or "" when it failed.
std::string fetch_name(const endpoint& proxy, std::optional<ip_address> from = std::nullopt) {
  const auto s = connect_tcp(proxy, from);
  if (!s) return "";
  auto r = read_to_end(s.get());
  return r.eof ? r.data : "";
}

// A backend that answers each line "x" with "pong:x" until the client's end.
void pong(int c, const loopback_server& self) {
  set_timeouts(c, 50ms);
  std::string in;
  char buf[4096];
  while (!self.stopping()) {
    const ssize_t n = ::recv(c, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      break;
    }
    in.append(buf, static_cast<std::size_t>(n));
    for (auto nl = in.find('\n'); nl != std::string::npos; nl = in.find('\n')) {
      loopback_server::send_all(c, "pong:" + in.substr(0, nl + 1));
      in.erase(0, nl + 1);
    }
  }
  ::close(c);
}

// Ends a request to a recording backend: the client need not end its writing.
constexpr std::string_view end_mark = "<end>";

// A backend that records each connection's bytes up to the client's end or up to end_mark,
// then answers "ok" and closes.
class recording_backend {
 public:
  recording_backend()
      : server_([this](int c, const loopback_server& self) {
          set_timeouts(c, 50ms);
          std::string got;
          char buf[4096];
          const auto until = steady_clock::now() + io_timeout;
          while (!self.stopping() && steady_clock::now() < until && !got.ends_with(end_mark)) {
            const ssize_t n = ::recv(c, buf, sizeof buf, 0);
            if (n == 0) break;
            if (n < 0 && errno != EAGAIN && errno != EINTR) break;
            if (n > 0) got.append(buf, static_cast<std::size_t>(n));
          }
          {
            std::lock_guard lock(mu_);
            streams_.push_back(got);
          }
          loopback_server::send_all(c, "ok");
          ::close(c);
        }) {}
  const endpoint& address() const { return server_.address(); }
  int accepted() const { return server_.accepted(); }
  std::vector<std::string> streams() const {
    std::lock_guard lock(mu_);
    return streams_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> streams_;  // guarded by mu_
  loopback_server server_;            // last: its thread uses the members above
};

enum class then { half_close, wait };

// Sends `bytes`, ends its writing unless told to wait, and returns what came back until the
// server's end. (The proxy passes a half-close on, so a recording backend answers once it has
// seen everything; without one, it answers at end_mark.)
stream_end round_trip(const endpoint& to, std::string_view bytes,
                      std::optional<ip_address> from = std::nullopt, endpoint* local = nullptr,
                      then after = then::half_close) {
  const auto s = connect_tcp(to, from);
  REQUIRE(s);
  if (local != nullptr) *local = local_of(s.get());
  REQUIRE(send_all(s.get(), bytes));
  if (after == then::half_close) ::shutdown(s.get(), SHUT_WR);
  return read_to_end(s.get());
}

// --- the proxy -----------------------------------------------------------------------------

// lbkit_l4_proxy as a child process, started with `args` plus a stats listener, once it
// printed the addresses it listens on.
class proxy_process {
 public:
  explicit proxy_process(std::vector<std::string> args, int listeners = 1)
      : proc_(with_defaults(std::move(args))) {
    INFO("proxy stderr: " << proc_.stderr_text());
    REQUIRE_MESSAGE(proc_.started(), proc_.start_error());
    // The listening sockets exist before these lines are printed; the stats line comes when
    // the workers and the health checker run.
    for (int i = 0; i < listeners; ++i) {
      const auto line = proc_.read_line(10s);
      REQUIRE(line);
      const std::string prefix = "listening on ";
      REQUIRE(line->rfind(prefix, 0) == 0);
      const auto slash = line->rfind('/');
      REQUIRE(slash != std::string::npos);
      const auto at = endpoint::parse(line->substr(prefix.size(), slash - prefix.size()));
      REQUIRE(at);
      listen_.push_back(*at);
    }
    const auto line = proc_.read_line(10s);
    REQUIRE(line);
    REQUIRE(line->rfind("stats on ", 0) == 0);
    const auto at = endpoint::parse(line->substr(9));
    REQUIRE(at);
    stats_ = *at;
  }

  proxy_process(const proxy_process&) = delete;
  proxy_process& operator=(const proxy_process&) = delete;
  // A proxy still running here belongs to a case that failed before stop(): show its log,
  // then the child_process kills it.
  ~proxy_process() { show_log_if_running(proc_, "lbkit_l4_proxy"); }

  const endpoint& address(std::size_t i = 0) const { return listen_.at(i); }
  child_process& process() { return proc_; }

  // The stats page's body.
  std::string stats() {
    const auto r = round_trip(stats_, "GET /stats HTTP/1.0\r\n\r\n");
    const auto body = r.data.find("\r\n\r\n");
    REQUIRE(body != std::string::npos);
    return r.data.substr(body + 4);
  }
  // The global counter `key`, from a stats page.
  static std::uint64_t counter(const std::string& page, std::string_view key) {
    const std::string k = "\n" + std::string(key) + " ";
    const auto at = ("\n" + page).find(k);
    REQUIRE_MESSAGE(at != std::string::npos, "no " << key << " in\n" << page);
    return std::stoull(page.substr(at + k.size() - 1));
  }
  // `field` of backend `id` ("up", "17", ...), from a stats page.
  static std::string field(const std::string& page, std::string_view id, std::string_view name) {
    const std::string line_start = "backend id=" + std::string(id) + " ";
    const auto line = page.find(line_start);
    REQUIRE_MESSAGE(line != std::string::npos, "no backend " << id << " in\n" << page);
    const auto end = page.find('\n', line);
    const std::string text = " " + page.substr(line, end - line) + " ";
    const std::string key = " " + std::string(name) + "=";
    const auto at = text.find(key);
    REQUIRE_MESSAGE(at != std::string::npos, "no " << name << " in " << text);
    const auto from = at + key.size();
    return text.substr(from, text.find(' ', from) - from);
  }
  std::uint64_t backend_count(std::string_view id, std::string_view name) {
    return std::stoull(field(stats(), id, name));
  }
  std::string health(std::string_view id) { return field(stats(), id, "health"); }

  // SIGTERM; it must exit 0 within `limit`, with no sanitizer report on stderr.
  void stop(milliseconds limit = 5000ms) { stop_cleanly(proc_, "proxy", limit); }

 private:
  static std::vector<std::string> with_defaults(std::vector<std::string> args) {
    args.insert(args.begin(), LBKIT_L4_PROXY_PATH);
    args.insert(args.end(), {"--stats", "127.0.0.1:0"});
    // An open connection left by a failing check must not hold stop() for the default 10 s.
    if (std::find(args.begin(), args.end(), "--drain-timeout") == args.end()) {
      args.insert(args.end(), {"--drain-timeout", "1s"});
    }
    return args;
  }

  child_process proc_;
  std::vector<endpoint> listen_;
  endpoint stats_;
};

// "--backend A --backend B ..." for these backends.
template <class Backends>
std::vector<std::string> backend_args(const Backends& backends) {
  std::vector<std::string> args;
  for (const auto& b : backends) {
    args.push_back("--backend");
    args.push_back(b->arg());
  }
  return args;
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<std::unique_ptr<named_backend>> named_backends(std::vector<std::string> names) {
  std::vector<std::unique_ptr<named_backend>> v;
  for (auto& n : names) v.push_back(std::make_unique<named_backend>(std::move(n)));
  return v;
}

// --- HAProxy -----------------------------------------------------------------------------

constexpr const char* haproxy_path = "/usr/sbin/haproxy";

// HAProxy's version as major * 100 + minor (2.6 → 206), or 0 when it is not installed.
int haproxy_version() {
  if (::access(haproxy_path, X_OK) != 0) return 0;
  child_process v({haproxy_path, "-v"});
  if (!v.started()) return 0;
  v.wait_exit(10s);
  v.wait_output_closed(2s);
  const std::string text = v.stdout_text();
  const auto at = text.find("version ");
  if (at == std::string::npos) return 0;
  int major = 0, minor = 0;
  if (std::sscanf(text.c_str() + at + 8, "%d.%d", &major, &minor) != 2) return 0;
  return major * 100 + minor;
}

// HAProxy in the foreground (-db) with `config`, whose frontend binds `fd@3`: the listening
// socket this test made and passes down, so that its port is known and accepts before HAProxy
// is even running (connections wait in the backlog until it serves them).
class haproxy_process {
 public:
  explicit haproxy_process(const std::string& config)
      : listener_(open_socket(SOCK_STREAM, endpoint(ip("127.0.0.1"), 0))),
        address_(local_of(listener_.get())),
        proc_(command(config), {listener_.get()}) {
    REQUIRE_MESSAGE(proc_.started(), proc_.start_error());
  }
  const endpoint& address() const { return address_; }
  std::string stderr_text() const { return proc_.stderr_text(); }
  ~haproxy_process() {
    proc_.signal(SIGTERM);
    proc_.wait_exit(5s);  // then the destructor's SIGKILL
  }

 private:
  std::vector<std::string> command(const std::string& config) {
    REQUIRE(::listen(listener_.get(), 64) == 0);
    return {haproxy_path, "-db", "-f", dir_.write("haproxy.cfg", config)};
  }

  temp_dir dir_{"lbkit-l4-proxy-test"};
  socket_fd listener_;
  endpoint address_;
  child_process proc_;
};

}  // namespace

// -------------------------------------------------------------------------------------------

TEST_CASE("round robin gives three backends exactly a third; weighted round robin its weights") {
  auto backends = named_backends({"a", "b", "c"});
  constexpr int connections = 300;

  SUBCASE("round_robin, one worker: exact") {
    // One worker is one picker, the only walker of the round-robin sequence: 300 consecutive
    // picks are 100 whole cycles over a, b, c, whatever the random start.
    proxy_process p(concat({"--listen", "127.0.0.1:0", "--policy", "round_robin", "--threads", "1"},
                           backend_args(backends)));
    std::map<std::string, int> got;
    for (int i = 0; i < connections; ++i) ++got[fetch_name(p.address())];
    CHECK(got.size() == 3);
    for (const auto& b : backends) {
      CHECK_MESSAGE(got[b->name] == connections / 3, b->name);
      CHECK(p.backend_count(b->name, "picks") == connections / 3);
    }
    p.stop();
  }

  SUBCASE("weighted_round_robin 1:2:3, two workers: within the derived bound") {
    // The cycle has 6 slots: a once, b twice, c three times. Each worker claims 16 consecutive
    // positions of the one shared cycle at a time, so the 300 picks are a contiguous run of
    // positions minus the unused tail (at most 15 positions) of each worker's last claim. The
    // run is 300..330 positions long, so it holds between w × 50 and w × 55 slots of a backend
    // of weight w; each tail of 15 consecutive positions holds at most w × 3 of them. So a
    // backend of weight w gets between w × 44 and w × 55 of the 300 connections, however the
    // kernel spreads connections over the two listeners. (With one worker: exact, as above.)
    proxy_process p({"--listen", "127.0.0.1:0", "--policy", "weighted_round_robin", "--threads",
                     "2", "--backend", backends[0]->arg() + ",weight=1", "--backend",
                     backends[1]->arg() + ",weight=2", "--backend",
                     backends[2]->arg() + ",weight=3"});
    std::map<std::string, int> got;
    for (int i = 0; i < connections; ++i) ++got[fetch_name(p.address())];
    CHECK(got.size() == 3);
    for (int w = 1; w <= 3; ++w) {
      const auto& name = backends[static_cast<std::size_t>(w - 1)]->name;
      INFO(name << " got " << got[name] << " of " << connections);
      CHECK(got[name] >= w * 44);
      CHECK(got[name] <= w * 55);
    }
    p.stop();
  }
}

TEST_CASE("maglev keeps each client address on one backend, and different addresses spread") {
  auto backends = named_backends({"a", "b", "c"});
  proxy_process p(
      concat({"--listen", "127.0.0.1:0", "--policy", "maglev"}, backend_args(backends)));

  std::set<std::string> from_localhost;
  for (int i = 0; i < 20; ++i) from_localhost.insert(fetch_name(p.address()));
  CHECK(from_localhost.size() == 1);
  CHECK(!from_localhost.begin()->empty());

  // 16 more addresses: each sticks to one backend; together they use more than one. The
  // table maps an address to each backend with probability about 1/3, so all 16 on one
  // backend has probability 3 × 3^-16, about 7e-8.
  std::set<std::string> used;
  for (int k = 2; k < 18; ++k) {
    const auto from = ip("127.0.0." + std::to_string(k));
    std::set<std::string> got;
    for (int i = 0; i < 4; ++i) got.insert(fetch_name(p.address(), from));
    INFO("from 127.0.0." << k);
    CHECK(got.size() == 1);
    CHECK(!got.begin()->empty());
    used.insert(*got.begin());
  }
  CHECK(used.size() > 1);
  p.stop();
}

TEST_CASE(
    "failover: a dead backend is marked down within fall checks, retries hide it, and it "
    "comes back") {
  // Health timing (proxy main.cpp): interval 200 ms, fast interval (between states) 100 ms,
  // down interval 400 ms, each ±10% jitter; tcp checks are refused at once on loopback.
  //   down: the first failing check comes within 220 ms of the kill, the second (fall 2)
  //         110 ms later: 330 ms;
  //   up:   the next check of a down backend within 440 ms, the second (rise 2) 110 ms
  //         later: 550 ms, then at most 2 more round-robin picks.
  // Slack for a loaded 2-core machine and sanitized builds: 1.5 s on each bound.
  constexpr auto slack = 1500ms;
  std::vector<std::unique_ptr<named_backend>> backends = named_backends({"a", "b", "c"});
  // Passive ejection off, so that what is measured is the active checks.
  proxy_process p(concat({"--listen", "127.0.0.1:0", "--policy", "round_robin", "--health", "tcp",
                          "--health-interval", "200ms", "--fall", "2", "--rise", "2", "--retries",
                          "2", "--connect-timeout", "500ms", "--passive-failures", "0"},
                         backend_args(backends)));
  // Backends start down and need `rise` good checks.
  REQUIRE(eventually([&] {
    const auto page = p.stats();
    for (const auto& b : backends) {
      if (proxy_process::field(page, b->name, "health") != "up") return false;
    }
    return true;
  }));

  int failed = 0;
  std::map<std::string, int> got;
  auto once = [&] {
    const auto name = fetch_name(p.address());
    if (name.empty()) ++failed;
    ++got[name];
    return name;
  };
  for (int i = 0; i < 30; ++i) once();
  CHECK(got.size() == 3);

  // Kill b between two connections (so that none is in its accept queue, which no proxy
  // could save): its port refuses from now on.
  const auto port = backends[1]->server.address().port();
  backends[1]->server.stop();
  const auto killed = steady_clock::now();
  bool down = false;
  while (!down && since(killed) < 5s) {
    for (int i = 0; i < 5; ++i) once();
    down = p.health("b") == "down";
  }
  const auto took = since(killed);
  MESSAGE("b was marked down " << took.count() << " ms after it died");
  REQUIRE(down);
  CHECK(took < 330ms + slack);
  // Connects refused meanwhile were retried on the other backends, unseen by clients.
  CHECK(p.backend_count("b", "connect_failures") > 0);

  // The health is stored just before the balancer's new plan is published: a few more
  // connections, then no pick may go to b any more.
  for (int i = 0; i < 3; ++i) once();
  const auto page = p.stats();
  const auto picks = proxy_process::field(page, "b", "picks");
  const auto refused = proxy_process::field(page, "b", "connect_failures");
  const auto retries = proxy_process::counter(page, "retries");
  got.clear();
  for (int i = 0; i < 60; ++i) once();
  CHECK(got["a"] == 30);
  CHECK(got["c"] == 30);
  const auto after = p.stats();
  CHECK(proxy_process::field(after, "b", "picks") == picks);
  CHECK(proxy_process::field(after, "b", "connect_failures") == refused);
  CHECK(proxy_process::counter(after, "retries") == retries);

  // b comes back on the same port and gets traffic again.
  backends[1] = std::make_unique<named_backend>("b", port);
  const auto restarted = steady_clock::now();
  bool back = false;
  while (!back && since(restarted) < 5s) back = once() == "b";
  const auto took_up = since(restarted);
  MESSAGE("b got a connection again " << took_up.count() << " ms after it came back");
  REQUIRE(back);
  CHECK(took_up < 550ms + slack);
  CHECK(p.health("b") == "up");

  CHECK(failed == 0);
  p.stop();
}

TEST_CASE("bytes pass unchanged: 100 MiB both ways at once, and a half-closed request") {
  const pattern data;

  SUBCASE("100 MiB to an echo backend while reading the echo") {
    // The full size in every build: with splice in the proxy and memcmp here, a sanitized
    // build moves it in about as long as a plain one.
    constexpr std::uint64_t total = std::uint64_t{100} << 20;
    loopback_server backend(echo);
    proxy_process p({"--listen", "127.0.0.1:0", "--backend", backend.address().to_string()});
    auto s = connect_tcp(p.address());
    REQUIRE(s);
    const auto start = steady_clock::now();
    std::atomic<bool> sent_all{false};
    std::thread sender([&] {
      std::uint64_t off = 0;
      while (off < total) {
        const auto chunk =
            data.at(off, static_cast<std::size_t>(std::min<std::uint64_t>(total - off, 1 << 20)));
        const ssize_t n = ::send(s.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // a 5 s stall, or an error: the reader sees the short count
        off += static_cast<std::uint64_t>(n);
      }
      sent_all.store(off == total);
      ::shutdown(s.get(), SHUT_WR);
    });
    std::vector<char> buf(1 << 20);
    std::uint64_t received = 0;
    bool same = true;
    int error = 0;
    for (;;) {
      const ssize_t n = ::recv(s.get(), buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : 0;
        break;
      }
      same = same && data.matches({buf.data(), static_cast<std::size_t>(n)}, received);
      received += static_cast<std::uint64_t>(n);
    }
    sender.join();
    MESSAGE("100 MiB echoed through the proxy in " << since(start).count() << " ms");
    CHECK(sent_all.load());
    CHECK(error == 0);
    CHECK(received == total);
    CHECK(same);
    const auto page = p.stats();
    const auto id = backend.address().to_string();
    CHECK(proxy_process::field(page, id, "bytes_to") == std::to_string(total));
    CHECK(proxy_process::field(page, id, "bytes_from") == std::to_string(total));
    p.stop();
  }

  SUBCASE("a request ended by shutdown(SHUT_WR), answered after the end by 1 MiB") {
    constexpr std::size_t reply = std::size_t{1} << 20;
    std::mutex mu;
    std::string request;
    loopback_server backend([&](int c, const loopback_server& self) {
      set_timeouts(c, 50ms);
      std::string got;
      char buf[4096];
      bool eof = false;
      while (!eof && !self.stopping()) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n > 0) got.append(buf, static_cast<std::size_t>(n));
        eof = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
      }
      {
        std::lock_guard lock(mu);
        request = got;
      }
      // Only after the client's end: the answer depends on the whole request.
      std::string answer(data.at(0, reply));
      set_timeouts(c, io_timeout);
      loopback_server::send_all(c, answer);
      ::close(c);
    });
    proxy_process p({"--listen", "127.0.0.1:0", "--backend", backend.address().to_string()});
    const std::string sent = "a request that ends with the sender's FIN";
    const auto r = round_trip(p.address(), sent);
    CHECK(r.eof);
    CHECK(r.data.size() == reply);
    CHECK(data.matches(r.data, 0));
    {
      std::lock_guard lock(mu);
      CHECK(request == sent);
    }
    p.stop();
  }
}

TEST_CASE("PROXY protocol: the backend learns the client's address; --accept-proxy passes one on") {
  recording_backend backend;
  const auto client_ip = ip("127.0.0.5");

  // The stream a recording backend got: its PROXY header, and the bytes after it.
  auto parse = [](const std::string& stream) {
    const auto r = lbkit::parse_proxy_header(stream);
    INFO("stream: " << stream.substr(0, 120));
    REQUIRE(r.status == lbkit::proxy_parse_status::complete);
    return std::pair{r.header, stream.substr(r.size)};
  };

  auto last_stream = [&] {
    const auto streams = backend.streams();
    REQUIRE(!streams.empty());
    return streams.back();
  };

  SUBCASE("--proxy-protocol v1 and v2 tell the backend the client's address") {
    for (const auto version : {lbkit::proxy_version::v1, lbkit::proxy_version::v2}) {
      const std::string v = version == lbkit::proxy_version::v1 ? "v1" : "v2";
      CAPTURE(v);
      proxy_process p({"--listen", "127.0.0.1:0", "--backend", backend.address().to_string(),
                       "--proxy-protocol", v});
      endpoint client;
      const auto before = backend.streams().size();
      const auto r = round_trip(p.address(), "hello", client_ip, &client);
      CHECK(r.data == "ok");
      const auto streams = backend.streams();
      REQUIRE(streams.size() == before + 1);
      const auto [h, rest] = parse(streams.back());
      CHECK(h.version == version);
      CHECK(h.command == lbkit::proxy_command::proxy);
      CHECK(h.family == lbkit::proxy_family::inet);
      CHECK(h.source == client);  // 127.0.0.5 and the client socket's own port
      CHECK(h.destination == p.address());
      CHECK(rest == "hello");
      p.stop();
    }
  }

  SUBCASE("--accept-proxy reads the client's v1 or v2 header and forwards its addresses") {
    proxy_process p({"--listen", "127.0.0.1:0", "--backend", backend.address().to_string(),
                     "--accept-proxy", "--proxy-protocol", "v2", "--connect-timeout", "3s"});

    // A hand-written v1 header, in two writes; the client then waits for the answer.
    {
      const auto s = connect_tcp(p.address());
      REQUIRE(s);
      REQUIRE(send_all(s.get(), "PROXY TCP4 192.0.2.10 198."));
      REQUIRE(send_all(s.get(), "51.100.20 40000 443\r\nhello v1<end>"));
      CHECK(read_to_end(s.get()).data == "ok");
      const auto [h, rest] = parse(last_stream());
      CHECK(h.version == lbkit::proxy_version::v2);
      CHECK(h.source == *endpoint::parse("192.0.2.10:40000"));
      CHECK(h.destination == *endpoint::parse("198.51.100.20:443"));
      CHECK(rest == "hello v1<end>");
    }
    // A v2 header from lbkit's encoder, IPv6, with a TLV that is passed on.
    {
      lbkit::proxy_header in;
      in.version = lbkit::proxy_version::v2;
      in.family = lbkit::proxy_family::inet6;
      in.source = *endpoint::parse("[2001:db8::7]:5555");
      in.destination = *endpoint::parse("[2001:db8::1]:443");
      in.tlvs.push_back({lbkit::proxy_tlv_authority, "example.com"});
      const auto bytes = lbkit::encode_proxy_header(in, {.crc32c = true});
      REQUIRE(bytes);
      const std::string header(reinterpret_cast<const char*>(bytes->data()), bytes->size());
      const auto r =
          round_trip(p.address(), header + "hello v2<end>", std::nullopt, nullptr, then::wait);
      CHECK(r.data == "ok");
      const auto [h, rest] = parse(last_stream());
      CHECK(h.version == lbkit::proxy_version::v2);
      CHECK(h.family == lbkit::proxy_family::inet6);
      CHECK(h.source == in.source);
      CHECK(h.destination == in.destination);
      CHECK(h.tlvs == in.tlvs);
      CHECK(rest == "hello v2<end>");
    }
    // A client that sends its header, its request and its FIN at once (as `printf ... | nc -N`
    // does) is served like any other: the FIN is passed on after the request. Whether the FIN
    // is already there when the proxy first reads depends on timing, so try a few times.
    {
      int dropped = 0;
      for (int i = 0; i < 10; ++i) {
        const auto r =
            round_trip(p.address(), "PROXY TCP4 192.0.2.11 198.51.100.20 40001 443\r\nfin",
                       std::nullopt, nullptr, then::half_close);
        if (r.data != "ok") {
          ++dropped;
          continue;
        }
        const auto [h, rest] = parse(last_stream());
        CHECK(h.source == *endpoint::parse("192.0.2.11:40001"));
        CHECK(rest == "fin");
      }
      CHECK_MESSAGE(
          dropped == 0,
          dropped << " of 10 connections sending header + data + FIN at once were closed unserved");
    }

    // Garbage instead of a header: closed at the first wrong byte, long before the 3 s header
    // deadline, and nothing reaches the backend; the next good connection is served.
    const auto accepted = backend.accepted();
    std::string tls_like(64, '\0');
    std::uint64_t x = 42;
    for (auto& ch : tls_like) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      ch = static_cast<char>(x >> 56);
    }
    tls_like[0] = '\x16';  // a TLS handshake record: neither 'P' (v1) nor CR (v2)
    for (const std::string& garbage : {std::string("GET / HTTP/1.1\r\n\r\n"), tls_like}) {
      const auto s = connect_tcp(p.address());
      REQUIRE(s);
      const auto start = steady_clock::now();
      REQUIRE(send_all(s.get(), garbage));
      CHECK(closed_without_data(s.get()));
      CHECK(since(start) < 1000ms);
    }
    CHECK(proxy_process::counter(p.stats(), "proxy_header_errors") == 2);
    CHECK(round_trip(p.address(), "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nagain<end>", std::nullopt,
                     nullptr, then::wait)
              .data == "ok");
    CHECK(backend.accepted() == accepted + 1);
    p.stop();
  }
}

TEST_CASE("HAProxy interop: PROXY v2 from HAProxy into lbkit, and from lbkit into HAProxy") {
  const int version = haproxy_version();
  if (version == 0) {
    MESSAGE("HAProxy is not installed at " << haproxy_path << ": interop cases skipped");
    return;
  }

  SUBCASE("HAProxy mode tcp, send-proxy-v2 → lbkit --accept-proxy --proxy-protocol v1") {
    recording_backend backend;
    proxy_process lb({"--listen", "127.0.0.1:0", "--backend", backend.address().to_string(),
                      "--accept-proxy", "--proxy-protocol", "v1"});
    haproxy_process ha(
        "defaults\n"
        "  mode tcp\n"
        "  timeout connect 2s\n"
        "  timeout client 10s\n"
        "  timeout server 10s\n"
        "frontend fe\n"
        "  bind fd@3\n"
        "  default_backend be\n"
        "backend be\n"
        "  server s1 " +
        lb.address().to_string() + " send-proxy-v2\n");
    INFO("haproxy stderr: " << ha.stderr_text());
    endpoint client;
    // No half-close from the client here: see the --accept-proxy case for that.
    const auto r =
        round_trip(ha.address(), "through haproxy<end>", ip("127.0.0.7"), &client, then::wait);
    CHECK(r.data == "ok");
    const auto streams = backend.streams();
    REQUIRE(streams.size() == 1);
    const auto parsed = lbkit::parse_proxy_header(streams[0]);
    REQUIRE(parsed.status == lbkit::proxy_parse_status::complete);
    CHECK(parsed.header.version == lbkit::proxy_version::v1);
    CHECK(parsed.header.source == client);  // the real client, through both hops
    CHECK(parsed.header.destination == ha.address());
    CHECK(streams[0].substr(parsed.size) == "through haproxy<end>");
    lb.stop();
  }

  SUBCASE("lbkit --proxy-protocol v2 → HAProxy accept-proxy, which reports the address") {
    if (version < 202) {
      MESSAGE("HAProxy " << version / 100 << "." << version % 100
                         << " has no `http-request return` (2.2+): case skipped");
      return;
    }
    haproxy_process ha(
        "defaults\n"
        "  mode http\n"
        "  timeout connect 2s\n"
        "  timeout client 10s\n"
        "  timeout server 10s\n"
        "frontend fe\n"
        "  bind fd@3 accept-proxy\n"
        "  http-request return status 200 content-type text/plain "
        "lf-string \"%[src]:%[src_port] %[dst]:%[dst_port]\"\n");
    INFO("haproxy stderr: " << ha.stderr_text());
    proxy_process lb({"--listen", "127.0.0.1:0", "--backend", ha.address().to_string(),
                      "--proxy-protocol", "v2"});
    endpoint client;
    const auto r =
        round_trip(lb.address(), "GET / HTTP/1.0\r\nHost: test\r\n\r\n", ip("127.0.0.8"), &client);
    CHECK(r.eof);
    CHECK(r.data.rfind("HTTP/1.1 200", 0) == 0);
    const auto head_end = r.data.find("\r\n\r\n");
    REQUIRE(head_end != std::string::npos);
    CHECK(r.data.substr(head_end + 4) == client.to_string() + " " + lb.address().to_string());
    lb.stop();
  }
}

TEST_CASE("UDP: each client's datagrams stay on one backend and its replies come back to it") {
  udp_echo_server x("x"), y("y");
  proxy_process p({"--listen", "127.0.0.1:0", "--udp", "--policy", "round_robin", "--backend",
                   x.address().to_string() + ",id=x", "--backend",
                   y.address().to_string() + ",id=y"});

  struct client {
    socket_fd fd;
    std::string tag;
    std::set<std::string> backends;
  };
  std::vector<client> clients;
  for (const char* from : {"127.0.0.1", "127.0.0.2"}) {
    auto s = open_socket(SOCK_DGRAM, endpoint(ip(from), 0));
    sockaddr_storage ss{};
    const socklen_t len = p.address().to_sockaddr(ss);
    // Connected: the socket takes datagrams only from the proxy's address.
    REQUIRE(::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    set_timeouts(s.get(), 2s);
    clients.push_back({std::move(s), std::string("from ") + from, {}});
  }
  constexpr int rounds = 10;
  for (int i = 0; i < rounds; ++i) {
    for (auto& c : clients) {
      const std::string payload = c.tag + " #" + std::to_string(i);
      REQUIRE(::send(c.fd.get(), payload.data(), payload.size(), 0) ==
              static_cast<ssize_t>(payload.size()));
    }
    for (auto& c : clients) {
      char buf[2048];
      const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
      REQUIRE(n > 0);  // a loss on idle loopback, or no answer within 2 s
      const std::string reply(buf, static_cast<std::size_t>(n));
      const auto bar = reply.find('|');
      REQUIRE(bar != std::string::npos);
      CHECK(reply.substr(bar + 1) == c.tag + " #" + std::to_string(i));  // its own, in order
      c.backends.insert(reply.substr(0, bar));
    }
  }
  for (const auto& c : clients) CHECK(c.backends.size() == 1);
  // Round robin with one worker: the two sessions were two consecutive picks.
  CHECK(*clients[0].backends.begin() != *clients[1].backends.begin());
  CHECK(x.datagrams() == rounds);
  CHECK(y.datagrams() == rounds);
  const auto page = p.stats();
  CHECK(proxy_process::field(page, "x", "datagrams") == std::to_string(rounds));
  CHECK(proxy_process::field(page, "y", "datagrams") == std::to_string(rounds));
  p.stop();
}

TEST_CASE("ACLs: denied clients are closed without reaching a backend; others are served") {
  named_backend a("a");

  SUBCASE("--deny 127.0.0.66/32") {
    proxy_process p({"--listen", "127.0.0.1:0", "--backend", a.arg(), "--deny", "127.0.0.66/32"});
    {
      const auto s = connect_tcp(p.address(), ip("127.0.0.66"));
      REQUIRE(s);
      const auto start = steady_clock::now();
      CHECK(closed_without_data(s.get()));
      CHECK(since(start) < 1000ms);
    }
    CHECK(fetch_name(p.address()) == "a");
    CHECK(fetch_name(p.address(), ip("127.0.0.65")) == "a");
    CHECK(proxy_process::counter(p.stats(), "denied") == 1);
    CHECK(a.server.accepted() == 2);
    p.stop();
  }

  SUBCASE("--allow 127.0.0.0/29") {
    proxy_process p({"--listen", "127.0.0.1:0", "--backend", a.arg(), "--allow", "127.0.0.0/29"});
    {
      const auto s = connect_tcp(p.address(), ip("127.0.0.9"));
      REQUIRE(s);
      CHECK(closed_without_data(s.get()));
    }
    CHECK(fetch_name(p.address()) == "a");
    CHECK(fetch_name(p.address(), ip("127.0.0.7")) == "a");
    CHECK(proxy_process::counter(p.stats(), "denied") == 1);
    CHECK(a.server.accepted() == 2);
    p.stop();
  }
}

TEST_CASE("bad command lines exit non-zero naming the flag; --help exits 0 and lists every flag") {
  const std::vector<std::string> base = {LBKIT_L4_PROXY_PATH, "--listen", "127.0.0.1:0",
                                         "--backend", "127.0.0.1:9"};
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--bogus"}, "--bogus"},
      {{"--backend", "1.2.3.4"}, "--backend"},
      {{"--policy", "nope"}, "--policy"},
      {{"--health-interval", "5"}, "--health-interval"},
      {{"--health", "smtp"}, "--health"},
      {{"--proxy-protocol", "v3"}, "--proxy-protocol"},
      {{"--allow", "10.0.0.0/33"}, "--allow"},
      {{"--connect-timeout", "0ms"}, "--connect-timeout"},
  };
  for (const auto& one : bad) {
    const std::string& flag = one.second;  // not a structured binding: CAPTURE uses a lambda
    const auto& extra = one.first;
    CAPTURE(flag);
    child_process proc(concat(base, extra));
    REQUIRE(proc.started());
    const auto status = proc.wait_exit(10s);
    proc.wait_output_closed(2s);
    INFO("stderr: " << proc.stderr_text());
    REQUIRE(status);
    CHECK(status->exited);
    CHECK(status->code != 0);
    CHECK(proc.stderr_text().find(flag) != std::string::npos);
    CHECK(!sanitizer_report(proc.stderr_text()));
  }
  // Without the required flags.
  {
    child_process proc({LBKIT_L4_PROXY_PATH});
    const auto status = proc.wait_exit(10s);
    proc.wait_output_closed(2s);
    REQUIRE(status);
    CHECK(!status->success());
    CHECK(proc.stderr_text().find("--listen") != std::string::npos);
  }

  child_process help({LBKIT_L4_PROXY_PATH, "--help"});
  const auto status = help.wait_exit(10s);
  help.wait_output_closed(2s);
  REQUIRE(status);
  CHECK(status->success());
  const auto text = help.stdout_text();
  for (const char* flag : {"--listen",
                           "--backend",
                           "--policy",
                           "--health",
                           "--health-interval",
                           "--health-timeout",
                           "--rise",
                           "--fall",
                           "--connect-timeout",
                           "--retries",
                           "--udp",
                           "--proxy-protocol",
                           "--accept-proxy",
                           "--allow",
                           "--deny",
                           "--threads",
                           "--stats",
                           "--passive-failures",
                           "--drain-timeout",
                           "--idle-timeout",
                           "--udp-timeout",
                           "--max-connections",
                           "-q",
                           "--quiet",
                           "--help"}) {
    CHECK_MESSAGE(text.find(flag) != std::string::npos, flag);
  }
}

TEST_CASE("SIGTERM: the proxy stops accepting, lets open connections finish, and exits 0") {
  loopback_server backend(pong);
  proxy_process p({"--listen", "127.0.0.1:0", "--backend", backend.address().to_string(),
                   "--drain-timeout", "2s"});
  constexpr auto drain = 2000ms;
  const auto open = connect_tcp(p.address());
  REQUIRE(open);
  REQUIRE(send_all(open.get(), "1\n"));
  REQUIRE(read_line(open.get()) == "pong:1");

  REQUIRE(p.process().signal(SIGTERM));
  const auto signalled = steady_clock::now();
  // New connections are refused once the worker closed its listener (a connect that slips
  // in before that is closed at once here and ends with the drain).
  CHECK(eventually(
      [&] {
        int error = 0;
        const auto s = connect_tcp(p.address(), std::nullopt, &error);
        return !s && error == ECONNREFUSED;
      },
      2000ms));

  SUBCASE("the open connection completes its exchange, then the proxy exits at once") {
    REQUIRE(send_all(open.get(), "2\n"));
    CHECK(read_line(open.get()) == "pong:2");
    ::shutdown(open.get(), SHUT_WR);
    CHECK(read_to_end(open.get()).eof);
    const auto status = p.process().wait_exit(drain + 1500ms);
    REQUIRE(status);
    CHECK_MESSAGE(status->success(), status->to_string());
    // Ended because the connections did, not by the drain deadline.
    CHECK(since(signalled) < drain);
  }

  SUBCASE("an idle connection is closed at the drain deadline, and the proxy exits 0") {
    const auto status = p.process().wait_exit(drain + 1500ms);
    REQUIRE(status);
    CHECK_MESSAGE(status->success(), status->to_string());
    CHECK(since(signalled) >= drain - 150ms);  // the worker's clock is coarse (100 ms tick)
    const auto r = read_to_end(open.get());
    CHECK(r.data.empty());
    CHECK((r.eof || r.error == ECONNRESET));
  }
  p.process().wait_output_closed(2s);
  INFO("proxy stderr: " << p.process().stderr_text());
  CHECK(!sanitizer_report(p.process().stderr_text()));
}

#endif  // LBKIT_L4_PROXY_PATH
