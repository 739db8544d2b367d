#!/usr/bin/env bash
# Agent footprint: runs the release `monsys agent` for a bounded number of collection cycles
# against a hub URL that does not answer (so every batch goes through collection, signing and
# the disk buffer), then prints its resident memory and CPU per cycle next to the targets.
# Usage: bash agent/scripts/bench.sh [cycles] [interval_secs]
set -euo pipefail
cd "$(dirname "$0")/../.."
cycles="${1:-20}"
interval="${2:-1}"
cargo build --release --bin monsys >/dev/null 2>&1
bin=target/release/monsys
state=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$state"' EXIT
mkdir -p "$state/s"
# a registration as if the hub had answered, so the agent goes straight to collecting
printf '{"agent_id":"bench","agent_token":"ms_bench"}' >"$state/s/agent.json"
chmod 600 "$state/s/agent.json"
MONSYS_LOG=error "$bin" agent --hub http://127.0.0.1:9 --state-dir "$state/s" \
  --interval-secs "$interval" --timeout-ms 200 >/dev/null 2>&1 &
pid=$!
sleep $((cycles * interval + 1))
ticks=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
cpu_s=$(echo "scale=4; ($utime + $stime) / $ticks" | bc)
per_cycle_ms=$(echo "scale=2; $cpu_s * 1000 / $cycles" | bc)
pct=$(echo "scale=4; $per_cycle_ms / 15000 * 100" | bc)
printf '%-46s %12s %12s\n' "figure" "measured" "target"
printf '%-46s %12s %12s\n' "agent RSS, MB" "$(echo "scale=1; $rss_kb / 1024" | bc)" "≤ 10"
printf '%-46s %12s %12s\n' "CPU per collection cycle, ms" "$per_cycle_ms" "-"
printf '%-46s %12s %12s\n' "% of one core at the 15 s interval" "$pct" "≤ 0.5"
printf '%-46s %12s %12s\n' "batches buffered on disk" "$(ls "$state/s/buffer" >/dev/null && echo yes)" "-"
