// SPDX-License-Identifier: MIT
// A minimal lbkit consumer, built by the fetch_content and find_package projects next to this
// file: it proves that lbkit::lbkit brings the include path, C++20, threads and the version
// macros, and that the library works when consumed (a registry change reaches a reader).
#include <cstdio>

#include <lbkit/lbkit.hpp>

static_assert(LBKIT_VERSION_MAJOR == 0, "consumer built against an unexpected lbkit version");

int main() {
  auto ep = lbkit::endpoint::parse("[::1]:8080");
  if (!ep) return std::fprintf(stderr, "%s\n", ep.error().message.c_str()), 1;
  lbkit::backend_registry registry;
  lbkit::snapshot_cache cache(registry);
  if (auto r = registry.add({"web-1", *ep, 3}); !r) {
    return std::fprintf(stderr, "%s\n", r.error().message.c_str()), 1;
  }
  const lbkit::snapshot& s = cache.get();
  if (s.version() != 1 || s.size() != 1 || s.members()[0].weight() != 3) return 1;
  std::printf("lbkit %d.%d.%d consumer: %s -> %s\n", LBKIT_VERSION_MAJOR, LBKIT_VERSION_MINOR,
              LBKIT_VERSION_PATCH, s.members()[0].id().c_str(),
              s.members()[0].address().to_string().c_str());
  return 0;
}
