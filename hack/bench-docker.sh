#!/usr/bin/env bash
# Docker API benchmark (release build): the docker CLI against berthd and
# against dockerd (Debian's docker.io, installed here if missing; run on its
# own data root, exec root, socket and bridge, stopped after), beside the
# CLI's own start-up and raw `crun run` measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
bash hack/install-docker-io.sh
# Honour CARGO_TARGET_DIR (helpers and CI keep their own target dirs).
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin berthd --bin berth-shim --bin bench-docker
export BERTH_TEST_IMAGES="${BERTH_TEST_IMAGES:-$target/test-images}"
python3 hack/build-test-images.py "$BERTH_TEST_IMAGES"
BERTHD_BIN="$target/release/berthd" exec "$target/release/bench-docker"
