#!/usr/bin/env bash
# Builds the library and the C demo, then runs the demo against a store under a fresh
# temporary WMLICENSE_HOME (the embedded defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build --target demo -j 2
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
WMLICENSE_HOME="$home" ./build/demo
