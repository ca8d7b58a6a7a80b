#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and the benchmark.
#
#   scripts/pg.sh start DIR   initdb into DIR/data (trust auth), start it on a free port of
#                             127.0.0.1 (its socket in DIR), create the database `wmlicense`,
#                             print its URL: postgres://USER@127.0.0.1:PORT/wmlicense
#   scripts/pg.sh stop DIR    stop it (DIR stays; remove it yourself)
#
# USER is the OS user that ran initdb: as root the server runs as `postgres` (PostgreSQL refuses
# to run as root; DIR is handed to that user), otherwise as whoever runs this script.
# The binaries are the newest /usr/lib/postgresql/*/bin (Debian/Ubuntu), else initdb on PATH.
# It runs without fsync (a test's data need not survive a power loss) unless WMLICENSE_PG_FSYNC=on
# (the service benchmark sets it). Only the URL goes to stdout; progress and errors go to stderr, the server's log to DIR/log.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

find_bin() {
  local d newest=""
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] || continue
    if [ -z "$newest" ] || [ "$(printf '%s\n%s\n' "$newest" "$d" | sort -V | tail -n1)" = "$d" ]; then
      newest=$d
    fi
  done
  if [ -z "$newest" ] && command -v initdb >/dev/null 2>&1; then
    newest=$(dirname "$(readlink -f "$(command -v initdb)")")
  fi
  [ -n "$newest" ] || { echo "pg.sh: no PostgreSQL found (initdb)" >&2; return 1; }
  echo "$newest"
}

# Runs a command as the server's OS user, from DIR (a cwd the user may not enter makes initdb
# and pg_ctl complain).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$dir" && runuser -u postgres -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

case $cmd in
start)
  bin=$(find_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "pg.sh: running as root and there is no user postgres" >&2; exit 1; }
    user=postgres
    chown postgres: "$dir"
    # The server user must be able to reach DIR.
    if ! runuser -u postgres -- test -w "$dir"; then
      echo "pg.sh: user postgres cannot write $dir (a parent directory is closed to it: give" \
        "PostgreSQL a directory of its own, e.g. mktemp -d)" >&2
      exit 1
    fi
  else
    user=$(id -un)
  fi
  if [ -e "$dir/data/PG_VERSION" ]; then
    echo "pg.sh: $dir/data already holds a cluster" >&2
    exit 1
  fi
  as_pg "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust --encoding=UTF8 --locale=C \
    --no-sync >"$dir/initdb.log" 2>&1 || {
    echo "pg.sh: initdb failed:" >&2
    cat "$dir/initdb.log" >&2
    exit 1
  }
  started=""
  for _ in 1 2 3 4 5 6 7 8; do
    # A port nothing listens on now; should another process take it first, try again.
    port=$((20000 + RANDOM % 40000))
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    if as_pg "$bin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${WMLICENSE_PG_FSYNC:-off}" \
      >/dev/null 2>&1; then
      started=$port
      break
    fi
    grep -q 'could not bind\|Address already in use' "$dir/log" 2>/dev/null || break
  done
  if [ -z "$started" ]; then
    echo "pg.sh: PostgreSQL did not start; its log:" >&2
    tail -n 30 "$dir/log" >&2 || true
    exit 1
  fi
  for _ in $(seq 1 100); do
    as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres && break
    sleep 0.1
  done
  as_pg "$bin/psql" -q -X -h 127.0.0.1 -p "$port" -U "$user" -d postgres \
    -c "CREATE DATABASE wmlicense" >&2
  url="postgres://$user@127.0.0.1:$port/wmlicense"
  echo "$url" >"$dir/url"
  echo "$url"
  ;;
stop)
  [ -d "$dir/data" ] || exit 0
  bin=$(find_bin)
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" stop -w -t 60 -D "$dir/data" -m fast >/dev/null 2>&1 ||
      as_pg "$bin/pg_ctl" stop -w -t 10 -D "$dir/data" -m immediate >/dev/null 2>&1 || true
  fi
  ;;
*)
  usage
  ;;
esac
