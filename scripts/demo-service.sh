#!/usr/bin/env bash
# Restore on other machines through the network License Management Service.
#
# Builds wmlicense-service (release) and the C program examples/service_demo.c, starts the
# service on 127.0.0.1 (any free port) with a temporary data directory and a limit of 4 devices,
# then plays six "machines" that share nothing but the backup file (each its own store and data
# directory): A backs up; B, C, D and E restore (1..4 of 4 computers used); F is refused with the
# service's help URL; B gives its computer back; now F restores. Finally the service gets SIGTERM
# and exits. Needs a Rust toolchain, a C compiler and cmake.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo cmake; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "demo-service.sh: $tool is required (see README.md, Quick start)" >&2
    exit 2
  fi
done

echo "== building wmlicense-service (cargo build --release -p wmlicense-service)"
cargo build --release -p wmlicense-service
echo "== building the library and examples/service_demo.c (cmake)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build --target service_demo -j 2

service=./target/release/wmlicense-service
demo=./build/service_demo
work=$(mktemp -d)
svc_pid=""
cleanup() {
  if [ -n "$svc_pid" ] && kill -0 "$svc_pid" 2>/dev/null; then
    kill -TERM "$svc_pid" 2>/dev/null || true
    wait "$svc_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# Nothing of this demo lands in your own data directory.
export WMLICENSE_HOME="$work/home"
mkdir -p "$WMLICENSE_HOME"

help_url="https://help.example/restore-limit"
echo
echo "== starting the service: $service serve --listen 127.0.0.1:0 --data $work/service --device-limit 4"
"$service" serve --listen 127.0.0.1:0 --data "$work/service" --device-limit 4 \
  --help-url "$help_url" >"$work/service.out" 2>"$work/service.log" &
svc_pid=$!
url=""
for _ in $(seq 1 300); do
  line=$(head -n 1 "$work/service.out" 2>/dev/null || true)
  case "$line" in
    "wmlicense-service listening on "*) url=${line#wmlicense-service listening on }; break ;;
  esac
  if ! kill -0 "$svc_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "the service did not start; its log:" >&2
  cat "$work/service.log" >&2
  exit 1
fi
echo "   listening on $url"
echo "   its key (keys list: key ID, public key to pin as ServiceKey, created at):"
"$service" keys list --data "$work/service" | sed 's/^/     /'

machine() { mkdir -p "$work/$1/data"; echo "$work/$1"; }

echo
echo "== machine A: four licenses (one without the backup right), backed up through the service"
A=$(machine A)
"$demo" put "$A"
"$demo" backup "$url" "$A" "$work/backup"

for m in B C D E; do
  echo
  echo "== machine $m: restore the backup into a new store"
  "$demo" restore "$url" "$(machine "$m")" "$work/backup"
done

echo
echo "== machine F: how many computers are used? (a dry run: WM_RESTORE_VERIFY_ONLY)"
F=$(machine F)
"$demo" check "$url" "$F" "$work/backup" || true
echo
echo "== machine F: restore (the fifth computer)"
if "$demo" restore "$url" "$F" "$work/backup"; then
  echo "unexpected: the fifth computer was not refused" >&2
  exit 1
fi

echo
echo "== machine B gives its computer back (wm_backup_restorer_release)"
"$demo" release "$url" "$work/B"

echo
echo "== machine F: restore again"
"$demo" restore "$url" "$F" "$work/backup"

echo
echo "== stopping the service (SIGTERM: it drains requests in flight and exits 0)"
kill -TERM "$svc_pid"
status=0
wait "$svc_pid" || status=$?
svc_pid=""
echo "   exit status $status; its log (one line per request):"
sed 's/^/     /' "$work/service.log"
exit "$status"
