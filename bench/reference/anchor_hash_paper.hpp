// SPDX-License-Identifier: MIT
// The reference AnchorHash that lbkit::anchor_hash's lookup is measured against: Algorithm 3
// of the paper as written (G. Mendelson, S. Vargaftik, K. Barabash, D. H. Lorenz, I. Keslassy
// and A. Orda, "AnchorHash: A Scalable Consistent Hash", IEEE/ACM Transactions on Networking
// 29(2), 2021), with its five arrays A, K, W, L, R kept apart, one std::vector<uint32_t>
// each, and INITANCHOR, REMOVEBUCKET, ADDBUCKET and GETBUCKET line for line.
//
// What it takes from lbkit, so that the benchmark measures the algorithm and its data layout
// rather than the hash: the paper leaves H and H_b abstract and writes "mod" for a mapping
// into [0, A[b]). Here, as in lbkit, H(k) is the key's 64-bit hash itself, H_b(k) is
// lbkit::anchor_hash::state::bucket_hash(h, b), and "x mod m" is lbkit::detail::reduce(x, m),
// the multiply-shift ((x >> 32) * m) >> 32. With the same hashes, INITANCHOR(a, n) and the
// same REMOVEs and ADDs, this and lbkit give the same bucket for every key
// (tests/unit/anchor_hash.test.cpp checks it).
#pragma once

#include <cstdint>
#include <vector>

#include <lbkit/policy/anchor_hash.hpp>
#include <lbkit/policy/detail/hash_common.hpp>

namespace lbkit_bench {

class anchor_hash_paper {
 public:
  // INITANCHOR(a, w): buckets 0..w-1 work; a-1 down to w are removed in that order, each
  // leaving the working set [0, b), so A[b] = b and W, L, K stay the identity.
  anchor_hash_paper(std::uint32_t a, std::uint32_t w)
      : size_(a), a_(a, 0), k_(a), w_(a), l_(a), n_(w) {
    r_.reserve(a);
    for (std::uint32_t b = 0; b < a; ++b) k_[b] = l_[b] = w_[b] = b;
    for (std::uint32_t b = a; b-- > w;) {
      r_.push_back(b);
      a_[b] = b;
    }
  }

  // REMOVEBUCKET(b): b leaves; the last working bucket takes its position in W.
  void remove_bucket(std::uint32_t b) {
    r_.push_back(b);
    n_ = n_ - 1;
    a_[b] = n_;
    w_[l_[b]] = k_[b] = w_[n_];
    l_[w_[n_]] = l_[b];
  }

  // ADDBUCKET(): the most recently removed bucket works again.
  std::uint32_t add_bucket() {
    const std::uint32_t b = r_.back();
    r_.pop_back();
    a_[b] = 0;
    l_[w_[n_]] = n_;
    w_[l_[b]] = k_[b] = b;
    n_ = n_ + 1;
    return b;
  }

  // GETBUCKET(k), for the key's hash h.
  std::uint32_t get_bucket(std::uint64_t h) const noexcept {
    std::uint32_t b = mod(h, size_);
    while (a_[b] > 0) {  // b is removed
      std::uint32_t c = mod(lbkit::anchor_hash::state::bucket_hash(h, b), a_[b]);
      while (a_[c] >= a_[b]) c = k_[c];  // c left before b: follow its successor
      b = c;
    }
    return b;
  }

  std::uint32_t working() const noexcept { return n_; }

 private:
  static std::uint32_t mod(std::uint64_t x, std::uint32_t m) noexcept {
    return lbkit::detail::reduce(x, m);
  }

  std::uint32_t size_;                            // a
  std::vector<std::uint32_t> a_, k_, w_, l_, r_;  // A, K, W, L, R
  std::uint32_t n_;                               // N
};

}  // namespace lbkit_bench
