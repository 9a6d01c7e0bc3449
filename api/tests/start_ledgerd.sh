# Sourced by the API test scripts (schemathesis.sh, openapi_validate.sh): starts `$ledgerd
# serve` on 127.0.0.1 (random port) with a fresh data dir under a new `$work` directory, sets
# `$address` once it prints `listening on`, and stops it (SIGTERM) and removes `$work` on exit.

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
