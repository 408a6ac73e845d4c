#!/usr/bin/env bash
# install.sh - idempotent installer for the client matrix (tests/clients/matrix/).
#
#   Python venv  ${MATRIX_VENV:-/tmp/switchyard-matrix-venv}: PyMySQL, mysql-connector-python
#                (pure + C extension _mysql_connector from its wheel), mysqlclient (MySQLdb).
#   node         ${MATRIX_NODE:-/tmp/switchyard-matrix-node}/node_modules/mysql2
#   java         MariaDB Connector/J from Debian (libmariadb-java, /usr/share/java) and a JDK;
#                MATRIX_JAVA=0 skips it.  A Java failure only prints a note: it is optional.
#
# apt-get / pip / npm are only called for what is missing (apt-get update -qq once, first).
# Prints one short line on success; on failure the step's log goes to stderr, exit 1.
set -euo pipefail

VENV=${MATRIX_VENV:-/tmp/switchyard-matrix-venv}
NODE_DIR=${MATRIX_NODE:-/tmp/switchyard-matrix-node}
WANT_JAVA=${MATRIX_JAVA:-1}
JAR=/usr/share/java/mariadb-java-client.jar
# _mysql_connector first: it needs its vendored OpenSSL (>= 3.2), not the one `ssl` loads
PY_MODULES="_mysql_connector, mysql.connector, pymysql, MySQLdb"
LOG=$(mktemp /tmp/switchyard-matrix-install.XXXXXX)
APT_UPDATED=0
trap 'rm -f "$LOG"' EXIT

die() { echo "install.sh: $*" >&2; exit 1; }
step() {  # step WHAT CMD...: run quietly, dump its log on failure
  local what=$1; shift
  if ! "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "$what failed"
  fi
}
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {  # apt_install PKG...: install the missing ones
  local p missing=()
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $APT_UPDATED -eq 0 ]]; then
    step "apt-get update" timeout 300 apt-get update -qq
    APT_UPDATED=1
  fi
  step "apt-get install ${missing[*]}" timeout 900 env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

python_ok() { [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c "import $PY_MODULES" 2>/dev/null; }
install_python() {
  python_ok && return 0
  apt_install libmariadb-dev pkg-config build-essential
  if [[ ! -x $VENV/bin/python ]]; then
    if ! python3 -m venv "$VENV" >>"$LOG" 2>&1; then
      apt_install python3-venv
      rm -rf "$VENV"
      step "python3 -m venv $VENV" python3 -m venv "$VENV"
    fi
  fi
  step "pip install" timeout 900 "$VENV/bin/python" -m pip install -q \
    'PyMySQL>=1.0' 'mysql-connector-python>=8.0' 'mysqlclient>=2.1'
  python_ok || die "venv $VENV cannot import $PY_MODULES"
}

node_ok() { command -v node >/dev/null && [[ -f $NODE_DIR/node_modules/mysql2/package.json ]]; }
install_node() {
  node_ok && return 0
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$NODE_DIR"
  step "npm install mysql2" timeout 600 npm install --prefix "$NODE_DIR" --no-audit --no-fund \
    --loglevel=error mysql2
  node_ok || die "mysql2 missing under $NODE_DIR"
}

install_java() {  # optional: a failure is reported, not fatal
  [[ $WANT_JAVA == 1 ]] || return 0
  if [[ -f $JAR ]] && command -v java >/dev/null; then return 0; fi
  local pkgs=(libmariadb-java)
  command -v java >/dev/null && command -v javac >/dev/null || pkgs+=(default-jdk-headless)
  ( apt_install "${pkgs[@]}" ) || echo "install.sh: note: Connector/J not installed (java check skipped)" >&2
}

install_python
install_node
install_java
java_note=""
[[ -f $JAR ]] && command -v java >/dev/null && java_note=", Connector/J"
echo "matrix clients ready: $VENV, $NODE_DIR$java_note"
