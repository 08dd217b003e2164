// SPDX-License-Identifier: MIT
// Blocking-with-deadline socket helpers for lbkit's own probes: a non-blocking socket driven
// by poll() with the time left, so that no peer can stretch a call past its deadline (a
// silent listener, one that drips a byte a second, one that never closes).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/endpoint.hpp"
#include "lbkit/health/probe.hpp"
#include "lbkit/result.hpp"

namespace lbkit::detail {

// An owned file descriptor. Thread safety: thread-compatible.
class fd {
 public:
  fd() noexcept = default;
  explicit fd(int f) noexcept : f_(f) {}
  fd(fd&& o) noexcept : f_(std::exchange(o.f_, -1)) {}
  fd& operator=(fd&& o) noexcept {
    if (this != &o) {
      reset();
      f_ = std::exchange(o.f_, -1);
    }
    return *this;
  }
  ~fd() { reset(); }
  void reset() noexcept {
    if (f_ >= 0) ::close(f_);
    f_ = -1;
  }
  int get() const noexcept { return f_; }
  explicit operator bool() const noexcept { return f_ >= 0; }

 private:
  int f_ = -1;
};

// How an I/O step ended: ok, or the probe_status and detail to report.
struct io_status {
  probe_status status = probe_status::healthy;
  std::string detail;
  bool ok() const noexcept { return status == probe_status::healthy; }
};

inline io_status io_error(std::string_view what, int err) {
  probe_status s = is_local_error(err) ? probe_status::local_error : probe_status::error;
  switch (err) {
    case ECONNREFUSED:
      s = probe_status::refused;
      break;
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
      s = probe_status::reset;
      break;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
      s = probe_status::unreachable;
      break;
    case ETIMEDOUT:
      s = probe_status::timeout;
      break;
    case EPERM:
    case EACCES:
      s = probe_status::not_permitted;
      break;
    default:
      break;
  }
  return {s, std::string(what) + ": " + std::strerror(err)};
}

// Milliseconds left until `deadline` for poll(), rounded up so that a sub-millisecond rest
// still waits; 0 once it has passed.
inline int ms_left(probe_clock::time_point deadline) noexcept {
  const auto left = deadline - probe_clock::now();
  if (left <= probe_clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(ms);
}

// Waits until `f` is ready for `events` or the deadline passes.
inline io_status wait_for(int f, short events, probe_clock::time_point deadline,
                          std::string_view what) {
  for (;;) {
    const int left = ms_left(deadline);
    if (left == 0) return {probe_status::timeout, std::string(what) + ": deadline passed"};
    pollfd p{f, events, 0};
    const int r = ::poll(&p, 1, left);
    if (r > 0) return {};
    if (r < 0 && errno != EINTR) return io_error(what, errno);
  }
}

// A TCP connection to `to`, established before `deadline`.
inline io_status connect_tcp(const endpoint& to, probe_clock::time_point deadline, fd& out) {
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  fd s(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!s) return io_error("socket", errno);
  const int one = 1;
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) return io_error("connect", errno);
    if (auto w = wait_for(s.get(), POLLOUT, deadline, "connect"); !w.ok()) return w;
    int err = 0;
    socklen_t elen = sizeof err;
    if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
      return io_error("getsockopt", errno);
    }
    if (err != 0) return io_error("connect", err);
  }
  out = std::move(s);
  return {};
}

// Sends all of `bytes` before `deadline`.
inline io_status send_all(int f, std::string_view bytes, probe_clock::time_point deadline) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(f, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return io_error("send", errno);
    if (auto w = wait_for(f, POLLOUT, deadline, "send"); !w.ok()) return w;
  }
  return {};
}

// Appends what arrives to `buf`, at most `max` bytes in all, until one read returned data
// (`got` = bytes added), the peer closed (`got` = 0), or the deadline passed.
inline io_status recv_some(int f, std::string& buf, std::size_t max,
                           probe_clock::time_point deadline, std::size_t& got) {
  got = 0;
  char chunk[4096];
  for (;;) {
    const std::size_t room = max > buf.size() ? max - buf.size() : 0;
    if (room == 0)
      return {probe_status::bad_response, "answer longer than " + std::to_string(max) + " bytes"};
    const ssize_t n = ::recv(f, chunk, room < sizeof chunk ? room : sizeof chunk, 0);
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      got = static_cast<std::size_t>(n);
      return {};
    }
    if (n == 0) return {};  // closed by the peer
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return io_error("recv", errno);
    if (auto w = wait_for(f, POLLIN, deadline, "recv"); !w.ok()) return w;
  }
}

}  // namespace lbkit::detail
