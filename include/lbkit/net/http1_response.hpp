// SPDX-License-Identifier: MIT
// http1::response_parser: an incremental, strict parser of one HTTP/1.x response (RFC 9112),
// for bytes from a peer that may be hostile. The HTTP probe reads its answers with it; an
// L7 proxy of its own I/O stack can use it the same way. I/O-free: the caller feeds it the
// bytes it has received and acts on what it reports.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/net/http1.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit::http1 {

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
// the body runs until the peer closes. The heads (interim ones included, so that an endless
// run of 100 Continue is bounded too) and the trailer section are each bounded by max_head.
// Thread safety: not thread-safe (one parser per response).
class response_parser {
 public:
  // The default bound on a response head, interim heads included, and on a chunked trailer
  // section: 64 KiB, a little above Envoy's 60 KiB max_request_headers_kb default and well
  // above HAProxy's 16 KiB buffer. A longer head is an error, not a reason to buffer more.
  static constexpr std::size_t default_max_head = 64 * 1024;

  explicit response_parser(bool head_request, std::size_t max_head = default_max_head) noexcept
      : head_request_(head_request), max_head_(max_head) {}

  // Parses `in` from where the last call stopped. `in` holds every byte received so far: the
  // same bytes as before, perhaps with more at the end. `closed`: the peer closed after them.
  // The verdict (result.hpp): incomplete (feed more bytes; never once `closed`), complete (the
  // response is the first size() bytes), invalid (error() says why). Once complete or invalid,
  // every later call repeats it. has_head() may turn true on any call.
  // Complexity: linear in the bytes not yet parsed (a line is scanned once, however it drips).
  parse_status parse(std::string_view in, bool closed) {
    for (;;) {
      switch (phase_) {
        case phase::status_line:
        case phase::fields:
        case phase::trailers: {
          std::string_view line;
          const auto result = next_line(in, line);
          if (result != line_result::bad &&
              (result == line_result::complete ? pos_ : in.size()) - head_start_ > max_head_) {
            return fail(std::string(phase_ == phase::trailers ? "the chunked trailer section"
                                                              : "the response head") +
                        " is longer than " + std::to_string(max_head_) + " bytes");
          }
          switch (result) {
            case line_result::bad:
              return parse_status::invalid;
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
              return parse_status::incomplete;
            case line_result::complete:
              break;
          }
          if (phase_ == phase::status_line) {
            if (!status_line(line)) return parse_status::invalid;
            phase_ = phase::fields;
          } else if (!line.empty()) {
            if (!field(line, phase_ == phase::trailers)) return parse_status::invalid;
          } else if (phase_ == phase::trailers) {
            phase_ = phase::done;
            return parse_status::complete;
          } else if (!end_of_head()) {
            return parse_status::invalid;
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
              return parse_status::complete;
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
          return parse_status::incomplete;
        }
        case phase::chunk_end: {
          const auto rest = in.substr(pos_, 2);
          if (rest != std::string_view("\r\n").substr(0, rest.size())) {
            return fail("chunk data is not followed by CRLF");
          }
          if (rest.size() < 2)
            return closed ? fail("closed in the middle of a chunk") : parse_status::incomplete;
          pos_ += 2;
          phase_ = phase::chunk_size;
          continue;
        }
        case phase::chunk_size: {
          std::string_view line;
          switch (next_line(in, line)) {
            case line_result::bad:
              return parse_status::invalid;
            case line_result::partial:
              return closed ? fail("closed before the last chunk") : parse_status::incomplete;
            case line_result::complete:
              break;
          }
          if (!chunk_size_line(line)) return parse_status::invalid;
          phase_ = remaining_ == 0 ? phase::trailers : phase::chunk_data;
          head_start_ = pos_;  // the trailer section gets a bound of its own
          continue;
        }
        case phase::close_body:
          body_.append(in.substr(pos_));
          pos_ = in.size();
          if (!closed) return parse_status::incomplete;
          phase_ = phase::done;
          return parse_status::complete;
        case phase::done:
          return parse_status::complete;
        case phase::failed:
          return parse_status::invalid;
      }
    }
  }

  // Has the final head (not an interim 1xx one) been read? From then on status() is the final
  // status code, and a caller that needs no body can act on it without waiting for one.
  bool has_head() const noexcept { return has_head_; }
  // The status code of the head read last: the final one once has_head().
  int status() const noexcept { return status_; }
  // The bytes the response occupies, once parse() has answered complete; what follows them in
  // the input is not this response's.
  std::size_t size() const noexcept { return pos_; }
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

  parse_status fail(std::string why) {
    phase_ = phase::failed;
    error_ = std::move(why);
    return parse_status::invalid;
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
    has_head_ = true;
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
  std::size_t max_head_;
  std::size_t head_start_ = 0;  // where the heads (or the trailer section) being bounded begin
  phase phase_ = phase::status_line;
  std::size_t pos_ = 0;      // the first byte not yet parsed
  std::size_t scanned_ = 0;  // no LF before this offset (from pos_): where a line search resumes
  int status_ = 0;
  bool has_head_ = false;
  int minor_version_ = 1;
  std::optional<std::uint64_t> content_length_;
  std::optional<std::string> transfer_encoding_;  // every Transfer-Encoding value, joined
  std::uint64_t remaining_ = 0;  // of the Content-Length body or of the current chunk
  std::string body_;
  std::string error_;
};

}  // namespace lbkit::http1
