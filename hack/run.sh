#!/usr/bin/env bash
# Installs what is missing, builds berthd (and its monitor, berth-shim) and runs it in the foreground with
# its defaults: CRI on unix:///run/berth/berth.sock, state in /var/lib/berth.
# Extra arguments go to berthd (see `berthd --help`). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-deps.sh
cargo build --release --bin berthd --bin berth-shim
exec target/release/berthd "$@"
