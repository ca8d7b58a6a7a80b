#!/usr/bin/env bash
# Builds the crash harness in the CMake build directory (build/, Debug, like scripts/test.sh)
# and runs it in its three modes: a backup, a restore into a store that holds licenses, and a
# restore into a store that does not exist yet are each killed with SIGKILL at RUNS random
# instants (default 200 per mode); after each kill it checks that the backup / store is exactly
# the old or the complete new one and that the next operation on the same place sweeps what
# the killed one left. Prints one summary table; exit status 1 when any check was violated.
#   scripts/crash.sh [RUNS] [harness options: -s SEED, -l LICENSES, -k ...]
# Scratch directories go to $WMLICENSE_TEST_TMP (default build/crash-tmp) and are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
[ $# -gt 0 ] && shift
jobs=${WMLICENSE_JOBS:-2}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build --target crash_harness -j "$jobs"
export WMLICENSE_TEST_TMP=${WMLICENSE_TEST_TMP:-$PWD/build/crash-tmp}
exec ./build/crash_harness -n "$runs" "$@" all
