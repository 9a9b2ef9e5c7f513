#!/usr/bin/env bash
# Pull benchmark (release build): berthd CRI PullImage of a ~100 MB image
# beside the floor of `skopeo copy` + `tar -x` measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
cargo build --release --bin berthd --bin bench-pull
python3 hack/build-test-images.py target/test-images
BERTHD_BIN="$PWD/target/release/berthd" exec target/release/bench-pull
