#!/usr/bin/env bash
# User network benchmark (root): `network create` + `run --network` +
# `connect`/`disconnect` + `network rm` through the docker CLI beside the
# CLI's start-up and a run on the default bridge, and a name lookup by
# the network's DNS responder beside the same name in /etc/hosts, all in
# the same run. PROFILE=debug measures the debug build (no release build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
# Honour CARGO_TARGET_DIR (helpers and CI keep their own target dirs).
target="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PROFILE:-release}"
flag=--release
[ "$profile" = debug ] && flag=
cargo build $flag --bin berthd --bin berth-shim --bin bench-networks
export BERTH_TEST_IMAGES="${BERTH_TEST_IMAGES:-$target/test-images}"
python3 hack/build-test-images.py "$BERTH_TEST_IMAGES"
BERTHD_BIN="$target/$profile/berthd" exec "$target/$profile/bench-networks"
