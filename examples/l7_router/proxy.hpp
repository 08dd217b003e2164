// SPDX-License-Identifier: MIT
// The request path of the router, one coroutine per client connection (proxy.cpp, class
// session): read a request under the header and body limits; admit it (route, credentials,
// required headers, rate limit); forward it to a backend of the route's pool over a pooled
// keep-alive upstream connection (upstream_pool.hpp), retrying on another backend; deliver the
// answer, or the right status when anything fails. The exchange with a backend is in
// exchange.hpp, tunnels in tunnel.hpp, the counters and the stats page in stats.hpp, the
// response cache in cache.hpp.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <list>
#include <memory>
#include <string>

#include <lbkit/lbkit.hpp>

#include "asio.hpp"
#include "cache.hpp"
#include "runtime.hpp"
#include "stats.hpp"
#include "stream.hpp"
#include "upstream_pool.hpp"

namespace l7 {

using std::chrono::steady_clock;

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

}  // namespace l7
