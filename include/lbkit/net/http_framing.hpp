// SPDX-License-Identifier: MIT
// HTTP/1.1 message framing and request targets, I/O free: the checks RFC 9112 asks of a server,
// a proxy or a client on a message head that a parser has already split into its start line
// and field lines. An L7 load balancer runs check_request() on every client request before it
// routes it, and check_response() on every backend answer before it passes it on; the verdict
// says how the body is delimited (RFC 9112 §6.3) and, for a request, which authority it is for
// and what target to forward (§3.2, §3.3), or why the message must be refused and with which
// status (400, 501 or 505 to a client; 502 in place of a backend's answer).
//
// Where it sits: after the parser, before routing. Parsers differ in what they let through —
// Boost.Beast 1.74, for one, frames a request with "Transfer-Encoding: gzip" as having no body,
// reads "chunked, chunked" as no body too, takes any number of Host lines, and merges chunked
// trailer fields into the header — and every such difference between two hops is a request
// smuggling vector (RFC 9112 §11.2). These checks are strict where the RFC leaves a choice:
// a request with both Transfer-Encoding and Content-Length is refused rather than re-framed
// (§6.1), a transfer coding other than chunked is not decoded (501), an obs-fold or a
// whitespace before a colon that a lenient parser left in is refused (§5.1, §5.2).
//
// What they cannot see, and a front end must do itself: the raw bytes (bare CR and LF, the
// line endings, whitespace between the start line and the first field: §2.2), the length of
// the request line (414, §3), the chunked body itself (chunk sizes, extensions, trailers:
// §7.1), and interim 1xx answers (RFC 9110 §15.2). docs/net.md lists the clauses and which
// side does what.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "lbkit/endpoint.hpp"
#include "lbkit/net/http1.hpp"
#include "lbkit/net/route_match.hpp"
#include "lbkit/net/sticky_session.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// One field line of a parsed message: its name and its value without the surrounding
// whitespace (RFC 9112 §5.1). The type route_table reads a request's fields from, used here
// for responses too.
using http_field = request_header;

// How the body of a message is delimited (RFC 9112 §6.3).
enum class body_framing : std::uint8_t {
  none,            // no body: a request without Content-Length or Transfer-Encoding (item 7);
                   // an answer to HEAD, a 1xx, 204 or 304 (item 1); a 2xx to CONNECT (item 2)
  content_length,  // exactly http_verdict::content_length bytes (item 6)
  chunked,         // the chunked transfer coding, RFC 9112 §7.1 (item 4)
  until_close,     // a response body that ends when the server closes the connection (items 4,
                   // 8): such a connection cannot carry another message
};

// The form of a request-target (RFC 9112 §3.2).
enum class target_form : std::uint8_t {
  origin,     // "/where?query" (§3.2.1)
  absolute,   // "http://host:port/where?query" (§3.2.2), sent to proxies
  authority,  // "host:port", CONNECT only (§3.2.3)
  asterisk,   // "*", OPTIONS only (§3.2.4)
};

// A request head as a parser gives it: views, valid during the call.
// Thread safety: thread-compatible (a value type).
struct http_request_head {
  std::string_view method{};  // "GET"
  std::string_view target{};  // the request-target as received
  unsigned version = 11;      // major * 10 + minor: 10 for HTTP/1.0, 11 for HTTP/1.1
  std::span<const http_field> fields{};
};

// A response head as a parser gives it, with the method of the request it answers (an answer
// to HEAD has no body whatever its fields say, and a 2xx to CONNECT starts a tunnel).
// Thread safety: thread-compatible (a value type).
struct http_response_head {
  unsigned status = 200;
  unsigned version = 11;  // major * 10 + minor
  std::span<const http_field> fields{};
  std::string_view request_method{};
};

// What a check decided: accepted (status 0) with the framing and, for a request, where it goes;
// or refused with the status to answer and why. After a refusal the connection must be closed:
// what follows on it cannot be framed reliably.
// Thread safety: thread-compatible (a value type).
struct http_verdict {
  unsigned status = 0;        // 0: accepted; else 400, 501 or 505 (requests), 502 (responses)
  std::string_view reason{};  // a static sentence naming the clause; empty when accepted
  body_framing framing = body_framing::none;
  std::uint64_t content_length = 0;  // the body's length when framing is content_length
  // A transfer coding other than chunked applies to the body (responses only: a request with
  // one is refused with 501). Whoever passes such a body on must decode it or forward the
  // coding with it (RFC 9112 §6.1); the framing is chunked or until_close.
  bool transfer_coded = false;
  // Requests only. The target's form; the authority the request is for — the target's own in
  // absolute-form (§3.2.2: a proxy ignores Host then) and authority-form, else the Host field's
  // value, empty for an HTTP/1.0 request without one —, as "host[:port]" without userinfo; and
  // the target to forward in origin-form: the target itself in origin-form, its path and query
  // in absolute-form (empty, or starting with '?', when the URI's path is empty: then the
  // origin-form puts "/" in front, §3.2.1), "" in authority-form, "*" in asterisk-form. Both
  // are views into the head given to the check.
  target_form form = target_form::origin;
  std::string_view authority{};
  std::string_view path{};

  constexpr bool accepted() const noexcept { return status == 0; }
  constexpr explicit operator bool() const noexcept { return accepted(); }
};

// Checks a request head for a server or a proxy (RFC 9112 §§3, 5, 6 and 7.1), in this order:
//   1. the version is HTTP/1.x (else 505, RFC 9110 §15.6.6); the method is a token (§3.1);
//   2. every field name is a token — whitespace before the colon is refused (§5.1) — and no
//      value holds an obs-fold (§5.2) or a CR, LF, NUL or other control (RFC 9110 §5.5);
//   3. the target has one of the four forms, the one its method allows, and the URI grammar
//      (RFC 3986): an "http" or "https" absolute-form with a non-empty host and no userinfo
//      (RFC 9110 §4.2.1, §4.2.4), CONNECT's authority-form with a port (RFC 9110 §9.3.6);
//   4. Host: exactly one in HTTP/1.1, at most one in HTTP/1.0, with a valid value (§3.2: 400
//      otherwise), whatever the target's form;
//   5. framing (§6): Transfer-Encoding is refused in HTTP/1.0 and next to a Content-Length
//      (§6.1), unless it is a valid list whose last coding is chunked, applied once and without
//      parameters (§6.3 item 4, §7: 400); another coding before it gets 501 (§6.1); a
//      Content-Length must be a decimal number, repeated only with the same value (§6.3 item
//      5, no overflow: RFC 9110 §8.6).
// Thread safety: thread-safe (a pure function). Complexity: O(size of the head), no allocation
// (a malformed IPv6 literal in a Host builds an error message internally).
inline http_verdict check_request(const http_request_head& head) noexcept;

// Checks a backend's response head for a proxy or a client (RFC 9112 §§5, 6, 7.1): the version
// and a status in 100..599 (RFC 9110 §15: treated as a server error otherwise), the field
// syntax as for requests, then the framing of §6.3 in its order of precedence. Refusals are
// 502: a proxy that receives an invalid framing closes the connection to the server, discards
// the answer and sends 502 (§6.3 item 5); the same for an obs-fold (§5.2), a Transfer-Encoding
// in HTTP/1.0 (§6.1), next to a Content-Length (§6.3 item 3), with chunked twice or with
// parameters (§6.1, §7). A Transfer-Encoding whose last coding is not chunked is accepted with
// framing until_close (§6.3 item 4), and transfer_coded set.
// Thread safety: thread-safe (a pure function). Complexity: O(size of the head), no allocation.
inline http_verdict check_response(const http_response_head& head) noexcept;

// True when `value` is a valid Host field value, uri-host [":" port] (RFC 9112 §3.2, RFC 3986
// §3.2.2): a bracketed IPv6 address or IPvFuture, or a reg-name (which covers IPv4 addresses)
// of unreserved characters, sub-delims and %-escapes, possibly empty; a port is decimal and at
// most 65535. Thread safety: thread-safe. Complexity: O(size), no allocation on success.
inline bool is_valid_host_field(std::string_view value) noexcept;

// ---------------------------------------------------------------------------------------
// Implementation

namespace detail::framing {

using http1::for_each_element;
using http1::hex_digit;
using http1::iequals;
using http1::is_digit;
using http1::is_token;
using http1::quoted_length;
using http1::trim_ows;

constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// RFC 3986 §2.3 unreserved and §2.2 sub-delims.
constexpr bool is_unreserved(char c) noexcept {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}
constexpr bool is_sub_delim(char c) noexcept {
  return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
}

// Whether s[i] starts a valid %-escape (RFC 3986 §2.1: "%" HEXDIG HEXDIG).
constexpr bool pct_at(std::string_view s, std::size_t i) noexcept {
  return i + 2 < s.size() && s[i] == '%' && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0;
}

// Whether every character of `s` is `allowed` or part of a valid %-escape.
template <class Allowed>
constexpr bool all_uri_chars(std::string_view s, Allowed allowed) noexcept {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (!pct_at(s, i)) return false;
      i += 2;
    } else if (!allowed(s[i])) {
      return false;
    }
  }
  return true;
}

// pchar, "/" and "?" — the characters of a path and a query (RFC 3986 §3.3, §3.4).
constexpr bool is_path_char(char c) noexcept {
  return is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '@' || c == '/' || c == '?';
}

// IP-literal = "[" ( IPv6address / IPvFuture ) "]", given without the brackets (§3.2.2).
inline bool is_ip_literal(std::string_view s) noexcept {
  if (!s.empty() && (s[0] == 'v' || s[0] == 'V')) {  // IPvFuture: "v" 1*HEXDIG "." 1*( ... )
    const auto dot = s.find('.');
    if (dot == std::string_view::npos || dot < 2 || dot + 1 == s.size()) return false;
    for (char c : s.substr(1, dot - 1)) {
      if (hex_digit(c) < 0) return false;
    }
    for (char c : s.substr(dot + 1)) {
      if (!is_unreserved(c) && !is_sub_delim(c) && c != ':') return false;
    }
    return true;
  }
  // The IPv6 grammar as endpoint.hpp reads it (no zone id: RFC 9110 §4.2 has none).
  return s.find_first_not_of("0123456789abcdefABCDEF:.") == std::string_view::npos &&
         parse_v6(s).has_value();
}

// uri-host [":" port]; `host_required`: the host may not be empty (an "http" URI's, RFC 9110
// §4.2.1); `port_required`: the ":" port is there and names a port, 1..65535 (CONNECT's).
inline bool is_authority(std::string_view s, bool host_required, bool port_required) noexcept {
  std::string_view host, rest;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos || !is_ip_literal(s.substr(1, close - 1))) return false;
    host = s.substr(0, close + 1);
    rest = s.substr(close + 1);
  } else {
    const auto colon = s.find(':');
    host = s.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : s.substr(colon);
    if (!all_uri_chars(host, [](char c) { return is_unreserved(c) || is_sub_delim(c); })) {
      return false;
    }
  }
  if (host_required && host.empty()) return false;
  if (rest.empty()) return !port_required;
  if (rest.front() != ':') return false;
  const std::string_view port = rest.substr(1);
  if (port.empty()) return !port_required;  // "host:" is valid grammar (RFC 3986 §3.2.3)
  const auto n = parse_decimal(port, 65535);
  return n && (!port_required || *n > 0);
}

// What is wrong with a field line, or nullptr.
constexpr const char* field_error(const http_field& f) noexcept {
  if (!is_token(f.name)) {
    const bool space = !f.name.empty() && (f.name.back() == ' ' || f.name.back() == '\t');
    return space ? "RFC 9112 §5.1: whitespace between a field name and its colon"
                 : "RFC 9112 §5.1: a field name that is not a token (RFC 9110 §5.6.2)";
  }
  for (std::size_t i = 0; i < f.value.size(); ++i) {
    const auto c = static_cast<unsigned char>(f.value[i]);
    if (c == '\r' || c == '\n') {
      // obs-fold = OWS CRLF RWS, or a bare LF before the whitespace.
      const std::size_t ws =
          i + (c == '\r' && i + 1 < f.value.size() && f.value[i + 1] == '\n' ? 2 : 1);
      const bool fold = ws < f.value.size() && (f.value[ws] == ' ' || f.value[ws] == '\t');
      return fold ? "RFC 9112 §5.2: obsolete line folding (obs-fold) in a field value"
                  : "RFC 9110 §5.5: a CR or LF in a field value";
    }
    if (c == 0) return "RFC 9110 §5.5: a NUL in a field value";
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      return "RFC 9110 §5.5: a control character in a field value";
    }
  }
  return nullptr;
}

// One transfer-coding (RFC 9112 §7): token *( OWS ";" OWS token "=" ( token / quoted-string )).
struct coding {
  bool valid = false;
  bool has_parameters = false;
  std::string_view name{};
};

constexpr coding parse_coding(std::string_view e) noexcept {
  coding c;
  const auto semi = e.find(';');
  c.name = trim_ows(e.substr(0, semi));
  if (!is_token(c.name)) return c;
  if (semi == std::string_view::npos) {
    c.valid = true;
    return c;
  }
  c.has_parameters = true;
  std::string_view rest = e.substr(semi);
  while (!rest.empty()) {  // at a ';'
    rest = trim_ows(rest.substr(1));
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos || !is_token(trim_ows(rest.substr(0, eq)))) return c;
    rest = trim_ows(rest.substr(eq + 1));
    std::size_t n = quoted_length(rest);
    if (n == 0) {
      while (n < rest.size() && rest[n] != ';' && rest[n] != ' ' && rest[n] != '\t') ++n;
      if (!is_token(rest.substr(0, n))) return c;
    }
    rest = trim_ows(rest.substr(n));
    if (!rest.empty() && rest.front() != ';') return c;
  }
  c.valid = true;
  return c;
}

// What the fields of a head say about its Host and its framing, gathered over all their lines.
struct fields_summary {
  const char* error = nullptr;  // why the first malformed field line is malformed
  std::size_t hosts = 0;
  std::string_view host{};  // the last Host line's value
  bool transfer_encoding = false;
  bool te_invalid = false;          // an element that is not a transfer-coding
  std::size_t te_codings = 0;       // how many codings are listed, over all lines
  std::size_t chunked = 0;          // how often chunked is listed
  bool chunked_last = false;        // the last coding listed is chunked
  bool chunked_parameters = false;  // chunked with parameters
  bool other_codings = false;       // a coding other than chunked
  bool content_length = false;
  bool cl_invalid = false;   // an empty value, or an element that is not 1*DIGIT or overflows
  bool cl_conflict = false;  // elements with different values
  bool cl_seen = false;      // `length` holds the first element's value
  std::uint64_t length = 0;
};

inline fields_summary summarize(std::span<const http_field> fields) noexcept {
  fields_summary out;
  for (const http_field& f : fields) {
    if (const char* e = field_error(f)) {
      out.error = e;
      return out;
    }
    if (iequals(f.name, "Host")) {
      ++out.hosts;
      out.host = f.value;
    } else if (iequals(f.name, "Transfer-Encoding")) {
      out.transfer_encoding = true;
      for_each_element(f.value, [&](std::string_view e) {
        const coding c = parse_coding(e);
        if (!c.valid) {
          out.te_invalid = true;
          return false;
        }
        const bool chunked = iequals(c.name, "chunked");
        ++out.te_codings;
        out.chunked += chunked ? 1 : 0;
        out.chunked_last = chunked;
        out.chunked_parameters |= chunked && c.has_parameters;
        out.other_codings |= !chunked;
        return true;
      });
    } else if (iequals(f.name, "Content-Length")) {
      out.content_length = true;
      bool any = false;
      for_each_element(f.value, [&](std::string_view e) {
        any = true;
        const auto v = parse_decimal(e, std::numeric_limits<std::uint64_t>::max());
        if (!v) {
          out.cl_invalid = true;
          return false;
        }
        if (out.cl_seen && *v != out.length) out.cl_conflict = true;
        out.length = *v;
        out.cl_seen = true;
        return true;
      });
      out.cl_invalid |= !any;  // Content-Length = 1*DIGIT: an empty value is not one
    }
  }
  return out;
}

// The parts of a request-target, or why it is none of the four forms (RFC 9112 §3.2).
struct target_parts {
  const char* error = nullptr;
  target_form form = target_form::origin;
  std::string_view authority{};
  std::string_view path{};
};

constexpr bool is_scheme(std::string_view s) noexcept {  // RFC 3986 §3.1
  if (s.empty() || !is_alpha(s.front())) return false;
  for (char c : s) {
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') return false;
  }
  return true;
}

inline target_parts parse_target(std::string_view method, std::string_view t) noexcept {
  target_parts out;
  constexpr auto path_chars = [](std::string_view p) { return all_uri_chars(p, is_path_char); };
  if (t.empty()) {
    out.error = "RFC 9112 §3.2: an empty request-target";
    return out;
  }
  if (method == "CONNECT") {
    if (!is_authority(t, true, true)) {
      out.error = "RFC 9112 §3.2.3: a CONNECT target that is not host:port (RFC 9110 §9.3.6)";
      return out;
    }
    out.form = target_form::authority;
    out.authority = t;
    return out;
  }
  if (t == "*") {
    if (method != "OPTIONS")
      out.error = "RFC 9112 §3.2.4: the asterisk-form with a method other than OPTIONS";
    out.form = target_form::asterisk;
    out.path = t;
    return out;
  }
  if (t.front() == '/') {
    if (!path_chars(t)) {
      out.error =
          "RFC 9112 §3.2.1: a request-target with a character outside the URI grammar (RFC 3986 "
          "§3.3)";
    }
    out.path = t;
    return out;
  }
  const auto colon = t.find(':');
  if (colon == std::string_view::npos || !is_scheme(t.substr(0, colon))) {
    out.error = "RFC 9112 §3.2: a request-target in none of the four forms";
    return out;
  }
  if (!iequals(t.substr(0, colon), "http") && !iequals(t.substr(0, colon), "https")) {
    out.error = "RFC 9112 §3.2.2: an absolute-form target whose scheme is not http or https";
    return out;
  }
  std::string_view rest = t.substr(colon + 1);
  if (!rest.starts_with("//")) {
    out.error = "RFC 9110 §4.2.1: an http URI without an authority";
    return out;
  }
  rest.remove_prefix(2);
  const auto end = rest.find_first_of("/?#");
  out.form = target_form::absolute;
  out.authority = rest.substr(0, end);
  out.path = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (out.authority.find('@') != std::string_view::npos) {
    out.error = "RFC 9110 §4.2.4: userinfo in the target URI";
  } else if (!is_authority(out.authority, true, false)) {
    out.error = "RFC 9110 §4.2.1: an http URI with an empty or invalid host";
  } else if (!path_chars(out.path)) {
    out.error =
        "RFC 9112 §3.2.2: a request-target with a character outside the URI grammar (RFC 3986 "
        "§3.3)";
  } else if (out.path.empty() && method == "OPTIONS") {
    out.path = "*";  // §3.2.4: the last proxy sends OPTIONS for an empty path as "*"
  }
  return out;
}

constexpr http_verdict refuse(unsigned status, std::string_view reason) noexcept {
  http_verdict v;
  v.status = status;
  v.reason = reason;
  return v;
}

// The framing rules common to both directions once Transfer-Encoding is known to be there:
// nullptr when acceptable, else why not.
constexpr const char* transfer_encoding_error(const fields_summary& s, unsigned version) noexcept {
  if (version == 10)
    return "RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message (its framing is faulty)";
  if (s.content_length) {
    return "RFC 9112 §6.1, §6.3: both Transfer-Encoding and Content-Length (a request smuggling or "
           "response splitting sign)";
  }
  if (s.te_invalid || s.te_codings == 0) {
    return "RFC 9112 §6.1: a Transfer-Encoding that is not a list of transfer codings";
  }
  if (s.chunked > 1) return "RFC 9112 §6.1: the chunked coding applied more than once";
  if (s.chunked_parameters) return "RFC 9112 §7: the chunked coding with parameters";
  return nullptr;
}

constexpr const char* content_length_error(const fields_summary& s) noexcept {
  if (s.cl_invalid) return "RFC 9112 §6.3: a Content-Length that is not a decimal number of octets";
  if (s.cl_conflict) return "RFC 9112 §6.3: Content-Length values that differ";
  return nullptr;
}

}  // namespace detail::framing

inline bool is_valid_host_field(std::string_view value) noexcept {
  return detail::framing::is_authority(value, false, false);
}

inline http_verdict check_request(const http_request_head& head) noexcept {
  using namespace detail::framing;
  if (head.version / 10 != 1) {
    return refuse(505, "RFC 9110 §15.6.6: an HTTP major version other than 1");
  }
  if (!is_token(head.method)) return refuse(400, "RFC 9112 §3.1: a method that is not a token");
  const fields_summary s = summarize(head.fields);
  if (s.error != nullptr) return refuse(400, s.error);
  const target_parts t = parse_target(head.method, head.target);
  if (t.error != nullptr) return refuse(400, t.error);
  // §3.2: "any request message that contains more than one Host header field line or a Host
  // header field with an invalid field value", whatever the target's form.
  if (s.hosts > 1) return refuse(400, "RFC 9112 §3.2: more than one Host field line");
  if (s.hosts == 0 && head.version >= 11) {
    return refuse(400, "RFC 9112 §3.2: an HTTP/1.1 request without a Host field");
  }
  if (s.hosts == 1 && !is_valid_host_field(s.host)) {
    return refuse(400, "RFC 9112 §3.2: a Host field with an invalid value (RFC 3986 §3.2.2)");
  }
  http_verdict v;
  if (s.transfer_encoding) {
    if (const char* e = transfer_encoding_error(s, head.version)) return refuse(400, e);
    if (!s.chunked_last) {
      return refuse(400,
                    "RFC 9112 §6.3: a request whose last transfer coding is not chunked (its "
                    "length cannot be determined)");
    }
    if (s.other_codings)
      return refuse(501, "RFC 9112 §6.1: a transfer coding other than chunked (not implemented)");
    v.framing = body_framing::chunked;
  } else if (s.content_length) {
    if (const char* e = content_length_error(s)) return refuse(400, e);
    v.framing = body_framing::content_length;
    v.content_length = s.length;
  }
  v.form = t.form;
  v.path = t.path;
  // §3.2.2, §3.3: the target's authority wins over Host.
  const bool from_target = t.form == target_form::absolute || t.form == target_form::authority;
  v.authority = from_target ? t.authority : s.host;
  return v;
}

inline http_verdict check_response(const http_response_head& head) noexcept {
  using namespace detail::framing;
  if (head.version / 10 != 1) {
    return refuse(502, "RFC 9112 §2.3: an answer in an HTTP major version other than 1");
  }
  if (head.status < 100 || head.status > 599) {
    return refuse(502, "RFC 9110 §15: a status code outside 100..599");
  }
  const fields_summary s = summarize(head.fields);
  if (s.error != nullptr) return refuse(502, s.error);
  http_verdict v;
  // §6.3 items 1 and 2: no body whatever the fields say.
  if (head.request_method == "HEAD" || head.status < 200 || head.status == 204 ||
      head.status == 304 || (head.request_method == "CONNECT" && head.status < 300)) {
    return v;
  }
  if (s.transfer_encoding) {
    if (const char* e = transfer_encoding_error(s, head.version)) return refuse(502, e);
    v.transfer_coded = s.other_codings;
    v.framing = s.chunked_last ? body_framing::chunked : body_framing::until_close;  // item 4
    return v;
  }
  if (s.content_length) {
    if (const char* e = content_length_error(s)) return refuse(502, e);  // item 5
    v.framing = body_framing::content_length;
    v.content_length = s.length;
    return v;
  }
  v.framing = body_framing::until_close;  // item 8
  return v;
}

}  // namespace lbkit
