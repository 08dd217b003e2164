// SPDX-License-Identifier: MIT
// Shared by the examples: durations in configuration and on command lines.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include <lbkit/lbkit.hpp>

namespace examples {

using std::chrono::milliseconds;

// "500ms", "2s", "1m", "1h": a whole number and a unit; the unit is required, so that "2"
// cannot mean two seconds to one reader and two milliseconds to another.
inline lbkit::result<milliseconds> parse_duration(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string_view unit = text.substr(digits);
  const auto n = lbkit::detail::parse_decimal(text.substr(0, digits), 1'000'000'000);
  if (!n) {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             "duration " + lbkit::detail::quote(text) +
                                 " does not start with a whole number (want e.g. 500ms, 2s, 1m)");
  }
  std::uint64_t scale = 0;
  if (unit == "ms") scale = 1;
  if (unit == "s") scale = 1000;
  if (unit == "m") scale = 60'000;
  if (unit == "h") scale = 3'600'000;
  if (scale == 0) {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             "duration " + lbkit::detail::quote(text) +
                                 " needs a unit: ms, s, m or h (e.g. 500ms, 2s)");
  }
  return milliseconds(static_cast<std::int64_t>(*n * scale));
}

}  // namespace examples
