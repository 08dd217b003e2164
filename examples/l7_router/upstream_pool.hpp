// SPDX-License-Identifier: MIT
// The router's idle keep-alive connections to backends, per thread.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>

#include "asio.hpp"
#include "stream.hpp"

namespace l7 {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Idle keep-alive connections to backends, per thread (no lock): reused so that a busy
// router does not open a connection per request and run out of ephemeral ports.
class upstream_pool {
 public:
  // A connection to `backend` idle for less than its timeout, if one is kept.
  // Held by pointer: a timed_stream is neither copied nor moved.
  using stream_ptr = std::unique_ptr<timed_stream>;
  stream_ptr take(std::uint64_t backend) {
    auto it = idle_.find(backend);
    if (it == idle_.end()) return nullptr;
    auto& q = it->second;
    const auto now = steady_clock::now();
    while (!q.empty()) {
      idle c = std::move(q.back());
      q.pop_back();
      if (now < c.expires && c.stream->socket().is_open()) return std::move(c.stream);
    }
    return nullptr;
  }
  // Keeps `s` for reuse for `timeout`, unless `max_idle` are kept already.
  void give(std::uint64_t backend, stream_ptr s, std::size_t max_idle, milliseconds timeout) {
    auto& q = idle_[backend];
    if (closed_ || q.size() >= max_idle) return;  // closes s
    q.push_back({std::move(s), steady_clock::now() + timeout});
  }
  // Closes the idle connections and keeps no more (the router is stopping: an idle connection
  // still has its deadline timer pending, which would keep the thread's io_context running;
  // and none may outlive its io_context).
  void close() {
    closed_ = true;
    idle_.clear();
  }
  // Closes the idle connections now (a reload: the new configuration's backends have new
  // states, so none of these would be taken again; left, they would linger to their timeout).
  void drop_idle() { idle_.clear(); }
  // Closes the connections past their timeout, and those the backend closed or wrote to
  // (nothing may arrive on an idle HTTP/1.1 connection), so that none lingers in CLOSE_WAIT
  // or holds a backend that left with a reload.
  void sweep() {
    const auto now = steady_clock::now();
    for (auto it = idle_.begin(); it != idle_.end();) {
      auto& q = it->second;
      std::erase_if(q, [&](idle& c) {
        char byte;
        return now >= c.expires ||
               ::recv(c.stream->socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
      });
      it = q.empty() ? idle_.erase(it) : std::next(it);
    }
  }

 private:
  struct idle {
    stream_ptr stream;
    steady_clock::time_point expires;
  };
  std::unordered_map<std::uint64_t, std::deque<idle>> idle_;
  bool closed_ = false;
};

}  // namespace l7
