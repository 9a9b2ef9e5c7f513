#!/usr/bin/env bash
# Pushes test images built by hack/build-test-images.py to a registry.
#
#   hack/push-test-images.sh OUTDIR REGISTRY [NAME...]
#
# REGISTRY is host:port (e.g. 127.0.0.1:5123, plain HTTP). Each NAME goes to
# REGISTRY/NAME:latest with `skopeo copy --preserve-digests`, so the registry
# serves the very manifests and digests listed in OUTDIR/images.json; images
# marked "all" there (multiarch) are pushed with --all, index included.
# NAME busybox-v2s2 is OUTDIR/busybox converted to Docker v2 schema 2
# (`--format v2s2`; its manifest digest differs from busybox's, its layer and
# config blobs are the same). No NAME: every image, plus busybox-v2s2.
# PUSH_CREDS=user:password authenticates to the registry. Exits non-zero if
# any push fails.
set -euo pipefail

die() { echo "push-test-images.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 OUTDIR REGISTRY [NAME...]"
outdir=$1 registry=$2
shift 2
[ -f "$outdir/images.json" ] || die "$outdir/images.json missing (run hack/build-test-images.py $outdir)"
command -v skopeo >/dev/null || die "skopeo not installed (hack/install-deps.sh)"

if [ $# -eq 0 ]; then
  mapfile -t names < <(jq -r 'keys[]' "$outdir/images.json")
  names+=(busybox-v2s2)
else
  names=("$@")
fi

common=(--insecure-policy copy --quiet --retry-times 2 --dest-tls-verify=false)
if [ -n "${PUSH_CREDS:-}" ]; then
  common+=(--dest-creds "$PUSH_CREDS")
fi

status=0
for name in "${names[@]}"; do
  args=()
  case $name in
    busybox-v2s2)
      src=busybox
      # v2s2 has no zstd and no OCI media types: the manifest is rewritten,
      # so its digest cannot be preserved.
      args+=(--format v2s2)
      ;;
    *)
      src=$name
      jq -e --arg n "$name" 'has($n)' "$outdir/images.json" >/dev/null ||
        { echo "push-test-images.sh: no image $name in $outdir/images.json" >&2; status=1; continue; }
      args+=(--preserve-digests)
      if [ "$(jq -r --arg n "$name" '.[$n].all' "$outdir/images.json")" = true ]; then
        args+=(--all)
      fi
      ;;
  esac
  if ! skopeo "${common[@]}" "${args[@]}" "oci:$outdir/$src:latest" "docker://$registry/$name:latest"; then
    echo "push-test-images.sh: push of $name to $registry failed" >&2
    status=1
  fi
done
exit $status
