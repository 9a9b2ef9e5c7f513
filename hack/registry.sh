#!/usr/bin/env bash
# A throwaway local registry for tests: Debian's docker-registry (distribution
# 2.8) on loopback only, with its storage, config and log under DIR.
#
#   hack/registry.sh start DIR [PORT]   start it; prints 127.0.0.1:PORT
#   hack/registry.sh stop DIR           stop it and wait until it has exited
#
# start writes DIR/config.yml, DIR/pid, DIR/port and logs to DIR/registry.log;
# blobs live in DIR/storage. Without PORT a free port is picked (and another
# one tried if it is taken before the registry binds it). When both
# REGISTRY_HTPASSWD_USER and REGISTRY_HTPASSWD_PASS are set the registry
# demands HTTP basic auth (bcrypt htpasswd in DIR/htpasswd, realm berth-test);
# it serves plain HTTP, which distribution 2.8 accepts for htpasswd auth.
# With REGISTRY_TOKEN_REALM and REGISTRY_TOKEN_CERT set it demands bearer
# tokens from that token server instead (service berth-test).
set -euo pipefail

READY_TIMEOUT=${REGISTRY_READY_TIMEOUT:-20}   # seconds
STOP_TIMEOUT=10                               # seconds before SIGKILL

die() { echo "registry.sh: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR [PORT] | stop DIR"; }

now_ms() { date +%s%3N; }

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Whether PID is a live process (a zombie counts as exited).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Whether PID is a live docker-registry serving DIR's config (so a stale pid
# file never gets an unrelated process killed).
is_ours() {
  alive "$1" || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$2/config.yml"
}

write_config() {
  local dir=$1 port=$2 auth=""
  if [ -f "$dir/htpasswd" ]; then
    auth=$(printf 'auth:\n  htpasswd:\n    realm: berth-test\n    path: "%s/htpasswd"\n' "$dir")
  elif [ -f "$dir/token-realm" ]; then
    auth=$(printf 'auth:\n  token:\n    realm: "%s"\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: "%s/token-cert.pem"\n' \
      "$(cat "$dir/token-realm")" "$dir")
  fi
  # No http.debug section: no debug/metrics listener at all.
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: "$dir/storage"
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: $(python3 -c 'import secrets; print(secrets.token_hex(16))')
  headers:
    X-Content-Type-Options: [nosniff]
$auth
EOF
}

# Starts the registry on PORT; returns 0 once it answers GET /v2/, 1 if the
# process died first (the port was taken, say), 2 on timeout.
launch() {
  local dir=$1 port=$2 pid code deadline
  write_config "$dir" "$port"
  # The caller's REGISTRY_* variables would override config fields (and put
  # the password in the registry's environment): drop them all.
  local unset_args=()
  while IFS= read -r v; do unset_args+=(-u "$v"); done < <(compgen -e | grep '^REGISTRY_' || true)
  # stdin/stdout/stderr detached so `$(hack/registry.sh start ...)` and
  # Command::output() callers do not wait on the registry's pipes.
  local log_start
  log_start=$(( $(stat -c %s "$dir/registry.log" 2>/dev/null || echo 0) + 1 ))
  env "${unset_args[@]}" docker-registry serve "$dir/config.yml" \
    </dev/null >>"$dir/registry.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  deadline=$(( $(now_ms) + READY_TIMEOUT * 1000 ))
  while :; do
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
      return 1
    fi
    # Ready when this very process logged that it bound the port (another
    # process could answer on it) and GET /v2/ answers (401 with auth).
    if tail -c +"$log_start" "$dir/registry.log" | grep -qF "listening on 127.0.0.1:$port"; then
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
        "http://127.0.0.1:$port/v2/" 2>/dev/null || true)
      case $code in
        200|401) alive "$pid" && return 0 ;;
      esac
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      kill "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
      return 2
    fi
    sleep 0.05
  done
}

start() {
  local dir=$1 want_port=${2:-} port rc attempt
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  case $dir in *'"'*|*'\'*) die "unsupported characters in $dir" ;; esac
  if [ -f "$dir/pid" ] && is_ours "$(cat "$dir/pid")" "$dir"; then
    die "a registry already runs for $dir (pid $(cat "$dir/pid"))"
  fi
  command -v docker-registry >/dev/null || die "docker-registry not installed (hack/install-deps.sh)"
  mkdir -p "$dir/storage"
  rm -f "$dir/htpasswd" "$dir/token-realm" "$dir/token-cert.pem"
  # Token auth (as Docker Hub does it): REGISTRY_TOKEN_REALM is the token
  # server's URL, REGISTRY_TOKEN_CERT the PEM certificate it signs with.
  if [ -n "${REGISTRY_TOKEN_REALM:-}" ]; then
    [ -f "${REGISTRY_TOKEN_CERT:-}" ] || die "REGISTRY_TOKEN_CERT must name the token signing certificate"
    cp "$REGISTRY_TOKEN_CERT" "$dir/token-cert.pem"
    printf '%s' "$REGISTRY_TOKEN_REALM" >"$dir/token-realm"
  fi
  if [ -n "${REGISTRY_HTPASSWD_USER:-}" ] || [ -n "${REGISTRY_HTPASSWD_PASS:-}" ]; then
    [ -n "${REGISTRY_HTPASSWD_USER:-}" ] && [ -n "${REGISTRY_HTPASSWD_PASS:-}" ] ||
      die "set both REGISTRY_HTPASSWD_USER and REGISTRY_HTPASSWD_PASS"
    command -v htpasswd >/dev/null || die "htpasswd not installed (apache2-utils)"
    # -i: the password comes on stdin, never on a command line.
    printf '%s' "$REGISTRY_HTPASSWD_PASS" |
      htpasswd -B -c -i "$dir/htpasswd" "$REGISTRY_HTPASSWD_USER" 2>/dev/null ||
      die "htpasswd failed"
  fi
  for attempt in 1 2 3 4 5; do
    port=${want_port:-$(free_port)}
    rc=0
    launch "$dir" "$port" || rc=$?
    case $rc in
      0) echo "$port" >"$dir/port"; echo "127.0.0.1:$port"; return 0 ;;
      2) die "registry on 127.0.0.1:$port not answering after ${READY_TIMEOUT}s; see $dir/registry.log" ;;
    esac
    # Died early: with a chosen port, give up; with a picked one, try another.
    [ -z "$want_port" ] || break
  done
  tail -n 20 "$dir/registry.log" >&2 || true
  die "registry exited during startup; see $dir/registry.log"
}

stop() {
  local dir=$1 pid deadline
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd -P)
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  if ! is_ours "$pid" "$dir"; then   # already gone (or the PID was reused)
    rm -f "$dir/pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(now_ms) + STOP_TIMEOUT * 1000 ))
  while is_ours "$pid" "$dir"; do
    if [ "$(now_ms)" -ge "$deadline" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(( $(now_ms) + STOP_TIMEOUT * 1000 ))
    fi
    sleep 0.02
  done
  rm -f "$dir/pid"
}

[ $# -ge 2 ] || usage
case $1 in
  start) [ $# -le 3 ] || usage; start "$2" "${3:-}" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
