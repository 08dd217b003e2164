// SPDX-License-Identifier: MIT
#include "proxy.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <type_traits>

#include "exchange.hpp"
#include "framing.hpp"
#include "tunnel.hpp"

namespace l7 {
namespace {

using detail_::error_response;

// Whether a comma-separated header value lists `token` (case-insensitively).
bool lists_token(std::string_view list, std::string_view token) {
  bool found = false;
  lbkit::http1::for_each_element(list,
                                 [&](std::string_view t) { found |= beast::iequals(t, token); });
  return found;
}

// A WebSocket handshake (RFC 6455 §4.1): GET with `Connection: upgrade`, `Upgrade: websocket`.
template <class Message>
bool is_websocket_upgrade(const Message& m) {
  return m.method() == http::verb::get && lists_token(m[http::field::connection], "upgrade") &&
         lists_token(m[http::field::upgrade], "websocket");
}

// The failure of an answer that breaks the rules of what may be passed on (RFC 9112 §6.3
// item 5): as an answer that breaks the grammar, with the reason admit_answer() gave.
failure_kind bad_answer(std::string_view why) {
  failure_kind k = kind_of(upstream_error::bad_answer);
  k.why = why;
  return k;
}

// The retry rules of one request: at most `attempts` attempts, no retry once `deadline` has
// passed, and each retry but those after a connection failure (kind_of) within the pool's
// retry budget, whose ticket it holds until the request ends.
class retry_gate {
 public:
  retry_gate(pool& p, counters& stats, std::uint32_t attempts, steady_clock::time_point deadline,
             std::uint32_t budget_percent) noexcept
      : pool_(p),
        stats_(stats),
        attempts_(attempts),
        deadline_(deadline),
        budget_(budget_percent) {}

  // Whether another attempt may follow this one.
  bool allow(bool needs_budget = true) {
    if (attempt_ + 1 >= attempts_ || steady_clock::now() >= deadline_) return false;
    if (needs_budget) {
      auto t = pool_.try_retry(budget_);
      if (!t) {
        counters::add(stats_.retries_over_budget);
        return false;
      }
      ticket_ = std::move(t);
    }
    counters::add(stats_.retries);
    return true;
  }
  void next() noexcept { ++attempt_; }
  bool first() const noexcept { return attempt_ == 0; }
  steady_clock::time_point deadline() const noexcept { return deadline_; }

 private:
  pool& pool_;
  counters& stats_;
  const std::uint32_t attempts_;
  const steady_clock::time_point deadline_;
  const std::uint32_t budget_;
  std::uint32_t attempt_ = 0;
  pool::retry_ticket ticket_;
};

// The value of a credential the route asks for, or empty.
std::string_view credential(const request& req, auth_kind k) {
  if (k == auth_kind::api_key) return req["X-API-Key"];
  const std::string_view h = req[http::field::authorization];
  if (h.size() > 7 && beast::iequals(h.substr(0, 7), "Bearer ")) return h.substr(7);
  return {};
}

// Forwarding fields (RFC 9110 §7.6: hop-by-hop removed, Via added; X-Forwarded-*).
void prepare_forward(request& req, const route_config& rc, const std::string& peer_ip) {
  detail_::remove_hop_by_hop(req);
  const std::string_view xff = req["X-Forwarded-For"];
  req.set("X-Forwarded-For", xff.empty() ? peer_ip : std::string(xff) + ", " + peer_ip);
  req.set("X-Forwarded-Proto", "http");
  req.set(http::field::via, "1.1 lbkit");
  if (rc.rewrite_host) req.set(http::field::host, *rc.rewrite_host);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             steady_clock::now().time_since_epoch())
      .count();
}

// One client connection.
class session {
 public:
  session(tcp_socket s, thread_state& ts) : ts_(ts), client_(std::move(s)) {
    buffer_.reserve(4096);  // Beast reads as much as there is room for, and at least 512 bytes
    beast::error_code ec;
    peer_ = to_lbkit(client_.socket().remote_endpoint(ec));
    peer_ip_ = peer_.address().to_string();
    client_.socket().set_option(tcp::no_delay(true), ec);
  }

  awaitable<void> run() {
    rt_ = ts_.rt;
    bool after_empty_line = false;
    for (bool first = true;; first = false) {
      beast::error_code ec;
      // A new client has header_timeout to send a first byte, and one between requests
      // idle_timeout; from the first byte of a request its header must arrive within
      // header_timeout (slowloris). While no byte of a request has come the connection is
      // idle: at the connection limit the one idle longest is closed to make room.
      if (buffer_.size() == 0) {
        if (ts_.stopping) co_return;
        client_.expires_after(first ? rt_->cfg.limits.header_timeout
                                    : rt_->cfg.limits.idle_timeout);
        thread_state::idle_client idle{&client_};
        ts_.add_idle(idle);
        const std::size_t n = co_await client_.async_read_some(buffer_.prepare(4096), into(ec));
        ts_.remove_idle(idle);
        if (ec) co_return;
        buffer_.commit(n);
      }
      rt_ = ts_.rt;  // this request's configuration (the latest, after a reload)
      const limits_config& lim = rt_->cfg.limits;
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(lim.max_header_bytes));
      // Beast checks a Content-Length against the body limit once, with the header; the
      // route's limit is known only after routing, so handle() checks it.
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      // What a request may make the buffer hold beyond its header: a chunk line of endless
      // extensions, a trailer section (RFC 9112 §7.1.1: a server ought to limit them).
      buffer_.max_size(lim.max_header_bytes + 2 * relay_bytes);
      client_.expires_after(lim.header_timeout);
      co_await http::async_read_header(client_, buffer_, parser, into(ec));
      if (ec == http::error::bad_method && !after_empty_line && starts_with_empty_line(buffer_)) {
        buffer_.consume(2);  // RFC 9112 §2.2: an empty line before a request line is ignored
        after_empty_line = true;
        continue;
      }
      after_empty_line = false;
      if (ec == beast::error::timeout) {
        counters::add(ts_.stats.client_timeouts);
        if (buffer_.size() > 0 || parser.got_some()) {
          co_await finish(error_response(http::status::request_timeout, 11,
                                         "the request header did not arrive in time"),
                          false);
        }
        co_return;
      }
      if (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
          ec == asio::error::operation_aborted) {
        co_return;
      }
      started_ = steady_clock::now();
      method_ = target_ = "-";  // until handle() knows them
      counters::add(ts_.stats.requests);
      if (ec == http::error::header_limit) {
        // RFC 9112 §3: 414 for a request-target above it, 501 for a method.
        const unsigned s = oversized_header_status(parser, buffer_, lim.max_header_bytes);
        record(s, "-");
        co_await finish(error_response(static_cast<http::status>(s), 11,
                                       s == 431   ? "the request header is above the limit"
                                       : s == 414 ? "the request-target is above the header limit"
                                                  : "a method longer than any the router knows"),
                        false);
        co_return;
      }
      if (ec) {
        record(400, "-");
        co_await finish(error_response(http::status::bad_request, 11, ec.message()), false);
        co_return;
      }
      if (!co_await handle(parser)) co_return;
      if (buffer_.size() == 0 && buffer_.capacity() > 16 * 1024) buffer_.shrink_to_fit();
    }
  }

 private:
  // Writes `res`; then either keeps the connection (returns true) or closes it.
  awaitable<bool> finish(response res, bool keep) {
    keep = keep && !ts_.stopping;
    beast::error_code ec;
    co_await write_head(res, keep, body_of(res), ec);
    if (!ec && keep) co_return true;
    co_return co_await linger();
  }

  // Writes the header of an answer to the client, in the client's HTTP version whatever the
  // backend's, with `body` (all of it, or its first part). Not a coroutine of its own: one
  // frame fewer per answer. From here the client has send_timeout per write to take the
  // answer; a slow reader costs only its own connection, never the backend's record.
  awaitable<std::size_t> write_head(response& h, bool keep, asio::const_buffer body,
                                    beast::error_code& ec) {
    h.version(version_);
    h.keep_alive(keep);
    client_.expires_idle(rt_->cfg.limits.send_timeout);
    return write_message(client_, h, body, head_, ec);
  }

  // Closes the connection after an answer, draining what the client still sends for a moment
  // so that it reads the answer rather than a reset (a "lingering close", as nginx does).
  // Returns false: the connection is done.
  awaitable<bool> linger() {
    beast::error_code ec;
    client_.socket().shutdown(tcp_socket::shutdown_send, ec);
    client_.expires_after(std::chrono::seconds(2));
    while (!ec) {
      buffer_.clear();
      co_await client_.async_read_some(buffer_.prepare(16 * 1024), into(ec));
    }
    co_return false;
  }

  // Passes the `left` body bytes of an answer that did not come with its header on to the
  // client as they arrive from `up`, through `buf`. `up_ec` is set when the backend fails,
  // `ec` when the client does. Returns whether all of them came. Each stream keeps the idle
  // deadline its caller set: read_timeout for `up`, send_timeout for the client.
  awaitable<bool> relay(timed_stream& up, beast::flat_buffer& buf, std::uint64_t left,
                        beast::error_code& up_ec, beast::error_code& ec) {
    while (!ec && left > 0) {
      buf.clear();
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, relay_bytes));
      const std::size_t n = co_await up.async_read_some(buf.prepare(want), into(up_ec));
      if (up_ec) co_return false;
      buf.commit(n);
      left -= n;
      co_await asio::async_write(client_, buf.data(), whole, into(ec));
    }
    co_return left == 0;
  }

  // Counts the status and writes the access log line of the request being answered.
  void record(unsigned status, std::string_view backend) {
    if (status >= 100 && status < 600) counters::add(ts_.stats.responses[status / 100 - 1]);
    if (!rt_->cfg.access_log) return;
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - started_)
            .count();
    std::printf("%s %.*s %.*s %u %.*s %lldus\n", peer_ip_.c_str(),
                static_cast<int>(std::min<std::size_t>(method_.size(), 32)), method_.data(),
                static_cast<int>(std::min<std::size_t>(target_.size(), 512)), target_.data(),
                status, static_cast<int>(backend.size()), backend.data(),
                static_cast<long long>(us));
    std::fflush(stdout);
  }

  // One request whose header has been read. Returns whether the connection stays open. It
  // goes through the stages below in turn: admit (framing, route, credentials, rate limit),
  // read the body, the cache, forward (pick, exchange, retry on another backend, report),
  // deliver the answer. lbkit decides in admit (route_table, rate_limiter) and forward
  // (picker, lease); the rest is I/O.
  awaitable<bool> handle(http::request_parser<http::string_body>& parser) {
    auto& head = parser.get();
    version_ = head.version();
    keep_alive_ = head.keep_alive();
    // Kept for the access log: the message is moved out of the parser below.
    method_ = head.method_string();
    target_ = rt_->cfg.access_log ? head.target() : std::string_view();

    admission a = admit(parser);
    if (a.refusal) {
      record(a.refusal->result_int(), "-");
      // The body of a refused request may still be on the wire: close rather than read it.
      co_return co_await finish(std::move(*a.refusal), a.may_keep && parser.is_done());
    }
    const route_config& rc = *a.route->config;
    pool& p = *a.route->target;
    const bool is_connect = head.method() == http::verb::connect;
    if (is_connect || is_websocket_upgrade(head)) {
      if (!parser.is_done())
        co_return co_await refuse(http::status::bad_request, "a body on an upgrade", parser);
      request req = parser.release();
      co_await open_tunnel(req, rc, p, is_connect);
      co_return false;
    }
    bool closed = false;
    if (auto r = co_await read_body(parser, rc, closed)) {
      co_return co_await refuse(r->status, r->why, parser);
    }
    if (closed) co_return false;

    request req = parser.release();
    std::string cache_key;
    if (rc.cache && rt_->cache && cache_may_serve(req)) {
      cache_key = cache_key_of(req, a.index);
      if (std::optional<response> hit = cached(cache_key)) {
        record(hit->result_int(), "cache");
        co_return co_await finish(std::move(*hit), keep_alive_);
      }
    }
    co_return co_await forward(req, rc, p, cache_key);
  }

  // What the admit stage decided: the route to forward on, or the router's own answer.
  struct admission {
    live_route* route = nullptr;
    std::size_t index = 0;            // of the route, in the runtime's routes
    std::optional<response> refusal;  // when set, the answer instead of forwarding
    bool may_keep = true;             // whether the connection may stay open after it
  };

  // RFC 9112 §§3, 5, 6 framing (refused with the connection closed); then lbkit's route table
  // picks the route; its credentials, required headers and rate limiter admit the request.
  admission admit(http::request_parser<http::string_body>& parser) {
    auto& head = parser.get();
    admission a;
    auto refused = [&](http::status s, std::string_view why) {
      a.refusal = error_response(s, version_, why);
      return std::move(a);
    };
    if (const lbkit::http_verdict v = admit_request(parser, fields_); !v) {
      a.may_keep = false;
      return refused(static_cast<http::status>(v.status), v.reason);
    }
    // CONNECT names its destination in the target (authority form): route on it as the host.
    const bool is_connect = head.method() == http::verb::connect;
    const lbkit::request_view view{head.method_string(),
                                   is_connect ? head.target() : head[http::field::host],
                                   is_connect ? std::string_view("/") : head.target(), fields_};
    const std::size_t* index = rt_->table.match(view);
    if (index == nullptr) return refused(http::status::not_found, "no route for this request");
    a.index = *index;
    a.route = &rt_->routes[*index];
    const route_config& rc = *a.route->config;
    if (is_connect && std::find(rc.match.methods.begin(), rc.match.methods.end(), "CONNECT") ==
                          rc.match.methods.end()) {
      // A tunnel only where the route asks for one by name.
      return refused(http::status::method_not_allowed, "CONNECT is not enabled on this route");
    }
    std::string_view cred;
    if (rc.auth != auth_kind::none) {
      cred = credential(head, rc.auth);
      if (cred.empty()) return refused(http::status::unauthorized, "credentials are required");
      const auto& keys = rc.auth == auth_kind::api_key ? rt_->cfg.api_keys : rt_->cfg.bearer_tokens;
      if (std::none_of(keys.begin(), keys.end(), [&](const std::string& k) {
            return detail_::constant_time_equal(k, cred);
          })) {
        return refused(http::status::forbidden, "these credentials are not accepted");
      }
    }
    for (const auto& h : rc.required_headers) {
      if (head.find(h) == head.end())
        return refused(http::status::bad_request, "missing header " + h);
    }
    if (a.route->limiter) {
      const auto d = rc.rate_limit.per_key ? a.route->limiter->acquire(cred, now_ns())
                                           : a.route->limiter->acquire(peer_.address(), now_ns());
      if (!d.allowed) {
        const auto secs =
            d.retry_after == std::chrono::nanoseconds::max()
                ? 3600
                : std::max<long long>(
                      1, std::chrono::ceil<std::chrono::seconds>(d.retry_after).count());
        a.refusal = error_response(http::status::too_many_requests, version_, "rate limited");
        a.refusal->set(http::field::retry_after, std::to_string(secs));
      }
    }
    return a;
  }

  // Answers `s` with `why` and counts it; the connection stays open only when the request was
  // read whole (its body may still be on the wire otherwise).
  awaitable<bool> refuse(http::status s, std::string_view why,
                         const http::request_parser<http::string_body>& parser) {
    record(static_cast<unsigned>(s), "-");
    co_return co_await finish(error_response(s, version_, why), keep_alive_ && parser.is_done());
  }

  struct refusal {
    http::status status;
    std::string why;
  };

  // Reads the body under the route's limit: a Content-Length is checked at once, a chunked
  // body as it arrives. Returns the refusal to answer with, if any; `closed` when the client
  // went away.
  awaitable<std::optional<refusal>> read_body(http::request_parser<http::string_body>& parser,
                                              const route_config& rc, bool& closed) {
    const limits_config& lim = rt_->cfg.limits;
    auto& head = parser.get();
    const std::uint64_t body_limit = rc.max_body_bytes.value_or(lim.max_body_bytes);
    const refusal too_large{http::status::payload_too_large, "the request body is above the limit"};
    if (parser.content_length() && *parser.content_length() > body_limit) co_return too_large;
    parser.body_limit(body_limit);
    if (parser.is_done()) co_return std::nullopt;
    beast::error_code ec;
    if (beast::iequals(head[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version_};
      co_await http::async_write(client_, cont, into(ec));
      if (ec) {
        closed = true;
        co_return std::nullopt;
      }
    }
    if (const auto n = parser.content_length(); n && *n > buffer_.capacity()) {
      buffer_.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*n, 64 * 1024)));
    }
    client_.expires_after(lim.request_timeout);
    co_await http::async_read(client_, buffer_, parser, into(ec));
    if (ec == http::error::body_limit) co_return too_large;
    // RFC 9112 §2.2: a body that breaks the grammar (a bad chunk; a chunk line or a trailer
    // section above the buffer's limit, §7.1.1) is answered 400 before the close.
    if (is_malformed(ec) || ec == http::error::buffer_overflow) {
      co_return refusal{http::status::bad_request,
                        ec == http::error::buffer_overflow
                            ? "a chunk line or trailer section above the limit"
                            : ec.message()};
    }
    if (ec) {
      closed = true;
      co_return std::nullopt;
    }
    if (parser.chunked()) drop_trailer_fields(head, fields_);  // RFC 9112 §7.1.2
    co_return std::nullopt;
  }

  // The cache's key for `req` on route `index`: the host in lower case, the target, and the
  // route (two routes may send one URL to different pools).
  static std::string cache_key_of(const request& req, std::size_t index) {
    std::string key;
    key.append(req[http::field::host]).append(" ").append(req.target());
    key.append(" ").append(std::to_string(index));
    std::transform(key.begin(), key.begin() + static_cast<std::ptrdiff_t>(key.find(' ')),
                   key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return key;
  }

  // A fresh cached answer for `key`, which then needs no backend.
  std::optional<response> cached(const std::string& key) {
    auto e = rt_->cache->find(key, steady_clock::now());
    if (!e) {
      counters::add(ts_.stats.cache_misses);
      return std::nullopt;
    }
    counters::add(ts_.stats.cache_hits);
    response res = e->res;
    res.set(http::field::age, std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                 steady_clock::now() - e->stored)
                                                 .count()));
    res.set("X-Cache", "HIT");
    return res;
  }

  // Sends `req` to a backend of `p` that lbkit picks (the sticky cookie's, while eligible),
  // and retries on another one after a failure that allows it, within the route's retries and
  // the pool's budget; every attempt's outcome is reported on its lease. The answer goes on to
  // deliver(); with no backend left, the last failure is the answer.
  awaitable<bool> forward(request& req, const route_config& rc, pool& p,
                          const std::string& cache_key) {
    const limits_config& lim = rt_->cfg.limits;
    prepare_forward(req, rc, peer_ip_);
    req.keep_alive(true);
    req.prepare_payload();
    const std::optional<std::string> pinned = pinned_backend(p, req);
    const lbkit::pick_context context = context_for(p, req);
    const bool idempotent = detail_::idempotent(req.method());
    const borrowed_buffer upbuf(ts_);
    // request_timeout bounds the exchanges with backends together until an answer's header
    // has come, retries included; the body then has read_timeout per read (and
    // response_deadline in all, if set).
    const auto begun = steady_clock::now();
    const auto body_deadline = lim.response_deadline.count() > 0 ? begun + lim.response_deadline
                                                                 : steady_clock::time_point::max();
    const auto in_flight = p.start_request();
    retry_gate retries(p, ts_.stats, 1 + rc.retries, begun + lim.request_timeout, lim.retry_budget);
    examples::tried_backends tried;
    http::status failure = http::status::service_unavailable;
    std::string why = "no healthy backend";
    beast::flat_buffer& buf = *upbuf;
    std::optional<response_parser> answer;
    for (;; retries.next()) {
      lbkit::lease l = pick(p, retries.first() ? pinned : std::nullopt, context, tried);
      if (!l) {
        why = std::string(lbkit::to_string(l.error()));
        failure = http::status::service_unavailable;
        break;
      }
      // After a failed attempt: its outcome reported, the failure the client gets unless a
      // retry does better, and whether one may be tried (a refused connect or one that timed
      // out sent nothing, so any request may be retried after one: the body is buffered;
      // after anything else only an idempotent request is, since the backend may have acted
      // on it).
      auto failed = [&](const failure_kind& k) {
        tried.add(&l.backend());  // before report(), which lets go of the backend
        l.report(k.outcome);
        failure = k.status;
        why = k.why;
        return k.retry && (k.any_method || idempotent) && retries.allow(k.needs_budget);
      };
      const auto sent = steady_clock::now();
      exchange_result r =
          co_await exchange(ts_, l, req, lim, retries.deadline(), buf, head_, answer);
      if (r.error != upstream_error::none) {
        if (failed(kind_of(r.error))) continue;
        break;
      }
      // RFC 9112 §§5, 6.3: an answer that may not be passed on is a bad answer: a 502 (or a
      // retry) in its place, and its connection closed, not reused (§6.3 item 5).
      if (const lbkit::http_verdict v = admit_answer(*answer, req.method(), answer_fields_); !v) {
        if (failed(bad_answer(v.reason))) continue;
        break;
      }
      const unsigned status = answer->get().result_int();
      if (idempotent &&
          std::find(rc.retry_on.begin(), rc.retry_on.end(), status) != rc.retry_on.end() &&
          retries.allow()) {
        tried.add(&l.backend());
        l.report(lbkit::outcome::gateway_failure);
        continue;  // the connection closes with the body unread
      }
      r.stream->expires_idle(lim.read_timeout, body_deadline);
      std::optional<std::uint64_t> streamed;
      if (const auto ec = co_await read_answer_body(r, *answer, buf, cache_key, streamed)) {
        if (failed(kind_of(upstream_error_of(ec)))) continue;
        break;
      }
      co_return co_await deliver({l, r, *answer, buf, streamed, steady_clock::now() - sent}, req, p,
                                 pinned, cache_key);
    }
    record(static_cast<unsigned>(failure), "-");
    co_return co_await finish(error_response(failure, version_, why), keep_alive_);
  }

  // The backend the request's sticky cookie names, if its pool has one.
  static std::optional<std::string> pinned_backend(const pool& p, const request& req) {
    if (!p.sticky()) return std::nullopt;
    auto v = lbkit::find_cookie(req[http::field::cookie], p.sticky()->name());
    return v ? p.sticky()->decode(*v) : std::nullopt;
  }

  // Reads what deliver() needs of an answer's body. A body of known length the cache will not
  // keep goes to the client from `buf`: read whole first when it fits in relay_bytes (so that
  // a backend failing inside it still gets a retry or a 502), else streamed through
  // (`streamed` is then set to its length). Any other (chunked, up to the end of the
  // connection, or one to cache) is read whole into the answer first, up to
  // max_buffered_body. The stream has read_timeout per read, not what is left of
  // request_timeout: a long answer that keeps coming is not cut (nginx's proxy_read_timeout).
  awaitable<beast::error_code> read_answer_body(exchange_result& r, response_parser& answer,
                                                beast::flat_buffer& buf,
                                                const std::string& cache_key,
                                                std::optional<std::uint64_t>& streamed) {
    response& res = answer.get();
    const auto length = answer.content_length();
    beast::error_code ec;
    if (!answer.is_done() && length &&
        (cache_key.empty() || *length > rt_->cache->max_entry_bytes() || !cache_lifetime(res))) {
      streamed = *length;
      while (!ec && *length <= relay_bytes && buf.size() < *length) {
        const std::size_t n = co_await r.stream->async_read_some(
            buf.prepare(static_cast<std::size_t>(*length) - buf.size()), into(ec));
        buf.commit(n);
      }
      co_return ec;
    }
    if (!answer.is_done()) {
      answer.body_limit(max_buffered_body);
      co_await http::async_read(*r.stream, buf, answer, into(ec));
      if (!ec && answer.chunked()) drop_trailer_fields(res, answer_fields_);  // RFC 9112 §7.1.2
    }
    co_return ec;
  }

  // An answer on its way to the client, and what it came on.
  struct incoming_answer {
    lbkit::lease& lease;
    exchange_result& exchange;
    response_parser& parser;
    beast::flat_buffer& buf;                // its body, or the part of it read so far
    std::optional<std::uint64_t> streamed;  // set: the body is relayed as it comes, this long
    steady_clock::duration latency;         // from the request sent to the answer read
  };

  // Passes an answer on to the client (cached, given its sticky cookie, framed anew) and
  // reports the exchange's outcome on its lease; the backend connection goes back to the
  // pool when it may be reused.
  awaitable<bool> deliver(incoming_answer a, const request& req, pool& p,
                          const std::optional<std::string>& pinned, const std::string& cache_key) {
    lbkit::lease& l = a.lease;
    exchange_result& r = a.exchange;
    beast::flat_buffer& buf = a.buf;
    const auto& latency = a.latency;
    const bool stream = a.streamed.has_value();
    response& res = a.parser.get();
    const unsigned status = res.result_int();
    detail_::remove_hop_by_hop(res);
    res.set(http::field::via, "1.1 lbkit");
    if (!cache_key.empty()) {
      if (const auto lifetime = stream ? std::nullopt : cache_lifetime(res)) {
        rt_->cache->store(cache_key, res, *lifetime, steady_clock::now());
      }
      res.set("X-Cache", "MISS");
    }
    if (p.sticky() && pinned != l.id()) {
      res.insert(http::field::set_cookie, p.sticky()->set_cookie(l.id()));
    }
    record(status, l.id());
    const lbkit::outcome result = status == 502 || status == 503 || status == 504
                                      ? lbkit::outcome::gateway_failure
                                  : status >= 500 ? lbkit::outcome::failure
                                                  : lbkit::outcome::success;
    const pool_config& pc = p.config();
    if (!stream) {
      if (r.keep_alive && buf.size() == 0) {
        ts_.upstream.give(l.backend().serial(), std::move(r.stream), pc.max_idle,
                          pc.upstream_idle_timeout);
      }
      frame_answer(res, req.method());  // RFC 9110 §8.6: none in a 1xx or 204, 304 as sent
      // Reported before the client write: that write measures the client, not the backend.
      l.report(result, latency);
      co_return co_await finish(a.parser.release(), keep_alive_);
    }
    const bool keep = keep_alive_ && !ts_.stopping;
    const std::uint64_t serial = l.backend().serial();
    // The header goes with the body bytes that came along with it, then the rest (if any)
    // as it arrives. Bytes beyond the Content-Length (a broken backend) are not passed on,
    // and the connection that sent them is not reused.
    beast::error_code up_ec, ec;
    const auto first = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), *a.streamed));
    bool whole = buf.size() == first;
    co_await write_head(res, keep, asio::buffer(buf.data().data(), first), ec);
    if (!ec && first < *a.streamed)
      whole = co_await relay(*r.stream, buf, *a.streamed - first, up_ec, ec);
    // A backend that broke off its answer failed this request, which the client sees as a
    // closed connection short of the Content-Length.
    l.report(up_ec ? lbkit::outcome::gateway_failure : result, latency);
    if (up_ec) counters::add(ts_.stats.upstream_truncated);
    if (whole && r.keep_alive) {
      ts_.upstream.give(serial, std::move(r.stream), pc.max_idle, pc.upstream_idle_timeout);
    }
    if (!ec && !up_ec && keep) co_return true;
    co_return co_await linger();
  }

  // What a hash policy keys on: the pool's hash_cookie when the request has it, its
  // hash_header, else the client address.
  lbkit::pick_context context_for(const pool& p, const request& req) const {
    const pool_config& c = p.config();
    if (!c.hash_cookie.empty()) {
      if (auto v = lbkit::find_cookie(req[http::field::cookie], c.hash_cookie)) {
        return lbkit::pick_context::for_bytes(*v);
      }
    }
    if (!c.hash_header.empty()) return lbkit::pick_context::for_bytes(req[c.hash_header]);
    return lbkit::pick_context::for_client(peer_.address());
  }

  // A lease from `p`: the pinned backend if it is eligible, else a pick; after a failure,
  // none of the backends that failed this request while another is eligible.
  lbkit::lease pick(pool& p, const std::optional<std::string>& pinned,
                    const lbkit::pick_context& context, const examples::tried_backends& tried) {
    lbkit::lease l;
    if (pinned) l = p.pick_member(ts_.index, *pinned);
    if (l) return l;
    return tried.empty() ? p.pick(ts_.index, context)
                         : p.pick_other(ts_.index, context, tried.span());
  }

  // CONNECT or a WebSocket upgrade: a new connection to a backend (retried on another after a
  // refused connect), the handshake, then a byte tunnel until either side ends it. CONNECT
  // ends at the router, which answers 200 once the backend connection is up; an upgrade is
  // forwarded, and tunnels only if the backend answers 101.
  awaitable<void> open_tunnel(request& req, const route_config& rc, pool& p, bool is_connect) {
    const limits_config& lim = rt_->cfg.limits;
    const std::string upgrade(req[http::field::upgrade]);
    prepare_forward(req, rc, peer_ip_);
    if (!is_connect) {
      req.set(http::field::connection, "upgrade");
      req.set(http::field::upgrade, upgrade);
    }
    timed_stream up(co_await asio::this_coro::executor);
    http::status failure = http::status::service_unavailable;
    lbkit::lease l = co_await connect_tunnel(up, p, context_for(p, req), rc.retries, failure);
    if (!l) {
      record(static_cast<unsigned>(failure), "-");
      co_await finish(error_response(failure, req.version(), "no backend for the tunnel"), false);
      co_return;
    }
    const auto sent = steady_clock::now();
    beast::error_code ec;
    beast::flat_buffer upbuf;  // what the backend sent after its 101
    if (is_connect) {
      static constexpr std::string_view ok = "HTTP/1.1 200 Connection Established\r\n\r\n";
      co_await asio::async_write(client_, asio::buffer(ok.data(), ok.size()), into(ec));
      record(200, l.id());
    } else if (!co_await upgrade_handshake(req, up, upbuf, l, sent, ec)) {
      co_return;
    }
    // Bytes already read past either handshake go first.
    if (!ec && upbuf.size() > 0)
      co_await asio::async_write(client_.socket(), upbuf.data(), into(ec));
    if (!ec && buffer_.size() > 0)
      co_await asio::async_write(up.socket(), buffer_.data(), into(ec));
    buffer_.clear();
    if (!ec) {
      counters::add(ts_.stats.tunnels_total);
      counters::add(ts_.stats.tunnels_active);
      client_.expires_never();
      up.expires_never();
      co_await tunnel(client_.socket(), up.socket(), lim.tunnel_idle_timeout);
      counters::add(ts_.stats.tunnels_active, -1);
    }
    l.report(ec ? lbkit::outcome::gateway_failure : lbkit::outcome::success,
             steady_clock::now() - sent);
  }

  // A lease whose backend `up` is connected to, picking again (up to `retries` times) on
  // another backend after a connection that failed in a way a retry may help; no lease when
  // none connected, with `failure` the status the client gets.
  awaitable<lbkit::lease> connect_tunnel(timed_stream& up, pool& p,
                                         const lbkit::pick_context& context, std::uint32_t retries,
                                         http::status& failure) {
    lbkit::lease l;
    examples::tried_backends tried;
    for (std::uint32_t attempt = 0; attempt <= retries; ++attempt) {
      l = pick(p, std::nullopt, context, tried);
      if (!l) break;
      const upstream_error e = co_await connect(up, l, rt_->cfg.limits.connect_timeout);
      if (e == upstream_error::none) break;
      const failure_kind k = kind_of(e);
      tried.add(&l.backend());
      l.report(k.outcome);
      failure = k.status;
      up.close();
      if (!k.retry) break;
    }
    co_return l;
  }

  // Forwards an upgrade request to the backend and passes its answer on: a 101 to the
  // client, then true (the tunnel follows, `upbuf` holds what came after the 101, `ec` any
  // failure writing it); anything else is answered and reported here, and ends the
  // connection (false).
  awaitable<bool> upgrade_handshake(request& req, timed_stream& up, beast::flat_buffer& upbuf,
                                    lbkit::lease& l, steady_clock::time_point sent,
                                    beast::error_code& ec) {
    const limits_config& lim = rt_->cfg.limits;
    const std::string id = l.id();  // report() lets go of the backend
    up.expires_after(lim.request_timeout);
    co_await http::async_write(up, req, into(ec));
    http::response_parser<raw_body> rp;
    rp.body_limit(1024 * 1024);
    if (!ec) co_await http::async_read(up, upbuf, rp, into(ec));
    if (ec) {
      const failure_kind k = kind_of(upstream_error_of(ec, rp.got_some()));
      l.report(k.outcome);
      record(static_cast<unsigned>(k.status), id);
      co_await finish(error_response(k.status, req.version(), "the backend failed the upgrade"),
                      false);
      co_return false;
    }
    response res = rp.release();
    const std::string accepted(res[http::field::upgrade]);
    detail_::remove_hop_by_hop(res);
    res.set(http::field::via, "1.1 lbkit");
    record(res.result_int(), id);
    if (res.result() != http::status::switching_protocols) {  // refused: an ordinary answer
      l.report(res.result_int() >= 500 ? lbkit::outcome::failure : lbkit::outcome::success,
               steady_clock::now() - sent);
      co_await finish(std::move(res), false);
      co_return false;
    }
    res.version(11);
    res.set(http::field::connection, "upgrade");
    res.set(http::field::upgrade, accepted);
    client_.expires_after(lim.request_timeout);
    co_await http::async_write(client_, res, into(ec));
    co_return true;
  }

  thread_state& ts_;
  timed_stream client_;
  beast::flat_buffer buffer_;                     // from the client
  std::vector<lbkit::request_header> fields_;     // the request's fields, for routing
  std::vector<lbkit::http_field> answer_fields_;  // a backend answer's, before its body
  std::string head_;                              // a message header being written
  lbkit::endpoint peer_;
  std::string peer_ip_;
  std::shared_ptr<runtime> rt_;
  steady_clock::time_point started_;
  // Of the request being answered: its version, whether it asked to keep the connection, and
  // its method and target for the access log.
  unsigned version_ = 11;
  bool keep_alive_ = false;
  std::string method_, target_;
};

}  // namespace

awaitable<void> serve(tcp_socket socket, thread_state& ts) {
  counters::add(ts.stats.connections_total);
  counters::add(ts.stats.connections_active);
  struct leave {
    thread_state& ts;
    ~leave() { counters::add(ts.stats.connections_active, -1); }
  } guard{ts};
  session s(std::move(socket), ts);
  co_await s.run();
}

awaitable<void> upkeep(thread_state& ts) {
  steady_timer tick(co_await asio::this_coro::executor);
  beast::error_code ec;
  while (!ts.stopping) {
    tick.expires_after(std::chrono::seconds(1));
    co_await tick.async_wait(into(ec));
    ts.upstream.sweep();
  }
}

void stop_clients(thread_state& ts) {
  ts.stopping = true;
  while (ts.evict_idle()) {
  }
  ts.upstream.close();
}

}  // namespace l7
