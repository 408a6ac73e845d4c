#!/usr/bin/env bash
# Quick start: installs what is missing (MariaDB, sysbench, PyMySQL, curl), starts the local
# primary/replica cluster (127.0.0.11 primary, 127.0.0.12/13 replicas), builds switchyard and
# runs it with examples/local.toml: clients connect to 127.0.0.1:6033, admin on 127.0.0.1:9090.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
scripts/install-deps.sh
scripts/local-cluster.sh up
cargo build --release
echo "switchyard on 127.0.0.1:6033 (try: mariadb -h127.0.0.1 -P6033 -ustrict -pstrict sbtest)" >&2
exec target/release/switchyard --config examples/local.toml "$@"
