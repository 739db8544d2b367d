#!/usr/bin/env bash
# Builds the `monsys:local` image without any registry: a statically linked monsys (glibc,
# +crt-static, explicit --target) copied into a `FROM scratch` image.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu --bin monsys
bin="$target_dir/x86_64-unknown-linux-gnu/release/monsys"
if ! ldd "$bin" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
  echo "$bin is dynamically linked; refusing to build a scratch image" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp docker/Dockerfile "$ctx/"
cp "$bin" "$ctx/monsys"
strip "$ctx/monsys" 2>/dev/null || true
docker build --quiet -t monsys:local "$ctx"
docker image ls monsys:local
