// SPDX-License-Identifier: MIT
// What the fuzz targets check with (and how they read their input). FUZZ_CHECK(cond) aborts, naming
// the target's file, the line and the condition, which libFuzzer reports as a crash and keeps the
// input for; a rejection's message must say what was wrong in one short line of no control bytes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <lbkit/result.hpp>

namespace lbkit::fuzz {

// __builtin_LINE(), __builtin_FILE(): the caller's (clang 14 has no std::source_location).
[[noreturn]] inline void fail(const char* what, int line = __builtin_LINE(),
                              const char* file = __builtin_FILE()) {
  std::fprintf(stderr, "fuzz check failed at %s:%d: %s\n", file, line, what);
  std::abort();
}

// No control bytes: untrusted ones reach a message only through quote(), which escapes them.
// The library's own words may be UTF-8 ("RFC 9110 §5.6.2").
inline bool no_controls(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u != 0x7f;
  });
}

// A rejection says what was wrong, in one short line: `limit` bytes at most (each quote()
// shows 64 bytes of the input at most).
inline void check_message(const lbkit::error& e, std::size_t limit = 1024,
                          int line = __builtin_LINE(), const char* file = __builtin_FILE()) {
  if (e.message.empty()) fail("a rejection's message is not empty", line, file);
  if (e.message.size() > limit) fail("a rejection's message is short", line, file);
  if (!no_controls(e.message)) fail("a rejection's message has no control bytes", line, file);
}

// The next line of a fuzz input that is read as lines ('\n' ends one, and is dropped): it is
// taken off `in`; an empty `in` gives empty lines.
inline std::string_view next_line(std::string_view& in) {
  const auto nl = in.find('\n');
  const std::string_view line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  return line;
}

}  // namespace lbkit::fuzz

#define FUZZ_CHECK(cond) ((cond) ? static_cast<void>(0) : ::lbkit::fuzz::fail(#cond, __LINE__))
