#!/usr/bin/env bash
# Volume benchmark (release build): `docker volume create`, a first mount
# (`run --rm -v VOL:/data true`) and `volume rm` against berthd and against
# dockerd (Debian's docker.io on its own data root and socket) in the same
# run, with the ratio. The network half is hack/bench-networks.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
bash hack/install-docker-io.sh
# Honour CARGO_TARGET_DIR (helpers and CI keep their own target dirs).
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin berthd --bin berth-shim --bin bench-volumes
export BERTH_TEST_IMAGES="${BERTH_TEST_IMAGES:-$target/test-images}"
python3 hack/build-test-images.py "$BERTH_TEST_IMAGES"
BERTHD_BIN="$target/release/berthd" exec "$target/release/bench-volumes"
