// SPDX-License-Identifier: MIT
// http_framing: lbkit::check_request and lbkit::check_response against RFC 9112, one case per
// clause group — the version (§2.3), the request-target's four forms (§3.2), Host (§3.2,
// §3.2.2), field syntax (§5.1, §5.2, RFC 9110 §5.5), Transfer-Encoding (§6.1, §7), Content-Length
// (§6.2, §6.3), the response framing in §6.3's order, is_valid_host_field — and no allocation
// on any of them.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/net/http_framing.hpp>

#include "../support/allocation_counter.hpp"

using lbkit::body_framing;
using lbkit::http_field;
using lbkit::http_verdict;
using lbkit::target_form;

namespace {

using fields = std::vector<http_field>;

http_verdict request(std::string_view method, std::string_view target, const fields& f,
                     unsigned version = 11) {
  return lbkit::check_request({method, target, version, f});
}

// A POST / with a Host and the given fields.
http_verdict post(const fields& extra, unsigned version = 11) {
  static fields f;
  f = {{"Host", "example.com"}};
  f.insert(f.end(), extra.begin(), extra.end());
  return request("POST", "/", f, version);
}

http_verdict response(unsigned status, const fields& f, std::string_view method = "GET",
                      unsigned version = 11) {
  return lbkit::check_response({status, version, f, method});
}

// The reason names an RFC clause.
bool cites(const http_verdict& v, std::string_view clause) {
  return v.reason.find(clause) != std::string_view::npos && v.reason.starts_with("RFC ");
}

}  // namespace

TEST_CASE("RFC 9112 §2.3: HTTP/1.x only; a later minor version is read as HTTP/1.1") {
  const fields host{{"Host", "h"}};
  CHECK(request("GET", "/", host, 11));
  CHECK(request("GET", "/", host, 12));  // §2.3: processed as the highest minor version known
  CHECK(request("GET", "/", {}, 10));
  CHECK(request("GET", "/", host, 20).status == 505);
  CHECK(request("GET", "/", host, 9).status == 505);
  CHECK(response(200, {{"Content-Length", "0"}}, "GET", 20).status == 502);
}

TEST_CASE("RFC 9112 §3.1, §3.2: the method is a token; the target has one of four forms") {
  const fields host{{"Host", "h"}};
  SUBCASE("origin-form (§3.2.1)") {
    const auto v = request("GET", "/a/b?c=d&e=%2F", host);
    REQUIRE(v);
    CHECK(v.form == target_form::origin);
    CHECK(v.path == "/a/b?c=d&e=%2F");
    CHECK(v.authority == "h");
    CHECK(request("GET", "/~user/@:!$&'()*+,;=-._", host));
  }
  SUBCASE("characters outside the URI grammar, a bad %-escape, a fragment (§3.2.1)") {
    for (std::string_view t : {"/a<b", "/a\"b", "/a\\b", "/a{b}", "/a|b", "/a^b", "/a`b", "/a%zz",
                               "/a%2", "/a%", "/a#frag", "/\x80", "/a b"}) {
      CAPTURE(t);
      const auto v = request("GET", t, host);
      CHECK(v.status == 400);
      CHECK(cites(v, "§3.2.1"));
    }
  }
  SUBCASE("none of the forms (§3.2)") {
    CHECK(request("GET", "foo", host).status == 400);
    CHECK(request("GET", "", host).status == 400);
    CHECK(request("GET", "1http://h/", host).status == 400);
    CHECK(request("G(T", "/", host).status == 400);  // §3.1: a method is a token
    CHECK(request("", "/", host).status == 400);
  }
  SUBCASE("asterisk-form for OPTIONS only (§3.2.4)") {
    const auto v = request("OPTIONS", "*", host);
    REQUIRE(v);
    CHECK(v.form == target_form::asterisk);
    CHECK(v.path == "*");
    CHECK(request("GET", "*", host).status == 400);
  }
  SUBCASE("authority-form for CONNECT, with a port (§3.2.3, RFC 9110 §9.3.6)") {
    const auto v = request("CONNECT", "api.test:443", {{"Host", "api.test:443"}});
    REQUIRE(v);
    CHECK(v.form == target_form::authority);
    CHECK(v.authority == "api.test:443");
    CHECK(request("CONNECT", "[::1]:8443", {{"Host", "[::1]:8443"}}));
    for (std::string_view t : {"api.test", "api.test:", "api.test:0", "api.test:65536", ":443", "/",
                               "http://api.test:443/"}) {
      CAPTURE(t);
      CHECK(request("CONNECT", t, host).status == 400);
    }
    CHECK(request("GET", "api.test:443", host).status == 400);  // not for other methods
  }
}

TEST_CASE("RFC 9112 §3.2.2: absolute-form — the target's authority wins over Host") {
  SUBCASE("Host is ignored; the path is what goes upstream in origin-form") {
    const auto v = request("GET", "http://API.example:8080/v1/x?y", {{"Host", "other"}});
    REQUIRE(v);
    CHECK(v.form == target_form::absolute);
    CHECK(v.authority == "API.example:8080");
    CHECK(v.path == "/v1/x?y");
  }
  SUBCASE("an empty path: the caller puts '/' in front (§3.2.1); OPTIONS becomes '*' (§3.2.4)") {
    CHECK(request("GET", "https://h", {{"Host", "h"}}).path == "");
    CHECK(request("GET", "http://h?q", {{"Host", "h"}}).path == "?q");
    CHECK(request("OPTIONS", "http://h", {{"Host", "h"}}).path == "*");
    CHECK(request("OPTIONS", "http://h/", {{"Host", "h"}}).path == "/");
  }
  SUBCASE("a request with no Host at all is still an HTTP/1.1 request without Host (§3.2)") {
    CHECK(request("GET", "http://h/", {}).status == 400);
  }
  SUBCASE("what is refused") {
    const fields host{{"Host", "h"}};
    CHECK(cites(request("GET", "http://u:p@h/", host), "RFC 9110 §4.2.4"));  // userinfo
    CHECK(cites(request("GET", "http:///p", host), "RFC 9110 §4.2.1"));      // empty host
    CHECK(cites(request("GET", "http:/p", host), "RFC 9110 §4.2.1"));
    CHECK(request("GET", "http://h:99999/", host).status == 400);
    CHECK(request("GET", "http://h/a b", host).status == 400);
    CHECK(request("GET", "http://h/#f", host).status == 400);
    CHECK(cites(request("GET", "ftp://h/", host), "§3.2.2"));
    CHECK(request("GET", "HTTP://h/", host));  // the scheme is case-insensitive
  }
}

TEST_CASE("RFC 9112 §3.2: one Host in HTTP/1.1, at most one in HTTP/1.0, a valid value") {
  SUBCASE("missing") {
    const auto v = request("GET", "/", {});
    CHECK(v.status == 400);
    CHECK(cites(v, "§3.2"));
    const auto v10 = request("GET", "/", {}, 10);
    REQUIRE(v10);
    CHECK(v10.authority.empty());
  }
  SUBCASE("more than one line, even with equal values, in either version") {
    CHECK(request("GET", "/", {{"Host", "a"}, {"Host", "a"}}).status == 400);
    CHECK(request("GET", "/", {{"Host", "a"}, {"hOsT", "b"}}, 10).status == 400);
    CHECK(request("GET", "http://a/", {{"Host", "a"}, {"Host", "b"}}).status == 400);
  }
  SUBCASE("invalid values") {
    for (std::string_view h :
         {"a b", "a/b", "a?b", "a#b", "a@b", "[::1", "[::1]x", "[1.2.3.4]", "[::1%25eth0]", "a:b",
          "a:80:80", "a:65536", "a:-1", "%zz", "\"a\"", "a\\b", "{a}"}) {
      CAPTURE(h);
      CHECK(request("GET", "/", {{"Host", h}}).status == 400);
      CHECK(!lbkit::is_valid_host_field(h));
    }
  }
  SUBCASE("valid values") {
    for (std::string_view h :
         {"example.com", "EXAMPLE.com.:8443", "192.0.2.1:80", "[::1]", "[2001:db8::1]:443",
          "[v1.fe80::a+b]", "a-b_c~d", "%41", "a:", "a,b", ""}) {
      CAPTURE(h);
      const auto v = request("GET", "/", {{"Host", h}});
      CHECK(v);
      CHECK(v.authority == h);
      CHECK(lbkit::is_valid_host_field(h));
    }
  }
}

TEST_CASE("RFC 9112 §5.1, §5.2, RFC 9110 §5.5: field names are tokens, values have no CR LF NUL") {
  SUBCASE("whitespace between a name and its colon is refused with 400 (§5.1)") {
    const auto v = post({{"Content-Length ", "4"}});
    CHECK(v.status == 400);
    CHECK(cites(v, "§5.1"));
    CHECK(v.reason.find("whitespace") != std::string_view::npos);
    CHECK(post({{"X\tY", "1"}}).status == 400);
    CHECK(post({{"", "1"}}).status == 400);
    CHECK(post({{"X:Y", "1"}}).status == 400);
  }
  SUBCASE("an obs-fold a parser left in is refused (§5.2)") {
    for (std::string_view v : {"a\r\n b", "a\r\n\tb", "a\n b"}) {
      const auto r = post({{"X", v}});
      CHECK(r.status == 400);
      CHECK(cites(r, "§5.2"));
      CHECK(cites(response(200, {{"X", v}, {"Content-Length", "0"}}), "§5.2"));
      CHECK(response(200, {{"X", v}, {"Content-Length", "0"}}).status == 502);
    }
  }
  SUBCASE("CR, LF, NUL and other controls are refused (RFC 9110 §5.5); obs-text is not") {
    for (std::string_view v :
         {std::string_view("a\rb"), std::string_view("a\nb"), std::string_view("a\0b", 3),
          std::string_view("a\x01"), std::string_view("\x7f")}) {
      CHECK(cites(post({{"X", v}}), "RFC 9110 §5.5"));
    }
    CHECK(post({{"X", "caf\xc3\xa9\t;\"q\""}}));
  }
}

TEST_CASE("RFC 9112 §6.1, §6.3, §7: a request's Transfer-Encoding") {
  SUBCASE("chunked alone, in any case, with empty list elements (RFC 9110 §5.6.1)") {
    for (std::string_view te : {"chunked", "CHUNKED", " chunked ", ", chunked,"}) {
      const auto v = post({{"Transfer-Encoding", te}});
      REQUIRE(v);
      CHECK(v.framing == body_framing::chunked);
    }
  }
  SUBCASE("chunked not last: 400, the length cannot be determined (§6.3 item 4)") {
    for (std::string_view te : {"gzip", "chunked, gzip", "identity", "x", ","}) {
      CAPTURE(te);
      CHECK(post({{"Transfer-Encoding", te}}).status == 400);
    }
    CHECK(cites(post({{"Transfer-Encoding", "gzip"}}), "§6.3"));
  }
  SUBCASE("a coding before chunked that the recipient does not implement: 501 (§6.1)") {
    const auto v = post({{"Transfer-Encoding", "gzip, chunked"}});
    CHECK(v.status == 501);
    CHECK(cites(v, "§6.1"));
    // Over two lines the list is the same (RFC 9110 §5.3).
    CHECK(post({{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}).status == 501);
    CHECK(post({{"Transfer-Encoding", "x;q=\"1\", chunked"}}).status == 501);
  }
  SUBCASE("chunked twice (§6.1), chunked with parameters (§7), not a coding list: 400") {
    CHECK(cites(post({{"Transfer-Encoding", "chunked, chunked"}}), "§6.1"));
    CHECK(post({{"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}}).status == 400);
    CHECK(cites(post({{"Transfer-Encoding", "chunked;x=1"}}), "§7"));
    for (std::string_view te :
         {"", "\"chunked\"", "x chunked", "x;", "x;a", "x;a=", "x;a=\"b", "x;=b", "chunked;"}) {
      CAPTURE(te);
      CHECK(post({{"Transfer-Encoding", te}}).status == 400);
    }
  }
  SUBCASE("with Content-Length: refused in either order (§6.1; the server MUST close)") {
    CHECK(cites(post({{"Transfer-Encoding", "chunked"}, {"Content-Length", "4"}}), "§6.1"));
    CHECK(post({{"Content-Length", "4"}, {"Transfer-Encoding", "chunked"}}).status == 400);
    CHECK(post({{"Transfer-Encoding", "gzip"}, {"Content-Length", "4"}}).status == 400);
  }
  SUBCASE("in HTTP/1.0: the framing is faulty (§6.1)") {
    const auto v = post({{"Transfer-Encoding", "chunked"}}, 10);
    CHECK(v.status == 400);
    CHECK(cites(v, "§6.1"));
  }
}

TEST_CASE("RFC 9112 §6.2, §6.3 item 5: a request's Content-Length") {
  SUBCASE("one valid value, repeated or listed, is used (item 5)") {
    for (const fields& f : {fields{{"Content-Length", "4"}}, fields{{"Content-Length", "004"}},
                            fields{{"Content-Length", "4, 4"}},
                            fields{{"Content-Length", "4"}, {"Content-Length", "4"}}}) {
      const auto v = post(f);
      REQUIRE(v);
      CHECK(v.framing == body_framing::content_length);
      CHECK(v.content_length == 4);
    }
    const auto big = post({{"Content-Length", "18446744073709551615"}});
    REQUIRE(big);
    CHECK(big.content_length == UINT64_MAX);
    CHECK(post({{"Content-Length", "0"}}).framing == body_framing::content_length);
  }
  SUBCASE("different, invalid or overflowing values: 400 (item 5, RFC 9110 §8.6)") {
    for (const fields& f :
         {fields{{"Content-Length", "4, 5"}},
          fields{{"Content-Length", "4"}, {"Content-Length", "5"}},
          fields{{"Content-Length", "+4"}}, fields{{"Content-Length", "-1"}},
          fields{{"Content-Length", "0x4"}}, fields{{"Content-Length", "4 4"}},
          fields{{"Content-Length", "4.0"}}, fields{{"Content-Length", ""}},
          fields{{"Content-Length", ","}}, fields{{"Content-Length", "18446744073709551616"}},
          fields{{"Content-Length", "99999999999999999999999"}}}) {
      CAPTURE(f.back().value);
      const auto v = post(f);
      CHECK(v.status == 400);
      CHECK(cites(v, "§6.3"));
    }
  }
  SUBCASE("neither field: no body (item 7)") {
    const auto v = post({});
    REQUIRE(v);
    CHECK(v.framing == body_framing::none);
  }
}

TEST_CASE("RFC 9112 §6.3: a response's framing, in the order of precedence") {
  SUBCASE("item 1: HEAD, 1xx, 204 and 304 have no body whatever the fields say") {
    const fields odd{{"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}};
    CHECK(response(200, odd, "HEAD").framing == body_framing::none);
    CHECK(response(200, odd, "HEAD"));
    for (unsigned s : {100u, 103u, 204u, 304u})
      CHECK(response(s, odd).framing == body_framing::none);
  }
  SUBCASE("item 2: a 2xx to CONNECT is a tunnel") {
    CHECK(response(200, {{"Content-Length", "5"}}, "CONNECT").framing == body_framing::none);
    CHECK(response(407, {{"Content-Length", "5"}}, "CONNECT").framing ==
          body_framing::content_length);
  }
  SUBCASE("item 3: Transfer-Encoding with Content-Length is refused: 502") {
    const auto v = response(200, {{"Transfer-Encoding", "chunked"}, {"Content-Length", "5"}});
    CHECK(v.status == 502);
    CHECK(cites(v, "§6.3"));
  }
  SUBCASE("item 4: chunked last is chunked; otherwise the body runs to the close") {
    const auto c = response(200, {{"Transfer-Encoding", "chunked"}});
    CHECK(c.framing == body_framing::chunked);
    CHECK(!c.transfer_coded);
    const auto gc = response(200, {{"Transfer-Encoding", "gzip, chunked"}});
    CHECK(gc.framing == body_framing::chunked);
    CHECK(gc.transfer_coded);
    const auto g = response(200, {{"Transfer-Encoding", "gzip"}});
    REQUIRE(g);
    CHECK(g.framing == body_framing::until_close);
    CHECK(g.transfer_coded);
    CHECK(response(200, {{"Transfer-Encoding", "chunked, gzip"}}).framing ==
          body_framing::until_close);
  }
  SUBCASE("item 4 refusals: chunked twice or with parameters, not a list, HTTP/1.0 (§6.1, §7)") {
    CHECK(response(200, {{"Transfer-Encoding", "chunked, chunked"}}).status == 502);
    CHECK(response(200, {{"Transfer-Encoding", "chunked;a=b"}}).status == 502);
    CHECK(response(200, {{"Transfer-Encoding", ""}}).status == 502);
    CHECK(cites(response(200, {{"Transfer-Encoding", "chunked"}}, "GET", 10), "§6.1"));
  }
  SUBCASE("item 5: an invalid or conflicting Content-Length: 502; repeats of one value are used") {
    CHECK(response(200, {{"Content-Length", "2, 3"}}).status == 502);
    CHECK(response(200, {{"Content-Length", "2"}, {"Content-Length", "3"}}).status == 502);
    CHECK(response(200, {{"Content-Length", "2x"}}).status == 502);
    const auto v = response(200, {{"Content-Length", "2"}, {"Content-Length", "2"}});
    REQUIRE(v);
    CHECK(v.framing == body_framing::content_length);
    CHECK(v.content_length == 2);
  }
  SUBCASE("item 8: no length at all reads to the close") {
    CHECK(response(200, {}).framing == body_framing::until_close);
  }
  SUBCASE("RFC 9110 §15: a status outside 100..599 is a server error") {
    CHECK(response(999, {{"Content-Length", "0"}}).status == 502);
    CHECK(response(99, {{"Content-Length", "0"}}).status == 502);
    CHECK(response(599, {{"Content-Length", "0"}}));
  }
}

TEST_CASE("a verdict: refusals carry a status and a reason, acceptances neither") {
  const auto ok = post({{"Content-Length", "1"}});
  CHECK(ok.accepted());
  CHECK(ok.status == 0);
  CHECK(ok.reason.empty());
  const auto no = post({{"Content-Length", "x"}});
  CHECK(!no);
  CHECK(!no.reason.empty());
}

TEST_CASE("no allocation in either check, accepted or refused") {
  if (!lbkit::test::counting_allocations) return;
  const fields req{
      {"Host", "[2001:db8::1]:8080"}, {"Transfer-Encoding", "chunked"}, {"X", "a, b; c=\"d\""}};
  const fields bad{{"Host", "a"}, {"Content-Length", "1, 2"}};
  const fields res{{"Content-Length", "10, 10"}, {"Set-Cookie", "a=b"}};
  const std::size_t before = lbkit::test::allocations.load();
  for (int i = 0; i < 100; ++i) {
    CHECK(lbkit::check_request({"POST", "http://h.example/a?b", 11, req}));
    CHECK(!lbkit::check_request({"POST", "/", 11, bad}));
    CHECK(lbkit::check_response({200, 11, res, "GET"}));
  }
  CHECK(lbkit::test::allocations.load() == before);
}
