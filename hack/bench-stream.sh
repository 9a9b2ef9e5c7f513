#!/usr/bin/env bash
# Exec benchmark (release build): ExecSync and a streaming exec (CRI Exec
# + SPDY) of `true` beside `crun exec` in the same run, and the stdout
# throughput of a streaming exec beside a `crun exec` pipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
cargo build --release --bin berthd --bin berth-shim --bin bench-stream
python3 hack/build-test-images.py target/test-images
BERTHD_BIN="$PWD/target/release/berthd" exec target/release/bench-stream
