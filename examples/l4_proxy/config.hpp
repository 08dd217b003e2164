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

#include "../common/duration.hpp"
#include "../common/listen.hpp"
#include "../common/policies.hpp"

namespace l4 {

using examples::parse_duration;
using std::chrono::milliseconds;

// One --backend ADDR:PORT[,weight=N][,id=NAME]: a backend that lbkit::validate accepts.
struct backend_spec {
  lbkit::endpoint address;
  std::uint32_t weight = 1;
  std::string id;  // default: the address text
};

enum class health_kind { none, tcp, http, icmp };

struct config {
  std::vector<lbkit::endpoint> listen;
  std::vector<backend_spec> backends;
  std::string policy = "round_robin";

  health_kind health = health_kind::none;
  std::string health_path = "/";  // http only
  milliseconds health_interval{2000};
  milliseconds health_timeout{1000};
  std::uint32_t rise = 2;
  std::uint32_t fall = 3;
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

// "10.0.0.1:80", "[::1]:8080,weight=3", "10.0.0.2:80,weight=2,id=web-2".
inline lbkit::result<backend_spec> parse_backend(std::string_view text) {
  const auto comma = text.find(',');
  auto address = lbkit::endpoint::parse(text.substr(0, comma));
  if (!address) {
    return lbkit::make_error(address.error().code, "backend " + lbkit::quote(text) + ": " +
                                                       address.error().message);
  }
  backend_spec b{*address, 1, address->to_string()};
  std::string_view rest = comma == std::string_view::npos ? "" : text.substr(comma + 1);
  while (!rest.empty()) {
    const auto next = rest.find(',');
    const std::string_view item = rest.substr(0, next);
    rest = next == std::string_view::npos ? "" : rest.substr(next + 1);
    const auto eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : item.substr(eq + 1);
    if (key == "weight" && eq != std::string_view::npos) {
      const auto w = lbkit::parse_decimal(value, lbkit::max_weight);
      if (!w) {
        return lbkit::make_error(lbkit::errc::out_of_range,
                                 "backend " + lbkit::quote(text) + ": weight " +
                                     lbkit::quote(value) + " is not a whole number 0.." +
                                     std::to_string(lbkit::max_weight));
      }
      b.weight = static_cast<std::uint32_t>(*w);
    } else if (key == "id" && eq != std::string_view::npos) {
      b.id = std::string(value);
    } else {
      return lbkit::make_error(lbkit::errc::invalid_argument,
                               "backend " + lbkit::quote(text) + ": unknown option " +
                                   lbkit::quote(item) + " (want weight=N or id=NAME)");
    }
  }
  // The registry checks the backend again when the proxy adds it, but only after the listeners
  // are open, and its message does not name the flag: refuse here what it would refuse there
  // (an empty or non-visible id, an unspecified address such as 0.0.0.0).
  if (auto v = lbkit::validate(lbkit::backend(b.id, b.address, b.weight)); !v) {
    return lbkit::make_error(v.error().code,
                             "backend " + lbkit::quote(text) + ": " + v.error().message);
  }
  return b;
}

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
