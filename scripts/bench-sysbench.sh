#!/usr/bin/env bash
# sysbench through switchyard beside sysbench straight to the primary, in one run, on the
# local cluster. Prints tps, p95 latency, the proxy's own CPU time per query
# (utime+stime from /proc over the run) and the single-thread latency added.
# Usage: scripts/bench-sysbench.sh [SECONDS per run, default 10] [THREADS, default 4]
# A benchmark, not a test: figures depend on the machine (on 2 cores sysbench, three
# MariaDB servers and the proxy share the CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-10}; THREADS=${2:-4}
scripts/install-deps.sh
scripts/local-cluster.sh up >/dev/null
cargo build --release -q
SB=(--db-driver=mysql --mysql-db=sbtest --tables=2 --table-size=5000 --mysql-user=strict --mysql-password=strict)
if ! mariadb --no-defaults -h127.0.0.11 -uapp -papp -N -e "SELECT COUNT(*) FROM sbtest.sbtest2" >/dev/null 2>&1; then
  sysbench oltp_read_write --db-driver=mysql --mysql-db=sbtest --tables=2 --table-size=5000 \
    --mysql-user=app --mysql-password=app --mysql-host=127.0.0.11 prepare >/dev/null
  sleep 2
fi
PORT=16033
target/release/switchyard --config examples/local.toml --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:19090 2>/tmp/switchyard-bench.log &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:19090/readyz && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }
HZ=$(getconf CLK_TCK)
run() { # run WORKLOAD HOST PORT THREADS -> "tps p95 queries"
  sysbench "$1" "${SB[@]}" --mysql-host="$2" --mysql-port="$3" --threads="$4" --time="$T" --db-ps-mode=auto run 2>&1 |
    awk '/transactions:/ {gsub(/\(/,"",$3); tps=$3} /queries:/ && !q {q=$2} /95th percentile:/ {p=$3} END {print tps, p, q}'
}
# HAProxy in TCP mode in front of the primary, when installed: what a pure L4 hop costs here
HA=""
if command -v haproxy >/dev/null; then
  cat > /tmp/switchyard-bench-haproxy.cfg <<CFG
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen mysql
  bind 127.0.0.1:16034
  server primary 127.0.0.11:3306
CFG
  haproxy -f /tmp/switchyard-bench-haproxy.cfg -D -p /tmp/switchyard-bench-haproxy.pid && HA=1
  trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; [ -n "$HA" ] && kill $(cat /tmp/switchyard-bench-haproxy.pid) 2>/dev/null' EXIT
fi
printf '%-18s %12s %12s %9s %9s %14s %12s\n' workload direct_tps proxy_tps ratio p95_ms_d/p CPU_us/query haproxy_tps
for w in oltp_point_select oltp_read_only oltp_read_write; do
  read -r dt dp _ <<<"$(run $w 127.0.0.11 3306 "$THREADS")"
  c0=$(ticks)
  read -r pt pp pq <<<"$(run $w 127.0.0.1 $PORT "$THREADS")"
  c1=$(ticks)
  cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v q="$pq" 'BEGIN {printf "%.1f", (b-a)/hz*1e6/q}')
  ratio=$(awk -v a="$dt" -v b="$pt" 'BEGIN {printf "%.2f", b/a}')
  ht=-; [ -n "$HA" ] && read -r ht _ _ <<<"$(run $w 127.0.0.1 16034 "$THREADS")"
  printf '%-18s %12s %12s %9s %9s %14s %12s\n' "$w" "$dt" "$pt" "$ratio" "$dp/$pp" "$cpu" "$ht"
done
read -r _ d1 _ <<<"$(sysbench oltp_point_select "${SB[@]}" --mysql-host=127.0.0.11 --threads=1 --time="$T" run 2>&1 | awk '/avg:/ {a=$2} END {print 0, a, 0}')"
read -r _ p1 _ <<<"$(sysbench oltp_point_select "${SB[@]}" --mysql-host=127.0.0.1 --mysql-port=$PORT --threads=1 --time="$T" run 2>&1 | awk '/avg:/ {a=$2} END {print 0, a, 0}')"
echo "single-thread point select avg latency: direct ${d1} ms, through switchyard ${p1} ms"
echo "(direct runs everything on the primary; through switchyard reads are spread over the replicas)"
