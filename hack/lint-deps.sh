#!/usr/bin/env bash
# The core and the leaf crates know no wire types (docs/dev/architecture.md):
# fail if any of them depends on a gRPC or HTTP front-door crate.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for toml in pkg/errdefs/Cargo.toml pkg/core/Cargo.toml pkg/oci/Cargo.toml pkg/image/Cargo.toml \
            pkg/net/Cargo.toml pkg/cgroups/Cargo.toml pkg/store/Cargo.toml; do
  [ -f "$toml" ] || continue
  if bad=$(grep -oE '^(tonic|prost|k8s-cri|axum|hyper|berth-cri|berth-docker|berth-stream)[ =.]' "$toml"); then
    echo "$toml depends on wire crates: $(echo "$bad" | tr -d ' =.' | tr '\n' ' ')" >&2
    status=1
  fi
done
exit $status
