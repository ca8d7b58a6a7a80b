#!/usr/bin/env bash
# Grant throughput of wmlicense-service: builds the release binary and the load generator
# (service/examples/grant_bench.rs), starts a throwaway PostgreSQL (scripts/pg.sh), and runs
# 1, 16 and 64 concurrent clients against
#   - one instance on its SQLite ledger,
#   - one instance on PostgreSQL,
#   - three replicas on one PostgreSQL database (requests round-robin over them);
# then prints one table.
#
# Every request is a new device (grant_bench --mode new: the write path), spread over 4096
# lineages, with --device-limit 1000000 so that nothing is refused and --rate-limit 0 (the
# per-lineage rate limit is not what is measured). The load generator runs on
# the same machine as the services and the database, and competes with them for its cores.
#
# Environment: WMLICENSE_BENCH_SECONDS (default 10) per run, WMLICENSE_BENCH_CONCURRENCY
# (default "1 16 64"), WMLICENSE_BENCH_MODE (new|counted, default new), WMLICENSE_JOBS (build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${WMLICENSE_BENCH_SECONDS:-10}
levels=${WMLICENSE_BENCH_CONCURRENCY:-"1 16 64"}
mode=${WMLICENSE_BENCH_MODE:-new}
jobs=${WMLICENSE_JOBS:-2}

echo "== building (release)" >&2
cargo build --release -p wmlicense-service --bins --examples -j "$jobs" >&2
bin=$PWD/target/release/wmlicense-service
bench=$PWD/target/release/examples/grant_bench

work=$(mktemp -d "${TMPDIR:-/tmp}/wmlicense-bench.XXXXXX")
# PostgreSQL's directory of its own (as root, scripts/pg.sh hands it to the user postgres, who
# could not enter $work).
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/wmlicense-bench-pg.XXXXXX")
pids=()
stop_services() {
  local p
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_services
  bash scripts/pg.sh stop "$pgdir" >/dev/null 2>&1 || true
  rm -rf "$work" "$pgdir"
}
trap cleanup EXIT

echo "== starting PostgreSQL" >&2
# Durable commits, as in production (the test command's throwaway server runs without fsync).
pg_url=$(WMLICENSE_PG_FSYNC=on bash scripts/pg.sh start "$pgdir")
pg_server=${pg_url%/*}
psql_bin=""
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/psql" ] && psql_bin=$d/psql
done
[ -n "$psql_bin" ] || psql_bin=$(command -v psql)

# new_database NAME: a fresh database on the throwaway server; prints its URL.
new_database() {
  "$psql_bin" -q -X "$pg_url" -c "CREATE DATABASE $1" >&2
  echo "$pg_server/$1"
}

# start_service DATA_DIR [serve options...]: starts one instance in the background, waits for
# its listen line, sets svc_url to its URL.
start_service() {
  local data=$1
  shift
  mkdir -p "$data"
  "$bin" serve --listen 127.0.0.1:0 --data "$data" --device-limit 1000000 --rate-limit 0 --client-rate-limit 0 "$@" \
    >"$data.out" 2>"$data.log" &
  pids+=($!)
  local i line
  for i in $(seq 1 600); do
    line=$(head -n1 "$data.out" 2>/dev/null || true)
    if [ -n "$line" ]; then
      svc_url=${line#wmlicense-service listening on }
      return 0
    fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "wmlicense-service did not start; its log:" >&2
  tail -n 20 "$data.log" >&2
  exit 1
}

# copy_keys FROM_DATA TO_DATA: a replica's copy of the first one's keys.
copy_keys() {
  mkdir -p "$2/keys"
  chmod 700 "$2/keys"
  cp -p "$1"/keys/* "$2/keys/"
}

rows=()
# run_levels LABEL URLS: grant_bench at every concurrency level.
run_levels() {
  local label=$1 urls=$2 c out
  for c in $levels; do
    echo "== $label, $c clients" >&2
    if ! out=$("$bench" --urls "$urls" --concurrency "$c" --duration "$seconds" --mode "$mode"); then
      out="${out:-} (grant_bench failed)"
    fi
    echo "   $out" >&2
    rows+=("$label|$c|$out")
  done
}

# SQLite, one instance.
start_service "$work/sqlite"
run_levels "SQLite, 1 instance" "$svc_url"
stop_services

# PostgreSQL, one instance.
db=$(new_database bench_single)
start_service "$work/pg1" --database "$db"
run_levels "PostgreSQL, 1 instance" "$svc_url"
stop_services

# PostgreSQL, three replicas.
db=$(new_database bench_replicas)
start_service "$work/r1" --database "$db"
urls=$svc_url
copy_keys "$work/r1" "$work/r2"
copy_keys "$work/r1" "$work/r3"
start_service "$work/r2" --database "$db"
urls+=",$svc_url"
start_service "$work/r3" --database "$db"
urls+=",$svc_url"
run_levels "PostgreSQL, 3 replicas" "$urls"
stop_services

field() { # field NAME LINE
  local kv
  for kv in $2; do
    [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }
  done
  echo "?"
}

echo
echo "wmlicense-service grants ($mode devices, ${seconds}s per run, $(nproc) cores, client on the same machine)"
printf '| %-24s | %7s | %9s | %8s | %8s | %8s | %7s | %9s | %6s |\n' \
  "ledger" "clients" "grants/s" "p50 ms" "p99 ms" "granted" "refused" "transient" "failed"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' \
  "$(printf -- '-%.0s' {1..26})" "---------" "-----------" "----------" "----------" \
  "----------" "---------" "-----------" "--------"
for r in "${rows[@]}"; do
  IFS='|' read -r label c line <<<"$r"
  printf '| %-24s | %7s | %9s | %8s | %8s | %8s | %7s | %9s | %6s |\n' "$label" "$c" \
    "$(field grants_per_s "$line")" "$(field p50_ms "$line")" "$(field p99_ms "$line")" \
    "$(field granted "$line")" "$(field refused "$line")" "$(field transient "$line")" \
    "$(field failed "$line")"
done
