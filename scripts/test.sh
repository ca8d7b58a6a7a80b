#!/usr/bin/env bash
# Runs every test: the Rust tests (unit, integration, header drift), then the CMake build of the
# C tests and ctest (C API, header as C99/C++, exported symbols, native libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${WMLICENSE_JOBS:-2}

echo "== cargo clippy"
cargo clippy --workspace --all-targets -j "$jobs" -- -D warnings

echo "== cargo test"
cargo test --workspace -j "$jobs"

echo "== cmake build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug ${WMLICENSE_CMAKE_ARGS:-}
cmake --build build -j "$jobs"

echo "== ctest"
rm -rf build/test-tmp
ctest --test-dir build --output-on-failure -j "$jobs"
