// SPDX-License-Identifier: MIT
// A Beast body type for the responses the router relays: one heap block that Beast reads into
// without zero-filling it first. Beast's string_body resizes its string before copying into
// it (a memset of every body byte, 7% of the router's CPU for 64 KiB answers); a flat_buffer
// body grows by doubling and moves its bytes each time. This one allocates the Content-Length
// once, uninitialized, and copies each byte once.
#pragma once

#include <cstring>
#include <memory>
#include <string_view>

#include "asio.hpp"

namespace l7 {

struct raw_body {
  class value_type {
   public:
    value_type() = default;
    value_type(const value_type& o) { assign(o.view()); }
    value_type& operator=(const value_type& o) {
      if (this != &o) assign(o.view());
      return *this;
    }
    value_type(value_type&& o) noexcept
        : data_(std::move(o.data_)),
          size_(std::exchange(o.size_, 0)),
          capacity_(std::exchange(o.capacity_, 0)) {}
    value_type& operator=(value_type&& o) noexcept {
      data_ = std::move(o.data_);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
      return *this;
    }

    std::size_t size() const noexcept { return size_; }
    std::string_view view() const noexcept { return {data_.get(), size_}; }
    void assign(std::string_view s) {
      size_ = 0;
      std::memcpy(grow(s.size()), s.data(), s.size());
    }
    void reserve(std::size_t n) {
      if (n <= capacity_) return;
      auto bigger = std::make_unique_for_overwrite<char[]>(n);
      if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
      data_ = std::move(bigger);
      capacity_ = n;
    }
    // Room for n more bytes at the end, uninitialized; they count as written.
    char* grow(std::size_t n) {
      if (size_ + n > capacity_) reserve(std::max(size_ + n, 2 * capacity_));
      char* p = data_.get() + size_;
      size_ += n;
      return p;
    }

   private:
    std::unique_ptr<char[]> data_;
    std::size_t size_ = 0, capacity_ = 0;
  };

  static std::uint64_t size(const value_type& v) noexcept { return v.size(); }

  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& b) : body_(b) {}
    void init(const boost::optional<std::uint64_t>& length, beast::error_code& ec) {
      // The parser's body_limit has checked a declared length already.
      if (length) body_.reserve(static_cast<std::size_t>(*length));
      ec = {};
    }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, beast::error_code& ec) {
      const std::size_t n = asio::buffer_size(buffers);
      asio::buffer_copy(asio::buffer(body_.grow(n), n), buffers);
      ec = {};
      return n;
    }
    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };

  class writer {
   public:
    using const_buffers_type = asio::const_buffer;
    template <bool isRequest, class Fields>
    writer(const http::header<isRequest, Fields>&, const value_type& b) : body_(b) {}
    void init(beast::error_code& ec) { ec = {}; }
    boost::optional<std::pair<const_buffers_type, bool>> get(beast::error_code& ec) {
      ec = {};
      return std::pair{const_buffers_type(body_.view().data(), body_.size()), false};
    }

   private:
    const value_type& body_;
  };
};

}  // namespace l7
