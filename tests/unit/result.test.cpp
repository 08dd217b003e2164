// SPDX-License-Identifier: MIT
// result<T> and result<void>: value and error paths, make_error, value_or, move-only values.
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/result.hpp>

using lbkit::errc;
using lbkit::make_error;
using lbkit::result;

namespace {

result<int> half(int x) {
  if (x % 2 != 0) return make_error(errc::invalid_argument, std::to_string(x) + " is odd");
  return x / 2;
}

result<void> require_positive(int x) {
  if (x <= 0) return make_error(errc::out_of_range, std::to_string(x) + " is not positive");
  return {};
}

result<std::unique_ptr<int>> boxed(int x) {
  if (x < 0) return make_error(errc::invalid_argument, "negative");
  return std::make_unique<int>(x);
}

struct point {
  int x = 0;
  int y = 0;
  int sum() const { return x + y; }
};

}  // namespace

TEST_CASE("result<T> holds a value") {
  auto r = half(10);
  REQUIRE(r.has_value());
  CHECK(static_cast<bool>(r));
  CHECK(r.value() == 5);
  CHECK(*r == 5);
  CHECK(r.value_or(-1) == 5);

  r.value() = 7;  // value() & gives a mutable reference
  CHECK(*r == 7);
  *r = 8;
  CHECK(r.value() == 8);

  const auto& cr = r;
  CHECK(cr.value() == 8);
  CHECK(*cr == 8);
  static_assert(std::is_same_v<decltype(cr.value()), const int&>);
  static_assert(std::is_same_v<decltype(std::move(r).value()), int&&>);
  static_assert(std::is_same_v<result<int>::value_type, int>);
  static_assert(std::is_same_v<result<int>::error_type, lbkit::error>);
}

TEST_CASE("result<T> holds an error") {
  auto r = half(7);
  REQUIRE_FALSE(r.has_value());
  CHECK_FALSE(static_cast<bool>(r));
  CHECK(r.error().code == errc::invalid_argument);
  CHECK(r.error().message == "7 is odd");
  CHECK(r.value_or(-1) == -1);
  CHECK(r.error() == lbkit::error{errc::invalid_argument, "7 is odd"});
  CHECK_FALSE(r.error() == lbkit::error{errc::out_of_range, "7 is odd"});
  CHECK_FALSE(r.error() == lbkit::error{errc::invalid_argument, "7 is even"});
}

TEST_CASE("make_error carries every code and the message unchanged") {
  for (errc code : {errc::invalid_argument, errc::out_of_range, errc::not_found,
                    errc::already_exists, errc::failed_precondition}) {
    CAPTURE(lbkit::to_string(code));
    const result<std::string> r = make_error(code, "message for the human");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == code);
    CHECK(r.error().message == "message for the human");
  }
  // The message is free text; an empty one and one with arbitrary bytes survive intact.
  const result<int> empty = make_error(errc::not_found, "");
  CHECK(empty.error().message.empty());
  const std::string bytes("a\0b\xff", 4);
  const result<int> raw = make_error(errc::not_found, bytes);
  CHECK(raw.error().message == bytes);
  // unexpected<error> exposes what it wraps, as std::unexpected does.
  auto u = make_error(errc::already_exists, "dup");
  CHECK(u.error().code == errc::already_exists);
  CHECK(std::move(u).error().message == "dup");
}

TEST_CASE("an error converts into result of any value type, including void") {
  const auto e = make_error(errc::failed_precondition, "draining");
  const result<int> a = e;
  const result<std::string> b = e;
  const result<std::vector<int>> c = e;
  const result<void> d = e;
  for (const lbkit::error* err : {&a.error(), &b.error(), &c.error(), &d.error()}) {
    CHECK(err->code == errc::failed_precondition);
    CHECK(err->message == "draining");
  }
}

TEST_CASE("result<void>") {
  SUBCASE("success") {
    auto r = require_positive(3);
    CHECK(r.has_value());
    CHECK(static_cast<bool>(r));
    r.value();  // must not stop the program on success
    *r;
    static_assert(std::is_same_v<result<void>::value_type, void>);
    const result<void> def;
    CHECK(def.has_value());
  }
  SUBCASE("failure") {
    auto r = require_positive(-2);
    CHECK_FALSE(r.has_value());
    CHECK_FALSE(static_cast<bool>(r));
    CHECK(r.error().code == errc::out_of_range);
    CHECK(r.error().message == "-2 is not positive");
  }
  SUBCASE("copies keep the state") {
    const result<void> bad = require_positive(0);
    const result<void> copy = bad;
    CHECK_FALSE(copy.has_value());
    CHECK(copy.error().message == "0 is not positive");
    result<void> assigned;
    assigned = bad;
    CHECK_FALSE(assigned.has_value());
    assigned = result<void>();
    CHECK(assigned.has_value());
  }
}

TEST_CASE("operator-> and operator* reach the value") {
  result<point> r = point{2, 3};
  CHECK(r->x == 2);
  CHECK(r->sum() == 5);
  r->y = 10;
  CHECK((*r).y == 10);
  const result<point>& cr = r;
  CHECK(cr->sum() == 12);
  static_assert(std::is_same_v<decltype(cr.operator->()), const point*>);
  static_assert(std::is_same_v<decltype(r.operator->()), point*>);
  CHECK(r.operator->() == &r.value());

  result<std::string> s = std::string("hello");
  CHECK(s->size() == 5);
  CHECK(s->front() == 'h');
}

TEST_CASE("result of a move-only type") {
  static_assert(!std::is_copy_constructible_v<result<std::unique_ptr<int>>>);
  static_assert(std::is_move_constructible_v<result<std::unique_ptr<int>>>);

  auto r = boxed(42);
  REQUIRE(r.has_value());
  REQUIRE(r.value() != nullptr);
  CHECK(**r == 42);
  CHECK(*r.value() == 42);

  // Moving the value out through an rvalue result leaves the result holding a moved-from ptr.
  std::unique_ptr<int> p = std::move(r).value();
  REQUIRE(p != nullptr);
  CHECK(*p == 42);
  CHECK(r.has_value());
  CHECK(r.value() == nullptr);  // NOLINT(bugprone-use-after-move): documenting the state

  auto r2 = boxed(7);
  std::unique_ptr<int> q = *std::move(r2);
  CHECK(*q == 7);

  // A result itself moves, value and error alike.
  auto r3 = boxed(9);
  auto moved = std::move(r3);
  REQUIRE(moved.has_value());
  CHECK(*moved.value() == 9);

  auto bad = boxed(-1);
  auto moved_bad = std::move(bad);
  REQUIRE_FALSE(moved_bad.has_value());
  CHECK(moved_bad.error().code == errc::invalid_argument);
  CHECK(moved_bad.error().message == "negative");
}

TEST_CASE("result<std::string> constructs from a string literal and other convertibles") {
  result<std::string> a = "literal";
  REQUIRE(a.has_value());
  CHECK(*a == "literal");

  const char* p = "pointer";
  result<std::string> b = p;
  CHECK(*b == "pointer");

  static_assert(std::is_convertible_v<const char(&)[4], result<std::string>>);
  static_assert(std::is_convertible_v<lbkit::unexpected<lbkit::error>, result<std::string>>);
  // A result<T> does not convert from unrelated types.
  static_assert(!std::is_convertible_v<int*, result<std::string>>);
  static_assert(!std::is_convertible_v<lbkit::error, result<int>>);

  // value_or converts its fallback to T.
  const result<std::string> e = make_error(errc::not_found, "x");
  CHECK(e.value_or("fallback") == "fallback");
  CHECK(a.value_or("fallback") == "literal");
  const result<long long> big = make_error(errc::not_found, "x");
  CHECK(big.value_or(3) == 3LL);
}

TEST_CASE("result<T> copies and assigns between value and error") {
  result<std::string> r = "v";
  const result<std::string> err = make_error(errc::not_found, "gone");
  r = err;
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message == "gone");
  r = std::string("back");
  REQUIRE(r.has_value());
  CHECK(*r == "back");
  const result<std::string> copy = r;
  CHECK(*copy == "back");
}

TEST_CASE("to_string(errc) names every code") {
  static_assert(lbkit::to_string(errc::invalid_argument) == "invalid argument");
  CHECK(lbkit::to_string(errc::invalid_argument) == std::string_view("invalid argument"));
  CHECK(lbkit::to_string(errc::out_of_range) == std::string_view("out of range"));
  CHECK(lbkit::to_string(errc::not_found) == std::string_view("not found"));
  CHECK(lbkit::to_string(errc::already_exists) == std::string_view("already exists"));
  CHECK(lbkit::to_string(errc::failed_precondition) == std::string_view("failed precondition"));
  // A value outside the enumerators (possible: the underlying type is int) still gets text.
  CHECK(lbkit::to_string(static_cast<errc>(99)) == std::string_view("unknown error"));
  static_assert(noexcept(lbkit::to_string(errc::not_found)));
}

TEST_CASE("error defaults and equality") {
  const lbkit::error e;
  CHECK(e.code == errc::invalid_argument);
  CHECK(e.message.empty());
  CHECK(lbkit::error{errc::not_found, "a"} == lbkit::error{errc::not_found, "a"});
  CHECK(lbkit::error{errc::not_found, "a"} != lbkit::error{errc::not_found, "b"});
  CHECK(lbkit::error{errc::not_found, "a"} != lbkit::error{errc::already_exists, "a"});
}

TEST_CASE("value_or on an rvalue moves a move-only value out") {
  lbkit::result<std::unique_ptr<int>> r(std::make_unique<int>(7));
  auto p = std::move(r).value_or(nullptr);
  REQUIRE(p != nullptr);
  CHECK(*p == 7);
  lbkit::result<std::unique_ptr<int>> e = lbkit::make_error(lbkit::errc::not_found, "gone");
  CHECK(std::move(e).value_or(nullptr) == nullptr);
}

// Like std::expected, the converting constructor is implicit only where U converts to T
// implicitly, so code written against result<T> keeps compiling if it becomes an alias.
static_assert(std::is_convertible_v<const char*, lbkit::result<std::string>>);
static_assert(std::is_constructible_v<lbkit::result<std::string>, std::string_view>);
static_assert(!std::is_convertible_v<std::string_view, lbkit::result<std::string>>);
