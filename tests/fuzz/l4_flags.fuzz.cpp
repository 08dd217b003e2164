// SPDX-License-Identifier: MIT
// Fuzz target for the value parsers of the L4 proxy's command line (examples/l4_proxy/
// config.hpp): parse_backend, for --backend ADDR:PORT[,weight=N][,id=NAME], and
// parse_duration (examples/common/duration.hpp), for every timeout and interval flag, which
// the L7 router's configuration uses too. --listen,
// --stats, --allow and --deny go straight to endpoint::parse and cidr::parse, which have
// targets of their own. The whole input is the flag's value.
// Properties:
//   1. parse_backend: an accepted spec is one the registry takes (lbkit::validate of the
//      backend passes: a visible-ASCII id of 1..255 bytes, a port, a specified address, a
//      weight within max_weight), its address is endpoint::parse of the text before the first
//      ',', its id the last id= given or else the address text; the accepted set agrees with
//      a reference written from the grammar; a rejection has a message without control
//      characters that starts with "backend ".
//   2. parse_duration: accepted exactly when the reference (digits, then ms, s, m or h, at
//      most max_duration, computed in 128 bits) accepts, with the same value; a value is
//      never negative and, doubled and in nanoseconds (as the proxy uses it), fits in 64 bits;
//      a rejection has a message.
//   3. a whole number followed by '.' or ',' ("1.5s") is refused with a message that asks
//      for a whole number.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../../examples/l4_proxy/config.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message

// 128-bit integers for the reference arithmetic (__extension__: -Wpedantic knows them not).
__extension__ typedef unsigned __int128 u128;
__extension__ typedef __int128 i128;

// The digits of `s`, at most 20 of them (as parse_decimal), as a 128-bit number.
std::optional<u128> digits_value(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  u128 v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v;
}

// --backend's grammar, written out: what parse_backend must accept, as a backend_spec.
std::optional<l4::backend_spec> reference_backend(std::string_view text) {
  const auto comma = text.find(',');
  const auto address = lbkit::endpoint::parse(text.substr(0, comma));
  if (!address) return std::nullopt;
  l4::backend_spec b{*address, 1, address->to_string()};
  if (comma != std::string_view::npos) {
    std::string_view rest = text.substr(comma + 1);
    while (!rest.empty()) {  // one trailing ',' ends the list
      const auto next = rest.find(',');
      const std::string_view item = rest.substr(0, next);
      rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
      if (item.starts_with("weight=")) {
        const auto w = digits_value(item.substr(7));
        if (!w || *w > lbkit::max_weight) return std::nullopt;
        b.weight = static_cast<std::uint32_t>(*w);
      } else if (item.starts_with("id=")) {
        b.id = std::string(item.substr(3));
      } else {
        return std::nullopt;
      }
    }
  }
  // What the registry would refuse at startup, after the listeners are open, is refused here.
  if (!lbkit::validate(lbkit::backend(b.id, b.address, b.weight))) return std::nullopt;
  return b;
}

void check_backend(std::string_view text) {
  const auto b = l4::parse_backend(text);
  const auto want = reference_backend(text);
  if (b.has_value() != want.has_value()) {
    std::fprintf(stderr, "parse_backend(%s) %s, the reference %s\n", lbkit::quote(text).c_str(),
                 b ? "accepts" : "rejects", want ? "accepts" : "rejects");
    if (b) std::fprintf(stderr, "accepted as id %s\n", lbkit::quote(b->id).c_str());
    fail("parse_backend agrees with the reference", __LINE__);
  }
  if (!b) {
    check_message(b.error(), 1536);
    FUZZ_CHECK(b.error().message.starts_with("backend "));
    return;
  }
  FUZZ_CHECK(b->address == want->address);
  FUZZ_CHECK(b->weight == want->weight && b->weight <= lbkit::max_weight);
  FUZZ_CHECK(b->id == want->id && !b->id.empty());
  const auto v = lbkit::validate(lbkit::backend(b->id, b->address, b->weight));
  if (!v) {
    std::fprintf(stderr, "%s\n", v.error().message.c_str());
    fail("an accepted backend is one the registry takes", __LINE__);
  }
}

void check_duration(std::string_view text) {
  const auto d = examples::parse_duration(text);

  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string_view unit = text.substr(digits);
  const u128 scale = unit == "ms"  ? 1
                     : unit == "s" ? 1000
                     : unit == "m" ? 60'000
                     : unit == "h" ? 3'600'000
                                   : 0;
  const auto n = digits_value(text.substr(0, digits));
  std::optional<u128> want;
  if (n && scale != 0 && *n * scale <= static_cast<u128>(examples::max_duration.count())) {
    want = *n * scale;
  }

  if (d.has_value() != want.has_value()) {
    std::fprintf(stderr, "parse_duration(%s) %s, the reference %s\n", lbkit::quote(text).c_str(),
                 d ? "accepts" : "rejects", want ? "accepts" : "rejects");
    fail("parse_duration agrees with the reference", __LINE__);
  }
  if (!d) {
    check_message(d.error(), 1536);
    return;
  }
  FUZZ_CHECK(d->count() >= 0);
  FUZZ_CHECK(static_cast<u128>(d->count()) == *want);
  // The proxy doubles the health interval and adds timeouts to nanosecond clock readings.
  const i128 doubled_ns = static_cast<i128>(d->count()) * 2 * 1'000'000;
  FUZZ_CHECK(doubled_ns <= std::chrono::nanoseconds::max().count());
}

void check_fraction(std::string_view text) {
  const auto d = examples::parse_duration(text);
  const auto digits = text.find_first_not_of("0123456789");
  if (digits != 0 && digits != std::string_view::npos &&
      (text[digits] == '.' || text[digits] == ',')) {
    FUZZ_CHECK(!d);
    FUZZ_CHECK(d.error().message.find("whole number") != std::string::npos);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_backend(text);
  check_duration(text);
  check_fraction(text);
  return 0;
}
