#!/usr/bin/env bash
# ledgerd beside PostgreSQL on the same workload, in one run of this script, on the same machine.
#
# Installs PostgreSQL from Debian (apt-get) when it is missing, inits a private cluster in a
# temporary dir on a private port (127.0.0.1 only) with durable commits as shipped
# (fsync=on, synchronous_commit=on), and runs the SQL ledger of benches/postgres/schema.sql
# with the postgres_ledger driver; then the same workload with `ledgerd bench` against a
# release `ledgerd serve` on a fresh data dir. Two contention variants: uniform over ACCOUNTS
# accounts, and a hot set of HOT accounts. Two shapes: single transfers over CONNECTIONS
# connections, and batches of BATCH over BATCH_CONNECTIONS connections (one transaction per
# batch on PostgreSQL, one request per batch on ledgerd). REPEAT rounds, PostgreSQL and
# ledgerd interleaved; prints the table of medians and the ratio. The cluster is stopped and
# removed at the end.
#
# Usage (workspace root):  benches/postgres/compare.sh
# Environment: ACCOUNTS (10000), HOT (10), DURATION (10), REPEAT (3), CONNECTIONS (64),
#              BATCH (1000), BATCH_CONNECTIONS (8), PG_PORT (55432).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../scripts/common.sh"

accounts="${ACCOUNTS:-10000}"
hot="${HOT:-10}"
duration="${DURATION:-10}"
repeat="${REPEAT:-3}"
connections="${CONNECTIONS:-64}"
batch="${BATCH:-1000}"
batch_connections="${BATCH_CONNECTIONS:-8}"
pg_port="${PG_PORT:-55432}"
results="$results_dir/compare-$(date -u +%Y%m%dT%H%M%SZ).jsonl"

# PostgreSQL from Debian, when missing.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$pg_bin" || ! -x "$pg_bin/initdb" ]]; then
    echo "== installing postgresql (apt-get)" >&2
    if [[ "$(id -u)" -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi

# PostgreSQL refuses to run as root: run it as the `postgres` user the package creates.
as_pg=()
if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    as_pg=(runuser -u postgres --)
fi

pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/ledgerd-pg.XXXXXX")"
chmod 755 "$pg_dir"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$pg_dir"
cleanup() {
    stop_server
    if [[ -f "$pg_dir/data/postmaster.pid" ]]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_dir"
}
trap cleanup EXIT

build_release
describe_machine >"$results"

echo "== PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'): private cluster in $pg_dir, port $pg_port" >&2
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$pg_dir/initdb.log"
max_connections=$(( connections > batch_connections ? connections + 20 : batch_connections + 20 ))
(( max_connections < 100 )) && max_connections=100
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w start -o \
    "-c port=$pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_dir \
     -c fsync=on -c synchronous_commit=on -c max_connections=$max_connections" >/dev/null
"${as_pg[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qAt -c "CREATE DATABASE ledger" >/dev/null
settings="$("${as_pg[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d ledger -qAt -F ' ' -c \
    "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'shared_buffers', 'max_connections') ORDER BY name")"
echo "# postgresql settings: $(echo "$settings" | tr '\n' ' ')" >>"$results"
echo "$settings" | sed 's/^/   /' >&2
pg_url="host=127.0.0.1 port=$pg_port user=postgres dbname=ledger"

pg_run() {
    "$root/target/release/postgres_ledger" --url "$pg_url" --accounts "$accounts" --duration "$duration" \
        --no-progress --json "$@" | tee -a "$results" >/dev/null
}

ledgerd_run() {
    start_server
    "$ledgerd" bench --target "http://$server_address" --accounts "$accounts" --duration "$duration" \
        --no-progress --json "$@" | tee -a "$results" >/dev/null
    stop_server
}

for round in $(seq 1 "$repeat"); do
    for variant in uniform hot; do
        contention=()
        [[ "$variant" == hot ]] && contention=(--hot-accounts "$hot")
        for shape in single batch; do
            if [[ "$shape" == single ]]; then
                load=(--connections "$connections" --batch 1)
            else
                load=(--connections "$batch_connections" --batch "$batch")
            fi
            echo "== round $round/$repeat, $variant, $shape: PostgreSQL" >&2
            pg_run "${contention[@]}" "${load[@]}"
            echo "== round $round/$repeat, $variant, $shape: ledgerd" >&2
            ledgerd_run "${contention[@]}" "${load[@]}"
        done
    done
done

echo
"$bench_report" compare "$results"
echo
echo "results: $results"
