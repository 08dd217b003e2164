// SPDX-License-Identifier: MIT
// The exchange with a backend, below the session's decisions: connecting (connect), sending a
// request and reading the answer's header over a pooled or new connection (exchange), writing
// a message whose framing is settled (write_message), and what each way of failing means for
// the backend and the client (upstream_error, kind_of). No lbkit decision is taken here: the
// session (proxy.cpp) picks the backend, and reports what this file tells it on the lease.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy.hpp"

namespace l7 {

using request = http::request<http::string_body>;

// The completion condition of a write that ends when all of it went out. Asio's transfer_all
// also caps each write call at 64 KiB, so a 64 KiB body behind its header took two sendmsg
// calls, and the client a wake-up for the last few hundred bytes.
inline std::size_t whole(const beast::error_code& ec, std::size_t) {
  return ec ? 0 : std::numeric_limits<std::size_t>::max();
}

// Writes a message header whose framing is settled (a Content-Length, or no body) followed
// by `body` (all of the body, or its first part): the header is formatted into one string
// and sent with the body in one gather write. Beast's serializer does the same through
// generic buffer-sequence views that cost more CPU than the rest of the request path (6% of
// the router's CPU on small answers).
// `head` is the caller's, reused from message to message, and must live until the write ends.
template <bool isRequest, class Fields>
awaitable<std::size_t> write_message(timed_stream& s, const http::header<isRequest, Fields>& h,
                                     asio::const_buffer body, std::string& head,
                                     beast::error_code& ec) {
  head.clear();
  if constexpr (isRequest) {
    head.append(h.method_string()).append(" ").append(h.target()).append(" HTTP/1.1\r\n");
  } else {
    head.append(h.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        .append(std::to_string(h.result_int()))
        .append(" ")
        .append(h.reason())
        .append("\r\n");
  }
  for (const auto& f : h)
    head.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
  head.append("\r\n");
  return asio::async_write(s, std::array<asio::const_buffer, 2>{asio::buffer(head), body}, whole,
                           into(ec));
}

inline asio::const_buffer body_of(const request& m) { return asio::buffer(m.body()); }
inline asio::const_buffer body_of(const response& m) {
  return asio::buffer(m.body().view().data(), m.body().view().size());
}

// How an exchange with a backend failed.
enum class upstream_error {
  none,
  connect,          // refused, unreachable: nothing was sent
  connect_timeout,  // no handshake in time: nothing was sent
  dropped,          // closed or reset before any byte of an answer
  timeout,          // no answer (or no more of it) in time
  io,               // broken in the middle of an answer
  local,            // this host is out of descriptors, buffers or ports: not the backend
  bad_answer,       // an answer that breaks the HTTP/1.1 grammar (RFC 9112): a bad answer
};

// What a failure says about the backend and what the client gets. A connection failure
// (refused, dropped, no handshake) is what an active check sees too, and costs the backend
// nothing to retry elsewhere: such retries need no room in the retry budget, which exists to
// stop retry storms against backends that answer slowly or badly.
struct failure_kind {
  lbkit::outcome outcome;
  http::status status;
  std::string_view why;
  bool any_method;    // a retry is safe whatever the method: nothing reached the backend
  bool needs_budget;  // a retry takes room in the pool's retry budget
  bool retry;         // a retry on another backend may help at all
};

failure_kind kind_of(upstream_error e);

// A failure of reading or writing a backend connection, `answered`: whether any byte of the
// answer had come.
upstream_error upstream_error_of(const beast::error_code& ec, bool answered = true);

// Opens a new connection to the lease's backend.
awaitable<upstream_error> connect(timed_stream& s, const lbkit::lease& l, milliseconds timeout);

using response_parser = http::response_parser<raw_body>;

// The largest answer body read whole before it is passed on: a chunked one, one up to the end
// of the connection, or one the cache may keep. Other bodies of known length go out from the
// read buffer instead.
constexpr std::uint64_t max_buffered_body = 64 * 1024 * 1024;

// A backend's answer whose header has been read into `parser`; its body may still be on the
// wire, behind what `buf` holds. The stream's expiry is the request's deadline.
struct exchange_result {
  upstream_error error = upstream_error::none;
  upstream_pool::stream_ptr stream;
  bool keep_alive = false;  // whether the backend keeps the connection open after this answer
};

// Sends `req` to the lease's backend over a pooled connection (or a new one) and reads the
// answer's header. A pooled connection the backend closed meanwhile fails before any answer
// byte; then the request goes once more over a fresh connection, as nginx does.
awaitable<exchange_result> exchange(thread_state& ts, const lbkit::lease& l, const request& req,
                                    const limits_config& lim, steady_clock::time_point deadline,
                                    beast::flat_buffer& buf, std::string& head,
                                    std::optional<response_parser>& parser);

// A body of known length up to this size is read whole before it is passed on; a longer one
// is streamed through in parts of up to this size.
constexpr std::size_t relay_bytes = 64 * 1024;

// A read buffer from the thread's spares, given back when it goes: room for an answer's
// header (Beast limits it to 8 KiB) and a whole relay_bytes body behind it, so that reading
// the rest of such a body never moves what was read with the header.
class borrowed_buffer {
 public:
  explicit borrowed_buffer(thread_state& ts) : ts_(ts) {
    if (ts.spare_buffers.empty()) {
      b_ = std::make_unique<beast::flat_buffer>();
      b_->reserve(relay_bytes + 16 * 1024);
    } else {
      b_ = std::move(ts.spare_buffers.back());
      ts.spare_buffers.pop_back();
    }
  }
  ~borrowed_buffer() {
    if (ts_.spare_buffers.size() < 64) ts_.spare_buffers.push_back(std::move(b_));
  }
  borrowed_buffer(const borrowed_buffer&) = delete;
  borrowed_buffer& operator=(const borrowed_buffer&) = delete;
  beast::flat_buffer& operator*() const noexcept { return *b_; }

 private:
  thread_state& ts_;
  std::unique_ptr<beast::flat_buffer> b_;
};

}  // namespace l7
