#!/usr/bin/env bash
# Pod start benchmark (release build): CRI RunPodSandbox + CreateContainer +
# StartContainer beside `<runtime> run --detach` of the same spec and rootfs
# in the same run; concurrency, stop+remove and memory figures too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
cargo build --release --bin berthd --bin berth-shim --bin bench-pods
python3 hack/build-test-images.py target/test-images
BERTHD_BIN="$PWD/target/release/berthd" exec target/release/bench-pods
