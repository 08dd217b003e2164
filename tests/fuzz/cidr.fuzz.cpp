// SPDX-License-Identifier: MIT
// Fuzz target for lbkit/net/cidr_table.hpp: cidr::parse and cidr::make (the text of --allow,
// --deny and trusted-proxy lists), and the longest-prefix match of cidr_table and
// access_list. The input is a prefix's text up to the first '\n', then binary operations on
// a table (one byte of kind and length, 4 or 16 address bytes each). Properties:
//   1. cidr::parse agrees with a reference written from its contract (address, then
//      optionally '/' and a decimal length without a leading zero, at most the family's width,
//      no host bits set); an accepted prefix prints as canonical text that parses back to it;
//      a rejection has a short message without control characters.
//   2. contains() agrees with a bitwise comparison of the first length bits on addresses
//      derived from the prefix (its network, its last address, the first address past it,
//      each IPv4 one also in IPv4-mapped form) and on addresses from the input.
//   3. cidr_table insert, erase, find, match, find_exact and size agree with a brute-force
//      list of prefixes, and an access_list fed the same prefixes as rules decides as the
//      longest matching rule (or its default) does.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <lbkit/net/cidr_table.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message

using lbkit::cidr;
using lbkit::ip_address;

// 128-bit integers for the reference (__extension__: -Wpedantic knows them not).
__extension__ typedef unsigned __int128 u128;

// An address as the reference sees it: its family and its bits, left-aligned in 128 (an IPv4
// address fills the top 32), so that "the first len bits" is one shift for either family.
struct bits {
  bool v4;
  u128 value;
};

// `a`'s bits; with `unmap`, an IPv4-mapped address is taken as the IPv4 address it carries.
bits bits_of(const ip_address& a, bool unmap = true) {
  const ip_address u = unmap ? a.unmapped() : a;
  u128 v = 0;
  for (const std::uint8_t b : u.bytes()) v = v << 8 | b;
  if (u.is_v4()) v <<= 96;
  return {u.is_v4(), v};
}

// Whether `a` is of `net`'s family and has its first `len` bits.
bool reference_contains(const bits& net, int len, const bits& a) {
  if (net.v4 != a.v4) return false;
  return len == 0 || ((net.value ^ a.value) >> (128 - len)) == 0;
}
bool reference_contains(const cidr& c, const ip_address& a) {
  return reference_contains(bits_of(c.address(), false), c.length(), bits_of(a));
}

ip_address mapped(const ip_address& v4) {
  std::array<std::uint8_t, 16> b{};
  b[10] = b[11] = 0xff;
  std::copy(v4.bytes().begin(), v4.bytes().end(), b.begin() + 12);
  return ip_address::v6(b);
}

// `a` with every bit from `from` on set (`ones`) or cleared.
ip_address fill_from(const ip_address& a, int from, bool ones) {
  std::array<std::uint8_t, 16> b{};
  std::copy(a.bytes().begin(), a.bytes().end(), b.begin());
  const int width = a.is_v4() ? 32 : 128;
  for (int i = from; i < width; ++i) {
    const auto m = static_cast<std::uint8_t>(0x80 >> (i % 8));
    b[static_cast<std::size_t>(i / 8)] = static_cast<std::uint8_t>(
        ones ? b[static_cast<std::size_t>(i / 8)] | m : b[static_cast<std::size_t>(i / 8)] & ~m);
  }
  if (a.is_v4()) return ip_address::v4({b[0], b[1], b[2], b[3]});
  return ip_address::v6(b);
}

// The address after `a` (wrapping), as an address just past a prefix.
ip_address next(const ip_address& a) {
  std::array<std::uint8_t, 16> b{};
  std::copy(a.bytes().begin(), a.bytes().end(), b.begin());
  for (auto i = a.bytes().size(); i-- > 0;) {
    if (++b[i] != 0) break;
  }
  if (a.is_v4()) return ip_address::v4({b[0], b[1], b[2], b[3]});
  return ip_address::v6(b);
}

std::vector<ip_address> probes_of(const cidr& c) {
  const ip_address last = fill_from(c.address(), c.length(), true);
  std::vector<ip_address> out{c.address(), last, next(last)};
  if (c.address().is_v4()) {
    for (std::size_t i = 0, n = out.size(); i < n; ++i) out.push_back(mapped(out[i]));
  }
  return out;
}

void check_contains(const cidr& c, const ip_address& a) {
  if (c.contains(a) != reference_contains(c, a)) {
    std::fprintf(stderr, "%s contains %s: %d\n", c.to_string().c_str(), a.to_string().c_str(),
                 c.contains(a));
    fail("contains agrees with the bitwise reference", __LINE__);
  }
}

// cidr::parse's contract, written out: nothing when it should refuse `text`.
std::optional<cidr> reference_parse(std::string_view text) {
  const auto slash = text.find('/');
  const auto a = ip_address::parse(text.substr(0, slash));
  if (!a) return std::nullopt;
  const int width = a->is_v4() ? 32 : 128;
  int len = width;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) {
      return std::nullopt;
    }
    len = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      len = len * 10 + (c - '0');
    }
    if (len > width) return std::nullopt;
  }
  if (fill_from(*a, len, false) != *a) return std::nullopt;  // host bits set
  auto c = cidr::make(*a, len);
  FUZZ_CHECK(c.has_value());
  return *c;
}

void check_parse(std::string_view text, std::span<const std::uint8_t> extra) {
  const auto c = cidr::parse(text);
  const auto want = reference_parse(text);
  if (c.has_value() != want.has_value()) {
    std::fprintf(stderr, "cidr::parse(%s) %s, the reference %s\n", lbkit::quote(text).c_str(),
                 c ? "accepts" : "rejects", want ? "accepts" : "rejects");
    fail("cidr::parse agrees with its contract", __LINE__);
  }
  if (!c) {
    check_message(c.error());
    return;
  }
  FUZZ_CHECK(*c == *want);
  const int width = c->address().is_v4() ? 32 : 128;
  FUZZ_CHECK(c->length() >= 0 && c->length() <= width);
  FUZZ_CHECK(fill_from(c->address(), c->length(), false) == c->address());
  FUZZ_CHECK(!c->address().is_v4_mapped() || c->length() < 96);
  const std::string shown = c->to_string();
  const auto again = cidr::parse(shown);
  FUZZ_CHECK(again && *again == *c && again->to_string() == shown);
  FUZZ_CHECK(cidr::host(c->address()).contains(c->address()));

  for (const ip_address& a : probes_of(*c)) check_contains(*c, a);
  // Addresses from the input: the prefix's family, then the other one.
  for (std::size_t at = 0; at + 16 <= extra.size() && at < 64; at += 16) {
    std::array<std::uint8_t, 16> b{};
    std::copy(extra.begin() + static_cast<std::ptrdiff_t>(at),
              extra.begin() + static_cast<std::ptrdiff_t>(at + 16), b.begin());
    check_contains(*c, ip_address::v6(b));
    check_contains(*c, ip_address::v4({b[0], b[1], b[2], b[3]}));
  }
}

struct entry {
  cidr prefix;
  int value;
  bits net;  // of prefix, kept: the brute-force lookups below compare it a lot
};

// The longest entry that contains `a`: what cidr_table::find must answer.
const entry* reference_find(const std::vector<entry>& list, const bits& a) {
  const entry* best = nullptr;
  for (const entry& e : list) {
    if (!reference_contains(e.net, e.prefix.length(), a)) continue;
    if (best == nullptr || e.prefix.length() > best->prefix.length()) best = &e;
  }
  return best;
}

struct rule {
  cidr prefix;
  lbkit::acl_action action;
  bits net;
};

void check_table(std::span<const std::uint8_t> ops) {
  lbkit::cidr_table<int> table;
  std::vector<entry> list;
  lbkit::access_list acl;
  std::vector<rule> rules;
  std::vector<ip_address> probes;
  int value = 0;

  std::size_t at = 0;
  while (at < ops.size() && list.size() < 24) {  // 24 prefixes nest deeply enough
    // Kind byte: bit 7 IPv6, bit 6 erase (else insert), bit 5 the rule's action, bit 4 a
    // length near the width; the low bits the length.
    const std::uint8_t kind = ops[at++];
    const bool v6 = (kind & 0x80) != 0;
    const int width = v6 ? 128 : 32;
    const std::size_t n = v6 ? 16 : 4;
    if (ops.size() - at < n) break;
    std::array<std::uint8_t, 16> b{};
    std::copy(ops.begin() + static_cast<std::ptrdiff_t>(at),
              ops.begin() + static_cast<std::ptrdiff_t>(at + n), b.begin());
    at += n;
    const ip_address raw = v6 ? ip_address::v6(b) : ip_address::v4({b[0], b[1], b[2], b[3]});
    const int low = kind & 0x0f;
    const int len = (kind & 0x10) != 0 ? std::max(0, width - low) : (low * width) / 15;
    probes.push_back(raw);

    // make() refuses host bits, naming the network meant, and accepts it masked.
    const ip_address net = fill_from(raw, len, false);
    if (net != raw) {
      const auto refused = cidr::make(raw, len);
      FUZZ_CHECK(!refused);
      check_message(refused.error());
    }
    const auto made = cidr::make(net, len);
    FUZZ_CHECK(made.has_value());
    const cidr p = *made;
    for (const ip_address& a : probes_of(p)) probes.push_back(a);

    const auto same =
        std::find_if(list.begin(), list.end(), [&](const entry& e) { return e.prefix == p; });
    if ((kind & 0x40) != 0) {
      const bool present = same != list.end();
      FUZZ_CHECK(table.erase(p) == present);
      if (present) list.erase(same);
    } else {
      FUZZ_CHECK(table.insert(p, value).has_value());
      if (same != list.end()) {
        same->value = value;
      } else {
        list.push_back({p, value, bits_of(p.address(), false)});
      }
      ++value;
    }
    FUZZ_CHECK(table.size() == list.size());

    const auto action = (kind & 0x20) != 0 ? lbkit::acl_action::allow : lbkit::acl_action::deny;
    const auto r = acl.add(p, action);
    const auto present = std::find_if(rules.begin(), rules.end(),
                                      [&](const struct rule& x) { return x.prefix == p; });
    if (present == rules.end()) {
      FUZZ_CHECK(r.has_value());
      rules.push_back({p, action, bits_of(p.address(), false)});
    } else if (present->action == action) {
      FUZZ_CHECK(r.has_value());
    } else {
      FUZZ_CHECK(!r && r.error().code == lbkit::errc::already_exists);
      check_message(r.error());
    }
    FUZZ_CHECK(acl.size() == rules.size());
  }

  for (const entry& e : list) {
    const int* exact = table.find_exact(e.prefix);
    FUZZ_CHECK(exact != nullptr && *exact == e.value);
  }
  const bool any_allow = std::any_of(rules.begin(), rules.end(), [](const rule& x) {
    return x.action == lbkit::acl_action::allow;
  });
  for (const ip_address& a : probes) {
    const bits ab = bits_of(a);
    const entry* want = reference_find(list, ab);
    const int* got = table.find(a);
    if ((got == nullptr) != (want == nullptr) || (got != nullptr && *got != want->value)) {
      std::fprintf(stderr, "find(%s): %s, the brute-force list: %s\n", a.to_string().c_str(),
                   got != nullptr ? std::to_string(*got).c_str() : "none",
                   want != nullptr ? want->prefix.to_string().c_str() : "none");
      fail("cidr_table::find agrees with the brute-force list", __LINE__);
    }
    const auto m = table.match(a);
    FUZZ_CHECK(m.has_value() == (want != nullptr));
    FUZZ_CHECK(!m || *m == want->prefix);

    const rule* decides = nullptr;
    for (const rule& x : rules) {
      if (!reference_contains(x.net, x.prefix.length(), ab)) continue;
      if (decides == nullptr || x.prefix.length() > decides->prefix.length()) decides = &x;
    }
    const auto fallback = any_allow ? lbkit::acl_action::deny : lbkit::acl_action::allow;
    FUZZ_CHECK(acl.decide(a) == (decides != nullptr ? decides->action : fallback));
    const auto rule_for = acl.rule_for(a);
    FUZZ_CHECK(rule_for.has_value() == (decides != nullptr));
    FUZZ_CHECK(!rule_for || *rule_for == decides->prefix);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto nl = in.find('\n');
  const std::string_view text = in.substr(0, nl);
  const std::span<const std::uint8_t> rest =
      nl == std::string_view::npos ? std::span<const std::uint8_t>()
                                   : std::span<const std::uint8_t>(data + nl + 1, size - nl - 1);
  check_parse(text, rest);
  check_table(rest);
  return 0;
}
