#!/usr/bin/env bash
# Builds the release `sandbox-run` binary, then runs the start-to-exit bench (benches/start.rs).
# Usage: [BENCH_ITERS=200] bash benches/start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
BENCH_ITERS="${BENCH_ITERS:-200}" cargo bench --bench start
