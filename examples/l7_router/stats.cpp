// SPDX-License-Identifier: MIT
// The stats page (stats.hpp).
#include "stats.hpp"

#include <string>
#include <string_view>
#include <utility>

#include <lbkit/lbkit.hpp>

#include "proxy.hpp"
#include "runtime.hpp"

namespace l7 {

using std::chrono::steady_clock;

std::string stats_text(const runtime& rt, const std::vector<std::unique_ptr<thread_state>>& threads,
                       steady_clock::time_point started) {
  std::string out;
  auto line = [&](std::string_view key, std::uint64_t v) {
    out.append(key).append(" ").append(std::to_string(v)).append("\n");
  };
  using member = counters::counter counters::*;
  auto total = [&](member m) {
    std::uint64_t n = 0;
    for (const auto& t : threads) n += (t->stats.*m).load(std::memory_order_relaxed);
    return n;
  };
  line(
      "uptime_seconds",
      static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::seconds>(steady_clock::now() - started).count()));
  for (const auto& [name, m] :
       {std::pair<const char*, member>{"connections_active", &counters::connections_active},
        {"connections_total", &counters::connections_total},
        {"connections_refused", &counters::connections_refused},
        {"requests", &counters::requests}}) {
    line(name, total(m));
  }
  for (std::size_t k = 0; k < 5; ++k) {
    std::uint64_t n = 0;
    for (const auto& t : threads) n += t->stats.responses[k].load(std::memory_order_relaxed);
    line("responses_" + std::to_string(k + 1) + "xx", n);
  }
  for (const auto& [name, m] : {std::pair<const char*, member>{"retries", &counters::retries},
                                {"retries_over_budget", &counters::retries_over_budget},
                                {"cache_hits", &counters::cache_hits},
                                {"cache_misses", &counters::cache_misses},
                                {"tunnels_active", &counters::tunnels_active},
                                {"tunnels_total", &counters::tunnels_total},
                                {"client_timeouts", &counters::client_timeouts},
                                {"upstream_truncated", &counters::upstream_truncated}}) {
    line(name, total(m));
  }
  if (rt.cache) {
    line("cache_entries", rt.cache->size());
    line("cache_bytes", rt.cache->bytes());
  }
  for (const auto& p : rt.pools) {
    const auto snap = p->registry().current();
    for (const auto& m : snap->members()) {
      const auto& s = m.state();
      const auto t = s.totals();
      const char* health = s.ejected()                                   ? "ejected"
                           : s.active_health() == lbkit::health::healthy ? "up"
                                                                         : "down";
      out += "backend pool=" + p->config().name + " id=" + m.id() +
             " address=" + m.address().to_string() + " weight=" + std::to_string(m.weight()) +
             " health=" + health + " active=" + std::to_string(t.in_flight()) +
             " picks=" + std::to_string(t.started) + " failures=" + std::to_string(t.failed()) +
             "\n";
    }
  }
  return out;
}

}  // namespace l7
