#!/usr/bin/env bash
# Installs the Debian packages berth's build and tests need. Idempotent: when
# every package is already installed it only asks dpkg-query and returns;
# `apt-get update` runs only when something is missing. Needs root for that.
set -euo pipefail

packages=(
  protobuf-compiler   # prost/tonic build scripts
  crun runc           # OCI runtimes berthd drives
  busybox-static      # /bin/busybox, the test images' only binary
  docker-registry     # hack/registry.sh: local test registry
  skopeo              # hack/push-test-images.sh, pull benchmark floor
  apache2-utils       # htpasswd -B for the registry's basic auth
  zstd                # zstd layers in the test images
  bzip2 xz-utils      # docker build contexts and ADD archives compressed so
  iproute2            # ip, for network namespaces and the network benchmark floor
  iptables            # the bridge network's masquerade and host-port rules
  netavark            # the netavark pod network backend
  containernetworking-plugins  # the cni backend's plugins (/usr/lib/cni), used by tests
  jq                  # hack/push-test-images.sh reads images.json
  curl                # hack/registry.sh readiness probe
  python3             # hack/build-test-images.py
  python3-websocket   # websocket-client: the streaming tests' non-Rust WebSocket client
  python3-grpcio      # grpcio (gRPC C core): the transport tests' non-tonic CRI client
  python3-docker      # docker-py: the Docker API tests' second, independent client
  openssl             # the Docker API TLS test's CA and certificates
  prometheus          # promtool: the metrics test checks a live scrape with it
  ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
