// SPDX-License-Identifier: MIT
// Fuzz target for the configuration side of lbkit/net/route_table.hpp, which
// http_request.fuzz.cpp (fixed routes, fuzzed requests) does not reach: validate() and
// route_table::add() on fuzzed route_match values (the host patterns, paths, methods and
// header conditions an operator writes), and is_normalized_path() on a request path. The
// input is split at '\n' into a host, a path, a flags line (its first byte: bit 0 exact path),
// a comma-separated method list, then "name" or "name=value" header conditions. Properties:
//   1. add() succeeds exactly when validate() does; a refusal has a short message without
//      control characters; adding the same match again, or its stored (normalized) form, is
//      already_exists; the stored form validates and normalizes to itself.
//   2. A request written to satisfy an accepted route (its host, or a subdomain for a
//      wildcard, with a port and a trailing dot; its path, extended for a prefix; its first
//      method; its header conditions, names in another case) is routed to it; with the path
//      cut short it is not, and an exact path extended is not.
//   3. is_normalized_path agrees with a reference written from its comment.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/net/route_table.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message, next_line

char flip_case(char c) {
  if (c >= 'a' && c <= 'z') return static_cast<char>(c - 'a' + 'A');
  if (c >= 'A' && c <= 'Z') return static_cast<char>(c - 'A' + 'a');
  return c;
}

// is_normalized_path's comment, written out.
bool reference_normalized(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path.empty() || path[0] != '/') return false;
  if (path.find('\\') != std::string_view::npos) return false;
  std::string lower(path);
  for (char& c : lower) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  for (const std::string_view bad : {"%2e", "%2f", "%5c"}) {
    if (lower.find(bad) != std::string::npos) return false;
  }
  std::vector<std::string_view> segments;
  for (std::size_t from = 1;;) {
    const auto slash = path.find('/', from);
    segments.push_back(path.substr(from, slash == std::string_view::npos ? slash : slash - from));
    if (slash == std::string_view::npos) break;
    from = slash + 1;
  }
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (segments[i] == "." || segments[i] == "..") return false;
    if (segments[i].empty() && i + 1 < segments.size()) return false;  // "//"
  }
  return true;
}

void check_routing(const lbkit::route_match& m, std::string_view extra) {
  lbkit::route_table<int> table;
  const auto valid = lbkit::validate(m);
  const auto added = table.add(m, 7);
  FUZZ_CHECK(valid.has_value() == added.has_value());
  (void)lbkit::to_string(m);
  if (!added) {
    FUZZ_CHECK(!added.error().message.empty() && added.error().message.size() <= 1024);
    FUZZ_CHECK(no_controls(added.error().message));
    FUZZ_CHECK(added.error().message == valid.error().message);
    return;
  }
  FUZZ_CHECK(table.size() == 1);
  const lbkit::route_match stored = table.routes()[0].match;
  FUZZ_CHECK(lbkit::validate(stored).has_value());
  FUZZ_CHECK(lbkit::detail::routing::normalize(stored) == stored);
  const auto again = table.add(m, 8);
  FUZZ_CHECK(!again && again.error().code == lbkit::errc::already_exists);
  const auto normal = table.add(stored, 9);
  FUZZ_CHECK(!normal && normal.error().code == lbkit::errc::already_exists);
  FUZZ_CHECK(no_controls(normal.error().message));

  // A request this route must take.
  std::string host;
  if (stored.host.starts_with("*.")) {
    host = "x" + stored.host.substr(1);  // "x.example.com"
  } else if (!stored.host.empty()) {
    host = stored.host;
  } else {
    host = std::string(extra.substr(0, 16));  // any host will do
  }
  if (!host.empty() && host.front() != '[' && !stored.host.empty()) host += '.';
  if (!stored.host.empty()) host += ":8443";
  for (char& c : host) c = flip_case(c);
  std::string path = stored.path;
  if (stored.path_is_prefix) path += extra;
  const std::string target = path + "?q=1";
  const std::string method = stored.methods.empty() ? "GET" : stored.methods.front();
  std::vector<std::string> names, values;  // own the text the request views
  for (const auto& h : stored.headers) {
    names.push_back(h.name);
    for (char& c : names.back()) c = flip_case(c);
    values.push_back(h.value.value_or("present"));
  }
  std::vector<lbkit::request_header> headers;
  for (std::size_t i = 0; i < names.size(); ++i) headers.push_back({names[i], values[i]});
  const lbkit::request_view req{method, host, target, headers};
  const int* hit = table.match(req);
  if (hit == nullptr || *hit != 7) {
    std::fprintf(stderr, "route %s, request host %s target %s\n", lbkit::to_string(stored).c_str(),
                 lbkit::quote(host).c_str(), lbkit::quote(target).c_str());
    fail("a request made for the route is routed to it", __LINE__);
  }
  // The path cut short misses; an exact path extended misses.
  const std::string shorter = stored.path.substr(0, stored.path.size() - 1);
  FUZZ_CHECK(table.match({method, host, shorter, headers}) == nullptr);
  if (!stored.path_is_prefix) {
    const std::string longer = stored.path + "x";
    FUZZ_CHECK(table.match({method, host, longer, headers}) == nullptr);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  lbkit::route_match m;
  m.host = std::string(next_line(in));
  m.path = std::string(next_line(in));
  const std::string_view flags = next_line(in);
  m.path_is_prefix = flags.empty() || (flags[0] & 1) == 0;
  const std::string_view extra = flags.size() > 1 ? flags.substr(1) : std::string_view();
  std::string_view methods = next_line(in);
  while (!methods.empty() && m.methods.size() < 8) {
    const auto comma = methods.find(',');
    m.methods.emplace_back(methods.substr(0, comma));
    methods = comma == std::string_view::npos ? std::string_view() : methods.substr(comma + 1);
  }
  while (!in.empty() && m.headers.size() < 8) {
    const std::string_view line = next_line(in);
    const auto eq = line.find('=');
    lbkit::header_match h{std::string(line.substr(0, eq)), std::nullopt};
    if (eq != std::string_view::npos) h.value = std::string(line.substr(eq + 1));
    m.headers.push_back(std::move(h));
  }
  check_routing(m, extra);

  // The path line and the flags' rest as request targets.
  for (const std::string_view target : {std::string_view(m.path), extra}) {
    FUZZ_CHECK(lbkit::is_normalized_path(target) == reference_normalized(target));
  }
  return 0;
}
