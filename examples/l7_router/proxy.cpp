// SPDX-License-Identifier: MIT
#include "proxy.hpp"

#include <algorithm>
#include <cstring>
#include <ranges>

namespace l7 {
namespace {

using detail_::error_response;

lbkit::endpoint to_lbkit(const tcp::endpoint& e) {
  auto r = lbkit::endpoint::from_sockaddr(e.data(), static_cast<socklen_t>(e.size()));
  return r ? *r : lbkit::endpoint();
}
tcp::endpoint to_asio(const lbkit::endpoint& e) {
  sockaddr_storage ss{};
  const socklen_t len = e.to_sockaddr(ss);
  tcp::endpoint out;
  std::memcpy(out.data(), &ss, len);
  out.resize(len);
  return out;
}

// How an exchange with a backend failed, for the status the client gets.
enum class upstream_error { none, connect, timeout, io };

struct exchange_result {
  upstream_error error = upstream_error::none;
  http::response<http::string_body> response;
};

// Sends `req` to the lease's backend over a pooled connection (or a new one) and reads the
// answer. A pooled connection the backend closed meanwhile fails before any answer byte;
// then the request goes once more over a fresh connection, as nginx does.
asio::awaitable<exchange_result> exchange(thread_state& ts, const pool& p,
                                          const lbkit::lease& l,
                                          const http::request<http::string_body>& req,
                                          const limits_config& lim) {
  const std::uint64_t key = l.backend().serial();
  std::optional<beast::tcp_stream> s = ts.upstream.take(key, p.config().upstream_idle_timeout);
  bool reused = s.has_value();
  beast::error_code ec;
  for (;;) {
    if (!s) {
      s.emplace(co_await asio::this_coro::executor);
      s->expires_after(lim.connect_timeout);
      co_await s->async_connect(to_asio(l.address()), into(ec));
      if (ec) {
        co_return exchange_result{ec == beast::error::timeout ? upstream_error::timeout
                                                               : upstream_error::connect,
                                  {}};
      }
      s->socket().set_option(tcp::no_delay(true), ec);
    }
    s->expires_after(lim.request_timeout);
    co_await http::async_write(*s, req, into(ec));
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (req.method() == http::verb::head) parser.skip(true);
    beast::flat_buffer buf;
    if (!ec) co_await http::async_read(*s, buf, parser, into(ec));
    if (!ec) {
      exchange_result out{upstream_error::none, parser.release()};
      if (out.response.keep_alive() && buf.size() == 0) {
        ts.upstream.give(key, std::move(*s), p.config().max_idle);
      }
      co_return out;
    }
    if (reused && !parser.got_some() && ec != beast::error::timeout) {
      reused = false;  // a stale keep-alive connection: try a fresh one, once
      s.reset();
      continue;
    }
    co_return exchange_result{ec == beast::error::timeout ? upstream_error::timeout
                                                           : upstream_error::io,
                              {}};
  }
}

// The value of a credential the route asks for, or empty.
std::string_view credential(const http::request<http::string_body>& req, auth_kind k) {
  if (k == auth_kind::api_key) return req["X-API-Key"];
  const std::string_view h = req[http::field::authorization];
  if (h.size() > 7 && beast::iequals(h.substr(0, 7), "Bearer ")) return h.substr(7);
  return {};
}

}  // namespace

asio::awaitable<void> serve(tcp::socket socket, thread_state& ts) {
  beast::error_code ec;
  const lbkit::endpoint peer = to_lbkit(socket.remote_endpoint(ec));
  const std::string peer_ip = peer.address().to_string();
  socket.set_option(tcp::no_delay(true), ec);
  beast::tcp_stream client(std::move(socket));
  beast::flat_buffer buffer;
  bool first = true;

  for (;; first = false) {
    const std::shared_ptr<runtime> rt = ts.rt;  // this request's configuration
    const limits_config& lim = rt->cfg.limits;
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(lim.max_header_bytes));
    parser.body_limit(lim.max_body_bytes);
    // The first request must arrive within the header timeout (slowloris); a kept-alive
    // connection may idle longer between requests.
    client.expires_after(first ? lim.header_timeout : lim.idle_timeout);
    co_await http::async_read_header(client, buffer, parser, into(ec));
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      co_return;
    }
    auto reply = [&](http::response<http::string_body> res,
                     bool keep) -> asio::awaitable<bool> {
      res.keep_alive(keep);
      client.expires_after(lim.request_timeout);
      beast::error_code wec;
      co_await http::async_write(client, res, into(wec));
      co_return !wec && keep;
    };
    if (ec == http::error::header_limit) {
      co_await reply(error_response(http::status::request_header_fields_too_large, 11,
                                    "the request header is above the limit"),
                     false);
      co_return;
    }
    if (ec) {
      co_await reply(error_response(http::status::bad_request, 11, ec.message()), false);
      co_return;
    }
    const auto started = steady_clock::now();
    auto& head = parser.get();
    const unsigned version = head.version();
    const bool client_keep_alive = head.keep_alive();

    std::vector<lbkit::request_header> fields;
    fields.reserve(16);
    for (const auto& f : head) fields.push_back({f.name_string(), f.value()});
    const std::string_view target = head.target();
    const lbkit::request_view view{head.method_string(), head[http::field::host], target, fields};
    auto log = [&](unsigned status, std::string_view backend) {
      if (!rt->cfg.access_log) return;
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                          steady_clock::now() - started)
                          .count();
      std::printf("%s %.*s %.*s %u %.*s %lldus\n", peer_ip.c_str(),
                  static_cast<int>(view.method.size()), view.method.data(),
                  static_cast<int>(std::min<std::size_t>(target.size(), 512)), target.data(),
                  status, static_cast<int>(backend.size()), backend.data(),
                  static_cast<long long>(us));
      std::fflush(stdout);
    };
    auto fail = [&](http::status s, std::string_view why) -> asio::awaitable<bool> {
      log(static_cast<unsigned>(s), "-");
      // The body of a refused request may still be on the wire: close rather than read it.
      const bool keep = client_keep_alive && parser.is_done();
      co_return co_await reply(error_response(s, version, why), keep);
    };

    const std::size_t* index = rt->table.match(view);
    if (index == nullptr) {
      if (co_await fail(http::status::not_found, "no route for this request")) continue;
      co_return;
    }
    live_route& route = rt->routes[*index];
    const route_config& rc = *route.config;

    std::string_view cred;
    if (rc.auth != auth_kind::none) {
      cred = credential(head, rc.auth);
      if (cred.empty()) {
        if (co_await fail(http::status::unauthorized, "credentials are required")) continue;
        co_return;
      }
      const auto& keys = rc.auth == auth_kind::api_key ? rt->cfg.api_keys : rt->cfg.bearer_tokens;
      if (std::none_of(keys.begin(), keys.end(),
                       [&](const std::string& k) { return detail_::constant_time_equal(k, cred); })) {
        if (co_await fail(http::status::forbidden, "these credentials are not accepted")) continue;
        co_return;
      }
    }
    for (const auto& h : rc.required_headers) {
      if (head.find(h) == head.end()) {
        if (co_await fail(http::status::bad_request, "missing header " + h)) continue;
        co_return;
      }
    }
    if (route.limiter) {
      const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           steady_clock::now().time_since_epoch())
                           .count();
      const auto d = rc.rate_limit.per_key ? route.limiter->acquire(cred, now)
                                           : route.limiter->acquire(peer.address(), now);
      if (!d.allowed) {
        auto res = error_response(http::status::too_many_requests, version, "rate limited");
        const auto secs = d.retry_after == std::chrono::nanoseconds::max()
                              ? 3600
                              : std::max<long long>(1, std::chrono::ceil<std::chrono::seconds>(
                                                           d.retry_after)
                                                           .count());
        res.set(http::field::retry_after, std::to_string(secs));
        log(429, "-");
        if (co_await reply(std::move(res), client_keep_alive && parser.is_done())) continue;
        co_return;
      }
    }

    // The body, under the route's limit.
    if (rc.max_body_bytes) parser.body_limit(*rc.max_body_bytes);
    if (!parser.is_done()) {
      if (beast::iequals(head[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, version};
        co_await http::async_write(client, cont, into(ec));
        if (ec) co_return;
      }
      client.expires_after(lim.request_timeout);
      co_await http::async_read(client, buffer, parser, into(ec));
      if (ec == http::error::body_limit) {
        co_await fail(http::status::payload_too_large, "the request body is above the limit");
        co_return;
      }
      if (ec) co_return;
    }

    http::request<http::string_body> req = parser.release();
    detail_::remove_hop_by_hop(req);
    {
      std::string xff(req["X-Forwarded-For"]);
      req.set("X-Forwarded-For", xff.empty() ? peer_ip : xff + ", " + peer_ip);
    }
    req.set("X-Forwarded-Proto", "http");
    req.set(http::field::via, "1.1 lbkit");
    if (rc.rewrite_host) req.set(http::field::host, *rc.rewrite_host);
    req.keep_alive(true);
    req.prepare_payload();

    pool& p = *route.target;
    std::optional<std::string> pinned;
    if (p.sticky()) {
      if (auto v = lbkit::find_cookie(req[http::field::cookie], p.sticky()->name())) {
        pinned = p.sticky()->decode(*v);
      }
    }
    const lbkit::pick_context context =
        p.config().hash_header.empty()
            ? lbkit::pick_context::for_client(peer.address())
            : lbkit::pick_context::for_bytes(req[p.config().hash_header]);

    // Retries go to another backend. A refused connect sent nothing, so any request may be
    // retried after one (the body is buffered); after a timeout, a broken connection or a
    // retryable status only an idempotent request is, since the backend may have acted on it.
    const bool idempotent = detail_::idempotent(req.method());
    const std::uint32_t attempts = 1 + rc.retries;
    const lbkit::backend_state* failed = nullptr;
    http::status failure = http::status::service_unavailable;
    std::string why = "no healthy backend";
    bool answered = false;
    for (std::uint32_t attempt = 0; attempt < attempts && !answered; ++attempt) {
      lbkit::lease l;
      if (pinned && attempt == 0) l = p.pick_member(ts.index, *pinned);
      if (!l) l = p.pick(ts.index, context);
      for (std::uint64_t salt = 1; l && &l.backend() == failed && salt <= 4; ++salt) {
        l = p.pick(ts.index, lbkit::pick_context::for_hash(lbkit::hash_u64(context.hash + salt)));
      }
      if (!l) {
        failure = http::status::service_unavailable;
        why = std::string(lbkit::to_string(l.error()));
        break;
      }
      const auto sent = steady_clock::now();
      exchange_result r = co_await exchange(ts, p, l, req, lim);
      if (r.error != upstream_error::none) {
        failed = &l.backend();  // before report(), which lets go of the backend
        l.report(lbkit::outcome::gateway_failure);
        failure = r.error == upstream_error::timeout ? http::status::gateway_timeout
                                                     : http::status::bad_gateway;
        why = r.error == upstream_error::connect ? "the backend refused the connection"
              : r.error == upstream_error::timeout ? "the backend did not answer in time"
                                                   : "the backend connection failed";
        if (r.error != upstream_error::connect && !idempotent) break;
        continue;
      }
      const unsigned status = r.response.result_int();
      const bool retryable = std::find(rc.retry_on.begin(), rc.retry_on.end(), status) !=
                             rc.retry_on.end();
      if (retryable && idempotent && attempt + 1 < attempts) {
        failed = &l.backend();  // before report(), which lets go of the backend
        l.report(lbkit::outcome::gateway_failure);
        continue;
      }
      const bool gateway = status == 502 || status == 503 || status == 504;
      const auto latency = steady_clock::now() - sent;

      auto& res = r.response;
      const bool head_request = req.method() == http::verb::head;
      detail_::remove_hop_by_hop(res);
      res.set(http::field::via, "1.1 lbkit");
      if (p.sticky() && pinned != l.id()) {
        res.insert(http::field::set_cookie, p.sticky()->set_cookie(l.id()));
      }
      if (!head_request) res.prepare_payload();
      res.keep_alive(client_keep_alive);
      log(status, l.id());
      // Reported before the client write: that write measures the client, not the backend.
      // (After report() the lease no longer names its backend.)
      l.report(gateway ? lbkit::outcome::gateway_failure
               : status >= 500 ? lbkit::outcome::failure
                               : lbkit::outcome::success,
               latency);
      client.expires_after(lim.request_timeout);
      co_await http::async_write(client, res, into(ec));
      if (ec || !client_keep_alive) co_return;
      answered = true;
    }
    if (answered) continue;
    log(static_cast<unsigned>(failure), "-");
    if (!co_await reply(error_response(failure, version, why), client_keep_alive)) co_return;
  }
}

}  // namespace l7
