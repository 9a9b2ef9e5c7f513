#!/usr/bin/env bash
# Pod start benchmark (release build): CRI RunPodSandbox + CreateContainer +
# StartContainer through berthd before/after seccomp precompilation and
# through containerd (its own root, state and socket, started and stopped by
# the benchmark), beside `<runtime> run --detach` of the same spec and rootfs
# in the same run; concurrency, stop+remove and memory figures too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
if ! command -v containerd >/dev/null || ! command -v containerd-shim-runc-v2 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin berthd --bin berth-shim --bin bench-pods
export BERTH_TEST_IMAGES="$target/test-images"
python3 hack/build-test-images.py "$BERTH_TEST_IMAGES"
BERTHD_BIN="$target/release/berthd" exec "$target/release/bench-pods"
