#!/usr/bin/env bash
# local-cluster.sh - local MariaDB test cluster for switchyard: 1 primary + 2 GTID replicas,
# loopback only (127.0.0.11-13:3306) plus unix sockets.  Self-contained: needs only bash,
# coreutils, util-linux (setsid) and mariadb-server/mariadb-client (installed by `up` if missing).
#
#   local-cluster.sh up       start (or re-use) the 3 nodes, ensure users/DBs, wire replication,
#                             verify it.  Idempotent; keeps the primary chosen by the last failover.
#   local-cluster.sh down     clean shutdown of the 3 nodes (data kept; next `up` is fast)
#   local-cluster.sh status   address / up / read_only / gtid_binlog_pos / replication per node
#   local-cluster.sh failover [NODE] [--kill-connections]
#                             promote NODE (default: the node after the current primary,
#                             n1->n2->n3->n1): fence old primary (read_only=1; a fence blocked
#                             over FENCE_WAIT_S=1 s by a lock wait kills the client connections
#                             and tries again), MASTER_GTID_WAIT
#                             on the target, STOP SLAVE + RESET SLAVE ALL + read_only=0 on it,
#                             repoint the other replica, re-attach the old primary as a replica,
#                             verify with a token round trip.  Exit 0 only when verified.
#                             Prints exactly one stderr line "promoted NODE HOST at EPOCH_MS"
#                             (EPOCH_MS = ms since epoch when read_only=0 took effect).
#                             --kill-connections: like Dolt on a role change, kill every client
#                             connection on the old and the new primary right after fencing and
#                             again right after promoting.
#                             NODE = n1|n2|n3 or 127.0.0.11|127.0.0.12|127.0.0.13 (":3306" ok).
#                             FAILOVER_REJOIN=0 leaves the old primary detached.
#   local-cluster.sh sql NODE "SQL"   run SQL as root over NODE's unix socket
#   local-cluster.sh env      print the topology as shell variables
#   local-cluster.sh clean    down + delete all data (next `up` re-initialises)
#
# Nodes: n1=127.0.0.11:3306  n2=127.0.0.12:3306  n3=127.0.0.13:3306 (n1 is the initial primary).
# Users (all from '%'):
#   app/app         ALL PRIVILEGES WITH GRANT OPTION (includes READ_ONLY ADMIN: app CAN write on
#                   read_only=1 nodes, also on a fenced old primary)
#   strict/strict   ALL minus SUPER and READ_ONLY ADMIN: writes on read_only nodes fail with 1290
#   monitor/monitor USAGE + REPLICATION CLIENT + SLAVE MONITOR + PROCESS (SELECT @@read_only,
#                   SHOW SLAVE/REPLICA STATUS, SHOW PROCESSLIST)
#   repl/repl       replication
# Databases: sbtest, testbed (testbed.heartbeat is used for replication checks).
# Env: SWITCHYARD_CLUSTER_DIR (default /tmp/switchyard-cluster), SWITCHYARD_CLUSTER_WAIT_S
# (default 30: bound of every wait loop).  No systemd, no /etc/mysql: --no-defaults everywhere.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
BASE=${SWITCHYARD_CLUSTER_DIR:-/tmp/switchyard-cluster}
DATA=$BASE/data
RUN=$BASE/run                 # sockets, pid files, logs, generated cnf (sun_path <= 107 bytes)
STATE=$DATA/state.env         # persisted: PRIMARY
ENVOUT=$BASE/cluster.env
NODES=(n1 n2 n3)
WAIT_S=${SWITCHYARD_CLUSTER_WAIT_S:-30}
PORT=3306
KILL_FILTER="USER NOT IN ('system user','event_scheduler','repl') AND ID<>CONNECTION_ID()
  AND COMMAND NOT IN ('Binlog Dump','Slave_IO','Slave_SQL','Slave_worker','Daemon')"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- topology
load_state() {
  PRIMARY=""
  if [[ -f $STATE ]]; then
    # shellcheck disable=SC1090
    source "$STATE"
  fi
  PRIMARY=${PRIMARY:-n1}
}
save_state() { mkdir -p "$DATA"; printf 'PRIMARY=%s\n' "$PRIMARY" > "$STATE.tmp"; mv "$STATE.tmp" "$STATE"; }

idx_of()  { case $1 in n1) echo 0;; n2) echo 1;; n3) echo 2;; *) die "unknown node $1";; esac; }
host_of() { echo "127.0.0.1$(( $(idx_of "$1") + 1 ))"; }
sid_of()  { echo $(( $(idx_of "$1") + 1 )); }
sock_of() { echo "$RUN/$1.sock"; }
pid_of()  { cat "$RUN/$1.pid" 2>/dev/null || true; }
# replicas in cyclic order after the primary: replica 1 = next node, replica 2 = the one after
replicas_of() { local i; i=$(idx_of "$1"); echo "${NODES[$(( (i+1)%3 ))]} ${NODES[$(( (i+2)%3 ))]}"; }
node_arg() {  # normalise n1 | 1 | 127.0.0.11 | 127.0.0.11:3306 -> n1
  case ${1%:3306} in
    n1|1|127.0.0.11) echo n1;; n2|2|127.0.0.12) echo n2;; n3|3|127.0.0.13) echo n3;;
    *) die "unknown node '$1' (use n1|n2|n3 or 127.0.0.11|127.0.0.12|127.0.0.13)";;
  esac
}

# ---------------------------------------------------------------- helpers
sql() {  # sql NODE "statements"  (root over the unix socket, tab separated, no headers)
  local n=$1; shift
  timeout 60 mariadb --no-defaults --connect-timeout=5 -S "$(sock_of "$n")" -uroot -N -B -e "$*"
}
slave_status() {  # SHOW SLAVE STATUS\G with field names (-N would strip them)
  timeout 60 mariadb --no-defaults --connect-timeout=5 -S "$(sock_of "$1")" -uroot -e "SHOW SLAVE STATUS\G"
}
alive() {  # process exists and answers on its socket
  local p; p=$(pid_of "$1")
  [[ -n $p ]] && kill -0 "$p" 2>/dev/null && \
    timeout 10 mariadb-admin --no-defaults --connect-timeout=2 -S "$(sock_of "$1")" -uroot ping >/dev/null 2>&1
}

# anonymous block: kill every client connection (see KILL_FILTER), print how many were killed
kill_block() {  # starts with a newline: DELIMITER is only recognised at the start of a line
  echo
  cat <<EOF
DELIMITER //
BEGIN NOT ATOMIC
  DECLARE done INT DEFAULT 0;
  DECLARE n INT DEFAULT 0;
  DECLARE cid BIGINT UNSIGNED;
  DECLARE cur CURSOR FOR SELECT ID FROM information_schema.PROCESSLIST WHERE $KILL_FILTER;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1;
  DECLARE CONTINUE HANDLER FOR 1094 BEGIN END;  -- thread already gone
  OPEN cur;
  l: LOOP
    FETCH cur INTO cid;
    IF done THEN LEAVE l; END IF;
    KILL CONNECTION cid;
    SET n = n + 1;
  END LOOP;
  CLOSE cur;
  SELECT n;
END
//
EOF
}
kill_clients() {  # kill_clients NODE WHY
  local n=$1 why=$2 k
  alive "$n" || { log "kill-connections ($why): $n is down, skipped"; return 0; }
  k=$(sql "$n" "$(kill_block)") || { log "WARN: kill-connections ($why) on $n failed"; return 0; }
  log "kill-connections ($why): killed $k client connection(s) on $n $(host_of "$n")"
}

write_cnf() {  # write_cnf NODE READ_ONLY(0|1)
  local n=$1 ro=$2 userline=""
  [[ $EUID -eq 0 ]] && userline="user=root"   # mariadbd refuses to run as root without it
  cat > "$RUN/$n.cnf.tmp" <<EOF
# generated by local-cluster.sh - do not edit
[mariadbd]
$userline
datadir=$DATA/$n
socket=$(sock_of "$n")
pid-file=$RUN/$n.pid
log-error=$RUN/$n.err
bind-address=$(host_of "$n")
port=$PORT
server-id=$(sid_of "$n")
report-host=$(host_of "$n")
report-port=$PORT
# fixed names: default names embed the hostname, which changes between containers
log-bin=mysql-bin
log-bin-index=mysql-bin.index
relay-log=relay-bin
relay-log-index=relay-bin.index
log-slave-updates=ON
binlog-format=ROW
gtid-domain-id=0
gtid-strict-mode=ON
read-only=$ro
slave-net-timeout=10
skip-name-resolve
max-connections=2000
max-connect-errors=1000000
max-allowed-packet=64M
slave-max-allowed-packet=1G
innodb-buffer-pool-size=256M
innodb-log-file-size=64M
# test bed, not production: trade durability for speed
innodb-flush-log-at-trx-commit=2
sync-binlog=0
# the tests write 20 MiB rows over and over: keep the binary logs small and short-lived
# (expiry is checked when a log rotates) so repeated runs do not fill the disk
max-binlog-size=128M
binlog-expire-logs-seconds=900
EOF
  mv "$RUN/$n.cnf.tmp" "$RUN/$n.cnf"
}
write_all_cnf() {
  local n
  for n in "${NODES[@]}"; do if [[ $n == "$PRIMARY" ]]; then write_cnf "$n" 0; else write_cnf "$n" 1; fi; done
}

# users / databases; idempotent (also used on the primary of an existing cluster by `up`)
users_sql() {
  cat <<'EOF'
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL PRIVILEGES ON *.* TO 'app'@'%' WITH GRANT OPTION;
-- 'strict' = app without READ_ONLY ADMIN/SUPER: read_only=1 really rejects its writes (1290)
CREATE USER IF NOT EXISTS 'strict'@'%' IDENTIFIED BY 'strict';
GRANT ALL PRIVILEGES ON *.* TO 'strict'@'%';
REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM 'strict'@'%';
-- 'monitor': health / role probes only (@@read_only needs nothing; SHOW SLAVE STATUS needs SLAVE MONITOR)
CREATE USER IF NOT EXISTS 'monitor'@'%' IDENTIFIED BY 'monitor';
GRANT REPLICATION CLIENT, SLAVE MONITOR, PROCESS ON *.* TO 'monitor'@'%';
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO 'repl'@'%';
CREATE DATABASE IF NOT EXISTS sbtest;
CREATE DATABASE IF NOT EXISTS testbed;
CREATE TABLE IF NOT EXISTS testbed.heartbeat (id INT PRIMARY KEY, token VARCHAR(64) NOT NULL,
  ts TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE=InnoDB;
-- switchyard's commit markers (routing.commit_marker): one row per proxy session
CREATE DATABASE IF NOT EXISTS switchyard;
CREATE TABLE IF NOT EXISTS switchyard.commit_marks (instance BIGINT UNSIGNED NOT NULL,
  conn INT UNSIGNED NOT NULL, seq BIGINT UNSIGNED NOT NULL,
  at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (instance, conn)) ENGINE=InnoDB;
EOF
}
ensure_users() {  # on the primary; only writes (and replicates) when something is missing
  local have
  have=$(sql "$PRIMARY" "SELECT (SELECT COUNT(*) FROM mysql.global_priv WHERE Host='%' AND User IN ('app','strict','monitor','repl'))
    + (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='testbed' AND TABLE_NAME='heartbeat')
    + (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='sbtest')
    + (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='switchyard' AND TABLE_NAME='commit_marks')")
  if [[ $have != 7 ]]; then
    log "$PRIMARY: creating missing users / databases"
    sql "$PRIMARY" "$(users_sql)"
  fi
}

ensure_installed() {
  command -v mariadbd >/dev/null && command -v mariadb >/dev/null && return 0
  log "mariadbd/mariadb not found: installing mariadb-server mariadb-client"
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "mariadb-server is not installed and not running as root (no sudo): install mariadb-server mariadb-client"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client
  command -v mariadbd >/dev/null || die "mariadbd still not found after installing mariadb-server"
}

ensure_template() {
  [[ -d $DATA/template/mysql ]] && return 0
  log "initialising template datadir (mariadb-install-db)"
  rm -rf "$DATA/template.tmp"; mkdir -p "$DATA"
  { echo "FLUSH PRIVILEGES;"; users_sql; } > "$RUN/bootstrap.sql"
  local userarg=(); [[ $EUID -eq 0 ]] && userarg=(--user=root)
  timeout 300 mariadb-install-db --no-defaults --datadir="$DATA/template.tmp" "${userarg[@]}" \
      --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
      --innodb-log-file-size=64M --extra-file="$RUN/bootstrap.sql" > "$RUN/install-db.log" 2>&1 \
    || { tail -20 "$RUN/install-db.log" >&2; die "mariadb-install-db failed (log: $RUN/install-db.log)"; }
  mv "$DATA/template.tmp" "$DATA/template"
}

start_node() {  # start NODE in background if not running (datadir cloned from template)
  local n=$1 p
  if alive "$n"; then return 0; fi
  p=$(pid_of "$n")
  if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
    # maybe still starting (e.g. a concurrent up) - give it the usual time before giving up
    wait_alive "$n"; return 0
  fi
  rm -f "$RUN/$n.pid"
  if [[ ! -d $DATA/$n/mysql ]]; then
    [[ $n == "$PRIMARY" && -d $DATA/$(replicas_of "$PRIMARY" | cut -d' ' -f1) ]] && \
      die "primary $n has no datadir but replicas do; run '$0 clean' first"
    cp -a "$DATA/template" "$DATA/$n"
  fi
  log "starting $n ($(host_of "$n"):$PORT)"
  setsid mariadbd --defaults-file="$RUN/$n.cnf" >> "$RUN/$n.out" 2>&1 < /dev/null &
  disown || true
}

wait_alive() {
  local n=$1 end=$(( SECONDS + WAIT_S ))
  until alive "$n"; do
    if (( SECONDS >= end )); then
      tail -20 "$RUN/$n.err" >&2 || true
      grep -q 'Address already in use' "$RUN/$n.err" 2>/dev/null && \
        log "hint: something else listens on $(host_of "$n"):$PORT or 0.0.0.0:$PORT"
      die "$n did not come up within ${WAIT_S}s (log: $RUN/$n.err)"
    fi
    sleep 0.1
  done
}

point_replica() {  # point_replica REPLICA PRIMARY  (idempotent)
  local r=$1 p=$2 st mh mp io sq
  st=$(slave_status "$r" || true)
  mh=$(awk '/ Master_Host:/{print $2}' <<<"$st"); mp=$(awk '/ Master_Port:/{print $2}' <<<"$st")
  io=$(awk '/ Slave_IO_Running:/{print $2}' <<<"$st"); sq=$(awk '/ Slave_SQL_Running:/{print $2}' <<<"$st")
  sql "$r" "SET GLOBAL read_only=1"
  if [[ $mh != "$(host_of "$p")" || $mp != "$PORT" ]]; then
    log "$r: CHANGE MASTER -> $p ($(host_of "$p"):$PORT), MASTER_USE_GTID=slave_pos"
    # with log-slave-updates everywhere, gtid_binlog_pos = everything this node has applied or
    # written; starting from it lets an ex-primary / restarted node rejoin without re-applying.
    sql "$r" "STOP SLAVE; SET @p=@@GLOBAL.gtid_binlog_pos; SET GLOBAL gtid_slave_pos=IF(@p='', @@GLOBAL.gtid_slave_pos, @p);
      CHANGE MASTER TO MASTER_HOST='$(host_of "$p")', MASTER_PORT=$PORT,
      MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos,
      MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1; START SLAVE;"
  elif [[ $io != Yes || $sq != Yes ]]; then
    log "$r: START SLAVE (io=$io sql=$sq)"; sql "$r" "START SLAVE"
  fi
}

drain_relay() {  # wait until the SQL thread has executed everything the IO thread fetched
  local r=$1 end=$(( SECONDS + WAIT_S )) st
  while (( SECONDS < end )); do
    st=$(slave_status "$r" || true)
    awk '/ Master_Log_File:/{a=$2} / Relay_Master_Log_File:/{b=$2} / Read_Master_Log_Pos:/{c=$2}
         / Exec_Master_Log_Pos:/{d=$2} END{exit !(a==b && c==d)}' <<<"$st" && return 0
    sleep 0.1
  done
  log "WARN: $r relay log not drained after ${WAIT_S}s"
}

verify_replication() {  # write a token on the primary, read it back on every live replica
  local token r end val
  token="$(date +%s%N)-$$"
  sql "$PRIMARY" "REPLACE INTO testbed.heartbeat (id, token) VALUES (1, '$token')"
  for r in $(replicas_of "$PRIMARY"); do
    alive "$r" || { log "WARN: $r is down, not verified"; continue; }
    end=$(( SECONDS + WAIT_S ))
    while :; do
      val=$(sql "$r" "SELECT token FROM testbed.heartbeat WHERE id=1" 2>/dev/null || true)
      [[ $val == "$token" ]] && break
      if (( SECONDS >= end )); then
        slave_status "$r" | grep -E 'Running|Error|Master_Host|Gtid' >&2 || true
        die "replication to $r not confirmed within ${WAIT_S}s"
      fi
      sleep 0.05
    done
  done
  log "replication verified: $PRIMARY -> $(replicas_of "$PRIMARY") (token $token)"
}

print_env() {
  local r1 r2 n N
  read -r r1 r2 <<<"$(replicas_of "$PRIMARY")"
  echo "PRIMARY=$PRIMARY PRIMARY_HOST=$(host_of "$PRIMARY") PRIMARY_PORT=$PORT"
  echo "REPLICA1=$r1 REPLICA1_HOST=$(host_of "$r1") REPLICA1_PORT=$PORT"
  echo "REPLICA2=$r2 REPLICA2_HOST=$(host_of "$r2") REPLICA2_PORT=$PORT"
  for n in "${NODES[@]}"; do N=${n^^}
    echo "${N}_HOST=$(host_of "$n") ${N}_PORT=$PORT ${N}_SOCK=$(sock_of "$n")"
  done
  echo "APP_USER=app APP_PASSWORD=app"
  echo "STRICT_USER=strict STRICT_PASSWORD=strict"
  echo "MONITOR_USER=monitor MONITOR_PASSWORD=monitor"
}
write_env() { print_env > "$ENVOUT.tmp"; mv "$ENVOUT.tmp" "$ENVOUT"; }

# ---------------------------------------------------------------- commands
cmd_up() {
  local t0 n r
  t0=$(now_ms)
  ensure_installed
  mkdir -p "$DATA" "$RUN"
  (( ${#RUN} + 9 <= 107 )) || die "socket path $RUN/n1.sock too long (max 107 bytes): use a shorter SWITCHYARD_CLUSTER_DIR"
  load_state; save_state
  ensure_template
  write_all_cnf
  for n in "${NODES[@]}"; do start_node "$n"; done      # all three start in parallel
  for n in "${NODES[@]}"; do wait_alive "$n"; done
  for n in "${NODES[@]}"; do  # apply current settings to nodes that were already running
    sql "$n" "SET GLOBAL max_allowed_packet=64*1024*1024, slave_max_allowed_packet=1024*1024*1024, max_connections=2000"
  done
  sql "$PRIMARY" "SET GLOBAL read_only=0"
  ensure_users
  for r in $(replicas_of "$PRIMARY"); do point_replica "$r" "$PRIMARY"; done
  verify_replication
  write_env
  log "up in $(( $(now_ms) - t0 )) ms: primary=$PRIMARY $(host_of "$PRIMARY"):$PORT; env in $ENVOUT"
}

cmd_down() {
  local n p end
  for n in "${NODES[@]}"; do   # shut down in parallel, by socket / own pid file only
    p=$(pid_of "$n")
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null || continue
    ( timeout 60 mariadb-admin --no-defaults --connect-timeout=5 -S "$(sock_of "$n")" -uroot shutdown >/dev/null 2>&1 \
        || kill -TERM "$p" 2>/dev/null || true ) &
  done
  wait
  for n in "${NODES[@]}"; do
    p=$(pid_of "$n"); [[ -n $p ]] || continue
    end=$(( SECONDS + WAIT_S ))
    while kill -0 "$p" 2>/dev/null && (( SECONDS < end )); do sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "WARN: $n (pid $p) still alive, SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
    rm -f "$RUN/$n.pid"
  done
  log "all nodes stopped (data kept in $DATA)"
}

cmd_status() {
  local n role st
  load_state; [[ -f $STATE ]] || { echo "not initialised ($BASE)"; return 0; }
  printf '%-3s %-16s %-8s %-5s %-9s %-24s %s\n' node addr pid state read_only gtid_binlog_pos replication
  for n in "${NODES[@]}"; do
    role=replica; [[ $n == "$PRIMARY" ]] && role=PRIMARY
    if alive "$n"; then
      st=$(slave_status "$n" || true)
      printf '%-3s %-16s %-8s %-5s %-9s %-24s %s\n' "$n" "$(host_of "$n"):$PORT" "$(pid_of "$n")" up \
        "$(sql "$n" 'SELECT @@read_only' || echo '?')" "$(sql "$n" 'SELECT @@gtid_binlog_pos' || echo '?')" \
        "$role $(awk '/ Master_Host:/{h=$2} / Master_Port:/{p=$2} / Slave_IO_Running:/{io=$2} / Slave_SQL_Running:/{s=$2}
             / Seconds_Behind_Master:/{b=$2} / Last_IO_Error:/{ie=$0} / Last_SQL_Error:/{se=$0}
             END{ if (h!="") printf "from %s:%s io=%s sql=%s lag=%s %s %s", h,p,io,s,b,(ie~/: ./?ie:""),(se~/: ./?se:"") }' <<<"$st")"
    else
      printf '%-3s %-16s %-8s %-5s %-9s %-24s %s\n' "$n" "$(host_of "$n"):$PORT" - down - - "$role"
    fi
  done
}

FENCED=""; PROMOTED=""
unfence_on_error() {  # EXIT trap of failover: never leave the cluster without a writable primary
  local rc=$?
  if [[ -n $FENCED && -z $PROMOTED ]]; then
    log "failover aborted before promotion: un-fencing $FENCED (read_only=0)"
    sql "$FENCED" "SET GLOBAL read_only=0" || log "WARN: could not un-fence $FENCED"
  fi
  exit "$rc"
}

# fence NODE KILL(0|1): read_only=1 on the old primary (+ with KILL, its client connections
# killed in the same round trip). read_only=1 waits for statements in progress, and one waiting
# on a row lock whose holder's next statement waits for read_only is a deadlock InnoDB does not
# see (it would last innodb_lock_wait_timeout, 50 s): the fence waits at most FENCE_WAIT_S, then
# the client connections are killed (which breaks it) and the fence is tried again.
FENCE_WAIT_S=${FENCE_WAIT_S:-1}
fence() {
  local n=$1 kill=$2 out try
  for try in 1 2 3; do
    if out=$(sql "$n" "SET SESSION lock_wait_timeout=$FENCE_WAIT_S; SET GLOBAL read_only=1; SELECT CAST(@@timestamp*1000 AS UNSIGNED);$( ((kill)) && kill_block )" 2>&1); then
      log "fenced $n $(host_of "$n") (read_only=1) at ${out%%$'\n'*}"
      ((kill)) && log "kill-connections (after-fence): killed ${out##*$'\n'} client connection(s) on $n $(host_of "$n")"
      return 0
    fi
    if [[ $(sql "$n" "SELECT @@read_only") == 1 ]]; then
      log "fenced $n $(host_of "$n") (read_only=1) at ~$(now_ms)"; ((kill)) && log "WARN: kill-connections (after-fence) on $n failed"
      return 0
    fi
    log "fencing $n waited ${FENCE_WAIT_S}s on a lock (attempt $try: ${out##*ERROR }): killing its client connections to break it"
    kill_clients "$n" fence-blocked
  done
  die "fencing $n failed"
}

cmd_failover() {
  local t0 old new other pos="" r res a out kill=0 target=""
  t0=$(now_ms)
  for a in "$@"; do
    case $a in
      --kill-connections) kill=1 ;;
      -*) die "unknown failover option '$a'" ;;
      *) [[ -z $target ]] || die "failover takes one NODE"; target=$(node_arg "$a") ;;
    esac
  done
  load_state; [[ -f $STATE ]] || die "cluster not initialised (run up)"
  old=$PRIMARY; read -r new other <<<"$(replicas_of "$old")"
  if [[ -n $target ]]; then
    if [[ $target == "$old" ]]; then
      log "$target $(host_of "$target") is already the primary: nothing to promote"
      alive "$old" || die "primary $old is down (run up)"
      verify_replication
      return 0
    fi
    new=$target
    for r in $(replicas_of "$old"); do [[ $r != "$new" ]] && other=$r; done
  fi
  alive "$new" || die "promotion target $new is down"
  log "failover: $old $(host_of "$old") -> $new $(host_of "$new") (other replica: $other)$( ((kill)) && echo ', killing client connections')"
  if alive "$old"; then   # fence the old primary, let the replicas drain
    # (with --kill-connections: fence + kill in one round trip, then the future primary)
    FENCED=$old; trap unfence_on_error EXIT
    fence "$old" "$kill"
    ((kill)) && kill_clients "$new" after-fence
    pos=$(sql "$old" "SELECT @@gtid_binlog_pos")
    res=$(sql "$new" "SELECT MASTER_GTID_WAIT('$pos', $WAIT_S)")
    [[ $res == 0 ]] || die "$new did not reach $pos within ${WAIT_S}s (MASTER_GTID_WAIT=$res): failover aborted"
    log "$new caught up to $pos"
  else
    log "old primary $old is down: waiting (max ${WAIT_S}s) for $new to apply its relay log"
    drain_relay "$new"
  fi
  # promote (+ kill in the same round trip); @@timestamp = start of the statement after read_only=0
  if out=$(sql "$new" "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0; SELECT CAST(@@timestamp*1000 AS UNSIGNED);$( ((kill)) && kill_block )"); then
    PROMOTED=1
    printf 'promoted %s %s at %s\n' "$new" "$(host_of "$new")" "${out%%$'\n'*}" >&2
    ((kill)) && log "kill-connections (after-promote): killed ${out##*$'\n'} client connection(s) on $new $(host_of "$new")"
  else
    [[ $(sql "$new" "SELECT @@read_only") == 0 ]] || die "promotion of $new failed"
    PROMOTED=1
    printf 'promoted %s %s at %s\n' "$new" "$(host_of "$new")" "$(now_ms)" >&2
    log "WARN: kill-connections (after-promote) on $new failed"
  fi
  ((kill)) && kill_clients "$old" after-promote
  PRIMARY=$new; save_state
  write_all_cnf
  if alive "$other"; then
    [[ -n ${pos:-} ]] && { res=$(sql "$other" "SELECT MASTER_GTID_WAIT('$pos', $WAIT_S)"); [[ $res == 0 ]] || log "WARN: $other did not reach $pos (MASTER_GTID_WAIT=$res)"; }
    point_replica "$other" "$new"
  else
    log "WARN: $other is down, will be repointed on next up"
  fi
  if [[ ${FAILOVER_REJOIN:-1} == 1 ]] && alive "$old"; then
    log "$old: re-attaching as replica of $new"
    point_replica "$old" "$new"
  fi
  verify_replication
  write_env
  log "failover done in $(( $(now_ms) - t0 )) ms: primary=$new $(host_of "$new"):$PORT"
}

cmd_clean() {
  cmd_down
  rm -rf "$DATA" "$ENVOUT" "$RUN"
  rmdir "$BASE" 2>/dev/null || true
  log "removed $DATA and $RUN"
}

case ${1:-} in
  up)       cmd_up ;;
  down)     cmd_down ;;
  status)   cmd_status ;;
  failover) shift; cmd_failover "$@" ;;
  sql)      [[ $# -eq 3 ]] || die "usage: $0 sql NODE \"SQL\""; load_state; sql "$(node_arg "$2")" "$3" ;;
  env)      load_state; print_env ;;
  clean)    cmd_clean ;;
  *) sed -n '2,37p' "$0"; exit 2 ;;
esac
