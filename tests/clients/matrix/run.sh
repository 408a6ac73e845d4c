#!/usr/bin/env bash
# run.sh PROXY_HOSTPORT DIRECT_HOSTPORT - the whole client matrix: installs the clients
# (install.sh), then runs every client against the proxy and straight against the primary:
# pymysql, connector_pure, connector_c, mysqldb (py_matrix.py), node (node_matrix.js, mysql2)
# and java (JavaMatrix.java, MariaDB Connector/J) when a JDK and the jar are there.
# Prints every CHECK line, a table `client passed failed`, and last `<N> passed, <M> failed`.
# Exit 1 if any check failed or a client run died; each client run is bounded by
# `timeout ${MATRIX_CLIENT_TIMEOUT_S:-300}`.
#
#   example (self-test, both sides the primary):  run.sh 127.0.0.11:3306 127.0.0.11:3306
#   against switchyard:                           run.sh 127.0.0.1:6033 127.0.0.11:3306
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${MATRIX_VENV:-/tmp/switchyard-matrix-venv}
NODE_DIR=${MATRIX_NODE:-/tmp/switchyard-matrix-node}
JAR=/usr/share/java/mariadb-java-client.jar
LIMIT_S=${MATRIX_CLIENT_TIMEOUT_S:-300}

if [[ $# -ne 2 ]]; then
  echo "usage: $0 PROXY_HOST:PORT DIRECT_HOST:PORT" >&2
  exit 2
fi
PROXY=$1 DIRECT=$2

"$HERE/install.sh" || { echo "run.sh: install.sh failed" >&2; exit 1; }

TABLE=()
TOTAL_PASSED=0 TOTAL_FAILED=0
OUT=$(mktemp /tmp/switchyard-matrix-run.XXXXXX)
trap 'rm -f "$OUT"' EXIT

run_client() {  # run_client NAME CMD...: run it bounded, echo its lines, add its counts
  local name=$1 rc counts passed failed
  shift
  timeout "$LIMIT_S" "$@" --proxy "$PROXY" --direct "$DIRECT" | tee "$OUT"
  rc=${PIPESTATUS[0]}
  counts=$(tail -n 1 "$OUT" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/p')
  if [[ -z $counts ]]; then  # died (timeout 124, crash): count the run itself as a failure
    echo "CHECK $name run FAIL exited $rc without a summary line"
    counts="0 1"
  fi
  read -r passed failed <<< "$counts"
  TABLE+=("$(printf '%-16s %6d %6d' "$name" "$passed" "$failed")")
  TOTAL_PASSED=$((TOTAL_PASSED + passed))
  TOTAL_FAILED=$((TOTAL_FAILED + failed))
}

for client in pymysql connector_pure connector_c mysqldb; do
  run_client "$client" "$VENV/bin/python" "$HERE/py_matrix.py" --client "$client"
done
run_client node env NODE_PATH="$NODE_DIR/node_modules" node "$HERE/node_matrix.js"
if command -v java >/dev/null && [[ -f $JAR ]]; then
  run_client java java -cp "$JAR" "$HERE/JavaMatrix.java"
else
  TABLE+=("$(printf '%-16s %6s %6s  (no JDK or Connector/J)' java - -)")
fi

echo
printf '%-16s %6s %6s\n' client passed failed
printf '%s\n' "${TABLE[@]}"
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[[ $TOTAL_FAILED -eq 0 ]]
