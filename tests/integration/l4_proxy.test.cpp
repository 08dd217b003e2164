// SPDX-License-Identifier: MIT
// lbkit_l4_proxy end to end: the real binary (LBKIT_L4_PROXY_PATH, built in the same preset,
// so sanitized alike) between test clients and test backends, all on loopback with ports
// picked by the kernel. Covered: how connections spread (round robin exactly, weighted round
// robin within a derived bound), consistent-hash stickiness per client address, failover
// under active TCP checks with retries that hide refused connects, byte-exact bulk transfer
// both ways at once and half-close, PROXY protocol v1/v2 out and in (and garbage in), interop
// with HAProxy both ways, UDP sessions, ACLs, command-line errors, and graceful shutdown;
// and where blame lands (docs/architecture.md, property 10): refused, reset and timed-out connects
// and refused UDP datagrams are connection failures whose ejection a passing check ends, a shortage
// of descriptors blames no backend and does not spin, addresses that would share a port are
// refused, and hot error paths log a bounded number of lines.
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
#include <functional>
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
#include "../support/proc_usage.hpp"
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

// A port of 127.0.0.1 that was free a moment ago (bound to port 0, then closed): for
// configurations that must name a port, and that the proxy refuses before binding it.
std::uint16_t free_port(int type = SOCK_STREAM) {
  return local_of(open_socket(type, endpoint(ip("127.0.0.1"), 0)).get()).port();
}

// A program run to its end: its exit status (empty if it did not end within 10 s) and its
// stderr.
struct run_result {
  std::optional<exit_status> status;
  std::string err;
};
run_result run_to_exit(const std::vector<std::string>& argv) {
  child_process proc(argv);
  REQUIRE_MESSAGE(proc.started(), proc.start_error());
  run_result r;
  r.status = proc.wait_exit(10s);
  proc.wait_output_closed(2s);
  r.err = proc.stderr_text();
  return r;
}

// The number of lines of a text.
std::size_t lines_of(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

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

// Clients one after another, on a thread of their own, until stop() or the end of the scope.
// `one` makes a connection and returns the name of the backend that answered it, empty if it
// failed. Counts them, and keeps when `watched` last answered one.
class client_loop {
 public:
  client_loop(std::function<std::string()> one, std::string watched)
      : one_(std::move(one)), watched_(std::move(watched)), thread_([this] { run(); }) {}
  client_loop(const client_loop&) = delete;
  client_loop& operator=(const client_loop&) = delete;
  ~client_loop() { stop(); }
  void stop() {
    done_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int served() const { return served_.load(); }  // connections made, failed ones included
  int failed() const { return failed_.load(); }
  // Whether `watched` answered a connection after `t`.
  bool answered_since(steady_clock::time_point t) const {
    return last_watched_.load() > t.time_since_epoch().count();
  }

 private:
  void run() {
    while (!done_.load()) {
      const std::string name = one_();
      if (name.empty()) ++failed_;
      ++served_;
      if (name == watched_) last_watched_.store(steady_clock::now().time_since_epoch().count());
    }
  }

  std::function<std::string()> one_;
  std::string watched_;
  std::atomic<bool> done_{false};
  std::atomic<int> served_{0}, failed_{0};
  std::atomic<std::int64_t> last_watched_{0};  // steady_clock ticks
  std::thread thread_;                         // last: it uses the members above
};

// A TCP backend that holds many connections at once (loopback_server serves one at a
// time): one thread polls them all, greets each with its name and "\n", echoes what it gets
// and closes a connection at the client's end. On a given port if asked (SO_REUSEADDR, so
// that a restart can take the port of one killed); kill() dies as a crashed process does
// under load: it resets every open connection and closes the listener.
class holding_backend {
 public:
  explicit holding_backend(std::string name, std::uint16_t port = 0) : name_(std::move(name)) {
    listener_ = socket_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener_);
    const int one = 1;
    ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    const socklen_t len = endpoint(ip("127.0.0.1"), port).to_sockaddr(ss);
    REQUIRE(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    REQUIRE(::listen(listener_.get(), 256) == 0);
    address_ = local_of(listener_.get());
    thread_ = std::thread([this] { run(); });
  }
  holding_backend(const holding_backend&) = delete;
  holding_backend& operator=(const holding_backend&) = delete;
  ~holding_backend() { stop(false); }
  std::string arg() const { return address_.to_string() + ",id=" + name_; }
  std::uint16_t port() const { return address_.port(); }
  const std::string& name() const { return name_; }
  // Resets the open connections (counted), then closes the listener: connects are refused.
  void kill() { stop(true); }
  int cut() const { return cut_; }

 private:
  void stop(bool reset) {
    if (!thread_.joinable()) return;
    stop_.store(true);
    thread_.join();
    for (int fd : conns_) reset ? loopback_server::reset(fd) : static_cast<void>(::close(fd));
    if (reset) cut_ = static_cast<int>(conns_.size());
    conns_.clear();
    listener_.reset();
  }

  void run() {
    std::vector<pollfd> p;
    while (!stop_.load()) {
      p.assign(1, pollfd{listener_.get(), POLLIN, 0});
      for (int fd : conns_) p.push_back({fd, POLLIN, 0});
      if (::poll(p.data(), p.size(), 20) <= 0) continue;
      std::vector<int> ended;
      for (std::size_t i = 1; i < p.size(); ++i) {
        if (p[i].revents == 0) continue;
        char buf[4096];
        const ssize_t n = ::recv(p[i].fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
          [[maybe_unused]] auto m = ::send(p[i].fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          ended.push_back(p[i].fd);
        }
      }
      for (int fd : ended) {
        ::close(fd);
        std::erase(conns_, fd);
      }
      if (p[0].revents != 0) {
        const int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        const std::string hello = name_ + "\n";
        [[maybe_unused]] auto m = ::send(c, hello.data(), hello.size(), MSG_NOSIGNAL);
        conns_.push_back(c);
      }
    }
  }

  std::string name_;
  socket_fd listener_;
  endpoint address_;
  std::vector<int> conns_;  // the thread's, then stop()'s
  int cut_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: it uses the members above
};

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
  // `prefix`: a command that runs the proxy (prlimit ... --), exec'ing it in its own pid.
  explicit proxy_process(std::vector<std::string> args, int listeners = 1,
                         std::vector<std::string> prefix = {})
      : proc_(with_defaults(std::move(args), std::move(prefix))) {
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
  const endpoint& stats_address() const { return stats_; }
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
  static std::vector<std::string> with_defaults(std::vector<std::string> args,
                                                std::vector<std::string> prefix) {
    args.insert(args.begin(), LBKIT_L4_PROXY_PATH);
    args.insert(args.begin(), prefix.begin(), prefix.end());
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

  // Kill b between two connections (so that none is in its accept queue; one there would be
  // reset, and retried: see the connection-failure cases): its port refuses from now on.
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

TEST_CASE(
    "connection failures: a killed backend is ejected, retries hide it from clients, and a "
    "passing check ends the ejection when it is back") {
  // A backend that refuses (or resets a connection it queued) has a connection failure, not
  // a bad answer: passive detection ejects it "until a check passes", and the proxy retries
  // the client on another backend. Health timing as in the failover case: a down backend is
  // checked every 400 ms (±10%), a recovering one every 100 ms; rise 2, so b is up again
  // within 550 ms of its restart and gets one of the next three round-robin picks. The bound
  // is rise × interval + about a second of slack: 1.6 s (an ejection that only its time
  // ended, --ejection-time 30s, would take 30 s).
  constexpr auto back_within = 2 * 200ms + 1200ms;
  std::vector<std::unique_ptr<named_backend>> backends = named_backends({"a", "b", "c"});
  proxy_process p(concat(
      {"--listen",           "127.0.0.1:0", "--policy",        "round_robin", "--health",  "tcp",
       "--health-interval",  "200ms",       "--rise",          "2",           "--fall",    "3",
       "--passive-failures", "3",           "--ejection-time", "30s",         "--retries", "2",
       "--connect-timeout",  "500ms"},
      backend_args(backends)));
  REQUIRE(eventually([&] {
    const auto page = p.stats();
    for (const auto& b : backends) {
      if (proxy_process::field(page, b->name, "health") != "up") return false;
    }
    return true;
  }));

  // Clients connect one after another on their own thread the whole time, so that the kill
  // lands while connections to b are on their way (some in b's accept queue, which its close
  // resets: retried too, since b sent nothing and got nothing of the client's).
  client_loop load([&] { return fetch_name(p.address()); }, "b");
  REQUIRE(eventually([&] { return load.served() >= 30; }));

  const auto port = backends[1]->server.address().port();
  backends[1]->server.stop();
  REQUIRE(eventually([&] { return p.health("b") == "ejected"; }));
  const auto killed_served = load.served();
  REQUIRE(eventually([&] { return load.served() >= killed_served + 30; }));

  backends[1] = std::make_unique<named_backend>("b", port);
  const auto restarted = steady_clock::now();
  const bool back = eventually([&] { return load.answered_since(restarted); }, 10s);
  const auto took = since(restarted);
  load.stop();
  MESSAGE("b served again " << took.count() << " ms after its restart; " << load.served()
                            << " connections in all");
  CHECK(back);
  CHECK(took < back_within);
  CHECK(load.failed() == 0);  // a and c were up the whole time
  const auto page = p.stats();
  CHECK(proxy_process::field(page, "b", "health") == "up");
  CHECK(std::stoull(proxy_process::field(page, "b", "connect_failures")) >= 3);
  CHECK(proxy_process::counter(page, "retries") > 0);
  for (const char* other : {"a", "c"}) CHECK(proxy_process::field(page, other, "failures") == "0");
  p.stop();
  const auto err = p.process().stderr_text();
  CHECK(contains(err, "backend b ejected (passive: consecutive connection failures)"));
  CHECK(contains(err, "backend b (" + endpoint(ip("127.0.0.1"), port).to_string() +
                          ") restored: active check passed"));
}

TEST_CASE(
    "connection failures: a connect that times out, or a reset before any byte, is one, and "
    "is retried elsewhere") {
  SUBCASE("a connect that times out") {
    // A listener whose accept queue is full (backlog 0, one connection queued that nobody
    // accepts) drops SYNs: a connect to it never completes.
    auto hole = open_socket(SOCK_STREAM, endpoint(ip("127.0.0.1"), 0));
    REQUIRE(::listen(hole.get(), 0) == 0);
    const auto filler = connect_tcp(local_of(hole.get()));
    REQUIRE(filler);
    named_backend a("a");
    proxy_process p({"--listen", "127.0.0.1:0", "--policy", "round_robin", "--connect-timeout",
                     "300ms", "--passive-failures", "1", "--backend", a.arg(), "--backend",
                     local_of(hole.get()).to_string() + ",id=hole"});
    // Round robin: two connections in a row give `hole` one of them; it is retried on a.
    for (int i = 0; i < 2; ++i) CHECK(fetch_name(p.address()) == "a");
    const auto page = p.stats();
    CHECK(proxy_process::counter(page, "timeouts") >= 1);
    CHECK(proxy_process::counter(page, "retries") >= 1);
    CHECK(proxy_process::field(page, "hole", "connect_failures") != "0");
    CHECK(eventually([&] { return p.health("hole") == "ejected"; }));
    p.stop();
    CHECK(contains(p.process().stderr_text(),
                   "backend hole ejected (passive: consecutive connection failures)"));
  }

  SUBCASE("a backend that accepts and resets before it answers, with a PROXY header sent") {
    // The header the proxy sends may have reached the resetting backend before its reset:
    // the retry sends it again, whole, to the next one. That one answers with the header
    // line it got.
    loopback_server resets([](int c, const loopback_server&) { loopback_server::reset(c); });
    loopback_server mirror([](int c, const loopback_server&) {
      set_timeouts(c, io_timeout);
      std::string line;
      char ch;
      while (line.size() < 200 && ::recv(c, &ch, 1, 0) == 1 && ch != '\n') line += ch;
      loopback_server::send_all(c, line);
      ::close(c);
    });
    proxy_process p({"--listen", "127.0.0.1:0", "--policy", "round_robin", "--proxy-protocol", "v1",
                     "--passive-failures", "1", "--backend",
                     resets.address().to_string() + ",id=resets", "--backend",
                     mirror.address().to_string() + ",id=mirror"});
    for (int i = 0; i < 4; ++i) {
      const auto s = connect_tcp(p.address());
      REQUIRE(s);
      const auto client = local_of(s.get());
      const auto r = read_to_end(s.get());
      CHECK(r.eof);
      CHECK(r.data == "PROXY TCP4 127.0.0.1 127.0.0.1 " + std::to_string(client.port()) + " " +
                          std::to_string(p.address().port()) + "\r");
    }
    CHECK(resets.accepted() >= 1);
    const auto page = p.stats();
    CHECK(proxy_process::field(page, "resets", "connect_failures") != "0");
    CHECK(proxy_process::field(page, "mirror", "failures") == "0");
    CHECK(eventually([&] { return p.health("resets") == "ejected"; }));
    p.stop();
    CHECK(contains(p.process().stderr_text(),
                   "backend resets ejected (passive: consecutive connection failures)"));
  }
}

TEST_CASE("UDP: a refused datagram is a connection failure, and the client moves on") {
  // No socket on dead's port: each datagram sent there comes back as ICMP port unreachable.
  const auto dead = endpoint(ip("127.0.0.1"), free_port(SOCK_DGRAM));
  udp_echo_server live("live");
  proxy_process p({"--listen", "127.0.0.1:0", "--udp", "--policy", "round_robin",
                   "--passive-failures", "1", "--backend", dead.to_string() + ",id=dead",
                   "--backend", live.address().to_string() + ",id=live"});
  // Four clients, so that round robin sends some of their sessions to dead. Each sends until
  // it is answered (every 100 ms, for 5 s at most): a refused session ends, and the next
  // datagram is balanced anew, so each is answered by live.
  for (int k = 0; k < 4; ++k) {
    auto s = open_socket(SOCK_DGRAM, endpoint(ip("127.0.0.1"), 0));
    sockaddr_storage ss{};
    const socklen_t len = p.address().to_sockaddr(ss);
    REQUIRE(::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    set_timeouts(s.get(), 100ms);
    std::string reply;
    const auto start = steady_clock::now();
    while (reply.empty() && since(start) < 5s) {
      const std::string payload = "hello " + std::to_string(k);
      REQUIRE(::send(s.get(), payload.data(), payload.size(), 0) ==
              static_cast<ssize_t>(payload.size()));
      char buf[2048];
      const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
      if (n > 0) reply.assign(buf, static_cast<std::size_t>(n));
    }
    CAPTURE(k);
    CHECK(reply == "live|hello " + std::to_string(k));
  }
  const auto page = p.stats();
  CHECK(proxy_process::field(page, "dead", "connect_failures") != "0");
  CHECK(proxy_process::field(page, "live", "failures") == "0");
  CHECK(eventually([&] { return p.health("dead") == "ejected"; }));
  p.stop();
  CHECK(contains(p.process().stderr_text(),
                 "backend dead ejected (passive: consecutive connection failures)"));
}

TEST_CASE(
    "out of descriptors: no backend is blamed, the proxy waits without spinning, and serves "
    "again when descriptors are free") {
  constexpr const char* prlimit = "/usr/bin/prlimit";
  if (::access(prlimit, X_OK) != 0) {
    MESSAGE(prlimit << " (util-linux) is not installed: case skipped");
    return;
  }
  // 64 descriptors: about a dozen for the proxy itself, two per proxied connection. 40
  // clients need 80. The checks are as sensitive as they go: one failed probe marks a
  // backend down, one failed connection ejects it.
  holding_backend a("a"), b("b");
  proxy_process p({"--listen",
                   "127.0.0.1:0",
                   "--policy",
                   "round_robin",
                   "--health",
                   "tcp",
                   "--health-interval",
                   "200ms",
                   "--rise",
                   "1",
                   "--fall",
                   "1",
                   "--passive-failures",
                   "1",
                   "--connect-timeout",
                   "10s",
                   "--backend",
                   a.arg(),
                   "--backend",
                   b.arg()},
                  1, {prlimit, "--nofile=64:64", "--"});
  const pid_t pid = p.process().pid();
  REQUIRE(eventually([&] {
    const auto page = p.stats();
    return proxy_process::field(page, "a", "health") == "up" &&
           proxy_process::field(page, "b", "health") == "up";
  }));

  constexpr int clients = 40;
  std::vector<socket_fd> conns;
  for (int i = 0; i < clients; ++i) {
    conns.push_back(connect_tcp(p.address()));  // the kernel's backlog takes them all
    REQUIRE(conns.back());
  }
  // Exhausted: the proxy holds (nearly) all of its 64 descriptors, and found it out. (The
  // stats page answers from a descriptor kept for it.)
  REQUIRE(eventually([&] { return open_descriptors(pid) >= 62; }, 10s));
  REQUIRE(
      eventually([&] { return proxy_process::counter(p.stats(), "local_errors") > 0; }, 10s, 20ms));

  // While it is, the proxy does not spin, and the stats page still answers; it is asked for
  // in the measured second.
  const double cpu_before = cpu_seconds(pid);
  const auto measured = steady_clock::now();
  const std::string page = p.stats();
  std::this_thread::sleep_until(measured + 1s);  // a measuring window, not a wait for a state
  const double cpu = cpu_seconds(pid) - cpu_before;
  MESSAGE("out of descriptors: the proxy used " << cpu << " s of CPU in a second");
  CHECK(cpu < 0.2);  // under 20% of a core; a busy loop takes all of it
  INFO("stats while exhausted:\n" << page);
  for (const char* id : {"a", "b"}) {
    CHECK(proxy_process::field(page, id, "health") == "up");
    CHECK(proxy_process::field(page, id, "failures") == "0");
    CHECK(proxy_process::field(page, id, "connect_failures") == "0");
  }

  // Which clients were served (greeted by a backend), which wait. Nothing is in flight: the
  // proxy is stuck for descriptors since before the measured second.
  std::vector<socket_fd> served, waiting;
  for (auto& c : conns) {
    pollfd pf{c.get(), POLLIN, 0};
    (::poll(&pf, 1, 0) == 1 ? served : waiting).push_back(std::move(c));
  }
  MESSAGE(served.size() << " clients served, " << waiting.size() << " waiting");
  CHECK(served.size() >= 10);
  CHECK(!waiting.empty());
  for (auto& c : served) {
    const auto line = read_line(c.get());
    CHECK((line == "a" || line == "b"));
  }
  // Once the served ones leave, the waiting ones are served, in seconds at most.
  served.clear();
  for (auto& c : waiting) {
    const auto line = read_line(c.get());  // io_timeout bounds each
    CHECK((line == "a" || line == "b"));
  }
  waiting.clear();
  {
    const auto fresh = connect_tcp(p.address());
    REQUIRE(fresh);
    const auto line = read_line(fresh.get());
    CHECK((line == "a" || line == "b"));
  }
  const auto after = p.stats();
  for (const char* id : {"a", "b"}) {
    CHECK(proxy_process::field(after, id, "health") == "up");
    CHECK(proxy_process::field(after, id, "failures") == "0");
  }
  p.stop();
  const auto err = p.process().stderr_text();
  CHECK(contains(err, "short of descriptors"));
  CHECK(!contains(err, " is down"));
  CHECK(!contains(err, "ejected"));
  CHECK(lines_of(err) < 60);
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
    REQUIRE(r.status == lbkit::parse_status::complete);
    return std::pair{r.value, stream.substr(r.size)};
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
      in.crc32c = true;
      const auto bytes = lbkit::encode_proxy_header(in);
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
    REQUIRE(parsed.status == lbkit::parse_status::complete);
    CHECK(parsed.value.version == lbkit::proxy_version::v1);
    CHECK(parsed.value.source == client);  // the real client, through both hops
    CHECK(parsed.value.destination == ha.address());
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

TEST_CASE("a flood of bad PROXY headers logs a few dozen lines, and good clients are served") {
  recording_backend backend;
  proxy_process p(
      {"--listen", "127.0.0.1:0", "--backend", backend.address().to_string(), "--accept-proxy"});
  constexpr std::uint64_t bad = 2000;
  const auto start = steady_clock::now();
  for (std::uint64_t i = 0; i < bad; ++i) {
    const auto s = connect_tcp(p.address());
    REQUIRE(s);
    REQUIRE(send_all(s.get(), "GET / HTTP/1.1\r\n\r\n"));  // and close: the next one
  }
  CHECK(eventually([&] { return proxy_process::counter(p.stats(), "proxy_header_errors") == bad; },
                   10s, 20ms));
  const auto took = since(start);
  CHECK(round_trip(p.address(), "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nstill served<end>",
                   std::nullopt, nullptr, then::wait)
            .data == "ok");
  p.stop();
  // A call site writes at most 10 lines a second, and one more that tells how many it left
  // out; a few lines more for startup and shutdown.
  const auto seconds = static_cast<std::size_t>(took.count() / 1000 + 2);
  const auto lines = lines_of(p.process().stderr_text());
  MESSAGE(bad << " bad headers in " << took.count() << " ms: " << lines << " lines on stderr");
  CHECK(lines <= 11 * seconds + 5);
}

TEST_CASE("addresses that would share a port: overlaps are refused, one held elsewhere is in use") {
  SUBCASE("a --listen given twice, or --stats on a --listen address: refused, naming both") {
    const auto port = std::to_string(free_port());
    const std::vector<std::pair<std::string, std::string>> overlapping = {
        {"--listen", "127.0.0.1:" + port},  // the same address twice
        {"--listen", "0.0.0.0:" + port},    // a wildcard and an address inside it
        {"--stats", "127.0.0.1:" + port},
        {"--stats", "0.0.0.0:" + port},
    };
    for (const auto& one : overlapping) {
      const std::string& flag = one.first;  // not structured bindings: CAPTURE uses a lambda
      const std::string& address = one.second;
      CAPTURE(flag);
      CAPTURE(address);
      const auto r = run_to_exit({LBKIT_L4_PROXY_PATH, "--listen", "127.0.0.1:" + port, "--backend",
                                  "127.0.0.1:9", flag, address});
      INFO("stderr: " << r.err);
      REQUIRE(r.status);
      CHECK(r.status->exited);
      CHECK(r.status->code == 2);
      CHECK(contains(r.err, "--listen 127.0.0.1:" + port + " and " + flag + " " + address));
      CHECK(contains(r.err, "overlap"));
    }
    // IPv4 and IPv6 wildcards do not overlap: the proxy's IPv6 sockets are IPV6_V6ONLY.
    proxy_process both(
        {"--listen", "0.0.0.0:" + port, "--listen", "[::]:" + port, "--backend", "127.0.0.1:9"}, 2);
    both.stop();
  }

  SUBCASE("TCP: a second instance on the same port exits; the first serves every connection") {
    named_backend a("a");
    proxy_process first({"--listen", "127.0.0.1:0", "--backend", a.arg()});
    const auto port = std::to_string(first.address().port());
    for (const auto& one : std::vector<std::pair<std::string, std::string>>{
             {"--listen", "127.0.0.1:" + port},
             {"--listen", "0.0.0.0:" + port},
             {"--stats", first.stats_address().to_string()}}) {
      const std::string& flag = one.first;
      const std::string& address = one.second;
      CAPTURE(address);
      std::vector<std::string> args = {LBKIT_L4_PROXY_PATH, "--backend", a.arg(), flag, address};
      if (flag == "--stats") args.insert(args.end(), {"--listen", "127.0.0.1:0"});
      const auto r = run_to_exit(args);
      INFO("stderr: " << r.err);
      REQUIRE(r.status);
      CHECK(r.status->code == 2);
      CHECK(contains(r.err, flag + " " + address + ": address in use"));
    }
    const auto before = proxy_process::counter(first.stats(), "connections_total");
    for (int i = 0; i < 20; ++i) CHECK(fetch_name(first.address()) == "a");
    CHECK(proxy_process::counter(first.stats(), "connections_total") == before + 20);
    first.stop();
  }

  SUBCASE("UDP: a second instance on the same port exits; the first answers") {
    udp_echo_server x("x");
    proxy_process first({"--listen", "127.0.0.1:0", "--udp", "--backend", x.address().to_string()});
    const auto r = run_to_exit({LBKIT_L4_PROXY_PATH, "--udp", "--listen",
                                first.address().to_string(), "--backend", x.address().to_string()});
    INFO("stderr: " << r.err);
    REQUIRE(r.status);
    CHECK(r.status->code == 2);
    CHECK(contains(r.err, "--listen " + first.address().to_string() + ": address in use"));
    auto s = open_socket(SOCK_DGRAM, endpoint(ip("127.0.0.1"), 0));
    sockaddr_storage ss{};
    const socklen_t len = first.address().to_sockaddr(ss);
    REQUIRE(::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    set_timeouts(s.get(), 2s);
    REQUIRE(::send(s.get(), "ping", 4, 0) == 4);
    char buf[64];
    const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    CHECK(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))) == "x|ping");
    first.stop();
  }
}

TEST_CASE("weights a policy would ignore, or all zero, are refused at startup") {
  const std::vector<std::string> base = {LBKIT_L4_PROXY_PATH, "--listen", "127.0.0.1:0"};
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
      // round_robin is the default policy
      {{"--backend", "127.0.0.1:9,weight=1", "--backend", "127.0.0.1:10,weight=3"},
       "policy round_robin ignores weights (1 and 3 here): use weighted_round_robin"},
      {{"--policy", "round_robin", "--backend", "127.0.0.1:9,weight=2", "--backend",
        "127.0.0.1:10"},
       "use weighted_round_robin"},
      {{"--policy", "jump_hash", "--backend", "127.0.0.1:9,weight=2", "--backend", "127.0.0.1:10"},
       "policy jump_hash ignores weights"},
      {{"--policy", "weighted_round_robin", "--backend", "127.0.0.1:9,weight=0", "--backend",
        "127.0.0.1:10,weight=0"},
       "every backend has weight 0"},
  };
  for (const auto& one : refused) {
    const auto& extra = one.first;
    const std::string& message = one.second;
    CAPTURE(message);
    const auto r = run_to_exit(concat(base, extra));
    INFO("stderr: " << r.err);
    REQUIRE(r.status);
    CHECK(r.status->code == 2);
    CHECK(contains(r.err, message));
  }
  // Equal weights, and weight 0 (off), are what round robin does serve.
  named_backend a("a"), b("b");
  proxy_process p({"--listen", "127.0.0.1:0", "--backend", a.arg() + ",weight=2", "--backend",
                   b.arg() + ",weight=0"});
  CHECK(fetch_name(p.address()) == "a");
  p.stop();
}

TEST_CASE("bad command lines exit non-zero naming the flag; --help exits 0 and lists every flag") {
  const std::vector<std::string> base = {LBKIT_L4_PROXY_PATH, "--listen", "127.0.0.1:0",
                                         "--backend", "127.0.0.1:9"};
  // Each bad value, the flag its message must name, and what the message must say was wrong.
  struct bad_flag {
    std::vector<std::string> args;
    std::string flag;
    std::string what;
  };
  const std::vector<bad_flag> bad = {
      {{"--bogus"}, "--bogus", "not expected"},
      {{"--backend", "1.2.3.4"}, "--backend", "missing ':port'"},
      {{"--backend", "127.0.0.1:80,weight=1000001"}, "--backend", "not a whole number 0..1000000"},
      {{"--backend", "127.0.0.1:80,weight=-1"}, "--backend", "not a whole number 0..1000000"},
      {{"--backend", "127.0.0.1:80,colour=red"}, "--backend", "unknown option 'colour=red'"},
      {{"--backend", "0.0.0.0:80"}, "--backend", "0.0.0.0"},
      {{"--policy", "nope"}, "--policy", "is not one of"},
      {{"--health-interval", "5"}, "--health-interval", "needs a unit"},
      {{"--health-interval", "1.5s"}, "--health-interval", "not a whole number of a unit"},
      {{"--idle-timeout", "99999999999h"}, "--idle-timeout", "out of range"},
      {{"--drain-timeout", "-1s"}, "--drain-timeout", "does not start with a whole number"},
      {{"--health", "smtp"}, "--health", "is not none, tcp, http:PATH or icmp"},
      {{"--health", "http:nopath"}, "--health", "does not start with '/'"},
      {{"--proxy-protocol", "v3"}, "--proxy-protocol", "is not v1 or v2"},
      {{"--allow", "10.0.0.0/33"}, "--allow", "33"},
      {{"--connect-timeout", "0ms"}, "--connect-timeout", "must be above 0"},
      {{"--rise", "0"}, "--rise", "'0' is not a whole number from 1 to 1000"},
      {{"--fall", "2x"}, "--fall", "'2x' is not a whole number from 1 to 1000"},
      {{"--passive-failures", "-1"}, "--passive-failures", "not a whole number from 0 to"},
      {{"--passive-failures", "99999999999"}, "--passive-failures", "not a whole number"},
      {{"--threads", "0"}, "--threads", "not a whole number from 1 to 256"},
      {{"--retries", "101"}, "--retries", "not a whole number from 0 to 100"},
      {{"--max-connections", "0"}, "--max-connections", "not a whole number from 1 to"},
      {{"--udp", "--proxy-protocol", "v1"}, "--proxy-protocol", "not to --udp"},
  };
  for (const auto& one : bad) {
    const std::string& flag = one.flag;  // not a structured binding: CAPTURE uses a lambda
    CAPTURE(flag);
    CAPTURE(one.what);
    child_process proc(concat(base, one.args));
    REQUIRE(proc.started());
    const auto status = proc.wait_exit(10s);
    proc.wait_output_closed(2s);
    INFO("stderr: " << proc.stderr_text());
    REQUIRE(status);
    CHECK(status->exited);
    CHECK(status->code == 2);
    CHECK(proc.stderr_text().rfind("lbkit_l4_proxy: ", 0) == 0);
    CHECK(contains(proc.stderr_text(), flag));
    CHECK(contains(proc.stderr_text(), one.what));
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

// --- exhaustion, and retries in panic (added with the L4 soak) -------------------------------

namespace {

// A TCP backend that sends `size` bytes of the test pattern to every connection, then
// closes: one thread accepts, one thread per connection sends (blocking, each send bounded
// by io_timeout), so that many slow downloads run at once.
class bulk_backend {
 public:
  bulk_backend(const pattern& data, std::uint64_t size)
      : data_(data),
        size_(size),
        listener_(open_socket(SOCK_STREAM, endpoint(ip("127.0.0.1"), 0))) {
    REQUIRE(::listen(listener_.get(), 64) == 0);
    address_ = local_of(listener_.get());
    thread_ = std::thread([this] { run(); });
  }
  bulk_backend(const bulk_backend&) = delete;
  bulk_backend& operator=(const bulk_backend&) = delete;
  ~bulk_backend() {
    stop_.store(true);
    thread_.join();
    for (auto& t : senders_) t.join();
  }
  std::string arg() const { return address_.to_string() + ",id=bulk"; }
  // Connections whose whole body went out.
  int completed() const { return completed_.load(); }

 private:
  void run() {
    while (!stop_.load()) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      senders_.emplace_back([this, c] {
        set_timeouts(c, io_timeout);
        std::uint64_t off = 0;
        while (off < size_ && !stop_.load()) {
          const auto chunk = data_.at(off, static_cast<std::size_t>(std::min<std::uint64_t>(
                                               size_ - off, std::uint64_t{1} << 20)));
          const ssize_t n = ::send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) break;  // a stall of io_timeout, or the proxy went away
          off += static_cast<std::uint64_t>(n);
        }
        if (off == size_) completed_.fetch_add(1);
        ::close(c);
      });
    }
  }

  const pattern& data_;
  std::uint64_t size_;
  socket_fd listener_;
  endpoint address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> completed_{0};
  std::vector<std::thread> senders_;  // the accept thread's only, until it is joined
  std::thread thread_;                // last: it uses the members above
};

// Whether a socket has something to read (bytes, an end or an error) within `wait`.
bool readable(int fd, milliseconds wait = 0ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(wait.count())) == 1;
}

}  // namespace

TEST_CASE("a retry does not go back to a backend that failed the connection before") {
  // Two dead ports and a live backend, all eligible: no checks and no ejection, as in panic,
  // when most backends are out and the balancer spreads over all of them (the L4 soak hit
  // this with one backend killed and another resetting). Maglev keys on the client address
  // and each retry avoids the backend that failed last; for about one address in six the
  // rehashed key then leads dead1 → dead2 → dead1, and --retries 2 is used up while live is
  // up. Avoiding every backend that failed the connection, three attempts reach live from
  // every address. (64 addresses: that none bounces by chance has probability about 1e-5.)
  auto hole1 = open_socket(SOCK_STREAM, endpoint(ip("127.0.0.1"), 0));
  auto hole2 = open_socket(SOCK_STREAM, endpoint(ip("127.0.0.1"), 0));
  const auto dead1 = local_of(hole1.get()), dead2 = local_of(hole2.get());
  hole1.reset();  // bound, never listening, now closed: both ports refuse
  hole2.reset();
  named_backend live("live");
  proxy_process p({"--listen", "127.0.0.1:0", "--policy", "maglev", "--retries", "2",
                   "--passive-failures", "0", "--backend", dead1.to_string() + ",id=dead1",
                   "--backend", dead2.to_string() + ",id=dead2", "--backend", live.arg()});
  int failed = 0;
  for (int k = 2; k < 66; ++k) {
    const std::string from = "127.0.0." + std::to_string(k);
    const auto name = fetch_name(p.address(), ip(from));
    if (name != "live") {
      ++failed;
      MESSAGE("from " << from << ": " << (name.empty() ? "closed unserved" : name));
    }
  }
  CHECK(failed == 0);
  const auto page = p.stats();
  INFO(page);
  CHECK(proxy_process::counter(page, "retries") > 0);
  CHECK(proxy_process::field(page, "live", "failures") == "0");
  p.stop();
}

TEST_CASE(
    "an idle flood at --max-connections is cut by --idle-timeout, and the client behind it is "
    "served") {
  // At the limit the proxy takes its listeners out of epoll and the kernel's backlog holds
  // the rest (docs/l4_proxy.md, Limits); a connection with no byte either way for
  // --idle-timeout is closed, checked by a 100 ms tick. Two workers: the limit counts over
  // both. The flood is twice the limit, so two generations of it may be ahead of the client.
  constexpr int limit = 16;
  constexpr auto idle = 1000ms;
  holding_backend b("b");
  proxy_process p({"--listen", "127.0.0.1:0", "--threads", "2", "--max-connections",
                   std::to_string(limit), "--idle-timeout", "1s", "--backend", b.arg()});
  std::vector<socket_fd> flood;
  for (int i = 0; i < 2 * limit; ++i) {
    flood.push_back(connect_tcp(p.address()));  // connected: the kernel's backlog takes them
    REQUIRE(flood.back());
  }
  REQUIRE(eventually(
      [&] { return proxy_process::counter(p.stats(), "connections_active") == limit; }, 10s, 10ms));
  const auto filled = steady_clock::now();
  const auto client = connect_tcp(p.address());
  REQUIRE(client);
  REQUIRE(send_all(client.get(), "ping\n"));
  // Waiting for the greeting, the proxy never holds more than the limit.
  std::uint64_t most = 0;
  const bool served = eventually(
      [&] {
        most = std::max(most, proxy_process::counter(p.stats(), "connections_active"));
        return readable(client.get());
      },
      10s, 20ms);
  const auto waited = since(filled);
  MESSAGE("the client behind a flood of " << 2 * limit << " idle connections was served after "
                                          << waited.count() << " ms; at most " << most
                                          << " connections open at once");
  REQUIRE(served);
  CHECK(most <= limit);
  // Not before the first generation was cut (the tick is 100 ms: 150 ms of leeway), and by
  // the time the second one was, plus slack for a loaded machine.
  CHECK(waited >= idle - 150ms);
  CHECK(waited < 2 * idle + 1500ms);
  CHECK(read_line(client.get()) == "b");
  CHECK(read_line(client.get()) == "ping");
  // Every flood connection was greeted, then closed by the proxy with an orderly end.
  for (auto& f : flood) {
    const auto r = read_to_end(f.get());
    CHECK(r.eof);
    CHECK(r.data == "b\n");
  }
  const auto page = p.stats();
  INFO(page);
  CHECK(proxy_process::counter(page, "timeouts") >= 2 * limit);
  CHECK(proxy_process::field(page, "b", "failures") == "0");
  p.stop();
}

TEST_CASE(
    "slowloris: a trickled PROXY header is cut at its deadline; a trickled stream is traffic") {
  SUBCASE("--accept-proxy: a header a byte every 100 ms is cut after --connect-timeout") {
    // Eight tricklers take every slot (--max-connections 8); the header must be complete
    // within --connect-timeout of the accept (the tick, not the bytes, decides), so they are
    // cut after 1 s, long before their 43 bytes are in, and the client behind them is served.
    constexpr int limit = 8;
    constexpr auto deadline = 1000ms;
    recording_backend backend;
    proxy_process p({"--listen", "127.0.0.1:0", "--accept-proxy", "--connect-timeout", "1s",
                     "--max-connections", std::to_string(limit), "--backend",
                     backend.address().to_string()});
    const std::string header = "PROXY TCP4 192.0.2.10 198.51.100.20 40000 443\r\n";
    struct trickler {
      socket_fd s;
      steady_clock::time_point opened;
      std::optional<milliseconds> cut_after;  // when the proxy closed it
      std::size_t sent = 0;
    };
    std::vector<trickler> ts;
    for (int i = 0; i < limit; ++i) {
      auto s = connect_tcp(p.address());
      REQUIRE(s);
      ts.push_back({std::move(s), steady_clock::now(), std::nullopt, 0});
    }
    std::atomic<bool> all_cut{false};
    std::thread drip([&] {
      for (auto next = steady_clock::now(); !all_cut.load(); next += 100ms) {
        std::this_thread::sleep_until(next);  // the trickle's pace
        bool open = false;
        for (auto& t : ts) {
          if (t.cut_after) continue;
          if (readable(t.s.get())) {  // the proxy's end (FIN or RST): nothing else comes
            t.cut_after = since(t.opened);
            continue;
          }
          if (t.sent < header.size() &&
              ::send(t.s.get(), header.data() + t.sent, 1, MSG_NOSIGNAL) == 1) {
            ++t.sent;
          }
          open = true;
        }
        if (!open) all_cut.store(true);
      }
    });
    struct join_on_exit {
      std::atomic<bool>& done;
      std::thread& t;
      ~join_on_exit() {
        done.store(true);
        if (t.joinable()) t.join();
      }
    } joiner{all_cut, drip};
    REQUIRE(
        eventually([&] { return proxy_process::counter(p.stats(), "connections_active") == limit; },
                   10s, 10ms));
    const auto start = steady_clock::now();
    const auto r = round_trip(p.address(), header + "behind the tricklers<end>", std::nullopt,
                              nullptr, then::wait);
    MESSAGE("a client behind " << limit << " header tricklers was served after "
                               << since(start).count() << " ms");
    CHECK(r.data == "ok");
    REQUIRE(eventually([&] { return all_cut.load(); }, 10s, 10ms));
    drip.join();
    for (const auto& t : ts) {
      REQUIRE(t.cut_after);
      CAPTURE(t.cut_after->count());
      CHECK(*t.cut_after >= deadline - 150ms);
      CHECK(*t.cut_after < deadline + 1500ms);
      CHECK(t.sent < header.size());
    }
    const auto page = p.stats();
    CHECK(proxy_process::counter(page, "proxy_header_errors") == limit);
    // Nothing of theirs reached the backend: it served the one client only.
    CHECK(backend.accepted() == 1);
    CHECK(backend.streams() == std::vector<std::string>{"behind the tricklers<end>"});
    p.stop();
  }

  SUBCASE("a stream a byte every 100 ms outlives --idle-timeout and holds only its own slot") {
    // At L4 a trickle of payload is traffic: --idle-timeout counts from the last byte either
    // way, so it does not cut these. What contains them is --max-connections: three
    // tricklers hold three of the four slots, and clients go on through the fourth. Once
    // they stop sending, the idle timeout cuts them.
    constexpr int limit = 4, tricklers = 3;
    constexpr auto idle = 500ms;
    holding_backend b("b");
    proxy_process p({"--listen", "127.0.0.1:0", "--idle-timeout", "500ms", "--max-connections",
                     std::to_string(limit), "--backend", b.arg()});
    std::vector<socket_fd> ts;
    for (int i = 0; i < tricklers; ++i) {
      ts.push_back(connect_tcp(p.address()));
      REQUIRE(ts.back());
      REQUIRE(read_line(ts.back().get()) == "b");
    }
    std::atomic<bool> done{false};
    std::atomic<int> echoed{0}, broken{0};
    std::thread drip([&] {
      // For three idle timeouts: a byte to each every 100 ms, and its echo back.
      const auto until = steady_clock::now() + 3 * idle;
      for (auto next = steady_clock::now(); next < until && !done.load(); next += 100ms) {
        std::this_thread::sleep_until(next);  // the trickle's pace
        for (auto& t : ts) {
          char ch = 'x';
          if (::send(t.get(), &ch, 1, MSG_NOSIGNAL) != 1 || ::recv(t.get(), &ch, 1, 0) != 1 ||
              ch != 'x') {
            ++broken;
          } else {
            ++echoed;
          }
        }
      }
      done.store(true);
    });
    struct join_on_exit {
      std::atomic<bool>& done;
      std::thread& t;
      ~join_on_exit() {
        done.store(true);
        if (t.joinable()) t.join();
      }
    } joiner{done, drip};
    // Clients one after another through the fourth slot while the tricklers drip.
    int served = 0;
    std::uint64_t most = 0;
    while (!done.load()) {
      const auto c = connect_tcp(p.address());
      REQUIRE(c);
      REQUIRE(send_all(c.get(), "ping\n"));
      served += read_line(c.get()) == "b" && read_line(c.get()) == "ping";
      most = std::max(most, proxy_process::counter(p.stats(), "connections_active"));
    }
    drip.join();
    const auto stopped = steady_clock::now();
    MESSAGE(served << " clients served while " << tricklers << " tricklers held their slots for "
                   << 3 * idle.count() << " ms (" << echoed.load() << " bytes echoed)");
    CHECK(broken.load() == 0);
    CHECK(echoed.load() >= tricklers * 10);
    CHECK(served >= 5);
    CHECK(most <= limit);
    // Silent now: cut by the idle timeout, after it and not much later.
    for (auto& t : ts) {
      const auto r = read_to_end(t.get());
      CHECK(r.eof);
      CHECK(r.data.empty());
    }
    const auto cut = since(stopped);
    CHECK(cut >= idle - 150ms);
    CHECK(cut < idle + 1500ms);
    const auto page = p.stats();
    CHECK(proxy_process::counter(page, "timeouts") >= tricklers);
    CHECK(proxy_process::field(page, "b", "failures") == "0");
    p.stop();
  }
}

TEST_CASE(
    "slow readers of 32 MiB downloads: byte-exact, the proxy's memory bounded, the backend not "
    "blamed") {
  // Eight clients download 32 MiB each at about 8 MiB/s through a 4 KiB receive buffer
  // while the backend could send at loopback speed. The proxy holds at most its two 16 KiB
  // buffers per connection in user space (a direction reads no more while its destination
  // has not taken what it holds; a bulk direction splices through a pipe, whose pages are
  // the kernel's), so its resident memory may grow by 8 × 32 KiB = 256 KiB plus the
  // allocator's own (bound: 8 MiB in all over the start's); a proxy that read ahead of a
  // slow client would hold most of the 256 MiB. With splice and without (--no-splice).
  constexpr std::uint64_t body = std::uint64_t{32} << 20;
  constexpr int readers = 8;
  constexpr long bound_kib = 8 * 1024;
  const pattern data;
  for (const bool splice : {true, false}) {
    CAPTURE(splice);
    bulk_backend backend(data, body);
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--threads",
                                     "2",        "--backend",   backend.arg()};
    if (!splice) args.push_back("--no-splice");
    proxy_process p(args);
    const pid_t pid = p.process().pid();
    const long rss_start = rss_kib(pid);

    struct download {
      std::uint64_t received = 0;
      bool same = true, eof = false;
      int error = 0;
    };
    std::vector<download> got(readers);
    std::atomic<int> finished{0};
    std::vector<std::thread> threads;
    const auto start = steady_clock::now();
    for (int i = 0; i < readers; ++i) {
      threads.emplace_back([&, i] {
        download& d = got[static_cast<std::size_t>(i)];
        sockaddr_storage ss{};
        const socklen_t len = p.address().to_sockaddr(ss);
        socket_fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        const int small = 4096;  // before connect: the window it advertises stays small
        ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        set_timeouts(s.get(), io_timeout);
        if (!s || ::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
          d.error = errno;
        } else {
          char buf[16384];
          std::uint64_t paced = 0;
          for (auto next = steady_clock::now();;) {
            const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
              d.eof = n == 0;
              d.error = n < 0 ? errno : 0;
              break;
            }
            d.same = d.same && data.matches({buf, static_cast<std::size_t>(n)}, d.received);
            d.received += static_cast<std::uint64_t>(n);
            if (d.received - paced >= 64 * 1024) {  // 64 KiB every 8 ms: 8 MiB/s
              paced = d.received;
              next += 8ms;
              std::this_thread::sleep_until(next);  // the slow reader's pace
            }
          }
        }
        ++finished;
      });
    }
    long rss_peak = rss_start;
    const bool all = eventually(
        [&] {
          rss_peak = std::max(rss_peak, rss_kib(pid));
          return finished.load() == readers;
        },
        60s, 20ms);
    for (auto& t : threads) t.join();
    MESSAGE(std::string(splice ? "splice" : "--no-splice")
            << ": " << readers << " slow readers of 32 MiB in " << since(start).count()
            << " ms; proxy rss " << rss_start << " KiB at start, at most " << rss_peak
            << " KiB during (bound +" << bound_kib << " KiB)");
    CHECK(all);
    for (int i = 0; i < readers; ++i) {
      const auto& d = got[static_cast<std::size_t>(i)];
      CAPTURE(i);
      CHECK(d.error == 0);
      CHECK(d.eof);
      CHECK(d.received == body);
      CHECK(d.same);
    }
    CHECK(rss_peak <= rss_start + bound_kib);
    CHECK(backend.completed() == readers);
    const auto page = p.stats();
    INFO(page);
    CHECK(proxy_process::field(page, "bulk", "failures") == "0");
    CHECK(proxy_process::field(page, "bulk", "connect_failures") == "0");
    CHECK(proxy_process::field(page, "bulk", "bytes_from") == std::to_string(readers * body));
    p.stop();
  }
}

TEST_CASE(
    "a killed backend that reset its open connections is ejected for connection failures, and "
    "is back after rise checks") {
  // A crash under load resets the backend's open connections (each a failure: the backend
  // had answered), then its port refuses (connection failures). --passive-failures counts
  // failed connections in a row (docs/l4_proxy.md, --help): the resets must neither eject
  // nor turn the refusals' ejection into a timed one (--ejection-time 30s here), which would
  // keep the restarted backend out long after its checks pass (found by the L4 soak, whose
  // restarted backend got no traffic for 30 s). Health timing as in the connection-failure
  // case above: back within rise × interval + 1.2 s of slack = 1.6 s of the restart.
  constexpr auto back_within = 2 * 200ms + 1200ms;
  holding_backend a("a"), c("c");
  auto b = std::make_unique<holding_backend>("b");
  const auto port = b->port();
  proxy_process p(
      {"--listen",  "127.0.0.1:0", "--threads",          "1",     "--policy",        "round_robin",
       "--health",  "tcp",         "--health-interval",  "200ms", "--rise",          "2",
       "--fall",    "3",           "--passive-failures", "3",     "--ejection-time", "30s",
       "--retries", "2",           "--connect-timeout",  "500ms", "--backend",       a.arg(),
       "--backend", b->arg(),      "--backend",          c.arg()});
  REQUIRE(eventually([&] {
    const auto page = p.stats();
    for (const char* id : {"a", "b", "c"}) {
      if (proxy_process::field(page, id, "health") != "up") return false;
    }
    return true;
  }));
  // Three connections open on b, each greeted by it (round robin: every third one lands
  // there), and more than --passive-failures of them, so that the resets alone would be a
  // streak that ejects.
  std::vector<socket_fd> on_b, others;
  for (int i = 0; i < 30 && on_b.size() < 4; ++i) {
    auto s = connect_tcp(p.address());
    REQUIRE(s);
    const auto name = read_line(s.get());
    REQUIRE(name);
    (*name == "b" ? on_b : others).push_back(std::move(s));
  }
  REQUIRE(on_b.size() == 4);
  others.clear();

  // Load on its own thread the whole time: connect, read the greeting, leave.
  client_loop load(
      [&] {
        const auto c = connect_tcp(p.address());
        return (c ? read_line(c.get()) : std::nullopt).value_or("");
      },
      "b");
  REQUIRE(eventually([&] { return load.served() >= 30; }));

  b->kill();
  CHECK(b->cut() >= 4);  // and any of the load's open there
  for (auto& s : on_b) {
    const auto r = read_to_end(s.get());
    CHECK(r.error == ECONNRESET);  // the proxy passes the reset on
  }
  REQUIRE(eventually([&] { return p.health("b") == "ejected"; }));
  const auto killed_served = load.served();
  REQUIRE(eventually([&] { return load.served() >= killed_served + 30; }));

  b = std::make_unique<holding_backend>("b", port);
  const auto restarted = steady_clock::now();
  const bool back = eventually([&] { return load.answered_since(restarted); }, 10s);
  const auto took = since(restarted);
  load.stop();
  MESSAGE("b served again " << took.count() << " ms after its restart");
  CHECK(back);
  CHECK(took < back_within);
  CHECK(load.failed() == 0);
  const auto page = p.stats();
  INFO(page);
  CHECK(std::stoull(proxy_process::field(page, "b", "failures")) >=
        4 + std::stoull(proxy_process::field(page, "b", "connect_failures")));
  p.stop();
  const auto err = p.process().stderr_text();
  CHECK(contains(err, "backend b ejected (passive: consecutive connection failures)"));
  CHECK(!contains(err, "backend b ejected (passive: consecutive failures)"));
}

#endif  // LBKIT_L4_PROXY_PATH
