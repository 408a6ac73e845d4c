#!/usr/bin/env bash
# Failover under real load: sysbench oltp_read_write (transactions, prepared statements)
# through switchyard (role = "auto", probes only) while the local cluster fails over again
# and again, and a probe client commits a small transaction every few ms through the proxy.
# Prints errors seen by clients, tps before / during / after the storm, the longest pause
# in commits, promotion -> first committed transaction (p50, p99), transaction replays
# (exact; moved: the first reads found a newer snapshot; failed; moved, then lost to a plain
# read), deadlock victims replayed,
# and whether every node holds the same data afterwards.
#   planned:   `local-cluster.sh failover NEXT --kill-connections` (fence, kill, promote)
#   unplanned: the primary's mariadbd is SIGKILLed, then NEXT is promoted (at most 2 in a
#              row: the dead stay dead). With asynchronous replication a killed primary may
#              hold commits its replicas never got, so it cannot rejoin: the survivors are
#              compared, and the cluster is rebuilt (`clean`, `up`) afterwards.
# Usage: scripts/bench-failover-storm.sh [planned|unplanned] [FAILOVERS, default 10]
#        [WINDOW seconds, default 30] [THREADS, default 8]
# A benchmark, not a test: figures depend on the machine. It ends with 127.0.0.11 primary.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-planned}; N=${2:-10}; WINDOW=${3:-30}; THREADS=${4:-8}
[ "$MODE" = unplanned ] && [ "$N" -gt 2 ] && N=2
BEFORE=8; AFTER=8
[[ $MODE == planned || $MODE == unplanned ]] || { echo "mode: planned or unplanned" >&2; exit 2; }
scripts/install-deps.sh >/dev/null
scripts/local-cluster.sh up >/dev/null
BIN=${SWITCHYARD_BIN:-target/release/switchyard}
[ -x "$BIN" ] || cargo build --release -q
SB=(--db-driver=mysql --mysql-db=sbtest --tables=2 --table-size=5000)
if ! mariadb --no-defaults -h127.0.0.11 -uapp -papp -N -e "SELECT COUNT(*) FROM sbtest.sbtest2" >/dev/null 2>&1; then
  sysbench oltp_read_write "${SB[@]}" --mysql-user=app --mysql-password=app --mysql-host=127.0.0.11 prepare >/dev/null
fi
primary() { scripts/local-cluster.sh env | sed -n 's/^PRIMARY=\(n[0-9]\).*/\1/p'; }
[ "$(primary)" = n1 ] || scripts/local-cluster.sh failover n1 >/dev/null 2>&1
OUT=$(mktemp -d /tmp/switchyard-storm.XXXXXX)
PORT=16034; ADMIN=19094
# the local-auto config, with room in the pool for the probe beside sysbench's threads
sed 's/^max_per_user = .*/max_per_user = 12/' examples/local-auto.toml > "$OUT/config.toml"
"$BIN" --config "$OUT/config.toml" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN 2>"$OUT/proxy.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:$ADMIN/readyz && break; sleep 0.1; done
mariadb --no-defaults -h127.0.0.11 -uapp -papp sbtest -e "CREATE TABLE IF NOT EXISTS storm_probe (id BIGINT PRIMARY KEY AUTO_INCREMENT, at_ms BIGINT)"
TOTAL=$((BEFORE + WINDOW + AFTER))
timeout $((TOTAL + 60)) sysbench oltp_read_write "${SB[@]}" --mysql-user=strict --mysql-password=strict \
  --mysql-host=127.0.0.1 --mysql-port=$PORT --threads="$THREADS" --time=$TOTAL --report-interval=1 \
  --mysql-ignore-errors=1213,1205 run >"$OUT/sysbench.txt" 2>&1 &
SBPID=$!
# the probe: BEGIN; INSERT; COMMIT every ~5 ms, each outcome with its time
python3 - "$PORT" "$TOTAL" >"$OUT/probe.txt" 2>&1 <<'PY' &
import sys, time, pymysql
port, total = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + total
c = None
while time.time() < end:
    t = time.time()
    try:
        if c is None:
            c = pymysql.connect(host="127.0.0.1", port=port, user="strict", password="strict", database="sbtest", connect_timeout=5, read_timeout=30, write_timeout=30)
        c.begin()
        with c.cursor() as cur:
            cur.execute("INSERT INTO storm_probe (at_ms) VALUES (%s)", (int(t * 1000),))
        c.commit()
        print(f"ok {int(time.time()*1000)}", flush=True)
    except Exception as e:
        print(f"err {int(time.time()*1000)} {str(e)[:80]!r}", flush=True)
        try:
            c.rollback()
        except Exception:
            c = None
    time.sleep(0.005)
PY
PROBE=$!
sleep $BEFORE
nodes=(n1 n2 n3)
gap=$(python3 -c "print(max(0.5, $WINDOW / $N))")
for i in $(seq 1 "$N"); do
  t0=$(date +%s%N)
  cur=$(primary)
  for j in 0 1 2; do [ "${nodes[$j]}" = "$cur" ] && next=${nodes[$(((j + 1) % 3))]}; done
  if [ "$MODE" = planned ]; then
    timeout 60 scripts/local-cluster.sh failover "$next" --kill-connections 2>>"$OUT/failover.log" >/dev/null
  else
    pid=$(scripts/local-cluster.sh status | awk -v n="$cur" '$1 == n {print $3}')
    echo "kill -9 $cur mariadbd $pid at $(($(date +%s%N) / 1000000))" >>"$OUT/failover.log"
    kill -9 "$pid"
    DEAD="${DEAD:-} $cur"
    [[ " $DEAD " == *" $next "* ]] && for c in "${nodes[@]}"; do [[ " $DEAD " == *" $c "* ]] || next=$c; done
    FAILOVER_REJOIN=0 timeout 60 scripts/local-cluster.sh failover "$next" 2>>"$OUT/failover.log" >/dev/null || true
  fi
  left=$(python3 -c "print(max(0, $gap - ($(date +%s%N) - $t0) / 1e9))")
  sleep "$left"
done
wait $SBPID || true
wait $PROBE || true
curl -s http://127.0.0.1:$ADMIN/metrics > "$OUT/metrics.txt" || true
kill $PID 2>/dev/null; wait $PID 2>/dev/null || true; trap - EXIT
# back to 127.0.0.11 and every replica caught up, then compare the data
if [ "$MODE" = planned ]; then
  [ "$(primary)" = n1 ] || scripts/local-cluster.sh failover n1 >/dev/null 2>&1
  HOSTS="127.0.0.11 127.0.0.12 127.0.0.13"
else
  HOSTS=""
  for n in n1 n2 n3; do [[ " ${DEAD:-} " == *" $n "* ]] || HOSTS="$HOSTS 127.0.0.${n#n}"; done
  HOSTS=$(echo $HOSTS | sed 's/127.0.0.\([0-9]\)/127.0.0.1\1/g')
fi
P=$(scripts/local-cluster.sh env | sed -n "1s/.*PRIMARY_HOST=\([0-9.]*\).*/\1/p")
pos=$(mariadb --no-defaults -h"$P" -uapp -papp -N -e "SELECT @@gtid_binlog_pos")
sums=""
for h in $HOSTS; do
  mariadb --no-defaults -h$h -uapp -papp -N -e "SELECT MASTER_GTID_WAIT('$pos', 30)" >/dev/null
  sums="$sums $(mariadb --no-defaults -h$h -uapp -papp -N -e 'CHECKSUM TABLE sbtest.sbtest1, sbtest.sbtest2, sbtest.storm_probe' | awk '{print $2}' | tr '\n' ,)"
done
python3 - "$OUT" "$MODE" "$N" "$BEFORE" "$WINDOW" "$sums" <<'PY'
import re, sys, statistics
out, mode, n, before, window, sums = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sb = open(f"{out}/sysbench.txt").read()
per_s = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"\[ (\d+)s \] thds: \d+ tps: ([\d.]+)", sb)]
def avg(a, b):
    v = [t for s, t in per_s if a < s <= b]
    return sum(v) / len(v) if v else 0.0
span = max(s for s, _ in per_s) if per_s else 0
fatal = sb.count("FATAL")
ign = re.search(r"ignored errors:\s+(\d+)", sb)
ign = int(ign.group(1)) if ign else -1
probe = [l.split() for l in open(f"{out}/probe.txt") if l[:3] in ("ok ", "err")]
oks = [int(p[1]) for p in probe if p[0] == "ok"]
perr = sum(1 for p in probe if p[0] == "err")
pause = max((b - a for a, b in zip(oks, oks[1:])), default=0)
promos = [int(m.group(1)) for m in re.finditer(r"promoted \S+ \S+ at (\d+)", open(f"{out}/failover.log").read())]
lat = []
for t in promos:
    after = [o for o in oks if o >= t]
    if after:
        lat.append(after[0] - t)
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else -1
met = open(f"{out}/metrics.txt").read() if open(f"{out}/metrics.txt").read() else ""
def metric(name, label=""):
    m = re.search(rf"^{name}{{?{label}[^\n]*?}}? (\S+)$", met, re.M)
    return int(float(m.group(1))) if m else 0
replayed = metric("switchyard_transaction_replays_total", 'outcome="replayed"')
failed = metric("switchyard_transaction_replays_total", 'outcome="failed"')
moved = metric("switchyard_transaction_replays_total", 'outcome="moved"')
moved_lost = metric("switchyard_transaction_replays_total", 'outcome="moved_then_lost"')
deadlocks = metric("switchyard_deadlocks_replayed_total")
doubt = metric("switchyard_commits_in_doubt_total")
same = len(set(sums.split())) == 1
print(f"| mode | failovers | sysbench fatal | sysbench retried errors | probe errors | tps before | tps during | tps after | longest commit pause | promotion -> first commit p50 / p99 | replays exact / moved / failed / moved, then lost | deadlocks replayed | commits in doubt | nodes identical |")
print(f"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
print(f"| {mode} | {len(promos)}/{n} | {fatal} | {ign} | {perr} | {avg(0, before):.0f} | {avg(before, before + window):.0f} | {avg(before + window, span):.0f} | {pause} ms | {pct(50)} / {pct(99)} ms | {replayed} / {moved} / {failed} / {moved_lost} | {deadlocks} | {doubt} | {'yes' if same else 'NO: ' + sums} |")
PY
if [ "$MODE" = unplanned ]; then
  echo "rebuilding the local cluster (the killed primaries cannot rejoin)" >&2
  scripts/local-cluster.sh clean >/dev/null 2>&1; scripts/local-cluster.sh up >/dev/null 2>&1
fi
echo "(logs in $OUT)"
