// SPDX-License-Identifier: MIT
// The examples' duration parser (examples/common/duration.hpp), used by every timeout and
// interval flag of the L4 proxy and every duration key of the L7 router's configuration: a
// whole number and a unit, and nothing so long that the programs cannot hold it in
// nanoseconds (tests/fuzz/l4_flags.fuzz.cpp checks the same against a 128-bit reference).
#include "../../examples/common/duration.hpp"

#include <chrono>
#include <string>

#include <doctest/doctest.h>

using examples::parse_duration;
using std::chrono::hours;
using std::chrono::milliseconds;

TEST_CASE("parse_duration: a whole number and a unit") {
  CHECK(*parse_duration("500ms") == milliseconds(500));
  CHECK(*parse_duration("2s") == milliseconds(2000));
  CHECK(*parse_duration("1m") == milliseconds(60'000));
  CHECK(*parse_duration("1h") == milliseconds(3'600'000));
  CHECK(*parse_duration("0ms") == milliseconds(0));  // callers refuse 0 where it means nothing
  for (const std::string bad : {"", "2", "ms", "-1s", "1.5s", "2 s", "2S", "2sec", "1d", " 1s"}) {
    CAPTURE(bad);
    const auto r = parse_duration(bad);
    REQUIRE_FALSE(r);
    CHECK_FALSE(r.error().message.empty());
  }
}

TEST_CASE("parse_duration: a fraction is refused with a pointer to the smaller unit") {
  for (const char* text : {"1.5s", "2,5s", "0.5h"}) {
    CAPTURE(text);
    const auto r = parse_duration(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("whole number") != std::string::npos);
  }
}

TEST_CASE("parse_duration: at most ten years, so that nanoseconds hold it twice over") {
  // 87600h is ten years of 365 days.
  CHECK(*parse_duration("87600h") == hours(87'600));
  CHECK(*parse_duration("5256000m") == hours(87'600));
  CHECK(*parse_duration("315360000s") == hours(87'600));
  // One more, in any unit, is refused: 1000000000h was accepted as 3.6e15 ms, which the L4
  // proxy converts to 3.6e21 ns (past int64: a negative idle timeout) and the health checker
  // doubles.
  for (const std::string too_long :
       {"87601h", "5256001m", "315360001s", "1000000000h", "1000000000m", "9999999999999999999h"}) {
    CAPTURE(too_long);
    const auto r = parse_duration(too_long);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("87600h") != std::string::npos);
  }
  // The bound is on the duration, not on its number: 5e9 ms (58 days) is fine.
  CHECK(*parse_duration("5000000000ms") == milliseconds(5'000'000'000));
  CHECK(*parse_duration("315360000000ms") == hours(87'600));
  CHECK_FALSE(parse_duration("315360000001ms"));
}
