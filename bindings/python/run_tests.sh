#!/usr/bin/env bash
# Installs the Python package into a throwaway venv, reusing the library the test command built
# (target/debug/libwmlicense.so; no second cargo build), and runs its pytest suite.
#   WMLICENSE_CARGO_PROFILE (default dev), WMLICENSE_TARGET_DIR (default <repo>/target),
#   PYTHON (default python3). Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
py=${PYTHON:-python3}
export WMLICENSE_CARGO_PROFILE=${WMLICENSE_CARGO_PROFILE:-dev}
export WMLICENSE_TARGET_DIR=${WMLICENSE_TARGET_DIR:-$repo/target}
profile_dir=$WMLICENSE_CARGO_PROFILE; [ "$profile_dir" = dev ] && profile_dir=debug
if [ -f "$WMLICENSE_TARGET_DIR/$profile_dir/libwmlicense.so" ] || [ -f "$WMLICENSE_TARGET_DIR/$profile_dir/libwmlicense.dylib" ]; then
  export WMLICENSE_NO_CARGO=1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wmlicense-py.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
vpy="$tmp/venv/bin/python"
"$vpy" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# The build copies the package sources to a temporary directory only with old pip; with pip >= 21.3
# it builds in place, so setup.py finds ../../include/wmlicense.h and the target directory.
"$vpy" -m pip install --quiet --disable-pip-version-check "$here"
"$vpy" -m pip install --quiet --disable-pip-version-check pytest
cd "$tmp"   # import the installed package, not the source tree
WMLICENSE_REPO="$repo" "$vpy" -m pytest -q -p no:cacheprovider "$here/tests" "$@"
