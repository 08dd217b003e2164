// SPDX-License-Identifier: MIT
// Test support for lbkit_l7_router end to end (tests/integration/l7_router.test.cpp and the
// soak, tests/soak/): the real binary (LBKIT_L7_ROUTER_PATH, which the including target
// defines) on a TOML configuration written to a temporary file; raw-socket HTTP clients with
// bounded reads; the stats page's counters; configuration text for http_backend backends;
// keep-alive load; faulty backends (one that trickles its answer).
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <lbkit/endpoint.hpp>

#include "end_to_end.hpp"
#include "http_backend.hpp"
#include "loopback.hpp"
#include "proc_usage.hpp"
#include "process.hpp"

#if !defined(LBKIT_L7_ROUTER_PATH)
#error "tests/support/l7_router.hpp needs LBKIT_L7_ROUTER_PATH"
#endif

namespace lbkit::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// --- sockets -----------------------------------------------------------------------------

// A TCP socket bound to a free port of 127.0.0.1 and not listening: connects to it are
// refused for as long as it lives, and no other test can take the port meanwhile.
inline socket_fd reserve_port(std::uint16_t& port) {
  socket_fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return s;
}

// Reads up to the end of a response head ("\r\n\r\n"); the head, and in `rest` what came
// after it. Empty when the stream ended or timed out first. For answers that Beast's parser
// cannot frame alone (a 200 to CONNECT has no length: the tunnel follows).
inline std::optional<std::string> read_head(int fd, std::string& rest) {
  std::string got;
  char buf[4096];
  for (;;) {
    const auto end = got.find("\r\n\r\n");
    if (end != std::string::npos) {
      rest = got.substr(end + 4);
      return got.substr(0, end + 4);
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    got.append(buf, static_cast<std::size_t>(n));
  }
}

// Whether the peer closes `fd` (FIN or RST) within `limit`; what it sent first is dropped.
inline bool closed_within(int fd, milliseconds limit) {
  const auto until = steady_clock::now() + limit;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(until - steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
}

// Shuts a socket down after `limit` unless destroyed first: bounds blocking Beast calls,
// which have no timeout of their own.
class watchdog {
 public:
  watchdog(int fd, milliseconds limit)
      : thread_([this, fd, limit] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [&] { return done_; })) {
            fired_ = true;
            ::shutdown(fd, SHUT_RDWR);
          }
        }) {}
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  ~watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool fired() {
    std::lock_guard lock(mu_);
    return fired_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;   // guarded by mu_
  bool fired_ = false;  // guarded by mu_
  std::thread thread_;  // last: it uses the members above
};

// --- HTTP clients ------------------------------------------------------------------------

using response = http::response<http::string_body>;

// "GET target HTTP/1.1" with a Host and the `extra` lines ("Name: value\r\n" each).
inline std::string get(std::string_view target, std::string_view extra = "",
                       std::string_view host = "test") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: " + std::string(host) + "\r\n" +
         std::string(extra) + "\r\n";
}

inline std::string post(std::string_view target, std::string_view body,
                        std::string_view extra = "") {
  return "POST " + std::string(target) +
         " HTTP/1.1\r\nHost: test\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra) + "\r\n" + std::string(body);
}

// One HTTP/1.1 connection to the router: a raw socket (5 s timeouts, so every read is
// bounded) and Beast's response parser fed by hand.
class http_client {
 public:
  explicit http_client(const endpoint& to) : fd_(connect_tcp(to)) {}

  bool connected() const { return static_cast<bool>(fd_); }
  int fd() const { return fd_.get(); }
  bool send(std::string_view bytes) { return fd_ && send_all(fd_.get(), bytes); }
  // Closes the connection (a router drains open connections on SIGTERM: close them first).
  void close() { fd_.reset(); }

  // The next response; empty when the connection ended, timed out or sent something that is
  // not HTTP first.
  std::optional<response> read() {
    if (!fd_) return std::nullopt;
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(std::uint64_t{64} << 20);
    beast::error_code ec;
    char buf[65536];
    for (;;) {
      if (!carry_.empty()) {
        const std::size_t n = parser.put(asio::buffer(carry_), ec);
        carry_.erase(0, n);
        if (ec == http::error::need_more) {
          ec = {};
        } else if (ec) {
          return std::nullopt;
        }
        if (parser.is_done()) return parser.release();
        if (n > 0) continue;
      }
      const ssize_t got = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (got > 0) {
        carry_.append(buf, static_cast<std::size_t>(got));
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      if (got == 0 && parser.got_some()) {  // a body that runs to the end of the stream
        parser.put_eof(ec);
        if (!ec && parser.is_done()) return parser.release();
      }
      return std::nullopt;
    }
  }

  std::optional<response> request(std::string_view bytes) {
    if (!send(bytes)) return std::nullopt;
    return read();
  }

 private:
  socket_fd fd_;
  std::string carry_;  // read but not parsed yet
};

// One request on a connection of its own.
inline std::optional<response> fetch(const endpoint& to, std::string_view request) {
  http_client c(to);
  return c.request(request);
}

// The body of a 200 answer on a connection of its own; "<status>" for another status, ""
// when there was no answer.
inline std::string fetch_body(const endpoint& to, std::string_view request) {
  const auto r = fetch(to, request);
  if (!r) return "";
  return r->result_int() == 200 ? r->body() : "<" + std::to_string(r->result_int()) + ">";
}

inline std::string header(const response& r, std::string_view name) { return std::string(r[name]); }
inline bool has(const response& r, std::string_view name) { return r.find(name) != r.end(); }

// --- the router --------------------------------------------------------------------------

// lbkit_l7_router on `config`, once it printed the address it listens on (and the stats
// address, when the configuration asks for one).
class router_process {
 public:
  // `wrapper`: a command that runs the router ("prlimit --nofile=64:64"), if any.
  explicit router_process(const std::string& config, bool with_stats = false,
                          std::vector<std::string> wrapper = {})
      : path_(dir_.write("router.toml", config)), proc_(command(std::move(wrapper), path_)) {
    INFO("router stderr: " << proc_.stderr_text());
    REQUIRE_MESSAGE(proc_.started(), proc_.start_error());
    // Both lines come before any access-log line, in either order.
    bool listening = false, stats = !with_stats;
    while (!listening || !stats) {
      const auto line = proc_.read_line(10s);
      REQUIRE(line);
      for (auto [prefix, out, seen] : {std::tuple{"listening on ", &listen_, &listening},
                                       std::tuple{"stats on ", &stats_, &stats}}) {
        const std::string_view p = prefix;
        if (line->rfind(p, 0) != 0) continue;
        const auto at = endpoint::parse(line->substr(p.size()));
        REQUIRE_MESSAGE(at, *line);
        *out = *at;
        *seen = true;
      }
    }
  }
  router_process(const router_process&) = delete;
  router_process& operator=(const router_process&) = delete;
  // A router still running here belongs to a case that failed before stop(): show its log,
  // then the child_process kills it.
  ~router_process() { show_log_if_running(proc_, "lbkit_l7_router"); }

  const endpoint& address() const { return listen_; }
  const endpoint& stats_address() const { return stats_; }
  child_process& process() { return proc_; }
  const std::string& config_path() const { return path_; }
  // Replaces the configuration file (a SIGHUP reads it).
  void rewrite(const std::string& config) const { dir_.write("router.toml", config); }
  // The next access-log line.
  std::optional<std::string> log_line() { return proc_.read_line(2s); }

  // GET / on the stats listener.
  std::optional<response> stats() { return fetch(stats_, get("/")); }
  // The stats page's text, or "" when it did not answer.
  std::string stats_page() {
    const auto res = stats();
    return res ? res->body() : "";
  }

  // SIGTERM; it must exit 0 within `limit`, with no sanitizer report on stderr.
  void stop(milliseconds limit = 5000ms) { stop_cleanly(proc_, "router", limit); }

 private:
  static std::vector<std::string> command(std::vector<std::string> wrapper,
                                          const std::string& path) {
    for (const char* a : {LBKIT_L7_ROUTER_PATH, "--config"}) wrapper.emplace_back(a);
    wrapper.push_back(path);
    return wrapper;
  }

  temp_dir dir_{"lbkit-l7-router-test"};
  std::string path_;
  child_process proc_;
  endpoint listen_, stats_;
};

// The router's global counter `key` from a stats page ("requests 17"), or -1.
inline long long stats_counter(const std::string& page, std::string_view key) {
  const std::string k = "\n" + std::string(key) + " ";
  const auto at = ("\n" + page).find(k);
  if (at == std::string::npos) return -1;
  return std::atoll(page.c_str() + at + k.size() - 1);
}

// Field `name` of the line "backend pool=POOL id=ID ..." of a stats page, or "".
inline std::string stats_field(const std::string& page, std::string_view pool, std::string_view id,
                               std::string_view name) {
  std::size_t from = 0;
  while (from < page.size()) {
    auto end = page.find('\n', from);
    if (end == std::string::npos) end = page.size();
    const std::string line = " " + page.substr(from, end - from) + " ";
    from = end + 1;
    if (line.rfind(" backend ", 0) != 0 || !contains(line, " pool=" + std::string(pool) + " ") ||
        !contains(line, " id=" + std::string(id) + " ")) {
      continue;
    }
    const std::string key = " " + std::string(name) + "=";
    const auto at = line.find(key);
    if (at == std::string::npos) return "";
    const auto v = at + key.size();
    return line.substr(v, line.find(' ', v) - v);
  }
  return "";
}

// --- configuration text ------------------------------------------------------------------

inline const std::string listen_line = "listen = [\"127.0.0.1:0\"]\nthreads = 1\n";

// `{ address = "127.0.0.1:PORT", id = "NAME" }` for a backend.
inline std::string entry(const http_backend& b, unsigned weight = 1) {
  return "{ address = \"" + b.address() + "\", id = \"" + b.name() +
         "\", weight = " + std::to_string(weight) + " }";
}

// A [pools.NAME] table with these backends and `extra` lines.
inline std::string pool_toml(std::string_view name,
                             const std::vector<const http_backend*>& backends,
                             std::string_view extra = "") {
  std::string out = "[pools." + std::string(name) + "]\nbackends = [";
  for (std::size_t i = 0; i < backends.size(); ++i) {
    out += (i > 0 ? ", " : "") + entry(*backends[i]);
  }
  return out + "]\n" + std::string(extra) + "\n";
}

// A [[routes]] table with these lines.
inline std::string route_toml(std::string_view lines) {
  return "[[routes]]\n" + std::string(lines) + "\n";
}

// Reads a request head (to "\r\n\r\n") on a loopback_server connection; false if it did not
// come within 2 s.
inline bool read_request_head(int c, const loopback_server& self) {
  set_timeouts(c, 50ms);
  std::string got;
  char buf[4096];
  const auto until = steady_clock::now() + 2s;
  while (!self.stopping() && steady_clock::now() < until) {
    const ssize_t n = ::recv(c, buf, sizeof buf, 0);
    if (n == 0) return false;
    if (n > 0) got.append(buf, static_cast<std::size_t>(n));
    if (contains(got, "\r\n\r\n")) return true;
  }
  return false;
}

// Statuses of GETs sent by `clients` keep-alive connections, `per_client` each (or until
// `stop` turns true, when per_client is 0), and how many connections broke without an answer.
struct load_tally {
  std::map<unsigned, int> statuses;
  int broken = 0;
  int count(unsigned status) const {
    const auto it = statuses.find(status);
    return it == statuses.end() ? 0 : it->second;
  }
  int total() const {
    int n = 0;
    for (const auto& [s, k] : statuses) n += k;
    return n;
  }
  std::string summary() const {
    std::string out;
    for (const auto& [s, k] : statuses) out += std::to_string(s) + " x" + std::to_string(k) + " ";
    return out + "broken " + std::to_string(broken);
  }
};

inline load_tally run_load(const endpoint& to, int clients, int per_client,
                           const std::atomic<bool>* stop = nullptr) {
  std::vector<load_tally> tallies(static_cast<std::size_t>(clients));
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      load_tally& t = tallies[static_cast<std::size_t>(i)];
      http_client c(to);
      for (int k = 0; per_client == 0 ? !stop->load() : k < per_client; ++k) {
        const auto res = c.request(get("/load"));
        if (!res) {
          ++t.broken;
          return;
        }
        ++t.statuses[res->result_int()];
      }
    });
  }
  for (auto& t : threads) t.join();
  load_tally all;
  for (const auto& t : tallies) {
    for (const auto& [s, k] : t.statuses) all.statuses[s] += k;
    all.broken += t.broken;
  }
  return all;
}

// "{ address = "127.0.0.1:PORT", id = "ID" }" for a port no backend listens on.
inline std::string dead_entry(std::uint16_t port, std::string_view id) {
  return "{ address = \"127.0.0.1:" + std::to_string(port) + "\", id = \"" + std::string(id) +
         "\" }";
}

// A backend on a loopback_server that answers one GET with `size` bytes, in `piece`-byte
// parts `gap` apart: with a Content-Length, or chunked.
inline loopback_server::handler trickle(std::size_t size, std::size_t piece, milliseconds gap,
                                        bool chunked) {
  return [=](int c, const loopback_server& self) {
    if (read_request_head(c, self)) {
      set_timeouts(c, 5s);
      std::string head = "HTTP/1.1 200 OK\r\nConnection: close\r\n";
      head += chunked ? "Transfer-Encoding: chunked\r\n\r\n"
                      : "Content-Length: " + std::to_string(size) + "\r\n\r\n";
      bool ok = loopback_server::send_all(c, head);
      for (std::size_t sent = 0; ok && sent < size && !self.stopping(); sent += piece) {
        const std::size_t n = std::min(piece, size - sent);
        std::string part(n, 'x');
        if (chunked) {
          char line[32];
          std::snprintf(line, sizeof line, "%zx\r\n", n);
          part = line + part + "\r\n";
        }
        ok = loopback_server::send_all(c, part);
        ::poll(nullptr, 0, static_cast<int>(gap.count()));  // the backend's pace, not a wait
      }
      if (ok && chunked) loopback_server::send_all(c, "0\r\n\r\n");
    }
    ::close(c);
  };
}

}  // namespace lbkit::test
