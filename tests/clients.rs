//! Real client programs through an in-process switchyard against the local cluster: the
//! `mariadb` CLI, PyMySQL (tests/clients/pymysql_check.py), sysbench, and many idle
//! mysql_async connections sharing few backend connections. External programs reach only
//! loopback; every wait is bounded in count and time.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use switchyard::app::Running;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What an external program did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `prog args` (optionally feeding `stdin`) on a blocking thread; kills it and fails
/// the test when it runs past `limit`.
async fn run_program(prog: &str, args: Vec<String>, stdin: Option<String>, limit: Duration) -> Ran {
    let prog = prog.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&prog)
            .args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {prog}: {e}"));
        if let Some(text) = stdin {
            let mut w = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = w.write_all(text.as_bytes());
            });
        }
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let err_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let (o, e) = (out_t.join().unwrap(), err_t.join().unwrap());
                panic!("{prog} {args:?} ran past {limit:?}\nstdout:\n{o}\nstderr:\n{e}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ran {
            code: status.code(),
            stdout: out_t.join().unwrap(),
            stderr: err_t.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

fn mariadb_args(port: u16, user: &str, password: &str) -> Vec<String> {
    [
        "--no-defaults",
        "--protocol=TCP",
        "-h127.0.0.1",
        &format!("-P{port}"),
        &format!("-u{user}"),
        &format!("-p{password}"),
        "-Dsbtest",
        "--connect-timeout=10",
        "-N",
        "-B",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The tab-separated fields of the output lines whose first field is `tag`.
fn tagged<'a>(out: &'a str, tag: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[0] == tag)
        .map(|f| f[1..].to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_routes_and_relays() {
    let p = start_default().await;
    let pid = primary_id().await.to_string();
    let port = p.listen.port();
    let standby_ids = [
        server_id_of(STANDBYS[0]).await.to_string(),
        server_id_of(STANDBYS[1]).await.to_string(),
    ];

    // one -e batch: the CLI sends the statements one by one on one connection
    let batch = "SELECT 'sid', @@server_id; \
        SELECT 'cast', CAST('x' AS SIGNED); \
        SHOW WARNINGS; \
        SELECT 'rows', n, s, x FROM (SELECT 1 AS n, 'a' AS s, NULL AS x UNION ALL SELECT 2, NULL, 'b' \
            UNION ALL SELECT 3, 'c', 'd') t ORDER BY n; \
        BEGIN; SELECT 'txn', @@server_id; COMMIT; \
        SELECT 'after', @@server_id; \
        SELECT 7 INTO @v; SELECT 'v', @v; \
        SET @a := 5; SELECT 'a', @@server_id, @a; \
        SELECT 'end', 1";
    let mut args = mariadb_args(port, "strict", "strict");
    args.extend(["-e".to_string(), batch.to_string()]);
    let r = run_program("mariadb", args, None, Duration::from_secs(60)).await;
    let ctx = format!("{r:?}");
    assert!(r.ok(), "the batch failed: {ctx}");
    let out = &r.stdout;

    let sid = tagged(out, "sid");
    assert_eq!(sid.len(), 1, "{ctx}");
    assert!(
        standby_ids.contains(&sid[0][0].to_string()),
        "a plain read did not run on a standby (primary {pid}): {ctx}"
    );
    assert_eq!(tagged(out, "cast"), vec![vec!["0"]], "{ctx}");
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.starts_with("Warning\t") || l.starts_with("Note\t") || l.starts_with("Error\t")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "SHOW WARNINGS after the CAST: {ctx}");
    let w: Vec<&str> = warnings[0].split('\t').collect();
    assert_eq!(&w[..2], &["Warning", "1292"], "{ctx}");
    assert!(w[2].contains("'x'"), "{ctx}");
    assert_eq!(
        tagged(out, "rows"),
        vec![
            vec!["1", "a", "NULL"],
            vec!["2", "NULL", "b"],
            vec!["3", "c", "d"]
        ],
        "several rows with NULLs: {ctx}"
    );
    assert_eq!(
        tagged(out, "txn"),
        vec![vec![pid.as_str()]],
        "a read inside BEGIN..COMMIT: {ctx}"
    );
    let after = tagged(out, "after");
    assert_eq!(after.len(), 1, "{ctx}");
    assert!(
        standby_ids.contains(&after[0][0].to_string()),
        "after COMMIT reads go back to standbys: {ctx}"
    );
    assert_eq!(
        tagged(out, "v"),
        vec![vec!["7"]],
        "SELECT .. INTO @v then @v: {ctx}"
    );
    assert_eq!(
        tagged(out, "a"),
        vec![vec![pid.as_str(), "5"]],
        "SET @a pins to the primary: {ctx}"
    );
    assert_eq!(tagged(out, "end"), vec![vec!["1"]], "{ctx}");

    // a script on stdin, with comments and a statement over several lines
    let script = "-- a comment\nSELECT 'one',\n  1 + 1;\n/* block */ SELECT 'two', @@server_id;\n\
        CREATE TEMPORARY TABLE tmp_cli (x INT);\nINSERT INTO tmp_cli VALUES (1), (2), (3);\n\
        SELECT 'tmp', COUNT(*), @@server_id FROM tmp_cli;\n";
    let r = run_program(
        "mariadb",
        mariadb_args(port, "strict", "strict"),
        Some(script.into()),
        Duration::from_secs(60),
    )
    .await;
    let ctx = format!("{r:?}");
    assert!(r.ok(), "the stdin script failed: {ctx}");
    assert_eq!(tagged(&r.stdout, "one"), vec![vec!["2"]], "{ctx}");
    let two = tagged(&r.stdout, "two");
    assert_eq!(two.len(), 1, "{ctx}");
    assert!(standby_ids.contains(&two[0][0].to_string()), "{ctx}");
    assert_eq!(
        tagged(&r.stdout, "tmp"),
        vec![vec!["3", pid.as_str()]],
        "a temporary table as strict lives on the primary: {ctx}"
    );

    // a wrong password
    let mut args = mariadb_args(port, "strict", "wrong");
    args.extend(["-e".to_string(), "SELECT 1".to_string()]);
    let r = run_program("mariadb", args, None, Duration::from_secs(60)).await;
    assert!(!r.ok(), "{r:?}");
    assert!(r.stderr.contains("ERROR 1045"), "{r:?}");
    assert!(r.stdout.trim().is_empty(), "{r:?}");
    p.shutdown();

    // the default configuration: a transaction that reads, then writes, then reads (its
    // reads are identical on every server, whatever runs them first); after the write it
    // is on the primary, and as `strict` the write itself only succeeds there
    let p = start_default().await;
    let port = p.listen.port();
    let t = table("cli");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    d.query_drop(format!("INSERT INTO {t} (v) VALUES (1), (2)"))
        .await
        .unwrap();
    wait_replicated(&t).await;
    for host in STANDBYS {
        let mut ok = false;
        for _ in 0..100 {
            if standby_count(host, &format!("SELECT COUNT(*) FROM sbtest.{t}")).await == Some(2) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "the rows of {t} did not reach {host}");
    }
    let batch = format!(
        "BEGIN; SELECT 'r1', COUNT(*), SUM(v) FROM {t}; INSERT INTO {t} (v) VALUES (3); \
         SELECT 'r2', COUNT(*), SUM(v), @@server_id FROM {t}; COMMIT; \
         BEGIN; SELECT 'r3', v FROM {t} WHERE v = 3; DELETE FROM {t} WHERE v = 3; ROLLBACK; \
         SELECT 'end', 1"
    );
    let mut args = mariadb_args(port, "strict", "strict");
    args.extend(["-e".to_string(), batch]);
    let r = run_program("mariadb", args, None, Duration::from_secs(60)).await;
    let ctx = format!("{r:?}");
    d.query_drop(format!("DROP TABLE {t}")).await.ok();
    assert!(r.ok(), "the transaction batch failed: {ctx}");
    assert_eq!(tagged(&r.stdout, "r1"), vec![vec!["2", "3"]], "{ctx}");
    assert_eq!(
        tagged(&r.stdout, "r2"),
        vec![vec!["3", "6", pid.as_str()]],
        "{ctx}"
    );
    assert_eq!(tagged(&r.stdout, "r3"), vec![vec!["3"]], "{ctx}");
    assert_eq!(tagged(&r.stdout, "end"), vec![vec!["1"]], "{ctx}");
    p.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_autocommit_off_multi_statements_binary_and_lastrowid() {
    let p = start_default().await;
    let pid = primary_id().await;
    let t = table("pymysql");
    let script = format!("{ROOT}/tests/clients/pymysql_check.py");
    let r = run_program(
        "python3",
        vec![script, p.listen.port().to_string(), t.clone()],
        None,
        Duration::from_secs(120),
    )
    .await;
    let ctx = format!("{r:?}");
    let line = r
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line: {ctx}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {ctx}"));
    assert_eq!(v["failures"], serde_json::json!([]), "{ctx}");
    assert_eq!(v["ok"], serde_json::json!(true), "{ctx}");
    assert!(r.ok(), "{ctx}");
    // the script's own primary id agrees with ours, and its reads saw it
    assert_eq!(v["facts"]["primary_id"], serde_json::json!(pid), "{ctx}");
    assert_eq!(
        v["facts"]["autocommit0_read_on_primary"],
        serde_json::json!(pid),
        "{ctx}"
    );
    // the table is gone
    let n: u32 = direct(PRIMARY)
        .await
        .query_first(format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest' AND TABLE_NAME='{t}'"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the script left {t} behind");
    p.shutdown();
}

/// The numbers after `name:` in sysbench's report (`transactions:`, `ignored errors:`).
fn sysbench_count(out: &str, name: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.trim_start().starts_with(name))?;
    line.trim_start()[name.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn standby_count(host: &str, q: &str) -> Option<u64> {
    let mut c = direct(host).await;
    let r = c.query_first::<u64, _>(q).await.ok().flatten();
    c.disconnect().await.ok();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_workloads_run_without_errors() {
    ensure_cluster();
    let prep = run_program(
        "bash",
        vec![format!("{ROOT}/tests/clients/sysbench_prepare.sh")],
        None,
        Duration::from_secs(300),
    )
    .await;
    assert!(prep.ok(), "preparing sbtest_ci: {prep:?}");
    // both standbys hold the tables (bounded: 60 s)
    for host in STANDBYS {
        let mut ok = false;
        for _ in 0..300 {
            let a = standby_count(host, "SELECT COUNT(*) FROM sbtest_ci.sbtest1").await;
            let b = standby_count(host, "SELECT COUNT(*) FROM sbtest_ci.sbtest2").await;
            if a == Some(2000) && b == Some(2000) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            ok,
            "sbtest_ci.sbtest1..2 did not reach {host} with 2000 rows"
        );
    }

    let p = start_default().await;
    let port = p.listen.port();
    let stats = &p.shared.stats;
    for workload in ["oltp_read_write", "oltp_read_only", "oltp_point_select"] {
        for ps in ["auto", "disable"] {
            // oltp_read_only runs without BEGIN..COMMIT, as proxies are compared: plain
            // reads go to the standbys (transactions stay on the primary; optimistic
            // transactions are opt-in)
            let skip_trx = if workload == "oltp_read_only" {
                "--skip_trx=on"
            } else {
                "--skip_trx=off"
            };
            let args: Vec<String> = [
                workload,
                skip_trx,
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={port}"),
                "--mysql-user=strict",
                "--mysql-password=strict",
                "--mysql-db=sbtest_ci",
                "--tables=2",
                "--table-size=2000",
                "--threads=4",
                "--time=10",
                "--report-interval=0",
                // debug output names each error sysbench ignored (and retried)
                "--verbosity=5",
                &format!("--db-ps-mode={ps}"),
                "run",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let reads0 = stats.standby_reads.load(Ordering::Relaxed);
            let prim0 = stats.primary_statements.load(Ordering::Relaxed);
            let r = run_program("sysbench", args, None, Duration::from_secs(60)).await;
            let reads = stats.standby_reads.load(Ordering::Relaxed) - reads0;
            let prim = stats.primary_statements.load(Ordering::Relaxed) - prim0;
            let ctx = format!("{workload} --db-ps-mode={ps}: standby_reads +{reads}, primary_statements +{prim}\n{r:?}");
            assert!(r.ok(), "sysbench failed: {ctx}");
            let trx = sysbench_count(&r.stdout, "transactions:")
                .unwrap_or_else(|| panic!("no transactions: line: {ctx}"));
            let ignored = sysbench_count(&r.stdout, "ignored errors:")
                .unwrap_or_else(|| panic!("no ignored errors: line: {ctx}"));
            assert!(trx > 0, "{ctx}");
            eprintln!("{workload} ps={ps}: {trx} transactions, {ignored} ignored errors, standby_reads +{reads}, primary_statements +{prim}");
            for l in r
                .stdout
                .lines()
                .chain(r.stderr.lines())
                .filter(|l| l.contains("Ignoring error"))
            {
                assert!(
                    l.contains("Ignoring error 1213 ") || l.contains("Ignoring error 1205 "),
                    "only deadlocks and lock wait timeouts are retried: {l}\n{ctx}"
                );
            }
            if workload != "oltp_read_write" {
                assert_eq!(ignored, 0, "{ctx}");
                assert!(
                    reads > 0 && reads >= 10 * prim,
                    "reads did not go to standbys: {ctx}"
                );
            }
        }
    }
    p.shutdown();
}

fn backend_conns(p: &Running) -> (usize, u64) {
    let snap = p.shared.topology.full();
    let held = snap
        .entries
        .iter()
        .map(|e| {
            let pools = p.shared.pools_of(&e.node);
            pools.idle_count() + pools.in_use_count()
        })
        .sum();
    let opened = snap
        .entries
        .iter()
        .flat_map(|e| {
            p.shared
                .pools_of(&e.node)
                .user_pools()
                .iter()
                .map(|u| u.stats.opened.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        })
        .sum();
    (held, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_clients_share_few_backend_connections() {
    // 20 per (backend, user), so that the caps alone cannot keep the total under 20
    // (3 backends x 20 = 60)
    let p = start(config(|c| {
        c.pool.max_per_user = 20;
        c.pool.max_per_backend = 60;
    }))
    .await;
    const CLIENTS: usize = 200;
    const BATCH: usize = 8;
    let mut conns = Vec::with_capacity(CLIENTS);
    for b in 0..CLIENTS / BATCH {
        let mut tasks = Vec::new();
        for _ in 0..BATCH {
            let o = opts(&p, "app");
            tasks.push(tokio::spawn(async move {
                let mut c = mysql_async::Conn::new(o).await?;
                let one: Option<u32> = c.query_first("SELECT 1").await?;
                Ok::<_, mysql_async::Error>((c, one))
            }));
        }
        let done = tokio::time::timeout(Duration::from_secs(30), futures_join(tasks))
            .await
            .unwrap_or_else(|_| panic!("batch {b} did not connect within 30 s"));
        for r in done {
            let (c, one) = r
                .expect("connect task")
                .unwrap_or_else(|e| panic!("batch {b}: {e}"));
            assert_eq!(one, Some(1));
            conns.push(c);
        }
    }
    assert_eq!(conns.len(), CLIENTS);
    let (held, opened) = backend_conns(&p);
    assert!(
        held <= 20,
        "{CLIENTS} idle clients hold {held} backend connections (opened {opened})"
    );
    assert!(held >= 1, "no pooled backend connection at all?");
    eprintln!("{CLIENTS} idle clients: {held} backend connections held, {opened} opened");

    // every client runs 5 more queries, all at once
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for k in 0..5 {
                let one: Option<u32> = c
                    .query_first("SELECT 1")
                    .await
                    .unwrap_or_else(|e| panic!("client {i} query {k}: {e}"));
                assert_eq!(one, Some(1), "client {i} query {k}");
            }
            c
        }));
    }
    let conns = tokio::time::timeout(Duration::from_secs(60), futures_join(tasks))
        .await
        .expect("200 clients x 5 queries within 60 s");
    let conns: Vec<_> = conns.into_iter().map(|r| r.expect("client task")).collect();
    let (held, opened) = backend_conns(&p);
    assert!(
        opened <= 100,
        "the pools opened {opened} backend connections (holding {held})"
    );
    eprintln!("after 200 x 5 concurrent queries: {held} backend connections held, {opened} opened");
    for c in conns {
        c.disconnect().await.ok();
    }
    p.shutdown();
}

/// Awaits every task in order.
async fn futures_join<T>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// The client matrix (tests/clients/matrix): PyMySQL, mysql-connector-python pure and with
/// its C extension, mysqlclient, node mysql2 (query and execute) and MariaDB Connector/J,
/// each run through switchyard and straight against the primary; every observation
/// (values, types, column metadata, OK packet fields, errors, warnings) must be equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_matrix_matches_the_primary() {
    let p = start_default().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/matrix/run.sh");
    let args = vec![
        script.to_string(),
        format!("127.0.0.1:{}", p.listen.port()),
        format!("{PRIMARY}:3306"),
    ];
    let r = run_program("bash", args, None, Duration::from_secs(600)).await;
    let failed: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("CHECK ") && l.contains(" FAIL"))
        .collect();
    let last = r.stdout.lines().last().unwrap_or_default();
    eprintln!("client matrix: {last}");
    assert!(
        r.ok() && failed.is_empty() && last.ends_with(" passed, 0 failed"),
        "client matrix differs from the primary:\n{}\n{}\nstderr: {}",
        failed.join("\n"),
        last,
        r.stderr
    );
    p.shutdown();
}
