// SPDX-License-Identifier: MIT
// Fuzz target for the HTTP/1 response parser of the HTTP health probe,
// lbkit::http1::response_parser (lbkit/net/http1_response.hpp): the bytes a backend,
// or anything that answers on its port, sends back. The first byte holds flags (bit 0: the
// probe sent HEAD; bit 1: the rest is not a response but the parts of one to build; bit 2:
// also feed it byte by byte; bit 3: bound the head at 96 bytes, so the bound is crossed); the
// second how many split points follow (up to 8, one byte
// each); the rest is the response. Properties:
//   1. Feeding the response whole, at the fuzzer's split points, or byte by byte gives the
//      same verdicts (the final head once, then complete or invalid), the same status and,
//      when complete, the same size and body; after complete or invalid every call repeats
//      it; with the peer closed no call answers incomplete; an invalid verdict has a message.
//   2. What is complete is consistent: the final status is 200..599 (not 101); a HEAD, 204 or
//      304 answer has no body; no body is longer than the bytes fed.
//   3. A well-formed response built from the input (optional interim 1xx heads, fields, a
//      body framed by Content-Length, chunked with extensions and trailers, or the close)
//      parses to exactly its status, body and size, however it is split (or, with the small bound,
//      is refused as too long).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/net/http1_response.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message

using parser = lbkit::http1::response_parser;
using lbkit::parse_status;

struct outcome {
  bool head = false;  // has_head() turned true
  parse_status last = parse_status::incomplete;
  int status = 0;
  std::size_t size = 0;  // complete: the bytes the response occupies
  std::string body;
  std::string error;
};

bool terminal(parse_status e) { return e != parse_status::incomplete; }

// One parse() call, with the checks that hold for every call.
parse_status step(parser& p, outcome& o, std::string_view in, bool closed) {
  const parse_status e = p.parse(in, closed);
  if (terminal(o.last)) {
    FUZZ_CHECK(e == o.last);  // nothing after complete or invalid
    return e;
  }
  if (o.head) {
    FUZZ_CHECK(p.has_head());  // once read, the final head stays
    FUZZ_CHECK(p.status() == o.status);
  } else if (p.has_head()) {
    o.head = true;
    o.status = p.status();
    FUZZ_CHECK(!p.in_head());
  }
  if (closed) FUZZ_CHECK(e != parse_status::incomplete);
  if (e == parse_status::invalid) FUZZ_CHECK(!p.error().empty());
  if (e == parse_status::complete) {
    FUZZ_CHECK(p.has_head());
    FUZZ_CHECK(p.size() <= in.size());
  }
  FUZZ_CHECK(p.body().size() <= in.size());
  o.last = e;
  return e;
}

// Feeds `in` in pieces ending at `cuts` (ascending, the last is in.size()), then closes.
outcome run(bool head_request, std::size_t max_head, std::string_view in,
            const std::vector<std::size_t>& cuts) {
  parser p(head_request, max_head);
  outcome o;
  for (const std::size_t cut : cuts) {
    step(p, o, in.substr(0, cut), false);
    if (terminal(o.last)) break;
  }
  step(p, o, in, true);
  // Once more, closed: the verdict stays.
  FUZZ_CHECK(terminal(o.last));
  FUZZ_CHECK(p.parse(in, true) == o.last);
  if (o.last == parse_status::complete) o.size = p.size();
  o.body = std::string(p.body());
  o.error = p.error();
  return o;
}

void check_same(const outcome& a, const outcome& b) {
  FUZZ_CHECK(a.last == b.last);
  FUZZ_CHECK(a.head == b.head);
  if (a.head) FUZZ_CHECK(a.status == b.status);
  if (a.last == parse_status::complete) {
    FUZZ_CHECK(a.body == b.body);
    FUZZ_CHECK(a.size == b.size);
  }
}

// The verdict on its own terms.
void check_consistent(const outcome& o, bool head_request, std::string_view in) {
  if (o.last == parse_status::invalid) {
    FUZZ_CHECK(!o.error.empty());
    return;
  }
  FUZZ_CHECK(o.last == parse_status::complete && o.head);
  FUZZ_CHECK(o.status >= 200 && o.status <= 599);
  if (head_request || o.status == 204 || o.status == 304) FUZZ_CHECK(o.body.empty());
  FUZZ_CHECK(o.body.size() <= in.size());
}

// Reads the fuzz bytes as the parts of a response; zeros once they run out.
struct reader {
  std::string_view in;
  std::uint8_t byte() {
    if (in.empty()) return 0;
    const auto b = static_cast<std::uint8_t>(in.front());
    in.remove_prefix(1);
    return b;
  }
  std::string text(std::size_t max, std::string_view alphabet) {
    std::string s;
    for (std::size_t n = byte() % (max + 1); n > 0 && !in.empty(); --n) {
      s += alphabet[byte() % alphabet.size()];
    }
    return s;
  }
  std::string bytes(std::size_t max) {
    const std::size_t want = byte() % (max + 1);  // read before in.size() is looked at
    const std::size_t n = std::min(want, in.size());
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
};

constexpr std::string_view token_chars = "abcXYZ019!#$%&'*+-.^_`|~";
constexpr std::string_view value_chars = "abc XYZ\t019,;=\"\\()/:\x80\xff";

// A valid response made from `in`, and what the parser must make of it.
struct built {
  std::string wire;
  int status;
  std::string body;
};

built build(std::string_view in, bool head_request) {
  reader rd{in};
  built out;
  for (int interim = rd.byte() % 3; interim > 0; --interim) {
    out.wire += rd.byte() & 1 ? "HTTP/1.1 100 Continue\r\n" : "HTTP/1.1 103 Early Hints\r\n";
    if (rd.byte() & 1) out.wire += "Link: </a.css>; rel=preload\r\n";
    out.wire += "\r\n";
  }
  const std::uint8_t shape = rd.byte();
  const int minor = shape & 1;
  // One read per statement: the order of operands is unspecified.
  const int hundreds = rd.byte() % 4;
  out.status = 200 + hundreds * 100 + rd.byte() % 100;  // 200..599
  out.wire += "HTTP/1." + std::to_string(minor) + ' ' + std::to_string(out.status) + ' ' +
              rd.text(12, value_chars) + "\r\n";
  for (int fields = rd.byte() % 5; fields > 0; --fields) {
    std::string name = rd.text(8, token_chars);
    if (name.empty()) name = "X";
    // Fields that frame the message are the builder's to write.
    if (lbkit::http1::iequals(name, "Content-Length") ||
        lbkit::http1::iequals(name, "Transfer-Encoding")) {
      name = "X-" + name;
    }
    std::string value = rd.text(16, value_chars);
    out.wire += name + ':' + (rd.byte() & 1 ? " " : "") + value + "\r\n";
  }
  const std::string body = rd.bytes(200);
  const bool no_body = head_request || out.status == 204 || out.status == 304;
  switch ((shape >> 1) % 3) {
    case 0:  // Content-Length, repeated identically now and then (RFC 9112 §6.3 item 5)
      out.wire += "Content-Length: " + std::to_string(body.size()) + "\r\n";
      if (shape & 8) out.wire += "content-length: " + std::to_string(body.size()) + "\r\n";
      out.wire += "\r\n";
      if (!no_body) out.wire += body;
      out.body = no_body ? "" : body;
      break;
    case 1: {  // chunked (HTTP/1.1 only), else framed by the close
      if (minor == 0) {
        out.wire += "\r\n";
        if (!no_body) out.wire += body;
        out.body = no_body ? "" : body;
        break;
      }
      out.wire += "Transfer-Encoding: chunked\r\n\r\n";
      if (no_body) break;
      static constexpr char hex[] = "0123456789abcdef";
      std::size_t at = 0;
      while (at < body.size()) {
        const std::size_t n = std::min<std::size_t>(1 + rd.byte() % 64, body.size() - at);
        std::string size;
        for (std::size_t v = n; v > 0; v /= 16) size.insert(size.begin(), hex[v % 16]);
        out.wire += (rd.byte() & 1 ? "00" : "") + size;
        if (rd.byte() & 1) out.wire += " ; ext=\"q\\\"v\"; flag";
        out.wire += "\r\n" + body.substr(at, n) + "\r\n";
        at += n;
      }
      out.wire += "0\r\n";
      if (rd.byte() & 1) out.wire += "X-Trailer: t\r\n";
      out.wire += "\r\n";
      out.body = body;
      break;
    }
    default:  // no framing field: the body runs to the close
      out.wire += "\r\n";
      if (!no_body) out.wire += body;
      out.body = no_body ? "" : body;
      break;
  }
  return out;
}

std::vector<std::size_t> cuts_of(std::string_view picks, std::size_t size) {
  std::vector<std::size_t> cuts;
  for (const char c : picks) {
    // A byte is a fraction of the input, so that the cuts spread over long inputs too.
    cuts.push_back(size * static_cast<unsigned char>(c) / 255);
  }
  cuts.push_back(size);
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.size() < 2) return 0;
  const auto flags = static_cast<std::uint8_t>(in[0]);
  const std::size_t npicks =
      std::min<std::size_t>(static_cast<std::uint8_t>(in[1]) % 9, in.size() - 2);
  const std::string_view picks = in.substr(2, npicks);
  in.remove_prefix(2 + npicks);
  const bool head_request = (flags & 1) != 0;
  const std::size_t max_head = (flags & 8) != 0 ? 96 : parser::default_max_head;

  std::string wire(in);
  built want{};
  const bool generated = (flags & 2) != 0;
  if (generated) {
    want = build(in, head_request);
    wire = want.wire;
  }

  const outcome whole = run(head_request, max_head, wire, {wire.size()});
  check_consistent(whole, head_request, wire);
  check_same(whole, run(head_request, max_head, wire, cuts_of(picks, wire.size())));
  if ((flags & 4) != 0) {
    std::vector<std::size_t> every(wire.size() + 1);
    for (std::size_t i = 0; i <= wire.size(); ++i) every[i] = i;
    check_same(whole, run(head_request, max_head, wire, every));
  }
  if (generated) {
    const bool too_long = whole.error.find("longer than") != std::string::npos;
    if (whole.last != parse_status::complete &&
        !(max_head < parser::default_max_head && too_long)) {
      std::fprintf(stderr, "built response refused: %s\n", whole.error.c_str());
      fail("a well-formed response parses", __LINE__);
    }
    if (whole.last == parse_status::complete) {
      FUZZ_CHECK(whole.status == want.status);
      FUZZ_CHECK(whole.body == want.body);
      FUZZ_CHECK(whole.size == wire.size());
    }
  }
  return 0;
}
