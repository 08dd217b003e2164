// SPDX-License-Identifier: MIT
// What the parts of one L4 event loop share (worker.hpp, udp.hpp): the clock, the counters
// the stats page reads, the state every worker shares, and the epoll registration types.
#pragma once

#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "config.hpp"

namespace l4 {

// Monotonic nanoseconds: the loop's clock, read once per wake-up, and the connect timer's.
inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Per-backend counters of one worker (the stats page sums the workers).
struct backend_counters {
  std::atomic<std::uint64_t> bytes_to{0};    // client → backend
  std::atomic<std::uint64_t> bytes_from{0};  // backend → client
  std::atomic<std::uint64_t> connect_failures{0};
  std::atomic<std::uint64_t> datagrams{0};
};

// Counters of one worker.
struct worker_counters {
  explicit worker_counters(std::size_t backends) : backend(backends) {}
  std::vector<backend_counters> backend;
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> active{0};  // open TCP connections (written by the worker only)
  std::atomic<std::uint64_t> denied{0};
  std::atomic<std::uint64_t> proxy_header_errors{0};
  std::atomic<std::uint64_t> no_backend{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> udp_sessions{0};  // open
  std::atomic<std::uint64_t> udp_dropped{0};
  // Failures of this host, not of a backend: out of descriptors, buffers, memory, local ports.
  std::atomic<std::uint64_t> local_errors{0};
};

// What every worker shares. Built before the workers start; read-only afterwards except
// for the atomics.
struct shared_state {
  const config& cfg;
  lbkit::access_list acl;
  // backend_state → position in cfg.backends, for the counters. Membership is fixed for the
  // proxy's life (the command line sets it), so the map never changes after start.
  std::unordered_map<const lbkit::backend_state*, std::size_t> index;
  std::atomic<std::uint64_t> connections{0};  // open TCP connections, all workers
  std::atomic<bool> stopping{false};
};

// A listening socket a worker owns.
struct listen_socket {
  int fd = -1;
  lbkit::endpoint local;
  bool udp = false;
};

// What an epoll event's data points at: which kind of socket it is, and for a connection's
// two sockets, the connection.
enum class kind : std::uint8_t { wake, tcp_listener, udp_listener, client, server, session };
struct pollable {
  kind k = kind::wake;
  void* owner = nullptr;  // the connection a client/server side belongs to
};
struct listener : pollable {
  listen_socket sock;
  bool paused = false;
};
struct link {
  link* prev = this;
  link* next = this;
  void unlink() noexcept {
    prev->next = next;
    next->prev = prev;
    prev = next = this;
  }
  void push_back(link& l) noexcept {
    l.prev = prev;
    l.next = this;
    prev->next = &l;
    prev = &l;
  }
};

// Registers a socket. Fails only for this host's reasons (ENOMEM, or ENOSPC: the user's
// epoll watch limit), with errno set.
inline bool add(int ep, int fd, pollable* p, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = p;
  return ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

inline void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace l4
