// SPDX-License-Identifier: MIT
// http1::response_parser (lbkit/net/http1_response.hpp): the status line, the three body
// framings of RFC 9112 §6.3 (Content-Length, chunked, until close), and the malformed answers
// a hostile backend sends: conflicting lengths, chunk sizes that overflow, obs-fold, bare CR
// and LF. Every case is parsed twice, whole and one byte at a time: an incremental parser must
// reach the same verdict however the bytes arrive.
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include <lbkit/net/http1_response.hpp>

namespace {

using parser = lbkit::http1::response_parser;
using lbkit::parse_status;

struct parsed {
  parse_status last = parse_status::incomplete;
  bool head = false;
  int status = 0;
  std::size_t size = 0;  // complete: the bytes the response occupies
  std::string body;
  std::string error;
};

// Feeds `bytes[0, n)` for growing n (the whole input at once when `step` is 0), then reports
// the close when `closed`; stops at a verdict other than incomplete.
parsed run(std::string_view bytes, bool closed, std::size_t step, bool head_request,
           std::size_t max_head) {
  parser p(head_request, max_head);
  parsed r;
  std::size_t n = step == 0 ? bytes.size() : 0;
  for (;;) {
    const bool all = n >= bytes.size();
    const parse_status e = p.parse(bytes.substr(0, n), all && closed);
    if (p.has_head() && !r.head) {
      r.head = true;
      r.status = p.status();
    }
    r.last = e;
    if (e != parse_status::incomplete || all) break;
    n += step;
  }
  if (r.last == parse_status::complete) r.size = p.size();
  r.body = std::string(p.body());
  r.error = p.error();
  return r;
}

// Both ways, with the same verdict, status and body.
parsed parse(std::string_view bytes, bool closed = false, bool head_request = false,
             std::size_t max_head = parser::default_max_head) {
  const parsed whole = run(bytes, closed, 0, head_request, max_head);
  const parsed dripped = run(bytes, closed, 1, head_request, max_head);
  CHECK(whole.last == dripped.last);
  CHECK(whole.status == dripped.status);
  CHECK(whole.body == dripped.body);
  CHECK(whole.size == dripped.size);
  // The message may differ (garbage is named from the bytes seen when it was refused).
  CHECK(whole.error.empty() == dripped.error.empty());
  return whole;
}

}  // namespace

TEST_CASE("a Content-Length answer completes after exactly that many bytes") {
  const auto r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(r.last == parse_status::complete);
  CHECK(r.head);
  CHECK(r.status == 200);
  CHECK(r.body == "hello");
  // What follows the body is not this response's: size() ends at the body.
  const std::string one = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  const auto next = parse(one + "HTTP/1.1 500 X\r\n\r\n");
  CHECK(next.last == parse_status::complete);
  CHECK(next.size == one.size());
  CHECK(next.body == "hello");
  CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel").last == parse_status::incomplete);
  const auto cut = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true);
  CHECK(cut.last == parse_status::invalid);
  CHECK(!cut.error.empty());
}

TEST_CASE("a chunked answer is decoded, extensions and trailers dropped") {
  const auto r = parse(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n");
  CHECK(r.last == parse_status::complete);
  CHECK(r.body == "Wikipedia");
}

TEST_CASE("without a length the body runs until the peer closes") {
  const auto open = parse("HTTP/1.1 200 OK\r\n\r\nuntil close");
  CHECK(open.last == parse_status::incomplete);
  CHECK(open.head);
  const auto closed = parse("HTTP/1.1 200 OK\r\n\r\nuntil close", true);
  CHECK(closed.last == parse_status::complete);
  CHECK(closed.body == "until close");
}

TEST_CASE("no body after HEAD, 204 and 304; interim 1xx answers are skipped") {
  CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", false, true).last ==
        parse_status::complete);
  CHECK(parse("HTTP/1.1 204 No Content\r\n\r\n").last == parse_status::complete);
  CHECK(parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n").last ==
        parse_status::complete);
  const auto r =
      parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
  CHECK(r.last == parse_status::complete);
  CHECK(r.status == 201);
}

TEST_CASE("the status line is exactly HTTP/1.x SP 3DIGIT SP reason") {
  CHECK(parse("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").last ==
        parse_status::complete);  // empty reason
  for (std::string_view bad :
       {"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1 200\r\n\r\n", "http/1.1 200 OK\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n"}) {
    CAPTURE(bad);
    const auto r = parse(bad, true);
    CHECK(r.last == parse_status::invalid);
    CHECK(!r.head);
  }
  // Garbage is refused from its first bytes, without waiting for a line end.
  CHECK(parse("garbage that never ends").last == parse_status::invalid);
}

TEST_CASE("Content-Length: identical repeats pass, conflicting or malformed ones fail") {
  CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok").last ==
        parse_status::complete);
  CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok").last == parse_status::complete);
  for (std::string_view bad :
       {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"}) {
    CAPTURE(bad);
    CHECK(parse(bad, true).last == parse_status::invalid);
  }
}

TEST_CASE("a chunk size that would overflow 64 bits, or is not hex, fails") {
  for (std::string_view bad :
       {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n"}) {
    CAPTURE(bad);
    const auto r = parse(bad, true);
    CHECK(r.last == parse_status::invalid);
    CHECK(!r.error.empty());
  }
}

TEST_CASE("obs-fold, whitespace before the colon and control bytes in a head fail") {
  for (std::string_view bad :
       {"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n", "HTTP/1.1 200 OK\r\nX-A: 1\x01\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",    // a bare CR
        "HTTP/1.1 200 O\rK\r\n\r\n",               // in the reason
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",  // bare LF
        "HTTP/1.1 200 OK\r\nX-A: 1\n\r\n"}) {
    CAPTURE(bad);
    const auto r = parse(bad, true);
    CHECK(r.last == parse_status::invalid);
    CHECK(!r.error.empty());
  }
}

TEST_CASE("a head or trailer section longer than max_head fails; the body is not bounded") {
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
  CHECK(parse(head + "body", false, false, head.size()).last == parse_status::complete);
  const auto over = parse(head + "body", false, false, head.size() - 1);
  CHECK(over.last == parse_status::invalid);
  CHECK(over.error.find("longer than") != std::string::npos);
  // A head that never ends fails once past the bound, without waiting for a close.
  const auto endless = parse("HTTP/1.1 200 OK\r\nX: " + std::string(parser::default_max_head, 'a'));
  CHECK(endless.last == parse_status::invalid);
  CHECK(!endless.head);
  // Interim heads count towards the bound, so an endless run of 100 Continue is refused too.
  std::string interim;
  for (int i = 0; i < 40; ++i) interim += "HTTP/1.1 100 Continue\r\n\r\n";
  CHECK(parse(interim + head + "body", false, false, 40 * 25 + head.size()).last ==
        parse_status::complete);
  CHECK(parse(interim + head + "body", false, false, 40 * 25).last == parse_status::invalid);
  // The trailer section has a bound of its own, counted from its first byte.
  const std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string trailer = "X-T: " + std::string(30, 't') + "\r\n\r\n";
  const std::string body = "3\r\nabc\r\n0\r\n";
  CHECK(parse(chunked + body + trailer, false, false, chunked.size()).last ==
        parse_status::complete);
  CHECK(trailer.size() < chunked.size());
  const std::string long_trailer = "X-T: " + std::string(60, 't') + "\r\n\r\n";
  CHECK(parse(chunked + body + long_trailer, false, false, chunked.size()).last ==
        parse_status::invalid);
}

TEST_CASE("an error quotes the peer's bytes safely and briefly") {
  const std::string hostile =
      "HTTP/1.1 200 OK\r\nX-\x1b[31m: " + std::string(5000, 'a') + "\r\n\r\n";
  const auto r = parse(hostile, true);
  REQUIRE(r.last == parse_status::invalid);
  CHECK(r.error.find('\x1b') == std::string::npos);
  CHECK(r.error.size() < 256);
}

TEST_CASE("after done or bad, parse keeps its verdict") {
  parser p(false);
  const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  CHECK(p.parse(ok, false) == parse_status::complete);
  CHECK(p.has_head());
  CHECK(p.size() == ok.size());
  CHECK(p.parse(ok + "HTTP/1.1 500 X\r\n\r\n", true) == parse_status::complete);
  parser q(false);
  CHECK(q.parse("HTTP/1.1 200 OK\n", false) == parse_status::invalid);
  CHECK(q.parse("HTTP/1.1 200 OK\n\r\n\r\n", true) == parse_status::invalid);
}
