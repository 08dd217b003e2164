// SPDX-License-Identifier: MIT
// A UDP echo server on loopback for tests: binds 127.0.0.1 port 0 and answers each datagram,
// on its own thread, with `name|payload` to the sender, so that a client can tell which
// server answered and that the payload is its own. stop() (or the destructor) ends it within
// one poll period and joins the thread.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include <lbkit/endpoint.hpp>

namespace lbkit::test {

// Thread safety: thread-safe (address(), datagrams() and stop() from any thread).
class udp_echo_server {
 public:
  explicit udp_echo_server(std::string name) : name_(std::move(name)) {
    const auto ep = endpoint(*ip_address::parse("127.0.0.1"), 0);
    sockaddr_storage ss{};
    const socklen_t len = ep.to_sockaddr(ss);
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) std::abort();
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&bound), &blen);
    address_ = *endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), blen);
    thread_ = std::thread([this] { run(); });
  }
  udp_echo_server(const udp_echo_server&) = delete;
  udp_echo_server& operator=(const udp_echo_server&) = delete;
  ~udp_echo_server() { stop(); }

  const endpoint& address() const noexcept { return address_; }
  const std::string& name() const noexcept { return name_; }
  int datagrams() const noexcept { return datagrams_.load(std::memory_order_acquire); }

  void stop() {
    if (stop_.exchange(true)) return;
    thread_.join();
    ::close(fd_);
  }

 private:
  void run() {
    std::string reply;
    char buf[65536];
    while (!stop_.load(std::memory_order_acquire)) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      sockaddr_storage from{};
      socklen_t flen = sizeof from;
      const ssize_t n =
          ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n < 0) continue;
      datagrams_.fetch_add(1, std::memory_order_acq_rel);
      reply = name_ + "|";
      reply.append(buf, static_cast<std::size_t>(n));
      ::sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), flen);
    }
  }

  std::string name_;
  int fd_ = -1;
  endpoint address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> datagrams_{0};
  std::thread thread_;
};

}  // namespace lbkit::test
