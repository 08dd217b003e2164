#!/usr/bin/env bash
# Formats every C++ file of the tree with clang-format (as .clang-format says); the test
# build.format (tests/format.cmake) checks that nothing is left to do.
set -euo pipefail
cd "$(dirname "$0")/.."
format=$(command -v clang-format-14 || command -v clang-format)
git ls-files -co --exclude-standard 'include/*.hpp' 'examples/*.hpp' 'examples/*.cpp' 'tests/*.hpp' 'tests/*.cpp' \
  'bench/*.hpp' 'bench/*.cpp' | xargs "$format" -i --style=file
