// SPDX-License-Identifier: MIT
// Boost.Asio and Beast for the router, included one way everywhere. Boost 1.74's
// awaitable.hpp uses std::exchange without <utility>, and on clang 14 with libstdc++ Asio
// does not detect coroutine support (the build defines BOOST_ASIO_HAS_CO_AWAIT and
// BOOST_ASIO_HAS_STD_COROUTINE for clang); see PITFALLS.md.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstring>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <lbkit/endpoint.hpp>

namespace l7 {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
// Every socket, timer and coroutine of the router runs on one io_context's own executor type,
// not Asio's default type-erased any_io_executor: that one copies and destroys a polymorphic
// executor around every operation (2% of the router's CPU on small requests).
using executor = asio::io_context::executor_type;
template <class T = void>
using awaitable = asio::awaitable<T, executor>;
using tcp_socket = asio::basic_stream_socket<tcp, executor>;
using tcp_acceptor = asio::basic_socket_acceptor<tcp, executor>;
using steady_timer =
    asio::basic_waitable_timer<std::chrono::steady_clock,
                               asio::wait_traits<std::chrono::steady_clock>, executor>;

// co_await op(..., into(ec)) stores a failure in ec instead of throwing it.
inline auto into(beast::error_code& ec) {
  return asio::redirect_error(asio::use_awaitable_t<executor>{}, ec);
}

// Endpoints between lbkit and Asio, through the socket address both understand.
inline tcp::endpoint to_asio(const lbkit::endpoint& e) {
  sockaddr_storage ss{};
  const socklen_t len = e.to_sockaddr(ss);
  tcp::endpoint out;
  std::memcpy(out.data(), &ss, len);
  out.resize(len);
  return out;
}
inline lbkit::endpoint to_lbkit(const tcp::endpoint& e) {
  auto r = lbkit::endpoint::from_sockaddr(e.data(), static_cast<socklen_t>(e.size()));
  return r ? *r : lbkit::endpoint();
}
}  // namespace l7
