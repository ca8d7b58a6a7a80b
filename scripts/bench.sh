#!/usr/bin/env bash
# The benchmark. Builds the library (cargo release profile) and the C benchmark into build-bench,
# then:
#  1. runs the benchmark (bench/bench.c); arguments pass through (license counts, e.g.
#     `scripts/bench.sh 10000 100000`; default 10000 100000 1000000). For each N it builds a
#     store and measures, on that store: a full backup and a full restore into a new store (wall
#     and CPU time, peak RSS), the peers timed in the same run (`sqlite3 .backup`, `.dump` and
#     `.read` of the dump into a new database, and `restic backup` / `restic restore` when restic
#     is on PATH), cancel -> END, and how long the starting calls take to return. Then, with the
#     largest N, a contention test: 200 small stores backed up by one restorer in turn vs. by 200
#     restorers at once, with the time each of those 200 starting calls takes under load. It
#     makes and removes its own scratch directory under $TMPDIR (or /tmp) and points
#     WMLICENSE_HOME at it;
#  2. when valgrind is installed, counts the instructions of one backup and one restore of a
#     store of 20,000 licenses (`bench --op ...` under valgrind --tool=callgrind; this VM has no
#     hardware counters for perf) and prints them per license.
# Output: one summary table (ours vs. the peers as ratios, peak RSS), the cancel, call-return,
# contention and instruction figures, a "goals" block (each goal of the issue with the measured
# figure and met/MISSED), and the table again as Markdown after a line "markdown:". A missed goal
# never fails the script; the exit status is non-zero only when an operation fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-bench -DWMLICENSE_CARGO_PROFILE=release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench --target bench -j 2

CALLGRIND_N=20000
bench=./build-bench/bench
scratch=$(mktemp -d "${TMPDIR:-/tmp}/wmlicense-bench-sh.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# 1. The timed run. Its report goes to a file: the instruction counts are printed in it, before
# its goals block. Progress goes to stderr as it happens.
rc=0
"$bench" "$@" >"$scratch/report" || rc=$?

# 2. Instruction counts under callgrind (it serializes the library's worker threads, which is
# fine for counting). The callgrind output files stay in the scratch directory, removed at exit.
# Runs `bench --op $1 $2 $3` under callgrind; prints its instruction total (the "summary:" or
# "totals:" line of the output file).
under_callgrind() {
  local out="$scratch/callgrind.$1.out" log="$scratch/callgrind.$1.log"
  if ! valgrind --tool=callgrind --callgrind-out-file="$out" "$bench" --op "$1" "$2" "$3" \
      >/dev/null 2>"$log"; then
    cat "$log" >&2
    return 1
  fi
  awk '/^(summary|totals):/ { print $2; found = 1; exit } END { exit !found }' "$out"
}
instructions() {
  local total_b total_r vg
  if ! command -v valgrind >/dev/null 2>&1; then
    echo "instructions: valgrind: not installed (apt-get install valgrind): skipped"
    return 0
  fi
  vg=$(valgrind --version 2>/dev/null || echo valgrind)
  export WMLICENSE_HOME="$scratch/home" # the backup and the restore share the embedded service
  mkdir -p "$WMLICENSE_HOME"
  echo "callgrind: a store of $CALLGRIND_N licenses, its backup and restore under $vg..." >&2
  if ! "$bench" --op build "$scratch/store" "$CALLGRIND_N" >/dev/null; then
    echo "instructions: FAILED: building the store (see stderr)"
    return 1
  fi
  if ! total_b=$(under_callgrind backup "$scratch/store" "$scratch/backup"); then
    echo "instructions: FAILED: the backup under callgrind (see stderr)"
    return 1
  fi
  if ! total_r=$(under_callgrind restore "$scratch/backup" "$scratch/restored"); then
    echo "instructions: FAILED: the restore under callgrind (see stderr)"
    return 1
  fi
  echo "instructions ($vg --tool=callgrind, the whole process: start, library, worker threads;"
  echo "  one store of $CALLGRIND_N licenses):"
  awk -v b="$total_b" -v r="$total_r" -v n="$CALLGRIND_N" 'BEGIN {
    printf "  %-26s %15.0f instructions, %9.0f per license\n", "backup:", b, b / n
    printf "  %-26s %15.0f instructions, %9.0f per license\n", "restore into a new store:", r, r / n
  }'
  rm -f "$scratch"/callgrind.*
}
irc=0
instructions >"$scratch/instructions" || irc=$?

# The report with the instruction figures spliced in before its goals block.
if grep -q '^goals' "$scratch/report"; then
  sed -n '/^goals/,$!p' "$scratch/report"
  cat "$scratch/instructions"
  echo
  sed -n '/^goals/,$p' "$scratch/report"
else
  cat "$scratch/report"
  echo
  cat "$scratch/instructions"
fi
if [[ $rc -ne 0 ]]; then exit "$rc"; fi
exit "$irc"
