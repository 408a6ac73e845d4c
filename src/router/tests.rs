//! Table-driven router tests. Each case is a statement and a compact expectation:
//! `S`/`P` target, then any of `same`, `set`, `begin`, `pin=a,b`, `unpin=a`, `kill=N`,
//! `killq=N`, `use=NAME`, `var=name:value`, `names=cs[/coll]`, `tx=ISO|-,1|0|-` (`_` for a
//! space), `hint=primary|standby`, `lii` (reads the insert id), `ro` (READ ONLY
//! transaction), `expr=var`, `open=reason:name`, `close=reason:name` (`?`: unreadable),
//! `closeall=reason`. Anything not listed must be false/empty.

use super::fast::{suspicious, Scan};
use super::hint::{self, Hint};
use super::split;
use super::*;

fn pin(name: &str) -> PinReason {
    *PinReason::ALL
        .iter()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("pin {name}"))
}

fn expected(exp: &str) -> Statement {
    let mut st = Statement::default();
    for part in exp.split_whitespace() {
        let (key, val) = part.split_once('=').unwrap_or((part, ""));
        match key {
            "S" => st.target = Target::Standby,
            "P" => st.target = Target::Primary,
            "same" => st.same_connection = true,
            "set" => st.is_set_only = true,
            "begin" => st.begins_transaction = true,
            "pin" => st.pins.extend(val.split(',').map(pin)),
            "unpin" => st.unpins.extend(val.split(',').map(pin)),
            "kill" | "killq" => {
                st.kill = Some(Kill {
                    query_only: key == "killq",
                    id: val.parse().unwrap(),
                })
            }
            "use" => st.changes.push(SessionChange::UseSchema(val.into())),
            "var" => {
                let (name, value) = val.split_once(':').unwrap();
                st.changes.push(SessionChange::SetVar {
                    name: name.into(),
                    value: value.into(),
                });
            }
            "charset" => st.changes.push(SessionChange::SetCharacterSet {
                charset: val.into(),
            }),
            "names" => {
                let (cs, coll) = match val.split_once('/') {
                    Some((a, b)) => (a, Some(b.to_string())),
                    None => (val, None),
                };
                st.changes.push(SessionChange::SetNames {
                    charset: cs.into(),
                    collation: coll,
                });
            }
            "tx" => {
                let (iso, ro) = val.split_once(',').unwrap();
                let isolation = (iso != "-").then(|| iso.replace('_', " "));
                let read_only = match ro {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                };
                st.changes.push(SessionChange::SetTransaction {
                    isolation,
                    read_only,
                });
            }
            "lii" => st.reads_insert_id = true,
            "global" => st.sets_global = true,
            "ro" => st.read_only_transaction = true,
            "expr" => st
                .changes
                .push(SessionChange::SetVarExpr { name: val.into() }),
            "open" | "close" => {
                let (r, n) = val.split_once(':').unwrap();
                let n = (n != "?").then(|| n.to_string());
                st.names.push(if key == "open" {
                    NameOp::Open(pin(r), n)
                } else {
                    NameOp::Close(pin(r), n)
                });
            }
            "closeall" => st.names.push(NameOp::CloseAll(pin(val))),
            "hint" => {
                st.hint = Some(if val == "primary" {
                    Hint::Primary
                } else {
                    Hint::Standby
                })
            }
            _ => panic!("bad expectation {part}"),
        }
    }
    st.pins.sort();
    st.unpins.sort();
    st
}

fn check_all(cases: &[(&[u8], &str)], f: fn(&[u8]) -> Statement) {
    let mut failures = Vec::new();
    for (sql, exp) in cases {
        let mut got = f(sql);
        got.unparsed = false; // checked on its own below
        let want = expected(exp);
        if got != want {
            failures.push(format!(
                "{:?}\n   want {want:?}\n   got  {got:?}",
                String::from_utf8_lossy(sql)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// sysbench, mysql CLI, ORMs: the hot statements.
const HOT: &[(&[u8], &str)] = &[
    (b"SELECT c FROM sbtest1 WHERE id=4711", "S"),
    (b"SELECT c FROM sbtest1 WHERE id=?", "S"),
    (b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100", "S"),
    (
        b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 1 AND 100",
        "S",
    ),
    (
        b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
        "S",
    ),
    (
        b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
        "S",
    ),
    (b"UPDATE sbtest1 SET k=k+1 WHERE id=5", "P"),
    (
        b"UPDATE sbtest1 SET c='83868641912-28773972837' WHERE id=5",
        "P",
    ),
    (b"DELETE FROM sbtest1 WHERE id=5", "P"),
    (
        b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5, 4, '1-2', '3-4')",
        "P",
    ),
    (b"BEGIN", "P begin"),
    (b"COMMIT", "P"),
    (b"select @@version_comment limit 1", "S"),
    (b"SELECT DATABASE()", "S"),
    (b"SELECT 1", "S"),
    (b"SELECT @@session.autocommit, @@tx_isolation", "S"),
    (b"SET AUTOCOMMIT = 0", "P set var=autocommit:0"),
    (b"select * from information_schema.tables", "S"),
];

/// Plain reads, some of which need the slow path to be cleared.
const READS: &[(&[u8], &str)] = &[
    (b"SELECT * FROM t WHERE note = 'for update'", "S"),
    (b"SELECT * FROM orders WHERE status = 'UPDATE'", "S"),
    (b"SELECT REPLACE(name, 'a', 'b') FROM t", "S"),
    (b"SELECT `for` FROM t", "S"),
    (b"SELECT * FROM dolt_log", "S"),
    (b"SELECT * FROM dolt_log LIMIT 5", "S"),
    (b"SELECT * FROM t AS OF 'main~1'", "S"),
    (b"WITH x AS (SELECT 1) SELECT * FROM x", "S"),
    (b"(SELECT a FROM t) UNION (SELECT b FROM u)", "S"),
    (b"SELECT * FROM t1 JOIN (SELECT id FROM t2) d ON d.id = t1.id", "S"),
    (b"  /* app */ SELECT 1", "S"),
    (b"SELECT row_count FROM stats", "S"),
    (b"SELECT last_insert_id FROM t", "S"),
    (b"SELECT SLEEP(1)", "S"),
    (b"SELECT NOW(), UUID()", "S"),
    (b"SELECT c FROM t WHERE id IN (1,2,3) GROUP BY c HAVING COUNT(*) > 1", "S"),
    (b"SELECT * FROM t ORDER BY id DESC LIMIT 10 OFFSET 20", "S"),
    (b"SELECT * FROM `mydb/feature`.t", "S"),
    (b"SELECT @@GLOBAL.dolt_cluster_role, @@GLOBAL.dolt_cluster_role_epoch", "S"),
    (b"TABLE t", "S"),
    (b"SHOW TABLES", "S"),
    (b"SHOW FULL TABLES FROM db", "S"),
    (b"SHOW CREATE TABLE t", "S"),
    (b"SHOW VARIABLES LIKE 'sql_mode'", "S"),
    (b"SHOW TABLE STATUS", "S"),
    (b"SHOW DATABASES", "S"),
    (b"DESCRIBE t", "S"),
    (b"DESC t", "S"),
    (b"DESCRIBE SELECT * FROM t", "S"),
    (b"EXPLAIN SELECT * FROM t", "S"),
    (b"EXPLAIN FORMAT=JSON SELECT * FROM t WHERE id = 1", "S"),
    (b"EXPLAIN ANALYZE SELECT * FROM t", "S"),
    (b"HELP 'select'", "S"),
    (b"SELECT 1;", "S"),
    (b"SELECT 1; -- trailing", "S"),
    (b"SELECT ';' FROM t", "S"),
    (b"SELECT _binary'\xff'", "S"),
    (b"SELECT INSERT('abc', 1, 1, 'x')", "S"),
    (b"SELECT * FROM t USE INDEX FOR JOIN (i)", "S"),
    (b"SELECT a FROM t WHERE c = 'x' /* for */", "S"),
    (b"SELECT * FROM t WHERE note = ? AND s = 'for'", "S"),
    (b"WITH RECURSIVE c AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT * FROM c", "S"),
];

/// Reads that are not plain: DOMAIN.md's routing traps and friends.
const TRAPS: &[(&[u8], &str)] = &[
    (b"SELECT * FROM t WHERE id = 1 FOR UPDATE", "P"),
    (b"SELECT * FROM t WHERE id = 1 FOR SHARE", "P"),
    (b"SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE", "P"),
    (b"SELECT * FROM t FOR UPDATE SKIP LOCKED", "P"),
    (b"SELECT 1 FROM DUAL WHERE 1 = 1 FOR UPDATE NOWAIT", "P"),
    (b"SELECT * FROM t1 UNION SELECT * FROM t2 FOR UPDATE", "P"),
    (
        b"SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)",
        "P",
    ),
    (b"SELECT * FROM (SELECT * FROM t FOR UPDATE) d", "P"),
    (
        b"WITH x AS (SELECT id FROM u FOR UPDATE) SELECT * FROM x",
        "P",
    ),
    (b"WITH x AS (SELECT 1) UPDATE t SET a = 1", "P"),
    (
        b"WITH x AS (SELECT id FROM u) DELETE FROM t WHERE id IN (SELECT id FROM x)",
        "P",
    ),
    (
        b"WITH x AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM x",
        "P",
    ),
    (b"SELECT @a := 1", "P pin=user_variable"),
    (b"SELECT @a:=id FROM t", "P pin=user_variable"),
    (b"SELECT id INTO @v FROM t LIMIT 1", "P pin=user_variable"),
    (b"SELECT id FROM t LIMIT 1 INTO @v", "P pin=user_variable"),
    (b"SELECT * FROM t INTO OUTFILE '/tmp/x'", "P"),
    (b"SELECT * FROM t INTO DUMPFILE '/tmp/x'", "P"),
    (b"SELECT @a", "P"),
    (b"SELECT @a, @@version", "P"),
    (
        b"SELECT GET_LOCK('job', 10)",
        "P pin=get_lock open=get_lock:job",
    ),
    (
        b"SELECT get_lock ('job', 10)",
        "P pin=get_lock open=get_lock:job",
    ),
    (
        b"SELECT `GET_LOCK`('x', 1)",
        "P pin=get_lock open=get_lock:x",
    ),
    (b"SELECT RELEASE_LOCK('job')", "P close=get_lock:job"),
    (b"SELECT RELEASE_ALL_LOCKS()", "P closeall=get_lock"),
    (b"SELECT IS_USED_LOCK('job')", "P"),
    (b"SELECT IS_FREE_LOCK('job')", "P"),
    (b"SELECT LAST_INSERT_ID()", "P same lii"),
    (b"select last_insert_id() as id", "P same lii"),
    (b"SELECT FOUND_ROWS()", "P same"),
    (b"SELECT ROW_COUNT()", "P same"),
    (
        b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10",
        "P pin=found_rows",
    ),
    (b"SELECT NEXTVAL(seq)", "P"),
    (b"SELECT NEXT VALUE FOR seq", "P"),
    (b"SELECT SETVAL(seq, 10)", "P"),
    (b"SELECT LASTVAL(seq)", "P"),
    (b"SELECT DOLT_COMMIT('-am', 'msg')", "P"),
    (b"SELECT dolt_checkout('feature')", "P pin=unknown_set"),
    (b"SELECT * FROM dolt_diff('main', 'feature', 't')", "P"),
    (b"SELECT * FROM t /*!40001 FOR UPDATE */", "P"),
    (b"SELECT /*!40001 SQL_NO_CACHE */ * FROM t", "P"),
    (b"SELECT * FROM t FOR SYSTEM_TIME ALL", "P"),
    (b"SELECT \xff\xfe FROM t FOR UPDATE", "P"),
    (b"SELECT 'x\xff' FROM t WHERE a = 'for'", "P"),
    (b"SELECT FROM WHERE FOR", "P"),
    (b"SELECT 1; DELETE FROM t", "P"),
    (b"SELECT 1; CREATE TABLE x (a int)", "P"),
];

const WRITES: &[(&[u8], &str)] = &[
    (b"REPLACE INTO t VALUES (1)", "P"),
    (b"LOAD DATA INFILE '/tmp/x' INTO TABLE t", "P"),
    (
        b"LOAD DATA LOCAL INFILE 'x' INTO TABLE t (a, @dummy) SET b = @dummy",
        "P pin=user_variable",
    ),
    (b"CREATE TABLE t (id INT)", "P"),
    (
        b"CREATE TEMPORARY TABLE tmp (id INT)",
        "P pin=temp_table open=temp_table:tmp",
    ),
    (
        b"create or replace temporary table tmp (id int)",
        "P pin=temp_table open=temp_table:tmp",
    ),
    (b"ALTER TABLE t ADD COLUMN x INT", "P"),
    (b"DROP TABLE t", "P close=temp_table:t"),
    (b"DROP TEMPORARY TABLE tmp", "P close=temp_table:tmp"),
    (b"TRUNCATE TABLE t", "P"),
    (b"RENAME TABLE a TO b", "P"),
    (b"GRANT SELECT ON db.* TO u", "P"),
    (b"REVOKE SELECT ON db.* FROM u", "P"),
    (b"CALL dolt_commit('-am', 'x')", "P"),
    (b"CALL dolt_checkout('-b', 'feature')", "P pin=unknown_set"),
    (b"CALL my_proc(1)", "P"),
    (b"OPTIMIZE TABLE t", "P"),
    (b"ANALYZE TABLE t", "P"),
    (b"REPAIR TABLE t", "P"),
    (b"FLUSH PRIVILEGES", "P"),
    (b"FLUSH TABLES WITH READ LOCK", "P pin=lock_tables"),
    (b"FLUSH TABLES t FOR EXPORT", "P pin=lock_tables"),
    (b"DO SLEEP(1)", "P"),
    (b"DO GET_LOCK('x', 0)", "P pin=get_lock open=get_lock:x"),
    (b"DO RELEASE_ALL_LOCKS()", "P closeall=get_lock"),
    (b"INSERT INTO t (a) VALUES (LAST_INSERT_ID())", "P same lii"),
    (b"UPDATE t SET n = LAST_INSERT_ID(n + 1)", "P same lii"),
    (b"UPDATE t SET a = @x := a + 1", "P pin=user_variable"),
    (b"INSERT INTO t VALUES (@a)", "P"),
    (b"DELETE FROM t WHERE id = 1 RETURNING id", "P"),
    (b"INSERT INTO t SELECT * FROM u", "P"),
    (b"INSERT INTO t VALUES ('GET_LOCK(')", "P"),
    (b"EXPLAIN UPDATE t SET a = 1", "P"),
    (b"EXPLAIN DELETE FROM t", "P"),
    (b"EXPLAIN SELECT * FROM t FOR UPDATE", "P"),
    (b"EXPLAIN FOR CONNECTION 5", "P"),
];

const TRANSACTIONS_AND_PINS: &[(&[u8], &str)] = &[
    (b"BEGIN WORK", "P begin"),
    (b"BEGIN;", "P begin"),
    (b"START TRANSACTION", "P begin"),
    (b"START TRANSACTION WITH CONSISTENT SNAPSHOT", "P begin"),
    (b"start transaction read only", "P begin ro"),
    (b"COMMIT WORK", "P"),
    (b"ROLLBACK", "P"),
    (b"COMMIT AND CHAIN", "P begin"),
    (b"ROLLBACK AND NO CHAIN", "P"),
    (b"SAVEPOINT sp1", "P"),
    (b"ROLLBACK TO SAVEPOINT sp1", "P"),
    (b"RELEASE SAVEPOINT sp1", "P"),
    (b"XA START 'x1'", "P pin=xa begin"),
    (b"XA BEGIN 'x1'", "P pin=xa begin"),
    (b"XA END 'x1'", "P pin=xa"),
    (b"XA PREPARE 'x1'", "P pin=xa"),
    (b"XA COMMIT 'x1'", "P unpin=xa"),
    (b"XA ROLLBACK 'x1'", "P unpin=xa"),
    (b"XA RECOVER", "P"),
    (b"START SLAVE", "P"),
    (b"LOCK TABLES t READ", "P pin=lock_tables"),
    (b"LOCK TABLE t WRITE, u READ", "P pin=lock_tables"),
    (b"UNLOCK TABLES", "P unpin=lock_tables"),
    (b"HANDLER t OPEN", "P pin=handler open=handler:t"),
    (b"HANDLER t READ FIRST", "P pin=handler"),
    (
        b"PREPARE s FROM 'SELECT * FROM t WHERE id = ?'",
        "P pin=text_prepare open=text_prepare:s",
    ),
    (b"EXECUTE s USING @id", "P"),
    (b"DEALLOCATE PREPARE s", "P close=text_prepare:s"),
    (b"SELECT @@warning_count", "P same"),
    (b"SELECT @@session.error_count", "P same"),
    (b"SELECT @@identity", "P same lii"),
    (b"SELECT @@last_insert_id, 1", "P same lii"),
    (b"SELECT @@sql_mode", "S"),
    (b"DROP TEMPORARY TABLE IF EXISTS a, `db`.`B`", "P close=temp_table:a close=temp_table:db.b"),
    (b"CREATE TEMPORARY TABLE IF NOT EXISTS db.t (a INT)", "P pin=temp_table open=temp_table:db.t"),
    (b"HANDLER t OPEN AS h", "P pin=handler open=handler:h"),
    (b"HANDLER h CLOSE", "P pin=handler close=handler:h"),
    (b"SELECT GET_LOCK(CONCAT('a', 1), 1)", "P pin=get_lock open=get_lock:?"),
    (b"SET sql_mode = CONCAT(@x, ',ANSI')", "P pin=unknown_set"),
    (b"SET sql_mode = IF(GET_LOCK('a', 1), 'ANSI', '')", "P pin=unknown_set"),
    (b"SET @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO')", "P set expr=sql_mode"),
    (b"START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT", "P begin ro"),
    (b"DROP PREPARE s", "P close=text_prepare:s"),
    (b"KILL 42", "P kill=42"),
    (b"KILL CONNECTION 42", "P kill=42"),
    (b"KILL QUERY 42", "P killq=42"),
    (
        b"kill query 18446744073709551615;",
        "P killq=18446744073709551615",
    ),
    (b"KILL QUERY ID 42", "P"),
    (b"KILL abc", "P"),
    (b"SHOW WARNINGS", "P same"),
    (b"SHOW ERRORS", "P same"),
    (b"SHOW COUNT(*) WARNINGS", "P same"),
    (b"show warnings limit 10", "P same"),
    (b"GET DIAGNOSTICS @n = NUMBER", "P same"),
    (
        b"GET CURRENT DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT",
        "P same",
    ),
    (b"SHOW MASTER STATUS", "P"),
    (b"SHOW SLAVE STATUS", "P"),
    (b"SHOW REPLICA STATUS", "P"),
    (b"SHOW BINLOG EVENTS", "P"),
    (b"SHOW BINARY LOGS", "P"),
    (b"SHOW PROCESSLIST", "P"),
    (b"SHOW FULL PROCESSLIST", "P"),
    (b"SHOW STATUS", "P"),
    (b"SHOW SESSION STATUS LIKE 'Handler%'", "P"),
    (b"SHOW GLOBAL STATUS", "P"),
];

const SETS: &[(&[u8], &str)] = &[
    (b"SET @a = 1", "P pin=user_variable"),
    (b"SET @a := 1", "P pin=user_variable"),
    (b"SET @a = 1, @b = 'x'", "P pin=user_variable"),
    (b"SET @`weird name` = 1", "P pin=user_variable"),
    (b"SET autocommit=1", "P set var=autocommit:1"),
    (b"set autocommit = ON", "P set var=autocommit:1"),
    (b"SET autocommit=OFF", "P set var=autocommit:0"),
    (b"SET autocommit = true", "P set var=autocommit:1"),
    (
        b"SET SESSION sql_mode = 'ANSI'",
        "P set var=sql_mode:'ANSI'",
    ),
    (
        b"SET @@session.sql_mode = 'TRADITIONAL'",
        "P set var=sql_mode:'TRADITIONAL'",
    ),
    (
        b"SET @@SESSION.time_zone = '+00:00'",
        "P set var=time_zone:'+00:00'",
    ),
    (b"SET @@autocommit = 0", "P set var=autocommit:0"),
    (
        b"SET LOCAL wait_timeout = 600",
        "P set var=wait_timeout:600",
    ),
    (b"SET time_zone = DEFAULT", "P set var=time_zone:DEFAULT"),
    (b"SET time_zone = SYSTEM", "P set var=time_zone:SYSTEM"),
    (
        b"SET sql_mode='', autocommit=1",
        "P set var=sql_mode:'' var=autocommit:1",
    ),
    (
        b"SET transaction_isolation = 'READ-COMMITTED'",
        "P set var=transaction_isolation:'READ-COMMITTED'",
    ),
    (
        b"SET tx_isolation = 'REPEATABLE-READ'",
        "P set var=tx_isolation:'REPEATABLE-READ'",
    ),
    (
        b"SET max_execution_time = 1000",
        "P set var=max_execution_time:1000",
    ),
    (
        b"SET character_set_results = NULL",
        "P set var=character_set_results:NULL",
    ),
    (
        b"SET lc_time_names = 'en_US'",
        "P set var=lc_time_names:'en_US'",
    ),
    (
        b"SET optimizer_switch = 'index_merge=off'",
        "P set var=optimizer_switch:'index_merge=off'",
    ),
    (b"SET `autocommit` = 1", "P set var=autocommit:1"),
    (
        b"SET character_set_client = _utf8mb4'utf8mb4'",
        "P set var=character_set_client:_utf8mb4'utf8mb4'",
    ),
    (b"SET NAMES utf8mb4", "P set names=utf8mb4"),
    (
        b"SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
        "P set names=utf8mb4/utf8mb4_unicode_ci",
    ),
    (
        b"SET NAMES UTF8MB4 COLLATE utf8mb4_0900_ai_ci",
        "P set names=utf8mb4/utf8mb4_0900_ai_ci",
    ),
    (b"SET CHARACTER SET utf8", "P set charset=utf8"),
    (b"SET CHARSET latin1", "P set charset=latin1"),
    (
        b"SET NAMES utf8mb4, autocommit = 0",
        "P set names=utf8mb4 var=autocommit:0",
    ),
    (
        b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "P set tx=READ_COMMITTED,-",
    ),
    (b"SET SESSION TRANSACTION READ ONLY", "P set tx=-,1"),
    (
        b"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "P set tx=SERIALIZABLE,0",
    ),
    (
        b"SET SESSION TRANSACTION ISOLATION LEVEL SOMETHING",
        "P pin=unknown_set",
    ),
    (
        b"SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "P pin=next_transaction",
    ),
    (b"SET TRANSACTION READ ONLY", "P pin=next_transaction"),
    (
        b"SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "P global",
    ),
    (b"SET GLOBAL max_connections = 1000", "P global"),
    (b"SET @@global.sql_mode = 'ANSI'", "P global"),
    (b"SET PERSIST max_connections = 10", "P global"),
    (b"SET sql_log_bin = 0", "P pin=sql_log_bin"),
    (b"SET SESSION sql_log_bin = OFF", "P pin=sql_log_bin"),
    (b"SET sql_log_bin = 1", "P unpin=sql_log_bin"),
    (b"SET foo_unknown = 1", "P pin=unknown_set"),
    (b"SET profiling = 1", "P pin=unknown_set"),
    (b"SET dolt_transaction_commit = 1", "P pin=unknown_set"),
    (
        b"SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
        "P set expr=sql_mode",
    ),
    (b"SET autocommit = @a", "P pin=unknown_set"),
    (b"SET wait_timeout = (SELECT 10)", "P set expr=wait_timeout"),
    (b"SET wait_timeout = 10 + 1", "P set expr=wait_timeout"),
    (
        b"SET @a = 1, autocommit = 0",
        "P pin=user_variable var=autocommit:0",
    ),
    (
        b"SET SESSION autocommit = 1, GLOBAL wait_timeout = 10",
        "P var=autocommit:1 global",
    ),
    (b"SET GLOBAL a = 1, b = 2", "P pin=unknown_set global"),
    (b"SET NAMES DEFAULT", "P pin=unknown_set"),
    (b"SET autocommit = 1,", "P pin=unknown_set var=autocommit:1"),
    (b"SET", "P"),
    (b"SET PASSWORD = 'x'", "P"),
    (b"SET ROLE ALL", "P pin=unknown_set"),
    (b"SET STATEMENT max_statement_time=1 FOR SELECT 1", "P"),
    (b"/*!40101 SET NAMES utf8mb4 */", "P set names=utf8mb4"),
    (
        b"/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */",
        "P pin=user_variable var=unique_checks:0",
    ),
    (
        b"/*!40101 SET character_set_client = utf8 */;",
        "P set var=character_set_client:utf8",
    ),
    (b"/*M!100101 SET NAMES utf8mb4 */", "P pin=unknown_set"),
    (
        b"/*!50001 CREATE ALGORITHM=UNDEFINED VIEW v AS SELECT 1 */",
        "P",
    ),
    (b"USE db", "P set use=db"),
    (b"USE `db/branch`", "P set use=db/branch"),
    (b"USE db/branch", "P set use=db/branch"),
    (b"use `my``db`", "P set use=my`db"),
    (b"USE mydb/feature-1;", "P set use=mydb/feature-1"),
    (b"USE db extra", "P pin=unknown_set"),
];

const HINTS_AND_ODDITIES: &[(&[u8], &str)] = &[
    (b"/* switchyard: primary */ SELECT 1", "P hint=primary"),
    (
        b"/*+ switchyard: primary */ SELECT c FROM t",
        "P hint=primary",
    ),
    (b"-- switchyard: primary\nSELECT 1", "P hint=primary"),
    (b"# switchyard:primary\nSELECT 1", "P hint=primary"),
    (b"/* SWITCHYARD : Standby */ SHOW STATUS", "S hint=standby"),
    (b"/* switchyard: standby */ SELECT 1", "S hint=standby"),
    (
        b"/* switchyard: standby */ SELECT * FROM t FOR UPDATE",
        "P hint=standby",
    ),
    (
        b"/* switchyard: standby */ INSERT INTO t VALUES (1)",
        "P hint=standby",
    ),
    (
        b"/* switchyard: standby */ SELECT * FROM t FOR SYSTEM_TIME ALL",
        "S hint=standby",
    ),
    (
        b"/* switchyard: standby */ SELECT LAST_INSERT_ID()",
        "P same hint=standby lii",
    ),
    (
        b"/* switchyard: standby */ SET autocommit=0",
        "P set var=autocommit:0 hint=standby",
    ),
    (
        b"/*switchyard:standby*/SELECT GET_LOCK('a',1)",
        "P pin=get_lock hint=standby open=get_lock:a",
    ),
    (
        b"/* other */ /* switchyard: primary */ SELECT 1",
        "P hint=primary",
    ),
    (
        b"/* app=x, switchyard=primary */ SELECT 1",
        "P hint=primary",
    ),
    (b"/* switchyardx: primary */ SELECT 1", "S"),
    (b"--switchyard: primary\nSELECT 1", "P"),
    (b"", "P"),
    (b"   ", "P"),
    (b"/* only a comment */", "P"),
    (b"/* unterminated", "P"),
    (b"FOO BAR", "P"),
    (b"(", "P"),
    (b"'", "P"),
];

#[test]
fn table() {
    let tables = [
        HOT,
        READS,
        TRAPS,
        WRITES,
        TRANSACTIONS_AND_PINS,
        SETS,
        HINTS_AND_ODDITIES,
    ];
    let all: Vec<(&[u8], &str)> = tables.iter().flat_map(|t| t.iter().copied()).collect();
    assert!(all.len() >= 120);
    check_all(&all, classify);
}

const MULTI: &[(&[u8], &str)] = &[
    (b"SELECT 1; SELECT 2", "S"),
    (b"SELECT 1; UPDATE t SET a=1", "P"),
    (
        b"SET autocommit=0; SET NAMES utf8mb4",
        "P set var=autocommit:0 names=utf8mb4",
    ),
    (b"SET autocommit=0; SELECT 1", "P var=autocommit:0"),
    (b"LOCK TABLES t READ; UNLOCK TABLES", "P unpin=lock_tables"),
    (b"UNLOCK TABLES; LOCK TABLES t READ", "P pin=lock_tables"),
    (
        b"INSERT INTO t VALUES (1); SELECT LAST_INSERT_ID()",
        "P same lii",
    ),
    (b"SELECT 'a;b'; SELECT \"c;d\"; SELECT `e;f`", "S"),
    (b"SELECT 1 -- ; DROP TABLE t\n; SELECT 2", "S"),
    (b"SELECT 1 # ; DELETE FROM t\n", "S"),
    (b"SELECT 1 /* ; DELETE FROM t */ ; SELECT 2", "S"),
    (b"SELECT 'it''s;'; SELECT 'a\\';b'", "S"),
    (b"SELECT 1;;; ;", "S"),
    (b";", "P"),
    (
        b"/* switchyard: standby */ SHOW STATUS; SHOW PROCESSLIST",
        "S hint=standby",
    ),
    (
        b"/* switchyard: standby */ SHOW STATUS; DELETE FROM t",
        "P hint=standby",
    ),
    (
        b"/* switchyard: primary */ SELECT 1; SELECT 2",
        "P hint=primary",
    ),
    (b"SET @a=1; SELECT @a", "P pin=user_variable"),
    (b"BEGIN; INSERT INTO t VALUES (1); COMMIT", "P begin"),
    (b"KILL 7; SELECT 1", "P kill=7"),
    (
        b"SELECT GET_LOCK('a', 1); SELECT RELEASE_ALL_LOCKS()",
        "P pin=get_lock open=get_lock:a closeall=get_lock",
    ),
    (b"USE db; SELECT * FROM t", "P use=db"),
];

#[test]
fn multi() {
    check_all(MULTI, classify_multi);
    // classify() on several statements is at least as strict as classify_multi.
    check_all(&MULTI[..4], classify);
}

#[test]
fn split_pieces() {
    let p = |s: &[u8]| split::pieces(s).len();
    assert_eq!(p(b"SELECT 1; SELECT 2"), 2);
    assert_eq!(p(b"SELECT ';'; SELECT `;`; SELECT \";\""), 3);
    assert_eq!(p(b"SELECT 1; /* c */ ; -- x\n"), 1);
    assert_eq!(p(b"/*!40101 SET a=1; SET b=2 */; SELECT 1"), 2);
    assert_eq!(p(b"SELECT 'unterminated; SELECT 2"), 1);
    assert_eq!(p(b""), 0);
}

#[test]
fn hint_offsets() {
    assert_eq!(hint::parse(b"SELECT 1"), (None, 0));
    assert_eq!(hint::parse(b"  /* x */ -- y\n# z\n SELECT 1"), (None, 20));
    assert_eq!(
        hint::parse(b"/* switchyard: standby */SELECT 1"),
        (Some(Hint::Standby), 25)
    );
    assert_eq!(hint::parse(b"/*! SELECT 1 */"), (None, 0));
    assert_eq!(hint::parse(b" /*M!100101 SET a=1 */"), (None, 1));
    assert_eq!(
        hint::parse(b"-- switchyard: primary"),
        (Some(Hint::Primary), 22)
    );
    assert_eq!(
        hint::parse(b"/* switchyard: primary */ /* switchyard: standby */ x").0,
        Some(Hint::Primary)
    );
    assert_eq!(hint::parse(b"/* switchyard: nowhere */ x").0, None);
}

/// The hot reads are decided without sqlparser: the byte scan clears them.
#[test]
fn fast_path_skips_the_parser() {
    let hot: [&[u8]; 8] = [
        b"SELECT c FROM sbtest1 WHERE id=?",
        b"SELECT c FROM sbtest1 WHERE id=4711",
        b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100",
        b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 1 AND 100",
        b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
        b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
        b"select @@version_comment limit 1",
        b"SELECT * FROM information_schema.tables WHERE table_schema = 'x'",
    ];
    for sql in hot {
        assert!(
            !suspicious(sql, 0, Scan::Read),
            "{}",
            String::from_utf8_lossy(sql)
        );
        assert_eq!(classify(sql).target, Target::Standby);
    }
    // Writes with nothing to pin are decided by their first keyword alone.
    assert!(!suspicious(
        b"UPDATE sbtest1 SET k=k+1 WHERE id=5",
        6,
        Scan::SideEffects
    ));
    assert!(!suspicious(
        b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (1, 2, 'a', 'b')",
        6,
        Scan::SideEffects
    ));
}

#[test]
fn pin_reason_names() {
    let names: std::collections::BTreeSet<&str> = PinReason::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(names.len(), PinReason::ALL.len());
    assert_eq!(PinReason::SqlLogBin.name(), "sql_log_bin");
    assert!(PinReason::ALL.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(Target::default(), Target::Primary);
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What any classification must respect.
fn invariants(sql: &[u8], st: &Statement) {
    if st.target == Target::Standby {
        let clean =
            st.pins.is_empty() && !st.same_connection && st.kill.is_none() && st.changes.is_empty();
        assert!(
            clean && !st.begins_transaction && !st.is_set_only,
            "{:?} -> {st:?}",
            String::from_utf8_lossy(sql)
        );
    }
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..10_000 {
        let len = rng.below(80);
        let sql: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        invariants(&sql, &classify(&sql));
        invariants(&sql, &classify_multi(&sql));
        let (_, off) = hint::parse(&sql);
        assert!(off <= sql.len());
    }
}

#[test]
fn fuzz_sql_fragments() {
    const FRAGS: [&str; 48] = [
        "SELECT ",
        "SET ",
        "USE ",
        "KILL ",
        "SHOW ",
        "EXPLAIN ",
        "WITH x AS (",
        ")",
        "(",
        "@",
        "@@",
        "@a",
        ":=",
        "=",
        "'",
        "\"",
        "`",
        "\\",
        "/*!",
        "/*M!",
        "/*",
        "*/",
        "-- ",
        "#",
        "\n",
        ";",
        ",",
        "FOR ",
        "UPDATE ",
        "INTO ",
        "GET_LOCK(",
        "dolt_checkout(",
        "NAMES ",
        "SESSION ",
        "GLOBAL ",
        "TRANSACTION ",
        "1",
        "x",
        "\u{ff}",
        "\u{0}",
        " ",
        "LOCK ",
        "IN ",
        "XA ",
        "START ",
        "/* switchyard: standby */",
        "autocommit",
        "LAST_INSERT_ID()",
    ];
    let mut rng = XorShift(42);
    for _ in 0..10_000 {
        let n = rng.below(12);
        let mut sql: Vec<u8> = (0..n)
            .flat_map(|_| FRAGS[rng.below(FRAGS.len())].bytes())
            .collect();
        if rng.below(4) == 0 {
            sql.push(0xff);
        }
        invariants(&sql, &classify(&sql));
        invariants(&sql, &classify_multi(&sql));
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    let mut sql = b"SELECT ".to_vec();
    sql.extend(std::iter::repeat_n(b'(', 5000));
    sql.extend_from_slice(b"1 FROM t WHERE note = 'for'");
    assert_eq!(classify(&sql).target, Target::Primary);
    let long = format!("SELECT c FROM t WHERE id IN ({}1)", "1, ".repeat(20_000));
    assert_eq!(classify(long.as_bytes()).target, Target::Standby);
}

#[test]
fn routes_follow_the_statement_and_the_session() {
    let free = Context {
        autocommit: true,
        ..Context::default()
    };
    let r = |sql: &str, ctx: Context| route(&classify(sql.as_bytes()), &ctx);
    assert_eq!(r("SELECT 1", free), Target::Standby);
    assert_eq!(r("INSERT INTO t VALUES (1)", free), Target::Primary);
    assert_eq!(
        r("SET time_zone = '+00:00'", free),
        Target::Standby,
        "replayed anywhere"
    );
    assert_eq!(r("SET @a = 1", free), Target::Primary);
    assert_eq!(
        r("SELECT FOUND_ROWS()", free),
        Target::Primary,
        "same connection"
    );
    assert_eq!(r("START TRANSACTION READ ONLY", free), Target::Standby);
    assert_eq!(r("BEGIN", free), Target::Primary);
    for ctx in [
        Context {
            primary_only: true,
            ..free
        },
        Context {
            autocommit: false,
            ..free
        },
        Context {
            in_transaction: true,
            ..free
        },
        Context {
            recent_untracked_write: true,
            ..free
        },
    ] {
        assert_eq!(r("SELECT 1", ctx), Target::Primary, "{ctx:?}");
        assert_eq!(r("USE sbtest", ctx), Target::Primary, "{ctx:?}");
        assert_eq!(
            r("START TRANSACTION READ ONLY", ctx),
            Target::Primary,
            "{ctx:?}"
        );
    }
}

/// Reads the fast path cannot clear and sqlparser cannot judge are marked (the parse
/// fallbacks metric); hot reads and statements decided by keyword are not.
#[test]
fn parse_fallbacks_are_marked() {
    for sql in [
        &b"SELECT /*!40001 SQL_NO_CACHE */ * FROM t"[..],
        b"SELECT * FROM t FOR SYSTEM_TIME ALL",
        b"SELECT FROM WHERE FOR",
    ] {
        assert!(classify(sql).unparsed, "{}", String::from_utf8_lossy(sql));
    }
    for sql in [
        &b"SELECT * FROM t WHERE id = 1"[..],
        b"INSERT INTO t VALUES (1)",
        b"SELECT * FROM t FOR UPDATE",
    ] {
        assert!(!classify(sql).unparsed, "{}", String::from_utf8_lossy(sql));
    }
}
