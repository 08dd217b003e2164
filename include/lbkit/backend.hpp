// SPDX-License-Identifier: MIT
// backend: the configuration of one upstream server as the control plane describes it — a
// stable id, an address, a weight and optional placement (zone, labels). Values of this type
// are immutable once published in a registry snapshot; live counters are in backend_state.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "lbkit/endpoint.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit {

// The largest accepted weight. Weights are relative: 1'000'000 lets a configuration express
// shares down to one in a million, and a sum over 10'000 backends still fits easily in 64
// bits, so weighted policies need no overflow checks on the pick path.
inline constexpr std::uint32_t max_weight = 1'000'000;

// Limits on the text fields, so that a hostile configuration cannot make snapshots huge.
inline constexpr std::size_t max_id_length = 255;
inline constexpr std::size_t max_labels = 64;
inline constexpr std::size_t max_label_value_length = 1024;

// One upstream server. Thread safety: thread-compatible (a value type).
struct backend {
  backend() = default;
  backend(std::string backend_id, endpoint addr, std::uint32_t w = 1)
      : id(std::move(backend_id)), address(addr), weight(w) {}

  // Stable identity: 1..255 bytes of visible ASCII (no spaces). Consistent-hash policies key
  // on it, so a backend keeps its share of keys when its address changes with a re-add.
  std::string id;
  // Where to connect. Must have a port and must not be the unspecified address.
  endpoint address;
  // Relative share of new traffic, 0..max_weight. 0 means "no new traffic" (like draining,
  // but set by configuration): existing leases continue.
  std::uint32_t weight = 1;
  // Optional locality (for zone-aware routing); empty or visible ASCII, at most 255 bytes.
  std::string zone;
  // Optional free-form metadata. Keys as ids; values up to 1024 bytes without controls.
  std::map<std::string, std::string, std::less<>> labels;

  friend bool operator==(const backend&, const backend&) = default;
};

namespace detail {

inline bool has_control_chars(std::string_view s) noexcept {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

inline result<void> check_name(std::string_view what, std::string_view s, bool allow_empty) {
  if (s.empty() && allow_empty) return {};
  if (s.empty()) return make_error(errc::invalid_argument, std::string(what) + " is empty");
  if (s.size() > max_id_length) {
    return make_error(errc::invalid_argument, std::string(what) + " " + quote(s) +
                                                  " is longer than " +
                                                  std::to_string(max_id_length) + " bytes");
  }
  if (!is_visible_ascii(s)) {
    return make_error(errc::invalid_argument,
                      std::string(what) + " " + quote(s) + " must be visible ASCII without spaces");
  }
  return {};
}

}  // namespace detail

// Checks every field of `b` against the limits documented on the struct.
inline result<void> validate(const backend& b) {
  if (auto r = detail::check_name("backend id", b.id, false); !r) return r;
  const std::string who = "backend " + quote(b.id);
  if (b.address.port() == 0) {
    return make_error(errc::invalid_argument, who + " has no port in its address");
  }
  if (b.address.address() == ip_address() || b.address.address() == ip_address::v6({})) {
    return make_error(errc::invalid_argument,
                      who + " has the unspecified address " + b.address.to_string());
  }
  if (b.weight > max_weight) {
    return make_error(errc::out_of_range, who + " has weight " + std::to_string(b.weight) +
                                              ", above the maximum " + std::to_string(max_weight));
  }
  if (auto r = detail::check_name(who + " zone", b.zone, true); !r) return r;
  if (b.labels.size() > max_labels) {
    return make_error(errc::invalid_argument,
                      who + " has more than " + std::to_string(max_labels) + " labels");
  }
  for (const auto& [key, value] : b.labels) {
    if (auto r = detail::check_name(who + " label key", key, false); !r) return r;
    if (value.size() > max_label_value_length || detail::has_control_chars(value)) {
      return make_error(errc::invalid_argument, who + " label " + quote(key) +
                                                    " has a value over " +
                                                    std::to_string(max_label_value_length) +
                                                    " bytes or with control characters");
    }
  }
  return {};
}

}  // namespace lbkit
