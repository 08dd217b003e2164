// SPDX-License-Identifier: MIT
// Fuzz target for the parts of lbkit/net/sticky_session.hpp that http_request.fuzz.cpp does
// not reach: unpadded base64url decoding on its own, parse_key (the configured hex key),
// validate_cookie_name, find_cookie with any cookie name, SipHash-2-4 fed in pieces, and the
// documented MAC of a cookie. The first byte is a split point, the next 16 a key; the rest is
// split at '\n' into a cookie name, a backend id, base64url text, a Cookie header and key
// text. Properties:
//   1. decode_base64url accepts exactly the canonical unpadded encodings (a reference decoder
//      with the RFC 4648 §5 alphabet), and what it decodes encodes back to its input; any
//      bytes encode to base64url_size() characters that decode back to them.
//   2. siphash24 equals a plain reference implementation of SipHash-2-4, and the incremental
//      state gives the same tag whatever the pieces.
//   3. parse_key accepts exactly 32 hex digits, giving their bytes, and its messages never
//      repeat the key (no run of eight hex digits).
//   4. validate_cookie_name accepts exactly the RFC 9110 tokens; for an accepted name,
//      set_cookie's value is found again by find_cookie in the Set-Cookie text and decodes to
//      the id, and a value made with the reference MAC over "lbkit sticky_cookie v1:" name
//      "=" id decodes too.
//   5. find_cookie with any name agrees with a reference that follows its comment.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/net/sticky_session.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message, next_line

// --- references ------------------------------------------------------------------------

constexpr std::string_view b64_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// RFC 4648 §5 without padding, strict: every quantum's unused bits zero, no 4k+1 length.
std::optional<std::string> reference_b64_decode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::vector<int> v;
  for (char c : in) {
    const auto at = b64_alphabet.find(c);
    if (at == std::string_view::npos) return std::nullopt;
    v.push_back(static_cast<int>(at));
  }
  std::string out;
  for (std::size_t i = 0; i < v.size(); i += 4) {
    const std::size_t n = std::min<std::size_t>(4, v.size() - i);
    std::uint32_t q = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      q = q << 6 | static_cast<std::uint32_t>(j < n ? v[i + j] : 0);
    }
    const std::size_t bytes = n == 4 ? 3 : n - 1;  // 2 chars: 1 byte, 3 chars: 2 bytes
    // The bits past the last whole byte must be zero, or two texts would give one value.
    if (bytes < 3 && (q & (0xffffffu >> (8 * bytes))) != 0) return std::nullopt;
    for (std::size_t j = 0; j < bytes; ++j) out += static_cast<char>(q >> (16 - 8 * j) & 0xff);
  }
  return out;
}

std::uint64_t rotl(std::uint64_t x, int b) { return x << b | x >> (64 - b); }

// SipHash-2-4 as the paper's pseudocode has it, one message block at a time.
std::uint64_t reference_siphash(const lbkit::siphash_key& key, std::string_view m) {
  std::uint64_t k0 = 0, k1 = 0;
  for (int i = 7; i >= 0; --i) {
    k0 = k0 << 8 | key[static_cast<std::size_t>(i)];
    k1 = k1 << 8 | key[static_cast<std::size_t>(8 + i)];
  }
  std::uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL,
                v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
  auto round = [&] {
    v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);
    v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;
    v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;
    v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);
  };
  std::string padded(m);
  padded.resize(m.size() / 8 * 8 + 8, '\0');
  padded.back() = static_cast<char>(m.size() & 0xff);
  for (std::size_t i = 0; i < padded.size(); i += 8) {
    std::uint64_t w = 0;
    for (int j = 7; j >= 0; --j) w = w << 8 | static_cast<unsigned char>(padded[i + j]);
    v3 ^= w;
    round(), round();
    v0 ^= w;
  }
  v2 ^= 0xff;
  round(), round(), round(), round();
  return v0 ^ v1 ^ v2 ^ v3;
}

bool reference_tchar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

// find_cookie's comment: pairs split at ';', trimmed; the first whose trimmed name is `name`.
std::optional<std::string_view> reference_find_cookie(std::string_view h, std::string_view name) {
  if (name.empty()) return std::nullopt;
  std::size_t from = 0;
  while (from < h.size()) {
    auto semi = h.find(';', from);
    if (semi == std::string_view::npos) semi = h.size();
    const std::string_view pair = h.substr(from, semi - from);
    from = semi + 1;
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
    std::string_view v = trim(pair.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return v;
  }
  return std::nullopt;
}

// --- checks ----------------------------------------------------------------------------

void check_base64url(std::string_view text) {
  std::string out(text.size() * 3 / 4 + 1, '\0');
  const auto n = lbkit::decode_base64url(text, out.data());
  const auto want = reference_b64_decode(text);
  FUZZ_CHECK(n.has_value() == want.has_value());
  if (n) {
    FUZZ_CHECK(out.substr(0, *n) == *want);
    std::string again;
    lbkit::append_base64url(again, *want);
    FUZZ_CHECK(again == text);
  }
  // Any bytes: encode, then decode.
  std::string enc;
  lbkit::append_base64url(enc, text);
  FUZZ_CHECK(enc.size() == lbkit::base64url_size(text.size()));
  std::string dec(enc.size() * 3 / 4 + 1, '\0');
  const auto m = lbkit::decode_base64url(enc, dec.data());
  FUZZ_CHECK(m && dec.substr(0, *m) == text);
}

void check_siphash(const lbkit::siphash_key& key, std::string_view m, std::size_t split) {
  const std::uint64_t want = reference_siphash(key, m);
  FUZZ_CHECK(lbkit::siphash24(key, m) == want);
  split = std::min(split, m.size());
  lbkit::detail::siphash24_state s(key);
  s.update(m.substr(0, split));
  const auto copy = s;  // continues from the prefix, as sticky_cookie's name state does
  FUZZ_CHECK(s.update(m.substr(split)).finish() == want);
  lbkit::detail::siphash24_state bytewise(copy);
  for (const char c : m.substr(split)) bytewise.update(std::string_view(&c, 1));
  FUZZ_CHECK(bytewise.finish() == want);
}

void check_parse_key(std::string_view hex) {
  const auto k = lbkit::sticky_cookie::parse_key(hex);
  bool want = hex.size() == 32;
  lbkit::siphash_key bytes{};
  for (std::size_t i = 0; want && i < 32; ++i) {
    const int d = lbkit::hex_digit(hex[i]);
    if (d < 0) want = false;
    bytes[i / 2] = static_cast<std::uint8_t>(bytes[i / 2] << 4 | (d & 0xf));
  }
  FUZZ_CHECK(k.has_value() == want);
  if (k) {
    FUZZ_CHECK(*k == bytes);
    return;
  }
  const std::string& msg = k.error().message;
  FUZZ_CHECK(!msg.empty());
  std::size_t run = 0;
  for (const char c : msg) {
    run = lbkit::hex_digit(c) >= 0 ? run + 1 : 0;
    FUZZ_CHECK(run < 8);  // the message never repeats the key
  }
}

void check_cookie(const lbkit::siphash_key& key, std::string_view name, std::string_view id) {
  const bool token = !name.empty() && std::all_of(name.begin(), name.end(), reference_tchar);
  const auto valid = lbkit::validate_cookie_name(name);
  FUZZ_CHECK(valid.has_value() == token);
  if (!token) {
    FUZZ_CHECK(!valid.error().message.empty());
    return;
  }
  const lbkit::sticky_cookie sticky(key, name);
  if (id.empty() || id.size() > lbkit::max_id_length) return;
  const std::string value = sticky.encode(id);
  FUZZ_CHECK(value.size() <= lbkit::sticky_cookie::max_value_size);
  const auto back = sticky.decode(value);
  FUZZ_CHECK(back && *back == id);

  // The Set-Cookie text carries the value where a Cookie header would.
  const std::string set = sticky.set_cookie(id, {.max_age = std::chrono::seconds(60)});
  const auto found = lbkit::find_cookie(set, name);
  FUZZ_CHECK(found && *found == value);

  // The MAC is the documented one: SipHash-2-4 of the label, the name, '=' and the id.
  const std::uint64_t tag =
      reference_siphash(key, "lbkit sticky_cookie v1:" + std::string(name) + "=" + std::string(id));
  char tag_bytes[8];
  for (int i = 0; i < 8; ++i) tag_bytes[i] = static_cast<char>(tag >> (8 * i));
  std::string made;
  lbkit::append_base64url(made, id);
  made += '.';
  lbkit::append_base64url(made, std::string_view(tag_bytes, 8));
  FUZZ_CHECK(made == value);
  // One bit off anywhere in the tag is refused.
  made.back() = made.back() == 'A' ? 'Q' : 'A';
  FUZZ_CHECK(!sticky.decode(made) || made == value);
}

void check_find_cookie(std::string_view header, std::string_view name) {
  const auto got = lbkit::find_cookie(header, name);
  const auto want = reference_find_cookie(header, name);
  FUZZ_CHECK(got.has_value() == want.has_value());
  if (got) {
    FUZZ_CHECK(*got == *want);
    FUZZ_CHECK(got->data() >= header.data() &&
               got->data() + got->size() <= header.data() + header.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 17) return 0;
  const std::size_t split = data[0];
  lbkit::siphash_key key{};
  std::copy(data + 1, data + 17, key.begin());
  std::string_view in(reinterpret_cast<const char*>(data) + 17, size - 17);
  const std::string_view whole = in;
  const std::string_view name = next_line(in), id = next_line(in), b64 = next_line(in),
                         header = next_line(in), hex = next_line(in);

  check_base64url(b64);
  check_siphash(key, whole, split);
  check_parse_key(hex);
  check_cookie(key, name, id);
  check_find_cookie(header, name);
  check_find_cookie(header, trim(name));
  return 0;
}
