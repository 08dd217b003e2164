// SPDX-License-Identifier: MIT
// Shared by the examples: lbkit's selection policies by name, for configuration files and
// command lines. Each policy is a distinct type, so the program is instantiated once per
// policy and the name picks which instantiation runs; the pick path stays free of virtual
// calls.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/lbkit.hpp>

namespace examples {

// Calls f.template operator()<Policy>() for the policy named `name`; false if none is.
template <class F>
bool with_policy(std::string_view name, F&& f) {
  if (name == "round_robin") return f.template operator()<lbkit::round_robin>(), true;
  if (name == "weighted_round_robin") {
    return f.template operator()<lbkit::weighted_round_robin>(), true;
  }
  if (name == "weighted_random") return f.template operator()<lbkit::weighted_random>(), true;
  if (name == "least_connections") {
    return f.template operator()<lbkit::least_connections>(), true;
  }
  if (name == "power_of_two_choices") {
    return f.template operator()<lbkit::power_of_two_choices>(), true;
  }
  if (name == "least_response_time") {
    return f.template operator()<lbkit::least_response_time>(), true;
  }
  if (name == "modulo_hash") return f.template operator()<lbkit::modulo_hash>(), true;
  if (name == "ring_hash") return f.template operator()<lbkit::ring_hash>(), true;
  if (name == "maglev") return f.template operator()<lbkit::maglev>(), true;
  if (name == "jump_hash") return f.template operator()<lbkit::jump_hash>(), true;
  if (name == "rendezvous_hash") return f.template operator()<lbkit::rendezvous_hash>(), true;
  if (name == "anchor_hash") return f.template operator()<lbkit::anchor_hash>(), true;
  if (name == "bounded_maglev") {
    return f.template operator()<lbkit::bounded_load<lbkit::maglev>>(), true;
  }
  if (name == "bounded_ring_hash") {
    return f.template operator()<lbkit::bounded_load<lbkit::ring_hash>>(), true;
  }
  return false;
}
inline constexpr const char* policy_names =
    "round_robin, weighted_round_robin, weighted_random, least_connections, "
    "power_of_two_choices, least_response_time, modulo_hash, ring_hash, maglev, jump_hash, "
    "rendezvous_hash, anchor_hash, bounded_maglev, bounded_ring_hash";

// Refuses weights a pool could not serve as configured: all zero (no backend would ever get
// a request), or unequal under a policy that ignores weights (round_robin, jump_hash,
// anchor_hash: only zero or not counts), which would silently balance 1:1 what the
// configuration says is 1:3. `pool` names the pool in the message.
inline lbkit::result<void> check_weights(std::string_view policy, std::string_view pool,
                                         const std::vector<std::uint32_t>& weights) {
  const auto first = std::find_if(weights.begin(), weights.end(), [](auto w) { return w != 0; });
  if (!weights.empty() && first == weights.end()) {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             std::string(pool) +
                                 ": every backend has weight 0, so none would "
                                 "ever get a request");
  }
  const bool unweighted =
      policy == "round_robin" || policy == "jump_hash" || policy == "anchor_hash";
  for (auto w : weights) {
    if (unweighted && w != 0 && w != *first) {
      const std::string alternative =
          policy == "round_robin" ? "weighted_round_robin" : "maglev or ring_hash";
      return lbkit::make_error(lbkit::errc::invalid_argument,
                               std::string(pool) + ": policy " + std::string(policy) +
                                   " ignores weights (" + std::to_string(*first) + " and " +
                                   std::to_string(w) + " here): use " + alternative +
                                   ", or give every backend the same weight");
    }
  }
  return {};
}

// The backends one request or connection has failed on, oldest first, for a retry's
// pick_other: the latest four when more failed (a retry budget rarely allows more). Fixed
// size, so that it lives in the connection without allocating.
class tried_backends {
 public:
  // Notes that `s` failed: moved to the back if it failed before, the oldest dropped when
  // full.
  void add(const lbkit::backend_state* s) noexcept {
    const auto end = tried_.begin() + size_;
    if (const auto at = std::find(tried_.begin(), end, s); at != end) {
      std::rotate(at, at + 1, end);
      return;
    }
    if (size_ == tried_.size()) {
      std::rotate(tried_.begin(), tried_.begin() + 1, end);
      --size_;
    }
    tried_[size_++] = s;
  }
  bool empty() const noexcept { return size_ == 0; }
  std::span<const lbkit::backend_state* const> span() const noexcept {
    return std::span(tried_).first(size_);
  }

 private:
  std::array<const lbkit::backend_state*, 4> tried_{};
  std::size_t size_ = 0;
};

// A picker of whichever policy the configuration named. The pick costs one virtual call on
// top of lbkit's, which a program that picks once per connection or request can afford; in
// exchange the code around it is compiled once instead of once per policy.
// Thread safety: not thread-safe, like the picker it wraps; one per thread.
class any_picker {
 public:
  virtual ~any_picker() = default;
  virtual lbkit::lease pick(const lbkit::pick_context& context) noexcept = 0;
  virtual lbkit::lease pick_member(std::string_view id) noexcept = 0;
  // A retry's pick: none of `tried` while another backend is eligible (balancer::pick_other).
  virtual lbkit::lease pick_other(const lbkit::pick_context& context,
                                  std::span<const lbkit::backend_state* const> tried) noexcept = 0;
};

// A balancer of whichever policy the configuration named, and the pickers it makes: the one
// place an example names a policy type. Thread safety: make_picker() is thread-safe, as
// lbkit::balancer's is. It must outlive its pickers.
class any_balancer {
 public:
  virtual ~any_balancer() = default;
  virtual std::unique_ptr<any_picker> make_picker() const = 0;
};

// The balancer over `registry` of the policy called `policy` (one of policy_names), or an
// error naming it.
inline lbkit::result<std::unique_ptr<any_balancer>> make_balancer(
    std::string_view policy, lbkit::backend_registry& registry,
    const lbkit::balancer_options& options = {}) {
  std::unique_ptr<any_balancer> made;
  const bool known = with_policy(policy, [&]<class Policy>() {
    class picker_of final : public any_picker {
     public:
      explicit picker_of(const lbkit::balancer<Policy>& b) : p_(b.make_picker()) {}
      lbkit::lease pick(const lbkit::pick_context& context) noexcept override {
        return p_.pick(context);
      }
      lbkit::lease pick_member(std::string_view id) noexcept override { return p_.pick_member(id); }
      lbkit::lease pick_other(
          const lbkit::pick_context& context,
          std::span<const lbkit::backend_state* const> tried) noexcept override {
        return p_.pick_other(context, tried);
      }

     private:
      typename lbkit::balancer<Policy>::picker p_;
    };
    class balancer_of final : public any_balancer {
     public:
      balancer_of(lbkit::backend_registry& r, const lbkit::balancer_options& o)
          : b_(r, Policy{}, o) {}
      std::unique_ptr<any_picker> make_picker() const override {
        return std::make_unique<picker_of>(b_);
      }

     private:
      lbkit::balancer<Policy> b_;
    };
    made = std::make_unique<balancer_of>(registry, options);
  });
  if (!known) {
    return lbkit::make_error(lbkit::errc::invalid_argument,
                             "policy " + lbkit::quote(policy) + " is not one of: " + policy_names);
  }
  return made;
}

}  // namespace examples
