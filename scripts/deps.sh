#!/usr/bin/env bash
# Installs the Debian 12 packages lbkit's build, tests, examples and benchmarks use, if any
# is missing. Needs root (or sudo) only when something has to be installed.
set -euo pipefail

packages=(
  g++ clang libclang-rt-14-dev cmake ninja-build   # toolchains (g++ 12, clang 14), build
  clang-format                                     # tests: build.format
  doctest-dev                                      # tests
  libbenchmark-dev                                 # bench/
  libcli11-dev                                     # examples: command lines
  libboost-dev libtomlplusplus-dev                 # the L7 router: Asio + Beast, TOML
  libtcmalloc-minimal4                             # the L7 router's allocator (optional)
  haproxy nginx libnginx-mod-stream wrk            # interop tests and bench/proxy peers
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "lbkit: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "lbkit: run as root or install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
