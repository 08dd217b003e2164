// SPDX-License-Identifier: MIT
// route_table<Target>: the request router of an L7 load balancer or API gateway, I/O free. A
// front end parses a request with its own HTTP stack (Boost.Beast, llhttp, nghttp2), hands the
// router views of the method, Host, path and headers, and gets back the target of the most
// specific matching route (usually a backend pool with its own policy), or nothing (a 404).
//
// A route matches on the host (exact, or "*.suffix" for any subdomain), the path (exact, or a
// prefix), a list of methods and header conditions (present, or equal to a value). When several
// routes match a request, the most specific wins; route_table documents the order exactly.
//
// What the router does not do: percent-decoding or any normalization of the path. It compares
// raw bytes, so a request for "/public/../admin" matches a route for "/public/" while a
// backend that resolves dot-segments serves /admin. Reject or normalize such paths before
// routing; is_normalized_path() is a strict test of which to reject (with a 400).
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

// A set of routes, each with a target, and the lookup of the most specific route that matches
// a request.
//
// Most specific wins. Of the routes that match a request, find() and match() return the first
// in this order, each step deciding only when all earlier ones tie:
//   1. Host: an exact host before any wildcard; a wildcard before one with a shorter suffix
//      ("*.eu.example.com" before "*.example.com"); any wildcard before "any host".
//   2. Path: an exact path before any prefix; a longer prefix before a shorter one.
//   3. Conditions: more before fewer, counting one for a non-empty method list and one per
//      header condition (a header with a value counts as much as one that need only be
//      present).
//   4. The route added first.
// The host decides first, as nginx picks a server block before a location: a route for
// api.example.com with prefix "/" wins over one for any host with the exact path "/login".
// Two routes whose match is identical are refused by add(), so step 4 decides only between
// routes that differ in their conditions but count as many (methods {"GET"} against header
// x-env, say); add the one meant to win first. Steps 1 and 2 never need to order two
// different exact hosts, or two wildcards with suffixes of one length, or two exact paths:
// no request matches both.
//
// Target is what a route leads to: a pool name, an index, a shared_ptr to a balancer. It
// must be move-constructible.
//
// Thread safety: thread-compatible. Build the table on one thread, then share it read-only:
// any number of threads may call the const members (find, match, routes, size) at once, as
// long as none modifies the table meanwhile. To change routes (a configuration reload),
// build a new table and publish it whole, as the registry publishes snapshots; a pointer
// from find() or match() is valid while its table lives unmodified.
// Complexity: find() and match() do not allocate, lock or hash. Routes are indexed by host
// (exact hosts sorted, wildcards longest first) and, per host, by path (exact paths and
// prefixes each sorted, every prefix linked to the longest shorter prefix it starts with). A
// lookup binary-searches the exact hosts, compares the suffix of each wildcard, then, in each
// of the (at most 2 + wildcards) host groups that match, binary-searches the paths and walks
// the prefix links from the nearest candidate: O(log routes) string comparisons for a
// typical table, O(routes) comparisons at worst (prefixes nested one inside the other), plus
// the method and header checks of the routes whose host and path match. add() is O(routes):
// building a table of n routes costs O(n^2), a few milliseconds for 1 000 routes.
template <class Target>
class route_table {
 public:
  using target_type = Target;

  // A route as stored: its match normalized (host lower case, without a trailing dot, "*"
  // as "", an IPv6 literal in RFC 5952 form; methods sorted; header names lower case and
  // sorted by name), and its target.
  struct route {
    route_match match;
    Target target;
  };

  // Adds a route. Fails with errc::invalid_argument when validate(m) does, and with
  // errc::already_exists, naming the route, when a route with the same match (after
  // normalization) is present: which of the two should win would be a guess.
  result<void> add(route_match m, Target t);

  // The most specific route that matches `r` (see the class comment), or nullptr.
  const route* find(const request_view& r) const noexcept;

  // The target of find(r), or nullptr when no route matches (a 404).
  const Target* match(const request_view& r) const noexcept {
    const route* x = find(r);
    return x != nullptr ? &x->target : nullptr;
  }

  // Every route, in the order added (not the order of specificity).
  std::span<const route> routes() const noexcept { return routes_; }
  std::size_t size() const noexcept { return routes_.size(); }
  bool empty() const noexcept { return routes_.empty(); }

 private:
  using id = std::uint32_t;  // an index into routes_
  static constexpr id npos = 0xffffffff;

  // One distinct path of a host group, exact or prefix, with the routes that have it.
  struct path_node {
    std::string path;
    id parent = npos;       // prefixes only: the longest other prefix that `path` starts with
    std::vector<id> ids{};  // by condition count, most first; then in the order added
  };

  // The routes of one host pattern. `host` is the exact host, or for a wildcard the suffix
  // with its dot (".example.com"), or "" for any host.
  struct host_group {
    std::string host;
    std::vector<path_node> exact{};   // sorted by path
    std::vector<path_node> prefix{};  // sorted by path
  };

  const route* find_in(const host_group& g, std::string_view path,
                       const request_view& r) const noexcept;
  const route* first_holding(const path_node& n, const request_view& r) const noexcept;
  static void link_prefixes(std::vector<path_node>& nodes);

  std::vector<route> routes_;
  std::vector<host_group> exact_hosts_;  // sorted by host
  std::vector<host_group> wildcards_;    // longest suffix first, then by suffix
  host_group any_host_;
};

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

template <class Target>
result<void> route_table<Target>::add(route_match m, Target t) {
  if (auto v = validate(m); !v) return v;
  m = detail::routing::normalize(std::move(m));
  if (routes_.size() >= npos) {
    return make_error(errc::failed_precondition,
                      "route table is full: cannot add the route " + to_string(m));
  }

  // The group of the host pattern, and its key: the host, or a wildcard's suffix with its dot.
  const bool wildcard = m.host.starts_with("*.");
  const std::string key = wildcard ? m.host.substr(1) : m.host;
  std::vector<host_group>* groups = nullptr;
  typename std::vector<host_group>::iterator g;
  if (m.host.empty()) {
    groups = nullptr;
  } else if (wildcard) {
    groups = &wildcards_;
    g = std::lower_bound(wildcards_.begin(), wildcards_.end(), key,
                         [](const host_group& x, const std::string& k) {
                           return x.host.size() != k.size() ? x.host.size() > k.size() : x.host < k;
                         });
  } else {
    groups = &exact_hosts_;
    g = std::lower_bound(exact_hosts_.begin(), exact_hosts_.end(), key,
                         [](const host_group& x, const std::string& k) { return x.host < k; });
  }
  const bool group_present = groups == nullptr || (g != groups->end() && g->host == key);

  // The path node, if the group has one: a route with the same match would be there.
  auto node_of = [&](std::vector<path_node>& nodes) {
    return std::lower_bound(nodes.begin(), nodes.end(), m.path,
                            [](const path_node& n, const std::string& p) { return n.path < p; });
  };
  if (group_present) {
    host_group& hg = groups == nullptr ? any_host_ : *g;
    auto& nodes = m.path_is_prefix ? hg.prefix : hg.exact;
    const auto n = node_of(nodes);
    if (n != nodes.end() && n->path == m.path) {
      for (id other : n->ids) {
        const route_match& o = routes_[other].match;
        if (o.methods == m.methods && o.headers == m.headers) {
          return make_error(errc::already_exists,
                            "route table already has the route " + to_string(m) + " (route #" +
                                std::to_string(other + 1) + " in the order added)");
        }
      }
    }
  }

  const id self = static_cast<id>(routes_.size());
  const std::size_t conditions = detail::routing::condition_count(m);
  if (!group_present) g = groups->insert(g, host_group{key});
  host_group& hg = groups == nullptr ? any_host_ : *g;
  auto& nodes = m.path_is_prefix ? hg.prefix : hg.exact;
  auto n = node_of(nodes);
  if (n == nodes.end() || n->path != m.path) {
    n = nodes.insert(n, path_node{m.path});
    if (m.path_is_prefix) link_prefixes(nodes);
  }
  // After the routes with as many conditions or more: those were added earlier.
  const auto at = std::find_if(n->ids.begin(), n->ids.end(), [&](id other) {
    return detail::routing::condition_count(routes_[other].match) < conditions;
  });
  n->ids.insert(at, self);
  routes_.push_back(route{std::move(m), std::move(t)});
  return {};
}

template <class Target>
void route_table<Target>::link_prefixes(std::vector<path_node>& nodes) {
  // In sorted order a prefix comes before the paths that start with it, so a stack of the
  // previous path's prefixes, popped to those the current path starts with, gives its parent.
  std::vector<id> chain;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    while (!chain.empty() &&
           !std::string_view(nodes[i].path).starts_with(nodes[chain.back()].path)) {
      chain.pop_back();
    }
    nodes[i].parent = chain.empty() ? npos : chain.back();
    chain.push_back(static_cast<id>(i));
  }
}

template <class Target>
auto route_table<Target>::first_holding(const path_node& n, const request_view& r) const noexcept
    -> const route* {
  for (id x : n.ids) {
    if (detail::routing::conditions_hold(routes_[x].match, r)) return &routes_[x];
  }
  return nullptr;
}

template <class Target>
auto route_table<Target>::find_in(const host_group& g, std::string_view path,
                                  const request_view& r) const noexcept -> const route* {
  const auto e = std::lower_bound(
      g.exact.begin(), g.exact.end(), path,
      [](const path_node& n, std::string_view p) { return std::string_view(n.path) < p; });
  if (e != g.exact.end() && e->path == path) {
    if (const route* x = first_holding(*e, r)) return x;
  }
  // The last prefix not after `path` starts with the longest prefix of `path` there is, if
  // any (everything sorted between that prefix and `path` starts with it), so that prefix
  // is on its parent chain, and so is every shorter one.
  const auto p = std::upper_bound(
      g.prefix.begin(), g.prefix.end(), path,
      [](std::string_view q, const path_node& n) { return q < std::string_view(n.path); });
  if (p == g.prefix.begin()) return nullptr;
  id i = static_cast<id>(p - g.prefix.begin() - 1);
  while (i != npos && !path.starts_with(g.prefix[i].path)) i = g.prefix[i].parent;
  for (; i != npos; i = g.prefix[i].parent) {
    if (const route* x = first_holding(g.prefix[i], r)) return x;
  }
  return nullptr;
}

template <class Target>
auto route_table<Target>::find(const request_view& r) const noexcept -> const route* {
  const std::string_view host = detail::routing::request_host(r.host);
  const std::string_view path = detail::routing::request_path(r.path);
  if (!host.empty()) {
    // Patterns are lower case, and so are most Hosts: then plain byte comparison will do.
    const bool lower =
        std::none_of(host.begin(), host.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
    auto compare = [lower](std::string_view pattern, std::string_view h) noexcept {
      return lower ? pattern.compare(h) : detail::routing::compare_folded(pattern, h);
    };
    const auto e = std::lower_bound(
        exact_hosts_.begin(), exact_hosts_.end(), host,
        [&](const host_group& g, std::string_view h) { return compare(g.host, h) < 0; });
    if (e != exact_hosts_.end() && compare(e->host, host) == 0) {
      if (const route* x = find_in(*e, path, r)) return x;
    }
    for (const host_group& g : wildcards_) {
      if (host.size() > g.host.size() &&
          compare(g.host, host.substr(host.size() - g.host.size())) == 0) {
        if (const route* x = find_in(g, path, r)) return x;
      }
    }
  }
  return find_in(any_host_, path, r);
}

}  // namespace lbkit
