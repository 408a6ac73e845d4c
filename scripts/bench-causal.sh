#!/usr/bin/env bash
# What read-your-writes costs: sysbench oltp_read_write through switchyard with
# `routing.read_your_writes = "session"` (the default) and with "none", in one run, as
# transactions (BEGIN..COMMIT: every statement on the primary) and as autocommit statements
# (--skip_trx=on --delete_inserts=0: each update is followed by reads that go to standbys
# and wait there for the session's GTID; without transactions sysbench's DELETE+INSERT
# pairs collide between threads, direct too). Prints tps, errors, and the causal waits and fallbacks counted.
# Usage: scripts/bench-causal.sh [SECONDS per run, default 10] [THREADS, default 4] [BINARY]
# A benchmark, not a test: on 2 cores sysbench, three MariaDB servers and the proxy share
# the CPUs, so only ratios measured in one run mean something.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-10}; THREADS=${2:-4}; BIN=${3:-target/release/switchyard}
scripts/install-deps.sh >/dev/null
scripts/local-cluster.sh up >/dev/null
[ -x "$BIN" ] || cargo build --release -q
SB=(--db-driver=mysql --mysql-db=sbtest --tables=2 --table-size=5000 --mysql-user=strict --mysql-password=strict)
if ! mariadb --no-defaults -h127.0.0.11 -uapp -papp -N -e "SELECT COUNT(*) FROM sbtest.sbtest2" >/dev/null 2>&1; then
  sysbench oltp_read_write --db-driver=mysql --mysql-db=sbtest --tables=2 --table-size=5000 \
    --mysql-user=app --mysql-password=app --mysql-host=127.0.0.11 prepare >/dev/null
  sleep 2
fi
PORT=16034 ADMIN=19094
CFG=$(mktemp /tmp/switchyard-causal.XXXXXX.toml)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -f "$CFG"; }
trap cleanup EXIT
start() { # start MODE
  cp examples/local.toml "$CFG"
  printf '\n[routing]\nread_your_writes = "%s"\n' "$1" >> "$CFG"
  "$BIN" --config "$CFG" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN 2>/tmp/switchyard-causal.log &
  PID=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:$ADMIN/readyz && break; sleep 0.1; done
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=; }
counter() { curl -s http://127.0.0.1:$ADMIN/status | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
run() { # run SKIP_TRX -> "tps errors"
  local extra=(); [ "$1" = on ] && extra=(--delete_inserts=0)
  sysbench oltp_read_write "${SB[@]}" "${extra[@]}" --skip_trx="$1" --mysql-host=127.0.0.1 --mysql-port=$PORT \
    --threads="$THREADS" --time="$T" --db-ps-mode=auto run 2>&1 |
    awk '/transactions:/ {gsub(/\(/,"",$3); tps=$3} /ignored errors:/ {e=$3} END {print tps, e}'
}
printf '%-10s %-22s %10s %7s %8s %10s\n' mode workload tps errors waits fallbacks
for mode in session none; do
  for skip in off on; do
    start "$mode"
    read -r tps err < <(run "$skip")
    w=$(counter causal_waits); f=$(counter causal_fallbacks)
    stop
    name=$([ "$skip" = on ] && echo "read_write autocommit" || echo "read_write BEGIN..COMMIT")
    printf '%-10s %-22s %10s %7s %8s %10s\n' "$mode" "$name" "$tps" "$err" "$w" "$f"
  done
done
