#!/usr/bin/env bash
# Start-to-exit latency of /bin/true: bare exec, unshare, bwrap, sandbox-run (default profile)
# and the library, side by side (benches/start.rs), then a hyperfine cross-check of the three
# commands.
#
# Usage: [BENCH_ITERS=200] [BASELINE_REV=<git rev>] [BENCH_RT=1] bash benches/start.sh
#   BASELINE_REV  also builds that revision's sandbox-run (in a temporary worktree, target dir
#                 target/baseline) and times it in the same run: before/after.
#   BENCH_RT=1    runs the bench at real-time priority (chrt -f 50), so that other load on the
#                 machine (a compile) does not land in the figures.
# Installs hyperfine and bubblewrap from the distribution when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v hyperfine >/dev/null 2>&1 || missing+=(hyperfine)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release
if [ -n "${BASELINE_REV:-}" ]; then
  wt="$(mktemp -d)"
  trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
  git worktree add --detach -f "$wt" "$BASELINE_REV" >/dev/null
  (cd "$wt" && CARGO_TARGET_DIR="$OLDPWD/target/baseline" cargo build --release --bin sandbox-run)
  export SANDBOX_RUN_BASELINE="$PWD/target/baseline/release/sandbox-run"
fi

rt=()
if [ "${BENCH_RT:-0}" = 1 ]; then
  rt=(chrt -f 50)
fi
BENCH_ITERS="${BENCH_ITERS:-200}" "${rt[@]}" cargo bench --bench start

echo
echo "hyperfine cross-check (each command alone, 100 runs):"
"${rt[@]}" hyperfine -N -w 10 -r 100 --style basic \
  "${CARGO_TARGET_DIR:-target}/release/sandbox-run --stdin null -- /bin/true" \
  'unshare --mount --pid --net --ipc --uts --fork /bin/true' \
  'bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc /bin/true'
