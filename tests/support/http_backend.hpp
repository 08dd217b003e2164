// SPDX-License-Identifier: MIT
// An HTTP/1.1 backend for tests of the L7 router: Boost.Beast in synchronous mode on
// 127.0.0.1, one thread per connection, keep-alive. It records every request it reads (method,
// target, headers, body) and answers through a handler the test sets (status, headers, body,
// a delay); by default with 200 and its own name as the body. stop() makes it a dead backend
// (the listener closed, so connects are refused, and every open connection cut); start()
// brings it back on the same port. A request that asks for an Upgrade goes, socket and all,
// to an upgrade handler when one is set (a WebSocket echo, say).
//
// Blocking Beast calls have no timeout of their own: stop() ends them by shutting the
// connections down, and handlers that wait use pause(), which stop() interrupts, so that
// stop() and the destructor return within a poll period.
#pragma once

// Boost 1.74's Asio needs these first (PITFALLS.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace lbkit::test {

// A request as an http_backend read it.
struct received_request {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, names as sent
  std::string body;

  // The value of the first field `name` (compared case-insensitively), or nullopt.
  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (boost::beast::iequals(n, name)) return v;
    }
    return std::nullopt;
  }
  // How many fields are named `name`.
  std::size_t count(std::string_view name) const {
    std::size_t k = 0;
    for (const auto& h : headers) k += boost::beast::iequals(h.first, name) ? 1 : 0;
    return k;
  }
};

// Thread safety: thread-safe, except start() and stop(), which one test thread calls.
class http_backend {
 public:
  using request = boost::beast::http::request<boost::beast::http::string_body>;
  using response = boost::beast::http::response<boost::beast::http::string_body>;
  // Fills `res`, which comes as 200, Content-Type text/plain, X-Backend and the body set to
  // the backend's name, keep-alive as the request asks. Content-Length is set afterwards.
  using handler = std::function<void(const request& req, response& res, const http_backend& self)>;
  // Takes over the connection of a request with an Upgrade field; the connection closes
  // when it returns.
  using upgrade_handler = std::function<void(boost::asio::ip::tcp::socket& s, const request& req,
                                             const http_backend& self)>;

  // Listens on 127.0.0.1, port `port` (0 picks a free one).
  explicit http_backend(std::string name, handler h = {}, std::uint16_t port = 0)
      : name_(std::move(name)), handler_(std::move(h)), port_(port) {
    if (!start()) std::abort();
  }
  http_backend(const http_backend&) = delete;
  http_backend& operator=(const http_backend&) = delete;
  ~http_backend() { stop(); }

  const std::string& name() const noexcept { return name_; }
  std::uint16_t port() const noexcept { return port_; }
  // "127.0.0.1:PORT".
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool running() const noexcept { return running_; }
  bool stopping() const noexcept { return stop_.load(std::memory_order_acquire); }

  void set_handler(handler h) {
    std::lock_guard lock(mu_);
    handler_ = std::move(h);
  }
  void on_upgrade(upgrade_handler h) {
    std::lock_guard lock(mu_);
    upgrade_ = std::move(h);
  }

  // Waits `d`, or less if stop() is called meanwhile; false then. For handlers that delay.
  bool pause(std::chrono::milliseconds d) const {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, d, [&] { return stopping(); });
  }

  // Every request read so far, in order.
  std::vector<received_request> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  // Connections accepted and not yet closed.
  std::size_t open_connections() const {
    std::lock_guard lock(mu_);
    return open_.size();
  }
  std::size_t hits() const {
    std::lock_guard lock(mu_);
    return requests_.size();
  }
  // Requests read for exactly this target.
  std::size_t hits(std::string_view target) const {
    std::lock_guard lock(mu_);
    std::size_t k = 0;
    for (const auto& r : requests_) k += r.target == target ? 1 : 0;
    return k;
  }
  // Connections accepted so far, over every start().
  int accepted() const noexcept { return accepted_.load(std::memory_order_acquire); }
  void clear() {
    std::lock_guard lock(mu_);
    requests_.clear();
  }

  // Listens again on the same port (the first call: on the port given, or a free one). False
  // if the port cannot be bound.
  bool start() {
    if (running_) return true;
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listener_, 128) != 0) {
      if (listener_ >= 0) ::close(listener_);
      listener_ = -1;
      return false;
    }
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    stop_.store(false, std::memory_order_release);
    running_ = true;
    acceptor_ = std::thread([this] { accept_loop(); });
    return true;
  }

  // A dead backend: refuses new connections and cuts the open ones (the router sees an end
  // of stream or a reset), then joins every thread.
  void stop() {
    if (!running_) return;
    {
      std::lock_guard lock(mu_);
      stop_.store(true, std::memory_order_release);
    }
    cv_.notify_all();
    acceptor_.join();
    ::close(listener_);
    listener_ = -1;
    {
      std::lock_guard lock(mu_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& c : connections_) c.thread.join();
    connections_.clear();
    running_ = false;
  }

 private:
  struct connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  void accept_loop() {
    while (!stopping()) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      accepted_.fetch_add(1, std::memory_order_acq_rel);
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      {
        // Registered before its thread runs, so that stop() cuts it whatever the timing.
        std::lock_guard lock(mu_);
        open_.insert(fd);
      }
      // Threads of connections that ended are joined here, so that a long test with health
      // checks (a connection each) does not pile them up.
      connections_.remove_if([](connection& c) {
        if (!c.done->load(std::memory_order_acquire)) return false;
        c.thread.join();
        return true;
      });
      auto done = std::make_shared<std::atomic<bool>>(false);
      connections_.push_back({std::thread([this, fd, done] {
                                serve(fd);
                                done->store(true, std::memory_order_release);
                              }),
                              done});
    }
  }

  void serve(int fd) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket s(io_);
    s.assign(boost::asio::ip::tcp::v4(), fd, ec);
    const bool adopted = !ec;
    beast::flat_buffer buffer;
    while (!ec && !stopping()) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(1 << 20);
      parser.body_limit(std::uint64_t{64} << 20);
      http::read(s, buffer, parser, ec);
      if (ec) break;
      request req = parser.release();
      received_request r{
          std::string(req.method_string()), std::string(req.target()), {}, req.body()};
      for (const auto& f : req) r.headers.emplace_back(f.name_string(), f.value());
      handler h;
      upgrade_handler u;
      {
        std::lock_guard lock(mu_);
        requests_.push_back(std::move(r));
        h = handler_;
        u = upgrade_;
      }
      if (u && req.find(http::field::upgrade) != req.end()) {
        u(s, req, *this);
        break;
      }
      response res{http::status::ok, req.version()};
      res.set(http::field::content_type, "text/plain");
      res.set("X-Backend", name_);
      res.body() = name_;
      res.keep_alive(req.keep_alive());
      if (h) h(req, res, *this);
      res.prepare_payload();
      http::write(s, res, ec);
      if (!res.keep_alive()) break;
    }
    {
      // Out of the set before it is closed: stop() never shuts down a reused descriptor.
      std::lock_guard lock(mu_);
      open_.erase(fd);
    }
    if (adopted) {
      s.close(ec);
    } else {
      ::close(fd);
    }
  }

  std::string name_;
  boost::asio::io_context io_;  // never run: the sockets are used synchronously
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;      // pause(), woken by stop()
  handler handler_;                         // guarded by mu_
  upgrade_handler upgrade_;                 // guarded by mu_
  std::vector<received_request> requests_;  // guarded by mu_
  std::set<int> open_;                      // guarded by mu_: connections not yet closed
  std::uint16_t port_ = 0;
  int listener_ = -1;
  bool running_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::list<connection> connections_;  // the accept thread's, then stop()'s
  std::thread acceptor_;
};

}  // namespace lbkit::test
