#!/usr/bin/env bash
# Development certificates for TLS towards clients (examples/local-tls.toml): a self-signed
# certificate for 127.0.0.1 / localhost and its key, in certs/ (never committed).
# Usage: scripts/dev-certs.sh [DIR, default certs]   (idempotent: keeps existing files)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-certs}
command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }
mkdir -p "$DIR"
if [[ -s $DIR/server.pem && -s $DIR/server.key ]]; then
  echo "$DIR/server.pem and $DIR/server.key exist"
  exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=switchyard dev" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$DIR/server.key" -out "$DIR/server.pem" 2>/dev/null
chmod 600 "$DIR/server.key"
echo "wrote $DIR/server.pem and $DIR/server.key"
