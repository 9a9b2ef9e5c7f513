#!/usr/bin/env bash
# docker build benchmark (release build): the docker CLI's classic builder
# against berthd and against dockerd (Debian's docker.io, installed here if
# missing; run on its own data root, exec root, socket and bridge, stopped
# after), on the same Dockerfile and context in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
bash hack/install-docker-io.sh
# Honour CARGO_TARGET_DIR (helpers and CI keep their own target dirs).
target="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${BENCH_PROFILE:-release}"
case "$profile" in
  release) cargo build --release --bin berthd --bin berth-shim --bin bench-build ;;
  debug) cargo build --bin berthd --bin berth-shim --bin bench-build ;;
esac
export BERTH_TEST_IMAGES="${BERTH_TEST_IMAGES:-$target/test-images}"
python3 hack/build-test-images.py "$BERTH_TEST_IMAGES"
BERTHD_BIN="$target/$profile/berthd" exec "$target/$profile/bench-build"
