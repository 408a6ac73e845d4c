#!/usr/bin/env bash
# Prepares sysbench's tables for tests/clients.rs in their own database, sbtest_ci
# (sysbench has no table prefix, and sbtest.sbtest1..2 belong to other checks), straight
# on the primary as `app`: 2 tables of 2000 rows, re-prepared only when sbtest_ci.sbtest2
# is missing or sbtest1/sbtest2 do not hold 2000 rows. One run at a time (flock).
# Prints "prepared" or "kept". Reaches only 127.0.0.11.
set -euo pipefail

TABLES=2
SIZE=2000
DB=sbtest_ci
M=(mariadb --no-defaults --protocol=TCP -h127.0.0.11 -P3306 -uapp -papp --connect-timeout=10 -N -B)
SB=(sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.11 --mysql-port=3306
    --mysql-user=app --mysql-password=app --mysql-db="$DB" --tables="$TABLES" --table-size="$SIZE")

exec 9>/tmp/switchyard-sbtest-ci.lock
flock -w 120 9

"${M[@]}" -e "CREATE DATABASE IF NOT EXISTS $DB"

counts() {
  local t out
  for t in $(seq 1 "$TABLES"); do
    out=$("${M[@]}" -e "SELECT COUNT(*) FROM $DB.sbtest$t" 2>/dev/null) || out=missing
    printf '%s ' "$out"
  done
}

want=$(for t in $(seq 1 "$TABLES"); do printf '%s ' "$SIZE"; done)
if [[ "$(counts)" == "$want" ]]; then
  echo kept
  exit 0
fi

timeout 120 "${SB[@]}" cleanup >/dev/null
timeout 120 "${SB[@]}" prepare >/dev/null
got=$(counts)
if [[ "$got" != "$want" ]]; then
  echo "after prepare: counts '$got', want '$want'" >&2
  exit 1
fi
echo prepared
