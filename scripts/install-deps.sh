#!/usr/bin/env bash
# Installs what switchyard's local cluster, tests and quick start need on Debian/Ubuntu:
# MariaDB server and client, sysbench, PyMySQL, curl, and cargo-nextest. Skips what is there.
set -euo pipefail
missing=()
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v mariadb >/dev/null || missing+=(mariadb-client)
command -v sysbench >/dev/null || missing+=(sysbench)
command -v curl >/dev/null || missing+=(curl)
python3 -c "import pymysql" 2>/dev/null || missing+=(python3-pymysql)
# the image check renders manifests (PyYAML) and strips the binary (binutils)
python3 -c "import yaml" 2>/dev/null || missing+=(python3-yaml)
command -v strip >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c "import pymysql" 2>/dev/null; then
  python3 -m pip install -q PyMySQL || python3 -m pip install -q --break-system-packages PyMySQL
fi
if [ "${1:-}" = "--with-nextest" ] && ! python3 -c "import prometheus_client" 2>/dev/null; then
  # the metrics test parses /metrics with a real Prometheus text parser
  python3 -m pip install -q prometheus-client || python3 -m pip install -q --break-system-packages prometheus-client
fi
if [ "${1:-}" = "--with-nextest" ]; then
  # the client matrix's libraries (venv, node mysql2, Connector/J): tests only
  "$(dirname "$0")/../tests/clients/matrix/install.sh"
fi
if [ "${1:-}" = "--with-nextest" ] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked -q
fi
