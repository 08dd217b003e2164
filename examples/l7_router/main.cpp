// SPDX-License-Identifier: MIT
// lbkit_l7_router: a small HTTP/1.1 router and API gateway assembled from lbkit on
// Boost.Asio + Beast (C++20 coroutines). See docs/l7_router.md.
//
// One io_context per thread, each with its own SO_REUSEPORT acceptor, pickers and upstream
// connection pools; the main thread handles signals (SIGTERM drains, SIGHUP reloads the
// configuration) and runs passive outlier detection.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

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

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, thread_state& ts) {
  for (;;) {
    beast::error_code ec;
    tcp::socket s = co_await acceptor.async_accept(into(ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) continue;  // EMFILE and the like: the next accept may succeed
    asio::co_spawn(acceptor.get_executor(), serve(std::move(s), ts), asio::detached);
  }
}

// The --listen/--backend shortcut: one pool "default" and one route for everything.
router_config shortcut(const std::vector<std::string>& listen, const std::vector<std::string>& backends,
                       const std::string& policy, unsigned threads) {
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
    die("--policy: " + lbkit::detail::quote(policy) + " is not one of: " + examples::policy_names);
  }
  for (const auto& b : backends) {
    auto e = lbkit::endpoint::parse(b);
    if (!e) die("--backend: " + e.error().message);
    p.backends.push_back({*e, 1, e->to_string()});
  }
  c.pools.emplace("default", p);
  route_config r;
  r.pool = "default";
  c.routes.push_back(r);
  c.threads = threads;
  return c;
}

}  // namespace
}  // namespace l7

int main(int argc, char** argv) {
  using namespace l7;
  CLI::App app{"lbkit_l7_router: an HTTP/1.1 router and API gateway built from lbkit on Boost.Beast."};
  std::string config_path, policy = "round_robin";
  std::vector<std::string> listen, backends;
  bool check_only = false;
  unsigned threads = 0;
  app.add_option("-c,--config", config_path, "TOML configuration file");
  app.add_flag("--check", check_only, "Check the configuration and exit (0: valid)");
  app.add_option("--listen", listen, "Without --config: address to accept on (repeatable)");
  app.add_option("--backend", backends, "Without --config: a backend ADDR:PORT (repeatable)");
  app.add_option("--policy", policy, "Without --config: the selection policy")->capture_default_str();
  app.add_option("--threads", threads, "Event loops (overrides the file's `threads`)")
      ->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);

  router_config cfg;
  if (!config_path.empty()) {
    if (!listen.empty() || !backends.empty()) die("give --config or --listen/--backend, not both");
    auto c = load_config(config_path);
    if (!c) die(c.error().message);
    cfg = std::move(*c);
  } else {
    if (listen.empty() || backends.empty()) die("give --config FILE, or --listen and --backend");
    cfg = shortcut(listen, backends, policy, 1);
  }
  if (threads != 0) cfg.threads = threads;
  if (check_only) {
    std::printf("%s: valid\n", config_path.empty() ? "command line" : config_path.c_str());
    return 0;
  }

  const lbkit::siphash_key key = lbkit::sticky_cookie::random_key();
  std::shared_ptr<runtime> current = runtime::build(cfg, key);

  // One io_context, acceptor set and thread_state per thread.
  const unsigned n = cfg.threads;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<std::unique_ptr<thread_state>> states;
  std::vector<std::vector<std::unique_ptr<tcp::acceptor>>> acceptors(n);
  std::vector<tcp::endpoint> bound;
  for (unsigned t = 0; t < n; ++t) {
    contexts.push_back(std::make_unique<asio::io_context>(1));
    states.push_back(std::make_unique<thread_state>());
    states.back()->index = t;
    states.back()->rt = current;
    for (std::size_t i = 0; i < cfg.listen.size(); ++i) {
      tcp::endpoint at = t == 0 ? tcp::endpoint(asio::ip::make_address(cfg.listen[i].address().to_string()),
                                                cfg.listen[i].port())
                                : bound[i];
      auto a = std::make_unique<tcp::acceptor>(*contexts.back());
      beast::error_code ec;
      a->open(at.protocol(), ec);
      a->set_option(asio::socket_base::reuse_address(true), ec);
      const int one = 1;
      ::setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
      a->bind(at, ec);
      if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) die("listen " + cfg.listen[i].to_string() + ": " + ec.message());
      if (t == 0) {
        bound.push_back(a->local_endpoint());
        std::printf("listening on %s:%u\n", bound.back().address().to_string().c_str(),
                    static_cast<unsigned>(bound.back().port()));
      }
      asio::co_spawn(*contexts.back(), accept_loop(*a, *states.back()), asio::detached);
      acceptors[t].push_back(std::move(a));
    }
  }
  std::fflush(stdout);

  std::vector<std::jthread> workers;
  for (unsigned t = 0; t < n; ++t) {
    workers.emplace_back([ctx = contexts[t].get()] { ctx->run(); });
  }

  // Main thread: signals and outlier detection.
  asio::io_context main_ctx(1);
  asio::signal_set signals(main_ctx, SIGTERM, SIGINT, SIGHUP);
  asio::steady_timer tick(main_ctx);
  bool stopping = false;
  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](const beast::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        if (config_path.empty()) {
          std::fprintf(stderr, "lbkit_l7_router: SIGHUP: no --config to reload\n");
        } else if (auto c = load_config(config_path); !c) {
          std::fprintf(stderr, "lbkit_l7_router: reload rejected, keeping the running configuration: %s\n",
                       c.error().message.c_str());
        } else {
          c->threads = n;      // threads and listeners stay as started
          c->listen = cfg.listen;
          current = runtime::build(std::move(*c), key);
          for (unsigned t = 0; t < n; ++t) {
            asio::post(*contexts[t], [s = states[t].get(), rt = current] { s->rt = rt; });
          }
          std::fprintf(stderr, "lbkit_l7_router: configuration reloaded\n");
        }
        wait_signal();
        return;
      }
      stopping = true;
      tick.cancel();
      std::fprintf(stderr, "lbkit_l7_router: stopping\n");
      for (unsigned t = 0; t < n; ++t) {
        asio::post(*contexts[t], [&, t] {
          for (auto& a : acceptors[t]) a->close();
        });
        // Open connections get the idle or request timeout to finish; then the loop is
        // stopped whatever is left.
      }
    });
  };
  wait_signal();
  std::function<void()> on_tick = [&] {
    tick.expires_after(std::chrono::seconds(1));
    tick.async_wait([&](const beast::error_code& ec) {
      if (ec || stopping) return;
      for (auto& p : current->pools) p->evaluate_outliers();
      on_tick();
    });
  };
  on_tick();
  main_ctx.run();

  // Drain: the loops stop by themselves once their connections are done; whatever is still
  // open after 10 s (an idle keep-alive client, say) is cut.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto all_stopped = [&] {
    return std::all_of(contexts.begin(), contexts.end(), [](const auto& c) { return c->stopped(); });
  };
  while (!all_stopped() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& c : contexts) c->stop();
  workers.clear();
  return 0;
}
