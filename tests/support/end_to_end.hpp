// SPDX-License-Identifier: MIT
// What the end-to-end tests of the example programs (lbkit_l4_proxy, lbkit_l7_router) share:
// bounded waits on a condition, blocking client sockets with send and receive timeouts (so
// that every read and write is bounded), an echo backend for loopback_server, deterministic
// test bytes, a temporary directory, and the checks that a program under test stops cleanly
// with nothing from the sanitizers on its stderr.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/endpoint.hpp>
#include <lbkit/health/detail/socket.hpp>

#include "loopback.hpp"
#include "process.hpp"

namespace lbkit::test {

// --- waiting -------------------------------------------------------------------------------

// A client socket that waits longer than this for a byte has failed.
inline constexpr std::chrono::seconds io_timeout{5};

// The time since `t`, in whole milliseconds.
inline std::chrono::milliseconds since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t);
}

// Waits until `done()` or `limit` passes, trying every `step`; returns done(). A bounded wait
// on a condition.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = std::chrono::milliseconds(5000),
                std::chrono::milliseconds step = std::chrono::milliseconds(2)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

// --- text ----------------------------------------------------------------------------------

// Whether `part` occurs in `s`.
inline bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Whether `text` holds what a sanitizer writes when it finds something (ASan, UBSan, LSan,
// TSan).
inline bool sanitizer_report(std::string_view text) {
  return contains(text, "Sanitizer") || contains(text, "runtime error:");
}

// --- client sockets ------------------------------------------------------------------------

// An owned descriptor: lbkit's own (move-only, closes on destruction and on reset()).
using socket_fd = lbkit::detail::fd;

// Sets the send and receive timeouts of a blocking socket: a call that waits longer fails
// with EAGAIN.
inline void set_timeouts(int fd, std::chrono::microseconds t) {
  const timeval tv{static_cast<time_t>(t.count() / 1'000'000),
                   static_cast<suseconds_t>(t.count() % 1'000'000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A blocking TCP connection to `to` (TCP_NODELAY), from `from` (any port) when given, with
// io_timeout send and receive timeouts. Empty when the connect failed; `error` then holds its
// errno.
inline socket_fd connect_tcp(const endpoint& to, std::optional<ip_address> from = std::nullopt,
                             int* error = nullptr) {
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  socket_fd s(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  if (from) {
    sockaddr_storage fs{};
    const socklen_t flen = endpoint(*from, 0).to_sockaddr(fs);
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&fs), flen) == 0);
  }
  const int one = 1;
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  set_timeouts(s.get(), io_timeout);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (error != nullptr) *error = errno;
    return {};
  }
  return s;
}

// Sends all of `bytes` on a blocking socket; false on an error or a send timeout.
inline bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// What a read to the end of a stream got, and how it ended.
struct stream_end {
  std::string data;
  bool eof = false;  // an orderly end (FIN)
  int error = 0;     // else errno: ECONNRESET, EAGAIN (the receive timeout), ...
};

// Reads a blocking socket until the peer's end, an error or the receive timeout, or until
// `limit` bytes or more came.
inline stream_end read_to_end(int fd, std::size_t limit = std::size_t{64} << 20) {
  stream_end r;
  char buf[65536];
  while (r.data.size() < limit) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      r.data.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      r.eof = true;
      break;
    } else if (errno != EINTR) {
      r.error = errno;
      break;
    }
  }
  return r;
}

// --- backends and data ---------------------------------------------------------------------

// A loopback_server handler that echoes every byte until the client's end, then ends too.
inline void echo(int c, const loopback_server& self) {
  set_timeouts(c, std::chrono::milliseconds(50));
  std::vector<char> buf(256 * 1024);
  bool ok = true;
  while (ok && !self.stopping()) {
    const ssize_t n = ::recv(c, buf.data(), buf.size(), 0);
    if (n == 0) break;
    if (n < 0) {
      ok = errno == EAGAIN || errno == EINTR;
      continue;
    }
    std::string_view rest(buf.data(), static_cast<std::size_t>(n));
    while (!rest.empty() && !self.stopping()) {
      const ssize_t m = ::send(c, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (m > 0) {
        rest.remove_prefix(static_cast<std::size_t>(m));
      } else if (m < 0 && errno != EAGAIN && errno != EINTR) {
        ok = false;
        break;
      }
    }
  }
  ::close(c);
}

// `size` bytes of test data that does not repeat at short strides (xorshift64, a fixed seed:
// the same bytes on every call).
inline std::string pattern_bytes(std::size_t size) {
  std::string s(size, '\0');
  std::uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (auto& b : s) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<char>(x >> 24);
  }
  return s;
}

// --- the program under test ----------------------------------------------------------------

// A directory /tmp/<prefix>-XXXXXX, removed with what it holds.
class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix) {
    std::string name = "/tmp/" + std::string(prefix) + "-XXXXXX";
    REQUIRE(::mkdtemp(name.data()) != nullptr);
    path_ = name;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const noexcept { return path_; }
  // Writes `text` to `file` (whole, then closed) and returns its path.
  std::string write(const std::string& file, const std::string& text) const {
    const auto p = (path_ / file).string();
    std::ofstream(p) << text;
    return p;
  }

 private:
  std::filesystem::path path_;
};

// Stops a server under test: SIGTERM; it must exit 0 within `limit`, with no sanitizer report
// on stderr. `name` ("proxy", "router") labels its stderr in a failure's message.
inline void stop_cleanly(child_process& proc, std::string_view name,
                         std::chrono::milliseconds limit) {
  REQUIRE(proc.signal(SIGTERM));
  const auto status = proc.wait_exit(limit);
  proc.wait_output_closed(std::chrono::seconds(2));
  INFO(name << " stderr: " << proc.stderr_text());
  REQUIRE(status);
  CHECK_MESSAGE(status->success(), status->to_string());
  CHECK(!sanitizer_report(proc.stderr_text()));
}

// For the destructor of a server's wrapper: a server still running there belongs to a case
// that failed before it was stopped, so its stderr goes to the test's stderr, headed by
// `program` and its pid (child_process's own destructor then kills it).
inline void show_log_if_running(const child_process& proc, const char* program) {
  if (proc.running()) {
    std::fprintf(stderr, "%s (pid %d) stderr:\n%s\n", program, static_cast<int>(proc.pid()),
                 proc.stderr_text().c_str());
  }
}

}  // namespace lbkit::test
