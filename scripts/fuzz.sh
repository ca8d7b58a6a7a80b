#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS seconds (default 60), one after the other,
# starting from its committed seeds (fuzz/seeds/<target>/), and prints per target the inputs
# executed and whether it found a crash (the input is then in fuzz/artifacts/<target>/).
#
#   bash scripts/fuzz.sh [SECONDS]
#
# Needs a nightly Rust toolchain (rustup toolchain install nightly) and cargo-fuzz
# (cargo install cargo-fuzz); without them it says so and exits 0. Not part of scripts/test.sh.
# The corpus grows in fuzz/corpus/<target>/ (ignored by git; the seeds are copied there, so the
# committed ones stay as they are); FUZZ_FRESH=1 starts it again from the seeds only. Logs go to
# fuzz/logs/. WMLICENSE_JOBS (default 2) bounds the build's parallel jobs. Exits 1 when a target
# found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [SECONDS]   (seconds per target, default 60)" >&2
  exit 2
fi
targets=(backup_reader c_props c_store)

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz.sh: SKIPPED: no nightly Rust toolchain is installed."
  echo "  cargo-fuzz needs nightly (libFuzzer and sanitizer flags are unstable). Install it with"
  echo "    rustup toolchain install nightly"
  echo "  and run this script again. Nothing was fuzzed."
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: SKIPPED: cargo-fuzz is not installed."
  echo "  Install it with: cargo install cargo-fuzz"
  echo "  and run this script again. Nothing was fuzzed."
  exit 0
fi

echo "== building the fuzz targets (nightly, AddressSanitizer, debug assertions)"
(cd fuzz && CARGO_BUILD_JOBS=${WMLICENSE_JOBS:-2} cargo +nightly fuzz build)

# The c_store target keeps its store here (tmpfs when there is one: fsync is cheap there).
scratch_base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_base=/dev/shm
scratch=$(mktemp -d "$scratch_base/wmlicense-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export WMLICENSE_FUZZ_TMP=$scratch

mkdir -p fuzz/logs
summary=()
crashed=0
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  [ "${FUZZ_FRESH:-0}" = 1 ] && rm -rf "$corpus"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  cp -p fuzz/seeds/"$t"/* "$corpus"/
  log=fuzz/logs/$t.log
  echo "== fuzzing $t for ${seconds}s (log: $log)"
  status=0
  # -timeout: an input running 10 s counts as a hang (an endless loop is a finding).
  (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
    >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    # No final stats (a crash ends the run early): take the last progress line.
    execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -1)
  fi
  peak=$(sed -n 's/^stat::peak_rss_mb: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    result="no crash"
  else
    crashed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    kind=$(grep -m1 -oE 'ERROR: (libFuzzer|AddressSanitizer): [a-z-]+|panicked at [^:]*:[0-9]+' "$log" || true)
    result="CRASH (exit $status${kind:+: $kind}${artifact:+; input: fuzz/$artifact})"
  fi
  line=$(printf '%-14s %6ss  %12s executions  peak RSS %5s MB  %s' "$t" "$seconds" "${execs:-?}" "${peak:-?}" "$result")
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$crashed"
