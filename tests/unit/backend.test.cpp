// SPDX-License-Identifier: MIT
// backend and validate(backend): every documented limit, and error messages safe to log.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include <lbkit/backend.hpp>
#include <lbkit/endpoint.hpp>

using lbkit::backend;
using lbkit::endpoint;
using lbkit::errc;
using lbkit::ip_address;

namespace {

endpoint ep(std::string_view s) {
  auto r = endpoint::parse(s);
  if (!r) FAIL("endpoint::parse(\"" << std::string(s) << "\") failed: " << r.error().message);
  return *r;
}

backend good() {
  backend b("web-1", ep("10.0.0.1:8080"), 5);
  b.zone = "us-east-1a";
  b.labels = {{"tier", "gold"}, {"owner", "team payments (oncall: #pay)"}};
  return b;
}

lbkit::error error_of(const backend& b) {
  const auto r = lbkit::validate(b);
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// True when every byte is printable ASCII: safe to write to a log line.
bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
  });
}

}  // namespace

TEST_CASE("a well-formed backend passes validation") {
  CHECK(lbkit::validate(good()).has_value());
  CHECK(lbkit::validate(backend("a", ep("[2001:db8::1]:443"))).has_value());
  CHECK(lbkit::validate(backend("x", ep("1.2.3.4:65535"), 1)).has_value());
  // Every visible ASCII character is allowed in an id.
  std::string all_visible;
  for (char c = 0x21; c < 0x7f; ++c) all_visible += c;
  CHECK(lbkit::validate(backend(all_visible, ep("1.2.3.4:1"))).has_value());
}

TEST_CASE("backend defaults and construction") {
  const backend d;
  CHECK(d.id.empty());
  CHECK(d.weight == 1);
  CHECK(d.zone.empty());
  CHECK(d.labels.empty());
  CHECK(d.address == endpoint());
  const backend b("id", ep("1.2.3.4:5"));
  CHECK(b.id == "id");
  CHECK(b.address == ep("1.2.3.4:5"));
  CHECK(b.weight == 1);
  CHECK(backend("id", ep("1.2.3.4:5"), 7).weight == 7);
  CHECK(good() == good());
  backend other = good();
  other.labels["tier"] = "silver";
  CHECK_FALSE(other == good());
  // Labels look up by string_view without building a std::string (std::less<>).
  CHECK(good().labels.find(std::string_view("tier")) != good().labels.end());
}

TEST_CASE("backend id rules") {
  SUBCASE("empty") {
    backend b = good();
    b.id.clear();
    const auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "backend id is empty"));
  }
  SUBCASE("with a space") {
    backend b = good();
    b.id = "web 1";
    const auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "'web 1'"));
    CHECK(contains(e.message, "visible ASCII"));
  }
  SUBCASE("with a control byte") {
    backend b = good();
    b.id = std::string("web\x01", 4);
    const auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "'web\\x01'"));
    CHECK(printable(e.message));
  }
  SUBCASE("with DEL, a NUL byte or non-ASCII") {
    for (const std::string& id :
         {std::string("web\x7f"), std::string("a\0b", 3), std::string("caf\xc3\xa9")}) {
      backend b = good();
      b.id = id;
      const auto e = error_of(b);
      CHECK(e.code == errc::invalid_argument);
      CHECK(printable(e.message));
    }
  }
  SUBCASE("length: 255 bytes is the maximum") {
    static_assert(lbkit::max_id_length == 255);
    backend b = good();
    b.id = std::string(255, 'a');
    CHECK(lbkit::validate(b).has_value());
    b.id = std::string(256, 'a');
    const auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "longer than 255 bytes"));
    CHECK(e.message.size() < 200);  // the id is quoted, truncated
  }
}

TEST_CASE("backend address rules") {
  SUBCASE("port 0") {
    backend b = good();
    b.address = endpoint(ip_address::v4({10, 0, 0, 1}), 0);
    const auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "backend 'web-1'"));
    CHECK(contains(e.message, "no port"));
    b.address = endpoint(ip_address::v6({0x20, 0x01}), 0);
    CHECK(contains(error_of(b).message, "no port"));
  }
  SUBCASE("the unspecified address, IPv4 and IPv6") {
    backend b = good();
    b.address = ep("0.0.0.0:80");
    auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "backend 'web-1'"));
    CHECK(contains(e.message, "unspecified address 0.0.0.0:80"));
    b.address = ep("[::]:80");
    e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "unspecified address [::]:80"));
  }
  SUBCASE("a default-constructed address has neither port nor address") {
    backend b = good();
    b.address = endpoint();
    CHECK_FALSE(lbkit::validate(b).has_value());
  }
  SUBCASE("near misses of the unspecified address are fine") {
    for (auto text : {"0.0.0.1:80", "[::1]:80", "[::ffff:0.0.0.0]:80", "255.255.255.255:80"}) {
      CAPTURE(text);
      backend b = good();
      b.address = ep(text);
      CHECK(lbkit::validate(b).has_value());
    }
  }
}

TEST_CASE("backend weight rules") {
  static_assert(lbkit::max_weight == 1'000'000);
  backend b = good();
  b.weight = 0;  // "no new traffic": allowed
  CHECK(lbkit::validate(b).has_value());
  b.weight = lbkit::max_weight;
  CHECK(lbkit::validate(b).has_value());
  b.weight = lbkit::max_weight + 1;
  auto e = error_of(b);
  CHECK(e.code == errc::out_of_range);
  CHECK(contains(e.message, "backend 'web-1'"));
  CHECK(contains(e.message, "1000001"));
  CHECK(contains(e.message, "1000000"));
  b.weight = std::numeric_limits<std::uint32_t>::max();
  e = error_of(b);
  CHECK(e.code == errc::out_of_range);
  CHECK(contains(e.message, "4294967295"));
}

TEST_CASE("backend zone rules") {
  backend b = good();
  b.zone.clear();  // optional
  CHECK(lbkit::validate(b).has_value());
  b.zone = "eu-west-3c";
  CHECK(lbkit::validate(b).has_value());
  b.zone = "us east";
  auto e = error_of(b);
  CHECK(e.code == errc::invalid_argument);
  CHECK(contains(e.message, "backend 'web-1' zone 'us east'"));
  b.zone = "z\n";
  e = error_of(b);
  CHECK(contains(e.message, "'z\\x0a'"));
  CHECK(printable(e.message));
  b.zone = std::string(255, 'z');
  CHECK(lbkit::validate(b).has_value());
  b.zone = std::string(256, 'z');
  CHECK(contains(error_of(b).message, "longer than 255 bytes"));
}

TEST_CASE("backend label rules") {
  SUBCASE("up to max_labels labels") {
    static_assert(lbkit::max_labels == 64);
    backend b = good();
    b.labels.clear();
    CHECK(lbkit::validate(b).has_value());  // labels are optional
    for (std::size_t i = 0; i < lbkit::max_labels; ++i) b.labels.emplace(std::to_string(i), "v");
    CHECK(lbkit::validate(b).has_value());
    b.labels["one-too-many"] = "v";
    REQUIRE(b.labels.size() == lbkit::max_labels + 1);
    const auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "backend 'web-1'"));
    CHECK(contains(e.message, "more than 64 labels"));
  }
  SUBCASE("keys follow the id rules") {
    backend b = good();
    b.labels[""] = "v";
    auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "backend 'web-1' label key is empty"));

    b = good();
    b.labels["has space"] = "v";
    e = error_of(b);
    CHECK(contains(e.message, "'has space'"));

    b = good();
    b.labels[std::string("k\x1b[31m")] = "v";
    e = error_of(b);
    CHECK(contains(e.message, "\\x1b"));
    CHECK(printable(e.message));

    b = good();
    b.labels[std::string(256, 'k')] = "v";
    CHECK(contains(error_of(b).message, "longer than 255 bytes"));
  }
  SUBCASE("values: up to max_label_value_length bytes, no control characters") {
    static_assert(lbkit::max_label_value_length == 1024);
    backend b = good();
    b.labels["tier"] = "";
    CHECK(lbkit::validate(b).has_value());
    b.labels["tier"] = std::string(1024, 'v');
    CHECK(lbkit::validate(b).has_value());
    b.labels["tier"] = "spaces, punctuation & UTF-8: caf\xc3\xa9";
    CHECK(lbkit::validate(b).has_value());

    b.labels["tier"] = std::string(1025, 'v');
    auto e = error_of(b);
    CHECK(e.code == errc::invalid_argument);
    CHECK(contains(e.message, "backend 'web-1' label 'tier'"));
    CHECK(contains(e.message, "1024"));

    for (const std::string& bad : {std::string("line1\nline2"), std::string("tab\there"),
                                   std::string("nul\0", 4), std::string("del\x7f")}) {
      b.labels["tier"] = bad;
      e = error_of(b);
      CHECK(e.code == errc::invalid_argument);
      CHECK(contains(e.message, "control characters"));
      CHECK_FALSE(contains(e.message, bad));  // the value itself is not echoed
      CHECK(printable(e.message));
    }
  }
}

TEST_CASE("a hostile id cannot forge log lines through an error message") {
  // An id crafted to end the log line and start a fake one, with a terminal escape.
  const std::string hostile =
      "web-1\n2024-01-01T00:00:00Z INFO backend web-1 healthy\r\x1b[2K\x07'\\";
  backend b = good();
  b.id = hostile;
  const auto e = error_of(b);
  CHECK(e.code == errc::invalid_argument);
  CHECK(printable(e.message));
  CHECK(contains(e.message, "\\x0a"));
  CHECK(contains(e.message, "\\x0d"));
  CHECK(contains(e.message, "\\x1b"));
  CHECK(contains(e.message, "\\x07"));
  CHECK(contains(e.message, "\\x27"));  // the quote character cannot close the quoting
  CHECK(contains(e.message, "\\x5c"));  // nor can a backslash fake an escape
  CHECK_FALSE(contains(e.message, "\n"));

  // A huge hostile id gives a bounded message (the quote shows at most 64 input bytes).
  b.id = std::string(1 << 16, '\n');
  const auto big = error_of(b);
  CHECK(printable(big.message));
  CHECK(big.message.size() < 400);
}
