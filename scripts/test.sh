#!/usr/bin/env bash
# The test command, in two tiers (SPEC §9).
#
#   bash scripts/test.sh          the quick tier, for every change: formatting, clippy, the API
#                                 reference check, the Rust tests (the service's replica tests
#                                 against a throwaway PostgreSQL), the C tests at quick sizes
#                                 (ctest labels `quick` and `service`), the Python package's
#                                 pytest in a venv.
#   bash scripts/test.sh --full   the quick tier at full sizes, then valgrind (label `valgrind`),
#                                 the stress tests (`stress`), the kill -9 crash harness
#                                 (`crash`), packaging (`packaging`: exported symbols, native
#                                 libraries, the README's snippet, outside projects consuming the
#                                 installed tree), the system-SQLite build of wmlicense-core, a
#                                 Release build of this project installed and consumed by an
#                                 outside project, the whole C suite again under ASan/UBSan,
#                                 schemathesis against the running service, and Windows
#                                 (scripts/cross.sh windows: the C tests, the demo and the CLI
#                                 under Wine). `.ci/run` runs this.
#
# WMLICENSE_TEST_FULL=1 gives the quick tier the full sizes too. WMLICENSE_JOBS (default 2) is
# the parallelism; WMLICENSE_CMAKE_ARGS is passed to every cmake configure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${WMLICENSE_JOBS:-2}
full=0
case "${1:-}" in
  --full) full=1 ;;
  "") ;;
  *) echo "usage: bash scripts/test.sh [--full]" >&2; exit 2 ;;
esac
# The C tests' big counts (200,000 licenses, 10,000 puts per process, ...) only in --full or
# with WMLICENSE_TEST_FULL=1; the valgrind runs always take the small ones.
if [ "$full" = 1 ] || [ "${WMLICENSE_TEST_FULL:-}" = 1 ]; then
  export WMLICENSE_TEST_FULL=1
  unset WMLICENSE_TEST_QUICK
else
  export WMLICENSE_TEST_QUICK=1
fi
started=$SECONDS
stage() { echo "== [$((SECONDS - started)) s] $*"; }

if cargo fmt --version >/dev/null 2>&1; then
  stage "cargo fmt --check"
  cargo fmt --all --check
elif [ "${CI:-}" = true ]; then
  echo "rustfmt is missing (CI=true: .ci/run installs it)" >&2
  exit 1
else
  stage "(no rustfmt: the formatting check is skipped; rustup component add rustfmt)"
fi

stage "cargo clippy"
cargo clippy --workspace --all-targets -j "$jobs" -- -D warnings

stage "API reference (every declaration of the header documented, docs/api.md up to date)"
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
    stage "PostgreSQL for the tests: $url"
  elif [ "${CI:-}" = true ]; then
    echo "PostgreSQL did not start (CI=true: the replica tests must run)" >&2
    exit 1
  else
    stage "(PostgreSQL did not start: the service's replica tests skip)"
  fi
fi

stage "cargo test"
cargo test --workspace -j "$jobs"

if [ "$full" = 1 ]; then
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists sqlite3; then
    stage "wmlicense-core's tests against the system SQLite ($(pkg-config --modversion sqlite3))"
    cargo test -p wmlicense-core --no-default-features --features system-sqlite -j "$jobs"
  elif [ "${CI:-}" = true ]; then
    echo "the system SQLite's development files are missing (CI=true: .ci/run installs them)" >&2
    exit 1
  else
    stage "(no system SQLite development files: the system-sqlite feature is not tested)"
  fi
fi

valgrind=OFF
if [ "$full" = 1 ] && command -v valgrind >/dev/null 2>&1; then
  valgrind=ON
elif [ "$full" = 1 ] && [ "${CI:-}" = true ]; then
  echo "valgrind is missing (CI=true: .ci/run installs it)" >&2
  exit 1
fi

stage "cmake build (Debug; valgrind runs: $valgrind)"
# `cargo test --workspace` above built target/debug/wmlicense-service (test_service starts it):
# cmake does not build it again (a `cargo build -p` alone unifies features differently and
# would rebuild its whole dependency tree).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug -DWMLICENSE_VALGRIND=$valgrind -DWMLICENSE_BUILD_SERVICE=OFF ${WMLICENSE_CMAKE_ARGS:-}
cmake --build build -j "$jobs"

rm -rf build/test-tmp
if [ "$full" = 1 ]; then
  stage "ctest (every label: quick, service, stress, crash, packaging, valgrind)"
  ctest --test-dir build --output-on-failure -j "$jobs"
else
  stage "ctest -L 'quick|service' (quick sizes)"
  ctest --test-dir build --output-on-failure -j "$jobs" -L 'quick|service'
fi

stage "Python package: pytest in a throwaway venv (reuses target/debug/libwmlicense.so)"
bash bindings/python/run_tests.sh

if [ "$full" = 1 ]; then
  stage "Release build of this project (C tests warning-free), installed and consumed by outside projects"
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWMLICENSE_BUILD_SERVICE=OFF ${WMLICENSE_CMAKE_ARGS:-}
  cmake --build build-release -j "$jobs"
  rm -rf build-release/test-tmp
  ctest --test-dir build-release --output-on-failure -j "$jobs" -R '^(consumers|test_backup_restore|test_store)$'

  stage "cmake build with AddressSanitizer + UBSan"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWMLICENSE_SANITIZE=ON -DWMLICENSE_BUILD_SERVICE=OFF ${WMLICENSE_CMAKE_ARGS:-}
  cmake --build build-asan -j "$jobs"

  stage "ctest (sanitized; not packaging or the crash harness)"
  rm -rf build-asan/test-tmp
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE 'packaging|crash'

  stage "schemathesis against the service's OpenAPI description (scripts/schemathesis.sh)"
  # The service binary `cargo test --workspace` built above (a `cargo build -p` would unify
  # features differently and rebuild its dependencies).
  WMLICENSE_SERVICE_BIN=$PWD/target/debug/wmlicense-service bash scripts/schemathesis.sh

  if [ -x /usr/bin/x86_64-w64-mingw32-gcc ] && [ -x /usr/bin/qemu-s390x-static ] && [ -d /usr/lib/rustlib/src/rust/library/std ]; then
    stage "other platforms (scripts/cross.sh): Windows under Wine"
    bash scripts/cross.sh windows
  elif [ "${CI:-}" = true ]; then
    echo "the cross toolchains are missing (CI=true: .ci/run installs them)" >&2
    exit 1
  else
    stage "(no cross toolchains: scripts/cross.sh is skipped; see its header for the packages)"
  fi
fi
stage "done ($([ "$full" = 1 ] && echo full || echo quick) tier)"
