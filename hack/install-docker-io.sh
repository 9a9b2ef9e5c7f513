#!/usr/bin/env bash
# dockerd and its containerd (Debian's docker.io), the peer the Docker API
# benchmarks measure berthd beside; installed if missing. The docker CLI
# on PATH stays as it is (/usr/local/bin comes first).
set -euo pipefail
if ! dpkg-query -W -f='${db:Status-Status}' docker.io 2>/dev/null | grep -q installed; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends docker.io
fi
