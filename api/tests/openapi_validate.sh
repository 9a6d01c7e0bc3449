#!/usr/bin/env bash
# Validates the served `/openapi.json` with openapi-spec-validator (PyPI).
#
# Starts `ledgerd serve` on 127.0.0.1 (random port) with a fresh data dir, fetches
# `/openapi.json`, runs `openapi-spec-validator` on it, and stops the server with SIGTERM.
#
# Usage (from the workspace root):
#   pip install openapi-spec-validator
#   cargo build --release -p api      # LEDGERD=path/to/ledgerd overrides
#   api/tests/openapi_validate.sh
#
# Exit status: the validator's (0 when the document is valid).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
ledgerd="${LEDGERD:-$root/target/release/ledgerd}"
if [[ ! -x "$ledgerd" ]]; then
    echo "ledgerd binary not found at $ledgerd; run cargo build --release -p api or set LEDGERD" >&2
    exit 2
fi
if ! command -v openapi-spec-validator >/dev/null; then
    echo "openapi-spec-validator not found; pip install openapi-spec-validator" >&2
    exit 2
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG="${RUST_LOG:-warn}" "$ledgerd" serve --bind 127.0.0.1:0 --data-dir "$work/data" \
    >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

address=""
for _ in $(seq 1 600); do
    address="$(sed -n 's/^listening on //p' "$work/stdout")"
    [[ -n "$address" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "ledgerd exited:" >&2; cat "$work/stderr" >&2; exit 1
    fi
    sleep 0.1
done
if [[ -z "$address" ]]; then
    echo "ledgerd did not print 'listening on' in time" >&2
    exit 1
fi

curl -sSf "http://$address/openapi.json" -o "$work/openapi.json"
openapi-spec-validator "$work/openapi.json"
