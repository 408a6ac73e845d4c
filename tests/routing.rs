//! Routing against the real local cluster, checked with @@server_id as `strict` (whose
//! writes on a replica fail with 1290): reads on standbys, everything with side effects
//! on the primary, session pins, same-connection statements.

mod common;

use common::*;
use mysql_async::prelude::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_go_to_standbys_and_writes_to_the_primary() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    for _ in 0..10 {
        let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
        assert_ne!(s, pid, "a plain read ran on the primary");
    }
    let t = table("rw");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO {t} (v) VALUES (1)"))
        .await
        .expect("write as strict reached the primary");
    // applied on both standbys: the read after COMMIT need not fall back to the primary
    wait_rows(&t, 1).await;
    c.query_drop("BEGIN").await.unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(s, pid, "a read inside a transaction left the primary");
    c.query_drop("COMMIT").await.unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_ne!(s, pid, "after COMMIT reads go back to standbys");
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_effects_and_locking_reads_run_on_the_primary() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    let t = table("lock");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1, 10)"))
        .await
        .unwrap();
    wait_rows(&t, 1).await;
    let cases = [
        format!("SELECT @@server_id FROM {t} LIMIT 1 FOR UPDATE"),
        format!("SELECT @@server_id FROM (SELECT id FROM {t} WHERE id = 1 FOR UPDATE) x"),
        format!("SELECT @@server_id FROM {t} LIMIT 1 LOCK IN SHARE MODE"),
        format!("WITH x AS (SELECT id FROM {t}) SELECT @@server_id FROM x LIMIT 1"),
    ];
    for q in &cases {
        let s: u32 = c.query_first(q.as_str()).await.unwrap().unwrap();
        if q.starts_with("WITH") {
            assert_ne!(s, pid, "a plain CTE read is a read: {q}");
        } else {
            assert_eq!(s, pid, "{q}");
        }
    }
    let (s, got): (u32, i32) = c
        .query_first("SELECT @@server_id, GET_LOCK('sy_test', 0)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s, got), (pid, 1));
    // GET_LOCK pins the session: the lock stays with it, reads stay on the primary
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(
        s, pid,
        "a session holding a named lock stays on its connection"
    );
    let held: Option<i64> = c
        .query_first("SELECT IS_USED_LOCK('sy_test') = CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held, Some(1));
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_variables_and_temp_tables_pin_the_session() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("SET @a := 5").await.unwrap();
    for _ in 0..5 {
        let (s, a): (u32, i64) = c
            .query_first("SELECT @@server_id, @a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((s, a), (pid, 5));
    }
    let mut d = connect(&p, "strict").await;
    d.query_drop("CREATE TEMPORARY TABLE tmp_sy (x INT)")
        .await
        .unwrap();
    d.query_drop("INSERT INTO tmp_sy VALUES (1), (2)")
        .await
        .unwrap();
    for _ in 0..3 {
        let n: u32 = d
            .query_first("SELECT COUNT(*) FROM tmp_sy")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 2);
    }
    let pins = p.shared.stats.pins.lock().clone();
    assert!(
        pins.get("user_variable").copied().unwrap_or(0) >= 1,
        "{pins:?}"
    );
    assert!(
        pins.get("temp_table").copied().unwrap_or(0) >= 1,
        "{pins:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_off_sends_everything_to_the_primary() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    let t = table("ac");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    c.query_drop("SET autocommit = 0").await.unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(s, pid);
    c.query_drop(format!("INSERT INTO {t} (v) VALUES (7)"))
        .await
        .unwrap();
    wait_replicated(&t).await;
    // uncommitted: another session must not see it
    let mut other = connect(&p, "strict").await;
    let n: u32 = other
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "an open transaction leaked");
    c.query_drop("COMMIT").await.unwrap();
    let ac: i64 = c.query_first("SELECT @@autocommit").await.unwrap().unwrap();
    assert_eq!(
        ac, 0,
        "autocommit=0 is replayed on every connection the session uses"
    );
    c.query_drop("SET autocommit = 1").await.unwrap();
    let n: u32 = direct(PRIMARY)
        .await
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "the committed row is on the primary");
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_insert_id_is_right_under_concurrent_load() {
    let p = start(config(|c| c.pool.max_per_user = 4)).await;
    let t = table("lid");
    let mut c = connect(&p, "strict").await;
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let opts = opts(&p, "strict");
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            for i in 0..40 {
                c.query_drop(format!("INSERT INTO {t} (v) VALUES ({w})"))
                    .await
                    .unwrap();
                let want = c.last_insert_id().unwrap();
                let got: u64 = c
                    .query_first("SELECT LAST_INSERT_ID()")
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(got, want, "worker {w} insert {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_and_call_with_several_result_sets() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    let mut r = c
        .query_iter("SELECT 1; SELECT 2, 3; SELECT @@server_id")
        .await
        .unwrap();
    let a: Vec<u32> = r.collect().await.unwrap();
    let b: Vec<(u32, u32)> = r.collect().await.unwrap();
    let s: Vec<u32> = r.collect().await.unwrap();
    drop(r);
    assert_eq!((a, b), (vec![1], vec![(2, 3)]));
    assert_ne!(s[0], pid, "a batch of plain reads may use a standby");
    let proc_name = format!("p_two_{}", std::process::id());
    c.query_drop(format!(
        "CREATE PROCEDURE {proc_name}() BEGIN SELECT 1 AS a; SELECT @@server_id AS b; END"
    ))
    .await
    .unwrap();
    let mut r = c.query_iter(format!("CALL {proc_name}()")).await.unwrap();
    let a: Vec<u32> = r.collect().await.unwrap();
    let b: Vec<u32> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(a, vec![1]);
    assert_eq!(b, vec![pid], "CALL runs on the primary");
    let after: u32 = c.query_first("SELECT 42").await.unwrap().unwrap();
    assert_eq!(
        after, 42,
        "the connection is in sync after several result sets"
    );
    c.query_drop(format!("DROP PROCEDURE {proc_name}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_variables_follow_the_session_across_connections() {
    let p = start_default().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+03:00'")
        .await
        .unwrap();
    c.query_drop("SET NAMES latin1").await.unwrap();
    for _ in 0..6 {
        let (m, tz, cs): (String, String, String) = c
            .query_first("SELECT @@sql_mode, @@time_zone, @@character_set_client")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.as_str(), tz.as_str(), cs.as_str()),
            ("ANSI_QUOTES", "+03:00", "latin1")
        );
    }
    // another client on the same pools must not inherit them
    let mut d = connect(&p, "strict").await;
    for _ in 0..6 {
        let tz: String = d.query_first("SELECT @@time_zone").await.unwrap().unwrap();
        assert_ne!(tz, "+03:00", "session state leaked to another client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_run_on_standbys_and_move_when_they_write() {
    // optimistic transactions are opt-in
    let p = start(config(|c| c.routing.optimistic_transactions = true)).await;
    let stats = &p.shared.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let mut c = connect(&p, "strict").await;
    let t = table("otx");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1, 10), (2, 20)"))
        .await
        .unwrap();
    wait_rows(&t, 2).await;
    let reads0 = load(&stats.standby_reads);
    let primary0 = load(&stats.primary_statements);
    c.query_drop("BEGIN").await.unwrap();
    let v: u32 = c
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap()
        .unwrap();
    let n: u32 = c
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!((v, n), (10, 2));
    assert_eq!(
        load(&stats.standby_reads) - reads0,
        3,
        "two reads and the COMMIT ran on a standby"
    );
    assert_eq!(
        load(&stats.primary_statements) - primary0,
        0,
        "nothing of it on the primary"
    );
    // a transaction that reads, then writes: it moves to the primary invisibly
    let moved0 = load(&stats.optimistic_moved);
    c.query_drop("START TRANSACTION").await.unwrap();
    let v: u32 = c
        .query_first(format!("SELECT v FROM {t} WHERE id = 2"))
        .await
        .unwrap()
        .unwrap();
    c.query_drop(format!("UPDATE {t} SET v = {} WHERE id = 2", v + 1))
        .await
        .unwrap();
    let v2: u32 = c
        .query_first(format!("SELECT v FROM {t} WHERE id = 2"))
        .await
        .unwrap()
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!((v, v2), (20, 21));
    assert_eq!(load(&stats.optimistic_moved) - moved0, 1);
    let on_primary: u32 = direct(PRIMARY)
        .await
        .query_first(format!("SELECT v FROM {t} WHERE id = 2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_primary, 21, "the write committed on the primary");
    // a transaction that asks for server state opens on the primary
    let pid = primary_id().await;
    c.query_drop("BEGIN").await.unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(s, pid);
    // an empty transaction needs no backend at all
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_drained_through_the_admin_port_gets_no_new_leases() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = start_default().await;
    let post = |path: String| async move {
        let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let n2 = server_id_of(STANDBYS[0]).await;
    let n3 = server_id_of(STANDBYS[1]).await;
    assert!(post("/backends/n2/drain".into())
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(post("/backends/nope/drain".into())
        .await
        .starts_with("HTTP/1.1 404"));
    wait_topology(&p, "n2 drained", |s| {
        s.entries.iter().any(|e| e.key == "n2" && e.drained)
    })
    .await;
    let mut c = connect(&p, "strict").await;
    for _ in 0..8 {
        let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
        assert_eq!(s, n3, "the drained standby got no reads");
    }
    assert!(post("/backends/n2/undrain".into())
        .await
        .starts_with("HTTP/1.1 200"));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        seen.insert(
            c.query_first::<u32, _>("SELECT @@server_id")
                .await
                .unwrap()
                .unwrap(),
        );
        if seen.contains(&n2) {
            break;
        }
    }
    assert!(seen.contains(&n2), "back in the rotation");
}

/// `GET /sessions` lists client sessions with their proxy id (the one KILL takes), user,
/// client address, schema, state and pins, and the backend connection a held session keeps
/// (its name and thread id, as that backend's SHOW PROCESSLIST shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_lists_sessions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = start_default().await;
    let get = || async {
        let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
        s.write_all(b"GET /sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let mut c = connect(&p, "strict").await;
    let id: u32 = c
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    let backend_thread: u32 = c
        .query_first("SELECT CONNECTION_ID() + 0")
        .await
        .unwrap()
        .unwrap();
    // the view is updated just after the reply is sent: look until it shows the state
    let me_in = |state: &'static str| {
        let get = &get;
        async move {
            let mut me = serde_json::Value::Null;
            for _ in 0..200 {
                let v = get().await;
                me = v["sessions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["id"] == id)
                    .unwrap_or_else(|| panic!("session {id} not listed: {v}"))
                    .clone();
                if me["state"] == state {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            me
        }
    };
    let me = me_in("in transaction").await;
    assert_eq!(me["user"], "strict");
    assert_eq!(me["client"], "127.0.0.1");
    assert_eq!(me["tls"], false);
    assert_eq!(me["schema"], "sbtest");
    assert_eq!(me["state"], "in transaction", "{me}");
    assert_eq!(me["backend"], "n1", "{me}");
    assert_eq!(me["backend_thread_id"], backend_thread, "{me}");
    c.query_drop("COMMIT").await.unwrap();
    let me = me_in("idle").await;
    assert_eq!(
        (me["state"].as_str(), me["backend"].is_null()),
        (Some("idle"), true),
        "{me}"
    );
    drop(c);
    p.shutdown();
}

/// `GET /metrics` parses as Prometheus text with a real parser (Python's prometheus_client):
/// `switchyard_` families, the statement latency histogram, statements counted by route and
/// command, errors by origin and code, parse fallbacks, pool closes by reason, and the
/// topology's failover and write-hold families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_routes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = start_default().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("SELECT 1").await.unwrap();
    c.query_drop("/* switchyard: primary */ SELECT 1")
        .await
        .unwrap();
    c.exec_drop("SELECT ?", (1,)).await.unwrap();
    // a server error (1146), a proxy error (1094: no such session), a read sqlparser cannot
    // judge (an executable comment)
    assert!(c.query_drop("SELECT * FROM no_such_table_m").await.is_err());
    assert!(c.query_drop("KILL 987654").await.is_err());
    c.query_drop("SELECT /*!50000 1 */").await.unwrap();
    c.query_drop("DO GET_LOCK('metrics_m', 0)").await.unwrap();
    c.query_drop("DO RELEASE_LOCK('metrics_m')").await.unwrap();
    let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    let path = std::env::temp_dir().join(format!("switchyard-metrics-{}.txt", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let check = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families as parse
fams = [f for f in parse(open(sys.argv[1]).read()) if f.name.startswith("switchyard_")]
def samples(name):
    return [s for f in fams for s in f.samples if s.name == name]
def labels(name, key):
    return sorted({s.labels.get(key) for s in samples(name) if s.value > 0 and key in s.labels})
print(json.dumps({
    "families": len(fams),
    "histograms": sorted(f.name for f in fams if f.type == "histogram"),
    "routes": labels("switchyard_statements_total", "route"),
    "commands": labels("switchyard_statements_total", "command"),
    "errors": sorted(s.labels["origin"] + ":" + s.labels["code"] for s in samples("switchyard_errors_total") if s.value > 0),
    "fallbacks": sum(s.value for s in samples("switchyard_parse_fallbacks_total")),
    "close_reasons": sorted({s.labels["reason"] for s in samples("switchyard_pool_connections_closed_total")}),
    "names": sorted({f.name for f in fams}),
}))
"#;
    let r = std::process::Command::new("python3")
        .args(["-c", check, path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        r.status.success(),
        "{}\n{body}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert!(v["families"].as_u64().unwrap() >= 20, "{v}\n{body}");
    let hist = strs("histograms");
    for h in [
        "switchyard_statement_duration_seconds",
        "switchyard_failover_hold_seconds",
        "switchyard_write_hold_seconds",
    ] {
        assert!(hist.iter().any(|x| x == h), "{h} missing: {hist:?}");
    }
    assert_eq!(strs("routes"), ["primary", "standby"], "{v}");
    assert_eq!(strs("commands"), ["execute", "query"], "{v}");
    let errors = strs("errors");
    assert!(errors.contains(&"server:1146".to_string()), "{v}");
    assert!(errors.contains(&"proxy:1094".to_string()), "{v}");
    assert!(v["fallbacks"].as_f64().unwrap() >= 1.0, "{v}");
    assert_eq!(
        strs("close_reasons"),
        ["broken", "evicted", "idle", "retired", "stale"],
        "{v}"
    );
    let names = strs("names");
    for n in [
        "switchyard_client_connections_accepted",
        "switchyard_failovers",
        "switchyard_topology_changes",
        "switchyard_write_hold_queue",
        "switchyard_write_holds",
        "switchyard_pool_lease_waits",
        "switchyard_pool_lease_timeouts",
        "switchyard_pins",
        "switchyard_build_info",
        "switchyard_backend_up",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing: {names:?}");
    }
    p.shutdown();
}

/// `GET /digests`: statements grouped by their text without literals, per user and schema,
/// with counts, latency, rows, errors and route; `POST /digests/reset` clears them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_group_statements_without_their_literals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = start_default().await;
    let http = |req: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
    };
    let mut c = connect(&p, "strict").await;
    for id in [5, 7, 11] {
        let _: Option<u32> = c
            .query_first(format!("SELECT {id} FROM DUAL WHERE {id} IN ({id}, 2, 3)"))
            .await
            .unwrap();
    }
    let _ = c.query_drop("SELECT no_such_column FROM DUAL").await;
    let body = http("GET /digests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let all = v["digests"].as_array().unwrap();
    let hit = all
        .iter()
        .find(|d| d["digest_text"] == "SELECT ? FROM DUAL WHERE ? IN (?)")
        .unwrap_or_else(|| panic!("no digest: {body}"));
    assert_eq!(
        (hit["count"].as_u64(), hit["rows"].as_u64()),
        (Some(3), Some(3)),
        "{hit}"
    );
    assert_eq!(
        (hit["user"].as_str(), hit["schema"].as_str()),
        (Some("strict"), Some("sbtest"))
    );
    assert_eq!(hit["route"], "standby");
    assert!(hit["max_us"].as_u64() >= hit["min_us"].as_u64());
    let bad = all
        .iter()
        .find(|d| d["digest_text"] == "SELECT no_such_column FROM DUAL")
        .unwrap_or_else(|| panic!("no digest for the failed statement: {body}"));
    assert_eq!(bad["errors"], 1);
    http(
        "POST /digests/reset HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = http("GET /digests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(body.trim(), r#"{"digests":[]}"#);
    drop(c);
    p.shutdown();
}

/// With `[admin] token` set, the mutating admin endpoints need it as a bearer token; the
/// read-only ones do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_admin_endpoints_need_the_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = start(config(|c| {
        c.admin.token = Some(switchyard::config::Secret::new("s3cret".to_string()));
    }))
    .await;
    let http = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let post = |auth: &str| {
        format!("POST /digests/reset HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    assert!(http(post("")).await.starts_with("HTTP/1.1 401"));
    assert!(http(post("Authorization: Bearer wrong\r\n"))
        .await
        .starts_with("HTTP/1.1 401"));
    assert!(http(post("Authorization: Bearer s3cret\r\n"))
        .await
        .starts_with("HTTP/1.1 200"));
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string();
    assert!(
        http(get).await.starts_with("HTTP/1.1 200"),
        "read-only needs no token"
    );
    p.shutdown();
}

/// A shutdown with a delay: readiness turns false at once, a new client is still accepted
/// and served during the delay, and the listener closes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_goes_first_and_clients_are_served_during_the_shutdown_delay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = start_default().await;
    let ready = || async {
        let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.starts_with("HTTP/1.1 200")
    };
    for _ in 0..100 {
        if ready().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready().await);
    let during = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let not_ready = !ready().await;
        let mut c = connect(&p, "strict").await;
        let one: u32 = c.query_first("SELECT 1").await.unwrap().unwrap();
        (not_ready, one)
    };
    let ((), (not_ready, one)) = tokio::join!(p.drain_after(Duration::from_millis(3000)), during);
    assert!(not_ready, "readiness turns false at once");
    assert_eq!(one, 1, "a new client is served during the delay");
    // the accept loop notices the end between two accepts: a connection racing it may
    // still get in, so a few tries (bounded) must find the port closed
    let mut refused = false;
    for _ in 0..20 {
        if tokio::net::TcpStream::connect(p.listen).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the listener is closed after the delay");
    p.shutdown();
}

/// A reload applies users and their passwords at once: a user taken out of the config can
/// no longer log in (sessions already in keep their login), one put back can; what needs a
/// restart is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_users_at_once() {
    let old = config(|_| {});
    let p = start(old.clone()).await;
    let mut kept = connect(&p, "strict").await;
    let mut without = old.clone();
    without.users.retain(|u| u.name != "strict");
    without.pool.max_per_user += 1;
    without.pool.statement_cache += 1;
    let restart = switchyard::app::reload(&p.shared, &old, &without);
    assert_eq!(
        restart,
        vec!["pool.statement_cache"],
        "what needs a restart is named (pool sizes do not)"
    );
    let refused = mysql_async::Conn::new(opts(&p, "strict")).await;
    let code = match refused {
        Err(mysql_async::Error::Server(e)) => e.code,
        other => panic!("strict still gets in: {other:?}"),
    };
    assert_eq!(code, 1045);
    let one: u32 = kept.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1, "a session already in keeps its login");
    let mut app = connect(&p, "app").await;
    app.query_drop("SELECT 1").await.unwrap();
    switchyard::app::reload(&p.shared, &without, &old);
    let mut back = connect(&p, "strict").await;
    back.query_drop("SELECT 1").await.unwrap();
    assert_eq!(
        p.shared
            .config_version
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    p.shutdown();
}

/// A reload resizes pools live: a larger pool serves a client that waited for a place at
/// once; a smaller one leaves the transaction in flight alone and takes its places back as
/// connections return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_pools_without_breaking_connections_in_use() {
    let one = config(|c| {
        c.pool.max_per_user = 1;
        c.pool.lease_timeout_ms = 300;
    });
    let p = start(one.clone()).await;
    let mut a = connect(&p, "app").await;
    let mut b = connect(&p, "app").await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("SELECT 1").await.unwrap();
    let primary = "/* switchyard: primary */ SELECT 1";
    let e = b.query_drop(primary).await.unwrap_err();
    assert_eq!(
        code(&e),
        Some(9001),
        "one place, held by a's transaction: {e}"
    );
    let mut two = one.clone();
    two.pool.max_per_user = 2;
    assert!(switchyard::app::reload(&p.shared, &one, &two).is_empty());
    b.query_drop(primary)
        .await
        .expect("the second place is there at once");
    // back to one while a's transaction still holds its connection: a goes on
    switchyard::app::reload(&p.shared, &two, &one);
    a.query_drop("SELECT 2").await.unwrap();
    let e = b.query_drop(primary).await.unwrap_err();
    assert_eq!(code(&e), Some(9001), "the smaller pool holds: {e}");
    a.query_drop("COMMIT").await.unwrap();
    b.query_drop(primary).await.expect("a's place came back");
    p.shutdown();
}

/// Static backends follow a reload: one taken out of the file leaves the topology (reads go
/// elsewhere), put back it returns; health settings restart the probes, which keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_static_backends_and_health_live() {
    let old = config(|_| {});
    let p = start(old.clone()).await;
    let keys = |p: &switchyard::app::Running| -> Vec<String> {
        let s = p.shared.topology.full();
        s.entries.iter().map(|e| e.key.clone()).collect()
    };
    assert_eq!(keys(&p), ["n1", "n2", "n3"]);
    let mut fewer = old.clone();
    fewer.backends.retain(|b| b.name != "n3");
    fewer.health.interval_ms = 300;
    switchyard::app::reload(&p.shared, &old, &fewer);
    wait_topology(&p, "n3 removed", |s| s.entries.len() == 2).await;
    assert_eq!(keys(&p), ["n1", "n2"]);
    let n3 = server_id_of("127.0.0.13").await;
    let mut c = connect(&p, "app").await;
    for _ in 0..10 {
        let id: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
        assert_ne!(id, n3, "a read went to the removed backend");
    }
    switchyard::app::reload(&p.shared, &fewer, &old);
    wait_topology(&p, "n3 back and probed healthy", |s| {
        s.entries.len() == 3 && s.entries.iter().all(|e| e.checked && e.healthy)
    })
    .await;
    p.shutdown();
}
