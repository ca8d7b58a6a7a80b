#!/usr/bin/env bash
# Schema-driven fuzzing of wmlicense-service against service/openapi.json (the --full tier):
# installs schemathesis in a throwaway virtualenv, starts a service (debug build) on 127.0.0.1
# with an admin token, and runs schemathesis twice, with and without the token. Checks: no 5xx,
# every status and body as documented (status, content type, response schema), no schema-valid
# request refused as invalid (positive_data_acceptance: a schema-valid request may be refused by
# policy — 403/409/422/429 — but never with 400/408/413).
#
# Environment: WMLICENSE_SCHEMATHESIS_EXAMPLES (default 100 per operation and run),
# WMLICENSE_SCHEMATHESIS_VERSION (default 4.32.5), WMLICENSE_SERVICE_BIN (a service binary
# to use instead of building one), WMLICENSE_JOBS (build, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${WMLICENSE_SCHEMATHESIS_EXAMPLES:-100}
version=${WMLICENSE_SCHEMATHESIS_VERSION:-4.32.5}
jobs=${WMLICENSE_JOBS:-2}

work=$(mktemp -d "${TMPDIR:-/tmp}/wmlicense-schemathesis.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== schemathesis $version in a throwaway virtualenv" >&2
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "schemathesis==$version" >&2

bin=${WMLICENSE_SERVICE_BIN:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "== building wmlicense-service" >&2
  cargo build -q -p wmlicense-service -j "$jobs" >&2
  bin=$PWD/target/debug/wmlicense-service
fi

token=schemathesis-admin-token-0123456789
printf '%s\n' "$token" >"$work/token"
# No rate limits: every generated request is decided (429 is documented, but would hide the
# rest); short timeouts are not needed (schemathesis sends whole requests).
"$bin" serve --listen 127.0.0.1:0 --data "$work/data" --admin-token-file "$work/token" \
  --rate-limit 0 --client-rate-limit 0 >"$work/out" 2>"$work/log" &
pid=$!
url=""
for _ in $(seq 1 300); do
  line=$(head -n1 "$work/out" 2>/dev/null || true)
  if [ -n "$line" ]; then
    url=${line#wmlicense-service listening on }
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "wmlicense-service did not start:" >&2
  tail -n 20 "$work/log" >&2
  exit 1
fi

cat >"$work/schemathesis.toml" <<TOML
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429", "503"]
TOML

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,positive_data_acceptance
status=0
for auth in with without; do
  echo "== schemathesis against $url, $auth the admin token ($examples examples per operation)" >&2
  args=()
  if [ "$auth" = with ]; then
    args=(-H "Authorization: Bearer $token")
  fi
  if ! (cd "$work" && "$work/venv/bin/st" --config-file "$work/schemathesis.toml" run \
    "$OLDPWD/service/openapi.json" --url "$url" --checks "$checks" \
    --max-examples "$examples" --request-timeout 30 --workers 2 \
    --generation-deterministic "${args[@]}"); then
    status=1
  fi
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "wmlicense-service died during the run:" >&2
  tail -n 20 "$work/log" >&2
  exit 1
fi
exit "$status"
