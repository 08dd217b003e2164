// SPDX-License-Identifier: MIT
// A small shared cache of GET responses, bounded by bytes, as RFC 9111 allows a shared cache
// to keep them: only 200 responses with a positive freshness lifetime (s-maxage, else
// max-age), never `no-store`, `private`, `no-cache`, a `Vary`, or a `Set-Cookie`; never for
// a request that carries `Authorization` or asks for `no-cache`/`no-store`. Entries expire at
// their lifetime and the least recently used go first when the bytes run out. No
// revalidation and no request coalescing: an expired entry is a miss.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <lbkit/net/http1.hpp>

#include "asio.hpp"
#include "body.hpp"

namespace l7 {

using response = http::response<raw_body>;

namespace detail_ {

// Calls f(name, value) for each directive of a Cache-Control value ("max-age=60, private").
template <class F>
void for_each_directive(std::string_view v, F f) {
  lbkit::http1::for_each_element(v, [&](std::string_view d) {
    const auto eq = d.find('=');
    std::string_view name = d.substr(0, eq), value;
    if (eq != std::string_view::npos) value = d.substr(eq + 1);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (!name.empty()) f(name, value);
  });
}

// A delta-seconds value (RFC 9111 §1.2.2): digits only, saturating.
inline std::optional<std::int64_t> delta_seconds(std::string_view v) {
  if (v.empty()) return std::nullopt;
  std::int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = std::min<std::int64_t>(n * 10 + (c - '0'), std::int64_t{1} << 31);
  }
  return n;
}

}  // namespace detail_

// Whether a request may be answered from the cache (and its response stored).
template <class Request>
bool cache_may_serve(const Request& req) {
  if (req.method() != http::verb::get) return false;
  if (req.find(http::field::authorization) != req.end()) return false;  // RFC 9111 §3.5
  bool ok = true;
  detail_::for_each_directive(req[http::field::cache_control], [&](auto name, auto) {
    if (beast::iequals(name, "no-store") || beast::iequals(name, "no-cache")) ok = false;
  });
  if (beast::iequals(req[http::field::pragma], "no-cache")) ok = false;
  return ok;
}

// How long a response may be served from a shared cache, or nullopt if it may not be stored.
inline std::optional<std::chrono::seconds> cache_lifetime(const http::response_header<>& res) {
  if (res.result() != http::status::ok) return std::nullopt;
  if (res.find(http::field::vary) != res.end() || res.find(http::field::set_cookie) != res.end()) {
    return std::nullopt;
  }
  bool refused = false;
  std::optional<std::int64_t> max_age, s_maxage;
  detail_::for_each_directive(res[http::field::cache_control], [&](auto name, auto value) {
    if (beast::iequals(name, "no-store") || beast::iequals(name, "private") ||
        beast::iequals(name, "no-cache")) {
      refused = true;
    } else if (beast::iequals(name, "max-age")) {
      max_age = detail_::delta_seconds(value);
      refused |= !max_age;  // a malformed lifetime is treated as stale (§4.2.1)
    } else if (beast::iequals(name, "s-maxage")) {
      s_maxage = detail_::delta_seconds(value);
      refused |= !s_maxage;
    }
  });
  const auto lifetime = s_maxage ? s_maxage : max_age;
  if (refused || !lifetime || *lifetime <= 0) return std::nullopt;
  return std::chrono::seconds(*lifetime);
}

class response_cache {
 public:
  using clock = std::chrono::steady_clock;
  struct entry {
    response res;
    clock::time_point stored, expires;
  };

  // max_bytes bounds the keys, bodies and headers held; one entry may use at most 1/8 of it.
  explicit response_cache(std::size_t max_bytes) : max_bytes_(max_bytes) {}

  // The fresh entry for `key`, or null (an expired one is dropped).
  std::shared_ptr<const entry> find(std::string_view key, clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    if (now >= it->second->e->expires) {
      erase(it->second);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    return it->second->e;
  }

  // Stores a copy of `res` for `lifetime` (replacing any entry for `key`). Returns false when
  // it is too big to keep.
  bool store(std::string key, const response& res, std::chrono::seconds lifetime,
             clock::time_point now) {
    std::size_t bytes = key.size() + res.body().size() + 256;
    for (const auto& f : res) bytes += f.name_string().size() + f.value().size() + 4;
    if (bytes > max_entry_bytes()) return false;
    auto e = std::make_shared<entry>(entry{res, now, now + lifetime});
    std::lock_guard lock(mutex_);
    if (auto it = index_.find(key); it != index_.end()) erase(it->second);
    while (bytes_ + bytes > max_bytes_ && !lru_.empty()) erase(std::prev(lru_.end()));
    lru_.push_front(node{std::move(key), std::move(e), bytes});
    index_.emplace(lru_.front().key, lru_.begin());
    bytes_ += bytes;
    return true;
  }

  std::size_t max_entry_bytes() const noexcept { return max_bytes_ / 8; }

  std::size_t bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return lru_.size();
  }

 private:
  struct node {
    std::string key;
    std::shared_ptr<const entry> e;  // a hit keeps its copy alive past eviction
    std::size_t bytes;
  };
  struct hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  void erase(std::list<node>::iterator it) {
    bytes_ -= it->bytes;
    index_.erase(std::string_view(it->key));
    lru_.erase(it);
  }

  const std::size_t max_bytes_;
  mutable std::mutex mutex_;
  std::list<node> lru_;
  // Keys view the strings held by lru_'s nodes.
  std::unordered_map<std::string_view, std::list<node>::iterator, hash, std::equal_to<>> index_;
  std::size_t bytes_ = 0;
};

}  // namespace l7
