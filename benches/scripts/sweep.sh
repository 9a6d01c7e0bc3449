#!/usr/bin/env bash
# Throughput and p99 latency of ledgerd over HTTP against connections and against batch size,
# and the chart of them.
#
# For each point, a release `ledgerd serve` on a fresh data dir (durable: every 2xx is
# fdatasynced) and one `ledgerd bench --json` run; REPEAT runs per point. Appends every report
# to bench-results/sweep-<time>.jsonl, prints the median table and draws the chart
# (default benches/charts/ledgerd-http.svg).
#
# Usage (workspace root):  benches/scripts/sweep.sh
# Environment: ACCOUNTS (10000), DURATION (10), REPEAT (3), CONNECTIONS_LIST ("1 4 16 64 256"),
#              BATCH_LIST ("1 10 100 1000 4000"), BATCH_CONNECTIONS (8), CHART (path).
set -euo pipefail
source "$(dirname "$0")/common.sh"
trap stop_server EXIT

accounts="${ACCOUNTS:-10000}"
duration="${DURATION:-10}"
repeat="${REPEAT:-3}"
connections_list="${CONNECTIONS_LIST:-1 4 16 64 256}"
batch_list="${BATCH_LIST:-1 10 100 1000 4000}"
batch_connections="${BATCH_CONNECTIONS:-8}"
chart="${CHART:-$root/benches/charts/ledgerd-http.svg}"
results="$results_dir/sweep-$(date -u +%Y%m%dT%H%M%SZ).jsonl"

build_release
describe_machine >"$results"

one_run() {
    start_server
    "$ledgerd" bench --target "http://$server_address" --accounts "$accounts" --duration "$duration" \
        --no-progress --json "$@" | tee -a "$results" >/dev/null
    stop_server
}

for run in $(seq 1 "$repeat"); do
    for connections in $connections_list; do
        echo "== run $run/$repeat: single transfers, $connections connections" >&2
        one_run --connections "$connections" --batch 1
    done
    for batch in $batch_list; do
        echo "== run $run/$repeat: batches of $batch, $batch_connections connections" >&2
        one_run --connections "$batch_connections" --batch "$batch"
    done
done

"$bench_report" summary "$results"
mkdir -p "$(dirname "$chart")"
"$bench_report" chart --output "$chart" "$results"
echo "results: $results" >&2
