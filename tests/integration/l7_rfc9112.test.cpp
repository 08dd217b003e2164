// SPDX-License-Identifier: MIT
// lbkit_l7_router against RFC 9112, one case per clause: the real binary (LBKIT_L7_ROUTER_PATH,
// built in the same preset) between raw-socket clients, which send exactly the bytes a case
// names, and raw-socket backends, which record exactly the bytes the router sent them and answer
// with exactly the bytes a case scripts. Each case checks the status the client gets (and
// whether its connection closes), that a backend never saw a request the router must refuse,
// and, for what the router accepts, what reached the backend: one Host, one framing
// (Content-Length, never Transfer-Encoding), no trailer merged into the header. On the answer
// side: what the client gets instead of an answer the router must not pass on (502), that the
// backend was blamed for it (its failures on the stats page), and that its connection was closed
// rather than reused.
//
// Every wait is bounded and waits on a condition; ports are picked by the kernel; each router is
// stopped by pid with SIGTERM and must exit 0 with nothing from the sanitizers on stderr.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#if !defined(LBKIT_L7_ROUTER_PATH)

TEST_CASE("lbkit_l7_router is not built (Boost, toml++ or CLI11 missing): its test is skipped") {
  MESSAGE("examples/CMakeLists.txt did not build lbkit_l7_router");
}

#else

// Boost 1.74's Asio needs these first (PITFALLS.md).
#include <coroutine>
#include <utility>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <lbkit/endpoint.hpp>

#include "../support/end_to_end.hpp"
#include "../support/l7_router.hpp"
#include "../support/loopback.hpp"
#include "../support/process.hpp"

namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;
using namespace lbkit::test;  // tests/support: servers, child processes, client sockets
using lbkit::endpoint;
using std::chrono::milliseconds;

namespace {

// --- raw text ------------------------------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) { return beast::iequals(a, b); }

// The values of the field lines named `name` in a raw message head, in order.
std::vector<std::string> field_lines(std::string_view head, std::string_view name) {
  std::vector<std::string> out;
  std::size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string_view line = head.substr(start, end - start);
    const auto colon = line.find(':');
    if (colon != std::string_view::npos && iequals(line.substr(0, colon), name)) {
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      out.emplace_back(v);
    }
    at = end;
  }
  return out;
}

// `bytes` for a failure's message: CR and LF shown as \r and \n, at most 200 of them.
std::string shown(std::string_view bytes) {
  std::string out;
  for (char c : bytes.substr(0, 200))
    out += c == '\r' ? "\\r" : c == '\n' ? "\\n" : std::string(1, c);
  return bytes.size() > 200 ? out + "... (" + std::to_string(bytes.size()) + " bytes)" : out;
}

// The request line of a raw head.
std::string request_line(std::string_view head) {
  return std::string(head.substr(0, head.find("\r\n")));
}

// --- a raw backend -------------------------------------------------------------------------

// A request as a raw_backend read it: the connection it came on (1, 2, ... in accept order),
// its head as sent (request line and fields, up to and with the empty line) and its body.
struct seen_request {
  int conn = 0;
  std::string head;
  std::string body;
};

// What a raw_backend sends back: these bytes, then (when `close`) the end of the connection.
struct raw_answer {
  std::string bytes;
  bool close = false;
};

raw_answer ok_answer(const seen_request&) {
  return {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false};
}

// An HTTP/1.1 backend on 127.0.0.1 that frames requests itself (a Content-Length body, a
// chunked one up to its last chunk, else none), records each before answering it through the
// script, and keeps each connection open until the router closes it (or the script says so).
// A thread per connection. Thread safety: thread-safe.
class raw_backend {
 public:
  using script = std::function<raw_answer(const seen_request&)>;

  explicit raw_backend(script s = ok_answer)
      : script_(std::move(s)), server_([this](int c, const loopback_server&) { adopt(c); }) {}
  raw_backend(const raw_backend&) = delete;
  raw_backend& operator=(const raw_backend&) = delete;
  ~raw_backend() {
    server_.stop();  // no connection is adopted after this
    stopping_.store(true);
    std::list<std::thread> threads;
    {
      std::lock_guard lock(mu_);  // the connection threads take it too: join without it
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(server_.address().port()); }
  std::vector<seen_request> requests() const {
    std::lock_guard lock(mu_);
    return seen_;
  }
  // Whether connection `conn` (1, 2, ...) was closed by the router.
  bool closed_by_peer(int conn) const {
    std::lock_guard lock(mu_);
    return std::find(peer_closed_.begin(), peer_closed_.end(), conn) != peer_closed_.end();
  }
  int connections() const { return server_.accepted(); }

 private:
  void adopt(int c) {
    std::lock_guard lock(mu_);
    const int conn = static_cast<int>(threads_.size()) + 1;
    threads_.emplace_back([this, c, conn] { serve(c, conn); });
  }

  // Appends what arrives to `buf`; false at the peer's end (recorded), an error, or stop().
  bool read_more(int c, int conn, std::string& buf) {
    char tmp[65536];
    while (!stopping_.load()) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n > 0) {
        buf.append(tmp, static_cast<std::size_t>(n));
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        std::lock_guard lock(mu_);
        peer_closed_.push_back(conn);
      }
      return false;
    }
    return false;
  }

  void serve(int c, int conn) {
    std::string buf;
    for (;;) {
      std::size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (!read_more(c, conn, buf)) return static_cast<void>(::close(c));
      }
      seen_request r{conn, buf.substr(0, end + 4), {}};
      buf.erase(0, end + 4);
      const auto cl = field_lines(r.head, "Content-Length");
      const auto te = field_lines(r.head, "Transfer-Encoding");
      if (!te.empty()) {  // the router must never send one; keep what comes, to the last chunk
        std::size_t last;
        while ((last = buf.find("0\r\n\r\n")) == std::string::npos) {
          if (!read_more(c, conn, buf)) break;
        }
        r.body = buf.substr(0, last == std::string::npos ? buf.size() : last + 5);
        buf.erase(0, r.body.size());
      } else if (!cl.empty()) {
        const std::size_t n = std::strtoull(cl.front().c_str(), nullptr, 10);
        while (buf.size() < n && read_more(c, conn, buf)) {
        }
        r.body = buf.substr(0, n);
        buf.erase(0, r.body.size());
      }
      {
        std::lock_guard lock(mu_);
        seen_.push_back(r);
      }
      const raw_answer a = script_(r);
      if (!loopback_server::send_all(c, a.bytes) || a.close) return static_cast<void>(::close(c));
    }
  }

  script script_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::list<std::thread> threads_;  // guarded by mu_
  std::vector<seen_request> seen_;  // guarded by mu_
  std::vector<int> peer_closed_;    // guarded by mu_
  loopback_server server_;          // last: its thread calls adopt(), which uses the members above
};

// --- the router ----------------------------------------------------------------------------

// One pool "p" of backend `b` (id "b1", no passive ejection, so a case may make it fail many
// times) behind a catch-all route without retries, unless `routes` names others.
std::string config(const raw_backend& b, std::string_view routes = "") {
  std::string out =
      "listen = [\"127.0.0.1:0\"]\nstats = \"127.0.0.1:0\"\nthreads = 1\naccess_log = false\n"
      "[limits]\nmax_header_bytes = 4096\nheader_timeout = \"3s\"\nidle_timeout = \"3s\"\n"
      "[pools.p]\nbackends = [{ address = \"" +
      b.address() + "\", id = \"b1\" }]\npassive_failures = 0\n";
  out += routes.empty() ? "[[routes]]\npath = \"/\"\npool = \"p\"\nretries = 0\n"
                        : std::string(routes);
  return out;
}

// --- a client ------------------------------------------------------------------------------

// One connection to the router: raw bytes out, answers read with Beast's parser.
class client {
 public:
  explicit client(const endpoint& to) : fd_(connect_tcp(to)) { REQUIRE(fd_); }

  bool send(std::string_view bytes) { return send_all(fd_.get(), bytes); }
  // The next answer (`head`: to a HEAD request); empty when the connection ended or timed out
  // first, or what came was not HTTP.
  std::optional<response> read(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.skip(head);
    parser.body_limit(std::uint64_t{64} << 20);
    beast::error_code ec;
    char buf[65536];
    for (;;) {
      if (!carry_.empty()) {
        const std::size_t n = parser.put(boost::asio::buffer(carry_), ec);
        carry_.erase(0, n);
        if (ec && ec != http::error::need_more) return std::nullopt;
        ec = {};
        if (parser.is_done()) return parser.release();
        if (n > 0) continue;
      }
      const ssize_t got = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (got > 0) {
        carry_.append(buf, static_cast<std::size_t>(got));
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      if (got == 0 && parser.got_some()) {
        parser.put_eof(ec);
        if (!ec && parser.is_done()) return parser.release();
      }
      return std::nullopt;
    }
  }
  std::optional<response> request(std::string_view bytes, bool head = false) {
    if (!send(bytes)) return std::nullopt;
    return read(head);
  }
  // Whether the router closes the connection within `limit` (after what it sent already).
  bool closes(milliseconds limit = 3000ms) {
    if (!carry_.empty()) return false;  // more came than one answer
    const auto until = std::chrono::steady_clock::now() + limit;
    char buf[4096];
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
      if (n > 0) return false;  // bytes, not the end
    }
    return false;
  }
  void close() { fd_.reset(); }

 private:
  socket_fd fd_;
  std::string carry_;
};

// The "failures" the stats page counts for backend b1 of pool p, or -1.
long long failures(router_process& r) {
  const std::string n = stats_field(r.stats_page(), "p", "b1", "failures");
  return n.empty() ? -1 : std::atoll(n.c_str());
}

// --- what a case checks --------------------------------------------------------------------

// `bytes`, sent on a connection of its own, are refused with `status`, the connection closed
// after the answer, and nothing reaches the backend.
void refused(router_process& r, const raw_backend& b, std::string_view bytes, unsigned status) {
  INFO("sent: " << shown(bytes));
  const std::size_t before = b.requests().size();
  client c(r.address());
  const auto res = c.request(bytes);
  REQUIRE(res);
  CHECK(res->result_int() == status);
  INFO("answer: " << res->body());
  CHECK(c.closes());
  const auto seen = b.requests();
  CHECK(seen.size() == before);
  for (std::size_t i = before; i < seen.size(); ++i) {
    MESSAGE("the backend got: " << shown(seen[i].head + seen[i].body));
  }
}

// `bytes`, sent on a connection of its own, are forwarded: the client gets the backend's 200,
// and the backend got exactly one request, which is returned.
seen_request forwarded(router_process& r, const raw_backend& b, std::string_view bytes) {
  INFO("sent: " << shown(bytes));
  const std::size_t before = b.requests().size();
  client c(r.address());
  const auto res = c.request(bytes);
  REQUIRE(res);
  INFO("answer: " << res->body());
  CHECK(res->result_int() == 200);
  const auto seen = b.requests();
  REQUIRE(seen.size() == before + 1);
  return seen.back();
}

// What every request the router forwards has: one Host, and for a body a Content-Length —
// never a Transfer-Encoding (RFC 9112 §6.1), never both (§6.2).
void well_framed(const seen_request& s) {
  INFO("the backend got: " << shown(s.head));
  CHECK(field_lines(s.head, "Host").size() == 1);
  CHECK(field_lines(s.head, "Transfer-Encoding").empty());
  CHECK(field_lines(s.head, "Content-Length").size() <= 1);
  CHECK(request_line(s.head).ends_with(" HTTP/1.1"));
}

const std::string host = "Host: example.com\r\n";

}  // namespace

TEST_CASE("RFC 9112 §2.2: an empty line before a request line is ignored") {
  raw_backend b;
  router_process r(config(b));
  const auto s = forwarded(r, b, "\r\nGET /after-crlf HTTP/1.1\r\n" + host + "\r\n");
  CHECK(request_line(s.head) == "GET /after-crlf HTTP/1.1");
  well_framed(s);
  // On a keep-alive connection too: a CRLF after a body, before the next request.
  client c(r.address());
  auto res = c.request("POST /a HTTP/1.1\r\n" + host + "Content-Length: 2\r\n\r\nhi\r\n");
  REQUIRE(res);
  CHECK(res->result_int() == 200);
  res = c.request("GET /b HTTP/1.1\r\n" + host + "\r\n");
  REQUIRE(res);
  CHECK(res->result_int() == 200);
  c.close();
  r.stop();
}

TEST_CASE("RFC 9112 §2.2: a request that breaks the grammar is answered 400 and closed") {
  raw_backend b;
  router_process r(config(b));
  // In the header (Beast's parser) and in a chunked body (after the header was accepted).
  refused(r, b, "GET / HTTP/1.1\r\nHost: example.com\r\nX: a\rb\r\n\r\n", 400);
  refused(
      r, b,
      "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nBODY\r\n0\r\n\r\n",
      400);
  r.stop();
}

TEST_CASE("RFC 9112 §2.2: whitespace between the request line and the first field gets 400") {
  raw_backend b;
  router_process r(config(b));
  // Read as an obs-fold of the request line, or as a field of its own, either would differ from
  // what a recipient that skips the line sees.
  refused(r, b, "GET / HTTP/1.1\r\n Host: example.com\r\n" + host + "\r\n", 400);
  refused(r, b, "GET / HTTP/1.1\r\n\tX: 1\r\n" + host + "\r\n", 400);
  r.stop();
}

TEST_CASE("RFC 9112 §3: an invalid request line gets 400") {
  raw_backend b;
  router_process r(config(b));
  for (std::string_view line : {"GET  / HTTP/1.1", "GET /", "GET / HTTP/1.1 x", "GET / http/1.1",
                                "G\"T / HTTP/1.1", "GET /\x7f HTTP/1.1"}) {
    refused(r, b, std::string(line) + "\r\n" + host + "\r\n", 400);
  }
  r.stop();
}

TEST_CASE("RFC 9112 §3: a request-target above the limit gets 414, a method 501, a header 431") {
  raw_backend b;
  router_process r(config(b));
  refused(r, b, "GET /" + std::string(8000, 'a') + " HTTP/1.1\r\n" + host + "\r\n", 414);
  refused(r, b, std::string(8000, 'M') + " / HTTP/1.1\r\n" + host + "\r\n", 501);
  refused(r, b, "GET / HTTP/1.1\r\n" + host + "X: " + std::string(8000, 'a') + "\r\n\r\n", 431);
  // An extension method of ordinary length is forwarded: a proxy passes methods it does not know.
  const auto s = forwarded(r, b, "PURGE /cache HTTP/1.1\r\n" + host + "\r\n");
  CHECK(request_line(s.head) == "PURGE /cache HTTP/1.1");
  r.stop();
}

TEST_CASE("RFC 9112 §3.2: a target in none of the forms, or in the wrong one, gets 400") {
  raw_backend b;
  router_process r(config(b));
  for (std::string_view target : {"foo", "/a<b", "/a%zz", "/a\\b"}) {
    refused(r, b, "GET " + std::string(target) + " HTTP/1.1\r\n" + host + "\r\n", 400);
  }
  refused(r, b, "GET * HTTP/1.1\r\n" + host + "\r\n", 400);  // §3.2.4: OPTIONS only
  refused(r, b, "GET http://u@example.com/ HTTP/1.1\r\n" + host + "\r\n",
          400);                                                      // RFC 9110 §4.2.4
  refused(r, b, "GET http:///x HTTP/1.1\r\n" + host + "\r\n", 400);  // RFC 9110 §4.2.1
  r.stop();
}

TEST_CASE("RFC 9112 §3.2: no Host in HTTP/1.1, two Host lines, or an invalid Host get 400") {
  raw_backend b;
  router_process r(config(b));
  refused(r, b, "GET / HTTP/1.1\r\n\r\n", 400);
  refused(r, b, "GET / HTTP/1.1\r\nHost: example.com\r\nHost: example.com\r\n\r\n", 400);
  refused(r, b, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  refused(r, b, "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  for (std::string_view h : {"a b", "a/b", "a:b", "[::1", "a@b", "a:99999"}) {
    refused(r, b, "GET / HTTP/1.1\r\nHost: " + std::string(h) + "\r\n\r\n", 400);
  }
  r.stop();
}

TEST_CASE("RFC 9112 §3.2: an HTTP/1.0 request without Host goes upstream with one") {
  raw_backend b;
  router_process r(config(b));
  const auto s = forwarded(r, b, "GET /old HTTP/1.0\r\n\r\n");
  well_framed(s);  // as HTTP/1.1, which needs a Host (§3.2)
  CHECK(field_lines(s.head, "Host") == std::vector<std::string>{""});
  r.stop();
}

TEST_CASE("RFC 9112 §3.2.2: absolute-form is routed on its authority, forwarded in origin-form") {
  raw_backend b;
  router_process r(
      config(b, "[[routes]]\nhost = \"abs.example\"\npath = \"/\"\npool = \"p\"\nretries = 0\n"));
  // Host names another host: the target's authority wins, and goes upstream as the one Host.
  auto s = forwarded(r, b, "GET http://abs.example:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
  well_framed(s);
  CHECK(request_line(s.head) == "GET /p?q=1 HTTP/1.1");
  CHECK(field_lines(s.head, "Host") == std::vector<std::string>{"abs.example:8080"});
  s = forwarded(r, b, "GET HTTP://ABS.example?x HTTP/1.1\r\nHost: other\r\n\r\n");
  CHECK(request_line(s.head) == "GET /?x HTTP/1.1");  // §3.2.1: an empty path is "/"
  CHECK(field_lines(s.head, "Host") == std::vector<std::string>{"ABS.example"});
  // The same request in origin-form is for "other", which no route serves.
  client c(r.address());
  const auto res = c.request("GET /p HTTP/1.1\r\nHost: other\r\n\r\n");
  REQUIRE(res);
  CHECK(res->result_int() == 404);
  c.close();
  r.stop();
}

TEST_CASE("RFC 9112 §3.2.3, RFC 9110 §9.3.6: a CONNECT target without a port gets 400") {
  raw_backend b;
  router_process r(config(
      b, "[[routes]]\nhost = \"api.test\"\nmethods = [\"CONNECT\"]\npool = \"p\"\nretries = 0\n"));
  refused(r, b, "CONNECT api.test HTTP/1.1\r\nHost: api.test\r\n\r\n", 400);
  refused(r, b, "CONNECT api.test:0 HTTP/1.1\r\nHost: api.test:0\r\n\r\n", 400);
  r.stop();
}

TEST_CASE("RFC 9112 §5.1: whitespace between a field name and its colon gets 400") {
  raw_backend b;
  router_process r(config(b));
  refused(r, b, "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400);
  refused(r, b, "POST / HTTP/1.1\r\n" + host + "Content-Length\t: 2\r\n\r\nhi", 400);
  r.stop();
}

TEST_CASE("RFC 9112 §5.2: an obs-fold in a request is replaced by a space before forwarding") {
  raw_backend b;
  router_process r(config(b));
  const auto s = forwarded(r, b, "GET / HTTP/1.1\r\n" + host + "X-Folded: a\r\n  b\r\n\r\n");
  well_framed(s);
  CHECK(field_lines(s.head, "X-Folded") == std::vector<std::string>{"a b"});
  r.stop();
}

TEST_CASE("RFC 9112 §6.1, §6.3: a request whose last coding is not chunked gets 400, unread") {
  raw_backend b;
  router_process r(config(b));
  // Had the router framed this as bodiless, the "body" would have gone upstream as a second
  // request that no client sent (request smuggling, §11.2).
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\n" + host + "\r\n";
  for (std::string_view te : {"gzip", "chunked, gzip", "identity", "chunked, chunked", ""}) {
    refused(r, b,
            "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: " + std::string(te) + "\r\n\r\n" +
                smuggled,
            400);
  }
  refused(r, b,
          "POST / HTTP/1.1\r\n" + host +
              "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
          400);
  // RFC 9112 §7: chunked has no parameters.
  refused(
      r, b,
      "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked;x=1\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
      400);
  r.stop();
}

TEST_CASE("RFC 9112 §6.1: a transfer coding other than chunked gets 501") {
  raw_backend b;
  router_process r(config(b));
  refused(
      r, b,
      "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
      501);
  refused(r, b,
          "POST / HTTP/1.1\r\n" + host +
              "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
          501);
  r.stop();
}

TEST_CASE("RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing: 400") {
  raw_backend b;
  router_process r(config(b));
  refused(r, b,
          "POST / HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
          400);
  r.stop();
}

TEST_CASE(
    "RFC 9112 §6.1, §6.3 item 3: Transfer-Encoding with Content-Length gets 400 and a close") {
  raw_backend b;
  router_process r(config(b));
  for (const std::string fields : {"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
                                   "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                                   "Transfer-Encoding: gzip\r\nContent-Length: 6\r\n"}) {
    refused(r, b, "POST / HTTP/1.1\r\n" + host + fields + "\r\n2\r\nhi\r\n0\r\n\r\n", 400);
  }
  r.stop();
}

TEST_CASE("RFC 9112 §6.3 item 5: a repeated Content-Length goes up as one; differing ones 400") {
  raw_backend b;
  router_process r(config(b));
  for (const std::string fields :
       {"Content-Length: 4, 4\r\n", "Content-Length: 4\r\nContent-Length: 4\r\n"}) {
    const auto s = forwarded(r, b, "POST /cl HTTP/1.1\r\n" + host + fields + "\r\nBODY");
    well_framed(s);
    CHECK(field_lines(s.head, "Content-Length") == std::vector<std::string>{"4"});
    CHECK(s.body == "BODY");
  }
  const auto s = forwarded(
      r, b, "GET /cl HTTP/1.1\r\n" + host + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n");
  CHECK(field_lines(s.head, "Content-Length").size() <= 1);
  for (const std::string fields :
       {"Content-Length: 4, 5\r\n", "Content-Length: 4\r\nContent-Length: 5\r\n",
        "Content-Length: +4\r\n", "Content-Length: 99999999999999999999\r\n"}) {
    refused(r, b, "POST / HTTP/1.1\r\n" + host + fields + "\r\nBODY", 400);
  }
  r.stop();
}

TEST_CASE("RFC 9112 §7.1: a chunked request goes upstream with a Content-Length; bad sizes 400") {
  raw_backend b;
  router_process r(config(b));
  const auto s =
      forwarded(r, b,
                "POST / HTTP/1.1\r\n" + host +
                    "Transfer-Encoding: chunked\r\n\r\n4\r\nBODY\r\n3\r\n123\r\n0\r\n\r\n");
  well_framed(s);
  CHECK(field_lines(s.head, "Content-Length") == std::vector<std::string>{"7"});
  CHECK(s.body == "BODY123");
  // §7.1: "recipients MUST anticipate potentially large hexadecimal numerals and prevent parsing
  // errors due to integer conversion overflows".
  refused(r, b,
          "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1" +
              std::string(16, '0') + "\r\nBODY\r\n0\r\n\r\n",
          400);
  r.stop();
}

TEST_CASE("RFC 9112 §7.1.1: chunk extensions are ignored, and bounded (400 above the limit)") {
  raw_backend b;
  router_process r(config(b));
  const auto s =
      forwarded(r, b,
                "POST / HTTP/1.1\r\n" + host +
                    "Transfer-Encoding: chunked\r\n\r\n4;a=b;c=\"d;e\"\r\nBODY\r\n0;last\r\n\r\n");
  well_framed(s);
  CHECK(s.body == "BODY");
  refused(r, b,
          "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n4;x=" +
              std::string(300 * 1024, 'a') + "\r\nBODY\r\n0\r\n\r\n",
          400);
  r.stop();
}

TEST_CASE("RFC 9112 §7.1.2: trailer fields are not merged into the forwarded header") {
  raw_backend b;
  router_process r(config(b));
  const auto s = forwarded(r, b,
                           "POST / HTTP/1.1\r\n" + host +
                               "Transfer-Encoding: chunked\r\n\r\n4\r\nBODY\r\n0\r\n"
                               "Host: evil.example\r\nX-Trailer: 1\r\n\r\n");
  well_framed(s);
  CHECK(field_lines(s.head, "Host") == std::vector<std::string>{"example.com"});
  CHECK(field_lines(s.head, "X-Trailer").empty());
  CHECK(s.body == "BODY");
  r.stop();
}

TEST_CASE("RFC 9112 §7.4: TE is a hop-by-hop field and is not forwarded") {
  raw_backend b;
  router_process r(config(b));
  const auto s =
      forwarded(r, b, "GET / HTTP/1.1\r\n" + host + "TE: trailers\r\nConnection: TE\r\n\r\n");
  CHECK(field_lines(s.head, "TE").empty());
  r.stop();
}

// --- answers -------------------------------------------------------------------------------

namespace {

// The router answers a GET with `status` in place of the backend's `answer`: the backend was
// blamed for it (a failure on the stats page) and its connection closed, not reused, so that
// the next request comes on a new connection.
void bad_answer(std::string_view answer, bool close = false, unsigned status = 502) {
  INFO("the backend answered: " << shown(answer));
  const std::string bytes(answer);
  raw_backend b([&](const seen_request& s) {
    return s.conn == 1 ? raw_answer{bytes, close} : ok_answer(s);
  });
  router_process r(config(b), /*with_stats=*/true);
  client c(r.address());
  auto res = c.request("GET /first HTTP/1.1\r\n" + host + "\r\n");
  REQUIRE(res);
  CHECK(res->result_int() == status);
  INFO("answer: " << res->body());
  CHECK(failures(r) == 1);
  CHECK(eventually([&] { return b.closed_by_peer(1) || close; }, 3000ms));
  res = c.request("GET /second HTTP/1.1\r\n" + host + "\r\n");
  REQUIRE(res);
  CHECK(res->result_int() == 200);
  CHECK(res->body() == "ok");
  const auto seen = b.requests();
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].conn == 2);
  c.close();
  r.stop();
}

// The router passes the backend's `answer` to a GET on; the client's answer, which is returned.
response passed_on(std::string_view answer, bool close = false, bool head = false) {
  INFO("the backend answered: " << shown(answer));
  const std::string bytes(answer);
  raw_backend b([&](const seen_request&) { return raw_answer{bytes, close}; });
  router_process r(config(b));
  client c(r.address());
  const auto res =
      c.request(std::string(head ? "HEAD" : "GET") + " / HTTP/1.1\r\n" + host + "\r\n", head);
  REQUIRE(res);
  c.close();
  r.stop();
  return *res;
}

}  // namespace

TEST_CASE("RFC 9112 §6.3 item 5: a proxy sends 502 for an invalid Content-Length, and closes") {
  bad_answer("HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok");
  bad_answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok");
}

TEST_CASE("RFC 9112 §6.1, §6.3 item 3: an answer with Transfer-Encoding and Content-Length: 502") {
  bad_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nokEXTRA");
  bad_answer(
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: "
      "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
}

TEST_CASE("RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 answer is faulty framing: 502") {
  bad_answer("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true);
}

TEST_CASE("RFC 9112 §6.1, §7: chunked twice or with parameters in an answer: 502") {
  bad_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
             true);
  bad_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;a=b\r\n\r\n2\r\nok\r\n0\r\n\r\n");
}

TEST_CASE("RFC 9112 §6.3 item 4: an answer coded other than chunked is not passed on without it") {
  // The body runs to the close (item 4); its gzip coding the router neither decodes nor forwards.
  bad_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nZZZZ", true);
  bad_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nZZZZ\r\n0\r\n\r\n");
}

TEST_CASE("RFC 9112 §2.2: whitespace between the status line and the first field: 502") {
  bad_answer("HTTP/1.1 200 OK\r\n Content-Length: 5\r\nContent-Length: 2\r\n\r\nok");
}

TEST_CASE("RFC 9112 §5.1, §5.2: whitespace before a colon or an obs-fold in an answer") {
  // §5.1: a proxy removes the whitespace or (as here) does not pass the answer on.
  bad_answer("HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok");
  // §5.2: a proxy replaces an obs-fold with spaces (Beast's parser does) or sends 502.
  const auto res = passed_on("HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok");
  CHECK(res.result_int() == 200);
  CHECK(res["X-Folded"] == "a b");
}

TEST_CASE("RFC 9110 §15: a status outside 100..599 is a server error: 502") {
  bad_answer("HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok");
}

TEST_CASE(
    "RFC 9112 §6.3 items 4, 8: a body to the close, and chunked, go on with a Content-Length") {
  auto res = passed_on("HTTP/1.1 200 OK\r\n\r\nto the end", true);
  CHECK(res.result_int() == 200);
  CHECK(res.body() == "to the end");
  CHECK(res[http::field::content_length] == "10");
  res = passed_on("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
  CHECK(res.body() == "ok");
  CHECK(res[http::field::content_length] == "2");
  CHECK(res.find(http::field::transfer_encoding) == res.end());
}

TEST_CASE("RFC 9112 §7.1.2: an answer's trailer fields are not merged into its header") {
  const auto res = passed_on(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
      "Set-Cookie: evil=1\r\n\r\n");
  CHECK(res.body() == "ok");
  CHECK(res.find(http::field::set_cookie) == res.end());
}

TEST_CASE(
    "RFC 9112 §6.3 item 1, RFC 9110 §8.6: no Content-Length added to a 204, a 304 keeps its") {
  auto res = passed_on("HTTP/1.1 204 No Content\r\n\r\n");
  CHECK(res.result_int() == 204);
  CHECK(res.find(http::field::content_length) == res.end());
  res = passed_on("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n");
  CHECK(res.result_int() == 304);
  CHECK(res[http::field::content_length] == "1234");
  res = passed_on("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", false, true);  // HEAD
  CHECK(res[http::field::content_length] == "1234");
  res = passed_on("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
  CHECK(res.count(http::field::content_length) == 1);  // §6.3 item 5: passed on as one
}

TEST_CASE("RFC 9112 §6.3: bytes after an answer are never passed on as the next answer") {
  raw_backend b([](const seen_request& s) {
    return s.conn == 1 ? raw_answer{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!",
                                    false}
                       : raw_answer{"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood", false};
  });
  router_process r(config(b));
  client c(r.address());
  auto res = c.request("GET /1 HTTP/1.1\r\n" + host + "\r\n");
  REQUIRE(res);
  CHECK(res->body() == "ok");
  res = c.request("GET /2 HTTP/1.1\r\n" + host + "\r\n");
  REQUIRE(res);
  CHECK(res->body() == "good");
  c.close();
  r.stop();
}

#endif
