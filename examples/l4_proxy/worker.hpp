// SPDX-License-Identifier: MIT
// One event loop of the L4 proxy: a thread with its own epoll set, its own listening sockets
// (SO_REUSEPORT spreads new connections and UDP flows over the threads), its own lbkit
// picker, and every connection it accepted. Threads share only the registry, the balancer
// and relaxed counters.
//
// Epoll is edge-triggered. Each socket is registered once, for reading and writing, and the
// loop keeps two flags per socket — "may have bytes to read", "may take bytes" — set by
// events and cleared by EAGAIN or a short read or write. Backpressure then needs no epoll_ctl
// call at all: a direction that still holds bytes its destination did not take simply does
// not read more, and resumes when the destination's EPOLLOUT edge arrives. Level-triggered
// epoll would need an EPOLL_CTL_MOD each time a side stops or resumes reading; nginx works
// the edge-triggered way for the same reason.
//
// Bytes move through a 16 KiB buffer taken from a per-thread pool only while it holds data
// (an idle connection holds none). After a read fills a whole buffer — a bulk transfer —
// the next reads of that direction use splice(2) through a pooled pipe instead, so large
// bodies are not copied through user space; small request/response traffic stays on plain
// recv/send, where the two extra splice calls would cost more than the copy. That relay is
// relay.hpp, the UDP sessions udp.hpp, the types the loop's parts share loop.hpp; this file
// holds the loop, the TCP connections' phases and their lbkit decisions (admit,
// connect_backend and its pick, backend_failed and its report).
//
// What a failure counts as (docs/architecture.md property 10, docs/l4_proxy.md): a refused connect,
// a connect timeout, or a reset before the backend sent any byte is the backend's connection
// failure, retried on another backend while nothing of the client's reached it; a failure of
// this host (is_local_error: out of descriptors, buffers, ports) is nobody's: the lease ends
// with outcome::none, the listeners pause, and the client waits for a descriptor.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../common/log.hpp"
#include "../common/policies.hpp"
#include "config.hpp"
#include "loop.hpp"
#include "relay.hpp"
#include "udp.hpp"

namespace l4 {

// The policy is chosen at run time (--policy), so the loop holds a type-erased picker: one
// virtual call per new connection or UDP session, and the loop is compiled once rather
// than once per policy.
class worker {
 public:
  worker(shared_state& shared, std::unique_ptr<examples::any_picker> picker,
         std::vector<listen_socket> ls, worker_counters& counters)
      : shared_(shared),
        cfg_(shared.cfg),
        picker_(std::move(picker)),
        counters_(counters),
        ep_(::epoll_create1(EPOLL_CLOEXEC)),
        udp_(shared, *picker_, counters, ep_) {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    add(ep_, wake_fd_, &wake_, EPOLLIN | EPOLLET);
    for (auto& l : ls) {
      auto h = std::make_unique<listener>();
      h->k = l.udp ? kind::udp_listener : kind::tcp_listener;
      h->sock = l;
      add(ep_, l.fd, h.get(), EPOLLIN | EPOLLET);
      listeners_.push_back(std::move(h));
    }
  }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  ~worker() {
    for (auto& l : listeners_) close_fd(l->sock.fd);
    reap();
    while (conns_.next != &conns_) destroy(static_cast<connection*>(conns_.next));
    reap();
    close_fd(wake_fd_);
    close_fd(ep_);
  }

  // Asks the loop to stop accepting and drain (safe from any thread).
  void wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  // Runs until shared.stopping is set and every connection ended or the drain time passed.
  void run() {
    std::array<epoll_event, 256> events;
    std::int64_t next_tick = 0;
    std::int64_t drain_deadline = 0;
    for (;;) {
      const int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 100);
      now_ = steady_now_ns();
      for (int i = 0; i < n; ++i) dispatch(events[static_cast<std::size_t>(i)]);
      run_retries();
      reap();
      if (now_ >= next_tick) {
        tick();
        next_tick = now_ + 100'000'000;
      }
      if (shared_.stopping.load(std::memory_order_acquire)) {
        if (drain_deadline == 0) {
          drain_deadline = now_ + std::chrono::nanoseconds(cfg_.drain_timeout).count();
          for (auto& l : listeners_) close_fd(l->sock.fd);  // stop accepting at once
        }
        if (conns_.next == &conns_) break;
        if (now_ >= drain_deadline) break;  // the destructor closes what is left
      }
    }
  }

 private:
  static constexpr std::size_t buffer_size = relay::buffer_size;
  // How long the listeners stay paused after a shortage of descriptors, unless a connection
  // ends first.
  static constexpr std::int64_t starve_pause = 500'000'000;

  // Whose a failure of a connection is.
  enum class side : std::uint8_t { client, backend, local };

  // starved: a connect that this host could not start (no descriptor, no buffer); the
  // connection waits for a descriptor (see out_of_descriptors).
  enum class phase : std::uint8_t { header, connecting, retrying, starved, established, closed };

  struct connection : link {
    pollable client_side{kind::client};
    pollable server_side{kind::server};
    int cfd = -1, sfd = -1;
    phase ph = phase::header;
    // Readiness, per socket: events set these, EAGAIN or short transfers clear them.
    bool c_in = false, c_out = false, c_hup = false;
    bool s_in = false, s_out = false, s_hup = false;
    direction up, down;  // up: client → backend
    lbkit::lease lease;
    std::uint32_t failures = 0;      // connection failures of backends so far
    std::uint32_t header_size = 0;   // of our PROXY header at the front of `up`
    std::size_t backend = 0;         // index into the counters
    examples::tried_backends tried;  // the backends that failed it, for a retry's pick
    lbkit::endpoint peer, local;
    lbkit::ip_address client;  // the real client: peer, or the PROXY header's source
    std::optional<lbkit::proxy_header> incoming;
    std::int64_t since = 0;        // start of the current phase
    std::int64_t last_active = 0;  // last byte either way
    std::int64_t connect_latency = 0;
  };

  // --- plumbing --------------------------------------------------------------------------

  void dispatch(const epoll_event& ev) {
    auto* p = static_cast<pollable*>(ev.data.ptr);
    switch (p->k) {
      case kind::wake: {
        std::uint64_t v;
        while (::read(wake_fd_, &v, sizeof v) > 0) {
        }
        return;
      }
      case kind::tcp_listener:
        return accept_all(*static_cast<listener*>(p));
      case kind::udp_listener:
        return udp_.client_datagrams(*static_cast<listener*>(p), now_);
      case kind::session:
        return udp_.backend_datagrams(*static_cast<udp_sessions::session*>(p), now_);
      case kind::client: {
        auto* c = static_cast<connection*>(p->owner);
        if (c->ph == phase::closed) return;
        const std::uint32_t e = ev.events;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->c_in = true;
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->c_out = true;
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->c_hup = true;
        return progress(c);
      }
      case kind::server: {
        auto* c = static_cast<connection*>(p->owner);
        if (c->ph != phase::connecting && c->ph != phase::established) return;
        const std::uint32_t e = ev.events;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->s_in = true;
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->s_hup = true;
        if (c->ph == phase::connecting) {
          if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) finish_connect(c);
          return;
        }
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->s_out = true;
        return progress(c);
      }
    }
  }

  // --- TCP -------------------------------------------------------------------------------

  void accept_all(listener& l) {
    while (!l.paused && l.sock.fd >= 0) {
      if (!reserve_slot()) {
        pause(l);  // the kernel's backlog holds the rest until a connection ends
        return;
      }
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      const int fd = ::accept4(l.sock.fd, reinterpret_cast<sockaddr*>(&ss), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) release_slot();
      if (fd < 0) {
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        // A connection that failed while queued (accept(2) lists these as "treat like
        // EAGAIN and retry"): skip it, take the next.
        if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
            err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
            err == EOPNOTSUPP || err == ENETUNREACH || err == EPERM) {
          continue;
        }
        // Out of descriptors or memory, or an error accept(2) does not list: stop accepting
        // for a while rather than spin on a backlog that cannot be taken.
        return out_of_descriptors("accept", err);
      }
      auto peer = lbkit::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
      if (!peer) {
        ::close(fd);
        release_slot();
        continue;
      }
      auto* c = new connection;
      c->client_side.owner = c->server_side.owner = c;
      c->cfd = fd;
      if (!add(ep_, fd, &c->client_side, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
        const int err = errno;
        ::close(fd);
        delete c;
        release_slot();
        return out_of_descriptors("epoll_ctl", err);
      }
      bump(counters_.accepted);
      bump(counters_.active);
      conns_.push_back(*c);
      c->peer = *peer;
      c->client = peer->address();
      c->local = l.sock.local;
      c->since = c->last_active = now_;
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (c->local.address() == lbkit::ip_address() ||
          c->local.address() == lbkit::ip_address::v6({})) {
        // A wildcard listener: the PROXY header wants the address the client reached.
        sockaddr_storage ls{};
        socklen_t ll = sizeof ls;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ls), &ll) == 0) {
          if (auto e = lbkit::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ls), ll)) {
            c->local = *e;
          }
        }
      }
      if (cfg_.accept_proxy) {
        c->ph = phase::header;  // wait for the header; the tick enforces a deadline
      } else {
        admit(c);
      }
    }
  }

  // One of --max-connections, taken before accept(2) so that workers accepting at once
  // cannot pass the limit together (a check, then an increment, let each of two take the
  // last slot); given back by destroy(), or at once if no connection came of it.
  bool reserve_slot() {
    auto n = shared_.connections.load(std::memory_order_relaxed);
    do {
      if (n >= cfg_.max_connections) return false;
    } while (!shared_.connections.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    return true;
  }
  void release_slot() { shared_.connections.fetch_sub(1, std::memory_order_relaxed); }

  // This host ran short (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) while `what` ran: nobody's
  // fault, so no backend is blamed. The TCP listeners leave epoll, and the kernel's backlog
  // holds new clients, until a connection of this worker ends (its descriptors are free
  // again) or, as a fallback for descriptors that other threads or processes free, for
  // `starve_pause` (nginx disables its accept events for 500 ms alike). No busy loop: a
  // listener that cannot be drained is not polled meanwhile.
  void out_of_descriptors(const char* what, int err) {
    static examples::rate_limited_log site;
    bump(counters_.local_errors);
    starved_until_ = now_ + starve_pause;
    for (auto& l : listeners_) {
      if (l->k == kind::tcp_listener) pause(*l);
    }
    if (!cfg_.quiet) {
      site("lbkit_l4_proxy: %s: %s: %s; not accepting for 500 ms or until a connection ends", what,
           std::strerror(err),
           lbkit::is_local_error(err) ? "this host is short of descriptors or memory, no backend "
                                        "is blamed"
                                      : "unexpected error");
    }
  }

  void pause(listener& l) {
    if (l.paused || l.sock.fd < 0) return;
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, l.sock.fd, nullptr);
    l.paused = true;
  }
  // Connections that wait for a descriptor connect first, then the listeners take what
  // queued meanwhile; both stop again at the next shortage.
  void resume_listeners() {
    if (now_ < starved_until_) return;
    starved_until_ = 0;
    run_starved();
    if (now_ < starved_until_) return;  // still short
    if (shared_.connections.load(std::memory_order_relaxed) >= cfg_.max_connections) return;
    for (auto& l : listeners_) {
      if (!l->paused || l->sock.fd < 0) continue;
      if (!add(ep_, l->sock.fd, l.get(), EPOLLIN | EPOLLET)) {
        return out_of_descriptors("epoll_ctl", errno);
      }
      l->paused = false;
      accept_all(*l);  // edge-triggered: what queued meanwhile raises no new edge
      if (now_ < starved_until_) return;
    }
  }

  // Reads the PROXY header an upstream load balancer put in front of the client's bytes.
  void read_header(connection* c) {
    direction& d = c->up;
    if (d.buf == nullptr) d.buf = relay_.take_buffer();
    bool eof = false;  // the client may send header, data and FIN at once
    while (c->c_in && d.tail < buffer_size) {
      const ssize_t n = ::recv(c->cfd, d.buf + d.tail, buffer_size - d.tail, 0);
      if (n > 0) {
        d.tail += static_cast<std::uint32_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        c->c_in = false;
        break;
      }
      if (n < 0) return close_conn(c, lbkit::outcome::none, false);
      eof = true;
      break;
    }
    const auto r =
        lbkit::parse_proxy_header(std::span(reinterpret_cast<const std::uint8_t*>(d.buf), d.tail));
    if (r.status == lbkit::parse_status::incomplete && !eof && d.tail < buffer_size) {
      return;  // wait for more
    }
    if (r.status != lbkit::parse_status::complete) {
      if (d.tail == 0) {
        return close_conn(c, lbkit::outcome::none, false);  // connected and left: a TCP check
      }
      bump(counters_.proxy_header_errors);
      static examples::rate_limited_log site;
      if (!cfg_.quiet) {
        site("lbkit_l4_proxy: closing %s: bad PROXY header: %s", c->peer.to_string().c_str(),
             r.status == lbkit::parse_status::invalid ? r.error.c_str()
             : eof ? "the client ended before the header was complete"
                   : "no complete header in the first 16 KiB");
      }
      return close_conn(c, lbkit::outcome::none, false);
    }
    d.head = static_cast<std::uint32_t>(r.size);
    if (d.head == d.tail) relay_.give_buffer(d);
    d.eof = eof;  // passed on once the bytes after the header are sent
    if (r.value.command == lbkit::proxy_command::proxy &&
        (r.value.family == lbkit::proxy_family::inet ||
         r.value.family == lbkit::proxy_family::inet6)) {
      c->client = r.value.source.address();
      c->incoming = r.value;
    }
    admit(c);
  }

  // ACL, then the PROXY header we send, then a backend.
  void admit(connection* c) {
    if (!shared_.acl.allows(c->client)) {
      bump(counters_.denied);
      return close_conn(c, lbkit::outcome::none, false);
    }
    if (cfg_.send_proxy && !put_header(c)) {
      bump(counters_.proxy_header_errors);
      return close_conn(c, lbkit::outcome::none, false);
    }
    connect_backend(c);
  }

  // Puts the PROXY header we send in front of what the client sent.
  bool put_header(connection* c) {
    const lbkit::proxy_header h =
        c->incoming ? with_version(*c->incoming, *cfg_.send_proxy)
                    : lbkit::proxy_header::for_stream(c->peer, c->local, *cfg_.send_proxy);
    std::array<std::uint8_t, 536> out;
    auto n = lbkit::write_proxy_header(h, out);
    if (!n || !relay_.prepend(c->up, std::span(out.data(), *n))) return false;
    c->header_size = static_cast<std::uint32_t>(*n);
    return true;
  }

  static lbkit::proxy_header with_version(lbkit::proxy_header h, lbkit::proxy_version v) {
    h.version = v;
    if (v == lbkit::proxy_version::v1) {  // v1 has no TLVs and no checksum
      h.tlvs.clear();
      h.crc32c = false;
    }
    return h;
  }

  void connect_backend(connection* c) {
    const auto context = lbkit::pick_context::for_client(c->client);
    // After a connection failure, another backend than those that failed while there is
    // one: a hash policy would pick one again for the same key, a least-loaded one too (a
    // backend that refuses at once has nothing in flight), and in panic, when every backend
    // is eligible, retries could bounce between a dead backend and a resetting one while a
    // third was up (found by the L4 soak).
    lbkit::lease l =
        c->tried.empty() ? picker_->pick(context) : picker_->pick_other(context, c->tried.span());
    if (!l) {
      bump(counters_.no_backend);
      return close_conn(c, lbkit::outcome::none, false);
    }
    const auto it = shared_.index.find(&l.backend());
    c->backend = it == shared_.index.end() ? 0 : it->second;
    c->lease = std::move(l);
    c->ph = phase::connecting;
    c->since = now_;
    c->s_in = c->s_out = c->s_hup = false;
    c->up.written = c->down.read = 0;
    c->connect_latency = steady_now_ns();

    sockaddr_storage ss{};
    const socklen_t len = c->lease.address().to_sockaddr(ss);
    c->sfd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (c->sfd < 0) return connect_error(c, "socket", errno);
    const int one = 1;
    ::setsockopt(c->sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!add(ep_, c->sfd, &c->server_side, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
      return starve(c, "epoll_ctl", errno);
    }
    if (::connect(c->sfd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 &&
        errno != EINPROGRESS) {
      return connect_error(c, "connect", errno);
    }
    // Connected or in progress: EPOLLOUT tells which.
  }

  void finish_connect(connection* c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(c->sfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return connect_error(c, "connect", err);
    c->connect_latency = steady_now_ns() - c->connect_latency;
    c->ph = phase::established;
    c->since = c->last_active = now_;
    c->s_out = true;
    progress(c);
  }

  // A connect that did not happen: this host's shortage, or the backend's connection failure.
  void connect_error(connection* c, const char* what, int err) {
    if (lbkit::is_local_error(err)) return starve(c, what, err);
    backend_failed(c, what, err);
  }

  // This host could not start a connect (no descriptor, no buffer, no local port): not the
  // backend's fault and not one to retry on the others at once, which would fail the same
  // way. The lease ends unreported, the listeners pause, and the connection waits (phase
  // starved) until a descriptor is free again or its connect timeout passes.
  void starve(connection* c, const char* what, int err) {
    c->lease.release();
    close_fd(c->sfd);
    c->ph = phase::starved;
    c->since = now_;
    starved_.push_back(c);
    out_of_descriptors(what, err);
  }

  // Connects the connections that waited for a descriptor (see starve); runs before the
  // listeners resume.
  void run_starved() {
    std::vector<connection*> waiting;
    waiting.swap(starved_);
    for (std::size_t i = 0; i < waiting.size(); ++i) {
      if (waiting[i]->ph != phase::starved) continue;  // closed meanwhile
      connect_backend(waiting[i]);
      if (now_ < starved_until_) {  // short again: the rest keep waiting, in order
        for (++i; i < waiting.size(); ++i) starved_.push_back(waiting[i]);
      }
    }
  }

  // The backend failed the connection before it answered: refused, reset, unreachable, or
  // not established within --connect-timeout (`err` ETIMEDOUT). A connection failure for
  // passive health (docs/architecture.md property 10: what an active check would see too), and,
  // while nothing of the client's reached the backend, another backend while attempts remain. The
  // retry runs after this batch of events, so that events still queued for the closed
  // socket cannot be taken for the new one's.
  void backend_failed(connection* c, const char* what, int err) {
    static examples::rate_limited_log site;
    bump(counters_.backend[c->backend].connect_failures);
    c->tried.add(&c->lease.backend());
    const bool retry = retryable(c) && ++c->failures <= cfg_.retries &&
                       !shared_.stopping.load(std::memory_order_relaxed);
    if (!cfg_.quiet) {
      site("lbkit_l4_proxy: backend %s (%s): %s: %s%s", c->lease.id().c_str(),
           c->lease.address().to_string().c_str(), what, std::strerror(err),
           retry ? "; retrying on another backend" : "");
    }
    c->lease.report(lbkit::outcome::connection_failure);
    if (!retry) return close_conn(c, lbkit::outcome::none, c->ph == phase::established);
    close_fd(c->sfd);
    rewind(c);
    bump(counters_.retries);
    c->ph = phase::retrying;
    retry_.push_back(c);
  }

  // Whether the client's bytes can still go to another backend: the failed one got none of
  // them (at most our PROXY header), and sent none back, not even an end (which was passed
  // on to the client).
  static bool retryable(const connection* c) noexcept {
    return c->down.read == 0 && !c->down.eof && c->up.written <= c->header_size &&
           c->up.in_pipe == 0;
  }

  // Makes `up` hold the stream from its start again for the next backend: our PROXY header,
  // if the failed backend got some of it, is written anew in front of the client's bytes
  // (which were not sent: see retryable). A half-close passed on is passed on again.
  void rewind(connection* c) {
    direction& d = c->up;
    d.shut = false;
    if (c->up.written == 0 || c->header_size == 0) return;
    const std::uint32_t unsent = c->header_size - static_cast<std::uint32_t>(d.written);
    if (d.buf != nullptr) {
      d.head += unsent;  // drop what is left of the old header
      if (d.head == d.tail) relay_.give_buffer(d);
    }
    d.written = 0;
    if (!put_header(c)) c->header_size = 0;  // cannot happen: it fitted before
  }

  // Connects to another backend for the connections whose connect failed; runs between
  // batches of events (see backend_failed).
  void run_retries() {
    while (!retry_.empty()) {
      connection* c = retry_.back();
      retry_.pop_back();
      if (c->ph == phase::retrying) connect_backend(c);
    }
  }

  void progress(connection* c) {
    c->last_active = now_;
    if (c->ph == phase::header) return read_header(c);
    if (c->ph != phase::established) return;
    const fault up = relay_.pump(c->up, c->cfd, c->sfd, c->c_in, c->s_out, c->c_hup,
                                 counters_.backend[c->backend].bytes_to, cfg_.splice);
    if (up != fault::none) {
      return failed(c, up == fault::source        ? side::client
                       : up == fault::destination ? side::backend
                                                  : side::local);
    }
    const fault down = relay_.pump(c->down, c->sfd, c->cfd, c->s_in, c->c_out, c->s_hup,
                                   counters_.backend[c->backend].bytes_from, cfg_.splice);
    if (down != fault::none) {
      return failed(c, down == fault::source        ? side::backend
                       : down == fault::destination ? side::client
                                                    : side::local);
    }
    if (c->up.shut && c->down.shut) close_conn(c, lbkit::outcome::success, false);
  }

  // A socket of an established connection failed (`errno` says how). Blame lands where the
  // fault is: a backend that reset before it sent a byte had a connection failure (and the
  // connection may go to another backend, see retryable), one that reset later a failure; a
  // client that went away, or this host's shortage, is not the backend's doing.
  void failed(connection* c, side who) {
    const int err = relay_.error();
    if (who == side::backend && c->down.read == 0) return backend_failed(c, "recv/send", err);
    if (who == side::local) {
      static examples::rate_limited_log site;
      bump(counters_.local_errors);
      if (!cfg_.quiet) {
        site("lbkit_l4_proxy: closing %s: %s (this host's shortage; no backend is blamed)",
             c->peer.to_string().c_str(), std::strerror(err));
      }
    }
    const auto o = who == side::backend                      ? lbkit::outcome::failure
                   : who == side::client && c->down.read > 0 ? lbkit::outcome::success
                                                             : lbkit::outcome::none;
    close_conn(c, o, true);
  }

  // Ends a connection, reporting `o` on a lease not reported yet. `abort`: a socket failed,
  // so the other side gets a reset rather than an orderly end it could mistake for a
  // complete answer.
  void close_conn(connection* c, lbkit::outcome o, bool abort) {
    if (c->ph == phase::closed) return;
    if (c->lease) {
      c->lease.report(
          o, std::chrono::nanoseconds(c->ph == phase::established ? c->connect_latency : 0));
    }
    c->ph = phase::closed;
    if (abort) {
      const linger l{1, 0};
      if (c->cfd >= 0) ::setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      if (c->sfd >= 0) ::setsockopt(c->sfd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    dead_.push_back(c);  // freed after this batch of events
  }

  // Frees a connection (closing its sockets if close_conn did not already mark it).
  void destroy(connection* c) {
    c->unlink();
    if (!starved_.empty()) std::erase(starved_, c);
    close_fd(c->cfd);
    close_fd(c->sfd);
    relay_.give_buffer(c->up);
    relay_.give_buffer(c->down);
    relay_.give_pipe(c->up);
    relay_.give_pipe(c->down);
    c->lease.release();
    release_slot();
    counters_.active.store(counters_.active.load(std::memory_order_relaxed) - 1,
                           std::memory_order_relaxed);
    delete c;
  }

  // Frees what ended in this batch of events. Their descriptors are free again, so
  // connections waiting for one and paused listeners resume.
  void reap() {
    const bool sessions_ended = udp_.reap();
    if (dead_.empty() && !sessions_ended) return;
    for (connection* c : dead_) destroy(c);
    dead_.clear();
    starved_until_ = 0;
    resume_listeners();
  }

  // Every 100 ms: deadlines of connects and headers, idle connections and UDP sessions,
  // paused listeners.
  void tick() {
    const auto connect_ns = std::chrono::nanoseconds(cfg_.connect_timeout).count();
    const auto idle_ns = std::chrono::nanoseconds(cfg_.idle_timeout).count();
    for (link* l = conns_.next; l != &conns_;) {
      auto* c = static_cast<connection*>(l);
      l = l->next;
      if (c->ph == phase::connecting && now_ - c->since >= connect_ns) {
        bump(counters_.timeouts);
        backend_failed(c, "connect", ETIMEDOUT);
      } else if (c->ph == phase::header && now_ - c->since >= connect_ns) {
        bump(counters_.proxy_header_errors);
        close_conn(c, lbkit::outcome::none, false);
      } else if (c->ph == phase::starved && now_ - c->since >= connect_ns) {
        bump(counters_.timeouts);  // waited a connect timeout for a descriptor
        close_conn(c, lbkit::outcome::none, false);
      } else if (c->ph == phase::established && now_ - c->last_active >= idle_ns) {
        bump(counters_.timeouts);
        close_conn(c, lbkit::outcome::success, false);
      }
    }
    udp_.expire(now_);
    run_retries();  // backend_failed above may have queued some
    reap();
    resume_listeners();  // after a shortage: the fallback of 500 ms (see out_of_descriptors)
  }

  shared_state& shared_;
  const config& cfg_;
  std::unique_ptr<examples::any_picker> picker_;
  worker_counters& counters_;
  int ep_ = -1;
  int wake_fd_ = -1;
  pollable wake_{kind::wake};
  std::vector<std::unique_ptr<listener>> listeners_;
  link conns_;
  std::vector<connection*> retry_;
  std::vector<connection*> starved_;  // waiting for a descriptor (phase::starved), in order
  std::int64_t starved_until_ = 0;    // listeners paused for a shortage until then
  std::vector<connection*> dead_;
  relay relay_;       // buffers, pipes and the pump
  udp_sessions udp_;  // after ep_ and picker_, which it uses
  std::int64_t now_ = 0;
};

}  // namespace l4
