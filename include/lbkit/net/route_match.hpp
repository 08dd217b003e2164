// SPDX-License-Identifier: MIT
// route_match: what one route of a route_table matches (host, path, methods, header
// conditions), its validation and its text form, and the views of a request that routes
// are matched against. route_table.hpp builds the table over these.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/endpoint.hpp"
#include "lbkit/net/http1.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// A header condition of a route: the request has a field `name` (compared case-insensitively,
// as field names are), and, when `value` is set, one whose value equals it byte for byte.
// A request that repeats a field matches when any of its lines does; a line holding a list
// ("a, b") is compared whole, not split.
struct header_match {
  std::string name{};                  // a token (RFC 9110 §5.6.2), not "Host"
  std::optional<std::string> value{};  // nullopt: present is enough; else exactly this value

  friend bool operator==(const header_match&, const header_match&) = default;
};

// What a route matches. Every condition must hold; the defaults match every request.
struct route_match {
  // "" (or "*"): any host. "api.example.com": that host only. "*.example.com": any subdomain
  // at any depth (a.example.com, a.b.example.com), not example.com itself. "[2001:db8::1]":
  // an IPv6 literal, in brackets as in a Host header; add() rewrites it in RFC 5952 form, as
  // clients write it, and a request's literal is compared as text, not parsed. Case-
  // insensitive; no port (the port of a request's Host is ignored); a trailing dot is dropped.
  std::string host{};
  // Starts with '/'. Compared byte for byte (case-sensitive, no decoding) with the request
  // path up to its '?'.
  std::string path{"/"};
  // True: `path` is a raw byte prefix, as Envoy's `prefix` and nginx's `location /api`; so
  // "/api" also matches "/apix" and "/api.json", and "/api/" matches only below /api/.
  // False: the path must be exactly `path`.
  bool path_is_prefix = true;
  // Empty: any method. Else one of these tokens, case-sensitive as methods are; "GET" does
  // not imply "HEAD" (list both).
  std::vector<std::string> methods{};
  // Every condition must hold; at most one per header name.
  std::vector<header_match> headers{};

  friend bool operator==(const route_match&, const route_match&) = default;
};

// One field of a request, as the caller's parser gives it: the value without the surrounding
// whitespace (RFC 9110 §5.5).
struct request_header {
  std::string_view name{};
  std::string_view value{};
};

// What the router looks at: views into the caller's parsed request, valid during the call.
struct request_view {
  std::string_view method{};  // "GET"
  // The Host header (HTTP/1.1) or :authority (HTTP/2, 3) as received: "api.example.com",
  // "API.example.com.:8443", "[::1]:8080". Its port and one trailing dot are ignored, and its
  // case. Empty (HTTP/1.0 without Host) or malformed ("[::1" without ']'): only routes for
  // any host match.
  std::string_view host{};
  // The origin-form request-target, "/v1/users?id=7"; the part from '?' on is ignored. An
  // absolute-form target ("http://h/p", sent to forward proxies) must be split by the caller;
  // "*" (OPTIONS *) matches no route, since it does not start with '/'.
  std::string_view path{};
  // The fields that header conditions are checked against. Passing only those that some
  // route names is enough.
  std::span<const request_header> headers{};
};

// Checks a route_match, naming what is wrong: a host pattern that is not a host name, a
// "*.suffix" wildcard or a bracketed IPv6 address (a '*' elsewhere, an empty suffix, a port, a
// space, an empty label); a path that is empty, does not start with '/', or holds '?', '#', a
// space, a control or non-ASCII byte; a method that is not a token, is listed twice, or is a
// standard method in the wrong case ("get"); a header name that is not a token, is "Host" or
// is listed twice; a header value with a control character or surrounding whitespace.
// Upper case in hosts and header names is accepted (and normalized by route_table::add).
inline result<void> validate(const route_match& m);

// A one-line description for logs and error messages, such as
// "host '*.example.com', path prefix '/api/', methods GET POST, header x-env = 'canary'".
inline std::string to_string(const route_match& m);

// True when `path` (up to any '?') is an absolute path in normal form that a backend cannot
// resolve to somewhere else: it starts with '/' and has no empty segment ("//"), no "." or
// ".." segment, no backslash, and no percent-encoded '.', '/' or '\' ("%2e", "%2F", "%5c"),
// which some backends decode into those. A gateway that routes by path prefix should answer
// 400 to requests that fail it (or normalize them first, RFC 3986 §5.2.4), so that
// "/public/../admin" cannot reach /admin through the route for "/public/".
// Complexity: O(path length), no allocation.
constexpr bool is_normalized_path(std::string_view path) noexcept;

namespace detail::routing {

using http1::iequals;
using http1::is_tchar;
using http1::is_token;
constexpr char lower(char c) noexcept { return http1::ascii_lower(c); }

// Three-way comparison of `folded` (lower case already) with `s` lowercased, without a copy.
constexpr int compare_folded(std::string_view folded, std::string_view s) noexcept {
  const std::size_t n = std::min(folded.size(), s.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto a = static_cast<unsigned char>(folded[i]);
    const auto b = static_cast<unsigned char>(lower(s[i]));
    if (a != b) return a < b ? -1 : 1;
  }
  return folded.size() == s.size() ? 0 : (folded.size() < s.size() ? -1 : 1);
}

// The host a request names, as routes compare it: the Host without its port and one trailing
// dot; an IPv6 literal keeps its brackets. Empty when the Host is empty or malformed.
constexpr std::string_view request_host(std::string_view h) noexcept {
  if (!h.empty() && h.front() == '[') {
    const auto close = h.find(']');
    return close == std::string_view::npos ? std::string_view{} : h.substr(0, close + 1);
  }
  h = h.substr(0, h.find(':'));
  if (!h.empty() && h.back() == '.') h.remove_suffix(1);
  return h;
}

// The path of an origin-form request-target: the part before the first '?'.
constexpr std::string_view request_path(std::string_view target) noexcept {
  return target.substr(0, target.find('?'));
}

// The number of conditions a route adds to its host and path: step 3 of the order.
inline std::size_t condition_count(const route_match& m) noexcept {
  return (m.methods.empty() ? 0 : 1) + m.headers.size();
}

// Whether the method and header conditions of `m` hold for `r`.
inline bool conditions_hold(const route_match& m, const request_view& r) noexcept {
  if (!m.methods.empty() &&
      std::find(m.methods.begin(), m.methods.end(), r.method) == m.methods.end()) {
    return false;
  }
  for (const header_match& h : m.headers) {
    const bool found = std::any_of(r.headers.begin(), r.headers.end(), [&](const auto& f) {
      return iequals(f.name, h.name) && (!h.value || f.value == *h.value);
    });
    if (!found) return false;
  }
  return true;
}

inline result<void> check_host(std::string_view h) {
  auto bad = [&](std::string why) {
    return make_error(errc::invalid_argument, "route host " + quote(h) + ' ' + why);
  };
  if (h.empty() || h == "*") return {};
  if (!is_visible_ascii(h)) {
    return bad(
        "contains a space, a control character or a non-ASCII byte (write an "
        "internationalized name in its xn-- form)");
  }
  if (h.front() == '[') {
    if (h.back() != ']') {
      return bad(h.find(']') != std::string_view::npos
                     ? "has a port; the port of a request's Host is ignored, so leave it out"
                     : "opens '[' without closing it; an IPv6 host is '[2001:db8::1]'");
    }
    auto a = ip_address::parse(h.substr(1, h.size() - 2));
    if (!a) return bad("is not an IPv6 address in brackets: " + a.error().message);
    if (!a->is_v6()) return bad("has an IPv4 address in brackets; write it without them");
    return {};
  }
  if (h.find(':') != std::string_view::npos) {
    if (auto a = ip_address::parse(h); a && a->is_v6()) {
      return bad("is an IPv6 address: write it in brackets, '[" + a->to_string() + "]'");
    }
    return bad("has a port; the port of a request's Host is ignored, so leave it out");
  }
  std::string_view name = h;
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
    if (name.empty() || name == ".") {
      return bad("has no domain after '*.'; '*.example.com' matches the subdomains of one");
    }
  }
  if (name.back() == '.') name.remove_suffix(1);  // the fully qualified form
  if (name.empty()) return bad("has no name");
  if (name.find('*') != std::string_view::npos) {
    return bad("has a '*' that is not a whole first label; a wildcard is '*.example.com'");
  }
  if (name.size() > 253) return bad("is longer than 253 characters");
  for (std::string_view rest = name;;) {
    const auto dot = rest.find('.');
    const std::string_view label = rest.substr(0, dot);
    if (label.empty()) return bad("has an empty label (two dots in a row, or a leading dot)");
    if (label.size() > 63) return bad("has a label longer than 63 characters");
    for (char c : label) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_';
      if (!ok) {
        return bad("has the character " + quote(std::string_view(&c, 1)) +
                   "; a host name holds letters, digits, '-', '_' and dots");
      }
    }
    if (dot == std::string_view::npos) return {};
    rest.remove_prefix(dot + 1);
  }
}

inline result<void> check_path(std::string_view p) {
  auto bad = [&](std::string why) {
    return make_error(errc::invalid_argument, "route path " + quote(p) + ' ' + why);
  };
  if (p.empty()) return make_error(errc::invalid_argument, "route path is empty; '/' is the root");
  if (p.front() != '/') return bad("does not start with '/'");
  if (!is_visible_ascii(p)) {
    return bad(
        "contains a space, a control character or a non-ASCII byte; requests carry those "
        "percent-encoded, so write them so");
  }
  if (p.find('?') != std::string_view::npos) {
    return bad("contains '?': routes match the path without the query, so this could not match");
  }
  if (p.find('#') != std::string_view::npos) {
    return bad("contains '#': requests do not carry a fragment, so this could not match");
  }
  return {};
}

inline result<void> check_methods(const std::vector<std::string>& methods) {
  auto bad = [](std::string why) { return make_error(errc::invalid_argument, std::move(why)); };
  for (std::size_t i = 0; i < methods.size(); ++i) {
    const std::string& m = methods[i];
    if (m.empty()) return bad("route method is empty");
    if (!is_token(m)) return bad("route method " + quote(m) + " is not a token (RFC 9110 §9.1)");
    for (std::string_view standard :
         {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}) {
      if (m != standard && iequals(m, standard)) {
        return bad("route method " + quote(m) + " would not match " + std::string(standard) +
                   " requests: methods are case-sensitive");
      }
    }
    if (std::find(methods.begin(), methods.begin() + static_cast<std::ptrdiff_t>(i), m) !=
        methods.begin() + static_cast<std::ptrdiff_t>(i)) {
      return bad("route method " + quote(m) + " is listed twice");
    }
  }
  return {};
}

inline result<void> check_headers(const std::vector<header_match>& headers) {
  auto bad = [](std::string why) { return make_error(errc::invalid_argument, std::move(why)); };
  for (std::size_t i = 0; i < headers.size(); ++i) {
    const header_match& h = headers[i];
    if (!is_token(h.name)) {
      return bad("route header name " + quote(h.name) + " is not a token (RFC 9110 §5.1)");
    }
    if (iequals(h.name, "host")) {
      return bad("route header " + quote(h.name) +
                 " cannot be a header condition; match it with route_match::host");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (iequals(headers[j].name, h.name)) {
        return bad("route header " + quote(h.name) +
                   " has two conditions; a route holds at most one per header name");
      }
    }
    if (!h.value) continue;
    const std::string_view v = *h.value;
    for (char c : v) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) {
        return bad("route header " + quote(h.name) + " value " + quote(v) +
                   " has a control character, which no request field holds");
      }
    }
    if (!v.empty() &&
        (v.front() == ' ' || v.front() == '\t' || v.back() == ' ' || v.back() == '\t')) {
      return bad("route header " + quote(h.name) + " value " + quote(v) +
                 " has leading or trailing whitespace, which parsers strip from field values, "
                 "so it could not match");
    }
  }
  return {};
}

// `m` (valid) in the form route_table stores and compares: host lower case without a trailing
// dot, "*" as "", IPv6 in RFC 5952 text; methods sorted; header names lower case, sorted.
inline route_match normalize(route_match m) {
  std::string& h = m.host;
  if (h == "*") {
    h.clear();
  } else if (!h.empty() && h.front() == '[') {
    h = '[' + ip_address::parse(std::string_view(h).substr(1, h.size() - 2))->to_string() + ']';
  } else {
    if (!h.empty() && h.back() == '.') h.pop_back();
    for (char& c : h) c = lower(c);
  }
  std::sort(m.methods.begin(), m.methods.end());
  for (header_match& x : m.headers) {
    for (char& c : x.name) c = lower(c);
  }
  std::sort(m.headers.begin(), m.headers.end(),
            [](const header_match& a, const header_match& b) { return a.name < b.name; });
  return m;
}

}  // namespace detail::routing

// ---------------------------------------------------------------------------------------
// Implementation

inline result<void> validate(const route_match& m) {
  if (auto r = detail::routing::check_host(m.host); !r) return r;
  if (auto r = detail::routing::check_path(m.path); !r) return r;
  if (auto r = detail::routing::check_methods(m.methods); !r) return r;
  return detail::routing::check_headers(m.headers);
}

inline std::string to_string(const route_match& m) {
  auto show = [](std::string_view s) {
    return detail::routing::is_token(s) ? std::string(s) : quote(s);
  };
  std::string s = m.host.empty() || m.host == "*" ? "any host" : "host " + quote(m.host);
  s += m.path_is_prefix ? ", path prefix " : ", exact path ";
  s += quote(m.path);
  if (!m.methods.empty()) {
    s += m.methods.size() == 1 ? ", method" : ", methods";
    for (const std::string& x : m.methods) s += ' ' + show(x);
  }
  for (const header_match& h : m.headers) {
    s += ", header " + show(h.name);
    s += h.value ? " = " + quote(*h.value) : std::string(" present");
  }
  return s;
}

constexpr bool is_normalized_path(std::string_view path) noexcept {
  path = detail::routing::request_path(path);
  if (path.empty() || path.front() != '/') return false;
  for (std::size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '\\') return false;
    if (c == '%' && i + 2 < path.size()) {
      const char a = path[i + 1], b = detail::routing::lower(path[i + 2]);
      if ((a == '2' && (b == 'e' || b == 'f')) || (a == '5' && b == 'c')) return false;
    }
  }
  // Each segment: what follows a '/' up to the next '/' or the end.
  for (std::size_t start = 1;;) {
    const auto slash = path.find('/', start);
    const std::string_view seg = path.substr(start, slash - start);
    const bool last = slash == std::string_view::npos;
    if (seg == "." || seg == "..") return false;
    if (seg.empty() && !last) return false;  // "//"
    if (last) return true;
    start = slash + 1;
  }
}

}  // namespace lbkit
