// SPDX-License-Identifier: MIT
// Boost.Asio and Beast for the router, included one way everywhere. Boost 1.74's
// awaitable.hpp uses std::exchange without <utility>, and on clang 14 with libstdc++ Asio
// does not detect coroutine support (the build defines BOOST_ASIO_HAS_CO_AWAIT and
// BOOST_ASIO_HAS_STD_COROUTINE for clang); see PITFALLS.md.
#pragma once

#include <coroutine>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace l7 {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
// co_await op(..., into(ec)) stores a failure in ec instead of throwing it.
inline auto into(beast::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }
}  // namespace l7
