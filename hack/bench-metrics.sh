#!/usr/bin/env bash
# Metrics benchmark (release build): scrape time and size with 100 running
# containers, pod start p50 with a scrape every second beside without (same
# run), berthd's idle RSS with metrics on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
cargo build --release --bin berthd --bin berth-shim --bin bench-metrics
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
python3 hack/build-test-images.py "${BERTH_TEST_IMAGES:-$target_dir/test-images}"
BERTHD_BIN="$target_dir/release/berthd" exec "$target_dir/release/bench-metrics"
