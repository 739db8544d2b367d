#!/usr/bin/env bash
# Short, bounded chaos run for CI (about 2–3 minutes): one run of the real cluster under every
# fault type the machine supports (network faults need root and `ip netns`; otherwise process
# faults only), which must be judged VALID, and one run of the deliberately broken build
# (--unsafe-ack-before-commit), which must be judged INVALID — so we know the checker can fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --bin monsys -p monsys --bin monsys-jepsen -p monsys-jepsen
target="${CARGO_TARGET_DIR:-target}"
bin="$target/debug/monsys"
jepsen="$target/debug/monsys-jepsen"
out=jepsen/results/ci-$(date +%s)

echo "== chaos run: kill, kill-leader, pause, partitions, netem, rolling restart"
timeout 600 "$jepsen" run --binary "$bin" --time-limit 70 --concurrency 5 --agents 4 --interval 7 --duration 3 \
  --nemesis kill-leader,partition-leader,pause,partition-majority,netem,partition-bridge,kill,rolling-restart \
  --out "$out/valid"

echo "== broken build (acknowledges before commit): the checker must say INVALID"
set +e
timeout 300 "$jepsen" run --binary "$bin" --time-limit 15 --concurrency 5 --nemesis none \
  --unsafe-ack-before-commit --out "$out/broken"
code=$?
set -e
if [ "$code" -ne 1 ]; then
  echo "the checker did not catch the broken build (exit $code)" >&2
  exit 1
fi
echo "broken build caught: INVALID as expected"
