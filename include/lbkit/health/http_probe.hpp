// SPDX-License-Identifier: MIT
// http_probe: an L7 health check — one HTTP/1.1 request per probe on a fresh connection, and a
// verdict on the answer's status code and, optionally, its body (HAProxy's `option httpchk`
// with `http-check expect`, Envoy's HTTP health checker).
//
// The request is written and the response parsed here, without a dependency: strictly by
// RFC 9112 (message syntax and framing) and RFC 9110 (semantics), within a byte budget, on the
// deadline-driven socket of health/detail/socket.hpp, so no peer can stretch a probe past its
// deadline: not a silent one, not one that drips bytes, not one that keeps the connection open.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/endpoint.hpp"
#include "lbkit/health/detail/socket.hpp"
#include "lbkit/health/probe.hpp"
#include "lbkit/net/http1_response.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"
#include "lbkit/version.hpp"

namespace lbkit {

// An HTTP/1.1 health check: connects, sends one request with `Connection: close`, and judges
// the response. Healthy when the final status is in one of `expect_status`'s ranges and, with
// `expect_body`, the body contains those bytes.
//
// The verdict comes as soon as it is certain, so a server that keeps the connection open
// despite `Connection: close` does not hold the probe: a bad status fails right after the
// head; without `expect_body` (and `read_body` false, the default) a good status passes right
// after the head; with `expect_body` the probe passes as soon as the text has arrived, and
// fails when the body ends without it — at the end of its Content-Length, at the last chunk,
// or when the peer closes for a body framed by the close. `read_body` true without
// `expect_body` reads the whole body as framed, so that broken framing fails too. The
// connection is then closed; unread response bytes make the kernel send the server a reset.
//
// Every byte of the response (interim 1xx heads, the head, the body as framed on the wire)
// counts against `max_response`; going over it is a bad_response, unless the verdict was
// already certain. A malformed response is a bad_response, a status outside the expected
// ranges a bad_status (detail "HTTP 503"), a body without the expected text a bad_body, a peer
// that closes before sending a byte a reset. See http1::response_parser for the
// strict parsing rules (CRLF only, no obs-fold, one Content-Length, chunked only, 1xx skipped).
//
// Options are checked by validate(), which refuses anything that could inject a header or
// split the request. A probe built with invalid options is inert: every probe() returns
// probe_status::error with validate()'s message, at once and without connecting.
// Thread safety: thread-safe (probe() is const and keeps nothing between calls).
// Complexity: one connection per probe; blocks the calling thread up to the deadline; parsing
// is linear in the response bytes, at most `max_response`.
class http_probe {
 public:
  // An extra request header.
  struct header_field {
    std::string name{};   // a token (RFC 9110 §5.6.2); not one the probe controls (see validate)
    std::string value{};  // no CR, LF or other controls but HTAB; no leading/trailing whitespace
  };

  // Status codes first..last, both included.
  struct status_range {
    int first{};
    int last{};
  };

  struct options {
    std::string method = "GET";  // a token; HEAD works too (its responses have no body)
    std::string path = "/";      // origin-form: "/" then RFC 3986 path and query characters
    std::string host{};          // the Host header; empty: the target's text, "10.0.0.7:8080"
    std::vector<header_field> headers{};  // sent after Host and User-Agent, in this order
    // Healthy statuses. The default is HAProxy httpchk's: any 2xx or 3xx.
    std::vector<status_range> expect_status{status_range{200, 399}};
    std::string expect_body{};             // must appear in the body; empty: the status decides
    std::size_t max_response = 16 * 1024;  // bytes of response read at most, head and body
    bool read_body = false;  // without expect_body: read the body to its end before passing
  };

  http_probe() : http_probe(options{}) {}
  explicit http_probe(options o) : o_(std::move(o)), valid_(validate(o_)) {
    if (!valid_) return;
    head_request_ = o_.method == "HEAD";
    request_line_ = o_.method + ' ' + o_.path + " HTTP/1.1\r\nHost: ";
    bool user_agent = false;
    for (const auto& h : o_.headers) {
      user_agent = user_agent || http1::iequals(h.name, "User-Agent");
      request_rest_ += h.name + ": " + h.value + "\r\n";
    }
    if (!user_agent) {
      request_rest_.insert(0, "User-Agent: lbkit-health/" + std::to_string(LBKIT_VERSION_MAJOR) +
                                  '.' + std::to_string(LBKIT_VERSION_MINOR) + '.' +
                                  std::to_string(LBKIT_VERSION_PATCH) + "\r\n");
    }
    request_rest_.insert(0, "\r\n");  // ends the Host line
    request_rest_ += "Connection: close\r\n\r\n";
  }

  // Checks options: `method` a token other than CONNECT; `path` origin-form ("/", then RFC 3986
  // pchar, "/" and "?", with well-formed %XX; no fragment, space or control); `host` empty or
  // uri-host [":" port] (a reg-name, IPv4 or bracketed IPv6 literal); header names tokens and
  // none of Host, Connection, Keep-Alive, TE, Upgrade, Content-Length, Transfer-Encoding (the
  // probe sets the first two; the others would change how the exchange is framed); header
  // values without controls but HTAB and without leading or trailing whitespace;
  // `expect_status` non-empty, each range within 200..599 and first <= last; `max_response`
  // non-zero and not below `expect_body`'s size; no `expect_body` with HEAD.
  static result<void> validate(const options& o) {
    using namespace http1;
    auto invalid = [](std::string why) { return make_error(errc::invalid_argument, why); };
    if (!is_token(o.method)) return invalid("method " + quote(o.method) + " is not a token");
    if (o.method == "CONNECT") return invalid("method CONNECT cannot be a health check");
    if (auto p = check_path(o.path); !p) return p;
    if (!o.host.empty()) {
      if (auto h = check_host(o.host); !h) return h;
    }
    for (const auto& h : o.headers) {
      if (!is_token(h.name)) return invalid("header name " + quote(h.name) + " is not a token");
      for (std::string_view reserved : {"Host", "Connection", "Keep-Alive", "TE", "Upgrade",
                                        "Content-Length", "Transfer-Encoding"}) {
        if (iequals(h.name, reserved)) {
          return invalid("header " + quote(h.name) + " is set by the probe or changes framing" +
                         (iequals(h.name, "Host") ? "; use options.host" : ""));
        }
      }
      for (char c : h.value) {
        if (!is_field_char(c)) {
          return invalid("header " + quote(h.name) + " has a control character in its value " +
                         quote(h.value));
        }
      }
      if (trim_ows(h.value).size() != h.value.size()) {
        return invalid("header " + quote(h.name) + " value " + quote(h.value) +
                       " has leading or trailing whitespace");
      }
    }
    if (o.expect_status.empty()) return invalid("expect_status is empty: nothing could pass");
    for (const auto& r : o.expect_status) {
      if (r.first < 200 || r.last > 599 || r.first > r.last) {
        return invalid("expect_status range " + std::to_string(r.first) + ".." +
                       std::to_string(r.last) +
                       " is not within 200..599 with first <= last (1xx answers are interim)");
      }
    }
    if (o.max_response == 0) return invalid("max_response is 0");
    if (o.expect_body.size() > o.max_response) {
      return invalid("expect_body is longer than max_response, so it could never be found");
    }
    if (!o.expect_body.empty() && o.method == "HEAD") {
      return invalid("expect_body with method HEAD: a HEAD response has no body");
    }
    return {};
  }

  probe_result probe(const endpoint& target, probe_clock::time_point deadline) const {
    const auto start = probe_clock::now();
    auto done = [&](probe_status s, std::string detail) {
      return probe_result{s, std::move(detail), probe_clock::now() - start};
    };
    if (!valid_) {
      return done(probe_status::error, "invalid http_probe options: " + valid_.error().message);
    }
    // connect() on loopback may finish at once; a probe that starts late must still time out.
    if (start >= deadline) return done(probe_status::timeout, "deadline passed before the start");

    detail::fd conn;
    if (auto s = detail::connect_tcp(target, deadline, conn); !s.ok()) {
      return done(s.status, std::move(s.detail));
    }
    const std::string request =
        request_line_ + (o_.host.empty() ? target.to_string() : o_.host) + request_rest_;
    if (auto s = detail::send_all(conn.get(), request, deadline); !s.ok()) {
      return done(s.status, std::move(s.detail));
    }

    http1::response_parser response(head_request_);
    const bool need_body = !o_.expect_body.empty() || o_.read_body;
    std::string in;
    std::size_t searched = 0;  // no match of expect_body starts before this body offset
    bool closed = false;
    bool status_checked = false;
    auto status_text = [&] { return "HTTP " + std::to_string(response.status()); };
    for (;;) {
      if (closed && in.empty()) {
        return done(probe_status::reset, "closed by the peer before answering");
      }
      const parse_status verdict = response.parse(in, closed);
      if (verdict == parse_status::invalid) {
        return done(probe_status::bad_response, response.error());
      }
      if (response.has_head() && !status_checked) {
        status_checked = true;
        if (!status_expected(response.status())) {
          return done(probe_status::bad_status, status_text());
        }
        if (!need_body) return done(probe_status::healthy, status_text());
      }
      if (!o_.expect_body.empty()) {
        const auto body = response.body();
        if (body.find(o_.expect_body, searched) != std::string_view::npos) {
          return done(probe_status::healthy, status_text() + ", expected body text found");
        }
        if (body.size() >= o_.expect_body.size())
          searched = body.size() - o_.expect_body.size() + 1;
      }
      if (verdict == parse_status::complete) {
        if (o_.expect_body.empty()) return done(probe_status::healthy, status_text());
        return done(probe_status::bad_body, status_text() + ", but the body (" +
                                                std::to_string(response.body().size()) +
                                                " bytes) lacks " + quote(o_.expect_body));
      }
      std::size_t got = 0;
      if (auto s = detail::recv_some(conn.get(), in, o_.max_response, deadline, got); !s.ok()) {
        const char* where = response.in_head() ? "in the response head" : "in the response body";
        if (s.status == probe_status::bad_response) {
          return done(s.status, "response longer than max_response (" +
                                    std::to_string(o_.max_response) + " bytes), " + where);
        }
        return done(s.status,
                    s.detail + ", " + where + " after " + std::to_string(in.size()) + " bytes");
      }
      closed = got == 0;
    }
  }

  const options& config() const noexcept { return o_; }

 private:
  bool status_expected(int status) const noexcept {
    return std::any_of(
        o_.expect_status.begin(), o_.expect_status.end(),
        [&](const status_range& r) { return r.first <= status && status <= r.last; });
  }

  // RFC 3986 unreserved / sub-delims, the characters of a reg-name besides %XX.
  static constexpr bool is_uri_plain(char c) noexcept {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos;
  }

  // Checks that every '%' in s starts a %XX escape; returns the offset of a bad one, or npos.
  static std::size_t bad_percent(std::string_view s) noexcept {
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '%') continue;
      if (i + 2 >= s.size() || http1::hex_digit(s[i + 1]) < 0 || http1::hex_digit(s[i + 2]) < 0) {
        return i;
      }
      i += 2;
    }
    return std::string_view::npos;
  }

  // origin-form = absolute-path [ "?" query ] (RFC 9112 §3.2.1).
  static result<void> check_path(std::string_view path) {
    if (path.empty() || path.front() != '/') {
      return make_error(errc::invalid_argument, "path " + quote(path) + " does not start with '/'");
    }
    for (char c : path) {
      if (!is_uri_plain(c) && c != '%' && c != ':' && c != '@' && c != '/' && c != '?') {
        return make_error(errc::invalid_argument,
                          "path " + quote(path) + " has " + quote(std::string_view(&c, 1)) +
                              ", not allowed in a request target (percent-encode it; a '#' "
                              "fragment is never sent)");
      }
    }
    if (bad_percent(path) != std::string_view::npos) {
      return make_error(errc::invalid_argument,
                        "path " + quote(path) + " has a '%' not followed by two hex digits");
    }
    return {};
  }

  // Host = uri-host [ ":" port ] (RFC 9110 §7.2).
  static result<void> check_host(std::string_view host) {
    auto bad = [&](std::string_view why) {
      return make_error(errc::invalid_argument, "host " + quote(host) + " " + std::string(why));
    };
    std::string_view port;
    if (host.front() == '[') {
      const auto close = host.find(']');
      if (close == std::string_view::npos) return bad("has no closing ']'");
      const auto literal = host.substr(1, close - 1);
      if (literal.empty() ||
          literal.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) {
        return bad("is not a bracketed IPv6 literal");
      }
      port = host.substr(close + 1);
    } else {
      const auto colon = host.find(':');
      const auto name = host.substr(0, colon);
      if (name.empty()) return bad("has an empty host name");
      for (char c : name) {
        if (!is_uri_plain(c) && c != '%') return bad("has a character not allowed in a host name");
      }
      if (bad_percent(name) != std::string_view::npos) {
        return bad("has a '%' not followed by two hex digits");
      }
      port = colon == std::string_view::npos ? std::string_view() : host.substr(colon);
    }
    if (!port.empty() && (port.front() != ':' || !parse_decimal(port.substr(1), 65535))) {
      return bad("has a port that is not ':' and a decimal number 0..65535");
    }
    return {};
  }

  options o_;
  result<void> valid_;
  bool head_request_ = false;
  std::string request_line_;  // "GET /path HTTP/1.1\r\nHost: " — the host goes next
  std::string request_rest_;  // "\r\nUser-Agent: ...\r\n" ... "Connection: close\r\n\r\n"
};

static_assert(health_probe<http_probe>);

}  // namespace lbkit
