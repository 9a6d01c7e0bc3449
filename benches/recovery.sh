#!/usr/bin/env bash
# Recovery speed and snapshot cost at scale (BENCHMARKS.md, "Recovery and snapshots"):
#   benches/recovery.sh [ACCOUNTS] [TRANSFERS] [WORK_DIR]
# defaults 1000000 10000000 target/recovery-bench.
#
# 1. writes a data dir with ACCOUNTS accounts, a snapshot right after them (its write time is
#    the snapshot write time for ACCOUNTS accounts), then TRANSFERS transfers in the log after
#    that snapshot (recovery_fixture, straight through the log);
# 2. times `ledgerd serve` from start to `listening on` (= /ready answers 200), and its peak
#    memory, three times;
# 3. times `ledgerd snapshot create` (fold of snapshot + log, write) and reports its size.
set -euo pipefail
cd "$(dirname "$0")/.."
accounts=${1:-1000000}
transfers=${2:-10000000}
work=${3:-target/recovery-bench}

cargo build --release -p api --bin ledgerd -p benches --bin recovery_fixture
rm -rf "$work"
mkdir -p "$work"
data="$work/data"
echo "== fixture: $accounts accounts, snapshot, $transfers transfers"
/usr/bin/time -f "fixture: %e s wall, %M KiB peak RSS" \
  target/release/recovery_fixture --data-dir "$data" --accounts "$accounts" --transfers "$transfers" \
  --snapshot-after-accounts
du -sh "$data/wal" "$data/snapshots"

config="$work/ledgerd.toml"
printf '[storage]\nsnapshot_interval_seconds = 0\n' > "$config"
for run in 1 2 3; do
  sync
  start=$(date +%s.%N)
  target/release/ledgerd serve --config "$config" --data-dir "$data" --bind 127.0.0.1:0 \
    > "$work/serve.out" 2> "$work/serve.err" &
  pid=$!
  until grep -q '^listening on' "$work/serve.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.err"; exit 1; }
    sleep 0.05
  done
  ready=$(date +%s.%N)
  address=$(sed -n 's/^listening on //p' "$work/serve.out")
  curl -fsS "http://$address/ready" > /dev/null
  rss=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid"
  echo "serve run $run: ready after $(echo "$ready - $start" | bc) s, peak RSS $rss"
done

echo "== ledgerd snapshot create (fold of the snapshot + $transfers log records, then write)"
/usr/bin/time -f "snapshot create: %e s wall, %M KiB peak RSS" \
  target/release/ledgerd snapshot create --data-dir "$data" --config "$config"
target/release/ledgerd snapshot list --data-dir "$data"
