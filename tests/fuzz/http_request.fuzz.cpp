// SPDX-License-Identifier: MIT
// Fuzz target for the request-facing parts of lbkit/net/route_table.hpp and
// lbkit/net/sticky_session.hpp, which read a client's Host, target, method, headers and
// Cookie. The input is split at '\n' into method, host, target, a Cookie header, then
// "name: value" header lines. Properties:
//   1. route_table::match answers one of its routes or none; the route it answers matches the
//      request on its own (a table holding only that route matches too), and when it answers
//      none, no route matches on its own.
//   2. find_cookie returns a view into the header it was given, without ';', and without
//      spaces around unless they were inside double quotes.
//   3. sticky_cookie::decode accepts a value only if encode() of the id it gives is that value
//      (a forged value is refused; the chance of a random 64-bit tag passing is 2^-64), and
//      encode then decode gives back any valid id.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/net/route_table.hpp>
#include <lbkit/net/sticky_session.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message, next_line

lbkit::route_match route(std::string host, std::string path, bool prefix = true,
                         std::vector<std::string> methods = {},
                         std::vector<lbkit::header_match> headers = {}) {
  return {std::move(host), std::move(path), prefix, std::move(methods), std::move(headers)};
}

// Routes that overlap in every way the order has to settle: hosts exact and wildcard, paths
// nested, exact and prefix, methods and header conditions.
const std::vector<lbkit::route_match>& routes() {
  static const std::vector<lbkit::route_match> r{
      route("", "/"),
      route("", "/api/"),
      route("", "/api/v1", false),
      route("", "/api/", true, {"POST", "PUT"}),
      route("", "/api/", true, {}, {{"X-Version", "2"}}),
      route("", "/api/", true, {"GET"}, {{"X-Debug", std::nullopt}}),
      route("example.com", "/"),
      route("example.com", "/static/"),
      route("*.example.com", "/"),
      route("*.a.example.com", "/x"),
      route("[::1]", "/"),
      route("api.test", "/", true, {"CONNECT"}),
  };
  return r;
}

struct tables {
  lbkit::route_table<std::size_t> all;
  std::vector<lbkit::route_table<std::size_t>> single;  // one route each
};

const tables& built() {
  static const tables t = [] {
    tables out;
    for (std::size_t i = 0; i < routes().size(); ++i) {
      if (!out.all.add(routes()[i], i)) fail("the fixed routes are valid", __LINE__);
      out.single.emplace_back();
      if (!out.single.back().add(routes()[i], i)) fail("a route alone is valid", __LINE__);
    }
    return out;
  }();
  return t;
}

bool within(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string_view method = next_line(in), host = next_line(in), target = next_line(in),
                         cookie = next_line(in);
  std::vector<lbkit::request_header> headers;
  while (!in.empty() && headers.size() < 16) {
    const std::string_view line = next_line(in);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    headers.push_back({line.substr(0, colon), value});
  }
  headers.push_back({"Cookie", cookie});

  // 1. Routing.
  const tables& t = built();
  const lbkit::request_view view{method, host, target, headers};
  const std::size_t* hit = t.all.match(view);
  if (hit != nullptr) {
    FUZZ_CHECK(*hit < routes().size());
    FUZZ_CHECK(t.single[*hit].match(view) != nullptr);
  } else {
    for (const auto& one : t.single) FUZZ_CHECK(one.match(view) == nullptr);
  }

  // 2. Cookies.
  static const lbkit::sticky_cookie sticky(
      lbkit::siphash_key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, "sid");
  const auto value = lbkit::find_cookie(cookie, "sid");
  if (value) {
    FUZZ_CHECK(within(*value, cookie));
    FUZZ_CHECK(value->find(';') == std::string_view::npos);
    // Spaces around a value are trimmed; inside double quotes they are the value's own.
    const bool quoted = value->data() > cookie.data() && value->data()[-1] == '"';
    FUZZ_CHECK(quoted || value->empty() || (value->front() != ' ' && value->back() != ' '));
  }

  // 3. Signed values: whatever the cookie held, and the target taken as a value too.
  for (const std::string_view v : {value.value_or(std::string_view()), target}) {
    if (const auto id = sticky.decode(v)) FUZZ_CHECK(sticky.encode(*id) == v);
  }
  if (!host.empty() && host.size() <= lbkit::max_id_length) {
    const std::string encoded = sticky.encode(host);
    const auto back = sticky.decode(encoded);
    FUZZ_CHECK(back && *back == host);
  }
  return 0;
}
