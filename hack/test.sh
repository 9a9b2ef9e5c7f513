#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds
# berthd, builds the test images, then runs every unit and end-to-end test.
# Needs root (end-to-end tests mount overlayfs and run a real berthd).
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-deps.sh
cargo build --workspace --bins
python3 hack/build-test-images.py target/test-images
exec cargo test --workspace -- "$@"
