// SPDX-License-Identifier: MIT
// The L4 proxy's byte relay, the part with no lbkit in it: a connection's two directions, the
// pump that moves bytes between two non-blocking sockets (recv/send through a buffer, or
// splice(2) through a pipe for bulk transfers), and the per-thread pools of buffers and pipes.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include <lbkit/lbkit.hpp>

namespace l4 {

// Adds n to a counter that only one thread writes: no locked instruction on the data path,
// while the stats reader still sees a torn-free value.
inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// One direction of a connection: bytes read from one socket and not yet written to the
// other, in a buffer or a pipe.
struct direction {
  char* buf = nullptr;
  std::uint32_t head = 0, tail = 0;
  std::array<int, 2> pipe{-1, -1};
  std::size_t in_pipe = 0;
  bool eof = false;   // the source ended its writing
  bool shut = false;  // ... and that was passed on with shutdown(SHUT_WR)
  bool bulk = false;  // the last read filled the buffer: splice the next one
  // Bytes read from the source and written to the destination. For the backend's side they
  // count from the current connect: they tell whether a failure may be retried.
  std::uint64_t read = 0, written = 0;
  bool pending() const noexcept { return tail > head || in_pipe > 0; }
};

// Which end of a pump a failure came from; `local`: neither, this host (is_local_error).
enum class fault : std::uint8_t { none, source, destination, local };

// One thread's relay: its pump and the buffers and pipes it lends to directions. Not
// thread-safe: one per worker.
class relay {
 public:
  static constexpr std::size_t buffer_size = 16 * 1024;
  static constexpr std::size_t pipe_chunk = 64 * 1024;

  relay() = default;
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;
  ~relay() {
    for (char* b : free_buffers_) delete[] b;
    for (auto& p : free_pipes_) {
      ::close(p[0]);
      ::close(p[1]);
    }
  }

  // Moves what can be moved from `from` to `to` through `d`: splicing through a pipe once a
  // read filled the buffer (`splice`), else through the buffer. `readable` and `writable` are
  // the sockets' readiness, cleared on EAGAIN; `hup`: the source reported its end. On a socket
  // error, says which end failed (error() holds its errno).
  fault pump(direction& d, int from, int to, bool& readable, bool& writable, bool hup,
             std::atomic<std::uint64_t>& moved, bool splice) {
    for (;;) {
      // The helpers return an empty optional when the pump is to go on, else the fault that
      // it returns.
      if (const auto stop = drain(d, to, writable, moved)) return *stop;
      if (d.eof) {
        if (!d.shut) {
          ::shutdown(to, SHUT_WR);  // pass the half-close on
          d.shut = true;
        }
        return fault::none;
      }
      if (!readable) return fault::none;
      const auto stop = d.bulk && splice && take_pipe(d) ? read_into_pipe(d, from, readable)
                                                         : read_into_buffer(d, from, readable, hup);
      if (stop) return *stop;
    }
  }

  // The errno of the last pump that failed.
  int error() const noexcept { return error_; }

  // Puts bytes in front of whatever the direction holds (the client may already have sent
  // data after its own PROXY header).
  bool prepend(direction& d, std::span<const std::uint8_t> bytes) {
    if (d.buf == nullptr) d.buf = take_buffer();
    const std::size_t held = d.tail - d.head;
    if (held + bytes.size() > buffer_size) return false;
    if (d.head < bytes.size()) {
      std::memmove(d.buf + bytes.size(), d.buf + d.head, held);
      d.head = static_cast<std::uint32_t>(bytes.size());
      d.tail = static_cast<std::uint32_t>(bytes.size() + held);
    }
    d.head -= static_cast<std::uint32_t>(bytes.size());
    std::memcpy(d.buf + d.head, bytes.data(), bytes.size());
    return true;
  }

  char* take_buffer() {
    if (free_buffers_.empty()) return new char[buffer_size];
    char* b = free_buffers_.back();
    free_buffers_.pop_back();
    return b;
  }
  void give_buffer(direction& d) {
    if (d.buf == nullptr) return;
    if (free_buffers_.size() < 256) {
      free_buffers_.push_back(d.buf);
    } else {
      delete[] d.buf;
    }
    d.buf = nullptr;
    d.head = d.tail = 0;
  }
  bool take_pipe(direction& d) {
    if (d.pipe[0] >= 0) return true;
    if (!free_pipes_.empty()) {
      d.pipe = free_pipes_.back();
      free_pipes_.pop_back();
      return true;
    }
    int p[2];
    if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return false;  // fall back to the buffer
    d.pipe = {p[0], p[1]};
    return true;
  }
  void give_pipe(direction& d) {
    if (d.pipe[0] < 0) return;
    if (d.in_pipe == 0 && free_pipes_.size() < 64) {
      free_pipes_.push_back(d.pipe);
    } else {
      ::close(d.pipe[0]);
      ::close(d.pipe[1]);
    }
    d.pipe = {-1, -1};
    d.in_pipe = 0;
  }

 private:
  // Records the errno of a failed call and says which end to blame: this host itself when
  // the error is a local one.
  fault fail(fault at) {
    error_ = errno;
    return lbkit::is_local_error(error_) ? fault::local : at;
  }

  // Writes what `d` holds toward `to`, the pipe first and then the buffer, until nothing is
  // left (empty optional) or `to` is not writable or failed (the fault to return).
  std::optional<fault> drain(direction& d, int to, bool& writable,
                             std::atomic<std::uint64_t>& moved) {
    while (d.pending()) {
      if (d.in_pipe > 0) {
        if (!writable) return fault::none;
        const ssize_t n =
            ::splice(d.pipe[0], nullptr, to, nullptr, d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN) return fail(fault::destination);
          writable = false;
          return fault::none;
        }
        d.in_pipe -= static_cast<std::size_t>(n);
        d.written += static_cast<std::uint64_t>(n);
        bump(moved, static_cast<std::uint64_t>(n));
        if (d.in_pipe == 0) give_pipe(d);
        continue;
      }
      if (!writable) return fault::none;
      const ssize_t n = ::send(to, d.buf + d.head, d.tail - d.head, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return fail(fault::destination);
        writable = false;
        return fault::none;
      }
      d.head += static_cast<std::uint32_t>(n);
      d.written += static_cast<std::uint64_t>(n);
      bump(moved, static_cast<std::uint64_t>(n));
      if (d.head == d.tail) give_buffer(d);
    }
    return std::nullopt;
  }

  // One splice from `from` into the direction's pipe, which the caller has taken. Empty
  // optional: something happened (bytes or the end) and the pump goes on.
  std::optional<fault> read_into_pipe(direction& d, int from, bool& readable) {
    const ssize_t n =
        ::splice(from, nullptr, d.pipe[1], nullptr, pipe_chunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      // A short splice does not mean the socket is drained: the pipe may have run
      // out of slots (one per packet fragment). Only EAGAIN says it is.
      d.in_pipe = static_cast<std::size_t>(n);
      d.read += static_cast<std::uint64_t>(n);
      d.bulk = static_cast<std::size_t>(n) >= buffer_size;
      return std::nullopt;
    }
    return read_stopped(d, n, readable, [&] { give_pipe(d); });
  }

  // One recv from `from` into the direction's buffer, taken here if it has none. Empty
  // optional: something happened (bytes or the end) and the pump goes on.
  std::optional<fault> read_into_buffer(direction& d, int from, bool& readable, bool hup) {
    if (d.buf == nullptr) d.buf = take_buffer();
    const ssize_t n = ::recv(from, d.buf, buffer_size, 0);
    if (n > 0) {
      d.head = 0;
      d.tail = static_cast<std::uint32_t>(n);
      d.read += static_cast<std::uint64_t>(n);
      d.bulk = static_cast<std::size_t>(n) == buffer_size;
      // A short read drained the socket; the next arrival raises a new edge. After
      // EPOLLRDHUP keep reading, to see the end.
      if (static_cast<std::size_t>(n) < buffer_size && !hup) readable = false;
      return std::nullopt;
    }
    return read_stopped(d, n, readable, [&] { give_buffer(d); });
  }

  // A read from the source that brought no bytes (`n` 0 or -1, errno set): the end, passed
  // on by the pump; EINTR, tried again; EAGAIN, the source drained; or a fault. The pipe or
  // buffer the read was to fill goes back (`give_back`) unless it is tried again.
  template <class GiveBack>
  std::optional<fault> read_stopped(direction& d, ssize_t n, bool& readable, GiveBack give_back) {
    if (n == 0) {
      give_back();
      d.eof = true;
      return std::nullopt;
    }
    if (errno == EINTR) return std::nullopt;
    const bool drained = errno == EAGAIN;
    const fault f = drained ? fault::none : fail(fault::source);  // before give_back: errno
    give_back();
    if (drained) readable = false;
    return f;
  }

  int error_ = 0;
  std::vector<char*> free_buffers_;
  std::vector<std::array<int, 2>> free_pipes_;
};

}  // namespace l4
