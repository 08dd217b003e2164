// SPDX-License-Identifier: MIT
// Fuzz target for lbkit/net/proxy_protocol.hpp, built with libFuzzer under clang and with
// replay_main.cpp everywhere. Two properties per input:
//   1. Decoding: with every option set, the verdict is consistent across the input's prefixes
//      (an invalid prefix stays invalid, a complete one stays complete with the same header,
//      an incomplete hint is a true lower bound), and every complete header re-encodes to bytes
//      that parse back to the same header.
//   2. Encoding: a header built from the input either fails to encode with a reason or encodes
//      to bytes that parse back to it (in the form the decoder reports it).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lbkit/net/proxy_protocol.hpp>

#include "fuzz_check.hpp"

namespace {

using namespace lbkit::fuzz;  // fail, no_controls, check_message

using lbkit::parse_status;

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
  });
}

// A complete header must encode again and parse back to itself.
void check_reencode(const lbkit::proxy_parse_result& r) {
  const auto wire = lbkit::encode_proxy_header(r.value);
  if (!wire) {
    std::fprintf(stderr, "cannot re-encode %s: %s\n", lbkit::to_string(r.value).c_str(),
                 wire.error().message.c_str());
    fail("a decoded header encodes again", __LINE__);
  }
  FUZZ_CHECK(wire->size() == lbkit::encoded_size(r.value));
  const auto back = lbkit::parse_proxy_header(*wire, {.max_size = lbkit::proxy_v2_max_size});
  FUZZ_CHECK(back.status == parse_status::complete);
  FUZZ_CHECK(back.size == wire->size());
  FUZZ_CHECK(back.value == r.value);
  if (!wire->empty()) {
    std::vector<std::uint8_t> small(wire->size() - 1);
    FUZZ_CHECK(!lbkit::write_proxy_header(r.value, small).has_value());
  }
  (void)lbkit::to_string(r.value);
}

void check_verdict(const lbkit::proxy_parse_result& r, std::size_t n,
                   const lbkit::proxy_parse_options& o, bool check_error_text = true) {
  switch (r.status) {
    case parse_status::incomplete:
      FUZZ_CHECK(r.size > n);
      FUZZ_CHECK(r.error.empty());
      break;
    case parse_status::complete:
      FUZZ_CHECK(r.size >= 15 && r.size <= n && r.size <= o.max_size);
      FUZZ_CHECK(r.error.empty());
      FUZZ_CHECK(r.value.version == lbkit::proxy_version::v1 ? o.accept_v1 : o.accept_v2);
      break;
    case parse_status::invalid:
      FUZZ_CHECK(!r.error.empty());
      if (check_error_text) FUZZ_CHECK(printable(r.error));
      FUZZ_CHECK(r.size == 0);
      break;
  }
}

// The prefix lengths to try: every one up to 48 bytes, then about 24 spread over the rest, the
// last few, and both sides of `size` (where a complete header ends). Parsing every prefix of a
// long input would be quadratic and slow the fuzzer down tenfold.
std::vector<std::size_t> prefix_lengths(std::size_t n, std::size_t size) {
  std::vector<std::size_t> out;
  const std::size_t step = std::max<std::size_t>(1, n / 24);
  for (std::size_t k = 0; k <= n; ++k) {
    if (k <= 48 || k % step == 0 || k + 3 >= n || k + 1 == size || k == size) out.push_back(k);
  }
  return out;
}

// The option sets every input is parsed with; prefixes are swept for the first three.
constexpr lbkit::proxy_parse_options option_sets[] = {
    {},
    {.max_size = 60},
    {.accept_v1 = false},
    {.accept_v2 = false},
    {.max_size = lbkit::proxy_v2_max_size},
    {.accept_v1 = false, .accept_v2 = false},
};

void decode(std::span<const std::uint8_t> in) {
  for (std::size_t set = 0; set < std::size(option_sets); ++set) {
    const auto& o = option_sets[set];
    const auto whole = lbkit::parse_proxy_header(in, o);
    check_verdict(whole, in.size(), o);
    if (whole.status == parse_status::complete) check_reencode(whole);
    // The string_view overload is the same function.
    const auto as_text = lbkit::parse_proxy_header(
        std::string_view(reinterpret_cast<const char*>(in.data()), in.size()), o);
    FUZZ_CHECK(as_text.status == whole.status && as_text.size == whole.size &&
               as_text.value == whole.value && as_text.error == whole.error);
    if (set >= 3) continue;

    bool invalid_seen = false;
    bool complete_seen = false;
    std::size_t hint = 0;  // the largest incomplete hint so far: a lower bound on the size
    lbkit::proxy_parse_result first_complete;
    for (const std::size_t k : prefix_lengths(in.size(), whole.size)) {
      const auto r = lbkit::parse_proxy_header(in.first(k), o);
      check_verdict(r, k, o, false);  // the text is checked on whole inputs: it is slow
      if (invalid_seen) FUZZ_CHECK(r.status == parse_status::invalid);
      if (complete_seen) {
        FUZZ_CHECK(r.status == parse_status::complete);
        FUZZ_CHECK(r.size == first_complete.size);
        FUZZ_CHECK(r.value == first_complete.value);
      }
      if (r.status == parse_status::invalid) invalid_seen = true;
      if (r.status == parse_status::incomplete) hint = std::max(hint, r.size);
      if (r.status == parse_status::complete && !complete_seen) {
        complete_seen = true;
        first_complete = r;
        FUZZ_CHECK(r.size >= hint);
        FUZZ_CHECK(r.size == k);  // the sweep includes the exact end of the header
      }
    }
    FUZZ_CHECK(whole.status == (invalid_seen    ? parse_status::invalid
                                : complete_seen ? parse_status::complete
                                                : parse_status::incomplete));
  }
}

// Reads fuzz bytes as the fields of a header; zeros once the input runs out.
struct reader {
  std::span<const std::uint8_t> in;
  std::uint8_t byte() {
    if (in.empty()) return 0;
    const auto b = in[0];
    in = in.subspan(1);
    return b;
  }
  std::uint16_t u16() {
    const unsigned hi = byte();
    return static_cast<std::uint16_t>(hi << 8 | byte());
  }
  std::string text(std::size_t max) {
    const std::size_t want = byte() % (max + 1);  // read before in.size() is looked at
    const std::size_t n = std::min(want, in.size());
    std::string s(reinterpret_cast<const char*>(in.data()), n);
    in = in.subspan(n);
    return s;
  }
  lbkit::ip_address address(bool v6) {
    if (!v6) return lbkit::ip_address::v4({byte(), byte(), byte(), byte()});
    std::array<std::uint8_t, 16> b{};
    for (auto& x : b) x = byte();
    return lbkit::ip_address::v6(b);
  }
};

void encode(std::span<const std::uint8_t> in) {
  reader rd{in};
  const std::uint8_t shape = rd.byte();
  lbkit::proxy_header h;
  h.version = (shape & 1) ? lbkit::proxy_version::v1 : lbkit::proxy_version::v2;
  h.command = (shape & 2) ? lbkit::proxy_command::local : lbkit::proxy_command::proxy;
  h.family = static_cast<lbkit::proxy_family>((shape >> 2) & 3);
  h.transport = static_cast<lbkit::proxy_transport>(((shape >> 4) & 3) % 3);
  const bool crc = (shape & 0x40) != 0;
  const std::uint8_t addr = rd.byte();  // per endpoint: IPv6 or not
  // One statement per read: the order of function arguments is unspecified.
  const auto source_address = rd.address(addr & 1);
  h.source = lbkit::endpoint(source_address, rd.u16());
  const auto destination_address = rd.address(addr & 2);
  h.destination = lbkit::endpoint(destination_address, rd.u16());
  if (h.family == lbkit::proxy_family::unix_socket) {
    h.source_path = rd.text(120);
    h.destination_path = rd.text(120);
  }
  for (int i = rd.byte() % 5; i > 0; --i) {
    const std::uint8_t type = rd.byte();
    h.tlvs.push_back({type, rd.text(200)});
  }

  h.crc32c = crc;
  const auto wire = lbkit::encode_proxy_header(h);
  (void)lbkit::to_string(h);
  if (!wire) {
    FUZZ_CHECK(!wire.error().message.empty());
    return;
  }
  // What the decoder reports for this header.
  lbkit::proxy_header want = h;
  const bool local = h.command == lbkit::proxy_command::local;
  if (local || h.family == lbkit::proxy_family::unspec) {
    want.family = lbkit::proxy_family::unspec;
    want.transport = lbkit::proxy_transport::unspec;
  }
  if (want.family != lbkit::proxy_family::inet && want.family != lbkit::proxy_family::inet6) {
    want.source = want.destination = lbkit::endpoint();
  }
  if (want.family != lbkit::proxy_family::unix_socket) {
    want.source_path.clear();
    want.destination_path.clear();
  }
  const auto r = lbkit::parse_proxy_header(*wire, {.max_size = lbkit::proxy_v2_max_size});
  if (r.status != parse_status::complete) {
    std::fprintf(stderr, "encoded %s, which parses as invalid: %s\n", lbkit::to_string(h).c_str(),
                 r.error.c_str());
    fail("an encoded header parses", __LINE__);
  }
  FUZZ_CHECK(r.size == wire->size());
  FUZZ_CHECK(r.value == want);  // the CRC32C flag included
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  decode(in);
  encode(in);
  return 0;
}
