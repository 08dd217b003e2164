// SPDX-License-Identifier: MIT
// One generation of the router's configuration, made live: a registry, a balancer and a
// health checker per pool, the route table, and the rate limiters. Each event-loop thread
// holds a shared_ptr to the generation it serves; a reload builds a new one and hands it to
// every thread, and the old one lives until its last request ends.
#pragma once

#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../common/health.hpp"
#include "../common/policies.hpp"
#include "cache.hpp"
#include "config.hpp"

namespace l7 {

// A pool of backends behind one policy: its registry, its balancer (of the policy the
// configuration names, type-erased: one virtual call per request, next to network I/O), one
// picker per event-loop thread, its health checker and outlier detector.
class pool {
 public:
  // `previous`: the pool of this name in the configuration being replaced, if any (health
  // is carried over). Fails on a configuration parse_config should have refused.
  static lbkit::result<std::unique_ptr<pool>> make(const pool_config& cfg,
                                                   const lbkit::siphash_key& key, unsigned threads,
                                                   const pool* previous) {
    std::unique_ptr<pool> p(new pool(cfg, key));
    if (auto r = p->add_backends(previous); !r) return lbkit::unexpected<lbkit::error>(r.error());
    auto b = examples::make_balancer(
        cfg.policy, p->registry_, lbkit::balancer_options{.panic_threshold = cfg.panic_threshold});
    if (!b) return lbkit::unexpected<lbkit::error>(b.error());
    p->balancer_ = std::move(*b);
    for (unsigned t = 0; t < threads; ++t) p->pickers_.push_back(p->balancer_->make_picker());
    if (auto r = p->start_health(); !r) return lbkit::unexpected<lbkit::error>(r.error());
    return p;
  }

  // A lease for `thread` (each thread has its own picker).
  lbkit::lease pick(unsigned thread, const lbkit::pick_context& c) noexcept {
    return pickers_[thread]->pick(c);
  }
  lbkit::lease pick_member(unsigned thread, std::string_view id) noexcept {
    return pickers_[thread]->pick_member(id);
  }
  // A retry's pick: none of `tried` while another backend is eligible.
  lbkit::lease pick_other(unsigned thread, const lbkit::pick_context& c,
                          std::span<const lbkit::backend_state* const> tried) noexcept {
    return pickers_[thread]->pick_other(c, tried);
  }

  const pool_config& config() const noexcept { return cfg_; }
  lbkit::backend_registry& registry() noexcept { return registry_; }
  const lbkit::backend_registry& registry() const noexcept { return registry_; }
  const std::optional<lbkit::sticky_cookie>& sticky() const noexcept { return sticky_; }

  // The retry budget: a retry may start while the pool's retries in flight stay below
  // `percent` of its requests in flight, or below 3 (Envoy's budget_percent and
  // min_retry_concurrency). A retry_ticket ends the retry when it goes.
  struct retry_ticket {
    std::atomic<std::int64_t>* n = nullptr;
    retry_ticket() = default;
    explicit retry_ticket(std::atomic<std::int64_t>* c) : n(c) {}
    retry_ticket(retry_ticket&& o) noexcept : n(std::exchange(o.n, nullptr)) {}
    retry_ticket& operator=(retry_ticket&& o) noexcept {
      std::swap(n, o.n);
      return *this;
    }
    ~retry_ticket() {
      if (n != nullptr) n->fetch_sub(1, std::memory_order_relaxed);
    }
    explicit operator bool() const noexcept { return n != nullptr; }
  };
  retry_ticket try_retry(std::uint32_t percent) noexcept {
    const std::int64_t allowed =
        std::max<std::int64_t>(3, in_flight_.load(std::memory_order_relaxed) * percent / 100);
    if (retries_.fetch_add(1, std::memory_order_relaxed) >= allowed) {
      retries_.fetch_sub(1, std::memory_order_relaxed);
      return {};
    }
    return retry_ticket(&retries_);
  }
  // Counts a request in flight (for the budget) until the returned ticket goes.
  retry_ticket start_request() noexcept {
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    return retry_ticket(&in_flight_);
  }

  // Passive outlier detection, run by the main thread once a second.
  void evaluate_outliers() {
    if (!outliers_) return;
    for (const auto& e : outliers_->evaluate(std::chrono::steady_clock::now())) {
      std::fprintf(stderr, "lbkit_l7_router: pool %s: backend %s %s (passive: %s)\n",
                   cfg_.name.c_str(), e.id.c_str(), e.ejected ? "ejected" : "restored",
                   std::string(lbkit::to_string(e.reason)).c_str());
    }
  }

 private:
  pool(const pool_config& cfg, const lbkit::siphash_key& key) : cfg_(cfg) {
    if (!cfg.sticky_cookie.empty()) sticky_.emplace(key, cfg.sticky_cookie);
    if (cfg.passive_failures > 0) {
      lbkit::outlier_detection_options o;
      o.consecutive_failures = cfg.passive_failures;
      outliers_.emplace(registry_, o);
    }
  }

  lbkit::result<void> add_backends(const pool* previous) {
    const auto before = previous != nullptr ? previous->registry_.current() : nullptr;
    lbkit::change_set cs;
    for (const auto& b : cfg_.backends) {
      // With active checks a backend starts down and needs `rise` good answers (HAProxy),
      // unless a reload kept it: then it keeps the health it had, so that a reload does not
      // take a checked pool down until its checks pass again.
      lbkit::health initial = examples::initial_health(cfg_.health);
      if (const lbkit::member* m = before ? before->find(b.id) : nullptr;
          m != nullptr && cfg_.health.kind != health_kind::none &&
          previous->cfg_.health.kind != health_kind::none && m->address() == b.address) {
        initial = m->state().active_health();
      }
      cs.add(lbkit::backend(b.id, b.address, b.weight), initial);
    }
    auto r = registry_.apply(cs);
    if (!r) {
      return lbkit::make_error(r.error().code, "pool " + cfg_.name + ": " + r.error().message);
    }
    return {};
  }

  lbkit::result<void> start_health() {
    auto log = [name = cfg_.name](const lbkit::health_event& e) {
      std::fprintf(stderr, "lbkit_l7_router: pool %s: backend %s is %s: %s\n", name.c_str(),
                   e.id.c_str(), e.to == lbkit::health::healthy ? "up" : "down",
                   e.cause.detail.c_str());
    };
    auto c = examples::start_health(registry_, cfg_.health, log);
    if (!c) {
      return lbkit::make_error(c.error().code,
                               "pool " + cfg_.name + ": health: " + c.error().message);
    }
    checker_ = std::move(*c);
    return {};
  }

  pool_config cfg_;
  lbkit::backend_registry registry_;
  std::optional<lbkit::sticky_cookie> sticky_;
  std::optional<lbkit::outlier_detector> outliers_;
  std::atomic<std::int64_t> in_flight_{0}, retries_{0};
  std::unique_ptr<examples::any_balancer> balancer_;
  std::vector<std::unique_ptr<examples::any_picker>> pickers_;
  std::shared_ptr<void> checker_;  // stopped first on destruction (declared last)
};

// A route made live: its config, its pool, its rate limiter.
struct live_route {
  const route_config* config;
  pool* target;
  std::unique_ptr<lbkit::rate_limiter> limiter;
};

struct runtime {
  router_config cfg;
  std::vector<std::unique_ptr<pool>> pools;
  std::vector<live_route> routes;
  lbkit::route_table<std::size_t> table;  // → index into routes
  std::unique_ptr<response_cache> cache;  // when a route caches

  // `previous`: the runtime this one replaces (health is carried over), or null. Fails,
  // naming the pool or route, on a configuration that parse_config should have refused.
  static lbkit::result<std::shared_ptr<runtime>> build(router_config c,
                                                       const lbkit::siphash_key& key,
                                                       const runtime* previous = nullptr) {
    auto rt = std::make_shared<runtime>();
    rt->cfg = std::move(c);
    std::map<std::string, pool*, std::less<>> by_name;
    for (const auto& [name, pc] : rt->cfg.pools) {
      const pool* before = nullptr;
      if (previous != nullptr) {
        for (const auto& p : previous->pools) {
          if (p->config().name == pc.name) before = p.get();
        }
      }
      auto made = pool::make(pc, key, rt->cfg.threads, before);
      if (!made) return lbkit::unexpected<lbkit::error>(made.error());
      rt->pools.push_back(std::move(*made));
      by_name[name] = rt->pools.back().get();
    }
    for (std::size_t i = 0; i < rt->cfg.routes.size(); ++i) {
      const route_config& r = rt->cfg.routes[i];
      const auto target = by_name.find(r.pool);
      if (target == by_name.end()) {
        return lbkit::make_error(lbkit::errc::not_found, "route at line " + std::to_string(r.line) +
                                                             ": no pool " + lbkit::quote(r.pool));
      }
      live_route lr{&r, target->second, nullptr};
      if (r.rate_limit.rate > 0) {
        lbkit::rate_limiter_options o;
        o.bucket = {.rate_per_second = r.rate_limit.rate, .burst = r.rate_limit.burst};
        lr.limiter = std::make_unique<lbkit::rate_limiter>(o);
      }
      rt->routes.push_back(std::move(lr));
      if (auto added = rt->table.add(r.match, i); !added) {
        return lbkit::make_error(added.error().code, "route at line " + std::to_string(r.line) +
                                                         ": " + added.error().message);
      }
      if (r.cache && !rt->cache && rt->cfg.limits.cache_bytes > 0) {
        rt->cache = std::make_unique<response_cache>(rt->cfg.limits.cache_bytes);
      }
    }
    return rt;
  }
};

}  // namespace l7
