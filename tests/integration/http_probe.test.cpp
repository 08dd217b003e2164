// SPDX-License-Identifier: MIT
// http_probe against real HTTP servers on loopback: the request it writes, status ranges, body
// checks, every framing (Content-Length, chunked, read to close, none), peers that keep the
// connection open, malformed answers, silent and slow peers (the deadline holds), resets,
// refusals, and options that are refused before any connection is made.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <doctest/doctest.h>

#include <lbkit/health/http_probe.hpp>

#include "../support/loopback.hpp"

using namespace std::chrono_literals;
using namespace std::string_view_literals;
using lbkit::http_probe;
using lbkit::probe_clock;
using lbkit::probe_result;
using lbkit::probe_status;
using lbkit::test::loopback_server;

namespace {

// A generous deadline for probes that must succeed or fail on their own, far from it.
constexpr auto patience = 5s;
// How long a probe may take when nothing should make it wait (a server that keeps the
// connection open after a complete answer): far below `patience`, far above loopback times.
constexpr auto prompt = 1s;
// The deadline for probes that must time out, and how late past it they may return: poll()
// rounds up to whole milliseconds, and a shared 2-core machine may delay the wake-up.
constexpr auto short_deadline = 300ms;
constexpr auto slack = 250ms;

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// The request a test server received, handed from its thread to the test's.
class request_log {
 public:
  void put(std::string request) {
    {
      std::lock_guard lock(m_);
      request_ = std::move(request);
      set_ = true;
    }
    cv_.notify_all();
  }
  // The request, once it is there (bounded wait); empty if none came.
  std::string get() {
    std::unique_lock lock(m_);
    cv_.wait_for(lock, patience, [&] { return set_; });
    return request_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::string request_;
  bool set_ = false;
};

// Reads a request head, up to its empty line; what came if the peer left or the test ends.
std::string read_request(int c, const loopback_server& self) {
  std::string got;
  char buf[512];
  while (!contains(got, "\r\n\r\n") && got.size() < 64 * 1024 && self.wait(c, POLLIN)) {
    const ssize_t n = ::recv(c, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// What the server does once it has written its answer.
enum class then { close, keep_open };

// A handler that reads the request, logs it, writes `answer`, then closes or keeps the
// connection open until the probe hangs up (or the test ends).
loopback_server::handler answering(std::string answer, then after = then::close,
                                   request_log* log = nullptr) {
  return [answer = std::move(answer), after, log](int c, const loopback_server& self) {
    auto request = read_request(c, self);
    if (log) log->put(std::move(request));
    loopback_server::send_all(c, answer);
    if (after == then::keep_open) self.wait(c, POLLRDHUP);
    ::close(c);
  };
}

// One probe against a server that gives `answer`.
probe_result exchange(std::string answer, http_probe::options o = {}, then after = then::close) {
  loopback_server server(answering(std::move(answer), after));
  return http_probe(std::move(o)).probe(server.address(), probe_clock::now() + patience);
}

const std::string ok_empty = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

}  // namespace

TEST_CASE("200 is healthy; the request is GET / HTTP/1.1 with Host, User-Agent, close") {
  request_log log;
  loopback_server server(answering(ok_empty, then::close, &log));
  const auto r = http_probe{}.probe(server.address(), probe_clock::now() + patience);
  CHECK_MESSAGE(r.healthy(), r.detail);
  CHECK(r.detail == "HTTP 200");
  CHECK(r.elapsed < patience);
  const auto request = log.get();
  CHECK(request == "GET / HTTP/1.1\r\nHost: " + server.address().to_string() +
                       "\r\nUser-Agent: lbkit-health/" + std::to_string(LBKIT_VERSION_MAJOR) + '.' +
                       std::to_string(LBKIT_VERSION_MINOR) + '.' +
                       std::to_string(LBKIT_VERSION_PATCH) + "\r\nConnection: close\r\n\r\n");
}

TEST_CASE("the request carries the configured method, path, Host and extra headers") {
  request_log log;
  loopback_server server(answering(ok_empty, then::close, &log));
  http_probe p({.method = "OPTIONS",
                .path = "/health/ready?full=1&x=%2F",
                .host = "api.example:8443",
                .headers = {{"X-Probe", "lbkit test"}, {"Accept", "*/*"}}});
  const auto r = p.probe(server.address(), probe_clock::now() + patience);
  CHECK_MESSAGE(r.healthy(), r.detail);
  const auto request = log.get();
  CHECK(request.starts_with("OPTIONS /health/ready?full=1&x=%2F HTTP/1.1\r\n"));
  CHECK(contains(request, "\r\nHost: api.example:8443\r\n"));
  CHECK(contains(request, "\r\nX-Probe: lbkit test\r\nAccept: */*\r\n"));
  CHECK(contains(request, "\r\nConnection: close\r\n"));
  CHECK(contains(request, "\r\nUser-Agent: lbkit-health/"));
  CHECK(request.ends_with("\r\n\r\n"));
}

TEST_CASE("a User-Agent among the extra headers replaces the probe's own") {
  request_log log;
  loopback_server server(answering(ok_empty, then::close, &log));
  http_probe p({.headers = {{"user-agent", "checker/2"}}});
  CHECK(p.probe(server.address(), probe_clock::now() + patience).healthy());
  const auto request = log.get();
  CHECK(contains(request, "\r\nuser-agent: checker/2\r\n"));
  CHECK_FALSE(contains(request, "lbkit-health"));
}

TEST_CASE("IPv6: ::1 is probed, with a bracketed Host") {
  request_log log;
  loopback_server server(answering(ok_empty, then::close, &log), /*ipv6=*/true);
  REQUIRE(server.address().address().is_v6());
  const auto r = http_probe{}.probe(server.address(), probe_clock::now() + patience);
  CHECK_MESSAGE(r.healthy(), r.detail);
  CHECK(contains(log.get(), "\r\nHost: [::1]:" + std::to_string(server.address().port()) + "\r\n"));
}

TEST_CASE("status: 2xx and 3xx pass by default; others are bad_status 'HTTP nnn'") {
  for (const char* line : {"HTTP/1.1 204 No Content", "HTTP/1.1 302 Found", "HTTP/1.0 399 X"}) {
    const auto r = exchange(std::string(line) + "\r\nContent-Length: 0\r\n\r\n");
    CHECK_MESSAGE(r.healthy(), line, ": ", r.detail);
  }
  for (int code : {400, 404, 500, 503}) {
    const auto r =
        exchange("HTTP/1.1 " + std::to_string(code) + " Nope\r\nContent-Length: 4\r\n\r\nnope");
    CHECK(r.status == probe_status::bad_status);
    CHECK(r.detail == "HTTP " + std::to_string(code));
  }
}

TEST_CASE("status: configured ranges decide") {
  const http_probe::options o{.expect_status = {{200, 200}, {404, 404}, {500, 502}}};
  for (int code : {200, 404, 500, 501, 502}) {
    const auto r =
        exchange("HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Length: 0\r\n\r\n", o);
    CHECK_MESSAGE(r.healthy(), code, ": ", r.detail);
  }
  for (int code : {201, 302, 403, 405, 503}) {
    const auto r =
        exchange("HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Length: 0\r\n\r\n", o);
    CHECK_MESSAGE(r.status == probe_status::bad_status, code);
    CHECK(r.detail == "HTTP " + std::to_string(code));
  }
}

TEST_CASE("a bad status fails at the head, without waiting for the body") {
  // The body never comes and the connection stays open: the verdict must not need either.
  const auto r = exchange("HTTP/1.1 503 Unavailable\r\nContent-Length: 100\r\n\r\n",
                          {.expect_body = "ok"}, then::keep_open);
  CHECK(r.status == probe_status::bad_status);
  CHECK(r.detail == "HTTP 503");
  CHECK(r.elapsed < prompt);
}

TEST_CASE("Content-Length body, server keeps the connection open: judged at the body's end") {
  const std::string answer =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\n"
      "status: ok; db: up";
  SUBCASE("expected text present") {
    const auto r = exchange(answer, {.expect_body = "db: up"}, then::keep_open);
    CHECK_MESSAGE(r.healthy(), r.detail);
    CHECK(r.elapsed < prompt);
  }
  SUBCASE("expected text absent") {
    const auto r = exchange(answer, {.expect_body = "db: down"}, then::keep_open);
    CHECK(r.status == probe_status::bad_body);
    CHECK(contains(r.detail, "HTTP 200"));
    CHECK(r.elapsed < prompt);
  }
  SUBCASE("read_body without expected text") {
    const auto r = exchange(answer, {.read_body = true}, then::keep_open);
    CHECK_MESSAGE(r.healthy(), r.detail);
    CHECK(r.elapsed < prompt);
  }
  SUBCASE("no body check: judged at the head") {
    const auto r = exchange("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", {}, then::keep_open);
    CHECK_MESSAGE(r.healthy(), r.detail);
    CHECK(r.elapsed < prompt);
  }
}

TEST_CASE("repeated identical Content-Length values are one; conflicting ones are bad") {
  CHECK(exchange("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok",
                 {.expect_body = "ok"}, then::keep_open)
            .healthy());
  for (const char* fields :
       {"Content-Length: 2\r\nContent-Length: 3\r\n", "Content-Length: 2, 3\r\n",
        "Content-Length: +2\r\n", "Content-Length: 0x2\r\n", "Content-Length: \r\n",
        "Content-Length: 99999999999999999999999\r\n"}) {
    const auto r = exchange(std::string("HTTP/1.1 200 OK\r\n") + fields + "\r\nok");
    CHECK_MESSAGE(r.status == probe_status::bad_response, fields);
    CHECK(contains(r.detail, "Content-Length"));
  }
}

TEST_CASE("chunked body with extensions and trailers, server keeps the connection open") {
  // The expected text straddles a chunk boundary; extensions take every allowed form.
  const std::string answer =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "7;name=value\r\nstatus:\r\n"
      "0004 ; quoted=\"a;b \\\"c\\\"\"; bare\r\n ser\r\n"
      "a\r\nving; ok\r\n\r\n"
      "0;last=1\r\nX-Checksum: 1234\r\nX-Other: y\r\n\r\n";
  SUBCASE("expected text found across chunks") {
    const auto r = exchange(answer, {.expect_body = "serving"}, then::keep_open);
    CHECK_MESSAGE(r.healthy(), r.detail);
    CHECK(r.elapsed < prompt);
  }
  SUBCASE("the last chunk and trailers end the body") {
    const auto r = exchange(answer, {.expect_body = "status: serving; ok\r\n!"}, then::keep_open);
    CHECK(r.status == probe_status::bad_body);
    CHECK(contains(r.detail, "(21 bytes)"));  // the decoded body
    CHECK(r.elapsed < prompt);
  }
  SUBCASE("read_body") {
    const auto r = exchange(answer, {.read_body = true}, then::keep_open);
    CHECK_MESSAGE(r.healthy(), r.detail);
    CHECK(r.elapsed < prompt);
  }
}

TEST_CASE("malformed chunked bodies are bad responses") {
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const char* body : {
           "zz\r\nhello\r\n0\r\n\r\n",       // not hex
           "5\r\nhelloXY0\r\n\r\n",          // data not followed by CRLF
           "5 \r\nhello\r\n0\r\n\r\n",       // whitespace without an extension
           "5;\r\nhello\r\n0\r\n\r\n",       // extension without a name
           "5;a=\"x\r\nhello\r\n0\r\n\r\n",  // unterminated quoted string
           "5\nhello\r\n0\r\n\r\n",          // bare LF
           "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
           "5\r\nhello\r\n0\r\n",    // closed before the trailer section ends
           "5\r\nhel",               // closed in a chunk
           "fffffffffffffffff\r\n",  // size overflows 64 bits
       }) {
    const auto r = exchange(head + body, {.read_body = true});
    CHECK_MESSAGE(r.status == probe_status::bad_response, body, ": ", r.detail);
  }
}

TEST_CASE("Transfer-Encoding other than a lone chunked, or beside Content-Length, is bad") {
  for (const char* fields : {
           "Transfer-Encoding: gzip, chunked\r\n",
           "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
           "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
           "Transfer-Encoding: identity\r\n",
       }) {
    const auto r =
        exchange(std::string("HTTP/1.1 200 OK\r\n") + fields + "\r\n5\r\nhello\r\n0\r\n\r\n");
    CHECK_MESSAGE(r.status == probe_status::bad_response, fields);
  }
  const auto v10 = exchange("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  CHECK(v10.status == probe_status::bad_response);
  CHECK(contains(v10.detail, "HTTP/1.0"));
}

TEST_CASE("a body without framing runs until the peer closes") {
  const std::string answer = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall good here";
  CHECK(exchange(answer, {.expect_body = "good"}).healthy());
  CHECK(exchange(answer, {.read_body = true}).healthy());
  const auto r = exchange(answer, {.expect_body = "bad"});
  CHECK(r.status == probe_status::bad_body);
  CHECK(contains(r.detail, "(13 bytes)"));
  // The expected text settles it before the close, which never comes here.
  const auto open = exchange(answer, {.expect_body = "good"}, then::keep_open);
  CHECK_MESSAGE(open.healthy(), open.detail);
  CHECK(open.elapsed < prompt);
}

TEST_CASE("HEAD, 204 and 304 answers have no body whatever their fields say") {
  const auto head = exchange("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                             {.method = "HEAD", .read_body = true}, then::keep_open);
  CHECK_MESSAGE(head.healthy(), head.detail);
  CHECK(head.elapsed < prompt);
  for (const char* line : {"HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified"}) {
    const auto r = exchange(std::string(line) + "\r\nTransfer-Encoding: chunked\r\n\r\n",
                            {.read_body = true}, then::keep_open);
    CHECK_MESSAGE(r.healthy(), line, ": ", r.detail);
    CHECK(r.elapsed < prompt);
  }
}

TEST_CASE("interim 1xx answers are skipped; 101 is a bad response") {
  const auto r = exchange(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      {.expect_body = "ok"}, then::keep_open);
  CHECK_MESSAGE(r.healthy(), r.detail);
  CHECK(r.elapsed < prompt);
  const auto upgrade = exchange("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n");
  CHECK(upgrade.status == probe_status::bad_response);
  CHECK(contains(upgrade.detail, "101"));
}

TEST_CASE("garbage and malformed heads are bad responses") {
  for (std::string_view answer : {
           "garbage\r\n\r\n"sv, "HTTP/1.1 2OO OK\r\n\r\n"sv, "HTTP/2 200\r\n\r\n"sv,
           "http/1.1 200 OK\r\n\r\n"sv,
           "HTTP/1.1 200\r\n\r\n"sv,      // no SP before the reason
           "HTTP/1.1  200 OK\r\n\r\n"sv,  // two spaces
           "HTTP/1.1 099 Low\r\n\r\n"sv,  // status out of 100..599
           "HTTP/1.1 600 High\r\n\r\n"sv,
           "HTTP/1.1 200 OK\nContent-Length: 0\n\n"sv,         // bare LF
           "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n"sv,           // bare CR in a value
           "HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\n\r\n"sv,   // obs-fold
           "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"sv,  // space before colon
           "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n"sv,
           "HTTP/1.1 200 OK\r\nX-A: nul\0byte\r\n\r\n"sv,
           "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"sv,  // closed in the head
       }) {
    const auto r = exchange(std::string(answer));
    CHECK_MESSAGE(r.status == probe_status::bad_response, answer, ": ", r.detail);
  }
  // An empty reason phrase is allowed (after its SP).
  CHECK(exchange("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").healthy());
}

TEST_CASE("garbage fails at once even when the peer keeps the connection open") {
  const auto r = exchange("SSH-2.0-OpenSSH_9.2p1", {}, then::keep_open);
  CHECK(r.status == probe_status::bad_response);
  CHECK(contains(r.detail, "SSH-2.0"));
  CHECK(r.elapsed < prompt);
}

TEST_CASE("an answer larger than max_response is a bad response") {
  SUBCASE("an oversized header, default limit (16 KiB)") {
    const auto r = exchange("HTTP/1.1 200 OK\r\nX-Big: " + std::string(20'000, 'a') +
                            "\r\nContent-Length: 0\r\n\r\n");
    CHECK(r.status == probe_status::bad_response);
    CHECK(contains(r.detail, "longer than max_response (16384 bytes), in the response head"));
  }
  SUBCASE("a body over a small limit, the server keeping the connection open") {
    const auto r =
        exchange("HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + std::string(200, 'b'),
                 {.max_response = 128, .read_body = true}, then::keep_open);
    CHECK(r.status == probe_status::bad_response);
    CHECK(contains(r.detail, "in the response body"));
    CHECK(r.elapsed < prompt);
  }
  SUBCASE("the expected text within the limit settles it first") {
    const auto r =
        exchange("HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\nready" + std::string(195, 'b'),
                 {.expect_body = "ready", .max_response = 128});
    CHECK_MESSAGE(r.healthy(), r.detail);
  }
}

TEST_CASE("a peer that accepts and never answers: timeout at the deadline, not later") {
  loopback_server server([](int c, const loopback_server& self) {
    self.wait(c, POLLRDHUP);  // reads nothing, says nothing, until the probe hangs up
    ::close(c);
  });
  const auto start = probe_clock::now();
  const auto r = http_probe{}.probe(server.address(), start + short_deadline);
  const auto took = probe_clock::now() - start;
  CHECK(r.status == probe_status::timeout);
  CHECK(contains(r.detail, "in the response head"));
  CHECK(took >= short_deadline);
  CHECK(took < short_deadline + slack);
}

TEST_CASE("a peer that drips a byte every 50 ms still ends at the deadline") {
  loopback_server server([](int c, const loopback_server& self) {
    read_request(c, self);
    const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for (char byte : answer) {
      if (self.stopping() || !loopback_server::send_all(c, std::string_view(&byte, 1))) break;
      pollfd p{c, POLLRDHUP, 0};
      if (::poll(&p, 1, 50) > 0) break;  // the probe hung up
    }
    ::close(c);
  });
  const auto start = probe_clock::now();
  const auto r = http_probe{}.probe(server.address(), start + short_deadline);
  const auto took = probe_clock::now() - start;
  CHECK(r.status == probe_status::timeout);
  CHECK(took >= short_deadline);
  CHECK(took < short_deadline + slack);
}

TEST_CASE("a peer that keeps the connection open after a body framed by the close: timeout") {
  // Without framing the body only ends at the close; read_body waits for it, to the deadline.
  const auto start = probe_clock::now();
  loopback_server server(answering("HTTP/1.1 200 OK\r\n\r\nbody", then::keep_open));
  const auto r = http_probe({.read_body = true}).probe(server.address(), start + short_deadline);
  const auto took = probe_clock::now() - start;
  CHECK(r.status == probe_status::timeout);
  CHECK(contains(r.detail, "in the response body"));
  CHECK(took < short_deadline + slack);
}

TEST_CASE("reset, close before answering, close in the body, refused") {
  SUBCASE("a reset after the request") {
    loopback_server server([](int c, const loopback_server& self) {
      read_request(c, self);
      loopback_server::reset(c);
    });
    const auto r = http_probe{}.probe(server.address(), probe_clock::now() + patience);
    CHECK(r.status == probe_status::reset);
    CHECK(r.elapsed < patience);
  }
  SUBCASE("a close before any answer") {
    const auto r = exchange("");
    CHECK(r.status == probe_status::reset);
    CHECK(contains(r.detail, "before answering"));
  }
  SUBCASE("a close in the middle of a Content-Length body") {
    const auto r =
        exchange("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", {.read_body = true});
    CHECK(r.status == probe_status::bad_response);
    CHECK(contains(r.detail, "3 of 10"));
  }
  SUBCASE("nothing listening") {
    lbkit::endpoint closed;
    {
      loopback_server server(answering(ok_empty));
      closed = server.address();
    }  // stopped: the port is closed now
    const auto r = http_probe{}.probe(closed, probe_clock::now() + patience);
    CHECK(r.status == probe_status::refused);
    CHECK(r.elapsed < patience);
  }
}

TEST_CASE("a deadline already past fails at once, without connecting") {
  loopback_server server(answering(ok_empty));
  const auto r = http_probe{}.probe(server.address(), probe_clock::now() - 1s);
  CHECK(r.status == probe_status::timeout);
  CHECK(r.elapsed < slack);
}

TEST_CASE("validate() accepts the defaults and sound options") {
  CHECK(http_probe::validate({}).has_value());
  CHECK(http_probe::validate({.method = "HEAD",
                              .path = "/a/b;c=d/~e_f-g.h?q=1&r=%20:@!$'()*+,",
                              .host = "[2001:db8::1]:8080",
                              .headers = {{"X-Empty", ""}, {"X-Tab", "a\tb"}},
                              .expect_status = {{200, 200}, {500, 599}},
                              .max_response = 1})
            .has_value());
  for (const char* host : {"example.com", "example.com:80", "10.0.0.1", "[::1]", "a%41b"}) {
    CHECK_MESSAGE(http_probe::validate({.host = host}).has_value(), host);
  }
}

TEST_CASE("validate() refuses anything that could inject or split, with a reason") {
  struct bad_case {
    http_probe::options options;
    const char* reason;
  };
  const bad_case cases[] = {
      {{.method = ""}, "method"},
      {{.method = "GET /x HTTP/1.1\r\nX:"}, "method"},
      {{.method = "CONNECT"}, "CONNECT"},
      {{.path = ""}, "path"},
      {{.path = "health"}, "path"},
      {{.path = "/health\r\nX-Evil: 1"}, "path"},
      {{.path = "/a b"}, "path"},
      {{.path = "/a#frag"}, "path"},
      {{.path = "/%zz"}, "path"},
      {{.path = "/%4"}, "path"},
      {{.host = "a b"}, "host"},
      {{.host = "evil\r\nX-Injected: 1"}, "host"},
      {{.host = "h:port"}, "host"},
      {{.host = "h:70000"}, "host"},
      {{.host = "[::1"}, "host"},
      {{.host = "user@h"}, "host"},
      {{.headers = {{"Bad Name", "x"}}}, "header name"},
      {{.headers = {{"X-A:", "x"}}}, "header name"},
      {{.headers = {{"", "x"}}}, "header name"},
      {{.headers = {{"X-A", "x\r\nX-Evil: 1"}}}, "control character"},
      {{.headers = {{"X-A", "x\ny"}}}, "control character"},
      {{.headers = {{"X-A", " padded"}}}, "whitespace"},
      {{.headers = {{"host", "x"}}}, "options.host"},
      {{.headers = {{"Connection", "keep-alive"}}}, "set by the probe"},
      {{.headers = {{"Transfer-Encoding", "chunked"}}}, "set by the probe"},
      {{.headers = {{"content-length", "5"}}}, "set by the probe"},
      {{.expect_status = {}}, "expect_status"},
      {{.expect_status = {{100, 199}}}, "200..599"},
      {{.expect_status = {{300, 200}}}, "first <= last"},
      {{.expect_status = {{200, 600}}}, "200..599"},
      {{.expect_status = {{}}}, "200..599"},
      {{.expect_body = "abc", .max_response = 2}, "max_response"},
      {{.max_response = 0}, "max_response"},
      {{.method = "HEAD", .expect_body = "x"}, "HEAD"},
  };
  for (const auto& c : cases) {
    const auto v = http_probe::validate(c.options);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error().code == lbkit::errc::invalid_argument);
    CHECK_MESSAGE(contains(v.error().message, c.reason), v.error().message);
  }
}

TEST_CASE("a probe with invalid options reports error and never connects") {
  loopback_server server(answering(ok_empty));
  for (http_probe::options o : {http_probe::options{.path = "/health\r\nX-Evil: 1"},
                                http_probe::options{.headers = {{"Bad Name", "x"}}}}) {
    const http_probe p(o);
    const auto r = p.probe(server.address(), probe_clock::now() + patience);
    CHECK(r.status == probe_status::error);
    CHECK(r.detail == "invalid http_probe options: " + http_probe::validate(o).error().message);
    CHECK(r.elapsed < slack);
  }
  // A valid probe after them: the server accepts in order, so had either invalid one
  // connected, it would have been accepted before this one.
  const auto r = http_probe{}.probe(server.address(), probe_clock::now() + patience);
  CHECK_MESSAGE(r.healthy(), r.detail);
  CHECK(server.accepted() == 1);
}

TEST_CASE("one probe object serves several threads at once") {
  loopback_server server(answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  const http_probe p({.expect_body = "ok"});
  probe_result results[4];
  {
    std::thread threads[4];
    for (int i = 0; i < 4; ++i) {
      threads[i] = std::thread(
          [&, i] { results[i] = p.probe(server.address(), probe_clock::now() + patience); });
    }
    for (auto& t : threads) t.join();
  }
  for (const auto& r : results) CHECK_MESSAGE(r.healthy(), r.detail);
}
