#!/usr/bin/env bash
# Bounded property-based fuzzing of the API against its OpenAPI document (schemathesis, from
# PyPI): one fresh single-node hub on loopback, every check on, the admin token as credential.
# Fails on any failure: a 5xx, an undocumented status, a schema-valid request the server
# refuses, a response that does not match its schema. Usage: scripts/api-fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-120}"
if ! command -v schemathesis >/dev/null; then
  python3 -m pip install --quiet "schemathesis>=4,<5"
fi
cargo build --quiet --bin monsys
bin="${CARGO_TARGET_DIR:-target}/debug/monsys"
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
token="msa_api_fuzz_admin_token_0123456789"
"$bin" hub --api-addr "127.0.0.1:$port" --gossip-addr "127.0.0.1:$((port + 1))" --data-dir "$dir/data" \
  --admin-token "$token" >"$dir/hub.log" 2>&1 &
hub=$!
trap 'kill $hub 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/api/v1/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
timeout $((secs + 120)) schemathesis run docs/openapi.json --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" --checks all --max-time "$secs" --workers 2 --seed 1 \
  --exclude-path-regex '^/(internal|ws)/'
