// SPDX-License-Identifier: MIT
// The request path of the router, one coroutine per client connection: read a request under
// the header and body limits, route it, check it (authentication, required headers, rate
// limit), forward it to a backend from the route's pool over a pooled keep-alive upstream
// connection (retrying idempotent requests on another backend), and answer the client with
// the right status when anything fails.
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include <lbkit/lbkit.hpp>

#include "asio.hpp"
#include "cache.hpp"
#include "runtime.hpp"
#include "stream.hpp"

namespace l7 {

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

// A thread's counters for the stats page: written by their thread, read by the stats page.
struct counters {
  using counter = std::atomic<std::uint64_t>;
  counter connections_active{0}, connections_total{0}, connections_refused{0};
  counter requests{0};
  std::array<counter, 5> responses{};  // 1xx .. 5xx
  counter retries{0}, retries_over_budget{0};
  counter cache_hits{0}, cache_misses{0};
  counter tunnels_active{0}, tunnels_total{0};
  counter client_timeouts{0};     // header, idle-between-requests excluded
  counter upstream_truncated{0};  // streamed answers the backend broke off

  static void add(counter& c, std::int64_t d = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(d),
            std::memory_order_relaxed);  // one writer: no read-modify-write needed
  }
};

// What one event-loop thread owns.
struct thread_state {
  unsigned index = 0;
  std::shared_ptr<runtime> rt;  // replaced on reload, by a task posted to this thread
  upstream_pool upstream;
  std::size_t max_connections = 0;  // this thread's share of limits.max_connections
  counters stats;
  // 64 KiB read buffers for backend answers, lent to one exchange at a time: Beast reads as
  // much as a buffer has room for, so a roomy one reads a large body in a few calls instead of
  // a hundred, and only the exchanges in flight hold one.
  std::vector<std::unique_ptr<beast::flat_buffer>> spare_buffers;
  bool stopping = false;  // SIGTERM: answer, then close

  // Clients waiting for a request's first byte (new ones, and between requests), the one
  // idle longest first: at the connection limit it is closed to make room for a new client,
  // as nginx reuses its idle connections, so an idle flood cannot lock everyone out.
  struct idle_client {
    timed_stream* stream;
    std::list<idle_client*>::iterator at{};
    bool listed = false;
  };
  std::list<idle_client*> idle_clients;
  void add_idle(idle_client& c) {
    c.at = idle_clients.insert(idle_clients.end(), &c);
    c.listed = true;
  }
  void remove_idle(idle_client& c) {
    if (c.listed) idle_clients.erase(c.at);
    c.listed = false;
  }
  // Ends the wait of the client idle longest (it closes); false if none waits.
  bool evict_idle() {
    if (idle_clients.empty()) return false;
    idle_client* c = idle_clients.front();
    remove_idle(*c);
    c->stream->cancel();
    return true;
  }
};

namespace detail_ {

inline bool idempotent(http::verb v) {
  return v == http::verb::get || v == http::verb::head || v == http::verb::options ||
         v == http::verb::put || v == http::verb::delete_ || v == http::verb::trace;
}

// RFC 9110 §7.6.1: Connection and the fields it names, plus the classic hop-by-hop fields,
// apply to one hop only.
template <class Fields>
void remove_hop_by_hop(Fields& f) {
  std::vector<std::string> named;
  lbkit::http1::for_each_element(f[http::field::connection],
                                 [&](std::string_view t) { named.emplace_back(t); });
  for (const auto& n : named) f.erase(n);
  for (auto field :
       {http::field::connection, http::field::keep_alive, http::field::proxy_connection,
        http::field::te, http::field::trailer, http::field::transfer_encoding, http::field::upgrade,
        http::field::proxy_authorization, http::field::proxy_authenticate}) {
    f.erase(field);
  }
}

inline response error_response(http::status s, unsigned version, std::string_view why) {
  response res{s, version};
  res.set(http::field::server, "lbkit_l7_router");
  res.set(http::field::content_type, "text/plain");
  const std::string text = std::string(http::obsolete_reason(s)) + ": " + std::string(why) + "\n";
  res.body().assign(text);
  res.prepare_payload();
  return res;
}

inline bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace detail_

// Serves one client connection until it closes, errs, idles out, or the router stops.
awaitable<void> serve(tcp_socket socket, thread_state& ts);

// Upkeep of a thread, once a second until it stops: closes stale upstream connections.
awaitable<void> upkeep(thread_state& ts);

// On SIGTERM, on the thread: keep-alive clients waiting between requests are closed now, and
// the others after their current request; idle upstream connections are closed, and no more
// are kept.
void stop_clients(thread_state& ts);

// The stats page: `key value` lines summed over the threads, then one `backend key=value ...`
// line per backend of each pool of `rt`.
std::string stats_text(const runtime& rt, const std::vector<std::unique_ptr<thread_state>>& threads,
                       std::chrono::steady_clock::time_point started);

}  // namespace l7
