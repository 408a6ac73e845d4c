"""PyMySQL through switchyard as `strict`, for tests/clients.rs.

usage: pymysql_check.py PROXY_PORT TABLE

Connects with CLIENT.MULTI_STATEMENTS and PyMySQL's default autocommit (False, so
PyMySQL sends `SET AUTOCOMMIT = 0`), checks routing, commit/rollback, multi-statement
batches, a non-UTF-8 query and lastrowid, and prints one JSON line:
{"ok": true|false, "failures": [...], "facts": {...}}. Exits 1 on any failure.
Only loopback addresses are used; every wait is bounded.
"""

import json
import sys
import time

import pymysql
from pymysql.constants import CLIENT

PRIMARY = "127.0.0.11"


def main():
    port = int(sys.argv[1])
    table = sys.argv[2]
    failures = []
    facts = {}

    def check(name, cond, detail):
        facts[name] = detail
        if not cond:
            failures.append(f"{name}: {detail!r}")

    direct = pymysql.connect(
        host=PRIMARY, port=3306, user="app", password="app", database="sbtest",
        autocommit=True, connect_timeout=10, read_timeout=30,
    )
    dcur = direct.cursor()
    dcur.execute("SELECT @@server_id")
    primary_id = dcur.fetchone()[0]
    facts["primary_id"] = primary_id

    def direct_count(v):
        dcur.execute(f"SELECT COUNT(*) FROM {table} WHERE v = %s", (v,))
        return dcur.fetchone()[0]

    conn = pymysql.connect(
        host="127.0.0.1", port=port, user="strict", password="strict", database="sbtest",
        client_flag=CLIENT.MULTI_STATEMENTS, connect_timeout=10, read_timeout=30,
        write_timeout=30,
    )
    cur = conn.cursor()
    created = False
    try:
        check("autocommit_off", conn.get_autocommit() is False, conn.get_autocommit())
        cur.execute("SELECT @@autocommit")
        check("server_autocommit", cur.fetchone()[0] == 0, "@@autocommit seen through the proxy")

        cur.execute("SELECT @@server_id")
        sid = cur.fetchone()[0]
        check("autocommit0_read_on_primary", sid == primary_id, sid)

        cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        created = True

        # insert, invisible elsewhere until COMMIT, then visible on the primary
        cur.execute(f"INSERT INTO {table} (v) VALUES (1)")
        rowid = cur.lastrowid
        cur.execute("SELECT LAST_INSERT_ID()")
        lid = cur.fetchone()[0]
        check("lastrowid_is_last_insert_id", rowid == lid and rowid > 0, [rowid, lid])
        check("uncommitted_invisible", direct_count(1) == 0, direct_count(1))
        conn.commit()
        check("committed_visible_on_primary", direct_count(1) == 1, direct_count(1))

        # a multi-statement batch: its first result comes from the primary
        cur.execute(f"SELECT @@server_id; INSERT INTO {table} (v) VALUES (2)")
        first = cur.fetchall()
        check("batch_first_result_primary", len(first) == 1 and first[0][0] == primary_id, [list(r) for r in first])
        more = cur.nextset()
        check("batch_second_result", bool(more) and cur.rowcount == 1, [more, cur.rowcount])
        batch_rowid = cur.lastrowid
        check("batch_no_third_result", not cur.nextset(), "a third result set")
        cur.execute("SELECT LAST_INSERT_ID()")
        lid2 = cur.fetchone()[0]
        check("batch_lastrowid", batch_rowid == lid2 and lid2 > rowid, [batch_rowid, lid2])
        conn.commit()
        check("batch_insert_committed", direct_count(2) == 1, direct_count(2))

        # a query that is not valid UTF-8 (and holds a NUL byte)
        cur.execute(b"SELECT HEX(_binary'\xff\xfe\x00\x80')")
        check("binary_query", cur.fetchone()[0] == "FFFE0080", "hex of the binary literal")

        # lastrowid again, with an explicit id
        cur.execute(f"INSERT INTO {table} (id, v) VALUES (1000, 4)")
        check("explicit_id_lastrowid", cur.lastrowid == 1000, cur.lastrowid)
        cur.execute(f"INSERT INTO {table} (v) VALUES (5)")
        r5 = cur.lastrowid
        cur.execute("SELECT LAST_INSERT_ID()")
        check("lastrowid_after_explicit", r5 == cur.fetchone()[0] and r5 > 1000, r5)
        conn.commit()

        # rollback really discards
        cur.execute(f"INSERT INTO {table} (v) VALUES (3)")
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE v = 3")
        check("own_uncommitted_visible", cur.fetchone()[0] == 1, "own insert inside the transaction")
        conn.rollback()
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE v = 3")
        check("rolled_back_gone_in_session", cur.fetchone()[0] == 0, "after ROLLBACK")
        check("rolled_back_gone_on_primary", direct_count(3) == 0, direct_count(3))
        conn.commit()

        cur.execute(f"SELECT v FROM {table} ORDER BY id")
        rows = [r[0] for r in cur.fetchall()]
        check("final_rows", rows == [1, 2, 4, 5], rows)
        cur.execute("SELECT @@server_id")
        sid = cur.fetchone()[0]
        check("still_primary_at_end", sid == primary_id, sid)
        conn.commit()
    except Exception as e:  # report, do not hide
        failures.append(f"exception: {type(e).__name__}: {e}")
    finally:
        try:
            if created:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            conn.close()
        except Exception as e:
            failures.append(f"cleanup through the proxy: {type(e).__name__}: {e}")
            # a last resort so the table does not stay behind
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    dcur.execute(f"DROP TABLE IF EXISTS {table}")
                    break
                except Exception:
                    time.sleep(0.2)
        direct.close()

    print(json.dumps({"ok": not failures, "failures": failures, "facts": facts}))
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()
