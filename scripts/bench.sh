#!/usr/bin/env bash
# Builds the library (cargo release profile) and the C benchmark into build-bench, then runs the
# benchmark; arguments pass through (license counts, e.g. `scripts/bench.sh 10000 100000`;
# default 10000 100000 1000000). The benchmark makes and removes its own scratch directory
# under $TMPDIR (or /tmp) and points WMLICENSE_HOME at it.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-bench -DWMLICENSE_CARGO_PROFILE=release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench --target bench -j 2
exec ./build-bench/bench "$@"
