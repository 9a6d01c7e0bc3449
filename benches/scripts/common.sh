# Shared by the bench scripts: building the release binaries, starting and stopping a
# `ledgerd serve` on a fresh data dir, and where results go. Source it; it sets `root`.
# Every server started here listens on 127.0.0.1 only and is stopped on exit.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ledgerd="${LEDGERD:-$root/target/release/ledgerd}"
bench_report="$root/target/release/bench_report"
results_dir="${RESULTS_DIR:-$root/bench-results}"
mkdir -p "$results_dir"

server_pid=""
server_dir=""
server_address=""

build_release() {
    echo "== building release binaries (ledgerd, postgres_ledger, bench_report)" >&2
    (cd "$root" && cargo build --release -q -p api --bin ledgerd -p benches --bin postgres_ledger --bin bench_report)
}

# start_server: a release `ledgerd serve` on a fresh data dir; sets server_address.
start_server() {
    server_dir="$(mktemp -d "${TMPDIR:-/tmp}/ledgerd-bench.XXXXXX")"
    # Created before the server starts, so that the first read below never races its opening.
    : >"$server_dir/stdout"
    RUST_LOG=warn "$ledgerd" serve --bind 127.0.0.1:0 --data-dir "$server_dir/data" \
        >"$server_dir/stdout" 2>"$server_dir/stderr" &
    server_pid=$!
    server_address=""
    for _ in $(seq 1 600); do
        server_address="$(sed -n 's/^listening on //p' "$server_dir/stdout")"
        [[ -n "$server_address" ]] && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$server_dir/stderr" >&2
            echo "ledgerd serve exited before listening" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "ledgerd serve did not start within 60 s" >&2
    return 1
}

stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
    server_pid=""
    if [[ -n "$server_dir" ]]; then
        rm -rf "$server_dir"
        server_dir=""
    fi
}

# The machine, once per results file: cores, load, kernel.
describe_machine() {
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -sr)"
}
