// SPDX-License-Identifier: MIT
// A TCP server on loopback for tests: binds 127.0.0.1 (or ::1) port 0, accepts on its own
// thread, and hands each connection to a handler. stop() (or the destructor) ends it within
// one poll period and joins the thread; handlers that wait should poll stopping().
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string_view>
#include <thread>

#include <lbkit/endpoint.hpp>

namespace lbkit::test {

class loopback_server {
 public:
  using handler = std::function<void(int conn, const loopback_server& self)>;

  // Listens on port `port` of 127.0.0.1 (or ::1); 0 picks a free one. A test that restarts
  // a server passes the port of the one it stopped.
  explicit loopback_server(handler h, bool ipv6 = false, std::uint16_t port = 0)
      : handler_(std::move(h)) {
    const auto ep = endpoint(*ip_address::parse(ipv6 ? "::1" : "127.0.0.1"), port);
    sockaddr_storage ss{};
    const socklen_t len = ep.to_sockaddr(ss);
    listener_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
        ::listen(listener_, 64) != 0) {
      std::abort();
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&bound), &blen);
    address_ = *endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), blen);
    thread_ = std::thread([this] { run(); });
  }
  loopback_server(const loopback_server&) = delete;
  loopback_server& operator=(const loopback_server&) = delete;
  ~loopback_server() { stop(); }

  const endpoint& address() const noexcept { return address_; }
  bool stopping() const noexcept { return stop_.load(std::memory_order_acquire); }
  int accepted() const noexcept { return accepted_.load(std::memory_order_acquire); }

  // Stops accepting, closes the listener (new connections are refused) and joins.
  void stop() {
    if (stop_.exchange(true)) return;
    thread_.join();
    ::close(listener_);
  }

  // Waits on `fd` for `events` in steps of 20 ms until ready or stopping; true when ready.
  bool wait(int fd, short events) const {
    while (!stopping()) {
      pollfd p{fd, events, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  // Sends all of `bytes` (blocking socket), false if the peer went away.
  static bool send_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // Closes with a reset (RST) instead of a FIN.
  static void reset(int fd) {
    const linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd);
  }

 private:
  void run() {
    while (!stopping()) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      accepted_.fetch_add(1, std::memory_order_acq_rel);
      handler_(c, *this);  // owns c: closes or resets it
    }
  }

  handler handler_;
  int listener_ = -1;
  endpoint address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

}  // namespace lbkit::test
