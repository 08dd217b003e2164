// SPDX-License-Identifier: MIT
// The L4 proxy's configuration: what the command line fills in, the small parsers for the
// values that are not plain numbers (durations, backend specs), and the checks of the whole
// (addresses that would share connections, weights the policy would ignore). Parsing is
// strict and every rejection says what was wrong, as for any input from outside.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../common/backend_spec.hpp"
#include "../common/duration.hpp"
#include "../common/health.hpp"
#include "../common/listen.hpp"
#include "../common/policies.hpp"

namespace l4 {

using examples::parse_duration;
using std::chrono::milliseconds;

using examples::backend_spec;
using examples::health_kind;
using examples::parse_backend;

struct config {
  std::vector<lbkit::endpoint> listen;
  std::vector<backend_spec> backends;
  std::string policy = "round_robin";

  examples::health_settings health;  // active checks: --health, --health-*, --rise, --fall
  // Passive detection: consecutive failed connects that eject a backend (0: off).
  std::uint32_t passive_failures = 5;
  milliseconds ejection_time{30'000};

  bool udp = false;
  std::optional<lbkit::proxy_version> send_proxy;
  bool accept_proxy = false;
  std::vector<lbkit::cidr> allow;
  std::vector<lbkit::cidr> deny;

  unsigned threads = 1;
  std::optional<lbkit::endpoint> stats;
  std::uint32_t max_connections = 20'000;
  milliseconds connect_timeout{2000};
  std::uint32_t retries = 2;
  milliseconds idle_timeout{600'000};  // TCP: no byte either way for this long closes it
  milliseconds udp_timeout{30'000};    // UDP: a session without datagrams ends
  milliseconds drain_timeout{10'000};  // SIGTERM: how long open connections may finish
  bool splice = true;
  bool quiet = false;
};

// Refuses addresses of the configuration that would share connections
// (examples::check_distinct): a --listen given twice, one inside a wildcard --listen, the
// --stats address on a --listen address. Because every worker's socket has SO_REUSEPORT,
// the kernel would not refuse them but split the connections between them. With --udp the
// listeners are UDP and the stats page TCP, which do not meet. The proxy's IPv6 sockets are
// IPV6_V6ONLY, so [::]:80 and 0.0.0.0:80 are distinct: each family is checked apart.
inline lbkit::result<void> check_addresses(const config& cfg) {
  std::vector<examples::named_address> v4, v6;
  auto add = [&](std::string what, const lbkit::endpoint& at) {
    (at.address().unmapped().is_v4() ? v4 : v6).push_back({std::move(what), at});
  };
  for (const auto& l : cfg.listen) add("--listen", l);
  if (cfg.stats && !cfg.udp) add("--stats", *cfg.stats);
  if (auto r = examples::check_distinct(v4); !r) return r;
  return examples::check_distinct(v6);
}

// Refuses weights the policy could not serve as configured (examples::check_weights): all
// zero, or unequal under a policy that ignores weights (round_robin, the default, among
// them).
inline lbkit::result<void> check_weights(const config& cfg) {
  std::vector<std::uint32_t> weights;
  for (const auto& b : cfg.backends) weights.push_back(b.weight);
  return examples::check_weights(cfg.policy, "--backend", weights);
}

}  // namespace l4
