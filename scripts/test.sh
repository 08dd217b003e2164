#!/usr/bin/env bash
# Quick start, command 2: every test, as CI runs them.
#   1. debug   g++ 12,   ASan + UBSan, -Werror: unit, conformance, stress, integration,
#              fuzz corpora, header/ODR checks, CMake consumers
#   2. clang   clang 14, ASan + UBSan, -Werror -Wthread-safety: the same, libFuzzer runs,
#              the L7 router's tests and the soaks
#   3. tsan    clang 14, ThreadSanitizer: the tests that run more than one thread (stress,
#              integration, unit tests that start threads), then the stress tests 5 more times
#   4. release g++ 12, -O2: the tests but the header checks, plus the demo and the benchmarks
# Each preset builds what it can check: a header compiles the same under -O2, and TSan can
# show nothing in a test of one thread (LBKIT_CHECK_HEADERS, LBKIT_THREADED_TESTS_ONLY in
# CMakePresets.json).
# The L7 router (Boost.Beast, slow to compile) and its tests are built and run under clang
# (ASan + UBSan) only, so that the CI run stays inside its time budget; the other presets
# build it too when configured by hand (LBKIT_L7_ROUTER is ON by default). The soaks (label
# soak: each example for a minute under faults; LBKIT_SOAK_SECONDS for longer) run there too.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc)
for preset in debug clang tsan release; do
  echo "==== $preset"
  router=OFF soak=(-LE soak)
  if [[ $preset == clang ]]; then router=ON soak=(); fi
  cmake --preset "$preset" -DLBKIT_L7_ROUTER=$router >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs" "${soak[@]}"
done
echo "==== tsan: stress tests, repeated"
ctest --preset tsan -L stress --repeat until-fail:5
