// SPDX-License-Identifier: MIT
// The byte tunnel of CONNECT and WebSocket upgrades: two pumps, one per direction, and an
// idle timer that closes both when nothing went through for a while.
#pragma once

#include <chrono>
#include <vector>

#include "asio.hpp"

namespace l7 {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// The two directions of a tunnel and when bytes last went through either.
struct tunnel_state {
  steady_clock::time_point last;
  int open = 2;  // pumps still running
  steady_timer wake;
};

// Copies from → to until end of stream (passed on as a half-close) or an error (which closes
// both sockets, ending the other direction too).
inline awaitable<void> pump(tunnel_state& st, tcp_socket& from, tcp_socket& to) {
  std::vector<char> buf(16 * 1024);
  beast::error_code ec;
  for (;;) {
    const std::size_t n = co_await from.async_read_some(asio::buffer(buf), into(ec));
    if (!ec && n > 0) co_await asio::async_write(to, asio::buffer(buf.data(), n), into(ec));
    if (ec == asio::error::eof) {
      to.shutdown(tcp_socket::shutdown_send, ec);
      break;
    }
    if (ec) {
      from.close(ec);
      to.close(ec);
      break;
    }
    st.last = steady_clock::now();
  }
  --st.open;
  st.wake.cancel();
}

// A byte tunnel between a and b until both directions end, or nothing went through for
// `idle` (then both are closed).
inline awaitable<void> tunnel(tcp_socket& a, tcp_socket& b, milliseconds idle) {
  const auto ex = co_await asio::this_coro::executor;
  tunnel_state st{steady_clock::now(), 2, steady_timer(ex)};
  asio::co_spawn(ex, pump(st, a, b), asio::detached);
  asio::co_spawn(ex, pump(st, b, a), asio::detached);
  bool cut = false;
  beast::error_code ec;
  while (st.open > 0) {  // the pumps run on this thread too: no lock
    st.wake.expires_at(cut ? steady_clock::time_point::max() : st.last + idle);
    co_await st.wake.async_wait(into(ec));
    if (!cut && st.open > 0 && steady_clock::now() - st.last >= idle) {
      cut = true;
      a.close(ec);
      b.close(ec);
    }
  }
}

}  // namespace l7
