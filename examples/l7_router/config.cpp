// SPDX-License-Identifier: MIT
// Reads the router's TOML configuration (see docs/l7_router.md for the format) and checks
// all of it: unknown keys are errors too, since a misspelt key silently ignored is a
// configuration that does not do what its author thinks.
#include "config.hpp"

#include <toml++/toml.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "../common/policies.hpp"

namespace l7 {
namespace {

// Collects the first error with its place; every reader returns false after one.
class reader {
 public:
  explicit reader(std::string file) : file_(std::move(file)) {}

  bool fail(const toml::node* at, const std::string& key, const std::string& message) {
    if (error_.empty()) {
      const int line = at != nullptr ? static_cast<int>(at->source().begin.line) : 0;
      error_ = file_ + (line > 0 ? ":" + std::to_string(line) : "") + ": " + key + ": " + message;
    }
    return false;
  }
  const std::string& error() const { return error_; }

  // Fails on keys of `t` that are not in `known`.
  bool only(const toml::table& t, const std::string& where,
            std::initializer_list<std::string_view> known) {
    for (const auto& [k, v] : t) {
      if (std::find(known.begin(), known.end(), k.str()) == known.end()) {
        return fail(&v, join(where, std::string(k.str())), "unknown key");
      }
    }
    return true;
  }

  static std::string join(const std::string& a, const std::string& b) {
    return a.empty() ? b : a + "." + b;
  }

  bool string(const toml::table& t, const std::string& where, std::string_view key,
              std::string& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return true;
    if (!n->is_string()) return fail(n, join(where, std::string(key)), "want a string");
    out = *n->value<std::string>();
    return true;
  }
  template <class Int>
  bool integer(const toml::table& t, const std::string& where, std::string_view key, Int& out,
               std::int64_t min, std::int64_t max) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return true;
    const auto v = n->value<std::int64_t>();
    if (!n->is_integer() || !v)
      return fail(n, join(where, std::string(key)), "want a whole number");
    if (*v < min || *v > max) {
      return fail(
          n, join(where, std::string(key)),
          std::to_string(*v) + " is outside " + std::to_string(min) + ".." + std::to_string(max));
    }
    out = static_cast<Int>(*v);
    return true;
  }
  bool number(const toml::table& t, const std::string& where, std::string_view key, double& out,
              double min, double max) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return true;
    if (!n->is_number()) return fail(n, join(where, std::string(key)), "want a number");
    const double v =
        n->is_integer() ? static_cast<double>(*n->value<std::int64_t>()) : *n->value<double>();
    if (!(v >= min && v <= max)) {
      return fail(n, join(where, std::string(key)),
                  "is outside " + std::to_string(min) + ".." + std::to_string(max));
    }
    out = v;
    return true;
  }
  bool boolean(const toml::table& t, const std::string& where, std::string_view key, bool& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return true;
    if (!n->is_boolean()) return fail(n, join(where, std::string(key)), "want true or false");
    out = *n->value<bool>();
    return true;
  }
  bool duration(const toml::table& t, const std::string& where, std::string_view key,
                milliseconds& out) {
    std::string text;
    if (!string(t, where, key, text)) return false;
    if (text.empty()) return true;
    auto d = parse_duration(text);
    if (!d) return fail(t.get(key), join(where, std::string(key)), d.error().message);
    if (d->count() <= 0) return fail(t.get(key), join(where, std::string(key)), "must be above 0");
    out = *d;
    return true;
  }
  bool strings(const toml::table& t, const std::string& where, std::string_view key,
               std::vector<std::string>& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return true;
    const toml::array* a = n->as_array();
    if (a == nullptr) return fail(n, join(where, std::string(key)), "want an array of strings");
    for (const auto& e : *a) {
      if (!e.is_string())
        return fail(&e, join(where, std::string(key)), "want an array of strings");
      out.push_back(*e.value<std::string>());
    }
    return true;
  }
  bool endpoint(const toml::node* n, const std::string& key, lbkit::endpoint& out,
                lbkit::port_zero zero) {
    if (n == nullptr || !n->is_string()) return fail(n, key, "want \"ADDR:PORT\"");
    auto e = lbkit::endpoint::parse(*n->value<std::string>(), zero);
    if (!e) return fail(n, key, e.error().message);
    out = *e;
    return true;
  }

 private:
  std::string file_;
  std::string error_;
};

bool read_limits(reader& r, const toml::table& t, limits_config& l) {
  const std::string w = "limits";
  return r.only(t, w,
                {"max_header_bytes", "max_body_bytes", "header_timeout", "idle_timeout",
                 "connect_timeout", "request_timeout", "read_timeout", "send_timeout",
                 "response_deadline", "tunnel_idle_timeout", "max_connections", "cache_bytes",
                 "retry_budget"}) &&
         r.integer(t, w, "max_header_bytes", l.max_header_bytes, 1024, 1 << 20) &&
         r.integer(t, w, "max_body_bytes", l.max_body_bytes, 0, std::int64_t{1} << 40) &&
         r.duration(t, w, "header_timeout", l.header_timeout) &&
         r.duration(t, w, "idle_timeout", l.idle_timeout) &&
         r.duration(t, w, "connect_timeout", l.connect_timeout) &&
         r.duration(t, w, "request_timeout", l.request_timeout) &&
         r.duration(t, w, "read_timeout", l.read_timeout) &&
         r.duration(t, w, "send_timeout", l.send_timeout) &&
         r.duration(t, w, "response_deadline", l.response_deadline) &&
         r.duration(t, w, "tunnel_idle_timeout", l.tunnel_idle_timeout) &&
         r.integer(t, w, "max_connections", l.max_connections, 1, 10'000'000) &&
         r.integer(t, w, "retry_budget", l.retry_budget, 0, 100) &&
         r.integer(t, w, "cache_bytes", l.cache_bytes, 0, std::int64_t{1} << 40);
}

bool read_backend(reader& r, const toml::node& n, const std::string& where, backend_config& b) {
  if (n.is_string()) {
    if (!r.endpoint(&n, where, b.address, lbkit::port_zero::reject)) return false;
    b.id = b.address.to_string();
    return true;
  }
  const toml::table* t = n.as_table();
  if (t == nullptr) return r.fail(&n, where, "want \"ADDR:PORT\" or { address = ..., weight = N }");
  if (!r.only(*t, where, {"address", "weight", "id"}) ||
      !r.endpoint(t->get("address"), where + ".address", b.address, lbkit::port_zero::reject) ||
      !r.integer(*t, where, "weight", b.weight, 0, lbkit::max_weight)) {
    return false;
  }
  b.id = b.address.to_string();
  return r.string(*t, where, "id", b.id);
}

bool read_pool(reader& r, const std::string& name, const toml::table& t, pool_config& p) {
  const std::string w = "pools." + name;
  p.name = name;
  std::string health = "none", interval;
  if (!r.only(t, w,
              {"policy", "backends", "health", "health_interval", "health_timeout", "rise", "fall",
               "passive_failures", "panic_threshold", "sticky_cookie", "hash_cookie", "hash_header",
               "max_idle", "upstream_idle_timeout"}) ||
      !r.string(t, w, "policy", p.policy) || !r.string(t, w, "health", health) ||
      !r.duration(t, w, "health_interval", p.health.interval) ||
      !r.duration(t, w, "health_timeout", p.health.timeout) ||
      !r.integer(t, w, "rise", p.health.rise, 1, 1000) ||
      !r.integer(t, w, "fall", p.health.fall, 1, 1000) ||
      !r.integer(t, w, "passive_failures", p.passive_failures, 0, 1'000'000) ||
      !r.number(t, w, "panic_threshold", p.panic_threshold, 0, 100) ||
      !r.string(t, w, "sticky_cookie", p.sticky_cookie) ||
      !r.string(t, w, "hash_header", p.hash_header) ||
      !r.string(t, w, "hash_cookie", p.hash_cookie) ||
      !r.integer(t, w, "max_idle", p.max_idle, 0, 100'000) ||
      !r.duration(t, w, "upstream_idle_timeout", p.upstream_idle_timeout)) {
    return false;
  }
  if (!examples::with_policy(p.policy, []<class>() {})) {
    return r.fail(t.get("policy"), w + ".policy",
                  lbkit::quote(p.policy) + " is not one of: " + examples::policy_names);
  }
  if (auto v = examples::parse_health_kind(health, p.health); !v) {
    return r.fail(t.get("health"), w + ".health", v.error().message);
  }
  for (const auto& [key, name] :
       {std::pair{"sticky_cookie", &p.sticky_cookie}, std::pair{"hash_cookie", &p.hash_cookie}}) {
    if (name->empty()) continue;
    if (auto v = lbkit::validate_cookie_name(*name); !v) {
      return r.fail(t.get(key), w + "." + key, v.error().message);
    }
  }
  const toml::array* backends = t.get_as<toml::array>("backends");
  if (backends == nullptr || backends->empty()) {
    return r.fail(t.get("backends") != nullptr ? t.get("backends") : nullptr, w + ".backends",
                  "want a non-empty array of backends");
  }
  std::set<std::string> ids;
  for (std::size_t i = 0; i < backends->size(); ++i) {
    backend_config b;
    const std::string bw = w + ".backends[" + std::to_string(i) + "]";
    if (!read_backend(r, *backends->get(i), bw, b)) return false;
    // runtime.hpp applies the pool's backends to its registry without checking the result:
    // refuse here what the registry would refuse (an empty or non-visible id, 0.0.0.0).
    if (auto v = lbkit::validate(lbkit::backend(b.id, b.address, b.weight)); !v) {
      return r.fail(backends->get(i), bw, v.error().message);
    }
    if (!ids.insert(b.id).second) {
      return r.fail(backends->get(i), bw, "a second backend with id " + lbkit::quote(b.id));
    }
    p.backends.push_back(std::move(b));
  }
  // Weights the policy would ignore (round_robin with 1 and 3), or a pool of weight 0 only:
  // a configuration that would serve other than it says.
  std::vector<std::uint32_t> weights;
  for (const auto& b : p.backends) weights.push_back(b.weight);
  if (auto v = examples::check_weights(p.policy, "pool " + p.name, weights); !v) {
    return r.fail(backends, w + ".backends", v.error().message);
  }
  return true;
}

// A route's `headers`: { name = "value" } to equal, { name = true } to be present.
bool read_header_matches(reader& r, const toml::table& t, const std::string& w,
                         lbkit::route_match& match) {
  const toml::node* h = t.get("headers");
  if (h == nullptr) return true;
  const toml::table* ht = h->as_table();
  if (ht == nullptr) return r.fail(h, w + ".headers", "want a table: { name = \"value\" or true }");
  for (const auto& [k, v] : *ht) {
    lbkit::header_match m{std::string(k.str()), std::nullopt};
    if (v.is_string()) {
      m.value = *v.value<std::string>();
    } else if (!(v.is_boolean() && *v.value<bool>())) {
      return r.fail(&v, w + ".headers." + std::string(k.str()),
                    "want a value to equal, or true for \"present\"");
    }
    match.headers.push_back(std::move(m));
  }
  return true;
}

// A route's `retry_on`: the 5xx statuses after which an idempotent request is retried.
bool read_retry_on(reader& r, const toml::table& t, const std::string& w, route_config& rc) {
  const toml::node* n = t.get("retry_on");
  if (n == nullptr) return true;
  const toml::array* a = n->as_array();
  if (a == nullptr) return r.fail(n, w + ".retry_on", "want an array of HTTP statuses");
  rc.retry_on.clear();
  for (const auto& e : *a) {
    const auto s = e.value<std::int64_t>();
    if (!e.is_integer() || !s || *s < 500 || *s > 599) {
      return r.fail(&e, w + ".retry_on", "want 5xx statuses");
    }
    rc.retry_on.push_back(static_cast<unsigned>(*s));
  }
  return true;
}

// A route's `rate_limit`: { rate = N, burst = N, key = "client" | "api_key" }.
bool read_rate_limit(reader& r, const toml::table& t, const std::string& w,
                     rate_limit_config& limit) {
  const toml::node* n = t.get("rate_limit");
  if (n == nullptr) return true;
  const toml::table* rt = n->as_table();
  if (rt == nullptr)
    return r.fail(n, w + ".rate_limit",
                  "want { rate = N, burst = N, key = \"client\" | \"api_key\" }");
  std::string key = "client";
  const std::string rw = w + ".rate_limit";
  if (!r.only(*rt, rw, {"rate", "burst", "key"}) ||
      !r.number(*rt, rw, "rate", limit.rate, 1e-6, 1e9) ||
      !r.number(*rt, rw, "burst", limit.burst, 1, 1e9) || !r.string(*rt, rw, "key", key)) {
    return false;
  }
  if (limit.rate <= 0) return r.fail(n, rw + ".rate", "is required");
  if (limit.burst <= 0) limit.burst = std::max(1.0, limit.rate);
  if (key != "client" && key != "api_key") {
    return r.fail(rt->get("key"), rw + ".key", lbkit::quote(key) + " is not client or api_key");
  }
  limit.per_key = key == "api_key";
  return true;
}

// A route's `auth`, read as `name`.
bool read_auth(reader& r, const toml::table& t, const std::string& w, const std::string& name,
               auth_kind& auth) {
  if (name == "none") {
    auth = auth_kind::none;
  } else if (name == "api_key") {
    auth = auth_kind::api_key;
  } else if (name == "bearer") {
    auth = auth_kind::bearer;
  } else {
    return r.fail(t.get("auth"), w + ".auth",
                  lbkit::quote(name) + " is not none, api_key or bearer");
  }
  return true;
}

bool read_route(reader& r, std::size_t index, const toml::table& t, const router_config& c,
                route_config& rc) {
  const std::string w = "routes[" + std::to_string(index) + "]";
  rc.line = static_cast<int>(t.source().begin.line);
  std::string auth = "none", rewrite;
  bool exact = false;
  std::int64_t max_body = -1;
  if (!r.only(
          t, w,
          {"host", "path", "exact", "methods", "headers", "pool", "auth", "rate_limit", "retries",
           "retry_on", "max_body_bytes", "required_headers", "rewrite_host", "cache"}) ||
      !r.string(t, w, "host", rc.match.host) || !r.string(t, w, "path", rc.match.path) ||
      !r.boolean(t, w, "exact", exact) || !r.strings(t, w, "methods", rc.match.methods) ||
      !r.string(t, w, "pool", rc.pool) || !r.string(t, w, "auth", auth) ||
      !r.integer(t, w, "retries", rc.retries, 0, 10) ||
      !r.integer(t, w, "max_body_bytes", max_body, 0, std::int64_t{1} << 40) ||
      !r.strings(t, w, "required_headers", rc.required_headers) ||
      !r.string(t, w, "rewrite_host", rewrite) || !r.boolean(t, w, "cache", rc.cache)) {
    return false;
  }
  rc.match.path_is_prefix = !exact;
  if (max_body >= 0) rc.max_body_bytes = static_cast<std::size_t>(max_body);
  if (!rewrite.empty()) rc.rewrite_host = rewrite;
  if (!read_header_matches(r, t, w, rc.match) || !read_retry_on(r, t, w, rc) ||
      !read_rate_limit(r, t, w, rc.rate_limit) || !read_auth(r, t, w, auth, rc.auth)) {
    return false;
  }
  if (rc.rate_limit.per_key && rc.auth == auth_kind::none) {
    return r.fail(t.get("rate_limit"), w + ".rate_limit.key",
                  "api_key needs the route to authenticate (auth = \"api_key\" or \"bearer\")");
  }
  if (rc.pool.empty()) return r.fail(&t, w + ".pool", "is required");
  if (c.pools.find(rc.pool) == c.pools.end()) {
    return r.fail(t.get("pool"), w + ".pool", "no pool named " + lbkit::quote(rc.pool));
  }
  if (auto v = lbkit::validate(rc.match); !v) return r.fail(&t, w, v.error().message);
  return true;
}

// The top-level settings: sticky_key, listen, stats, threads, access_log, [limits], [auth].
bool read_settings(reader& r, const toml::table& root, router_config& c) {
  if (std::string hex; !r.string(root, "", "sticky_key", hex)) {
    return false;
  } else if (!hex.empty()) {
    auto k = lbkit::sticky_cookie::parse_key(hex);
    if (!k) return r.fail(root.get("sticky_key"), "sticky_key", k.error().message);
    c.sticky_key = *k;
  }
  if (const toml::node* n = root.get("listen")) {
    std::vector<const toml::node*> items;
    if (const toml::array* a = n->as_array()) {
      for (const auto& e : *a) items.push_back(&e);
    } else {
      items.push_back(n);
    }
    for (const toml::node* e : items) {
      lbkit::endpoint ep;
      if (!r.endpoint(e, "listen", ep, lbkit::port_zero::allow)) return false;
      c.listen.push_back(ep);
    }
  }
  if (const toml::node* n = root.get("stats")) {
    lbkit::endpoint ep;
    if (!r.endpoint(n, "stats", ep, lbkit::port_zero::allow)) return false;
    c.stats = ep;
  }
  if (!r.integer(root, "", "threads", c.threads, 1, 256) ||
      !r.boolean(root, "", "access_log", c.access_log)) {
    return false;
  }
  if (const toml::node* n = root.get("limits")) {
    if (!n->is_table()) return r.fail(n, "limits", "want a table");
    if (!read_limits(r, *n->as_table(), c.limits)) return false;
  }
  if (const toml::node* n = root.get("auth")) {
    const toml::table* t = n->as_table();
    if (t == nullptr) return r.fail(n, "auth", "want a table");
    if (!r.only(*t, "auth", {"api_keys", "bearer_tokens"}) ||
        !r.strings(*t, "auth", "api_keys", c.api_keys) ||
        !r.strings(*t, "auth", "bearer_tokens", c.bearer_tokens)) {
      return false;
    }
  }
  return true;
}

// The [[routes]], in order; after the pools, which they name.
bool read_routes(reader& r, const toml::table& root, router_config& c) {
  const toml::array* routes = root.get_as<toml::array>("routes");
  if (routes == nullptr || routes->empty()) {
    return r.fail(root.get("routes"), "routes", "want at least one [[routes]] table");
  }
  lbkit::route_table<std::size_t> check;  // duplicates are found here, with the route's line
  for (std::size_t i = 0; i < routes->size(); ++i) {
    const toml::table* t = routes->get(i)->as_table();
    if (t == nullptr) return r.fail(routes->get(i), "routes", "want [[routes]] tables");
    route_config rc;
    if (!read_route(r, i, *t, c, rc)) return false;
    if (auto a = check.add(rc.match, i); !a) {
      return r.fail(t, "routes[" + std::to_string(i) + "]", a.error().message);
    }
    if ((rc.auth == auth_kind::api_key && c.api_keys.empty()) ||
        (rc.auth == auth_kind::bearer && c.bearer_tokens.empty())) {
      return r.fail(t->get("auth"), "routes[" + std::to_string(i) + "].auth",
                    "no keys configured: add them under [auth]");
    }
    c.routes.push_back(std::move(rc));
  }
  return true;
}

}  // namespace

lbkit::result<router_config> parse_config(std::string_view text, const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    return lbkit::make_error(
        lbkit::errc::invalid_argument,
        name + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  reader r(name);
  router_config c;
  auto failed = [&] { return lbkit::make_error(lbkit::errc::invalid_argument, r.error()); };
  if (!r.only(root, "",
              {"listen", "stats", "threads", "access_log", "sticky_key", "limits", "pools",
               "routes", "auth"})) {
    return failed();
  }
  if (!read_settings(r, root, c)) return failed();
  const toml::table* pools = root.get_as<toml::table>("pools");
  if (pools == nullptr || pools->empty()) {
    return r.fail(root.get("pools"), "pools", "want at least one [pools.NAME] table"), failed();
  }
  for (const auto& [k, v] : *pools) {
    const toml::table* t = v.as_table();
    if (t == nullptr) return r.fail(&v, "pools." + std::string(k.str()), "want a table"), failed();
    pool_config p;
    if (!read_pool(r, std::string(k.str()), *t, p)) return failed();
    c.pools.emplace(p.name, std::move(p));
  }
  if (!read_routes(r, root, c)) return failed();
  if (c.listen.empty()) {
    return r.fail(root.get("listen"), "listen",
                  root.get("listen") != nullptr ? "is empty: want at least one \"ADDR:PORT\""
                                                : "is required: want [\"ADDR:PORT\", ...]"),
           failed();
  }
  return c;
}

lbkit::result<router_config> load_config(const std::string& path) {
  std::error_code ec;
  const auto type = std::filesystem::status(path, ec).type();
  if (type == std::filesystem::file_type::not_found) {
    return lbkit::make_error(lbkit::errc::not_found, path + ": no such file");
  }
  if (!ec && type != std::filesystem::file_type::regular) {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             path + ": not a regular file (a directory?): want a TOML file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return lbkit::make_error(lbkit::errc::not_found,
                             path + ": cannot be read: " + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace l7
