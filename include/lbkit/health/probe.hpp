// SPDX-License-Identifier: MIT
// The health_probe concept and what a probe answers: healthy, or unhealthy with a reason.
//
// A probe is I/O: it talks to one backend and must come back by a deadline. Everything that
// decides health from probe answers (the tracker, outlier detection, the registry) is I/O
// free, so a user with an event loop of their own runs checks their own way and reports the
// answers; lbkit's probes (tcp_connect_probe, http_probe, icmp_echo_probe) are blocking
// conveniences for a checker thread.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

#include "lbkit/endpoint.hpp"

namespace lbkit {

// Why a probe failed, or that it did not.
enum class probe_status : std::uint8_t {
  healthy,
  timeout,        // the deadline passed first
  refused,        // connection refused (nothing listens)
  reset,          // the peer reset or closed the connection before answering
  unreachable,    // no route, host or network unreachable
  bad_response,   // an answer that is not what the protocol allows (garbage, too long)
  bad_status,     // a well-formed answer with an unexpected status
  bad_body,       // the expected bytes were not in the answer
  not_permitted,  // the probe cannot run here (e.g. ICMP without permission)
  error,          // any other error (see the detail)
  // This host ran short of descriptors, buffers, memory or local ports (is_local_error):
  // the answer says nothing about the backend, so trackers count it neither way.
  local_error,
};

constexpr std::string_view to_string(probe_status s) noexcept {
  switch (s) {
    case probe_status::healthy:
      return "healthy";
    case probe_status::timeout:
      return "timeout";
    case probe_status::refused:
      return "connection refused";
    case probe_status::reset:
      return "connection reset";
    case probe_status::unreachable:
      return "unreachable";
    case probe_status::bad_response:
      return "bad response";
    case probe_status::bad_status:
      return "unexpected status";
    case probe_status::bad_body:
      return "unexpected body";
    case probe_status::not_permitted:
      return "not permitted";
    case probe_status::error:
      return "error";
    case probe_status::local_error:
      return "local error";
  }
  return "unknown";
}

// One probe's answer. Thread safety: thread-compatible (a value type).
struct probe_result {
  probe_status status = probe_status::error;
  std::string detail;  // for humans: "HTTP 503", "connect: Connection refused"
  std::chrono::nanoseconds elapsed{0};

  bool healthy() const noexcept { return status == probe_status::healthy; }
};

// The clock of probe deadlines.
using probe_clock = std::chrono::steady_clock;

// A health probe: `probe.probe(target, deadline)` checks `target` and returns by `deadline`
// (plus the few microseconds of returning) whatever the peer does.
// Requirements, for a probe type P:
//   1. `p.probe(endpoint, probe_clock::time_point)` on a const P returns a probe_result.
//   2. It is safe to call concurrently from several threads (a checker probes backends in
//      parallel with one probe object).
//   3. It does not throw for anything the network does; it reports it.
template <class P>
concept health_probe = requires(const P& p, const endpoint& target,
                                probe_clock::time_point deadline) {
  { p.probe(target, deadline) } -> std::same_as<probe_result>;
};

}  // namespace lbkit
