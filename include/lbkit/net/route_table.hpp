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
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/net/route_match.hpp"
#include "lbkit/result.hpp"

namespace lbkit {

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
