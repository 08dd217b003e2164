// SPDX-License-Identifier: MIT
// cidr, cidr_table<Value> and access_list: IPv4 and IPv6 prefixes and longest-prefix match,
// I/O free. A front end uses them to classify a client address: which allow/deny rule applies,
// which pool or rate limit a network gets, whether an address is a trusted proxy.
//
// IPv4 and IPv6 are separate families: an IPv4 address never matches an IPv6 prefix, nor the
// reverse, with one deliberate exception. A dual-stack (AF_INET6) socket reports an IPv4
// client as the IPv4-mapped address ::ffff:a.b.c.d (RFC 4291 §2.5.5.2), so lbkit treats a
// mapped address as the IPv4 address it carries, everywhere in this header: a lookup of
// ::ffff:10.1.2.3 is a lookup of 10.1.2.3 (0.0.0.0/0 matches it, ::/0 does not), and a prefix
// written inside ::ffff:0:0/96 is the IPv4 prefix it names (::ffff:10.0.0.0/104 is 10.0.0.0/8).
// Rules written for IPv4 thus hold for IPv4 clients whichever socket accepted them.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbkit/endpoint.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit {
namespace detail {

// A 128-bit trie key, most significant half first.
struct key128 {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend constexpr bool operator==(const key128&, const key128&) = default;
};

template <class Key>
inline constexpr int key_width = 128;
template <>
inline constexpr int key_width<std::uint32_t> = 32;

// Bit `i` of `k`, counted from the most significant (0 <= i < width).
constexpr unsigned key_bit(std::uint32_t k, int i) noexcept { return (k >> (31 - i)) & 1u; }
constexpr unsigned key_bit(const key128& k, int i) noexcept {
  return i < 64 ? (k.hi >> (63 - i)) & 1u : (k.lo >> (127 - i)) & 1u;
}

// How many leading bits `a` and `b` share (the width when equal).
constexpr int common_bits(std::uint32_t a, std::uint32_t b) noexcept {
  return std::countl_zero(a ^ b);
}
constexpr int common_bits(const key128& a, const key128& b) noexcept {
  return a.hi != b.hi ? std::countl_zero(a.hi ^ b.hi) : 64 + std::countl_zero(a.lo ^ b.lo);
}

// `k` with every bit past the first `len` cleared.
constexpr std::uint32_t key_mask(std::uint32_t k, int len) noexcept {
  return len == 0 ? 0 : k & (~std::uint32_t{0} << (32 - len));
}
constexpr key128 key_mask(const key128& k, int len) noexcept {
  if (len <= 64) return {len == 0 ? 0 : k.hi & (~std::uint64_t{0} << (64 - len)), 0};
  return {k.hi, len == 128 ? k.lo : k.lo & (~std::uint64_t{0} << (128 - len))};
}

// The address bits of an IPv4 address (`a.is_v4()`), and of any address as 128 bits.
constexpr std::uint32_t key_of_v4(const ip_address& a) noexcept {
  const auto b = a.bytes();
  return std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 | std::uint32_t{b[2]} << 8 | b[3];
}
constexpr key128 key_of_v6(const ip_address& a) noexcept {
  const auto b = a.bytes();
  key128 k;
  for (std::size_t i = 0; i < 8; ++i) k.hi = k.hi << 8 | b[i];
  for (std::size_t i = 8; i < 16; ++i) k.lo = k.lo << 8 | b[i];
  return k;
}
constexpr ip_address address_of(std::uint32_t k) noexcept {
  return ip_address::v4({static_cast<std::uint8_t>(k >> 24), static_cast<std::uint8_t>(k >> 16),
                         static_cast<std::uint8_t>(k >> 8), static_cast<std::uint8_t>(k)});
}
constexpr ip_address address_of(const key128& k) noexcept {
  std::array<std::uint8_t, 16> b{};
  for (std::size_t i = 0; i < 8; ++i) {
    b[i] = static_cast<std::uint8_t>(k.hi >> (56 - 8 * i));
    b[8 + i] = static_cast<std::uint8_t>(k.lo >> (56 - 8 * i));
  }
  return ip_address::v6(b);
}

// A path-compressed binary trie (a PATRICIA trie, D. R. Morrison, JACM 1968, with prefixes on
// inner nodes) over one address family. A node holds a prefix; its children extend it by the
// bit that follows. A node without a value is a branch point and always has two children, so
// n prefixes take at most 2n - 1 nodes. Nodes live in one vector and link by index: a lookup
// reads 16-byte (IPv4) or 32-byte (IPv6) nodes and never the values it passes over.
// Thread safety: thread-compatible.
template <class Key, class Value>
class prefix_trie {
 public:
  static constexpr int width = key_width<Key>;
  static constexpr std::uint32_t npos = 0xffffffff;
  // The most nodes a trie holds, so that no index reaches npos.
  static constexpr std::size_t max_nodes = npos - 2;

  // The node of the longest prefix that contains `k`, or npos.
  std::uint32_t longest(const Key& k) const noexcept {
    std::uint32_t best = npos;
    for (std::uint32_t n = root_; n != npos;) {
      const node& x = nodes_[n];
      if (common_bits(k, x.key) < x.len) break;
      if (x.has_value) best = n;
      if (x.len == width) break;
      n = x.child[key_bit(k, x.len)];
    }
    return best;
  }

  // The node holding exactly the prefix k/len (k masked to len), or npos.
  std::uint32_t exact(const Key& k, int len) const noexcept {
    for (std::uint32_t n = root_; n != npos;) {
      const node& x = nodes_[n];
      if (x.len > len || common_bits(k, x.key) < x.len) break;
      if (x.len == len) return x.has_value ? n : npos;
      n = x.child[key_bit(k, x.len)];
    }
    return npos;
  }

  // Sets the value of k/len (k masked to len), adding the prefix if it is new.
  // Returns false, changing nothing, when the trie holds max_nodes nodes already.
  bool assign(const Key& k, int len, Value&& v) {
    if (nodes_.size() - free_.size() > max_nodes - 2) return false;
    std::uint32_t parent = npos;
    unsigned side = 0;
    for (std::uint32_t n = root_;;) {
      if (n == npos) {
        link(parent, side) = add_node(k, len, std::move(v));
        return true;
      }
      const Key x_key = nodes_[n].key;
      const int x_len = nodes_[n].len;
      const int c = std::min({common_bits(k, x_key), len, x_len});
      if (c == x_len && c == len) {
        if (nodes_[n].has_value) {
          *values_[n] = std::move(v);
        } else {
          values_[n].emplace(std::move(v));
          nodes_[n].has_value = true;
          ++size_;
        }
        return true;
      }
      if (c == x_len) {  // x is a shorter prefix of k/len: go down
        parent = n;
        side = key_bit(k, x_len);
        n = nodes_[n].child[side];
        continue;
      }
      // k/len and x part at bit c: the new prefix goes above x, or a branch point does.
      const unsigned x_side = key_bit(x_key, c);
      if (c == len) {
        const std::uint32_t m = add_node(k, len, std::move(v));
        nodes_[m].child[x_side] = n;
        link(parent, side) = m;
        return true;
      }
      const std::uint32_t leaf = add_node(k, len, std::move(v));
      const std::uint32_t branch = add_node(key_mask(k, c), c, std::nullopt);
      nodes_[branch].child[x_side] = n;
      nodes_[branch].child[x_side ^ 1u] = leaf;
      link(parent, side) = branch;
      return true;
    }
  }

  // Removes k/len (k masked to len). Returns whether it was present.
  bool erase(const Key& k, int len) {
    std::uint32_t grand = npos, parent = npos, n = root_;
    unsigned grand_side = 0, side = 0;
    while (n != npos) {
      const node& x = nodes_[n];
      if (x.len > len || common_bits(k, x.key) < x.len) return false;
      if (x.len == len) break;
      grand = parent, grand_side = side;
      parent = n, side = key_bit(k, x.len);
      n = x.child[side];
    }
    if (n == npos || !nodes_[n].has_value) return false;
    --size_;
    const std::uint32_t c0 = nodes_[n].child[0], c1 = nodes_[n].child[1];
    if (c0 != npos && c1 != npos) {  // keep it as a branch point
      nodes_[n].has_value = false;
      values_[n].reset();
    } else if (c0 != npos || c1 != npos) {  // one child: splice the node out
      link(parent, side) = c0 != npos ? c0 : c1;
      free_node(n);
    } else {
      link(parent, side) = npos;
      free_node(n);
      // A branch point left with one child is spliced out too.
      if (parent != npos && !nodes_[parent].has_value) {
        link(grand, grand_side) = nodes_[parent].child[side ^ 1u];
        free_node(parent);
      }
    }
    if (root_ == npos) clear();
    return true;
  }

  void clear() noexcept {
    nodes_.clear();
    values_.clear();
    free_.clear();
    root_ = npos;
    size_ = 0;
  }

  // The prefix and value of a node that longest() or exact() returned.
  ip_address address(std::uint32_t n) const noexcept { return address_of(nodes_[n].key); }
  int length(std::uint32_t n) const noexcept { return nodes_[n].len; }
  const Value& value(std::uint32_t n) const noexcept { return *values_[n]; }

  std::size_t size() const noexcept { return size_; }

 private:
  struct node {
    Key key{};  // the prefix, zero past len
    std::uint32_t child[2] = {npos, npos};
    std::uint8_t len = 0;
    bool has_value = false;
  };

  std::uint32_t& link(std::uint32_t parent, unsigned side) noexcept {
    return parent == npos ? root_ : nodes_[parent].child[side];
  }

  std::uint32_t add_node(const Key& k, int len, std::optional<Value>&& v) {
    std::uint32_t n;
    if (!free_.empty()) {
      n = free_.back();
      free_.pop_back();
      nodes_[n] = node{};
      values_[n] = std::move(v);
    } else {
      n = static_cast<std::uint32_t>(nodes_.size());
      nodes_.emplace_back();
      values_.push_back(std::move(v));
    }
    nodes_[n].key = k;
    nodes_[n].len = static_cast<std::uint8_t>(len);
    nodes_[n].has_value = values_[n].has_value();
    if (nodes_[n].has_value) ++size_;
    return n;
  }

  void free_node(std::uint32_t n) {
    values_[n].reset();
    nodes_[n].has_value = false;
    free_.push_back(n);
  }

  std::vector<node> nodes_;
  std::vector<std::optional<Value>> values_;  // by node index; empty for branch points
  std::vector<std::uint32_t> free_;           // unused node indices
  std::uint32_t root_ = npos;
  std::size_t size_ = 0;  // nodes with a value
};

}  // namespace detail

// An IP prefix: a network address and a length in bits ("10.0.0.0/8", "2001:db8::/32").
// The bits past the length are always zero. A prefix written inside ::ffff:0:0/96 is stored
// as the IPv4 prefix it names (see the header comment).
// Thread safety: thread-compatible (a value type).
class cidr {
 public:
  // 0.0.0.0/0
  constexpr cidr() noexcept = default;

  // Parses "10.0.0.0/8", "2001:db8::/32" or a bare address ("192.0.2.1" is 192.0.2.1/32,
  // "2001:db8::1" is /128). The length is decimal without a leading zero, at most 32 (IPv4)
  // or 128 (IPv6). A prefix with host bits set ("10.0.0.1/8") is an error that names the
  // network probably meant: host bits usually mean a typo, and silently masking them would
  // turn "10.1.2.3/8" into a rule for all of 10.0.0.0/8.
  static result<cidr> parse(std::string_view text);

  // The prefix `network`/`length`, with the same checks as parse().
  static result<cidr> make(const ip_address& network, int length);

  // The prefix that holds exactly `a`: /32 or /128.
  static constexpr cidr host(const ip_address& a) noexcept {
    const ip_address u = a.unmapped();
    return cidr(u, u.is_v4() ? 32 : 128);
  }

  constexpr const ip_address& address() const noexcept { return address_; }
  constexpr int length() const noexcept { return length_; }

  // Whether `a` is inside the prefix. An IPv4-mapped `a` is taken as its IPv4 address.
  // Complexity: O(1).
  constexpr bool contains(const ip_address& a) const noexcept {
    const ip_address u = a.unmapped();
    if (u.af() != address_.af()) return false;
    const int same = u.is_v4()
                         ? detail::common_bits(detail::key_of_v4(u), detail::key_of_v4(address_))
                         : detail::common_bits(detail::key_of_v6(u), detail::key_of_v6(address_));
    return same >= length_;
  }

  // "10.0.0.0/8"; parse(to_string()) gives the prefix back.
  std::string to_string() const { return address_.to_string() + '/' + std::to_string(length_); }

  friend constexpr auto operator<=>(const cidr&, const cidr&) = default;
  friend constexpr bool operator==(const cidr&, const cidr&) = default;

 private:
  template <class>
  friend class cidr_table;

  constexpr cidr(const ip_address& a, int length) noexcept : address_(a), length_(length) {}

  // make(), with `text` (when not empty) naming the prefix in error messages.
  static result<cidr> checked(const ip_address& network, int length, std::string_view text);

  ip_address address_;
  int length_ = 0;
};

// A map from IP prefixes to values with longest-prefix-match lookup, one trie per family.
// insert() has insert_or_assign semantics: inserting a prefix that is present replaces its
// value (the table is a map from prefix to value; size() tells whether a prefix was new, and
// find_exact() whether one is present).
// Thread safety: thread-compatible. Build it on one thread, then share it read-only: any
// number of threads may call the const members (find, match, find_exact, size) at once, as
// long as no thread modifies the table meanwhile. To change a shared table, build a new one
// and publish it (as the registry publishes snapshots).
// Complexity: find() and match() visit one trie node per level: at most W + 1 nodes for
// W = 32 (IPv4) or 128 (IPv6) address bits, in practice about log2(n) plus how deeply the
// prefixes nest; no allocation, no hashing, no locks. insert() and erase() walk the same path;
// insert() may allocate (amortised O(1)). Memory: at most 2n - 1 nodes for n prefixes, each
// 16 bytes (IPv4) or 32 bytes (IPv6) plus a std::optional<Value>.
template <class Value>
class cidr_table {
 public:
  using value_type = Value;

  // Maps `prefix` to `v`, replacing the value of an equal prefix. Fails only when the family's
  // trie is full (2^32 - 3 nodes).
  result<void> insert(const cidr& prefix, Value v) {
    const ip_address& a = prefix.address();
    const bool ok = a.is_v4() ? v4_.assign(detail::key_of_v4(a), prefix.length(), std::move(v))
                              : v6_.assign(detail::key_of_v6(a), prefix.length(), std::move(v));
    if (!ok) {
      return make_error(errc::failed_precondition,
                        "cidr_table is full: cannot add " + prefix.to_string());
    }
    return {};
  }

  // Parses `prefix_text` as cidr::parse does and inserts it.
  result<void> insert(std::string_view prefix_text, Value v) {
    auto p = cidr::parse(prefix_text);
    if (!p) return unexpected<error>(p.error());
    return insert(*p, std::move(v));
  }

  // Removes `prefix` (exactly that prefix, not those inside it). Returns whether it was there.
  bool erase(const cidr& prefix) {
    const ip_address& a = prefix.address();
    return a.is_v4() ? v4_.erase(detail::key_of_v4(a), prefix.length())
                     : v6_.erase(detail::key_of_v6(a), prefix.length());
  }

  // The value of the longest prefix that contains `a`, or nullptr when none does. An
  // IPv4-mapped `a` is looked up as its IPv4 address. The pointer is valid until the table
  // is next modified.
  const Value* find(const ip_address& a) const noexcept {
    if (a.is_v4() || a.is_v4_mapped()) {
      const auto n = v4_.longest(detail::key_of_v4(a.unmapped()));
      return n == v4_.npos ? nullptr : &v4_.value(n);
    }
    const auto n = v6_.longest(detail::key_of_v6(a));
    return n == v6_.npos ? nullptr : &v6_.value(n);
  }

  // The longest prefix that contains `a`, for logs and diagnostics; find() without the value.
  std::optional<cidr> match(const ip_address& a) const noexcept {
    if (a.is_v4() || a.is_v4_mapped()) {
      const auto n = v4_.longest(detail::key_of_v4(a.unmapped()));
      if (n == v4_.npos) return std::nullopt;
      return cidr(v4_.address(n), v4_.length(n));
    }
    const auto n = v6_.longest(detail::key_of_v6(a));
    if (n == v6_.npos) return std::nullopt;
    return cidr(v6_.address(n), v6_.length(n));
  }

  // The value of exactly `prefix`, or nullptr when it is not in the table.
  const Value* find_exact(const cidr& prefix) const noexcept {
    const ip_address& a = prefix.address();
    if (a.is_v4()) {
      const auto n = v4_.exact(detail::key_of_v4(a), prefix.length());
      return n == v4_.npos ? nullptr : &v4_.value(n);
    }
    const auto n = v6_.exact(detail::key_of_v6(a), prefix.length());
    return n == v6_.npos ? nullptr : &v6_.value(n);
  }

  // The number of prefixes, both families.
  std::size_t size() const noexcept { return v4_.size() + v6_.size(); }
  bool empty() const noexcept { return size() == 0; }
  void clear() noexcept {
    v4_.clear();
    v6_.clear();
  }

 private:
  detail::prefix_trie<std::uint32_t, Value> v4_;
  detail::prefix_trie<detail::key128, Value> v6_;
};

// What an access_list rule does with the addresses it matches.
enum class acl_action : std::uint8_t { allow, deny };

constexpr std::string_view to_string(acl_action a) noexcept {
  return a == acl_action::allow ? "allow" : "deny";
}

// Allow and deny rules by prefix, as a proxy's --allow/--deny options give them. The longest
// matching rule decides, so "deny 10.0.0.0/8, allow 10.1.0.0/16" lets 10.1.2.3 in and keeps
// 10.2.3.4 out. An address no rule matches gets the default action: allow when the list has
// no allow rules (a pure deny list), deny as soon as it has one ("--allow given means only
// those are allowed"), unless set_default_action() fixed it.
// Thread safety: thread-compatible, as cidr_table: concurrent allows() on a list that nobody
// modifies meanwhile is safe.
// Complexity: allows() is one cidr_table::find().
class access_list {
 public:
  // Adds a rule. Adding a rule that is present with the same action does nothing; with the
  // other action it is an error (errc::already_exists): "--allow 10.0.0.0/8 --deny
  // 10.0.0.0/8" is a mistake to report, not a tie to break silently.
  result<void> add(const cidr& prefix, acl_action action) {
    if (const acl_action* present = rules_.find_exact(prefix)) {
      if (*present == action) return {};
      return make_error(errc::already_exists,
                        "access list: " + prefix.to_string() + " is already " +
                            (*present == acl_action::allow ? "allowed" : "denied") +
                            "; remove that rule before adding '" + std::string(to_string(action)) +
                            " " + prefix.to_string() + "'");
    }
    auto r = rules_.insert(prefix, action);
    if (r && action == acl_action::allow) ++allow_rules_;
    return r;
  }

  // Parses `prefix_text` as cidr::parse does and adds the rule.
  result<void> add(std::string_view prefix_text, acl_action action) {
    auto p = cidr::parse(prefix_text);
    if (!p) return make_error(p.error().code, "access list: " + p.error().message);
    return add(*p, action);
  }

  // Removes the rule for exactly `prefix`. Returns whether there was one.
  bool remove(const cidr& prefix) {
    const acl_action* present = rules_.find_exact(prefix);
    if (present == nullptr) return false;
    if (*present == acl_action::allow) --allow_rules_;
    return rules_.erase(prefix);
  }

  // Fixes the action for addresses that no rule matches, overriding the rule above.
  void set_default_action(acl_action a) noexcept { default_ = a; }

  // The action for addresses that no rule matches.
  acl_action default_action() const noexcept {
    if (default_) return *default_;
    return allow_rules_ > 0 ? acl_action::deny : acl_action::allow;
  }

  // The action of the longest rule matching `a`, else the default action.
  acl_action decide(const ip_address& a) const noexcept {
    const acl_action* r = rules_.find(a);
    return r != nullptr ? *r : default_action();
  }
  bool allows(const ip_address& a) const noexcept { return decide(a) == acl_action::allow; }

  // The rule that decides for `a`, if one does (for logs: "denied by 10.0.0.0/8").
  std::optional<cidr> rule_for(const ip_address& a) const noexcept { return rules_.match(a); }

  std::size_t size() const noexcept { return rules_.size(); }

 private:
  cidr_table<acl_action> rules_;
  std::size_t allow_rules_ = 0;
  std::optional<acl_action> default_;
};

// ---------------------------------------------------------------------------------------
// Implementation

inline result<cidr> cidr::checked(const ip_address& network, int length, std::string_view text) {
  const auto shown = [&] {
    return text.empty() ? network.to_string() + '/' + std::to_string(length) : quote(text);
  };
  const int width = network.is_v4() ? 32 : 128;
  if (length < 0 || length > width) {
    return make_error(errc::out_of_range, "CIDR prefix " + shown() + " has length " +
                                              std::to_string(length) + ", more than the " +
                                              std::to_string(width) + " bits of an " +
                                              (network.is_v4() ? "IPv4" : "IPv6") + " address");
  }
  const ip_address masked =
      network.is_v4() ? detail::address_of(detail::key_mask(detail::key_of_v4(network), length))
                      : detail::address_of(detail::key_mask(detail::key_of_v6(network), length));
  if (masked != network) {
    return make_error(errc::invalid_argument,
                      "CIDR prefix " + shown() +
                          " has host bits set (address bits past the first " +
                          std::to_string(length) + "); did you mean " + masked.to_string() + '/' +
                          std::to_string(length) + "?");
  }
  if (length >= 96 && network.is_v4_mapped()) {
    return cidr(network.unmapped(), length - 96);
  }
  return cidr(network, length);
}

inline result<cidr> cidr::make(const ip_address& network, int length) {
  return checked(network, length, {});
}

inline result<cidr> cidr::parse(std::string_view text) {
  if (text.empty()) return make_error(errc::invalid_argument, "empty CIDR prefix");
  const auto slash = text.find('/');
  auto a = ip_address::parse(text.substr(0, slash));
  if (!a) {
    return make_error(errc::invalid_argument,
                      "CIDR prefix " + quote(text) + ": " + a.error().message);
  }
  const int width = a->is_v4() ? 32 : 128;
  if (slash == std::string_view::npos) return checked(*a, width, text);
  const std::string_view len = text.substr(slash + 1);
  if (len.empty()) {
    return make_error(errc::invalid_argument,
                      "CIDR prefix " + quote(text) + " has no length after the '/'");
  }
  if (len.find_first_not_of("0123456789") != std::string_view::npos) {
    return make_error(errc::invalid_argument, "CIDR prefix " + quote(text) + " has length " +
                                                  quote(len) + "; want a decimal number 0.." +
                                                  std::to_string(width));
  }
  if (len.size() > 1 && len[0] == '0') {
    return make_error(
        errc::invalid_argument,
        "CIDR prefix " + quote(text) + " has a leading zero in its length " + quote(len));
  }
  const auto n = parse_decimal(len, static_cast<std::uint64_t>(width));
  if (!n) {
    return make_error(errc::out_of_range, "CIDR prefix " + quote(text) + " has length " +
                                              quote(len) + ", more than the " +
                                              std::to_string(width) + " bits of an " +
                                              (width == 32 ? "IPv4" : "IPv6") + " address");
  }
  return checked(*a, static_cast<int>(*n), text);
}

}  // namespace lbkit
