// SPDX-License-Identifier: MIT
// Fuzz target for lbkit/net/http_framing.hpp: check_request and check_response on any head. The
// input's first byte picks the direction (even: a request, odd: a response) and the second the
// version (9..21, so that 1.0, 1.1, later minors and other majors all come up); the rest is
// split at '\n' into, for a request, the method and the target, for a response, the status (its
// decimal digits) and the request's method, then "name:value" field lines (the value as it is,
// whitespace and all). Properties:
//   1. a verdict's status is 0, 400, 501 or 505 for a request and 0 or 502 for a response; it
//      has a reason, citing an RFC, exactly when it is a refusal; the same head gives the same
//      verdict twice;
//   2. an accepted request has exactly one framing, and it is the one its fields name: chunked
//      exactly when there is a Transfer-Encoding (whose last coding is chunked, never with a
//      Content-Length, never in HTTP/1.0), content_length exactly when there is a Content-Length
//      alone (every value of which equals it), none otherwise;
//   3. an accepted request has at most one Host, exactly one in HTTP/1.1, every field name a
//      token and no value with CR, LF or NUL; its authority lies inside the input (the target,
//      or the Host's value, which is then a valid Host), and so does its path (or it is "*",
//      or empty);
//   4. an accepted response is framed as RFC 9112 §6.3 orders: none after HEAD, for 1xx, 204 and
//      304; chunked or until_close with a Transfer-Encoding (and no Content-Length); else
//      content_length with a Content-Length; else until_close.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include <lbkit/net/http_framing.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message, next_line

bool within(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto la = a[i] >= 'A' && a[i] <= 'Z' ? a[i] - 'A' + 'a' : a[i];
    const auto lb = b[i] >= 'A' && b[i] <= 'Z' ? b[i] - 'A' + 'a' : b[i];
    if (la != lb) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The comma-separated elements of every line named `name`, trimmed, empty ones left out.
std::vector<std::string_view> elements(const std::vector<lbkit::http_field>& fields,
                                       std::string_view name) {
  std::vector<std::string_view> out;
  for (const auto& f : fields) {
    if (!iequals(f.name, name)) continue;
    std::string_view rest = f.value;
    for (;;) {
      const auto comma = rest.find(',');
      const auto e = trim(rest.substr(0, comma));
      if (!e.empty()) out.push_back(e);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return out;
}

std::size_t count(const std::vector<lbkit::http_field>& fields, std::string_view name) {
  std::size_t n = 0;
  for (const auto& f : fields) n += iequals(f.name, name) ? 1 : 0;
  return n;
}

// The value of a run of decimal digits, leading zeros and all, or -1 on anything else (an
// overflow included).
long double decimal(std::string_view s) {
  if (s.empty()) return -1;
  long double v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool same(const lbkit::http_verdict& a, const lbkit::http_verdict& b) {
  return a.status == b.status && a.reason == b.reason && a.framing == b.framing &&
         a.content_length == b.content_length && a.transfer_coded == b.transfer_coded &&
         a.form == b.form && a.authority == b.authority && a.path == b.path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const bool is_request = data[0] % 2 == 0;
  const unsigned version = 9 + data[1] % 13u;
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  const std::string_view first = next_line(in), second = next_line(in);
  std::vector<lbkit::http_field> fields;
  while (!in.empty() && fields.size() < 32) {
    const std::string_view line = next_line(in);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      fields.push_back({line, {}});
    } else {
      fields.push_back({line.substr(0, colon), line.substr(colon + 1)});
    }
  }
  const auto te = elements(fields, "Transfer-Encoding");
  const auto cl = elements(fields, "Content-Length");
  const bool has_te = count(fields, "Transfer-Encoding") > 0;
  const bool has_cl = count(fields, "Content-Length") > 0;

  if (is_request) {
    const lbkit::http_request_head head{first, second, version, fields};
    const lbkit::http_verdict v = lbkit::check_request(head);
    // 1.
    FUZZ_CHECK(v.status == 0 || v.status == 400 || v.status == 501 || v.status == 505);
    FUZZ_CHECK(v.reason.empty() == (v.status == 0));
    FUZZ_CHECK(v.status == 0 || v.reason.starts_with("RFC "));
    FUZZ_CHECK(same(v, lbkit::check_request(head)));
    if (!v) return 0;
    // 2.
    FUZZ_CHECK(!(has_te && has_cl));
    if (has_te) {
      FUZZ_CHECK(v.framing == lbkit::body_framing::chunked);
      FUZZ_CHECK(version != 10);
      FUZZ_CHECK(!te.empty() && iequals(te.back(), "chunked"));
    } else if (has_cl) {
      FUZZ_CHECK(v.framing == lbkit::body_framing::content_length);
      for (const auto e : cl) FUZZ_CHECK(decimal(e) == static_cast<long double>(v.content_length));
    } else {
      FUZZ_CHECK(v.framing == lbkit::body_framing::none);
    }
    FUZZ_CHECK(v.framing != lbkit::body_framing::until_close);
    FUZZ_CHECK(!v.transfer_coded);
    // 3.
    const std::size_t hosts = count(fields, "Host");
    FUZZ_CHECK(hosts <= 1);
    FUZZ_CHECK(version < 11 || hosts == 1);
    for (const auto& f : fields) {
      FUZZ_CHECK(!f.name.empty());
      FUZZ_CHECK(f.name.find_first_of(" \t:\r\n") == std::string_view::npos);
      FUZZ_CHECK(f.value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos);
    }
    if (v.form == lbkit::target_form::absolute || v.form == lbkit::target_form::authority) {
      FUZZ_CHECK(within(v.authority, second));
    } else {
      FUZZ_CHECK(v.authority.empty() || count(fields, "Host") == 1);
      bool from_host = v.authority.empty();
      for (const auto& f : fields) {
        from_host |= iequals(f.name, "Host") && within(v.authority, f.value);
      }
      FUZZ_CHECK(from_host);
      FUZZ_CHECK(lbkit::is_valid_host_field(v.authority));
    }
    FUZZ_CHECK(v.path.empty() || within(v.path, second) || v.path == "*");
    if (v.form == lbkit::target_form::origin) {
      FUZZ_CHECK(v.path == second && second.starts_with('/'));
    }
    return 0;
  }

  unsigned status = 0;
  for (char c : first.substr(0, 4)) {
    if (c >= '0' && c <= '9') status = status * 10 + static_cast<unsigned>(c - '0');
  }
  const lbkit::http_response_head head{status, version, fields, second};
  const lbkit::http_verdict v = lbkit::check_response(head);
  // 1.
  FUZZ_CHECK(v.status == 0 || v.status == 502);
  FUZZ_CHECK(v.reason.empty() == (v.status == 0));
  FUZZ_CHECK(same(v, lbkit::check_response(head)));
  if (!v) return 0;
  // 4.
  FUZZ_CHECK(status >= 100 && status <= 599);
  FUZZ_CHECK(v.authority.empty() && v.path.empty());
  if (second == "HEAD" || status < 200 || status == 204 || status == 304 ||
      (second == "CONNECT" && status < 300)) {
    FUZZ_CHECK(v.framing == lbkit::body_framing::none);
  } else if (has_te) {
    FUZZ_CHECK(!has_cl && version != 10);
    const bool chunked_last = !te.empty() && iequals(te.back(), "chunked");
    FUZZ_CHECK(v.framing ==
               (chunked_last ? lbkit::body_framing::chunked : lbkit::body_framing::until_close));
  } else if (has_cl) {
    FUZZ_CHECK(v.framing == lbkit::body_framing::content_length);
    for (const auto e : cl) FUZZ_CHECK(decimal(e) == static_cast<long double>(v.content_length));
  } else {
    FUZZ_CHECK(v.framing == lbkit::body_framing::until_close);
  }
  return 0;
}
