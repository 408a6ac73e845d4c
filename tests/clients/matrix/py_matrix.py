#!/usr/bin/env python3
"""py_matrix.py - one Python MySQL client library through switchyard vs. straight to the primary.

usage: py_matrix.py --proxy HOST:PORT --direct HOST:PORT
                    --client {pymysql,connector_pure,connector_c,mysqldb}
                    [--only NAME,...] [--dump]   (--dump prints the direct side's observations)

Every check is a small function check_NAME(side).  It runs once against --proxy and once
against --direct, each time on fresh connections (user strict/strict, database sbtest), and
records normalized observations with side.q() / side.note(): values together with their
Python types, cursor.description, rowcount, lastrowid, warning counts, and for errors the
exception class, error code, SQLSTATE and message.  The two lists of observations must be
equal: a check whose statements fail the same way on both sides passes (same behaviour).
A check that a library cannot do is skipped on both sides and reported as SKIP.

Each check creates its own tables (names prefixed mx_<client>_, so that runs of different
clients can go in parallel) on the connection under test, so that through the proxy the DDL
goes to the primary and the session's read-your-writes promise covers the reads after it.

Output: one line per check `CHECK <client> <name> PASS|FAIL|SKIP <detail>`, then
`<N> passed, <M> failed`; exit 1 if any check failed.  Only loopback addresses are accepted,
every loop is bounded and every connection has read/write timeouts.
"""
import sys

if "connector_c" in sys.argv[1:]:
    # The C extension links its own OpenSSL (>= 3.2, vendored next to it).  Once Python's ssl
    # module has loaded the system libssl.so.3 (3.0 on Debian 12), importing it fails with
    # "version OPENSSL_3.2.0 not found": load it before anything imports ssl.
    import _mysql_connector  # noqa: F401

import argparse
import datetime
import decimal
import hashlib
import ipaddress
import json
import os
import tempfile
import time

USER = PASSWORD = "strict"
DB = "sbtest"
OTHER_DB = "mx_db"
TIMEOUT_S = 60
MAX_PACKET = 64 * 1024 * 1024
BIG_ROW = 20 * 1024 * 1024
STREAM_ROWS = 100_000
MAX_RESULT_SETS = 20
RYW_ROUNDS = 20
LOAD_DATA = "1\tone\t10\n2\tzwei ü\t\\N\n3\tdrei 🦀\tnot-a-number\n"


class Skip(Exception):
    """The library cannot do what the check needs."""


class SetupFailed(Exception):
    """A setup statement failed; its error is already noted."""


# ---------------------------------------------------------------- normalization
def fingerprint(data):
    return hashlib.sha256(data).hexdigest()[:16]


def norm(v):
    """A comparable, printable form of a value that keeps its Python type."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): norm(x) for k, x in v.items()}
    if isinstance(v, (set, frozenset)):
        return ["set"] + sorted(str(norm(x)) for x in v)
    if isinstance(v, (bytes, bytearray)):
        body = v.hex() if len(v) <= 64 else f"[{len(v)}]sha256={fingerprint(bytes(v))}"
        return f"{type(v).__name__}:{body}"
    if isinstance(v, str) and len(v) > 200:
        return f"str:[{len(v)}]sha256={fingerprint(v.encode())}"
    if isinstance(v, (float, str)):
        return f"{type(v).__name__}:{v!r}"
    if isinstance(v, (datetime.date, datetime.time)):  # datetime is a date
        return f"{type(v).__name__}:{v.isoformat()}"
    return f"{type(v).__name__}:{v}"  # int, Decimal, timedelta, ...


def describe(cur):
    return [list(d) for d in cur.description] if cur.description else None


def outcome(cur, rows):
    return {
        "desc": describe(cur),
        "rows": rows,
        "rowcount": cur.rowcount,
        "lastrowid": cur.lastrowid,
        "warnings": getattr(cur, "warning_count", None),
    }


def close_quietly(obj):
    try:
        obj.close()
    except Exception:  # e.g. connector's "Unread result found" after an error
        pass


def short(value, limit=240):
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- client adapters
class Client:
    """What differs between the libraries; the rest is plain DB-API 2.0."""

    name = ""
    reset_skip = "the library has no COM_RESET_CONNECTION call"
    change_user_skip = "the library has no COM_CHANGE_USER call"
    prepared_skip = "the library has no server-side prepared statements"

    def connect(self, host, port, autocommit=True, multi=False, local_infile=False):
        raise NotImplementedError

    def cursor(self, conn):
        return conn.cursor()

    def stream_cursor(self, conn):
        raise NotImplementedError

    def prepared_cursor(self, conn):
        raise Skip(self.prepared_skip)

    def error_info(self, exc, conn):
        """[class, errno, sqlstate, message] for a driver error, None for anything else."""
        raise NotImplementedError

    def facts(self, conn):
        return {"class": type(conn).__name__, "server": conn.get_server_info()}

    def expected_class(self):
        return None

    def set_charset(self, conn, charset):
        conn.set_character_set(charset)

    def select_db(self, conn, db):
        conn.select_db(db)

    def ping(self, conn):
        conn.ping()

    def reset(self, conn):
        raise Skip(self.reset_skip)

    def change_user(self, conn):
        raise Skip(self.change_user_skip)


class PyMySQLClient(Client):
    name = "pymysql"
    reset_skip = "PyMySQL has no COM_RESET_CONNECTION call"
    change_user_skip = "PyMySQL has no COM_CHANGE_USER call"
    prepared_skip = "PyMySQL has no server-side prepared statements"

    def __init__(self):
        import pymysql
        import pymysql.cursors
        from pymysql.constants import CLIENT

        self.mod, self.flags = pymysql, CLIENT
        keep_pymysql_sqlstate(pymysql)

    def connect(self, host, port, autocommit=True, multi=False, local_infile=False):
        return self.mod.connect(
            host=host, port=port, user=USER, password=PASSWORD, database=DB,
            charset="utf8mb4", autocommit=autocommit, local_infile=local_infile,
            client_flag=self.flags.MULTI_STATEMENTS if multi else 0,
            max_allowed_packet=MAX_PACKET, connect_timeout=10,
            read_timeout=TIMEOUT_S, write_timeout=TIMEOUT_S,
        )

    def stream_cursor(self, conn):
        return conn.cursor(self.mod.cursors.SSCursor)

    def error_info(self, exc, conn):
        if not isinstance(exc, self.mod.Error):
            return None
        code, msg = (list(exc.args) + [None, None])[:2]
        return [type(exc).__name__, code, getattr(exc, "sqlstate", None), msg]

    def ping(self, conn):
        conn.ping(reconnect=False)


def keep_pymysql_sqlstate(pymysql):
    """PyMySQL drops the SQLSTATE of an ERR packet: keep it on the exception."""
    original = pymysql.err.raise_mysql_exception
    if getattr(original, "keeps_sqlstate", False):
        return

    def raise_with_sqlstate(data):
        try:
            original(data)
        except pymysql.err.MySQLError as exc:
            if data[3:4] == b"#":
                exc.sqlstate = data[4:9].decode("ascii", "replace")
            raise

    raise_with_sqlstate.keeps_sqlstate = True
    pymysql.err.raise_mysql_exception = raise_with_sqlstate


class MySQLdbClient(Client):
    name = "mysqldb"
    reset_skip = "mysqlclient exposes no mysql_reset_connection (change_user covers it)"
    change_user_skip = ""
    prepared_skip = "mysqlclient has no server-side prepared statements"

    def __init__(self):
        import MySQLdb
        import MySQLdb.cursors
        from MySQLdb.constants import CLIENT

        self.mod, self.flags = MySQLdb, CLIENT

    def connect(self, host, port, autocommit=True, multi=False, local_infile=False):
        return self.mod.connect(
            host=host, port=port, user=USER, password=PASSWORD, database=DB,
            charset="utf8mb4", autocommit=autocommit, local_infile=int(local_infile),
            client_flag=self.flags.MULTI_STATEMENTS if multi else 0,
            connect_timeout=10, read_timeout=TIMEOUT_S, write_timeout=TIMEOUT_S,
        )

    def stream_cursor(self, conn):
        return conn.cursor(self.mod.cursors.SSCursor)

    def error_info(self, exc, conn):
        if not isinstance(exc, self.mod.Error):
            return None
        code, msg = (list(exc.args) + [None, None])[:2]
        return [type(exc).__name__, code, self.sqlstate(conn), msg]

    @staticmethod
    def sqlstate(conn):
        try:
            return conn.sqlstate() if conn is not None else None
        except Exception:  # closed connection
            return None

    def change_user(self, conn):
        conn.change_user(USER, PASSWORD, DB)


class ConnectorClient(Client):
    reset_skip = change_user_skip = prepared_skip = ""

    def __init__(self, pure):
        import mysql.connector
        from mysql.connector.constants import ClientFlag

        self.mod, self.flags, self.pure = mysql.connector, ClientFlag, pure
        self.name = "connector_pure" if pure else "connector_c"

    def connect(self, host, port, autocommit=True, multi=False, local_infile=False):
        return self.mod.connect(
            host=host, port=port, user=USER, password=PASSWORD, database=DB,
            charset="utf8mb4", collation="utf8mb4_general_ci", use_pure=self.pure,
            autocommit=autocommit, allow_local_infile=local_infile,
            client_flags=[self.flags.MULTI_STATEMENTS] if multi else [],
            connection_timeout=10, read_timeout=TIMEOUT_S, write_timeout=TIMEOUT_S,
        )

    def cursor(self, conn):
        return conn.cursor(buffered=True)

    def stream_cursor(self, conn):
        return conn.cursor(buffered=False)

    def prepared_cursor(self, conn):
        return conn.cursor(prepared=True)

    def error_info(self, exc, conn):
        if isinstance(exc, self.mod.Error):
            return [type(exc).__name__, exc.errno, exc.sqlstate, exc.msg]
        if type(exc).__module__ == "_mysql_connector":
            # the C extension lets its own MySQLInterfaceError escape from nextset()
            return [type(exc).__name__, getattr(exc, "errno", None),
                    getattr(exc, "sqlstate", None), getattr(exc, "msg", str(exc))]
        return None

    def facts(self, conn):
        return {"class": type(conn).__name__, "server": conn.server_info,
                "have_cext": bool(self.mod.HAVE_CEXT) if not self.pure else None}

    def expected_class(self):
        return "MySQLConnection" if self.pure else "CMySQLConnection"

    def set_charset(self, conn, charset):
        conn.set_charset_collation(charset)

    def select_db(self, conn, db):
        conn.cmd_init_db(db)

    def ping(self, conn):
        conn.ping(reconnect=False)

    def reset(self, conn):
        conn.cmd_reset_connection()

    def change_user(self, conn):
        conn.cmd_change_user(username=USER, password=PASSWORD, database=DB)


def make_client(name):
    if name == "pymysql":
        return PyMySQLClient()
    if name == "mysqldb":
        return MySQLdbClient()
    return ConnectorClient(pure=(name == "connector_pure"))


# ---------------------------------------------------------------- one side of a check
class Side:
    """One run of one check against one endpoint: its connections and observations."""

    def __init__(self, label, addr, client):
        self.label, self.addr, self.client = label, addr, client
        self.prefix = f"mx_{client.name}_"
        self.obs, self.violations = [], []
        self.skipped = self.crashed = None
        self._conns = []

    def connect(self, **kw):
        conn = self.client.connect(*self.addr, **kw)
        self._conns.append(conn)
        return conn

    def note(self, label, value):
        self.obs.append((label, norm(value)))

    def expect(self, ok, what):
        """An absolute requirement (not a comparison): failing it fails the check."""
        if not ok:
            self.violations.append(what)

    def setup(self, conn, *statements):
        """Run statements without recording their outcome; a driver error ends the check."""
        cur = self.client.cursor(conn)
        for sql in statements:
            try:
                cur.execute(sql)
            except Exception as exc:
                info = self.client.error_info(exc, conn)
                if info is None:
                    raise
                self.note(f"setup: {sql}", {"error": info})
                raise SetupFailed() from exc
        cur.close()

    def table(self, conn, suffix, columns, schema=None):
        name = f"{schema + '.' if schema else ''}{self.prefix}{suffix}"
        self.setup(conn, f"DROP TABLE IF EXISTS {name}",
                   f"CREATE TABLE {name} ({columns}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        return name

    def q(self, conn, sql, args=None, label=None, cur=None):
        """Execute one statement, note its outcome and return its rows (None on a driver error)."""
        own = cur is None
        cur = cur or self.client.cursor(conn)
        try:
            cur.execute(sql) if args is None else cur.execute(sql, args)
            rows = cur.fetchall() if cur.description else []
            self.note(label or sql, outcome(cur, rows))
            return rows
        except Exception as exc:
            info = self.client.error_info(exc, conn)
            if info is None:
                raise
            self.note(label or sql, {"error": info})
            return None
        finally:
            if own:
                close_quietly(cur)

    def results(self, conn, sql, label=None):
        """Execute a statement that may return several results; note every one of them."""
        cur = self.client.cursor(conn)
        sets = []
        try:
            cur.execute(sql)
            for _ in range(MAX_RESULT_SETS):
                sets.append(outcome(cur, cur.fetchall() if cur.description else []))
                if not cur.nextset():
                    break
        except Exception as exc:
            info = self.client.error_info(exc, conn)
            if info is None:
                raise
            sets.append({"error": info})
        close_quietly(cur)
        self.note(label or sql, sets)

    def run(self, check):
        try:
            check(self)
        except Skip as why:
            self.skipped = str(why)
        except SetupFailed:
            pass
        except Exception as exc:
            info = self.client.error_info(exc, None)
            if info is None:
                self.crashed = f"{type(exc).__name__}: {exc}"
            else:
                self.note("uncaught driver error", {"error": info})
        finally:
            self.close()

    def close(self):
        for conn in reversed(self._conns):
            close_quietly(conn)
        self._conns = []


# ---------------------------------------------------------------- checks
def check_connect(side):
    conn = side.connect()
    facts = side.client.facts(conn)
    side.note("driver", facts)
    want = side.client.expected_class()
    side.expect(want is None or facts["class"] == want, f"connection class {facts['class']} != {want}")
    side.expect(facts.get("have_cext") is not False, "mysql.connector.HAVE_CEXT is False")
    rows = side.q(conn, "SELECT 1 AS one, DATABASE() AS db, CURRENT_USER() AS user")
    side.expect(rows is not None, f"SELECT 1 failed on {side.label}: {side.obs[-1]}")


TYPE_COLUMNS = """id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  de DECIMAL(30,10), fl FLOAT, db DOUBLE, bt BIT(12),
  da DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(6), yr YEAR,
  ch CHAR(8), vc VARCHAR(64), bn BINARY(4), vb VARBINARY(32), bl BLOB, tx TEXT,
  en ENUM('small','medium','large'), st SET('a','b','c'), js JSON"""
TYPE_LITERAL_ROW = """(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615, '-12345678901234567890.0123456789', 1.5,
  -2.25e-300, b'101010101010', '2024-02-29', '2024-02-29 23:59:58.123456',
  '2021-06-15 12:00:00.250', '-12:34:56.789012', 2155, 'abc', 'Grüße, 世界 🦀',
  X'00FF7F80', X'000102FF', X'DEADBEEF00', 'κείμενο 📄', 'medium', 'c,a',
  '{"k": [1, 2.5, "ü", null], "o": {"e": "🦀"}}')"""
TYPE_PARAMS = (
    2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
    decimal.Decimal("0.0000000001"), -0.25, 1e300, 5, datetime.date(1999, 12, 31),
    datetime.datetime(2000, 1, 1, 0, 0, 0, 1), datetime.datetime(2030, 5, 6, 7, 8, 9),
    datetime.timedelta(hours=838, minutes=59, seconds=59), 1901, "x", "ASCII only",
    b"\x00'\\\"", b"\x00\n\r\x1a", bytes(range(256)), "it's a \"quoted\" \\ text", "large",
    "a,b", '{"n": 1}',
)


# Connector/Python's C extension binds Python floats as MYSQL_TYPE_FLOAT (1e300 -> out of
# range), so the prepared variant uses a DOUBLE that a 32-bit float holds exactly.
PREPARED_PARAMS = TYPE_PARAMS[:13] + (0.5,) + TYPE_PARAMS[14:]
# Connector/Python (pure) mis-decodes a binary-protocol YEAR that other columns follow.
PREPARED_COLUMNS = "id, ti, tu, si, su, mi, mu, i, iu, bi, bu, de, fl, db, bt, da, dt, ts, tm, " \
                   "ch, vc, bn, vb, bl, tx, en, st, js"


def insert_type_rows(side, conn, t, cur=None, params=TYPE_PARAMS):
    side.q(conn, f"INSERT INTO {t} VALUES {TYPE_LITERAL_ROW}", label="insert literal row", cur=cur)
    marks = ", ".join(["%s"] * len(params))
    side.q(conn, f"INSERT INTO {t} VALUES ({marks})", params, label="insert param row", cur=cur)
    side.q(conn, f"INSERT INTO {t} (id) VALUES (3)", label="insert null row", cur=cur)


def check_types(side):
    conn = side.connect()
    t = side.table(conn, "types", TYPE_COLUMNS)
    insert_type_rows(side, conn, t)
    side.q(conn, f"SELECT * FROM {t} ORDER BY id", label="select all")
    side.q(conn, f"SELECT id, HEX(vc), CHAR_LENGTH(vc), LENGTH(tx), JSON_VALUE(js, '$.o.e'), "
                 f"JSON_TYPE(js), bt + 0 FROM {t} ORDER BY id", label="select derived")


def check_prepared(side):
    conn = side.connect()
    cur = side.client.prepared_cursor(conn)
    t = side.table(conn, "prep", TYPE_COLUMNS)
    insert_type_rows(side, conn, t, cur=cur, params=PREPARED_PARAMS)
    side.q(conn, f"SELECT {PREPARED_COLUMNS} FROM {t} WHERE id >= %s ORDER BY id", (1,), cur=cur,
           label="select")
    side.q(conn, f"SELECT yr FROM {t} WHERE id >= %s ORDER BY id", (1,), cur=cur, label="year")
    side.q(conn, f"SELECT vc, bl FROM {t} WHERE id = %s", (2,), cur=cur, label="select one")
    side.q(conn, f"SELECT * FROM {side.prefix}no_such WHERE id = %s", (1,), cur=cur,
           label="prepare error")
    side.q(conn, f"INSERT INTO {t} (id) VALUES (%s)", (1,), cur=cur, label="execute error")


def check_multi_statements(side):
    conn = side.connect(multi=True)
    t = side.table(conn, "multi", "id INT PRIMARY KEY, v VARCHAR(10)")
    side.results(conn, f"SELECT 1 AS a; SELECT 'x' AS b, 2.5 AS c; "
                       f"INSERT INTO {t} VALUES (1, 'one'), (2, 'two'); "
                       f"SELECT COUNT(*) AS n FROM {t}", label="batch")
    side.results(conn, "SELECT 1 AS first; SELEC 2; SELECT 3 AS never", label="batch with error")
    side.q(conn, f"SELECT v FROM {t} ORDER BY id", label="usable after batch")


def check_stored_procedure(side):
    conn = side.connect(multi=True)
    t = side.table(conn, "proc", "id INT PRIMARY KEY, v VARCHAR(10)")
    p = f"{side.prefix}p"
    side.setup(conn, f"DROP PROCEDURE IF EXISTS {p}", f"""CREATE PROCEDURE {p}(IN n INT)
        BEGIN
          INSERT INTO {t} VALUES (n, 'called');
          SELECT n AS n, 'one' AS first;
          SELECT id, v, n * 2 AS doubled FROM {t} ORDER BY id;
        END""")
    side.results(conn, f"CALL {p}(21)", label="call 21")
    side.results(conn, f"CALL {p}(21)", label="call 21 again (duplicate key)")
    side.q(conn, f"SELECT COUNT(*) FROM {t}", label="after calls")


def check_txn_rollback(side):
    conn = side.connect()
    t = side.table(conn, "txr", "id INT PRIMARY KEY, v INT")
    side.q(conn, "BEGIN")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 10)")
    side.q(conn, f"SELECT COUNT(*) FROM {t}", label="inside transaction")
    side.q(conn, "ROLLBACK")
    side.q(conn, f"SELECT COUNT(*) FROM {t}", label="after rollback")


def check_txn_commit(side):
    conn = side.connect()
    t = side.table(conn, "txc", "id INT PRIMARY KEY, v INT")
    side.q(conn, "START TRANSACTION")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 10), (2, 20)")
    side.q(conn, f"UPDATE {t} SET v = v + 1 WHERE id = 2")
    side.q(conn, f"SELECT * FROM {t} ORDER BY id", label="inside transaction")
    side.q(conn, "COMMIT")
    side.q(conn, f"SELECT * FROM {t} ORDER BY id", label="after commit")


def check_autocommit_off(side):
    """SQLAlchemy style: autocommit=0, a failed statement, ROLLBACK; its locks must be gone."""
    conn = side.connect(autocommit=False)
    t = side.table(conn, "ac0", "id INT PRIMARY KEY, v INT")
    side.q(conn, "SELECT @@autocommit")
    side.q(conn, f"SELECT COUNT(*) FROM {t}", label="first read")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 1)")
    conn.commit()
    side.q(conn, f"INSERT INTO {t} VALUES (1, 2)", label="duplicate key")
    conn.rollback()
    other = side.connect()
    side.q(other, "SET SESSION innodb_lock_wait_timeout = 2")
    side.q(other, f"UPDATE {t} SET v = v + 1 WHERE id = 1", label="update from another session")
    side.q(other, f"SELECT v FROM {t} WHERE id = 1", label="other session reads its write")
    side.q(conn, "SELECT @@autocommit", label="autocommit still off")
    conn.rollback()


def check_errors(side):
    conn = side.connect()
    t = side.table(conn, "err", "id INT PRIMARY KEY, v INT")
    side.q(conn, "SELEC 1", label="syntax error")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 1)")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 2)", label="duplicate key")
    side.q(conn, f"SELECT * FROM {side.prefix}no_such_table", label="unknown table")
    side.q(conn, f"SELECT no_such_column FROM {t}", label="unknown column")
    side.q(conn, f"UPDATE {t} SET no_such_column = 1", label="unknown column in update")
    side.q(conn, "SELECT 1 AS still_usable")


DIGITS = "SELECT 0 AS n" + "".join(f" UNION ALL SELECT {i}" for i in range(1, 10))
STREAM_SQL = (f"WITH d AS ({DIGITS}) SELECT a.n + 10*b.n + 100*c.n + 1000*e.n + 10000*f.n AS k, "
              "CONCAT('row-', a.n, b.n, c.n, e.n, f.n) AS label "
              "FROM d a, d b, d c, d e, d f ORDER BY k")


def check_large_stream(side):
    conn = side.connect()
    cur = side.client.stream_cursor(conn)
    cur.execute(STREAM_SQL)
    count, digest = 0, hashlib.sha256()
    for _ in range(STREAM_ROWS // 1000 + 2):
        rows = cur.fetchmany(1000)
        if not rows:
            break
        count += len(rows)
        digest.update(repr(rows).encode())
    side.note("streamed", {"desc": describe(cur), "rows": count, "sha256": digest.hexdigest()[:16],
                           "cursor": type(cur).__name__})
    cur.close()
    side.q(conn, "SELECT 'usable after stream' AS s")


def check_large_row(side):
    conn = side.connect()
    # read, not compared: another test may raise the primary's global value for a moment
    cur = side.client.cursor(conn)
    cur.execute("SELECT @@max_allowed_packet")
    rows = cur.fetchall()
    cur.close()
    if rows and rows[0][0] < BIG_ROW + 4 * 1024 * 1024:
        raise Skip(f"server max_allowed_packet={rows[0][0]} is too small for a 20 MiB row "
                   f"(needs SET GLOBAL max_allowed_packet >= 24 MiB as an admin)")
    t = side.table(conn, "big", "id INT PRIMARY KEY, b LONGBLOB")
    blob = bytes(range(256)) * (BIG_ROW // 256)
    side.q(conn, f"INSERT INTO {t} VALUES (1, %s)", (blob,), label="insert 20 MiB")
    side.q(conn, f"SELECT b FROM {t} WHERE id = 1", label="read 20 MiB")
    side.q(conn, f"SELECT LENGTH(b), SHA2(b, 256) FROM {t}", label="server-side digest")


def check_load_data(side):
    conn = side.connect(local_infile=True)
    rows = side.q(conn, "SELECT @@local_infile")
    if rows and not rows[0][0]:
        raise Skip("the server has local_infile=OFF")
    t = side.table(conn, "load", "id INT PRIMARY KEY, v VARCHAR(32), n INT NULL")
    side.q(conn, f"LOAD DATA LOCAL INFILE '{LOAD_FILE}' INTO TABLE {t} CHARACTER SET utf8mb4 "
                 "FIELDS TERMINATED BY '\\t' (id, v, n)", label="load data local")
    side.q(conn, "SHOW WARNINGS")
    side.q(conn, f"SELECT * FROM {t} ORDER BY id", label="loaded rows")


def check_charset_latin1(side):
    conn = side.connect()
    t = side.table(conn, "latin1", "id INT PRIMARY KEY, v VARCHAR(32) CHARACTER SET utf8mb4")
    side.client.set_charset(conn, "latin1")  # SET NAMES latin1, and the client re-encodes
    side.q(conn, "SELECT @@character_set_client, @@character_set_connection, "
                 "@@character_set_results")
    side.q(conn, "SELECT 'café crème' AS s, HEX('café crème') AS h", label="latin1 literal")
    side.q(conn, f"INSERT INTO {t} VALUES (1, %s)", ("Grüße à la française",), label="insert")
    side.q(conn, f"SELECT v, HEX(v), CHAR_LENGTH(v) FROM {t}", label="read back")


def check_time_zone(side):
    conn = side.connect()
    t = side.table(conn, "tz", "id INT PRIMARY KEY, ts TIMESTAMP NULL")
    side.q(conn, "SET time_zone = '+05:30'")
    side.q(conn, "SELECT @@session.time_zone, FROM_UNIXTIME(0) AS epoch")
    side.q(conn, f"INSERT INTO {t} VALUES (1, '2024-01-01 12:00:00')")
    side.q(conn, f"SELECT ts, UNIX_TIMESTAMP(ts) FROM {t}", label="read in +05:30")
    side.q(conn, "SET time_zone = '+00:00'")
    side.q(conn, f"SELECT ts FROM {t}", label="read in +00:00")


def check_sql_mode(side):
    conn = side.connect()
    t = side.table(conn, "mode", "id INT PRIMARY KEY, v TINYINT")
    side.q(conn, "SET SESSION sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT,STRICT_ALL_TABLES'")
    side.q(conn, "SELECT @@session.sql_mode")
    side.q(conn, "SELECT 'a' || 'b' AS joined", label="pipes as concat")
    side.q(conn, f'SELECT COUNT(*) FROM "{t}"', label="ansi quotes")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 300)", label="strict out of range")
    side.q(conn, "SET SESSION sql_mode = ''")
    side.q(conn, f"INSERT INTO {t} VALUES (2, 300)", label="lax out of range")
    side.q(conn, "SELECT 'a' || 'b' AS is_or", label="pipes as or")
    side.q(conn, f"SELECT * FROM {t} ORDER BY id")


def check_use_db(side):
    conn = side.connect()
    side.setup(conn, f"CREATE DATABASE IF NOT EXISTS {OTHER_DB}")
    t = side.table(conn, "use", "id INT PRIMARY KEY, v VARCHAR(16)", schema=OTHER_DB)
    bare = t.split(".", 1)[1]
    side.q(conn, f"SELECT COUNT(*) FROM {bare}", label="not in sbtest")
    side.q(conn, f"USE {OTHER_DB}")
    side.q(conn, "SELECT DATABASE()", label="after USE")
    side.q(conn, f"INSERT INTO {bare} VALUES (1, 'in mx_db')")
    side.q(conn, f"SELECT * FROM {bare}", label="read unqualified")
    side.client.select_db(conn, DB)  # COM_INIT_DB (or the library's equivalent)
    side.q(conn, "SELECT DATABASE()", label="after select_db")
    side.q(conn, f"SELECT COUNT(*) FROM {t}", label="read qualified")


def check_user_variables(side):
    conn = side.connect()
    side.q(conn, "SET @a = 5")
    side.q(conn, "SELECT @a")
    side.q(conn, "SET @b = 'x', @c = NULL")
    side.q(conn, "SELECT @a + 1, @b, @c, @never_set")
    side.q(conn, "SELECT @a := @a * 2 AS assigned")
    side.q(conn, "SELECT @a", label="after assignment in SELECT")


def check_last_insert_id(side):
    conn = side.connect()
    t = side.table(conn, "lid", "id INT AUTO_INCREMENT PRIMARY KEY, v INT")
    side.q(conn, f"INSERT INTO {t} (v) VALUES (1)")
    side.q(conn, "SELECT LAST_INSERT_ID()", label="after single insert")
    side.q(conn, f"INSERT INTO {t} (v) VALUES (2), (3), (4)")
    side.q(conn, "SELECT LAST_INSERT_ID()", label="after multi-row insert")
    side.q(conn, f"INSERT INTO {t} (id, v) VALUES (100, 5)")
    side.q(conn, "SELECT LAST_INSERT_ID()", label="after explicit id")
    side.q(conn, "SELECT LAST_INSERT_ID(42)")
    side.q(conn, "SELECT LAST_INSERT_ID()", label="after LAST_INSERT_ID(42)")


def check_warnings(side):
    conn = side.connect()
    t = side.table(conn, "warn", "id INT PRIMARY KEY, v VARCHAR(4)")
    side.q(conn, f"INSERT INTO {t} VALUES (1, 'a')")
    side.q(conn, f"INSERT IGNORE INTO {t} VALUES (1, 'b'), (2, 'c')", label="insert ignore")
    side.q(conn, "SHOW WARNINGS", label="warnings of insert ignore")
    side.q(conn, "SELECT @@warning_count")
    side.q(conn, "SHOW COUNT(*) WARNINGS")
    side.q(conn, "SET SESSION sql_mode = ''")
    side.q(conn, f"INSERT INTO {t} VALUES (3, 'too long')", label="truncation")
    side.q(conn, "SHOW WARNINGS", label="warnings of truncation")
    side.q(conn, f"SELECT * FROM {t} ORDER BY id")


def check_ping(side):
    conn = side.connect()
    side.q(conn, "SET @p = 7")
    side.client.ping(conn)
    side.note("ping", "ok")
    side.q(conn, "SELECT @p, 1 AS after_ping")


def reset_state(side, conn):
    t = f"{side.prefix}tmp"
    side.q(conn, "SET @r = 5")
    side.q(conn, f"CREATE TEMPORARY TABLE {t} (id INT)")
    side.q(conn, "SET SESSION sql_mode = 'ANSI_QUOTES'")
    side.q(conn, "SET SESSION time_zone = '+01:00'")
    side.q(conn, "SELECT @r, @@session.time_zone, @@session.sql_mode", label="before reset")
    return t


def after_reset(side, conn, t):
    side.q(conn, "SELECT @r, @@session.time_zone = @@global.time_zone, "
                 "@@session.sql_mode = @@global.sql_mode, DATABASE(), CURRENT_USER()",
           label="after reset")
    side.q(conn, f"SELECT * FROM {t}", label="temporary table gone")


def check_reset_connection(side):
    conn = side.connect()
    if side.client.reset_skip:
        raise Skip(side.client.reset_skip)
    t = reset_state(side, conn)
    side.client.reset(conn)
    side.note("reset", "ok")
    after_reset(side, conn, t)


def check_change_user(side):
    conn = side.connect()
    if side.client.change_user_skip:
        raise Skip(side.client.change_user_skip)
    t = reset_state(side, conn)
    side.client.change_user(conn)
    side.note("change_user", "ok")
    after_reset(side, conn, t)


def check_read_your_writes(side):
    conn = side.connect()
    t = side.table(conn, "ryw", "id INT PRIMARY KEY, v INT")
    for i in range(1, RYW_ROUNDS + 1):
        side.q(conn, f"INSERT INTO {t} VALUES ({i}, {i * 10})", label=f"insert {i}")
        side.q(conn, f"SELECT v FROM {t} WHERE id = {i}", label=f"read {i}")
    side.q(conn, f"UPDATE {t} SET v = -v WHERE id <= 10")
    side.q(conn, f"SELECT SUM(v) FROM {t}", label="read after update")
    side.q(conn, f"DELETE FROM {t} WHERE id > 15")
    side.q(conn, f"SELECT COUNT(*) FROM {t}", label="read after delete")


CHECKS = [
    check_connect, check_types, check_prepared, check_multi_statements, check_stored_procedure,
    check_txn_rollback, check_txn_commit, check_autocommit_off, check_errors,
    check_large_stream, check_large_row, check_load_data, check_charset_latin1,
    check_time_zone, check_sql_mode, check_use_db, check_user_variables, check_last_insert_id,
    check_warnings, check_ping, check_reset_connection, check_change_user,
    check_read_your_writes,
]
LOAD_FILE = ""


# ---------------------------------------------------------------- comparison and main
def first_difference(proxy, direct):
    for i in range(max(len(proxy), len(direct))):
        p = proxy[i] if i < len(proxy) else None
        d = direct[i] if i < len(direct) else None
        if p != d:
            label = (p or d)[0]
            return f"at #{i} {short(label, 80)}: proxy={short(p and p[1])} direct={short(d and d[1])}"
    return None


def verdict(proxy, direct):
    """(PASS|FAIL|SKIP, detail) for the two sides of one check."""
    for side in (proxy, direct):
        if side.crashed:
            return "FAIL", f"harness error on {side.label}: {side.crashed}"
    if proxy.skipped and direct.skipped:
        return "SKIP", proxy.skipped
    if proxy.skipped or direct.skipped:
        return "FAIL", f"skipped on one side only: proxy={proxy.skipped} direct={direct.skipped}"
    violations = proxy.violations + direct.violations
    if violations:
        return "FAIL", "; ".join(violations)
    diff = first_difference(proxy.obs, direct.obs)
    if diff:
        return "FAIL", diff
    return "PASS", f"{len(proxy.obs)} observations equal"


def run_check(check, client, proxy_addr, direct_addr, dump=False):
    proxy = Side("proxy", proxy_addr, client)
    direct = Side("direct", direct_addr, client)
    started = time.monotonic()
    proxy.run(check)
    direct.run(check)
    status, detail = verdict(proxy, direct)
    for label, value in direct.obs if dump else ():
        print(f"  {short(label, 100)} => {short(value, 2000)}")
    return status, f"{detail} ({time.monotonic() - started:.1f}s)"


def loopback_addr(text):
    host, _, port = text.rpartition(":")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"{text}: only loopback addresses are allowed")
    return host, int(port)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxy", required=True, type=loopback_addr)
    ap.add_argument("--direct", required=True, type=loopback_addr)
    ap.add_argument("--client", required=True,
                    choices=["pymysql", "connector_pure", "connector_c", "mysqldb"])
    ap.add_argument("--only", default="", help="comma-separated check names")
    ap.add_argument("--dump", action="store_true", help="print the direct side's observations")
    return ap.parse_args()


def selected_checks(only):
    names = {n for n in only.split(",") if n}
    checks = [c for c in CHECKS if not names or c.__name__[6:] in names | {"connect"}]
    unknown = names - {c.__name__[6:] for c in CHECKS}
    if unknown:
        sys.exit(f"unknown checks: {', '.join(sorted(unknown))}")
    return checks


def write_load_file():
    fd, path = tempfile.mkstemp(prefix="mx-load-", suffix=".tsv")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(LOAD_DATA)
    return path


def main():
    global LOAD_FILE
    args = parse_args()
    client = make_client(args.client)
    LOAD_FILE = write_load_file()
    passed = failed = 0
    try:
        for check in selected_checks(args.only):
            name = check.__name__[len("check_"):]
            status, detail = run_check(check, client, args.proxy, args.direct, args.dump)
            print(f"CHECK {client.name} {name} {status} {detail}", flush=True)
            passed += status == "PASS"
            failed += status == "FAIL"
            if name == "connect" and status == "FAIL":
                break  # nothing else can be compared meaningfully
    finally:
        os.unlink(LOAD_FILE)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
