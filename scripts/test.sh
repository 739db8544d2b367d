#!/usr/bin/env bash
# The project's test command (README, CI): unit tests, storage conformance, in-process
# multi-node cluster tests. Installs nothing on the host; uses cargo-nextest when present.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The module graph of src/ has no circle (prints the circle and fails if one comes back).
python3 scripts/import-graph.py --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads 2 --retries 0
  # nextest does not run doctests
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast -- --test-threads 2
fi

# Bounded chaos run against real processes (netns partitions when root): see jepsen/README.md.
bash jepsen/scripts/ci-short.sh

# Rolling upgrade from the previous release (jepsen/PREVIOUS_RELEASE) and back: see jepsen/README.md.
bash jepsen/scripts/ci-upgrade.sh
