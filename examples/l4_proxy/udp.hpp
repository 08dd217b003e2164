// SPDX-License-Identifier: MIT
// The L4 proxy's UDP sessions: a client's datagrams go to the backend lbkit picked for its
// first one, through a connected socket per session, for as long as the client keeps sending
// (lbkit::flow_table keeps the mapping, whatever the membership does); answers go back from
// the listening socket. A session ends at --udp-timeout of silence, or when the backend
// refuses a datagram (ICMP port unreachable: a connection failure for passive health).
#pragma once

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../common/log.hpp"
#include "../common/policies.hpp"
#include "loop.hpp"
#include "relay.hpp"

namespace l4 {

// One worker's UDP sessions. Not thread-safe: its worker's loop calls it.
class udp_sessions {
 public:
  struct session : link, pollable {
    int fd = -1;
    listener* via = nullptr;
    lbkit::endpoint client_ep;
    lbkit::flow_key key;
    lbkit::lease lease;
    std::size_t backend = 0;
    std::int64_t last_active = 0;
    bool replied = false;
    bool dead = false;
  };

  udp_sessions(shared_state& shared, examples::any_picker& picker, worker_counters& counters,
               int ep)
      : shared_(shared),
        cfg_(shared.cfg),
        picker_(picker),
        counters_(counters),
        ep_(ep),
        flows_(lbkit::flow_table_options{
            .capacity = std::max<std::size_t>(shared.cfg.max_connections, 1),
            .idle_timeout = shared.cfg.udp_timeout,
            .shards = 1}) {}
  udp_sessions(const udp_sessions&) = delete;
  udp_sessions& operator=(const udp_sessions&) = delete;
  ~udp_sessions() {
    while (sessions_.next != &sessions_) end_session(static_cast<session*>(sessions_.next), 0);
    reap();
  }

  // Ends the sessions silent for --udp-timeout.
  void expire(std::int64_t now) {
    const auto udp_ns = std::chrono::nanoseconds(cfg_.udp_timeout).count();
    for (link* l = sessions_.next; l != &sessions_;) {
      auto* s = static_cast<session*>(l);
      l = l->next;
      if (now - s->last_active >= udp_ns) end_session(s, now);
    }
  }

  // Frees the sessions that ended; whether there were any (their descriptors are free).
  bool reap() {
    if (dead_.empty()) return false;
    for (session* s : dead_) delete s;
    dead_.clear();
    return true;
  }

  void client_datagrams(listener& l, std::int64_t now) {
    for (;;) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      const ssize_t n = ::recvfrom(l.sock.fd, dgram_.data(), dgram_.size(), 0,
                                   reinterpret_cast<sockaddr*>(&ss), &len);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && lbkit::is_local_error(errno)) bump(counters_.local_errors);
        return;  // EAGAIN; after an error, the next datagram raises a new edge
      }
      auto client = lbkit::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
      if (!client || !shared_.acl.allows(client->address())) {
        bump(counters_.denied);
        continue;
      }
      session* s = session_for(l, *client, now);
      if (s == nullptr) {
        bump(counters_.udp_dropped);
        continue;
      }
      s->last_active = now;
      if (::send(s->fd, dgram_.data(), static_cast<std::size_t>(n), 0) < 0) {
        // ECONNREFUSED: the ICMP port unreachable of an earlier datagram. Anything else
        // (ENOBUFS, EAGAIN: the send buffer is full) is this host's: the datagram is lost.
        if (errno == ECONNREFUSED) session_refused(*s, now);
        bump(counters_.udp_dropped);
        continue;
      }
      bump(counters_.backend[s->backend].bytes_to, static_cast<std::uint64_t>(n));
      bump(counters_.backend[s->backend].datagrams);
    }
  }

  // The client's session, or a new one on a backend from the balancer. The flow table keeps
  // a client on its backend for as long as it keeps sending, whatever the membership does.
  session* session_for(listener& l, const lbkit::endpoint& client, std::int64_t now) {
    const auto key = lbkit::flow_key::for_five_tuple(client, l.sock.local, IPPROTO_UDP);
    if (auto found = flows_.find(key, now)) {
      if (!(*found)->dead) return *found;
    }
    if (shared_.stopping.load(std::memory_order_relaxed)) return nullptr;
    lbkit::lease lease = picker_.pick(lbkit::pick_context::for_client(client.address()));
    if (!lease) {
      bump(counters_.no_backend);
      return nullptr;
    }
    static examples::rate_limited_log site;
    // A socket or connect that fails for this host's reasons ends the lease unreported: the
    // datagram is lost, and no backend is blamed.
    auto local = [&](const char* what) {
      bump(counters_.local_errors);
      if (!cfg_.quiet) {
        site(
            "lbkit_l4_proxy: UDP session for %s: %s: %s (this host's shortage; no backend is "
            "blamed)",
            client.to_string().c_str(), what, std::strerror(errno));
      }
      return nullptr;
    };
    sockaddr_storage ss{};
    const socklen_t len = lease.address().to_sockaddr(ss);
    const int fd = ::socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return local("socket");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
      const int err = errno;
      ::close(fd);
      errno = err;
      if (lbkit::is_local_error(err)) return local("connect");
      lease.report(lbkit::outcome::connection_failure);  // unreachable
      return nullptr;
    }
    auto* s = new session;
    s->k = kind::session;
    s->fd = fd;
    if (!add(ep_, fd, s, EPOLLIN | EPOLLET)) {
      delete s;
      ::close(fd);
      return local("epoll_ctl");
    }
    s->via = &l;
    s->client_ep = client;
    s->key = key;
    const auto it = shared_.index.find(&lease.backend());
    s->backend = it == shared_.index.end() ? 0 : it->second;
    s->lease = std::move(lease);
    s->last_active = now;
    sessions_.push_back(*s);
    bump(counters_.udp_sessions);
    if (auto evicted = flows_.insert(key, s, now)) {
      if (evicted->second != s) end_session(evicted->second, now);
    }
    return s;
  }

  void backend_datagrams(session& s, std::int64_t now) {
    sockaddr_storage ss{};
    const socklen_t len = s.client_ep.to_sockaddr(ss);
    while (!s.dead) {
      const ssize_t n = ::recv(s.fd, dgram_.data(), dgram_.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ECONNREFUSED) session_refused(s, now);  // ICMP port unreachable
        return;
      }
      s.replied = true;
      s.last_active = now;
      if (s.via->sock.fd < 0 || ::sendto(s.via->sock.fd, dgram_.data(), static_cast<std::size_t>(n),
                                         0, reinterpret_cast<const sockaddr*>(&ss), len) < 0) {
        bump(counters_.udp_dropped);
        continue;
      }
      bump(counters_.backend[s.backend].bytes_from, static_cast<std::uint64_t>(n));
    }
  }

  // The backend refused a datagram of the session (ICMP port unreachable): a connection
  // failure for passive health, as a refused TCP connect is. The session ends, so that the
  // client's next datagram is balanced anew (to another backend, once this one is ejected
  // or marked down) instead of going on to a port that refuses it until --udp-timeout.
  void session_refused(session& s, std::int64_t now) {
    static examples::rate_limited_log site;
    bump(counters_.backend[s.backend].connect_failures);
    if (!cfg_.quiet && s.lease) {
      site(
          "lbkit_l4_proxy: backend %s (%s) refused a UDP datagram of %s (ICMP port "
          "unreachable); the session ends",
          s.lease.id().c_str(), s.lease.address().to_string().c_str(),
          s.client_ep.to_string().c_str());
    }
    s.lease.report(lbkit::outcome::connection_failure);
    end_session(&s, now);
  }

  void end_session(session* s, std::int64_t now) {
    if (s->dead) return;
    s->dead = true;
    if (auto mine = flows_.find(s->key, now); mine && *mine == s) flows_.erase(s->key);
    s->lease.report(s->replied ? lbkit::outcome::success : lbkit::outcome::none);
    close_fd(s->fd);
    s->unlink();
    counters_.udp_sessions.store(counters_.udp_sessions.load(std::memory_order_relaxed) - 1,
                                 std::memory_order_relaxed);
    dead_.push_back(s);
  }

 private:
  shared_state& shared_;
  const config& cfg_;
  examples::any_picker& picker_;
  worker_counters& counters_;
  int ep_;
  link sessions_;
  std::vector<session*> dead_;
  lbkit::flow_table<session*> flows_;
  std::array<char, 65536> dgram_{};
};

}  // namespace l4
