#!/usr/bin/env bash
# The layering of docs/dev/architecture.md, checked on the Cargo.toml files:
# - the core and the leaf crates know no wire types: none of them depends
#   on a gRPC or HTTP front-door crate;
# - front doors reach the leaves only through the core: none of them
#   depends on a leaf crate (they use berth-core's types and berth-errdefs).
# Prints every offending crate with what it depends on; fails if any.
set -euo pipefail
cd "$(dirname "$0")/.."

WIRE="tonic prost k8s-cri axum hyper berth-cri berth-docker berth-stream berth-metrics"
INNER="errdefs core oci image net ns cgroups store dockerfile"
LEAVES="berth-image berth-net berth-oci berth-ns berth-cgroups berth-store berth-dockerfile"
FRONT_DOORS="cri docker metrics stream"

# The names a Cargo.toml depends on, one a line, from any dependency
# section ([dependencies], [dev-dependencies], [target.*.dependencies]) in
# either form (`name = ...`, `name.workspace = true`, `[dependencies.name]`).
deps() {
  awk '
    /^[ \t]*\[/ {
      in_deps = ($0 ~ /dependencies\][ \t]*$/)
      if (match($0, /dependencies\.[A-Za-z0-9_-]+\]/)) print substr($0, RSTART + 13, RLENGTH - 14)
      next
    }
    in_deps && /^[A-Za-z0-9_-]+[ \t]*[=.]/ { sub(/[ \t]*[=.].*/, ""); print }
  ' "$1" | sort -u
}

crate_name() {
  awk -F'"' '/^name[ \t]*=/ { print $2; exit }' "$1"
}

status=0
# check <what the forbidden crates are> <Cargo.toml> <forbidden crates...>
check() {
  local what=$1 toml=$2
  shift 2
  local bad=() d f
  for d in $(deps "$toml"); do
    for f in "$@"; do
      [ "$d" = "$f" ] && bad+=("$d")
    done
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "$(crate_name "$toml") ($toml) depends on $what: ${bad[*]}" >&2
    status=1
  fi
}

for dir in $INNER; do
  toml=pkg/$dir/Cargo.toml
  [ -f "$toml" ] || continue
  # shellcheck disable=SC2086 # word splitting of the lists is meant
  check "wire crates (the core and the leaves know no wire types)" "$toml" $WIRE
done
for dir in $FRONT_DOORS; do
  toml=pkg/$dir/Cargo.toml
  [ -f "$toml" ] || continue
  # shellcheck disable=SC2086
  check "leaf crates (front doors use berth-core)" "$toml" $LEAVES
done
[ $status -eq 0 ] && echo "lint-deps: ok (no wire crate under the core, no leaf crate under a front door)"
exit $status
