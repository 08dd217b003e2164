// SPDX-License-Identifier: MIT
// tcp_connect_probe: an L4 health check — the TCP handshake, and optionally a send/expect
// exchange (HAProxy's tcp-check send/expect, Envoy's TCP health check payloads).
#pragma once

#include <chrono>
#include <string>
#include <utility>

#include "lbkit/health/detail/socket.hpp"
#include "lbkit/health/probe.hpp"

namespace lbkit {

// Connects to the target with a non-blocking socket; healthy once the handshake completes
// (and, with `expect`, once those bytes arrived). The connection is then closed. With `send`,
// those bytes are written after the handshake (a PING, a banner request); with `expect`, the
// answer must contain them within `max_answer` bytes before the deadline. A peer that
// accepts and stays silent, or drips bytes slowly, fails at the deadline, not later.
// Thread safety: thread-safe (probe() is const and keeps nothing between calls).
// Complexity: one connection per probe; blocks the calling thread up to the deadline.
class tcp_connect_probe {
 public:
  struct options {
    std::string send{};    // written after connecting; empty: nothing
    std::string expect{};  // must appear in the answer; empty: the handshake is enough
    std::size_t max_answer = 4096;
  };

  tcp_connect_probe() = default;
  explicit tcp_connect_probe(options o) : o_(std::move(o)) {}

  probe_result probe(const endpoint& target, probe_clock::time_point deadline) const {
    const auto start = probe_clock::now();
    auto done = [&](detail::io_status s) {
      return probe_result{s.status, std::move(s.detail), probe_clock::now() - start};
    };
    detail::fd conn;
    if (auto s = detail::connect_tcp(target, deadline, conn); !s.ok()) return done(std::move(s));
    if (!o_.send.empty()) {
      if (auto s = detail::send_all(conn.get(), o_.send, deadline); !s.ok()) {
        return done(std::move(s));
      }
    }
    if (o_.expect.empty()) return done({probe_status::healthy, "connected"});
    std::string answer;
    for (;;) {
      std::size_t got = 0;
      if (auto s = detail::recv_some(conn.get(), answer, o_.max_answer, deadline, got); !s.ok()) {
        if (s.status == probe_status::bad_response) s.status = probe_status::bad_body;
        return done(std::move(s));
      }
      if (answer.find(o_.expect) != std::string::npos) {
        return done({probe_status::healthy, "expected bytes received"});
      }
      if (got == 0) {
        return done({probe_status::bad_body, "closed after " + std::to_string(answer.size()) +
                                                 " bytes without the expected ones"});
      }
    }
  }

  const options& config() const noexcept { return o_; }

 private:
  options o_;
};

static_assert(health_probe<tcp_connect_probe>);

}  // namespace lbkit
