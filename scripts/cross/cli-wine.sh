#!/usr/bin/env bash
# The CLI for Windows under Wine, as a user runs it: put and list, a second process on the same
# store while a backup runs, backup, restore into a new store, a corrupted backup refused, and
# Ctrl-C cancelling a backup (the older backup stays byte for byte). Called by scripts/cross.sh
# with the executable and a fresh work directory; WINEPREFIX and WINEDLLOVERRIDES come from it.
set -euo pipefail
exe=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
home=$(winepath -w "$work/home")
w() { wine "$exe" --home "$home" "$@" | tr -d '\r'; }
fail() { echo "cli-wine: FAILED: $*" >&2; exit 1; }
expect_fail() { # expect_fail CODE ARGS...: exit 1 naming CODE on stderr
  local code=$1 err
  shift
  if err=$(wine "$exe" --home "$home" "$@" 2>&1 >/dev/null); then
    fail "$* succeeded; expected $code"
  fi
  grep -q "$code" <<<"$err" || fail "$* said: $err (expected $code)"
}
key=00112233445566778899aabbccddeeff

echo "-- put, list"
w put --key-id 0a --content-key "$key" --title "First" >/dev/null
w put --key-id 0b --content-key "$key" --title "Second" >/dev/null
[ "$(w list | wc -l)" = 2 ] || fail "list after two puts: $(w list)"
w list --json | grep -q '"title":"First"' || fail "list --json lacks First"

echo "-- a second process on the same store while a backup is written"
# Enough licenses that a backup lasts well past its first PROGRESS (Ctrl-C below).
awk -v k="$key" 'BEGIN { for (i = 1; i <= 200000; i++) printf "{\"key_id\":\"%08x\",\"content_key\":\"%s\"}\n", i, k }' \
  >"$work/in.jsonl"
w import "$(winepath -w "$work/in.jsonl")" >/dev/null
bk=$(winepath -w "$work/bk")
wine "$exe" --home "$home" backup --to "$bk" >"$work/backup.out" 2>&1 &
backup_pid=$!
w put --key-id 0c --content-key "$key" >/dev/null || fail "put beside a running backup"
wait $backup_pid || fail "backup beside a put: $(cat "$work/backup.out")"
[ -s "$work/bk/licenses.wmlb" ] || fail "no backup written"
expect_fail 0xC00D2742 backup --to "$bk"

echo "-- restore into a new store"
new=$(winepath -w "$work/new")
expect_fail 0xC00D2728 restore --from "$bk" --store "$new"
w restore --from "$bk" --store "$new" --individualize >/dev/null
n=$(w list --store "$new" | wc -l)
[ "$n" -ge 200002 ] || fail "the restored store holds $n licenses"

echo "-- a corrupted backup is refused"
cp "$work/bk/licenses.wmlb" "$work/bad.wmlb"
size=$(stat -c %s "$work/bad.wmlb")
printf '\xff' | dd of="$work/bad.wmlb" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect_fail 0xC00D2743 restore --from "$(winepath -w "$work/bad.wmlb")" --store "$(winepath -w "$work/new2")" --individualize

echo "-- Ctrl-C cancels a backup and leaves the previous one"
cp "$work/bk/licenses.wmlb" "$work/before.wmlb"
wine "$exe" --home "$home" --json backup --overwrite --to "$bk" >"$work/cancel.out" 2>"$work/cancel.err" &
pid=$!
for _ in $(seq 1 2000); do
  grep -q BACKUPRESTORE_PROGRESS "$work/cancel.out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.01
done
grep -q BACKUPRESTORE_PROGRESS "$work/cancel.out" || fail "the backup ended before its first PROGRESS"
# Wine turns SIGINT into the console's CTRL_C_EVENT.
kill -INT $pid
status=0
wait $pid || status=$?
[ $status = 1 ] || fail "exit $status after Ctrl-C; stderr: $(cat "$work/cancel.err")"
grep -q "0xC00D2768" "$work/cancel.err" || fail "no WM_E_OPERATION_CANCELED: $(cat "$work/cancel.err")"
cmp -s "$work/before.wmlb" "$work/bk/licenses.wmlb" || fail "the previous backup changed"
echo "cli-wine: all checks passed"
