// SPDX-License-Identifier: MIT
// lbkit_l7_router: a small HTTP/1.1 router and API gateway assembled from lbkit on
// Boost.Asio + Beast (C++20 coroutines). See docs/l7_router.md.
//
// One io_context per thread, each with its own SO_REUSEPORT acceptor, pickers and upstream
// connection pools; the main thread handles signals (SIGTERM drains, SIGHUP reloads the
// configuration) and runs passive outlier detection.
#include <sys/resource.h>

#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "../common/listen.hpp"
#include "../common/log.hpp"
#include "asio.hpp"
#include "config.hpp"
#include "proxy.hpp"
#include "runtime.hpp"

namespace l7 {
namespace {

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "lbkit_l7_router: %s\n", message.c_str());
  std::exit(2);
}

awaitable<void> accept_loop(tcp_acceptor& acceptor, thread_state& ts) {
  static examples::rate_limited_log accept_errors;
  steady_timer backoff(acceptor.get_executor());
  for (;;) {
    beast::error_code ec;
    tcp_socket s = co_await acceptor.async_accept(into(ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors (EMFILE, ENFILE) or buffers: stop accepting for a moment, as nginx
      // does for 500 ms, rather than spin on an accept that fails at once; the kernel's
      // backlog holds new clients meanwhile, and connections that end free descriptors.
      // Idle upstream connections are descriptors too: let them go first.
      accept_errors("lbkit_l7_router: accept: %s; pausing new connections for 100 ms",
                    ec.message().c_str());
      ts.upstream.drop_idle();
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(into(ec));
      continue;
    }
    if (ts.stats.connections_active.load(std::memory_order_relaxed) >= ts.max_connections &&
        !ts.evict_idle()) {
      counters::add(ts.stats.connections_refused);  // closed at once: the limit holds
      continue;
    }
    asio::co_spawn(acceptor.get_executor(), serve(std::move(s), ts), asio::detached);
  }
}

// The stats page: any GET on the stats listener, answered and closed.
awaitable<void> stats_loop(tcp_acceptor& acceptor,
                           const std::vector<std::unique_ptr<thread_state>>& states,
                           std::chrono::steady_clock::time_point started) {
  for (;;) {
    beast::error_code ec;
    tcp_socket s = co_await acceptor.async_accept(into(ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {  // out of descriptors: as in accept_loop, pause rather than spin
      steady_timer backoff(acceptor.get_executor());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(into(ec));
      continue;
    }
    asio::co_spawn(
        acceptor.get_executor(),
        [](tcp_socket sock, const std::vector<std::unique_ptr<thread_state>>& all,
           std::chrono::steady_clock::time_point t0) -> awaitable<void> {
          timed_stream stream(std::move(sock));
          beast::flat_buffer buf;
          http::request<http::empty_body> req;
          beast::error_code e;
          stream.expires_after(std::chrono::seconds(2));
          co_await http::async_read(stream, buf, req, into(e));
          if (e) co_return;
          http::response<http::string_body> res{http::status::ok, req.version()};
          res.set(http::field::content_type, "text/plain");
          res.body() = stats_text(*all[0]->rt, all, t0);  // this is thread 0
          res.keep_alive(false);
          res.prepare_payload();
          co_await http::async_write(stream, res, into(e));
          stream.socket().shutdown(tcp_socket::shutdown_send, e);
        }(std::move(s), states, started),
        asio::detached);
  }
}

// A listening socket on `at`, shared between threads with SO_REUSEPORT.
std::unique_ptr<tcp_acceptor> listen_on(asio::io_context& ctx, const tcp::endpoint& at,
                                        const std::string& name) {
  auto a = std::make_unique<tcp_acceptor>(ctx);
  beast::error_code ec;
  a->open(at.protocol(), ec);
  a->set_option(asio::socket_base::reuse_address(true), ec);
  const int one = 1;
  ::setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (!ec) a->bind(at, ec);
  if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) die("listen " + name + ": " + ec.message());
  return a;
}

// The --listen/--backend shortcut: one pool "default" and one route for everything.
router_config shortcut(const std::vector<std::string>& listen,
                       const std::vector<std::string>& backends, const std::string& policy,
                       unsigned threads) {
  router_config c;
  for (const auto& l : listen) {
    auto e = lbkit::endpoint::parse(l, lbkit::port_zero::allow);
    if (!e) die("--listen: " + e.error().message);
    c.listen.push_back(*e);
  }
  pool_config p;
  p.name = "default";
  p.policy = policy;
  if (!examples::with_policy(policy, []<class>() {})) {
    die("--policy: " + lbkit::quote(policy) + " is not one of: " + examples::policy_names);
  }
  std::vector<std::uint32_t> weights;
  for (const auto& text : backends) {
    auto b = examples::parse_backend(text);
    if (!b) die("--backend: " + b.error().message);
    p.backends.push_back(*b);
    weights.push_back(b->weight);
  }
  if (auto w = examples::check_weights(policy, "--backend", weights); !w) die(w.error().message);
  c.pools.emplace("default", p);
  route_config r;
  r.pool = "default";
  c.routes.push_back(r);
  c.threads = threads;
  return c;
}

// The command line. Without --config, --listen/--backend/--policy make a one-pool router.
struct flags {
  std::string config_path, policy = "round_robin";
  std::vector<std::string> listen, backends;
  bool check_only = false, no_access_log = false;
  unsigned threads = 0;
};

void add_flags(CLI::App& app, flags& f) {
  app.add_option("-c,--config", f.config_path, "TOML configuration file");
  app.add_flag("--check", f.check_only, "Check the configuration and exit (0: valid)");
  app.add_option("--listen", f.listen, "Without --config: address to accept on (repeatable)");
  app.add_option("--backend", f.backends,
                 "Without --config: a backend ADDR:PORT[,weight=N][,id=NAME] (repeatable)");
  app.add_option("--policy", f.policy, "Without --config: the selection policy")
      ->capture_default_str();
  app.add_flag("--no-access-log", f.no_access_log,
               "No access log line per request (overrides the file)");
  app.add_option("--threads", f.threads, "Event loops (overrides the file's `threads`)")
      ->check(CLI::Range(1, 256));
}

// The configuration the flags ask for, or an exit with the reason.
router_config configure(const flags& f) {
  router_config cfg;
  if (!f.config_path.empty()) {
    if (!f.listen.empty() || !f.backends.empty()) {
      die("give --config or --listen/--backend, not both");
    }
    auto c = load_config(f.config_path);
    if (!c) die(c.error().message);
    cfg = std::move(*c);
  } else {
    if (f.listen.empty() || f.backends.empty()) {
      die("give --config FILE, or --listen and --backend");
    }
    cfg = shortcut(f.listen, f.backends, f.policy, 1);
  }
  if (f.threads != 0) cfg.threads = f.threads;
  if (f.no_access_log) cfg.access_log = false;
  return cfg;
}

// The router's threads: one io_context, acceptor set and thread_state per thread, and the
// runtime they share, which a reload replaces.
class router {
 public:
  // Binds the listeners (thread 0 binds, port 0 picks a port; the others join it on the port
  // it got) and the stats listener, and starts each thread's coroutines; run() starts the
  // threads.
  router(const router_config& cfg, std::shared_ptr<runtime> rt)
      : current_(std::move(rt)), n_(cfg.threads), listen_(cfg.listen), acceptors_(n_) {
    std::vector<tcp::endpoint> bound;
    for (unsigned t = 0; t < n_; ++t) {
      // Each thread's sockets and timers are used by that thread only, so their per-socket
      // locks are off; other threads still post to the context (reload, stop).
      contexts_.push_back(
          std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO));
      states_.push_back(std::make_unique<thread_state>());
      states_.back()->index = t;
      states_.back()->rt = current_;
      states_.back()->max_connections = (cfg.limits.max_connections + n_ - 1) / n_;
      for (std::size_t i = 0; i < cfg.listen.size(); ++i) {
        auto a = listen_on(*contexts_.back(), t == 0 ? to_asio(cfg.listen[i]) : bound[i],
                           cfg.listen[i].to_string());
        if (t == 0) {
          bound.push_back(a->local_endpoint());
          std::printf("listening on %s:%u\n", bound.back().address().to_string().c_str(),
                      static_cast<unsigned>(bound.back().port()));
        }
        asio::co_spawn(*contexts_.back(), accept_loop(*a, *states_.back()), asio::detached);
        acceptors_[t].push_back(std::move(a));
      }
    }
    for (unsigned t = 0; t < n_; ++t) {
      asio::co_spawn(*contexts_[t], upkeep(*states_[t]), asio::detached);
    }
    const auto started = std::chrono::steady_clock::now();
    if (cfg.stats) {
      auto a = listen_on(*contexts_[0], to_asio(*cfg.stats), "stats " + cfg.stats->to_string());
      std::printf("stats on %s:%u\n", a->local_endpoint().address().to_string().c_str(),
                  static_cast<unsigned>(a->local_endpoint().port()));
      asio::co_spawn(*contexts_[0], stats_loop(*a, states_, started), asio::detached);
      acceptors_[0].push_back(std::move(a));
    }
    std::fflush(stdout);
  }
  router(const router&) = delete;
  router& operator=(const router&) = delete;
  ~router() { drain(); }

  void run() {
    for (unsigned t = 0; t < n_; ++t) {
      threads_.emplace_back([ctx = contexts_[t].get()] { ctx->run(); });
    }
  }

  // SIGHUP: the file read again and built into a new runtime that each thread takes for its
  // next request; a file that does not load or build leaves the running one.
  void reload(const std::string& config_path, const lbkit::siphash_key& key) {
    auto refused = [](const std::string& why) {
      std::fprintf(stderr,
                   "lbkit_l7_router: reload rejected, keeping the running configuration: %s\n",
                   why.c_str());
    };
    if (config_path.empty()) {
      std::fprintf(stderr, "lbkit_l7_router: SIGHUP: no --config to reload\n");
      return;
    }
    auto c = load_config(config_path);
    if (!c) return refused(c.error().message);
    c->threads = n_;  // threads and listeners stay as started
    c->listen = listen_;
    const lbkit::siphash_key k = c->sticky_key.value_or(key);
    auto next = runtime::build(std::move(*c), k, current_.get());
    if (!next) return refused(next.error().message);
    current_ = std::move(*next);
    for (unsigned t = 0; t < n_; ++t) {
      asio::post(*contexts_[t], [s = states_[t].get(), rt = current_] {
        s->rt = rt;
        s->upstream.drop_idle();  // to the retired configuration's backends
      });
    }
    std::fprintf(stderr, "lbkit_l7_router: configuration reloaded\n");
  }

  // SIGTERM: no new connections. Requests in flight finish (within request_timeout), tunnels
  // run on; whatever is left at the drain deadline is cut.
  void stop() {
    for (unsigned t = 0; t < n_; ++t) {
      asio::post(*contexts_[t], [this, t] {
        for (auto& a : acceptors_[t]) a->close();
        stop_clients(*states_[t]);
      });
    }
  }

  void evaluate_outliers() {
    for (auto& p : current_->pools) p->evaluate_outliers();
  }

 private:
  // The loops stop by themselves once their connections are done; whatever is still open
  // after 10 s (an idle keep-alive client, say) is cut.
  void drain() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto all_stopped = [&] {
      return std::all_of(contexts_.begin(), contexts_.end(),
                         [](const auto& c) { return c->stopped(); });
    };
    while (!all_stopped() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& c : contexts_) c->stop();
    threads_.clear();
    // Sockets go before their context; a context goes before the thread states, since
    // destroying it destroys the coroutines still suspended in it (a tunnel cut at the
    // deadline, say), whose sessions count themselves out of their thread_state.
    acceptors_.clear();
    for (auto& s : states_) s->upstream.close();
    contexts_.clear();
  }

  std::shared_ptr<runtime> current_;
  const unsigned n_;
  const std::vector<lbkit::endpoint> listen_;
  std::vector<std::unique_ptr<thread_state>> states_;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<std::vector<std::unique_ptr<tcp_acceptor>>> acceptors_;
  std::vector<std::jthread> threads_;
};

// The main thread: SIGHUP reloads, SIGTERM and SIGINT stop; once a second, passive outlier
// detection. Returns when a stop was asked for.
void serve_signals(asio::io_context& ctx, asio::signal_set& signals, router& r,
                   const std::string& config_path, const lbkit::siphash_key& key) {
  asio::steady_timer tick(ctx);
  bool stopping = false;
  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](const beast::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        r.reload(config_path, key);
        wait_signal();
        return;
      }
      stopping = true;
      tick.cancel();
      std::fprintf(stderr, "lbkit_l7_router: stopping\n");
      r.stop();
    });
  };
  wait_signal();
  std::function<void()> on_tick = [&] {
    tick.expires_after(std::chrono::seconds(1));
    tick.async_wait([&](const beast::error_code& ec) {
      if (ec || stopping) return;
      r.evaluate_outliers();
      on_tick();
    });
  };
  on_tick();
  ctx.run();
}

}  // namespace
}  // namespace l7

int main(int argc, char** argv) {
  using namespace l7;
  CLI::App app{
      "lbkit_l7_router: an HTTP/1.1 router and API gateway built from lbkit on Boost.Beast."};
  flags f;
  add_flags(app, f);
  CLI11_PARSE(app, argc, argv);

  const router_config cfg = configure(f);
  // SO_REUSEPORT would let two entries for one address (or a stats address equal to a listen
  // address) share it silently, and a second instance too: refuse both.
  std::vector<examples::named_address> addresses;
  for (const auto& l : cfg.listen) addresses.push_back({"listen", l});
  if (cfg.stats) addresses.push_back({"stats", *cfg.stats});
  if (auto r = examples::check_distinct(addresses); !r) die(r.error().message);
  if (f.check_only) {
    std::printf("%s: valid\n", f.config_path.empty() ? "command line" : f.config_path.c_str());
    return 0;
  }

  // Room for max_connections clients and as many backend connections.
  if (rlimit lim{}; ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  for (const auto& a : addresses) {
    if (auto r = examples::check_free(a); !r) die(r.error().message);
  }
  // Signals are caught from before the first "listening on" line: a SIGTERM that follows it
  // at once is queued for the main loop, not the default action that kills the process.
  asio::io_context main_ctx(1);
  asio::signal_set signals(main_ctx, SIGTERM, SIGINT, SIGHUP);
  const lbkit::siphash_key key =
      cfg.sticky_key ? *cfg.sticky_key : lbkit::sticky_cookie::random_key();
  auto built = runtime::build(cfg, key);
  if (!built) die(built.error().message);

  router r(cfg, std::move(*built));
  r.run();
  serve_signals(main_ctx, signals, r, f.config_path, key);
  return 0;  // ~router drains
}
