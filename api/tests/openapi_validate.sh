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

# shellcheck source=start_ledgerd.sh
source "$(dirname "$0")/start_ledgerd.sh"

curl -sSf "http://$address/openapi.json" -o "$work/openapi.json"
openapi-spec-validator "$work/openapi.json"
