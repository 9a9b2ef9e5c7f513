#!/usr/bin/env bash
# Pod network benchmark (release build, root): the bridge backend's setup
# and teardown per pod beside `ip -batch` doing the same in the same run,
# then 50 pods networked concurrently.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
cargo build --release --bin bench-net
exec target/release/bench-net
