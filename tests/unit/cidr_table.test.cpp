// SPDX-License-Identifier: MIT
// cidr, cidr_table and access_list: strict prefix parsing, longest-prefix match in both
// families, IPv4-mapped addresses, erase, a randomized comparison with a brute-force reference,
// and allow/deny rules.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/net/cidr_table.hpp>

#include "../support/allocation_counter.hpp"

using lbkit::acl_action;
using lbkit::cidr;
using lbkit::cidr_table;
using lbkit::errc;
using lbkit::ip_address;

namespace {

ip_address ip(std::string_view s) {
  auto r = ip_address::parse(s);
  if (!r) FAIL("ip_address::parse(\"" << std::string(s) << "\") failed: " << r.error().message);
  return *r;
}

cidr pfx(std::string_view s) {
  auto r = cidr::parse(s);
  if (!r) FAIL("cidr::parse(\"" << std::string(s) << "\") failed: " << r.error().message);
  return *r;
}

lbkit::error parse_error(std::string_view s) {
  auto r = cidr::parse(s);
  if (r) FAIL("cidr::parse(\"" << std::string(s) << "\") accepted it as " << r->to_string());
  return r.error();
}

template <class V>
std::optional<V> lookup(const cidr_table<V>& t, std::string_view a) {
  const V* v = t.find(ip(a));
  return v ? std::optional<V>(*v) : std::nullopt;
}

}  // namespace

TEST_CASE("cidr::parse accepts prefixes and bare addresses") {
  const cidr a = pfx("10.0.0.0/8");
  CHECK(a.address() == ip("10.0.0.0"));
  CHECK(a.length() == 8);
  CHECK(a.to_string() == "10.0.0.0/8");

  CHECK(pfx("0.0.0.0/0").length() == 0);
  CHECK(pfx("192.0.2.1").length() == 32);
  CHECK(pfx("192.0.2.1") == pfx("192.0.2.1/32"));
  CHECK(pfx("2001:db8::/32").to_string() == "2001:db8::/32");
  CHECK(pfx("2001:DB8:0::/32") == pfx("2001:db8::/32"));
  CHECK(pfx("2001:db8::1").length() == 128);
  CHECK(pfx("::/0").address() == ip("::"));
  CHECK(pfx("2001:db8::8000:0/97").length() == 97);

  // to_string() round-trips.
  for (const char* s : {"10.0.0.0/8", "172.16.0.0/12", "192.0.2.128/25", "0.0.0.0/0",
                        "2001:db8::/32", "fe80::/10", "::/0", "2001:db8::1/128"}) {
    CHECK(pfx(pfx(s).to_string()) == pfx(s));
  }

  // make() applies the same checks.
  CHECK(cidr::make(ip("10.1.0.0"), 16)->to_string() == "10.1.0.0/16");
  CHECK_FALSE(cidr::make(ip("10.1.0.0"), 8).has_value());
  CHECK(cidr::make(ip("10.1.0.0"), 8).error().message.find("10.0.0.0/8") != std::string::npos);
  CHECK(cidr::make(ip("10.0.0.0"), 33).error().code == errc::out_of_range);
  CHECK(cidr::make(ip("10.0.0.0"), -1).error().code == errc::out_of_range);
  CHECK(cidr::host(ip("192.0.2.7")) == pfx("192.0.2.7/32"));
}

TEST_CASE("cidr::parse rejects bad prefixes and says why") {
  struct bad_case {
    const char* text;
    errc code;
    const char* reason;
  };
  const bad_case cases[] = {
      {"10.0.0.1/8", errc::invalid_argument, "host bits set"},
      {"10.0.0.1/8", errc::invalid_argument, "did you mean 10.0.0.0/8?"},
      {"192.168.1.77/24", errc::invalid_argument, "did you mean 192.168.1.0/24?"},
      {"2001:db8::1/32", errc::invalid_argument, "did you mean 2001:db8::/32?"},
      {"10.0.0.0/33", errc::out_of_range, "more than the 32 bits of an IPv4 address"},
      {"::/129", errc::out_of_range, "more than the 128 bits of an IPv6 address"},
      {"10.0.0.0/99999999999999999999999", errc::out_of_range, "more than the 32 bits"},
      {"10.0.0.0/", errc::invalid_argument, "no length after the '/'"},
      {"10.0.0.0/08", errc::invalid_argument, "leading zero"},
      {"10.0.0.0/8x", errc::invalid_argument, "want a decimal number 0..32"},
      {"10.0.0.0/-1", errc::invalid_argument, "want a decimal number 0..32"},
      {"10.0.0.0/+8", errc::invalid_argument, "want a decimal number"},
      {"10.0.0.0/ 8", errc::invalid_argument, "want a decimal number"},
      {"10.0.0.0/8/8", errc::invalid_argument, "want a decimal number"},
      {"10.0.0/8", errc::invalid_argument, "four dotted parts"},
      {"010.0.0.0/8", errc::invalid_argument, "leading zero"},
      {"/8", errc::invalid_argument, "empty IP address"},
      {"", errc::invalid_argument, "empty CIDR prefix"},
      {"example.com/8", errc::invalid_argument, "CIDR prefix 'example.com/8'"},
      {"fe80::1%eth0/64", errc::invalid_argument, "zone id"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const auto e = parse_error(c.text);
    CHECK(e.code == c.code);
    CHECK_MESSAGE(e.message.find(c.reason) != std::string::npos, e.message);
  }
  // Untrusted text is quoted safely in the message.
  CHECK(parse_error("10.0.0.0/\n8").message.find("\\x0a") != std::string::npos);
}

TEST_CASE("cidr::contains keeps the families apart, except for IPv4-mapped addresses") {
  const cidr ten = pfx("10.0.0.0/8");
  CHECK(ten.contains(ip("10.255.0.1")));
  CHECK_FALSE(ten.contains(ip("11.0.0.0")));
  CHECK(ten.contains(ip("::ffff:10.1.2.3")));
  CHECK_FALSE(ten.contains(ip("::a01:203")));  // ::10.1.2.3, IPv4-compatible: not mapped
  CHECK_FALSE(pfx("::/0").contains(ip("10.0.0.1")));
  CHECK_FALSE(pfx("::/0").contains(ip("::ffff:10.0.0.1")));
  CHECK(pfx("::/0").contains(ip("2001:db8::1")));
  CHECK_FALSE(pfx("0.0.0.0/0").contains(ip("2001:db8::1")));
  CHECK(pfx("0.0.0.0/0").contains(ip("::ffff:192.0.2.1")));
  CHECK(pfx("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
  CHECK_FALSE(pfx("2001:db8::/32").contains(ip("2001:db9::")));
}

TEST_CASE("a prefix inside ::ffff:0:0/96 is the IPv4 prefix it names") {
  CHECK(pfx("::ffff:10.0.0.0/104") == pfx("10.0.0.0/8"));
  CHECK(pfx("::ffff:0:0/96") == pfx("0.0.0.0/0"));
  CHECK(pfx("::ffff:192.0.2.1") == pfx("192.0.2.1/32"));
  // Wider than the mapped block: stays IPv6, and mapped addresses are looked up as IPv4.
  CHECK(pfx("::fffe:0:0/95").address().is_v6());
  CHECK_FALSE(pfx("::fffe:0:0/95").contains(ip("::ffff:10.0.0.1")));
  CHECK(parse_error("::ffff:10.0.0.1/104").message.find("did you mean ::ffff:10.0.0.0/104?") !=
        std::string::npos);
  CHECK(cidr::host(ip("::ffff:10.0.0.1")) == pfx("10.0.0.1/32"));
}

TEST_CASE("cidr_table: longest match among nested IPv4 prefixes") {
  cidr_table<std::string> t;
  CHECK(t.empty());
  CHECK(t.find(ip("10.1.2.3")) == nullptr);
  CHECK_FALSE(t.match(ip("10.1.2.3")).has_value());

  REQUIRE(t.insert("10.1.2.3/32", "host"));
  REQUIRE(t.insert("10.0.0.0/8", "ten"));
  REQUIRE(t.insert(pfx("0.0.0.0/0"), "any"));
  REQUIRE(t.insert("10.1.0.0/16", "ten-one"));
  CHECK(t.size() == 4);

  CHECK(lookup(t, "10.1.2.3") == "host");
  CHECK(lookup(t, "10.1.2.4") == "ten-one");
  CHECK(lookup(t, "10.1.255.255") == "ten-one");
  CHECK(lookup(t, "10.2.0.0") == "ten");
  CHECK(lookup(t, "10.255.255.255") == "ten");
  CHECK(lookup(t, "11.0.0.0") == "any");
  CHECK(lookup(t, "9.255.255.255") == "any");
  CHECK(lookup(t, "255.255.255.255") == "any");
  CHECK(t.match(ip("10.1.9.9")) == pfx("10.1.0.0/16"));
  CHECK(t.match(ip("10.1.2.3")) == pfx("10.1.2.3/32"));
  CHECK(t.match(ip("8.8.8.8")) == pfx("0.0.0.0/0"));

  // IPv6 addresses never match IPv4 prefixes.
  CHECK(t.find(ip("2001:db8::1")) == nullptr);
  CHECK(t.find(ip("::")) == nullptr);
  CHECK(t.find(ip("::a01:203")) == nullptr);

  // The exact lookup sees only the prefix itself.
  REQUIRE(t.find_exact(pfx("10.0.0.0/8")) != nullptr);
  CHECK(*t.find_exact(pfx("10.0.0.0/8")) == "ten");
  CHECK(t.find_exact(pfx("10.0.0.0/9")) == nullptr);
  CHECK(t.find_exact(pfx("10.1.2.3/32")) != nullptr);

  // insert() replaces the value of a present prefix.
  REQUIRE(t.insert("10.0.0.0/8", "TEN"));
  CHECK(t.size() == 4);
  CHECK(lookup(t, "10.2.0.0") == "TEN");

  // A bad prefix is reported, not inserted.
  const auto r = t.insert("10.0.0.1/8", "bad");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("did you mean 10.0.0.0/8?") != std::string::npos);
  CHECK(t.size() == 4);
}

TEST_CASE("cidr_table: longest match among nested IPv6 prefixes") {
  cidr_table<int> t;
  REQUIRE(t.insert("2001:db8:1:2::/64", 64));
  REQUIRE(t.insert("::/0", 0));
  REQUIRE(t.insert("2001:db8:1:2::42/128", 128));
  REQUIRE(t.insert("2001:db8::/32", 32));
  REQUIRE(t.insert("2001:db8:1:2:8000::/65", 65));

  CHECK(lookup(t, "2001:db8:1:2::42") == 128);
  CHECK(lookup(t, "2001:db8:1:2::43") == 64);
  CHECK(lookup(t, "2001:db8:1:2:7fff:ffff:ffff:ffff") == 64);
  CHECK(lookup(t, "2001:db8:1:2:8000::") == 65);
  CHECK(lookup(t, "2001:db8:1:3::") == 32);
  CHECK(lookup(t, "2001:db8:ffff::") == 32);
  CHECK(lookup(t, "2001:db9::") == 0);
  CHECK(lookup(t, "::1") == 0);
  CHECK(t.match(ip("2001:db8:1:2::1")) == pfx("2001:db8:1:2::/64"));

  // IPv4 addresses, mapped ones included, never match IPv6 prefixes, ::/0 included.
  CHECK(t.find(ip("10.0.0.1")) == nullptr);
  CHECK(t.find(ip("::ffff:10.0.0.1")) == nullptr);
  CHECK_FALSE(t.match(ip("::ffff:10.0.0.1")).has_value());
}

TEST_CASE("cidr_table: IPv4-mapped addresses are looked up as IPv4") {
  cidr_table<std::string> t;
  REQUIRE(t.insert("10.0.0.0/8", "v4"));
  REQUIRE(t.insert("::/0", "v6-any"));
  CHECK(lookup(t, "::ffff:10.1.2.3") == "v4");
  CHECK(t.match(ip("::ffff:10.1.2.3")) == pfx("10.0.0.0/8"));
  CHECK(lookup(t, "::ffff:11.1.2.3") == std::nullopt);  // not "v6-any"
  CHECK(lookup(t, "::a01:203") == "v6-any");            // IPv4-compatible is plain IPv6

  // A mapped prefix is stored as IPv4, and so matches plain IPv4 addresses too.
  REQUIRE(t.insert("::ffff:192.0.2.0/120", "mapped"));
  CHECK(t.find_exact(pfx("192.0.2.0/24")) != nullptr);
  CHECK(lookup(t, "192.0.2.9") == "mapped");
  CHECK(lookup(t, "::ffff:192.0.2.9") == "mapped");
  CHECK(t.erase(pfx("192.0.2.0/24")));
  CHECK(lookup(t, "192.0.2.9") == std::nullopt);
}

TEST_CASE("cidr_table: erase removes exactly one prefix") {
  cidr_table<int> t;
  const std::pair<const char*, int> prefixes[] = {
      {"0.0.0.0/0", 0},    {"10.0.0.0/8", 8}, {"10.1.0.0/16", 16},    {"10.1.2.3/32", 32},
      {"10.128.0.0/9", 9}, {"::/0", 100},     {"2001:db8::/32", 132},
  };
  for (const auto& [p, v] : prefixes) {
    REQUIRE(t.insert(p, v));
  }
  CHECK(t.size() == 7);

  CHECK_FALSE(t.erase(pfx("10.0.0.0/9")));  // not present: a branch point at most
  CHECK_FALSE(t.erase(pfx("10.1.2.4/32")));
  CHECK_FALSE(t.erase(pfx("2001:db8::/33")));
  CHECK(t.size() == 7);

  CHECK(t.erase(pfx("10.1.0.0/16")));  // a prefix with a child
  CHECK_FALSE(t.erase(pfx("10.1.0.0/16")));
  CHECK(t.size() == 6);
  CHECK(lookup(t, "10.1.2.3") == 32);
  CHECK(lookup(t, "10.1.2.4") == 8);

  CHECK(t.erase(pfx("10.0.0.0/8")));  // a prefix with two children
  CHECK(lookup(t, "10.1.2.3") == 32);
  CHECK(lookup(t, "10.200.0.0") == 9);
  CHECK(lookup(t, "10.1.2.4") == 0);

  CHECK(t.erase(pfx("10.1.2.3/32")));  // a leaf
  CHECK(t.erase(pfx("10.128.0.0/9")));
  CHECK(lookup(t, "10.1.2.3") == 0);
  CHECK(t.erase(pfx("0.0.0.0/0")));
  CHECK(t.find(ip("10.1.2.3")) == nullptr);
  CHECK(lookup(t, "2001:db8::5") == 132);
  CHECK(t.size() == 2);

  CHECK(t.erase(pfx("::/0")));
  CHECK(t.erase(pfx("2001:db8::/32")));
  CHECK(t.empty());
  CHECK(t.find(ip("2001:db8::5")) == nullptr);

  // Usable again after emptying.
  REQUIRE(t.insert("10.0.0.0/8", 1));
  CHECK(lookup(t, "10.9.9.9") == 1);
  t.clear();
  CHECK(t.empty());
  CHECK(t.find(ip("10.9.9.9")) == nullptr);
}

namespace {

// The brute-force reference: every prefix checked, the longest containing one wins.
struct reference {
  std::map<cidr, int> prefixes;

  // The longest prefix containing `a`, and how many prefixes contain it.
  std::optional<std::pair<cidr, int>> find(const ip_address& a, int* containing) const {
    std::optional<std::pair<cidr, int>> best;
    *containing = 0;
    for (const auto& [p, v] : prefixes) {
      if (!p.contains(a)) continue;
      ++*containing;
      if (!best || p.length() > best->first.length()) best = {p, v};
    }
    return best;
  }
};

// Random addresses clustered around a few bases, so that prefixes nest and share long runs of
// leading bits (uniform random prefixes would almost never overlap).
class address_source {
 public:
  explicit address_source(std::uint64_t seed) : rng_(seed) {
    for (int i = 0; i < 8; ++i) {
      std::array<std::uint8_t, 16> b{};
      for (auto& x : b) x = static_cast<std::uint8_t>(rng_());
      bases_.push_back(b);
    }
  }

  // An address of the family: a base with its bits from a random position on randomised.
  ip_address next(bool v6) {
    auto b = bases_[rng_() % bases_.size()];
    const int width = v6 ? 128 : 32;
    const int keep = static_cast<int>(rng_() % static_cast<unsigned>(width + 1));
    for (int bit = keep; bit < width; ++bit) {
      if (rng_() & 1) {
        b[static_cast<std::size_t>(bit / 8)] ^= static_cast<std::uint8_t>(0x80 >> (bit % 8));
      }
    }
    if (!v6) return ip_address::v4({b[0], b[1], b[2], b[3]});
    return ip_address::v6(b);
  }

  cidr next_prefix(bool v6) {
    const ip_address a = next(v6);
    const int width = v6 ? 128 : 32;
    // Mostly short and middle lengths, sometimes full hosts.
    const int len =
        rng_() % 8 == 0 ? width : static_cast<int>(rng_() % static_cast<unsigned>(width + 1));
    // Mask by building the prefix of the masked address.
    auto bytes = a.bytes();
    std::array<std::uint8_t, 16> m{};
    std::copy(bytes.begin(), bytes.end(), m.begin());
    for (int bit = len; bit < width; ++bit) {
      m[static_cast<std::size_t>(bit / 8)] &= static_cast<std::uint8_t>(~(0x80 >> (bit % 8)));
    }
    const ip_address masked = v6 ? ip_address::v6(m) : ip_address::v4({m[0], m[1], m[2], m[3]});
    auto p = cidr::make(masked, len);
    REQUIRE(p.has_value());
    return *p;
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
  std::vector<std::array<std::uint8_t, 16>> bases_;
};

void check_against(const cidr_table<int>& t, const reference& ref, address_source& src,
                   int lookups) {
  REQUIRE(t.size() == ref.prefixes.size());
  int nested = 0;  // lookups that more than one prefix matches: the test has teeth
  for (int i = 0; i < lookups; ++i) {
    const bool v6 = (src.rng()() & 1) != 0;
    ip_address a = src.next(v6);
    if (!v6 && src.rng()() % 4 == 0) {  // as a dual-stack socket reports it
      const auto b = a.bytes();
      a = ip_address::v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3]});
    }
    int containing = 0;
    const auto want = ref.find(a, &containing);
    if (containing > 1) ++nested;
    const int* got = t.find(a);
    const auto got_prefix = t.match(a);
    if (!want) {
      CHECK_MESSAGE(got == nullptr, a.to_string());
      CHECK_FALSE(got_prefix.has_value());
      continue;
    }
    REQUIRE_MESSAGE(got != nullptr, a.to_string());
    CHECK_MESSAGE(*got == want->second, a.to_string());
    REQUIRE(got_prefix.has_value());
    CHECK_MESSAGE(*got_prefix == want->first, a.to_string()
                                                  << " matched " << got_prefix->to_string()
                                                  << ", want " << want->first.to_string());
  }
  if (ref.prefixes.size() > 100) CHECK(nested > lookups / 4);
  for (const auto& [p, v] : ref.prefixes) {
    const int* e = t.find_exact(p);
    REQUIRE(e != nullptr);
    CHECK(*e == v);
  }
}

}  // namespace

TEST_CASE("cidr_table agrees with a brute-force reference (randomized, fixed seed)") {
  address_source src(20240601);
  cidr_table<int> t;
  reference ref;

  // Thousands of prefixes of both families, some inserted twice with a new value.
  for (int i = 0; i < 3000; ++i) {
    const cidr p = src.next_prefix((i & 1) != 0);
    REQUIRE(t.insert(p, i));
    ref.prefixes[p] = i;
  }
  check_against(t, ref, src, 4000);

  // Erase about half (and some that are absent), then compare again.
  std::vector<cidr> present;
  for (const auto& [p, v] : ref.prefixes) present.push_back(p);
  std::shuffle(present.begin(), present.end(), src.rng());
  for (std::size_t i = 0; i < present.size() / 2; ++i) {
    CHECK(t.erase(present[i]));
    ref.prefixes.erase(present[i]);
  }
  for (int i = 0; i < 500; ++i) {
    const cidr p = src.next_prefix((i & 1) != 0);
    CHECK(t.erase(p) == (ref.prefixes.erase(p) == 1));
  }
  check_against(t, ref, src, 4000);

  // Insert more into the thinned trie, which reuses freed nodes.
  for (int i = 0; i < 1000; ++i) {
    const cidr p = src.next_prefix((i & 1) != 0);
    REQUIRE(t.insert(p, 10000 + i));
    ref.prefixes[p] = 10000 + i;
  }
  check_against(t, ref, src, 4000);

  // Erase everything.
  for (const auto& [p, v] : ref.prefixes) CHECK(t.erase(p));
  ref.prefixes.clear();
  CHECK(t.empty());
  check_against(t, ref, src, 200);
}

TEST_CASE("cidr_table::find and access_list::allows do not allocate") {
  cidr_table<std::string> t;
  lbkit::access_list acl;
  for (int i = 0; i < 256; ++i) {
    const auto b = static_cast<std::uint8_t>(i);
    REQUIRE(t.insert(*cidr::make(ip_address::v4({10, b, 0, 0}), 16), "a long value, heap-held"));
    REQUIRE(t.insert(*cidr::make(ip_address::v6({0x20, 0x01, 0x0d, 0xb8, b}), 40), "v6"));
    REQUIRE(acl.add(*cidr::make(ip_address::v4({10, b, 0, 0}), 16),
                    i % 2 ? acl_action::allow : acl_action::deny));
  }
  std::vector<ip_address> probes;
  for (int i = 0; i < 1000; ++i) {
    const auto b = static_cast<std::uint8_t>(i);
    probes.push_back(ip_address::v4({10, b, b, 1}));
    probes.push_back(ip_address::v6({0x20, 0x01, 0x0d, 0xb8, b, b}));
    probes.push_back(ip_address::v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, b, 0, 1}));
  }
  std::size_t found = 0;
  const std::size_t before = lbkit::test::allocations.load();
  for (const auto& a : probes) {
    found += t.find(a) != nullptr;
    found += t.match(a).has_value();
    found += acl.allows(a);
  }
  if (lbkit::test::counting_allocations) CHECK(lbkit::test::allocations.load() == before);
  CHECK(found > 0);
}

TEST_CASE("cidr_table is copyable and the copy is independent") {
  cidr_table<int> a;
  REQUIRE(a.insert("10.0.0.0/8", 1));
  cidr_table<int> b = a;
  REQUIRE(b.insert("10.1.0.0/16", 2));
  CHECK(lookup(a, "10.1.0.1") == 1);
  CHECK(lookup(b, "10.1.0.1") == 2);
}

TEST_CASE("access_list: a deny list allows everything else") {
  lbkit::access_list acl;
  CHECK(acl.default_action() == acl_action::allow);
  CHECK(acl.allows(ip("192.0.2.1")));

  REQUIRE(acl.add("10.0.0.0/8", acl_action::deny));
  REQUIRE(acl.add("2001:db8::/32", acl_action::deny));
  CHECK(acl.default_action() == acl_action::allow);
  CHECK_FALSE(acl.allows(ip("10.1.2.3")));
  CHECK_FALSE(acl.allows(ip("::ffff:10.1.2.3")));  // an IPv4 client on a dual-stack socket
  CHECK_FALSE(acl.allows(ip("2001:db8::1")));
  CHECK(acl.allows(ip("11.0.0.1")));
  CHECK(acl.allows(ip("2001:db9::1")));
  CHECK(acl.rule_for(ip("10.1.2.3")) == pfx("10.0.0.0/8"));
  CHECK_FALSE(acl.rule_for(ip("11.0.0.1")).has_value());
}

TEST_CASE("access_list: --allow given means only those are allowed") {
  lbkit::access_list acl;
  REQUIRE(acl.add("10.0.0.0/8", acl_action::allow));
  CHECK(acl.default_action() == acl_action::deny);
  CHECK(acl.allows(ip("10.200.0.1")));
  CHECK_FALSE(acl.allows(ip("11.0.0.1")));
  CHECK_FALSE(acl.allows(ip("2001:db8::1")));

  // The longest rule wins: a hole in the allowed network, and an island in the hole.
  REQUIRE(acl.add("10.66.0.0/16", acl_action::deny));
  REQUIRE(acl.add("10.66.6.0/24", acl_action::allow));
  CHECK(acl.allows(ip("10.65.0.1")));
  CHECK_FALSE(acl.allows(ip("10.66.0.1")));
  CHECK(acl.allows(ip("10.66.6.6")));
  CHECK(acl.decide(ip("10.66.0.1")) == acl_action::deny);

  // Removing the allow rules makes it a deny list again.
  CHECK(acl.remove(pfx("10.0.0.0/8")));
  CHECK(acl.default_action() == acl_action::deny);  // 10.66.6.0/24 still allows
  CHECK(acl.remove(pfx("10.66.6.0/24")));
  CHECK_FALSE(acl.remove(pfx("10.66.6.0/24")));
  CHECK(acl.default_action() == acl_action::allow);
  CHECK(acl.allows(ip("11.0.0.1")));
  CHECK_FALSE(acl.allows(ip("10.66.0.1")));
  CHECK(acl.size() == 1);
}

TEST_CASE("access_list: conflicting and repeated rules, explicit default, bad text") {
  lbkit::access_list acl;
  REQUIRE(acl.add("10.0.0.0/8", acl_action::allow));
  CHECK(acl.add("10.0.0.0/8", acl_action::allow).has_value());  // repeated: no change
  CHECK(acl.size() == 1);

  const auto conflict = acl.add("10.0.0.0/8", acl_action::deny);
  REQUIRE_FALSE(conflict.has_value());
  CHECK(conflict.error().code == errc::already_exists);
  CHECK(conflict.error().message.find("10.0.0.0/8 is already allowed") != std::string::npos);
  CHECK(acl.allows(ip("10.0.0.1")));

  // Removing the only allow rule after a repeated add leaves a pure deny list.
  CHECK(acl.remove(pfx("10.0.0.0/8")));
  CHECK(acl.default_action() == acl_action::allow);

  acl.set_default_action(acl_action::deny);
  CHECK(acl.default_action() == acl_action::deny);
  CHECK_FALSE(acl.allows(ip("192.0.2.1")));

  const auto bad = acl.add("10.0.0.1/8", acl_action::deny);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("access list: ") == 0);
  CHECK(bad.error().message.find("did you mean 10.0.0.0/8?") != std::string::npos);
  CHECK(acl.size() == 0);
}
