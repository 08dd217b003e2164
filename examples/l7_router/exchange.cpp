// SPDX-License-Identifier: MIT
#include "exchange.hpp"

#include "../common/log.hpp"
#include "framing.hpp"

namespace l7 {
namespace {

// Local failures are logged, at most a few lines a second: under a descriptor shortage they
// come with every request.
examples::rate_limited_log local_failures;

}  // namespace

failure_kind kind_of(upstream_error e) {
  using o = lbkit::outcome;
  using st = http::status;
  switch (e) {
    case upstream_error::connect:
      return {o::connection_failure,
              st::bad_gateway,
              "the backend refused the connection",
              true,
              false,
              true};
    case upstream_error::connect_timeout:
      return {o::connection_failure,
              st::gateway_timeout,
              "the backend did not accept the connection in time",
              true,
              false,
              true};
    case upstream_error::dropped:
      return {o::connection_failure,
              st::bad_gateway,
              "the backend closed the connection without answering",
              false,
              false,
              true};
    case upstream_error::timeout:
      return {o::gateway_failure,
              st::gateway_timeout,
              "the backend did not answer in time",
              false,
              true,
              true};
    case upstream_error::local:
      return {o::none,
              st::service_unavailable,
              "the router is short of descriptors or buffers; try again",
              false,
              false,
              false};
    case upstream_error::bad_answer:  // RFC 9112 §6.3 item 5: closed, discarded, 502
      return {
          o::failure, st::bad_gateway, "the backend's answer is not valid HTTP/1.1", false, true,
          true};
    case upstream_error::io:
    case upstream_error::none:
      break;
  }
  return {o::gateway_failure, st::bad_gateway, "the backend connection failed", false, true, true};
}

upstream_error upstream_error_of(const beast::error_code& ec, bool answered) {
  if (ec == beast::error::timeout) return upstream_error::timeout;
  if (ec.category() == asio::error::get_system_category() && lbkit::is_local_error(ec.value())) {
    return upstream_error::local;
  }
  if (is_malformed(ec)) return upstream_error::bad_answer;
  return answered ? upstream_error::io : upstream_error::dropped;
}

awaitable<upstream_error> connect(timed_stream& s, const lbkit::lease& l, milliseconds timeout) {
  beast::error_code ec;
  s.expires_after(timeout);
  co_await s.async_connect(to_asio(l.address()), into(ec));
  if (ec == beast::error::timeout) co_return upstream_error::connect_timeout;
  if (ec) {
    if (upstream_error_of(ec) == upstream_error::local) {
      local_failures("lbkit_l7_router: connect to %s: %s (not counted against the backend)",
                     l.address().to_string().c_str(), ec.message().c_str());
      co_return upstream_error::local;
    }
    co_return upstream_error::connect;
  }
  s.socket().set_option(tcp::no_delay(true), ec);
  co_return upstream_error::none;
}

awaitable<exchange_result> exchange(thread_state& ts, const lbkit::lease& l, const request& req,
                                    const limits_config& lim, steady_clock::time_point deadline,
                                    beast::flat_buffer& buf, std::string& head,
                                    std::optional<response_parser>& parser) {
  exchange_result out{upstream_error::none, ts.upstream.take(l.backend().serial()), false};
  bool reused = out.stream != nullptr;
  beast::error_code ec;
  for (;;) {
    if (!out.stream) {
      out.stream = std::make_unique<timed_stream>(co_await asio::this_coro::executor);
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
      out.error = co_await connect(*out.stream, l, std::min(lim.connect_timeout, left));
      if (out.error != upstream_error::none) co_return out;
    }
    out.stream->expires_at(deadline);
    co_await write_message(*out.stream, req, body_of(req), head, ec);
    parser.emplace();
    // A body sent on from the read buffer needs no limit; one read whole gets
    // max_buffered_body before it is read.
    parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (req.method() == http::verb::head) parser->skip(true);
    buf.clear();
    if (!ec) co_await http::async_read_header(*out.stream, buf, *parser, into(ec));
    // An interim answer (100 Continue, 103 Early Hints; RFC 9110 §15.2) comes before the
    // final one, which is what the client waits for: skip it (the body went with the request;
    // 101 is the final answer to an upgrade, which takes another path).
    while (!ec && parser->get().result_int() / 100 == 1 &&
           parser->get().result() != http::status::switching_protocols) {
      parser.emplace();
      parser->body_limit(std::numeric_limits<std::uint64_t>::max());
      if (req.method() == http::verb::head) parser->skip(true);
      co_await http::async_read_header(*out.stream, buf, *parser, into(ec));
    }
    if (!ec) {
      out.keep_alive = parser->get().keep_alive();  // before the hop-by-hop fields go
      co_return out;
    }
    if (reused && !parser->got_some() && ec != beast::error::timeout) {
      reused = false;  // a stale keep-alive connection: try a fresh one, once
      out.stream.reset();
      continue;
    }
    out.error = upstream_error_of(ec, parser->got_some());
    co_return out;
  }
}

}  // namespace l7
