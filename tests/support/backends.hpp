// SPDX-License-Identifier: MIT
// Numbered test backends: b000, b001, ... (id order is index order), each on its own port,
// added to a registry in one published version.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <lbkit/backend_registry.hpp>

namespace lbkit::test {

// Backend `i` of a test: id "b000".."b999", port 10000 + i.
inline std::string id_of(std::size_t i) {
  std::string s = std::to_string(i);
  return "b" + std::string(3 - s.size(), '0') + s;
}

inline backend make(std::size_t i, std::uint32_t weight = 1) {
  return backend(id_of(i), *endpoint::parse("10.0.0.1:" + std::to_string(10000 + i)), weight);
}

// Adds backends b000.. with these weights, in one published version (in reverse order if
// asked: the registry sorts by id, so the result is the same).
inline void add_weighted(backend_registry& r, const std::vector<std::uint32_t>& weights,
                         bool reverse = false) {
  change_set cs;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    const std::size_t i = reverse ? weights.size() - 1 - k : k;
    cs.add(make(i, weights[i]));
  }
  REQUIRE(r.apply(cs));
}

}  // namespace lbkit::test
