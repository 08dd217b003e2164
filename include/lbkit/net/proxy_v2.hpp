// SPDX-License-Identifier: MIT
// PROXY protocol version 2 (spec §2.2), the binary header: signature, version and command,
// family and transport, length, address block, TLVs (a CRC32C one checked and written with
// lbkit/crc32c.hpp). Its decoder, its checks before encoding, and its encoder. The entry
// points are in net/proxy_protocol.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include "lbkit/crc32c.hpp"
#include "lbkit/endpoint.hpp"
#include "lbkit/net/proxy_header.hpp"
#include "lbkit/result.hpp"
#include "lbkit/text.hpp"

namespace lbkit::detail::proxy_protocol {

constexpr std::uint16_t load16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
constexpr std::uint32_t load32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

// A 108-byte AF_UNIX path field, up to its first NUL.
inline std::string unix_path(const std::uint8_t* p) {
  const auto* end = std::find(p, p + proxy_unix_path_size, std::uint8_t{0});
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p));
}

inline proxy_parse_result parse_v2(std::span<const std::uint8_t> b, const proxy_parse_options& o) {
  const std::size_t n = b.size();
  if (o.max_size < v2_fixed_size) {
    return verdict::invalid(
        "a v2 header takes at least 16 bytes, above proxy_parse_options::max_size " +
        std::to_string(o.max_size));
  }
  for (std::size_t i = 0; i < std::min(n, v2_signature.size()); ++i) {
    if (b[i] != v2_signature[i]) {
      return verdict::invalid("not a PROXY protocol header: byte " + std::to_string(i) + " is " +
                              hex(b[i], 2) + " where the v2 signature has " +
                              hex(v2_signature[i], 2) + " (the bytes start " +
                              quote(chars(b.first(std::min(n, std::size_t{16})))) + ")");
    }
  }
  if (n <= 12) return verdict::incomplete(v2_fixed_size);
  const unsigned version = b[12] >> 4;
  const unsigned command = b[12] & 0xfu;
  if (version != 2) {
    return verdict::invalid("v2 header has version " + std::to_string(version) +
                            " in its 13th byte (only 2 is defined)");
  }
  if (command > 1) {
    return verdict::invalid("v2 header has command " + std::to_string(command) +
                            " (want 0 LOCAL or 1 PROXY)");
  }
  const bool local = command == 0;
  if (n <= 13) return verdict::incomplete(v2_fixed_size);
  const unsigned fam = b[13] >> 4;
  const unsigned tr = b[13] & 0xfu;
  const bool defined = fam <= 3 && tr <= 2 && (fam == 0) == (tr == 0);
  if (!local && !defined) {
    if (fam > 3) {
      return verdict::invalid("v2 header has address family " + std::to_string(fam) +
                              " (want 0 UNSPEC, 1 INET, 2 INET6 or 3 UNIX)");
    }
    if (tr > 2) {
      return verdict::invalid("v2 header has transport " + std::to_string(tr) +
                              " (want 0 UNSPEC, 1 STREAM or 2 DGRAM)");
    }
    return verdict::invalid(
        "v2 header has family and transport byte " + hex(b[13], 2) +
        (fam == 0 ? ": family UNSPEC with a transport" : ": a family with transport UNSPEC") +
        ", which the spec does not define");
  }
  if (n < v2_fixed_size) return verdict::incomplete(v2_fixed_size);
  const std::size_t length = load16(&b[14]);
  const std::size_t total = v2_fixed_size + length;
  if (total > o.max_size) {
    return verdict::invalid("v2 header is " + std::to_string(total) +
                            " bytes, above the limit of " + std::to_string(o.max_size) +
                            " (proxy_parse_options::max_size)");
  }
  const auto family = defined ? static_cast<proxy_family>(fam) : proxy_family::unspec;
  const std::size_t block = address_block_size(family);
  // Under LOCAL the family is ignored; its TLVs can be found only where the family is defined
  // and its address block fits.
  bool read_tlvs = true;
  if (length < block) {
    if (!local) {
      return verdict::invalid("v2 header has length " + std::to_string(length) +
                              ", too short for the " + std::to_string(block) + "-byte " +
                              std::string(family_name(family)) + " address block");
    }
    read_tlvs = false;
  }
  if (!defined) read_tlvs = false;
  const std::size_t skip = read_tlvs ? block : length;
  if (n < v2_fixed_size + skip) return verdict::incomplete(total);

  proxy_header h;
  h.version = proxy_version::v2;
  if (local) {
    h.command = proxy_command::local;
    h.family = proxy_family::unspec;
    h.transport = proxy_transport::unspec;
  } else {
    h.command = proxy_command::proxy;
    h.family = family;
    h.transport = static_cast<proxy_transport>(tr);
    const std::uint8_t* a = &b[v2_fixed_size];
    if (family == proxy_family::inet) {
      std::array<std::uint8_t, 4> src, dst;
      std::copy(a, a + 4, src.begin());
      std::copy(a + 4, a + 8, dst.begin());
      h.source = endpoint(ip_address::v4(src), load16(a + 8));
      h.destination = endpoint(ip_address::v4(dst), load16(a + 10));
    } else if (family == proxy_family::inet6) {
      std::array<std::uint8_t, 16> src, dst;
      std::copy(a, a + 16, src.begin());
      std::copy(a + 16, a + 32, dst.begin());
      h.source = endpoint(ip_address::v6(src), load16(a + 32));
      h.destination = endpoint(ip_address::v6(dst), load16(a + 34));
    } else if (family == proxy_family::unix_socket) {
      h.source_path = unix_path(a);
      h.destination_path = unix_path(a + proxy_unix_path_size);
    }
  }

  std::size_t pos = v2_fixed_size + skip;
  std::size_t crc_at = 0;  // offset of the CRC32C value, if any
  while (pos < total) {
    const std::size_t left = total - pos;
    if (left < 3) {
      return verdict::invalid("v2 header has a truncated TLV at offset " + std::to_string(pos) +
                              ": " + std::to_string(left) +
                              " byte(s) left where a TLV needs at least 3");
    }
    if (n < pos + 3) return verdict::incomplete(total);
    const std::uint8_t type = b[pos];
    const std::size_t size = load16(&b[pos + 1]);
    if (size > left - 3) {
      return verdict::invalid("v2 header has a truncated TLV: type " + hex(type, 2) +
                              " at offset " + std::to_string(pos) + " declares a " +
                              std::to_string(size) + "-byte value, but the header has " +
                              std::to_string(left - 3) + " byte(s) left");
    }
    if (type == proxy_tlv_crc32c) {
      if (size != 4) {
        return verdict::invalid("v2 header has a CRC32C TLV with a " + std::to_string(size) +
                                "-byte value (want 4)");
      }
      if (crc_at != 0) return verdict::invalid("v2 header has more than one CRC32C TLV");
      crc_at = pos + 3;
    } else if (type == proxy_tlv_unique_id && size > proxy_unique_id_max_size) {
      return verdict::invalid("v2 header has a UNIQUE_ID TLV of " + std::to_string(size) +
                              " bytes, above the 128 the spec allows");
    }
    if (n < pos + 3 + size) return verdict::incomplete(total);
    if (type != proxy_tlv_crc32c) {
      h.tlvs.push_back(proxy_tlv{type, std::string(chars(b.subspan(pos + 3, size)))});
    }
    pos += 3 + size;
  }
  if (n < total) return verdict::incomplete(total);  // a LOCAL block skipped unread

  if (crc_at != 0) {
    // §2.2.3: the checksum of the whole header with the checksum field zeroed.
    static constexpr std::uint8_t zeros[4] = {};
    const std::uint32_t want = load32(&b[crc_at]);
    std::uint32_t got = crc32c(b.first(crc_at));
    got = crc32c(zeros, got);
    got = crc32c(b.subspan(crc_at + 4, total - crc_at - 4), got);
    if (got != want) {
      return verdict::invalid("v2 header fails its CRC32C check: the TLV holds " + hex(want, 8) +
                              ", the header sums to " + hex(got, 8));
    }
  }
  h.crc32c = crc_at != 0;
  return verdict::complete(total, std::move(h));
}

inline result<void> check_path(const std::string& path, const char* name) {
  if (path.size() > proxy_unix_path_size) {
    return make_error(errc::out_of_range, std::string("PROXY header's ") + name + " path is " +
                                              std::to_string(path.size()) +
                                              " bytes, above the 108 an AF_UNIX address holds");
  }
  if (path.find('\0') != std::string::npos) {
    return make_error(errc::invalid_argument, std::string("PROXY header's ") + name + " path " +
                                                  quote(path) +
                                                  " contains a NUL byte, which would end it early");
  }
  return {};
}

inline std::size_t tlv_bytes(const proxy_header& h) noexcept {
  std::size_t n = h.crc32c ? crc_tlv_size : 0;
  for (const auto& t : h.tlvs) n += 3 + t.value.size();
  return n;
}

// An error naming what `h` holds that a v2 header cannot carry, or success.
inline result<void> check_v2(const proxy_header& h) {
  const bool ip = h.family == proxy_family::inet || h.family == proxy_family::inet6;
  if (h.command == proxy_command::proxy) {
    if (h.family != proxy_family::unspec && h.transport == proxy_transport::unspec) {
      return make_error(errc::invalid_argument, "a v2 PROXY header of family " +
                                                    std::string(family_name(h.family)) +
                                                    " needs transport stream or dgram, not unspec");
    }
    if (ip) {
      if (auto r = check_endpoints(h); !r) return r;
    }
    if (h.family == proxy_family::unix_socket) {
      if (auto r = check_path(h.source_path, "source"); !r) return r;
      if (auto r = check_path(h.destination_path, "destination"); !r) return r;
    }
  }
  for (const auto& t : h.tlvs) {
    if (t.type == proxy_tlv_crc32c) {
      return make_error(errc::invalid_argument,
                        "PROXY header has a CRC32C TLV in tlvs; set proxy_header::crc32c "
                        "instead, so that it is computed over the final bytes");
    }
    if (t.value.size() > 65535) {
      return make_error(errc::out_of_range, "PROXY header has a TLV of type " + hex(t.type, 2) +
                                                " with " + std::to_string(t.value.size()) +
                                                " bytes, above the 65535 a TLV holds");
    }
    if (t.type == proxy_tlv_unique_id && t.value.size() > proxy_unique_id_max_size) {
      return make_error(errc::out_of_range, "PROXY header has a UNIQUE_ID TLV of " +
                                                std::to_string(t.value.size()) +
                                                " bytes, above the 128 the spec allows");
    }
  }
  const std::size_t block = h.command == proxy_command::proxy ? address_block_size(h.family) : 0;
  const std::size_t length = block + tlv_bytes(h);
  if (length > 65535) {
    return make_error(errc::out_of_range, "v2 PROXY header would need " + std::to_string(length) +
                                              " bytes after its 16 fixed ones; at most 65535 fit");
  }
  return {};
}

inline void store16(std::uint8_t* p, std::size_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v & 0xffu);
}

inline void write_v2(const proxy_header& h, std::span<std::uint8_t> out,
                     std::size_t total) noexcept {
  std::uint8_t* p = out.data();
  std::copy(v2_signature.begin(), v2_signature.end(), p);
  const bool local = h.command == proxy_command::local;
  p[12] = static_cast<std::uint8_t>(0x20u | (local ? 0u : 1u));
  p[13] = local || h.family == proxy_family::unspec
              ? std::uint8_t{0}
              : static_cast<std::uint8_t>(static_cast<unsigned>(h.family) << 4 |
                                          static_cast<unsigned>(h.transport));
  store16(p + 14, total - v2_fixed_size);
  std::size_t pos = v2_fixed_size;
  if (!local) {
    if (h.family == proxy_family::inet || h.family == proxy_family::inet6) {
      const auto src = h.source.address().bytes();
      const auto dst = h.destination.address().bytes();
      std::copy(src.begin(), src.end(), p + pos);
      std::copy(dst.begin(), dst.end(), p + pos + src.size());
      pos += 2 * src.size();
      store16(p + pos, h.source.port());
      store16(p + pos + 2, h.destination.port());
      pos += 4;
    } else if (h.family == proxy_family::unix_socket) {
      for (const std::string* path : {&h.source_path, &h.destination_path}) {
        std::memset(p + pos, 0, proxy_unix_path_size);
        std::memcpy(p + pos, path->data(), path->size());
        pos += proxy_unix_path_size;
      }
    }
  }
  for (const auto& t : h.tlvs) {
    p[pos] = t.type;
    store16(p + pos + 1, t.value.size());
    if (!t.value.empty()) std::memcpy(p + pos + 3, t.value.data(), t.value.size());
    pos += 3 + t.value.size();
  }
  if (h.crc32c) {
    p[pos] = proxy_tlv_crc32c;
    store16(p + pos + 1, 4);
    std::memset(p + pos + 3, 0, 4);
    const std::uint32_t sum = crc32c(out.first(total));
    for (int i = 0; i < 4; ++i)
      p[pos + 3 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sum >> (24 - 8 * i));
    pos += crc_tlv_size;
  }
  LBKIT_ASSERT(pos == total, "write_v2 wrote a different size than encoded_size computed");
}

}  // namespace lbkit::detail::proxy_protocol
