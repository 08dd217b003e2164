#!/usr/bin/env bash
# Quick start, command 1: builds the release preset and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target lbkit_demo >/dev/null
exec build/release/examples/lbkit_demo
