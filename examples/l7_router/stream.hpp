// SPDX-License-Identifier: MIT
// A TCP socket with a deadline, in place of Beast's basic_stream for every connection of the
// router. basic_stream arms and cancels a timer around each read and write: a timer-queue
// insertion and removal, a cancelled handler to run and shared_ptr copies, every time. Here a
// stream keeps one timer, armed only when the deadline moves earlier than where the timer is
// set; a timer that fires before the deadline (which moved later meanwhile) is set again.
// The effect is basic_stream's: once the deadline passes, the operation in progress, or else
// the next one, completes with beast::error::timeout.
#pragma once

#include <chrono>
#include <memory>
#include <utility>

#include "asio.hpp"

namespace l7 {

class timed_stream {
 public:
  using executor_type = executor;
  using clock = std::chrono::steady_clock;

  explicit timed_stream(const executor& ex) : st_(std::make_shared<state>(ex)) {}
  explicit timed_stream(tcp_socket s) : st_(std::make_shared<state>(std::move(s))) {}
  timed_stream(const timed_stream&) = delete;
  timed_stream& operator=(const timed_stream&) = delete;
  ~timed_stream() {
    beast::error_code ec;
    st_->socket.close(ec);
    // No deadline left: a timer that fired already (its handler queued) must not set itself
    // again for a deadline that moved later, which would keep the io_context running for up
    // to a read or send timeout after the stream is gone (a SIGTERM then waited for it).
    st_->at = clock::time_point::max();
    st_->timer.cancel();  // the pending wait (if any) lets go of the state
  }

  executor_type get_executor() noexcept { return st_->socket.get_executor(); }
  tcp_socket& socket() noexcept { return st_->socket; }

  void expires_after(clock::duration d) { expires_at(clock::now() + d); }
  void expires_at(clock::time_point t) {
    st_->idle = clock::duration::zero();
    set(t);
  }
  // An idle deadline: `idle` from now, and again from the end of every read or write that
  // moved bytes, but never later than `hard` (nginx's proxy_read_timeout and send_timeout are
  // such: per read, per write, not for the whole answer). Moving the deadline later costs no
  // timer operation (see arm()).
  void expires_idle(clock::duration idle, clock::time_point hard = clock::time_point::max()) {
    st_->idle = idle;
    st_->hard = hard;
    set(idle_deadline(*st_));
  }
  // No deadline, and no timer left pending (for a tunnel, which keeps its own, and for an
  // idle pooled connection, which must not keep its io_context running).
  void expires_never() {
    st_->at = st_->armed = clock::time_point::max();
    st_->timer.cancel();
  }
  void close() {
    beast::error_code ec;
    st_->socket.close(ec);
  }
  // Cancels the operation in progress, which completes with operation_aborted.
  void cancel() {
    beast::error_code ec;
    st_->socket.cancel(ec);
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& b, Token&& token) {
    return asio::async_initiate<Token, void(beast::error_code, std::size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          if (st_->expired) return fail(std::move(handler), std::size_t{0});
          st_->socket.async_read_some(b, completion(std::move(handler)));
        },
        token, b);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& b, Token&& token) {
    return asio::async_initiate<Token, void(beast::error_code, std::size_t)>(
        [this](auto handler, const ConstBuffers& b) {
          if (st_->expired) return fail(std::move(handler), std::size_t{0});
          st_->socket.async_write_some(b, completion(std::move(handler)));
        },
        token, b);
  }

  template <class Token>
  auto async_connect(const tcp::endpoint& to, Token&& token) {
    return asio::async_initiate<Token, void(beast::error_code)>(
        [this](auto handler, const tcp::endpoint& to) {
          if (st_->expired) return fail(std::move(handler));
          st_->socket.async_connect(to, completion(std::move(handler)));
        },
        token, to);
  }

 private:
  struct state {
    explicit state(const executor& ex) : socket(ex), timer(ex) {}
    explicit state(tcp_socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
    tcp_socket socket;
    steady_timer timer;
    clock::time_point at = clock::time_point::max();     // the deadline
    clock::time_point armed = clock::time_point::max();  // where the timer is set
    bool expired = false;                                // the deadline passed
    clock::duration idle = clock::duration::zero();      // non-zero: an idle deadline
    clock::time_point hard = clock::time_point::max();   // ...capped here
  };

  static clock::time_point idle_deadline(const state& st) {
    const auto now = clock::now();
    return st.hard - now > st.idle ? now + st.idle : st.hard;
  }

  void set(clock::time_point t) {
    st_->at = t;
    st_->expired = false;
    if (t < st_->armed) arm(st_, t);
  }

  static void arm(const std::shared_ptr<state>& st, clock::time_point t) {
    st->armed = t;
    st->timer.expires_at(t);  // a wait already pending completes with operation_aborted
    st->timer.async_wait([st](const beast::error_code& ec) {
      if (ec) return;  // cancelled: set again, or the stream is gone
      st->armed = clock::time_point::max();
      if (clock::now() < st->at) {
        if (st->at != clock::time_point::max()) arm(st, st->at);  // the deadline moved later
        return;
      }
      st->expired = true;
      st->at = clock::time_point::max();
      beast::error_code ignored;
      st->socket.cancel(ignored);
    });
  }

  // The handler of an operation on the socket, reporting a cancellation by the deadline as
  // a timeout. It holds the state, as the operation may outlive the stream.
  template <class Handler>
  auto completion(Handler&& h) {
    return [st = st_, h = std::forward<Handler>(h)](beast::error_code ec, auto... n) mutable {
      if (ec == asio::error::operation_aborted && st->expired) ec = beast::error::timeout;
      if (!ec && st->idle != clock::duration::zero() && (... || (n > 0))) {
        st->at = idle_deadline(*st);  // later: the timer re-arms itself when it fires
      }
      std::move(h)(ec, n...);
    };
  }

  // Completes an operation started after the deadline passed with a timeout, through the
  // stream's executor (never inside the initiating call).
  template <class Handler, class... N>
  void fail(Handler&& h, N... n) {
    asio::post(st_->socket.get_executor(), [h = std::forward<Handler>(h), n...]() mutable {
      std::move(h)(beast::error_code(beast::error::timeout), n...);
    });
  }

  std::shared_ptr<state> st_;
};

}  // namespace l7
