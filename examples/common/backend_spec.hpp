// SPDX-License-Identifier: MIT
// Shared by the examples: a backend as a command line gives it, "ADDR:PORT[,weight=N][,id=NAME]",
// parsed strictly; every rejection quotes the text and says what was wrong.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <lbkit/lbkit.hpp>

namespace examples {

// One backend as a flag gives it, ADDR:PORT[,weight=N][,id=NAME]: one that lbkit::validate
// accepts.
struct backend_spec {
  lbkit::endpoint address;
  std::uint32_t weight = 1;
  std::string id;  // default: the address text
};

// "10.0.0.1:80", "[::1]:8080,weight=3", "10.0.0.2:80,weight=2,id=web-2".
inline lbkit::result<backend_spec> parse_backend(std::string_view text) {
  const auto comma = text.find(',');
  auto address = lbkit::endpoint::parse(text.substr(0, comma));
  if (!address) {
    return lbkit::make_error(address.error().code,
                             "backend " + lbkit::quote(text) + ": " + address.error().message);
  }
  backend_spec b{*address, 1, address->to_string()};
  std::string_view rest = comma == std::string_view::npos ? "" : text.substr(comma + 1);
  while (!rest.empty()) {
    const auto next = rest.find(',');
    const std::string_view item = rest.substr(0, next);
    rest = next == std::string_view::npos ? "" : rest.substr(next + 1);
    const auto eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : item.substr(eq + 1);
    if (key == "weight" && eq != std::string_view::npos) {
      const auto w = lbkit::parse_decimal(value, lbkit::max_weight);
      if (!w) {
        return lbkit::make_error(lbkit::errc::out_of_range, "backend " + lbkit::quote(text) +
                                                                ": weight " + lbkit::quote(value) +
                                                                " is not a whole number 0.." +
                                                                std::to_string(lbkit::max_weight));
      }
      b.weight = static_cast<std::uint32_t>(*w);
    } else if (key == "id" && eq != std::string_view::npos) {
      b.id = std::string(value);
    } else {
      return lbkit::make_error(lbkit::errc::invalid_argument,
                               "backend " + lbkit::quote(text) + ": unknown option " +
                                   lbkit::quote(item) + " (want weight=N or id=NAME)");
    }
  }
  // The registry checks the backend again when it is added, but only after the listeners are
  // open, and its message does not name the flag: refuse here what it would refuse there (an
  // empty or non-visible id, an unspecified address such as 0.0.0.0).
  if (auto v = lbkit::validate(lbkit::backend(b.id, b.address, b.weight)); !v) {
    return lbkit::make_error(v.error().code,
                             "backend " + lbkit::quote(text) + ": " + v.error().message);
  }
  return b;
}

}  // namespace examples
