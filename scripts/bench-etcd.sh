#!/usr/bin/env bash
# Side-by-side benchmark of a 3-node monsys cluster and a 3-node etcd on loopback. Installs
# Debian's etcd-server when missing (root), then runs `cargo bench --bench cluster`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null; then
  apt-get install -y etcd-server >/dev/null || { apt-get update >/dev/null && apt-get install -y etcd-server >/dev/null; }
fi
cargo bench --bench cluster
