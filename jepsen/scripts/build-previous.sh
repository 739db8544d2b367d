#!/usr/bin/env bash
# Builds the `monsys` binary of the previous release named in jepsen/PREVIOUS_RELEASE (a commit)
# in a git worktree of it, with its own cargo target folder, and prints the binary's path on
# the last line of stdout. An existing build is reused (cargo only rebuilds what changed).
#
#   bash jepsen/scripts/build-previous.sh [SRC_DIR [TARGET_DIR]]
#
# SRC_DIR: where the worktree goes (default target/previous-src; env PREVIOUS_SRC).
# TARGET_DIR: its CARGO_TARGET_DIR (default target/previous; env PREVIOUS_TARGET).
# PREVIOUS_PROFILE=release builds with --release (default: debug, as CI does).
# Needs the commit in this clone: a shallow clone must fetch it first (the error says how).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
src="${1:-${PREVIOUS_SRC:-$root/target/previous-src}}"
tgt="${2:-${PREVIOUS_TARGET:-$root/target/previous}}"
profile="${PREVIOUS_PROFILE:-debug}"
commit="$(grep -E '^[0-9a-f]{40}$' jepsen/PREVIOUS_RELEASE | head -n1 || true)"
if [ -z "$commit" ]; then
  echo "jepsen/PREVIOUS_RELEASE names no 40-hex commit" >&2
  exit 1
fi
if ! git cat-file -e "${commit}^{commit}" 2>/dev/null; then
  {
    echo "the previous release $commit (jepsen/PREVIOUS_RELEASE) is not in this clone."
    if [ "$(git rev-parse --is-shallow-repository)" = "true" ]; then
      echo "This is a shallow clone: fetch the history first, e.g."
      echo "  git fetch --unshallow    (or: git fetch --depth=1 origin $commit)"
    else
      echo "Fetch it first, e.g.: git fetch origin $commit"
    fi
  } >&2
  exit 1
fi
if [ -e "$src/.git" ]; then
  if [ "$(git -C "$src" rev-parse HEAD)" != "$commit" ]; then
    git -C "$src" checkout --quiet --detach "$commit"
  fi
else
  git worktree prune
  mkdir -p "$(dirname "$src")"
  git worktree add --quiet --detach "$src" "$commit" >&2
fi
flags=()
[ "$profile" = "release" ] && flags+=(--release)
echo "building monsys at ${commit:0:12} in $src (target $tgt, $profile)" >&2
start=$(date +%s)
(cd "$src" && CARGO_TARGET_DIR="$tgt" cargo build --quiet --locked --bin monsys -p monsys "${flags[@]}" >&2)
echo "built in $(( $(date +%s) - start )) s" >&2
bin="$tgt/$profile/monsys"
test -x "$bin" || { echo "no binary at $bin after the build" >&2; exit 1; }
echo "$bin"
