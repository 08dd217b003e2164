// SPDX-License-Identifier: MIT
// result<T>: the value of a control-plane or parsing operation, or an error with a readable
// message. Its observers are named like std::expected's (has_value, value, error, operator*)
// so that it can become an alias of std::expected<T, lbkit::error> once every supported
// compiler ships one in C++20 mode; g++ 12 does not. The data plane (pick) never uses it.
// parse_result<T>: the verdict of an incremental parser of wire bytes.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "lbkit/detail/config.hpp"

namespace lbkit {

// Whether an errno value says that this host ran short of something — descriptors, socket
// buffers, memory, local ports — rather than anything about the peer. Such a failure is not
// the backend's (docs/architecture.md, property 10 "Blame lands where the fault is"): it must
// neither fail a probe nor count against a lease; the probes answer probe_status::local_error for
// it.
constexpr bool is_local_error(int err) noexcept {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EADDRNOTAVAIL;
}

// What kind of failure an error is, for callers that branch on it; the message says the rest.
enum class errc {
  invalid_argument,     // malformed input: bad text, bad id, bad address
  out_of_range,         // a number outside its documented range (weight, port)
  not_found,            // no backend with that id
  already_exists,       // a backend with that id is present
  failed_precondition,  // the operation is not allowed in the current state
};

constexpr std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::invalid_argument:
      return "invalid argument";
    case errc::out_of_range:
      return "out of range";
    case errc::not_found:
      return "not found";
    case errc::already_exists:
      return "already exists";
    case errc::failed_precondition:
      return "failed precondition";
  }
  return "unknown error";
}

// An error code and a message written for a human ("port 70000 is above 65535").
struct error {
  errc code = errc::invalid_argument;
  std::string message;

  friend bool operator==(const error&, const error&) = default;
};

// Wraps an error so that it converts into any result<T>, as std::unexpected does.
template <class E>
class unexpected {
 public:
  explicit unexpected(E e) : e_(std::move(e)) {}
  const E& error() const& noexcept { return e_; }
  E&& error() && noexcept { return std::move(e_); }

 private:
  E e_;
};

// The usual way to fail: `return make_error(errc::not_found, "no backend 'web-3'");`
inline unexpected<error> make_error(errc code, std::string message) {
  return unexpected<error>(error{code, std::move(message)});
}

// Holds either a T or an lbkit::error. Thread safety: thread-compatible (a value type).
// Calling value() or operator* on an error, or error() on a value, is a programming error and
// stops the program through LBKIT_ASSERT (there is no exception to throw in -fno-exceptions
// builds).
template <class T>
class [[nodiscard]] result {
  static_assert(!std::is_reference_v<T> && !std::is_same_v<std::remove_cv_t<T>, lbkit::error>,
                "result<T> holds a non-reference value type other than lbkit::error");

 public:
  using value_type = T;
  using error_type = lbkit::error;

  template <class U = T>
  requires std::is_constructible_v<T, U&&> &&(!std::is_same_v<std::remove_cvref_t<U>, result>)&&(
      !std::is_same_v<
          std::remove_cvref_t<U>,
          unexpected<lbkit::error>>)explicit(!std::is_convertible_v<U&&,
                                                                    T>)  // as std::expected's
                                                                         // converting constructor
      result(U&& v)
      : v_(std::in_place_index<0>, std::forward<U>(v)) {}
  result(unexpected<lbkit::error> e)  // NOLINT: implicit, as std::expected's
      : v_(std::in_place_index<1>, std::move(e).error()) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return check_value(), *std::get_if<0>(&v_); }
  const T& value() const& { return check_value(), *std::get_if<0>(&v_); }
  T&& value() && { return check_value(), std::move(*std::get_if<0>(&v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? *std::get_if<0>(&v_) : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  T value_or(U&& fallback) && {
    return has_value() ? std::move(*std::get_if<0>(&v_))
                       : static_cast<T>(std::forward<U>(fallback));
  }

  const lbkit::error& error() const& {
    LBKIT_ASSERT(!has_value(), "result::error() called on a value");
    return *std::get_if<1>(&v_);
  }

 private:
  void check_value() const { LBKIT_ASSERT(has_value(), "result::value() called on an error"); }

  std::variant<T, lbkit::error> v_;
};

// The outcome of an operation that yields nothing but may fail.
template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;
  using error_type = lbkit::error;

  result() = default;
  result(unexpected<lbkit::error> e) : e_(std::move(e).error()), failed_(true) {}  // NOLINT

  bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const { LBKIT_ASSERT(has_value(), "result::value() called on an error"); }
  void operator*() const { value(); }

  const lbkit::error& error() const& {
    LBKIT_ASSERT(failed_, "result::error() called on a value");
    return e_;
  }

 private:
  lbkit::error e_;
  bool failed_ = false;
};

// The verdict of an incremental parser of bytes from a peer (a PROXY header, an HTTP/1
// message), the one vocabulary lbkit's wire parsers share. The caller hands the parser every
// byte received so far and acts on the verdict:
//   incomplete  every byte so far fits a valid message: read more and parse again;
//   complete    a valid message occupies the first `size` bytes; what follows is not its own;
//   invalid     no valid message starts with these bytes: `error` says why, for a log line.
enum class parse_status : std::uint8_t { incomplete, complete, invalid };

constexpr std::string_view to_string(parse_status s) noexcept {
  switch (s) {
    case parse_status::incomplete:
      return "incomplete";
    case parse_status::complete:
      return "complete";
    case parse_status::invalid:
      return "invalid";
  }
  return "unknown";
}

// A parse verdict that carries its value, for parsers that return the whole message at once.
// (A streaming parser, such as http1::response_parser, reports a parse_status per call and
// keeps the message it has read.) Thread safety: thread-compatible (a value type).
template <class T>
struct parse_result {
  parse_status status = parse_status::incomplete;
  // complete: the bytes the message occupies. incomplete: a lower bound on the total bytes it
  // needs, above the input's size (0 when the parser cannot tell).
  std::size_t size = 0;
  T value{};            // complete only
  std::string error{};  // invalid only; bytes of the input in it are quoted and escaped

  static parse_result incomplete(std::size_t need) {
    parse_result r;
    r.size = need;
    return r;
  }
  static parse_result complete(std::size_t size, T value) {
    parse_result r;
    r.status = parse_status::complete;
    r.size = size;
    r.value = std::move(value);
    return r;
  }
  static parse_result invalid(std::string why) {
    parse_result r;
    r.status = parse_status::invalid;
    r.error = std::move(why);
    return r;
  }
};

}  // namespace lbkit
