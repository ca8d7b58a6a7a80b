#!/usr/bin/env bash
# Builds wmlicense for other platforms and runs it there, on this Linux x86_64 machine:
#
# - x86_64-pc-windows-gnu under Wine: the C tests that mean something on Windows (the others
#   print why they skip), the demo, and the CLI (put, list, backup, restore into a new store, a
#   second process on the same store, corruption detected, Ctrl-C cancels);
# - the core's Rust tests (cargo test -p wmlicense-core) on aarch64-unknown-linux-gnu and on
#   big-endian s390x-unknown-linux-gnu under qemu-user: byte order and word size in the format,
#   the store and the crypto.
#
# Needs Debian's rustc-web, cargo-web, rust-web-src (Rust with the standard library's sources:
# std is built for each target with -Zbuild-std), mingw-w64, wine64, gcc-aarch64-linux-gnu,
# gcc-s390x-linux-gnu, libc6-dev-arm64-cross, libc6-dev-s390x-cross and qemu-user-static
# (.ci/run installs them). Usage: scripts/cross.sh [windows|aarch64|s390x]... (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(windows aarch64 s390x)

# Debian's toolchain, not rustup's: it has the standard library's sources for every target.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
cargo=/usr/bin/cargo
export CARGO_TARGET_DIR="$root/target/cross"
jobs=${CROSS_JOBS:-2}
build_std=(-Zbuild-std=std,panic_unwind)
for tool in "$RUSTC" "$cargo"; do
  [ -x "$tool" ] || { echo "cross: $tool is missing (apt-get install rustc-web cargo-web rust-web-src)"; exit 1; }
done
[ -d /usr/lib/rustlib/src/rust/library/std ] || { echo "cross: rust-web-src is missing"; exit 1; }

step() { printf '\n== cross: %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "cross: FAILED: $*" >&2; exit 1; }

run_windows() {
  local triple=x86_64-pc-windows-gnu
  local out="$CARGO_TARGET_DIR/$triple/debug"
  step "building for $triple"
  $cargo build -j"$jobs" "${build_std[@]}" --target $triple -p wmlicense -p wmlicense-cli

  # Wine: a private prefix, no desktop, no Mono/Gecko prompts, and ProcessPrng for Wine 8.
  export WINEPREFIX="$CARGO_TARGET_DIR/wineprefix" WINEDEBUG=-all
  export WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree=;mshtml="
  # MinGW's runtime DLLs (libgcc_s_seh-1.dll, libwinpthread-1.dll), for the Rust executables.
  local gccdir
  gccdir=$(dirname "$(x86_64-w64-mingw32-gcc -print-libgcc-file-name)")
  export WINEPATH="Z:${gccdir//\//\\};Z:\\usr\\x86_64-w64-mingw32\\lib"
  local bin="$CARGO_TARGET_DIR/windows-bin"
  rm -rf "$bin" && mkdir -p "$bin"
  x86_64-w64-mingw32-gcc -O2 -shared -Wl,--kill-at -o "$bin/bcryptprimitives.dll" \
    scripts/cross/processprng.c -lbcrypt
  cp "$out/wmlicense.exe" "$out/wmlicense.dll" "$bin/"
  step "starting Wine"
  wineboot --init >/dev/null 2>&1 || true
  local wtmp="$CARGO_TARGET_DIR/windows-tmp"
  rm -rf "$wtmp" && mkdir -p "$wtmp"

  # The C tests and the demo, linked against the DLL (through its import library): linking the
  # debug static library into each of them takes far longer, and this checks the DLL too.
  step "C tests and the demo"
  local cflags=(-std=c99 -O1 -Wall -Wextra -Werror -Iinclude -Ic_tests -D_POSIX_C_SOURCE=200809L)
  local libs=("$out/libwmlicense.dll.a" -static-libgcc -Wl,-Bstatic -lpthread -Wl,-Bdynamic)
  local tests=(test_store test_store_at_rest test_store_bad_input test_store_for_each
               test_backup_restore test_corruption test_cancel test_messages test_queued
               test_restore_policy test_restore_retry test_restore_rules test_restorer_props
               test_callback_waits test_threads test_lifecycle test_store_processes test_files
               test_fork test_callback_exit test_service)
  local t
  printf '%s\n' "${tests[@]}" | xargs -P"$jobs" -I{} \
    x86_64-w64-mingw32-gcc "${cflags[@]}" -o "$bin/{}.exe" "c_tests/{}.c" "${libs[@]}" \
    || fail "a C test does not compile with MinGW"
  x86_64-w64-mingw32-gcc "${cflags[@]}" -o "$bin/demo.exe" examples/demo.c "${libs[@]}"
  for t in "${tests[@]}"; do
    echo "-- $t"
    WMLICENSE_TEST_TMP="$(winepath -w "$wtmp" 2>/dev/null)" wine "$bin/$t.exe" \
      || fail "$t under Wine"
  done
  echo "-- demo"
  local home="$wtmp/demo-home"
  mkdir -p "$home"
  WMLICENSE_HOME="$(winepath -w "$home")" wine "$bin/demo.exe" || fail "the demo under Wine"

  step "the CLI under Wine"
  bash scripts/cross/cli-wine.sh "$bin/wmlicense.exe" "$wtmp/cli"
  wineserver -k 2>/dev/null || true
}

run_qemu() {
  local arch=$1 triple=$1-unknown-linux-gnu
  local upper=${triple^^}
  upper=${upper//-/_}
  export "CARGO_TARGET_${upper}_LINKER=$arch-linux-gnu-gcc"
  export "CARGO_TARGET_${upper}_RUNNER=qemu-$arch-static -L /usr/$arch-linux-gnu"
  export "CC_${triple//-/_}=$arch-linux-gnu-gcc" "AR_${triple//-/_}=$arch-linux-gnu-ar"
  step "cargo test -p wmlicense-core on $triple (qemu-$arch)"
  $cargo test -j"$jobs" "${build_std[@]}" --target "$triple" -p wmlicense-core
}

for t in "${targets[@]}"; do
  case $t in
    windows) run_windows ;;
    aarch64) run_qemu aarch64 ;;
    s390x) run_qemu s390x ;;
    *) fail "unknown target $t (windows, aarch64, s390x)" ;;
  esac
done
step "done"
