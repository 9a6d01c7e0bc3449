#!/usr/bin/env bash
# Recovery speed and snapshot cost at scale (BENCHMARKS.md, "Recovery and snapshots"):
#   benches/recovery.sh [ACCOUNTS] [TRANSFERS] [WORK_DIR] [TRANSFERS_BEFORE_SNAPSHOT]
# defaults 1000000 10000000 target/recovery-bench 0.
#
# 1. writes a data dir with ACCOUNTS accounts, a snapshot right after them (its write time is
#    the snapshot write time for ACCOUNTS accounts), then TRANSFERS transfers
#    (recovery_fixture, straight through the log); with TRANSFERS_BEFORE_SNAPSHOT = K > 0, a
#    second snapshot after the first K transfers, which the history then holds, and the log
#    they covered dropped: the restart reads the snapshot and the TRANSFERS - K after it;
# 2. times `ledgerd serve` from start to `listening on` (= /ready answers 200), and its peak
#    memory, three times, each after dropping the kernel's page cache (when allowed); after
#    the first start, reads old transfers and history pages with the cache cold (cold_reads);
# 3. times `ledgerd snapshot create` (fold of snapshot + log, write) and reports its size;
# 4. times one more start, after that fresh snapshot (a clean stop, then a restart).
set -euo pipefail
cd "$(dirname "$0")/.."
accounts=${1:-1000000}
transfers=${2:-10000000}
work=${3:-target/recovery-bench}
before_snapshot=${4:-0}

cargo build --release -p api --bin ledgerd -p benches --bin recovery_fixture --bin cold_reads
rm -rf "$work"
mkdir -p "$work"
data="$work/data"
echo "== fixture: $accounts accounts, snapshot, $transfers transfers"
/usr/bin/time -f "fixture: %e s wall, %M KiB peak RSS" \
  target/release/recovery_fixture --data-dir "$data" --accounts "$accounts" --transfers "$transfers" \
  --snapshot-after-accounts $([ "$before_snapshot" -gt 0 ] && echo --snapshot-at-transfers "$before_snapshot")
du -sh "$data/wal" "$data/snapshots" "$data/history"

config="$work/ledgerd.toml"
printf '[storage]\nsnapshot_interval_seconds = 0\n' > "$config"

# Drops the kernel's page cache, so that a start reads its files from the disk.
drop_page_cache() {
  sync
  if ! echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
    echo "(cannot drop the page cache here: the figures below may be of a warm cache)"
  fi
}

# One start: times `serve` to `listening on`, runs "$@" against it, stops it with SIGTERM.
serve_once() {
  local name=$1
  shift
  drop_page_cache
  local start ready address rss pid
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
  echo "$name: ready after $(echo "$ready - $start" | bc) s, peak RSS $rss"
  if [ $# -gt 0 ]; then
    "$@" --target "$address"
  fi
  kill -TERM "$pid"
  wait "$pid"
}

serve_once "serve run 1" target/release/cold_reads --transfers "$transfers" --accounts "$accounts"
serve_once "serve run 2"
serve_once "serve run 3"

echo "== ledgerd snapshot create (fold of the snapshot + the log after it, then write)"
/usr/bin/time -f "snapshot create: %e s wall, %M KiB peak RSS" \
  target/release/ledgerd snapshot create --data-dir "$data" --config "$config"
target/release/ledgerd snapshot list --data-dir "$data"
serve_once "serve after a fresh snapshot"
