// SPDX-License-Identifier: MIT
// Shared by the examples: durations in configuration and on command lines.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include <lbkit/lbkit.hpp>

namespace examples {

using std::chrono::milliseconds;

// The longest duration parse_duration accepts: ten years (87600h). The programs add durations
// to nanosecond clock readings and double some (a health check's down interval), so a longer
// one, which is a typo or a "never", could overflow int64 nanoseconds (2^63 ns is 292 years;
// "1000000000h" would be 3.6e21 ns); this bound leaves them room to spare.
inline constexpr milliseconds max_duration = std::chrono::hours(87'600);

// "500ms", "2s", "1m", "1h": a whole number and a unit; the unit is required, so that "2"
// cannot mean two seconds to one reader and two milliseconds to another; a fraction ("1.5s")
// is refused with a pointer to the smaller unit. At most max_duration.
inline lbkit::result<milliseconds> parse_duration(std::string_view text) {
  using lbkit::quote;
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string_view unit = text.substr(digits);
  if (digits == 0) {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             "duration " + quote(text) +
                                 " does not start with a whole number (want e.g. 500ms, 2s, 1m)");
  }
  if (unit.starts_with('.') || unit.starts_with(',')) {
    return lbkit::make_error(
        lbkit::errc::invalid_argument,
        "duration " + quote(text) + " is not a whole number of a unit (for 1.5s write 1500ms)");
  }
  std::uint64_t scale = 0;
  if (unit == "ms") scale = 1;
  if (unit == "s") scale = 1000;
  if (unit == "m") scale = 60'000;
  if (unit == "h") scale = 3'600'000;
  if (scale == 0) {
    return lbkit::make_error(
        lbkit::errc::invalid_argument,
        "duration " + quote(text) + " needs a unit: ms, s, m or h (e.g. 500ms, 2s)");
  }
  // n <= 3.2e11 (max_duration in ms) and scale <= 3.6e6, so the product fits in 64 bits.
  const auto max = static_cast<std::uint64_t>(max_duration.count());
  const auto n = lbkit::parse_decimal(text.substr(0, digits), max);
  if (!n || *n * scale > max) {
    return lbkit::make_error(
        lbkit::errc::out_of_range,
        "duration " + quote(text) + " is out of range: at most 87600h (ten years)");
  }
  return milliseconds(static_cast<std::int64_t>(*n * scale));
}

}  // namespace examples
