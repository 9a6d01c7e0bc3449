#!/usr/bin/env bash
# The load generator's own ceiling: `ledgerd bench --workload health` (GET /health, which does
# no ledger work) over CONNECTIONS connections, beside wrk on the same endpoint and server, and
# beside the same generator sending single transfers. If the generator reaches about what wrk
# reaches on /health and that is far above what the server absorbs in transfers, the generator
# is not what limits the transfer figures.
#
# Usage (workspace root):  benches/scripts/ceiling.sh      (needs wrk: apt-get install -y wrk)
# Environment: CONNECTIONS (64), DURATION (10), REPEAT (3).
set -euo pipefail
source "$(dirname "$0")/common.sh"
trap stop_server EXIT

connections="${CONNECTIONS:-64}"
duration="${DURATION:-10}"
repeat="${REPEAT:-3}"
results="$results_dir/ceiling-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

build_release
describe_machine >"$results"
start_server
target="http://$server_address"
for run in $(seq 1 "$repeat"); do
    for threads in 1 2; do
        echo "== run $run/$repeat: ledgerd bench --workload health, $threads thread(s)" >&2
        "$ledgerd" bench --target "$target" --workload health --connections "$connections" \
            --duration "$duration" --threads "$threads" --no-progress --json | tee -a "$results" >/dev/null
    done
    echo "== run $run/$repeat: wrk -t 2 -c $connections /health" >&2
    wrk -t 2 -c "$connections" -d "${duration}s" "$target/health" | tee -a "$results.wrk" | grep -E "Requests/sec|Latency"
done
echo "== single transfers, same generator, same server" >&2
"$ledgerd" bench --target "$target" --connections "$connections" --duration "$duration" --no-progress --json \
    | tee -a "$results" >/dev/null
"$bench_report" summary "$results"
echo "wrk, requests/s of each run:"
grep "Requests/sec" "$results.wrk"
echo "results: $results" >&2
