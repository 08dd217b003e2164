// SPDX-License-Identifier: MIT
// lbkit_l4_proxy: a TCP/UDP load balancer in the manner of HAProxy `mode tcp` or nginx
// `stream`, assembled from lbkit on plain Linux epoll. See docs/l4_proxy.md.
//
// The main thread parses the command line, opens the listening sockets, builds the registry,
// the balancer and the health checker, starts one worker (event loop) per --threads, and
// then handles signals, the stats endpoint and passive outlier detection until SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include <lbkit/lbkit.hpp>

#include "../common/listen.hpp"
#include "../common/policies.hpp"
#include "config.hpp"
#include "worker.hpp"

namespace l4 {
namespace {

using examples::policy_names;
using examples::with_policy;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "lbkit_l4_proxy: %s\n", message.c_str());
  std::exit(2);
}

// A whole number from lo to hi, checked before CLI11 converts the text, so that "2x", "-1"
// and "99999999999" are refused with what is wrong, not "not in range" or "could not
// convert".
CLI::Validator whole_number(std::uint64_t lo, std::uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const auto n = lbkit::parse_decimal(text, hi);
        if (n && *n >= lo) return {};
        return lbkit::quote(text) + " is not a whole number from " + std::to_string(lo) + " to " +
               std::to_string(hi);
      },
      "INT in [" + std::to_string(lo) + " - " + std::to_string(hi) + "]");
}

// A listening socket on `at` (port 0 picks one); with `reuseport`, SO_REUSEPORT so that
// every worker can own one on the same address. Only TCP sockets get SO_REUSEADDR (for
// connections left in TIME_WAIT): on a UDP socket it would let another socket with it, a
// second instance checking the address with examples::check_free, share the port unseen.
lbkit::result<listen_socket> open_listener(const lbkit::endpoint& at, bool udp, bool reuseport) {
  sockaddr_storage ss{};
  const socklen_t len = at.to_sockaddr(ss);
  const int fd =
      ::socket(ss.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  auto fail = [&](const char* what) {
    const std::string m = std::string(what) + " " + at.to_string() + (udp ? "/udp" : "/tcp") +
                          ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return lbkit::make_error(lbkit::errc::failed_precondition, m);
  };
  if (fd < 0) return fail("socket");
  const int one = 1;
  if (!udp) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ss.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) return fail("bind");
  if (!udp && ::listen(fd, 4096) != 0) return fail("listen");
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  auto e = lbkit::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), blen);
  if (!e) return fail("getsockname");
  return listen_socket{fd, *e, udp};
}

const char* health_text(const lbkit::backend_state& s) {
  if (s.ejected()) return "ejected";
  return s.active_health() == lbkit::health::healthy ? "up" : "down";
}

// The stats page: plain text, one `key value` line per global counter and one line of
// key=value pairs per backend, so that both people and scripts can read it.
std::string stats_text(const lbkit::backend_registry& registry, const config& cfg,
                       const std::vector<std::unique_ptr<worker_counters>>& workers,
                       std::chrono::steady_clock::time_point started) {
  auto sum = [&](auto member) {
    std::uint64_t n = 0;
    for (const auto& w : workers) n += ((*w).*member).load(std::memory_order_relaxed);
    return n;
  };
  std::string out;
  auto line = [&](const char* key, std::uint64_t v) {
    out += key;
    out += ' ';
    out += std::to_string(v);
    out += '\n';
  };
  line("uptime_seconds",
       static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::steady_clock::now() - started)
                                      .count()));
  line("connections_active", sum(&worker_counters::active));
  line("connections_total", sum(&worker_counters::accepted));
  line("denied", sum(&worker_counters::denied));
  line("proxy_header_errors", sum(&worker_counters::proxy_header_errors));
  line("no_backend", sum(&worker_counters::no_backend));
  line("retries", sum(&worker_counters::retries));
  line("timeouts", sum(&worker_counters::timeouts));
  line("udp_sessions_active", sum(&worker_counters::udp_sessions));
  line("udp_dropped", sum(&worker_counters::udp_dropped));
  line("local_errors", sum(&worker_counters::local_errors));
  const auto snap = registry.current();
  for (std::size_t i = 0; i < cfg.backends.size(); ++i) {
    const auto* m = snap->find(cfg.backends[i].id);
    if (m == nullptr) continue;
    std::uint64_t to = 0, from = 0, fails = 0, dgrams = 0;
    for (const auto& w : workers) {
      to += w->backend[i].bytes_to.load(std::memory_order_relaxed);
      from += w->backend[i].bytes_from.load(std::memory_order_relaxed);
      fails += w->backend[i].connect_failures.load(std::memory_order_relaxed);
      dgrams += w->backend[i].datagrams.load(std::memory_order_relaxed);
    }
    const auto& s = m->state();
    const auto t = s.totals();
    out += "backend id=" + m->id() + " address=" + m->address().to_string() +
           " weight=" + std::to_string(m->weight()) + " health=" + health_text(s) +
           " active=" + std::to_string(t.in_flight()) + " picks=" + std::to_string(t.started) +
           " failures=" + std::to_string(t.failed()) +
           " connect_failures=" + std::to_string(fails) + " bytes_to=" + std::to_string(to) +
           " bytes_from=" + std::to_string(from) + " datagrams=" + std::to_string(dgrams) + "\n";
  }
  return out;
}

// The stats listener, served by the main thread from its epoll set (level-triggered). The
// page is most useful when the proxy is in trouble, out of descriptors included, so one
// descriptor is kept in reserve for it (/dev/null, opened at start): when accept fails for
// lack of one, the reserve is closed, the connection accepted and answered, and the reserve
// opened again. When even that fails (a worker took the freed descriptor), the listener
// leaves epoll for 500 ms rather than wake the loop at once again and again.
class stats_listener {
 public:
  stats_listener(int ep, listen_socket s) : ep_(ep), sock_(s) {
    spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    arm();
  }
  stats_listener(const stats_listener&) = delete;
  stats_listener& operator=(const stats_listener&) = delete;
  ~stats_listener() {
    if (sock_.fd >= 0) ::close(sock_.fd);
    if (spare_ >= 0) ::close(spare_);
  }
  int fd() const noexcept { return sock_.fd; }
  const lbkit::endpoint& local() const noexcept { return sock_.local; }

  // Milliseconds until the listener is to be polled again, for epoll_wait (-1: it is).
  int paused_for(std::chrono::steady_clock::time_point now) const {
    if (!paused_) return -1;
    return static_cast<int>(std::max<std::int64_t>(
        0, std::chrono::duration_cast<milliseconds>(resume_at_ - now).count()));
  }
  void resume_if_due(std::chrono::steady_clock::time_point now) {
    if (paused_ && now >= resume_at_) arm();
  }

  // Answers one request; bounded to 200 ms so that a silent client cannot hold the thread.
  template <class Body>
  void serve(const Body& body) {
    int fd = ::accept4(sock_.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_ >= 0) {
      ::close(spare_);
      spare_ = -1;
      fd = ::accept4(sock_.fd, nullptr, nullptr, SOCK_CLOEXEC);
    }
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) pause();
      if (spare_ < 0) spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      return;
    }
    answer(fd, body());
    ::close(fd);
    if (spare_ < 0) spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

 private:
  void arm() {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = sock_.fd;
    paused_ = ::epoll_ctl(ep_, EPOLL_CTL_ADD, sock_.fd, &ev) != 0 && errno != EEXIST;
    if (paused_) resume_at_ = std::chrono::steady_clock::now() + milliseconds(500);
  }
  void pause() {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, sock_.fd, nullptr);
    paused_ = true;
    resume_at_ = std::chrono::steady_clock::now() + milliseconds(500);
  }
  static void answer(int fd, const std::string& body) {
    const timeval tv{0, 200'000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string request;
    char buf[1024];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      request.append(buf, static_cast<std::size_t>(n));
    }
    const bool get = request.rfind("GET ", 0) == 0;
    const std::string reply =
        get ? "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body
            : std::string(
                  "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n");
    [[maybe_unused]] auto n = ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
  }

  int ep_;
  listen_socket sock_;
  int spare_ = -1;
  bool paused_ = false;
  std::chrono::steady_clock::time_point resume_at_{};
};

// One line per change of a backend's health: bounded by the checks' rate, not by traffic.
std::function<void(const lbkit::health_event&)> health_log(const config& cfg) {
  return [quiet = cfg.quiet](const lbkit::health_event& e) {
    if (quiet) return;
    const std::string cause =
        e.cause.detail.empty() ? std::string(lbkit::to_string(e.cause.status)) : e.cause.detail;
    // A passive event here is an ejection that a passing check ended (docs/health.md).
    std::fprintf(stderr, "lbkit_l4_proxy: backend %s (%s) %s: %s\n", e.id.c_str(),
                 e.address.to_string().c_str(),
                 e.passive ? (e.to == lbkit::health::healthy ? "restored" : "ejected")
                 : e.to == lbkit::health::healthy ? "is up"
                                                  : "is down",
                 cause.c_str());
  };
}

// With active checks a backend starts down and needs `rise` good answers first, as in
// HAProxy; without, it starts up.
void add_backends(lbkit::backend_registry& registry, const config& cfg) {
  for (const auto& b : cfg.backends) {
    if (auto r = registry.add(lbkit::backend(b.id, b.address, b.weight),
                              examples::initial_health(cfg.health));
        !r) {
      die(r.error().message);
    }
  }
}

// The signals that the main loop reads through a signalfd: SIGTERM and SIGINT stop the
// proxy, SIGUSR1 prints the stats to stderr.
sigset_t control_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&set, s);
  return set;
}

// Fills in what the workers share that never changes after start: the access list, and each
// backend's position in cfg.backends, which says where its counters are.
void fill_shared(shared_state& shared, const config& cfg, const lbkit::backend_registry& registry) {
  for (const auto& c : cfg.deny) {
    if (auto r = shared.acl.add(c, lbkit::acl_action::deny); !r) die(r.error().message);
  }
  for (const auto& c : cfg.allow) {
    if (auto r = shared.acl.add(c, lbkit::acl_action::allow); !r) die(r.error().message);
  }
  const auto snap = registry.current();
  for (std::size_t i = 0; i < cfg.backends.size(); ++i) {
    if (const auto* m = snap->find(cfg.backends[i].id)) shared.index[&m->state()] = i;
  }
}

// The passive outlier detector's settings, from --passive-failures and --ejection-time.
lbkit::outlier_detection_options outlier_options(const config& cfg) {
  lbkit::outlier_detection_options o;
  // --passive-failures counts failed connections in a row: connection failures, the only
  // gateway failures this proxy reports. A reset after the backend answered (a failure)
  // ends such a streak and starts none; counted with them, the resets of a crash's open
  // connections made its refusals a mixed streak, ejected for --ejection-time although a
  // passing check ends an ejection for connection failures (docs/health.md).
  o.consecutive_failures = 0;
  o.consecutive_gateway_failures = cfg.passive_failures;
  o.base_ejection_time = cfg.ejection_time;
  o.max_ejection_time = std::max(cfg.ejection_time, o.max_ejection_time);
  return o;
}

// The main thread's loop, until SIGTERM or SIGINT arrives on `sfd`: it answers the stats
// page, prints the stats on SIGUSR1 and runs the outlier detector.
void control_loop(int ep, int sfd, std::optional<stats_listener>& page, const config& cfg,
                  const lbkit::backend_registry& registry,
                  const std::vector<std::unique_ptr<worker_counters>>& counters,
                  std::optional<lbkit::outlier_detector>& outliers) {
  const auto started = std::chrono::steady_clock::now();
  auto next_evaluation = started;
  for (bool running = true; running;) {
    auto now = std::chrono::steady_clock::now();
    int timeout = static_cast<int>(std::max<std::int64_t>(
        0, std::chrono::duration_cast<milliseconds>(next_evaluation - now).count()));
    if (page && page->paused_for(now) >= 0) timeout = std::min(timeout, page->paused_for(now));
    epoll_event events[4];
    const int n = ::epoll_wait(ep, events, 4, timeout);
    for (int i = 0; i < n; ++i) {
      if (page && events[i].data.fd == page->fd()) {
        page->serve([&] { return stats_text(registry, cfg, counters, started); });
        continue;
      }
      signalfd_siginfo si{};
      if (::read(sfd, &si, sizeof si) != sizeof si) continue;
      if (si.ssi_signo == SIGUSR1) {
        const std::string text = stats_text(registry, cfg, counters, started);
        std::fwrite(text.data(), 1, text.size(), stderr);
      } else {
        running = false;
      }
    }
    now = std::chrono::steady_clock::now();
    if (page) page->resume_if_due(now);
    // Once a second, not once per wake-up: a busy stats page must not run the detector hot.
    if (now < next_evaluation) continue;
    next_evaluation = now + std::chrono::seconds(1);
    if (outliers) {
      for (const auto& e : outliers->evaluate(now)) {
        if (!cfg.quiet) {
          std::fprintf(stderr, "lbkit_l4_proxy: backend %s %s (passive: %s)\n", e.id.c_str(),
                       e.ejected ? "ejected" : "restored",
                       std::string(lbkit::to_string(e.reason)).c_str());
        }
      }
    }
  }
}

// Everything but the balancer, which is the only part that depends on the policy: `pickers`
// makes one type-erased picker per worker from it.
using picker_factory = std::function<std::unique_ptr<examples::any_picker>()>;
int run(const config& cfg, lbkit::backend_registry& registry,
        std::vector<std::vector<listen_socket>> sockets, std::optional<listen_socket> stats,
        const picker_factory& pickers) {
  shared_state shared{cfg, {}, {}, {}, {}};
  fill_shared(shared, cfg, registry);

  std::vector<std::unique_ptr<worker_counters>> counters;
  std::vector<std::unique_ptr<worker>> workers;
  for (auto& s : sockets) {
    counters.push_back(std::make_unique<worker_counters>(cfg.backends.size()));
    workers.push_back(std::make_unique<worker>(shared, pickers(), std::move(s), *counters.back()));
  }
  auto checker = examples::start_health(registry, cfg.health, health_log(cfg));
  if (!checker) die("--health: " + checker.error().message);
  std::shared_ptr<void> health = std::move(*checker);

  std::optional<lbkit::outlier_detector> outliers;
  if (cfg.passive_failures > 0) outliers.emplace(registry, outlier_options(cfg));

  std::vector<std::jthread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });

  // Signals arrive through a signalfd (they were blocked in every thread before any was
  // started), next to the stats socket, in one epoll set.
  const sigset_t set = control_signals();
  const int sfd = ::signalfd(-1, &set, SFD_CLOEXEC);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = sfd;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
  std::optional<stats_listener> page;
  if (stats) {
    page.emplace(ep, *stats);
    std::printf("stats on %s\n", page->local().to_string().c_str());
  }
  std::fflush(stdout);

  control_loop(ep, sfd, page, cfg, registry, counters, outliers);
  if (!cfg.quiet) std::fprintf(stderr, "lbkit_l4_proxy: stopping, draining connections\n");
  shared.stopping.store(true, std::memory_order_release);
  for (auto& w : workers) w->wake();
  threads.clear();  // joins: each worker returns when drained or at the drain deadline
  health.reset();
  page.reset();
  ::close(sfd);
  ::close(ep);
  return 0;
}

// The flags' text as given, before it is checked and converted into the config.
struct flag_text {
  std::vector<std::string> listen, backends, allow, deny;
  std::string health = "none", health_interval = "2s", health_timeout = "1s",
              connect_timeout = "2s", idle_timeout = "10m", udp_timeout = "30s",
              drain_timeout = "10s", ejection_time = "30s", proxy_protocol, stats;
  bool no_splice = false;
};

// Declares every flag, in the order that --help lists them. Values that CLI11 can store as
// they are go straight into `cfg`; the rest go into `text`, for read_flags to convert.
void add_flags(CLI::App& app, config& cfg, flag_text& text) {
  app.set_help_flag("-h,--help", "Print this help and exit");
  app.add_option("--listen", text.listen,
                 "Address to accept on, ADDR:PORT (repeatable; port 0 picks one)")
      ->required();
  app.add_option("--backend", text.backends,
                 "Backend, ADDR:PORT[,weight=N][,id=NAME] (repeatable; weight 0..1000000, "
                 "default 1; id defaults to the address)")
      ->required();
  app.add_option("--policy", cfg.policy, std::string("Selection policy: ") + policy_names)
      ->capture_default_str();
  app.add_option("--health", text.health, "Active health check: none, tcp, http:PATH or icmp")
      ->capture_default_str();
  app.add_option("--health-interval", text.health_interval,
                 "Time between checks of a healthy backend")
      ->capture_default_str();
  app.add_option("--health-timeout", text.health_timeout, "Deadline of one check")
      ->capture_default_str();
  app.add_option("--rise", cfg.health.rise, "Good checks that bring a backend up")
      ->capture_default_str()
      ->check(whole_number(1, 1000));
  app.add_option("--fall", cfg.health.fall, "Failed checks that bring a backend down")
      ->capture_default_str()
      ->check(whole_number(1, 1000));
  app.add_option("--passive-failures", cfg.passive_failures,
                 "Consecutive failed connections that eject a backend (0: off)")
      ->capture_default_str()
      ->check(whole_number(0, 1'000'000));
  app.add_option("--ejection-time", text.ejection_time, "How long the first passive ejection lasts")
      ->capture_default_str();
  app.add_flag("--udp", cfg.udp, "Proxy UDP datagrams instead of TCP connections");
  app.add_option("--proxy-protocol", text.proxy_protocol,
                 "Send a PROXY protocol header (v1 or v2) to backends (TCP)");
  app.add_flag("--accept-proxy", cfg.accept_proxy,
               "Expect a PROXY protocol header (v1 or v2) from clients (TCP)");
  app.add_option("--allow", text.allow, "Accept only clients in this CIDR (repeatable)");
  app.add_option("--deny", text.deny,
                 "Refuse clients in this CIDR (repeatable; longest match wins)");
  app.add_option("--threads", cfg.threads, "Event loops (threads), one listener each")
      ->capture_default_str()
      ->check(whole_number(1, 256));
  app.add_option("--stats", text.stats, "Serve plain-text stats over HTTP on ADDR:PORT");
  app.add_option("--max-connections", cfg.max_connections, "Open TCP connections at most")
      ->capture_default_str()
      ->check(whole_number(1, 10'000'000));
  app.add_option("--connect-timeout", text.connect_timeout, "Deadline of a backend connect")
      ->capture_default_str();
  app.add_option("--retries", cfg.retries, "Connect retries on other backends")
      ->capture_default_str()
      ->check(whole_number(0, 100));
  app.add_option("--idle-timeout", text.idle_timeout, "Close a TCP connection idle this long")
      ->capture_default_str();
  app.add_option("--udp-timeout", text.udp_timeout, "End a UDP session idle this long")
      ->capture_default_str();
  app.add_option("--drain-timeout", text.drain_timeout,
                 "On SIGTERM, wait this long for connections")
      ->capture_default_str();
  app.add_flag("--no-splice", text.no_splice, "Never use splice(2) for bulk transfers");
  app.add_flag("-q,--quiet", cfg.quiet, "Log nothing but errors at startup");
}

// Converts the flags' text into `cfg`. A value that is wrong ends the program, and the first
// one in the order below is the one reported.
void read_flags(const flag_text& text, config& cfg) {
  auto check = [](auto r, const std::string& flag) {
    if (!r) die(flag + ": " + r.error().message);
    return std::move(*r);
  };
  for (const auto& l : text.listen) {
    cfg.listen.push_back(check(lbkit::endpoint::parse(l, lbkit::port_zero::allow), "--listen"));
  }
  for (const auto& b : text.backends) {
    cfg.backends.push_back(check(parse_backend(b), "--backend"));
  }
  for (const auto& c : text.allow) cfg.allow.push_back(check(lbkit::cidr::parse(c), "--allow"));
  for (const auto& c : text.deny) cfg.deny.push_back(check(lbkit::cidr::parse(c), "--deny"));
  cfg.health.interval = check(parse_duration(text.health_interval), "--health-interval");
  cfg.health.timeout = check(parse_duration(text.health_timeout), "--health-timeout");
  cfg.connect_timeout = check(parse_duration(text.connect_timeout), "--connect-timeout");
  cfg.idle_timeout = check(parse_duration(text.idle_timeout), "--idle-timeout");
  cfg.udp_timeout = check(parse_duration(text.udp_timeout), "--udp-timeout");
  cfg.drain_timeout = check(parse_duration(text.drain_timeout), "--drain-timeout");
  cfg.ejection_time = check(parse_duration(text.ejection_time), "--ejection-time");
  for (auto [d, flag] : {std::pair{cfg.health.interval, "--health-interval"},
                         {cfg.health.timeout, "--health-timeout"},
                         {cfg.connect_timeout, "--connect-timeout"},
                         {cfg.idle_timeout, "--idle-timeout"},
                         {cfg.udp_timeout, "--udp-timeout"},
                         {cfg.ejection_time, "--ejection-time"}}) {
    if (d.count() <= 0) die(std::string(flag) + ": must be above 0");
  }
  cfg.splice = !text.no_splice;
  if (auto r = examples::parse_health_kind(text.health, cfg.health); !r) {
    die("--health: " + r.error().message);
  }
  if (!text.proxy_protocol.empty()) {
    if (text.proxy_protocol == "v1") {
      cfg.send_proxy = lbkit::proxy_version::v1;
    } else if (text.proxy_protocol == "v2") {
      cfg.send_proxy = lbkit::proxy_version::v2;
    } else {
      die("--proxy-protocol: " + lbkit::quote(text.proxy_protocol) + " is not v1 or v2");
    }
  }
  if (cfg.udp && (cfg.send_proxy || cfg.accept_proxy)) {
    die("--proxy-protocol and --accept-proxy apply to TCP, not to --udp");
  }
  if (!text.stats.empty()) {
    cfg.stats = check(lbkit::endpoint::parse(text.stats, lbkit::port_zero::allow), "--stats");
  }
}

// The checks of the configuration as a whole, once every value is known.
void check_config(const config& cfg) {
  std::vector<std::string> ids;
  for (const auto& b : cfg.backends) {
    if (std::find(ids.begin(), ids.end(), b.id) != ids.end()) {
      die("--backend: two backends have the id " + lbkit::quote(b.id) + " (give one an id=NAME)");
    }
    ids.push_back(b.id);
  }
  if (!with_policy(cfg.policy, []<class>() {})) {
    die("--policy: " + lbkit::quote(cfg.policy) + " is not one of: " + policy_names);
  }
  if (auto r = check_weights(cfg); !r) die(r.error().message);
  // Before anything is bound: addresses of this configuration that would share connections.
  if (auto r = check_addresses(cfg); !r) die(r.error().message);
}

// Process-wide settings, made before any thread is started.
void prepare_process() {
  // Signals: SIGPIPE ignored (a peer that closed is an EPIPE, not a death); the others are
  // blocked in every thread and read by the main loop through a signalfd.
  ::signal(SIGPIPE, SIG_IGN);
  const sigset_t set = control_signals();
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);

  // Two descriptors per connection plus pipes: raise the soft limit to the hard one.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Addresses that another socket holds (a second instance, another program): refused
// before the SO_REUSEPORT group binds them, which would otherwise join and split their
// traffic with it. Port 0 asks for a fresh port and needs no check.
void check_addresses_free(const config& cfg) {
  for (const auto& at : cfg.listen) {
    if (auto r = examples::check_free({"--listen", at}, cfg.udp ? SOCK_DGRAM : SOCK_STREAM,
                                      /*v6only=*/true);
        !r) {
      die(r.error().message);
    }
  }
  if (cfg.stats) {
    if (auto r = examples::check_free({"--stats", *cfg.stats}, SOCK_STREAM, /*v6only=*/true); !r) {
      die(r.error().message);
    }
  }
}

// One socket per listen address per worker. A port-0 address is resolved by the first
// worker's socket, and the others bind the port it got.
std::vector<std::vector<listen_socket>> open_listeners(config& cfg) {
  std::vector<std::vector<listen_socket>> sockets(cfg.threads);
  for (auto& at : cfg.listen) {
    for (unsigned t = 0; t < cfg.threads; ++t) {
      auto s = open_listener(at, cfg.udp, true);
      if (!s) die(s.error().message);
      if (t == 0) {
        at = s->local;
        std::printf("listening on %s/%s\n", at.to_string().c_str(), cfg.udp ? "udp" : "tcp");
      }
      sockets[t].push_back(*s);
    }
  }
  std::fflush(stdout);
  return sockets;
}

// The stats page: one socket, no SO_REUSEPORT (nothing may join it).
std::optional<listen_socket> open_stats_socket(const config& cfg) {
  std::optional<listen_socket> stats_socket;
  if (cfg.stats) {
    auto s = open_listener(*cfg.stats, false, false);
    if (!s) die("--stats: " + s.error().message);
    stats_socket = *s;
  }
  return stats_socket;
}

}  // namespace
}  // namespace l4

int main(int argc, char** argv) {
  using namespace l4;
  config cfg;
  CLI::App app{
      "lbkit_l4_proxy: a TCP/UDP load balancer built from lbkit on epoll.\n"
      "Durations take a unit: 500ms, 2s, 1m, 1h."};
  flag_text text;
  add_flags(app, cfg, text);
  // Every refusal exits 2 with the program's name in front, CLI11's own included.
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    die(std::string(e.what()) + " (run with --help for the flags)");
  }
  read_flags(text, cfg);
  check_config(cfg);

  prepare_process();
  check_addresses_free(cfg);
  auto sockets = open_listeners(cfg);
  const auto stats_socket = open_stats_socket(cfg);

  lbkit::backend_registry registry;
  add_backends(registry, cfg);
  auto balancer = examples::make_balancer(cfg.policy, registry);
  if (!balancer) die("--policy: " + balancer.error().message);
  return run(cfg, registry, std::move(sockets), stats_socket,
             [&b = **balancer] { return b.make_picker(); });
}
