#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds
# berthd, builds the test images, then runs every unit and end-to-end test
# and closes with one summary line. Needs root (end-to-end tests mount
# overlayfs and run a real berthd).
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-deps.sh
cargo build --workspace --bins
python3 hack/build-test-images.py target/test-images

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace -- "$@" 2>&1 | tee "$log" || status=$?
# Sum cargo's per-binary "test result" lines into one closing line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
