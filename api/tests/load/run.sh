#!/usr/bin/env bash
# Throughput of ledgerd over HTTP with wrk (apt-get install -y wrk).
#
# Starts a release `ledgerd serve` on a fresh data dir (durable: every 2xx is fsynced), creates
# ACCOUNTS accounts (unlimited overdraft, so no transfer is refused), then runs two loads with
# transfers.lua: single transfers (POST /v1/transfers) over CONNECTIONS connections, and
# batches of BATCH transfers (POST /v1/transfers/batch). Prints wrk's summary and the script's
# transfers/s and latency percentiles, then checks that the ledger's USD balances sum to zero.
#
# Usage (workspace root):  cargo build --release -p api && api/tests/load/run.sh
# Environment: LEDGERD, ACCOUNTS (1000), DURATION (20s), CONNECTIONS (64), BATCH (1000),
#              BATCH_CONNECTIONS (8), THREADS (2).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
ledgerd="${LEDGERD:-$root/target/release/ledgerd}"
accounts="${ACCOUNTS:-1000}"
duration="${DURATION:-20s}"
connections="${CONNECTIONS:-64}"
batch="${BATCH:-1000}"
batch_connections="${BATCH_CONNECTIONS:-8}"
threads="${THREADS:-2}"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"; wait "$server_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn "$ledgerd" serve --bind 127.0.0.1:0 --data-dir "$work/data" >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
address=""
for _ in $(seq 1 600); do
    address="$(sed -n 's/^listening on //p' "$work/stdout")"
    [[ -n "$address" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
    sleep 0.1
done
base="http://$address"
echo "ledgerd at $base; creating $accounts accounts"

# Accounts, 1000 per batch of curl calls in parallel.
seq 0 $((accounts - 1)) | xargs -P 8 -I{} curl -sf -o /dev/null -X POST "$base/v1/accounts" \
    -H 'content-type: application/json' \
    -d '{"id": "acct-{}", "currency": "USD", "overdraft_limit": "unlimited"}'

echo
echo "== single transfers: $connections connections, $duration"
ACCOUNTS="$accounts" BATCH=1 RUN=single wrk -t "$threads" -c "$connections" -d "$duration" --latency \
    -s "$here/transfers.lua" "$base"

echo
echo "== batches of $batch: $batch_connections connections, $duration"
ACCOUNTS="$accounts" BATCH="$batch" RUN=batch wrk -t "$threads" -c "$batch_connections" -d "$duration" \
    --timeout 30s --latency -s "$here/transfers.lua" "$base"

echo
echo "== balance check"
python3 - "$base" "$accounts" <<'PY'
import json, sys, urllib.request
from decimal import Decimal
base, count = sys.argv[1], int(sys.argv[2])
total = Decimal(0)
for index in range(count):
    with urllib.request.urlopen(f"{base}/v1/accounts/acct-{index}") as response:
        total += Decimal(json.load(response)["balance"])
print("sum of balances:", total, "(balanced)" if total == 0 else "(NOT BALANCED)")
sys.exit(0 if total == 0 else 1)
PY
