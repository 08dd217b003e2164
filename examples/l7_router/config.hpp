// SPDX-License-Identifier: MIT
// The L7 router's configuration: a TOML file (or the --listen/--backend shortcut), checked in
// full before it is used. Every error names the file, the line and the key, so that a bad
// reload can be rejected with a message an operator can act on.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/lbkit.hpp>

#include "../common/backend_spec.hpp"
#include "../common/duration.hpp"
#include "../common/health.hpp"

namespace l7 {

using examples::parse_duration;
using std::chrono::milliseconds;

using backend_config = examples::backend_spec;

using examples::health_kind;

struct pool_config {
  std::string name;
  std::string policy = "round_robin";
  std::vector<backend_config> backends;
  examples::health_settings health;    // health, health_interval, health_timeout, rise, fall
  std::uint32_t passive_failures = 5;  // consecutive 5xx/connect failures that eject (0: off)
  // Envoy's panic mode: below this percentage of healthy backends, spread picks over all of
  // them. Off (0) by default, so that a pool with no healthy backend answers 503 at once.
  double panic_threshold = 0;
  std::string sticky_cookie;  // empty: no sticky sessions
  // Hash policies key on this cookie's value, else on this header, else the client address.
  std::string hash_cookie;
  std::string hash_header;
  std::size_t max_idle = 64;  // idle upstream connections kept per backend and thread
  milliseconds upstream_idle_timeout{60'000};
};

enum class auth_kind { none, api_key, bearer };

struct rate_limit_config {
  double rate = 0;  // requests per second; 0: no limit
  double burst = 0;
  bool per_key = false;  // per API key (needs auth api_key/bearer) or per client address
};

struct route_config {
  lbkit::route_match match;
  std::string pool;
  auth_kind auth = auth_kind::none;
  rate_limit_config rate_limit;
  std::uint32_t retries = 1;  // idempotent requests, on another backend
  std::vector<unsigned> retry_on{502, 503, 504};
  std::optional<std::size_t> max_body_bytes;  // overrides limits.max_body_bytes
  std::vector<std::string> required_headers;
  std::optional<std::string> rewrite_host;
  bool cache = false;
  int line = 0;  // where it was defined, for messages
};

struct limits_config {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  milliseconds header_timeout{10'000};
  milliseconds idle_timeout{60'000};
  milliseconds connect_timeout{2'000};
  // Until a backend's answer header has come, all attempts and retries together.
  milliseconds request_timeout{30'000};
  // The longest pause of a backend while its answer's body comes (nginx proxy_read_timeout),
  // and of a client while it takes the answer (nginx send_timeout): per read and per write,
  // so a long download that keeps moving is never cut, and a slow client never counts
  // against the backend.
  milliseconds read_timeout{60'000};
  milliseconds send_timeout{60'000};
  // A bound on a whole exchange, body included, from the request's first attempt; 0: none.
  milliseconds response_deadline{0};
  milliseconds tunnel_idle_timeout{300'000};  // WebSocket and CONNECT tunnels
  std::size_t max_connections = 10'000;       // client connections, over all threads
  std::size_t cache_bytes = 64 * 1024 * 1024;
  // Retries a pool may have in flight: this percentage of its requests in flight, and never
  // fewer than 3 (Envoy's retry budget), so that retries cannot multiply an overload.
  std::uint32_t retry_budget = 20;
};

struct router_config {
  std::vector<lbkit::endpoint> listen;
  std::optional<lbkit::endpoint> stats;
  limits_config limits;
  std::map<std::string, pool_config, std::less<>> pools;
  std::vector<route_config> routes;
  std::vector<std::string> api_keys;       // accepted in X-API-Key
  std::vector<std::string> bearer_tokens;  // accepted in Authorization: Bearer
  bool access_log = true;
  unsigned threads = 1;
  // The key that signs sticky cookies; shared by a fleet (and across restarts) when set,
  // else random per process.
  std::optional<lbkit::siphash_key> sticky_key;
};

// Reads and checks a TOML file. Errors read "router.toml:12: pools.api.policy: ...".
lbkit::result<router_config> load_config(const std::string& path);
// Parses TOML text (the same checks; `name` stands for the file in messages).
lbkit::result<router_config> parse_config(std::string_view text, const std::string& name);

}  // namespace l7
