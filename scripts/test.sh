#!/usr/bin/env bash
# Runs every test: clippy, the Rust tests (unit, integration, header drift, test vector), then
# the CMake build of the C tests and ctest (C API, header as C99/C++, exported symbols, native
# libraries, a short run of the kill -9 crash harness), each C test once more under valgrind
# (when installed, with smaller counts), and the whole C suite again built with AddressSanitizer
# and UBSan (not the crash harness: it checks what killed processes leave on disk, which the
# sanitizers do not change).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${WMLICENSE_JOBS:-2}

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all --check
elif [ "${CI:-}" = true ]; then
  echo "rustfmt is missing (CI=true: .ci/run installs it)" >&2
  exit 1
else
  echo "== (no rustfmt: the formatting check is skipped; rustup component add rustfmt)"
fi

echo "== cargo clippy"
cargo clippy --workspace --all-targets -j "$jobs" -- -D warnings

echo "== API reference (every declaration of the header documented, docs/api.md up to date)"
python3 scripts/apiref.py --check

# PostgreSQL for the service's replica tests (service/tests/replicas.rs): a throwaway server in
# a temporary directory, stopped on exit. Without one those tests skip, except on CI (CI=true),
# where a PostgreSQL that does not start fails the run. A WMLICENSE_TEST_DATABASE_URL already
# set is used as it is.
pgdir=""
stop_pg() {
  if [ -n "$pgdir" ]; then
    bash scripts/pg.sh stop "$pgdir" >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  fi
}
trap stop_pg EXIT
if [ -z "${WMLICENSE_TEST_DATABASE_URL:-}" ]; then
  pgdir=$(mktemp -d "${TMPDIR:-/tmp}/wmlicense-pg.XXXXXX")
  if url=$(bash scripts/pg.sh start "$pgdir"); then
    export WMLICENSE_TEST_DATABASE_URL=$url
    echo "== PostgreSQL for the tests: $url"
  elif [ "${CI:-}" = true ]; then
    echo "PostgreSQL did not start (CI=true: the replica tests must run)" >&2
    exit 1
  else
    echo "== (PostgreSQL did not start: the service's replica tests skip)"
  fi
fi

echo "== cargo test"
cargo test --workspace -j "$jobs"

if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists sqlite3; then
  echo "== cargo test against the system SQLite ($(pkg-config --modversion sqlite3))"
  cargo test --lib --tests --no-default-features --features system-sqlite -j "$jobs"
else
  echo "== (no system SQLite development files: the system-sqlite feature is not tested)"
fi

valgrind=OFF
command -v valgrind >/dev/null 2>&1 && valgrind=ON

echo "== cmake build (valgrind runs: $valgrind)"
# `cargo test --workspace` above built target/debug/wmlicense-service (test_service starts it):
# cmake does not build it again (a `cargo build -p` alone unifies features differently and
# would rebuild its whole dependency tree).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug -DWMLICENSE_VALGRIND=$valgrind -DWMLICENSE_BUILD_SERVICE=OFF ${WMLICENSE_CMAKE_ARGS:-}
cmake --build build -j "$jobs"

echo "== ctest"
rm -rf build/test-tmp
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== Python package: pytest in a throwaway venv (reuses target/debug/libwmlicense.so)"
bash bindings/python/run_tests.sh

echo "== cmake build with AddressSanitizer + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWMLICENSE_SANITIZE=ON -DWMLICENSE_BUILD_SERVICE=OFF ${WMLICENSE_CMAKE_ARGS:-}
cmake --build build-asan -j "$jobs"

echo "== ctest (sanitized)"
rm -rf build-asan/test-tmp
ctest --test-dir build-asan --output-on-failure -j "$jobs" -E 'native_static_libs|exported_symbols|crash_harness_quick'

