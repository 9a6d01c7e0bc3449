#!/usr/bin/env bash
# Property-based API testing of ledgerd against its own OpenAPI document.
#
# Starts `ledgerd serve` on 127.0.0.1 (random port) with a fresh data dir, seeds a few
# accounts and transfers so that generated requests can hit existing resources, then runs
#   schemathesis --config-file api/tests/schemathesis.toml \
#       run http://127.0.0.1:PORT/openapi.json --checks all \
#       --exclude-checks positive_data_acceptance
# with a bounded number of examples per operation, and stops the server with SIGTERM.
# schemathesis.toml (next to this script) says why `positive_data_acceptance` is off and why
# 413 is an expected answer to schema-violating data; every other check runs.
#
# Usage (from the workspace root):
#   pip install schemathesis          # tested with schemathesis 4.32
#   cargo build -p api                # or --release; LEDGERD=path/to/ledgerd overrides
#   api/tests/schemathesis.sh [extra schemathesis arguments...]
#
# Environment: LEDGERD (binary), MAX_EXAMPLES (default 50), SEED (default 1).
# Exit status: schemathesis's (0 when every check passed).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
ledgerd="${LEDGERD:-}"
if [[ -z "$ledgerd" ]]; then
    for candidate in "$root/target/debug/ledgerd" "$root/target/release/ledgerd"; do
        if [[ -x "$candidate" ]]; then ledgerd="$candidate"; break; fi
    done
fi
if [[ -z "$ledgerd" || ! -x "$ledgerd" ]]; then
    echo "ledgerd binary not found; run cargo build -p api or set LEDGERD" >&2
    exit 2
fi
if ! command -v schemathesis >/dev/null; then
    echo "schemathesis not found; pip install schemathesis" >&2
    exit 2
fi

# shellcheck source=start_ledgerd.sh
source "$(dirname "$0")/start_ledgerd.sh"
base="http://$address"
echo "ledgerd at $base (data in $work/data)"

post() {
    curl -sf -o /dev/null -X POST "$base$1" -H 'content-type: application/json' -d "$2"
}
post /v1/accounts '{"id": "bank", "currency": "USD", "overdraft_limit": "unlimited"}'
post /v1/accounts '{"id": "alice", "currency": "USD"}'
post /v1/accounts '{"id": "bob", "currency": "USD"}'
post /v1/transfers '{"id": "t-1", "debit_account": "bank", "credit_account": "alice", "amount": "100.00"}'
post /v1/transfers '{"id": "h-1", "debit_account": "alice", "credit_account": "bob", "amount": "5", "pending": true}'

status=0
# The kill switch is left out: a fuzzer that switches the ledger read-only would have every
# later write answered 503 `read_only` (its behaviour is tested in api/tests/read_only.rs).
config="$(cd "$(dirname "$0")" && pwd)/schemathesis.toml"
# Run from the scratch dir: schemathesis keeps a `.schemathesis/` cache in its working dir.
(cd "$work" && schemathesis --config-file "$config" run "$base/openapi.json" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --exclude-path /v1/admin/mode \
    --max-examples "${MAX_EXAMPLES:-50}" \
    --seed "${SEED:-1}" \
    --workers 1 \
    --no-color \
    --report junit --report-dir "$work/report" \
    "$@") || status=$?

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "ledgerd died during the run:" >&2; cat "$work/stderr" >&2; exit 1
fi
if grep -q "panicked" "$work/stderr"; then
    echo "ledgerd panicked during the run:" >&2; cat "$work/stderr" >&2; exit 1
fi
exit "$status"
