#!/usr/bin/env bash
# Checks the container image's build and start without a Docker engine: the Dockerfile's
# build steps (the same Debian 12 toolchain image as rust:1-bookworm), then the binary run
# in the runtime image's layout, gcr.io/distroless/cc-debian12:nonroot, rebuilt from the same
# Debian 12 packages (libc6, libgcc-s1, ca-certificates, the nonroot user 65532, no shell):
#   - it loads with only those libraries (a missing one, e.g. libz, fails here as it would
#     in the image);
#   - `--check-config` passes on each kustomize rendering's ConfigMap;
#   - it starts as uid 65532 on a read-only root with the config where the Deployment
#     mounts it, answers /healthz and /readyz, serves a query, and stops on SIGTERM.
# Usage: scripts/image-check.sh [--bin PATH]   (default: the Dockerfile's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=""
[ "${1:-}" = "--bin" ] && BIN="$2"
say() { echo "[image-check] $*"; }
fail() { echo "[image-check] FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (chroot)"
if [ -z "$BIN" ]; then
  say "build as the Dockerfile does: cargo build --release --locked --bin switchyard; strip"
  cargo build --release --locked --bin switchyard
  BIN=target/release/switchyard-stripped
  strip -o "$BIN" target/release/switchyard
fi
ROOT=$(mktemp -d /tmp/switchyard-image.XXXXXX)
chmod 755 "$ROOT"
PROXY_PID=""
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  umount "$ROOT/proc" 2>/dev/null || true
  rm -rf "$ROOT"
}
trap cleanup EXIT
# the distroless cc base: these packages' files, nothing else
for pkg in libc6 libgcc-s1; do
  dpkg -L "$pkg" | while read -r f; do
    if [ -f "$f" ] && [[ "$f" == /lib* || "$f" == /usr/lib* ]]; then
      mkdir -p "$ROOT$(dirname "$f")"; cp -a "$f" "$ROOT$f"
    fi
  done
done
# Debian 12 has /lib -> usr/lib merged: keep the loader's path
[ -e "$ROOT/lib64/ld-linux-x86-64.so.2" ] || { mkdir -p "$ROOT/lib64"; cp -aL /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"; }
mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/etc/switchyard" "$ROOT/usr/local/bin" "$ROOT/tmp" "$ROOT/proc"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ROOT/etc/group"
cp "$BIN" "$ROOT/usr/local/bin/switchyard"
[ ! -e "$ROOT/bin/sh" ] && [ ! -e "$ROOT/usr/bin/sh" ] || fail "the layout has a shell"
run() { chroot --userspec=65532:65532 "$ROOT" /usr/local/bin/switchyard "$@"; }
run --version >/dev/null || fail "the binary does not load with the base image's libraries: $(run --version 2>&1 | tail -1)"
say "loads with libc6 and libgcc-s1 only: $(run --version)"
# each rendering's ConfigMap passes --check-config where the Deployment mounts it
for dir in deploy deploy/overlays/replace-proxysql deploy/overlays/static; do
  kubectl kustomize "$dir" | python3 -c '
import sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d and d["kind"] == "ConfigMap":
        sys.stdout.write(d["data"]["switchyard.toml"])' > "$ROOT/etc/switchyard/switchyard.toml"
  out=$(run --config /etc/switchyard/switchyard.toml --check-config 2>&1) || fail "$dir: $out"
  say "$dir: $out"
done
# start as the Deployment does: uid 65532, config mounted read-only, root read-only
sed -e 's/^listen = .*/listen = "127.0.0.1:16033"/' -e 's/^admin_listen = .*/admin_listen = "127.0.0.1:19090"/' \
  examples/local.toml > "$ROOT/etc/switchyard/switchyard.toml"
chmod -R a-w "$ROOT/etc" "$ROOT/usr"
mount -t proc proc "$ROOT/proc"
chroot --userspec=65532:65532 "$ROOT" /usr/local/bin/switchyard --config /etc/switchyard/switchyard.toml > /tmp/switchyard-image.log 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:19090/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf http://127.0.0.1:19090/healthz >/dev/null || fail "no /healthz: $(tail -3 /tmp/switchyard-image.log)"
curl -sf http://127.0.0.1:19090/readyz >/dev/null || fail "not ready: $(tail -3 /tmp/switchyard-image.log)"
got=$(mariadb -h127.0.0.1 -P16033 -uapp -papp -N -e "SELECT 40 + 2" 2>&1) || fail "query: $got"
[ "$got" = 42 ] || fail "query answered $got"
kill -TERM "$PROXY_PID"
for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PROXY_PID" 2>/dev/null && fail "did not stop on SIGTERM"
wait "$PROXY_PID" || fail "exit status $? after SIGTERM"
PROXY_PID=""
say "started as uid 65532 on a read-only root: /healthz, /readyz, a query, SIGTERM exit 0"
