// SPDX-License-Identifier: MIT
// The router's side of lbkit/net/http_framing.hpp (RFC 9112): the heads Beast parsed handed to
// lbkit's checks, and what those decide applied to the messages before they go on — one Host
// and one framing upstream, the trailer fields of a chunked body kept out of the header, and
// an answer framed for the client as RFC 9110 §8.6 allows. Beast's own framing is compared
// with lbkit's: a message the two would delimit differently is refused, since that difference
// is what request smuggling lives on.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/net/http_framing.hpp>

#include "asio.hpp"

namespace l7 {

// Views of the fields of a parsed header into `out` (the caller's, reused): what lbkit's checks
// and its route table read. Valid while the fields are not modified.
template <bool isRequest, class Fields>
void field_views(const http::header<isRequest, Fields>& h, std::vector<lbkit::http_field>& out) {
  out.clear();
  for (const auto& f : h) out.push_back({f.name_string(), f.value()});
}

namespace detail_ {

// Whether Beast's parser delimits the body as lbkit's verdict says.
template <bool isRequest>
bool same_framing(const http::basic_parser<isRequest>& p, const lbkit::http_verdict& v) {
  switch (v.framing) {
    case lbkit::body_framing::none:
      return p.is_done() || (!p.chunked() && !p.content_length());
    case lbkit::body_framing::content_length:
      return !p.chunked() && p.content_length() == v.content_length;
    case lbkit::body_framing::chunked:
      return p.chunked();
    case lbkit::body_framing::until_close:
      return !p.chunked() && !p.content_length() && p.need_eof();
  }
  return false;
}

// One Content-Length field, when a valid value came in several lines or as a list ("4, 4":
// RFC 9112 §6.3 item 5 accepts it; a sender generates one). Returns whether it changed `h`.
template <bool isRequest, class Fields>
bool single_content_length(http::header<isRequest, Fields>& h,
                           const boost::optional<std::uint64_t>& length) {
  if (!length) return false;
  std::size_t lines = 0;
  bool list = false;
  // equal_range: lines of one name need not be next to each other in the header.
  const auto [first, last] = h.equal_range(http::field::content_length);
  for (auto it = first; it != last; ++it) {
    ++lines;
    list |= it->value().find(',') != std::string_view::npos;
  }
  if (lines <= 1 && !list) return false;
  h.set(http::field::content_length, std::to_string(*length));
  return true;
}

}  // namespace detail_

// Checks a client's request header, as Beast parsed it (lbkit::check_request: RFC 9112 §§3, 5,
// 6), and readies it for forwarding: an absolute-form target becomes origin-form with its
// authority as the one Host (§3.2.2, §3.2.1), an HTTP/1.0 request without Host gets an empty
// one (§3.2: it goes upstream as HTTP/1.1), and a repeated Content-Length becomes one field.
// `fields` ends as views of the header's fields. A refusal is answered with its status and
// reason, and the connection closed (§6.3: "and then close the connection").
template <class Body, class Allocator>
lbkit::http_verdict admit_request(http::request_parser<Body, Allocator>& p,
                                  std::vector<lbkit::http_field>& fields) {
  auto& h = p.get();
  field_views(h, fields);
  lbkit::http_verdict v =
      lbkit::check_request({h.method_string(), h.target(), h.version(), fields});
  if (!v) return v;
  if (!detail_::same_framing(p, v)) {
    v = {};
    v.status = 400;
    v.reason = "RFC 9112 §6.3: a framing that Beast and lbkit read differently";
    return v;
  }
  bool changed = detail_::single_content_length(h, p.content_length());
  if (v.form == lbkit::target_form::absolute) {
    // The views point into the target, which set/target replace: copy first.
    const std::string authority(v.authority);
    std::string origin(v.path);
    if (origin.empty() || origin.front() == '?') origin.insert(0, "/");
    h.target(origin);
    h.set(http::field::host, authority);
    changed = true;
  } else if (h.find(http::field::host) == h.end()) {
    h.set(http::field::host, "");
    changed = true;
  }
  if (changed) field_views(h, fields);
  return v;
}

// Checks a backend's answer header, as Beast parsed it (lbkit::check_response: RFC 9112 §§5,
// 6.3, 7), with the method of the request it answers. A refusal is a bad answer: the client gets
// a 502 in its place and the upstream connection is closed, not reused (§6.3 item 5). So is a
// body in a transfer coding other than chunked, which the router neither decodes nor passes on
// (§6.1). `fields` ends as views of the answer's fields, as drop_trailer_fields needs them.
template <class Body, class Allocator>
lbkit::http_verdict admit_answer(http::response_parser<Body, Allocator>& p, http::verb method,
                                 std::vector<lbkit::http_field>& fields) {
  auto& h = p.get();
  field_views(h, fields);
  lbkit::http_verdict v =
      lbkit::check_response({h.result_int(), h.version(), fields, http::to_string(method)});
  auto bad = [&](std::string_view why) {
    v = {};
    v.status = 502;
    v.reason = why;
    return v;
  };
  if (!v) return v;
  if (v.transfer_coded) {
    return bad(
        "RFC 9112 §6.1: a transfer coding other than chunked, which the router does not decode");
  }
  if (!detail_::same_framing(p, v)) {
    return bad("RFC 9112 §6.3: a framing that Beast and lbkit read differently");
  }
  if (detail_::single_content_length(h, p.content_length())) field_views(h, fields);
  return v;
}

// RFC 9112 §7.1.2: a recipient that removes the chunked coding must not merge its trailer fields
// into the header section (RFC 9110 §6.5.1), and Beast's parser adds them to the message's
// fields, each after the last field of its name. Removes every field that is not one of
// `header`, the views of the header's own fields taken before the body was read.
template <class Fields>
void drop_trailer_fields(Fields& f, const std::vector<lbkit::http_field>& header) {
  if (static_cast<std::size_t>(std::distance(f.begin(), f.end())) == header.size()) return;
  for (auto it = f.begin(); it != f.end();) {
    const char* name = it->name_string().data();
    const bool own = std::any_of(header.begin(), header.end(),
                                 [&](const lbkit::http_field& h) { return h.name.data() == name; });
    it = own ? std::next(it) : f.erase(it);
  }
}

// Frames an answer that was read whole for the client: a Content-Length of its body, except
// where none may be sent — a 1xx or 204 (RFC 9110 §8.6) — and where the backend's own stands for
// a body not sent: an answer to HEAD and a 304 (RFC 9110 §8.6, RFC 9112 §6.3 item 1).
template <class Body, class Fields>
void frame_answer(http::response<Body, Fields>& res, http::verb method) {
  const unsigned status = res.result_int();
  if (status < 200 || status == 204) {
    res.erase(http::field::content_length);
  } else if (status != 304 && method != http::verb::head) {
    res.prepare_payload();
  }
}

// The status for a request header that hit the limit (RFC 9112 §3): 431 when its request line
// was in (the parser sets the target once the whole line is); inside the line, 414 for a
// request-target longer than the server wishes to parse (a MUST), or 501 for a method longer
// than any it implements (a SHOULD) — the method when no SP is within the first `limit` bytes
// (the parser's header limit; the buffer may hold more), since the parser stops at the first
// byte that is not a tchar.
template <class Body, class Allocator>
unsigned oversized_header_status(const http::request_parser<Body, Allocator>& p,
                                 const beast::flat_buffer& b, std::size_t limit) {
  if (!p.get().target().empty()) return 431;
  const auto data = b.data();
  const std::string_view seen(static_cast<const char*>(data.data()), std::min(data.size(), limit));
  return seen.find(' ') == std::string_view::npos ? 501 : 414;
}

// Whether a parse error says the message broke the HTTP/1.1 grammar (RFC 9112 §§2.2, 5, 6, 7.1):
// a bad line ending, start line, field, framing field, chunk or chunk extension. Not an end of
// stream, a partial message, or one of the router's own limits.
inline bool is_malformed(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec.value() >= static_cast<int>(http::error::bad_line_ending) &&
         ec.value() <= static_cast<int>(http::error::bad_obs_fold);
}

// Whether the buffer starts with an empty line (CRLF) where a request line is expected.
inline bool starts_with_empty_line(const beast::flat_buffer& b) {
  const auto data = b.data();
  return data.size() >= 2 && std::string_view(static_cast<const char*>(data.data()), 2) == "\r\n";
}

}  // namespace l7
