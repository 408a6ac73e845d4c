#!/usr/bin/env bash
# The test command: installs what is missing, starts the local MariaDB cluster, checks
# formatting and lints, and runs every test (unit, integration against the real cluster,
# real clients: mariadb CLI, PyMySQL, sysbench). One build profile (dev) for all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --with-nextest
scripts/local-cluster.sh up
cargo fmt --check
cargo clippy --all-targets -q -- -D warnings
# everything but the end-to-end failover test, which moves the primary under other tests'
# feet, then that test alone (it leaves 127.0.0.11 primary)
cargo nextest run --no-fail-fast -E 'not binary_id(switchyard::failover)' "$@"
# the container image's runtime layout (distroless cc, uid 65532, no shell) without Docker,
# with the binary the tests built
scripts/image-check.sh --bin target/debug/switchyard
cargo nextest run --no-fail-fast --test failover
