// SPDX-License-Identifier: MIT
// http_probe: an L7 health check — one HTTP/1.1 request per probe on a fresh connection, and a
// verdict on the answer's status code and, optionally, its body (HAProxy's `option httpchk`
// with `http-check expect`, Envoy's HTTP health checker).
//
// The request is written and the response parsed here, without a dependency: strictly by
// RFC 9112 (message syntax and framing) and RFC 9110 (semantics), within a byte budget, on the
// deadline-driven socket of detail/socket.hpp, so no peer can stretch a probe past its
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

#include "lbkit/health/detail/socket.hpp"
#include "lbkit/text.hpp"
#include "lbkit/endpoint.hpp"
#include "lbkit/health/probe.hpp"
#include "lbkit/result.hpp"
#include "lbkit/version.hpp"

namespace lbkit {

namespace detail::http1 {

// tchar of RFC 9110 §5.6.2: the characters of a method, a field name, a chunk extension name.
constexpr bool is_tchar(char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

constexpr bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// A byte allowed inside a field value or reason phrase: HTAB, SP, VCHAR or obs-text
// (RFC 9110 §5.5). Everything else — CR, LF, NUL, the other controls, DEL — is refused.
constexpr bool is_field_char(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

constexpr std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

constexpr char ascii_lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// Calls `f` on each non-empty, OWS-trimmed element of a comma-separated list (RFC 9110
// §5.6.1: empty elements are allowed and ignored). Returns how many elements there were, or
// -1 as soon as `f` returns false.
template <class F>
int for_each_element(std::string_view list, F&& f) {
  int n = 0;
  for (;;) {
    const auto comma = list.find(',');
    const auto element = trim_ows(list.substr(0, comma));
    if (!element.empty()) {
      if (!f(element)) return -1;
      ++n;
    }
    if (comma == std::string_view::npos) return n;
    list.remove_prefix(comma + 1);
  }
}

// An incremental parser of one HTTP/1.x response (RFC 9112), fed the bytes received so far.
//
// Strict where leniency has been a smuggling or desync vector: lines end in CRLF only (a bare
// LF or CR is an error, although §2.2 allows accepting a bare LF); the status line is exactly
// "HTTP/1.<digit> SP 3DIGIT SP reason" (the SP before an empty reason included); no whitespace
// before a field's colon (§5.1); obs-fold is an error (§5.2); field values hold no controls;
// a Content-Length is one number (identical repeats are accepted, §6.3 item 5); a
// Transfer-Encoding other than a lone "chunked", or beside a Content-Length, or in an HTTP/1.0
// response, is an error. Interim 1xx responses are skipped (RFC 9110 §15.2), except 101, which
// the probe never asks for. Body framing follows §6.3: none after HEAD, 1xx, 204 and 304;
// chunked (§7.1: extensions and trailer fields parsed and dropped); Content-Length; otherwise
// the body runs until the peer closes.
// Thread safety: not thread-safe (one parser per response).
class response_parser {
 public:
  enum class event {
    more,  // the input ends before the next verdict: feed more bytes
    head,  // the final head is complete (status() is set); reported once; call parse again
    done,  // the message is complete
    bad,   // the response is malformed; error() says how
  };

  explicit response_parser(bool head_request) noexcept : head_request_(head_request) {}

  // Parses `in` from where the last call stopped. `in` holds every byte received so far: the
  // same bytes as before, perhaps with more at the end. `closed`: the peer closed after them.
  // Complexity: linear in the bytes not yet parsed (a line is scanned once, however it drips).
  event parse(std::string_view in, bool closed) {
    for (;;) {
      switch (phase_) {
        case phase::status_line:
        case phase::fields:
        case phase::trailers: {
          std::string_view line;
          switch (next_line(in, line)) {
            case line_result::bad:
              return event::bad;
            case line_result::partial:
              if (phase_ == phase::status_line && !status_prefix_ok(in.substr(pos_))) {
                return fail("the answer is not an HTTP/1.x status line: " +
                            quote(in.substr(pos_), 40));
              }
              if (closed) {
                return fail(phase_ == phase::trailers
                                ? "closed in the chunked trailer section"
                                : "closed in the middle of the response head");
              }
              return event::more;
            case line_result::complete:
              break;
          }
          if (phase_ == phase::status_line) {
            if (!status_line(line)) return event::bad;
            phase_ = phase::fields;
          } else if (!line.empty()) {
            if (!field(line, phase_ == phase::trailers)) return event::bad;
          } else if (phase_ == phase::trailers) {
            phase_ = phase::done;
            return event::done;
          } else if (!end_of_head()) {
            return event::bad;
          } else if (phase_ != phase::status_line) {  // not an interim 1xx, which is skipped
            return event::head;
          }
          continue;
        }
        case phase::length_body:
        case phase::chunk_data: {
          const auto take =
              static_cast<std::size_t>(std::min<std::uint64_t>(in.size() - pos_, remaining_));
          body_.append(in.substr(pos_, take));
          pos_ += take;
          remaining_ -= take;
          if (remaining_ == 0) {
            if (phase_ == phase::length_body) {
              phase_ = phase::done;
              return event::done;
            }
            phase_ = phase::chunk_end;
            continue;
          }
          if (closed) {
            return fail(phase_ == phase::chunk_data
                            ? "closed in the middle of a chunk"
                            : "closed after " + std::to_string(body_.size()) + " of " +
                                  std::to_string(*content_length_) + " body bytes");
          }
          return event::more;
        }
        case phase::chunk_end: {
          const auto rest = in.substr(pos_, 2);
          if (rest != std::string_view("\r\n").substr(0, rest.size())) {
            return fail("chunk data is not followed by CRLF");
          }
          if (rest.size() < 2)
            return closed ? fail("closed in the middle of a chunk") : event::more;
          pos_ += 2;
          phase_ = phase::chunk_size;
          continue;
        }
        case phase::chunk_size: {
          std::string_view line;
          switch (next_line(in, line)) {
            case line_result::bad:
              return event::bad;
            case line_result::partial:
              return closed ? fail("closed before the last chunk") : event::more;
            case line_result::complete:
              break;
          }
          if (!chunk_size_line(line)) return event::bad;
          phase_ = remaining_ == 0 ? phase::trailers : phase::chunk_data;
          continue;
        }
        case phase::close_body:
          body_.append(in.substr(pos_));
          pos_ = in.size();
          if (!closed) return event::more;
          phase_ = phase::done;
          return event::done;
        case phase::done:
          return event::done;
        case phase::failed:
          return event::bad;
      }
    }
  }

  // The final status code, once parse() has reported event::head.
  int status() const noexcept { return status_; }
  // The body received so far, transfer coding removed.
  std::string_view body() const noexcept { return body_; }
  // Still reading a head (an interim one, or the final one)?
  bool in_head() const noexcept { return phase_ == phase::status_line || phase_ == phase::fields; }
  const std::string& error() const noexcept { return error_; }

 private:
  enum class phase {
    status_line,
    fields,
    length_body,
    close_body,
    chunk_size,
    chunk_data,
    chunk_end,
    trailers,
    done,
    failed,
  };
  enum class line_result { complete, partial, bad };

  event fail(std::string why) {
    phase_ = phase::failed;
    error_ = std::move(why);
    return event::bad;
  }

  // The next CRLF-terminated line from pos_, without its CRLF.
  line_result next_line(std::string_view in, std::string_view& line) {
    const auto lf = in.find('\n', std::max(pos_, scanned_));
    if (lf == std::string_view::npos) {
      scanned_ = in.size();
      return line_result::partial;
    }
    if (lf == pos_ || in[lf - 1] != '\r') {
      fail("a line ends in a bare LF, not CRLF");
      return line_result::bad;
    }
    line = in.substr(pos_, lf - 1 - pos_);
    pos_ = lf + 1;
    return line_result::complete;
  }

  // Could `s` (a status line still incomplete) begin "HTTP/1.d ddd "? Lets garbage fail at
  // once instead of at the deadline when the peer keeps the connection open.
  static bool status_prefix_ok(std::string_view s) noexcept {
    constexpr std::string_view shape = "HTTP/1.d ddd ";
    for (std::size_t i = 0; i < s.size() && i < shape.size(); ++i) {
      if (shape[i] == 'd' ? !is_digit(s[i]) : s[i] != shape[i]) return false;
    }
    return true;
  }

  bool status_line(std::string_view l) {
    if (l.size() < 13 || !status_prefix_ok(l.substr(0, 13))) {
      fail("status line " + quote(l) + " is not 'HTTP/1.x NNN reason'");
      return false;
    }
    minor_version_ = l[7] - '0';
    status_ = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    if (status_ < 100 || status_ > 599) {
      fail("status code " + std::to_string(status_) + " is outside 100..599");
      return false;
    }
    for (char c : l.substr(13)) {
      if (!is_field_char(c)) {
        fail("status line " + quote(l) + " has a control character in its reason phrase");
        return false;
      }
    }
    content_length_.reset();
    transfer_encoding_.reset();
    return true;
  }

  // One field line, of the head or (trailer = true) of the chunked trailer section.
  bool field(std::string_view l, bool trailer) {
    if (is_ows(l.front())) {
      fail("a header line begins with whitespace (obs-fold, RFC 9112 §5.2): " + quote(l));
      return false;
    }
    const auto colon = l.find(':');
    const auto name = l.substr(0, colon);
    if (colon == std::string_view::npos || !is_token(name)) {
      fail("header line " + quote(l) + " is not 'name: value' with a token name");
      return false;
    }
    const auto value = trim_ows(l.substr(colon + 1));
    for (char c : value) {
      if (!is_field_char(c)) {
        fail("header " + quote(name) + " has a control character in its value");
        return false;
      }
    }
    if (trailer) return true;  // a trailer field cannot change the framing (RFC 9110 §6.5.1)
    if (iequals(name, "Content-Length")) return content_length(value);
    if (iequals(name, "Transfer-Encoding")) {
      transfer_encoding_ =
          transfer_encoding_ ? *transfer_encoding_ + ", " + std::string(value) : std::string(value);
    }
    return true;
  }

  bool content_length(std::string_view value) {
    bool conflict = false;
    const int n = for_each_element(value, [&](std::string_view e) {
      const auto v = parse_decimal(e, std::numeric_limits<std::uint64_t>::max());
      if (!v) return false;
      if (content_length_ && *content_length_ != *v) {
        conflict = true;
        return false;
      }
      content_length_ = *v;
      return true;
    });
    if (n <= 0) {
      fail(conflict ? "conflicting Content-Length values"
                    : "Content-Length " + quote(value) + " is not a decimal number");
      return false;
    }
    return true;
  }

  // Settles the framing once the head's empty line arrived (RFC 9112 §6.3).
  bool end_of_head() {
    if (status_ < 200) {
      if (status_ == 101) {
        fail("101 Switching Protocols, but the probe asked for no upgrade");
        return false;
      }
      phase_ = phase::status_line;  // interim: no body; the final response follows
      return true;
    }
    // §6.3 item 1: these end at the empty line whatever their fields say.
    if (head_request_ || status_ == 204 || status_ == 304) {
      phase_ = phase::done;
      return true;
    }
    if (transfer_encoding_) {
      if (minor_version_ == 0) {
        fail("Transfer-Encoding in an HTTP/1.0 response (RFC 9112 §6.1)");
        return false;
      }
      if (content_length_) {
        fail("both Transfer-Encoding and Content-Length (RFC 9112 §6.3: a smuggling sign)");
        return false;
      }
      const int n = for_each_element(*transfer_encoding_,
                                     [](std::string_view e) { return iequals(e, "chunked"); });
      if (n != 1) {
        fail("Transfer-Encoding " + quote(*transfer_encoding_) +
             " is not a lone 'chunked' (the probe accepts no other coding)");
        return false;
      }
      phase_ = phase::chunk_size;
      return true;
    }
    if (content_length_) {
      remaining_ = *content_length_;
      phase_ = remaining_ == 0 ? phase::done : phase::length_body;
      return true;
    }
    phase_ = phase::close_body;
    return true;
  }

  // chunk-size [ chunk-ext ], RFC 9112 §7.1.1:
  //   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
  bool chunk_size_line(std::string_view l) {
    std::size_t i = 0;
    std::uint64_t size = 0;
    for (; i < l.size() && hex_digit(l[i]) >= 0; ++i) {
      if (size > (std::numeric_limits<std::uint64_t>::max() >> 4)) {
        fail("chunk size " + quote(l) + " is too large");
        return false;
      }
      size = size << 4 | static_cast<std::uint64_t>(hex_digit(l[i]));
    }
    auto bad = [&] {
      fail("chunk size line " + quote(l) + " is not 'HEX *(;name[=value])'");
      return false;
    };
    if (i == 0) return bad();
    auto skip_ows = [&] {
      while (i < l.size() && is_ows(l[i])) ++i;
    };
    auto token = [&] {
      const auto from = i;
      while (i < l.size() && is_tchar(l[i])) ++i;
      return i > from;
    };
    while (i < l.size()) {
      skip_ows();
      if (i == l.size() || l[i] != ';') return bad();
      ++i;
      skip_ows();
      if (!token()) return bad();
      const auto after_name = i;
      skip_ows();
      if (i == l.size() || l[i] != '=') {
        i = after_name;
        continue;
      }
      ++i;
      skip_ows();
      if (i < l.size() && l[i] == '"') {  // quoted-string, RFC 9110 §5.6.4
        for (++i;; ++i) {
          if (i == l.size()) return bad();
          if (l[i] == '"') break;
          if (l[i] == '\\' && ++i == l.size()) return bad();
          if (!is_field_char(l[i])) return bad();
        }
        ++i;
      } else if (!token()) {
        return bad();
      }
    }
    remaining_ = size;
    return true;
  }

  bool head_request_;
  phase phase_ = phase::status_line;
  std::size_t pos_ = 0;      // the first byte not yet parsed
  std::size_t scanned_ = 0;  // no LF before this offset (from pos_): where a line search resumes
  int status_ = 0;
  int minor_version_ = 1;
  std::optional<std::uint64_t> content_length_;
  std::optional<std::string> transfer_encoding_;  // every Transfer-Encoding value, joined
  std::uint64_t remaining_ = 0;  // of the Content-Length body or of the current chunk
  std::string body_;
  std::string error_;
};

}  // namespace detail::http1

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
// that closes before sending a byte a reset. See detail::http1::response_parser for the
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
      user_agent = user_agent || detail::http1::iequals(h.name, "User-Agent");
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
    using namespace detail::http1;
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

    using parser = detail::http1::response_parser;
    parser response(head_request_);
    const bool need_body = !o_.expect_body.empty() || o_.read_body;
    std::string in;
    std::size_t searched = 0;  // no match of expect_body starts before this body offset
    bool closed = false;
    auto status_text = [&] { return "HTTP " + std::to_string(response.status()); };
    for (;;) {
      if (closed && in.empty()) {
        return done(probe_status::reset, "closed by the peer before answering");
      }
      const auto ev = response.parse(in, closed);
      if (ev == parser::event::bad) return done(probe_status::bad_response, response.error());
      if (ev == parser::event::head) {
        if (!status_expected(response.status())) {
          return done(probe_status::bad_status, status_text());
        }
        if (!need_body) return done(probe_status::healthy, status_text());
        continue;
      }
      if (!o_.expect_body.empty()) {
        const auto body = response.body();
        if (body.find(o_.expect_body, searched) != std::string_view::npos) {
          return done(probe_status::healthy, status_text() + ", expected body text found");
        }
        if (body.size() >= o_.expect_body.size())
          searched = body.size() - o_.expect_body.size() + 1;
      }
      if (ev == parser::event::done) {
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
      if (i + 2 >= s.size() || detail::hex_digit(s[i + 1]) < 0 || detail::hex_digit(s[i + 2]) < 0) {
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
      return make_error(errc::invalid_argument,
                        "host " + quote(host) + " " + std::string(why));
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
