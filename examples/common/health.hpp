// SPDX-License-Identifier: MIT
// Shared by the examples: active health checking as a flag or a configuration key names it
// ("none", "tcp", "http:/PATH", "icmp"), and the checker that runs it over a registry.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <lbkit/lbkit.hpp>

namespace examples {

enum class health_kind { none, tcp, http, icmp };

// Which active check runs, and how often. The defaults are lbkit's (HAProxy's rise 2,
// fall 3, inter 2s; a 1 s deadline).
struct health_settings {
  health_kind kind = health_kind::none;
  std::string http_path = "/";  // http only
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds timeout{1000};
  std::uint32_t rise = 2;
  std::uint32_t fall = 3;
};

// Reads "none", "tcp", "icmp" or "http:PATH" into `s`. An HTTP path the probe would refuse
// is refused here, as a probe built from it would fail every check, and under active checks
// backends start down: the pool would never come up.
inline lbkit::result<void> parse_health_kind(std::string_view text, health_settings& s) {
  if (text == "none") {
    s.kind = health_kind::none;
  } else if (text == "tcp") {
    s.kind = health_kind::tcp;
  } else if (text == "icmp") {
    s.kind = health_kind::icmp;
  } else if (text.starts_with("http:") && text.size() > 5) {
    lbkit::http_probe::options probe;
    probe.path = std::string(text.substr(5));
    if (auto v = lbkit::http_probe::validate(probe); !v) return v;
    s.kind = health_kind::http;
    s.http_path = probe.path;
  } else {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             lbkit::quote(text) + " is not none, tcp, http:PATH or icmp");
  }
  return {};
}

// The health a backend starts with: with active checks down, until `rise` good answers (as
// in HAProxy); without, up.
inline lbkit::health initial_health(const health_settings& s) noexcept {
  return s.kind == health_kind::none ? lbkit::health::healthy : lbkit::health::unhealthy;
}

// The checker's options for `s`: between states checks come twice as often (HAProxy's
// fastinter), while a backend is down half as often (downinter).
inline lbkit::health_checker_options checker_options(const health_settings& s) {
  lbkit::health_checker_options o;
  o.check.interval = s.interval;
  o.check.fast_interval = std::max(s.interval / 2, std::chrono::milliseconds(1));
  o.check.down_interval = s.interval * 2;
  o.check.timeout = s.timeout;
  o.check.rise = s.rise;
  o.check.fall = s.fall;
  return o;
}

// Starts the checker `s` asks for over `registry`, calling `on_change` on every change of a
// backend's health; empty for kind none. Stopping it: drop the pointer (before the registry).
inline lbkit::result<std::shared_ptr<void>> start_health(
    lbkit::backend_registry& registry, const health_settings& s,
    std::function<void(const lbkit::health_event&)> on_change) {
  const lbkit::health_checker_options o = checker_options(s);
  auto start = [&]<class Probe>(Probe probe) -> std::shared_ptr<void> {
    auto c = std::make_shared<lbkit::health_checker<Probe>>(registry, std::move(probe), o);
    c->on_change(std::move(on_change));
    return c;
  };
  switch (s.kind) {
    case health_kind::none:
      return std::shared_ptr<void>();
    case health_kind::tcp:
      return start(lbkit::tcp_connect_probe());
    case health_kind::http: {
      lbkit::http_probe::options po;
      po.path = s.http_path;
      if (auto v = lbkit::http_probe::validate(po); !v) {
        return lbkit::unexpected<lbkit::error>(v.error());
      }
      return start(lbkit::http_probe(po));
    }
    case health_kind::icmp:
      return start(lbkit::icmp_echo_probe());
  }
  return std::shared_ptr<void>();
}

}  // namespace examples
