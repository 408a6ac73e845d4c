//! End to end: the real local MariaDB cluster behind pods in the fake apiserver, a writer
//! and readers running through switchyard while the test fails over the cluster several
//! times the way doltclusterctl does (every pod labelled standby, the role moved with
//! `scripts/local-cluster.sh failover --kill-connections`, then the new primary labelled).
//! No read fails, every acknowledged write is on the final primary, writes in the gap are
//! held and then complete, a transaction in flight is replayed on the new primary (or,
//! when its replies would differ, lost with 1213), and idle clients stay usable. It ends with 127.0.0.11 primary.
//! Run it alone: it moves the primary under every other test's feet.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fake_k8s::FakeK8s;
use common::*;
use mysql_async::prelude::*;
use parking_lot::Mutex;

const PODS: [(&str, &str, &str); 3] = [
    ("dolt-0", "127.0.0.11", "n1"),
    ("dolt-1", "127.0.0.12", "n2"),
    ("dolt-2", "127.0.0.13", "n3"),
];
const ROLE: &str = "dolthub.com/cluster_role";

/// Runs scripts/local-cluster.sh with `args` (bounded), panicking on failure.
async fn cluster(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("120")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/local-cluster.sh"
            ))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "local-cluster.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cluster's current primary address, asked of the servers themselves.
async fn current_primary() -> &'static str {
    for (_, ip, _) in PODS {
        let ro: Option<u64> = direct(ip)
            .await
            .query_first("SELECT @@read_only")
            .await
            .unwrap();
        if ro == Some(0) {
            return ip;
        }
    }
    panic!("no server is writable");
}

#[derive(Default)]
struct Record {
    acked: Vec<String>,
    write_errors: Vec<String>,
    read_errors: Vec<String>,
}

fn spawn_writer(
    p: &switchyard::app::Running,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    t: String,
) -> tokio::task::JoinHandle<()> {
    let opts = opts(p, "strict");
    tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(opts.clone()).await.unwrap();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && i < 100_000 {
            i += 1;
            let tag = format!("w{i}");
            match c
                .exec_drop(format!("INSERT INTO {t} (tag) VALUES (?)"), (tag.clone(),))
                .await
            {
                Ok(()) => rec.lock().acked.push(tag),
                Err(e) => {
                    rec.lock().write_errors.push(e.to_string());
                    if let Ok(n) = mysql_async::Conn::new(opts.clone()).await {
                        c = n;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

fn spawn_reader(
    p: &switchyard::app::Running,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    t: String,
) -> tokio::task::JoinHandle<()> {
    let opts = opts(p, "strict");
    tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(opts.clone()).await.unwrap();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && i < 200_000 {
            i += 1;
            let r: Result<Option<u64>, _> =
                c.query_first(format!("SELECT COUNT(*) FROM {t}")).await;
            if let Err(e) = r {
                rec.lock().read_errors.push(e.to_string());
                if let Ok(n) = mysql_async::Conn::new(opts.clone()).await {
                    c = n;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// doltclusterctl's order: every pod standby, the role moves, the new primary labelled.
async fn fail_over(k8s: &FakeK8s, p: &switchyard::app::Running, to: usize) {
    for (pod, _, _) in PODS {
        k8s.set_label(pod, ROLE, "standby");
    }
    wait_topology(p, "no primary while every pod is standby", |s| {
        s.primary().is_none()
    })
    .await;
    cluster(&["failover", PODS[to].2, "--kill-connections"]).await;
    k8s.set_label(PODS[to].0, ROLE, "primary");
    wait_topology(p, "the new primary", |s| {
        primary_key(s).as_deref() == Some(PODS[to].0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_under_load_without_a_restart() {
    ensure_cluster();
    if current_primary().await != "127.0.0.11" {
        cluster(&["failover", "n1"]).await;
    }
    let k8s = FakeK8s::start().await;
    for (i, (pod, ip, _)) in PODS.iter().enumerate() {
        k8s.add_pod(pod, ip, if i == 0 { "primary" } else { "standby" });
    }
    let p = start(kube_config(&k8s, |c| {
        c.health.fast_interval_ms = 5;
        c.topology.write_hold_ms = 20_000;
    }))
    .await;
    wait_topology(&p, "dolt-0 primary", |s| {
        primary_key(s).as_deref() == Some("dolt-0")
    })
    .await;
    let t = table("failover");
    let mut setup = connect(&p, "strict").await;
    setup
        .query_drop(format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, tag VARCHAR(32))"
        ))
        .await
        .unwrap();
    wait_replicated(&t).await;
    let mut idle = connect(&p, "strict").await;
    let _: Option<u32> = idle.query_first("SELECT 1").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let mut tasks = vec![spawn_writer(&p, stop.clone(), rec.clone(), t.clone())];
    for _ in 0..2 {
        tasks.push(spawn_reader(&p, stop.clone(), rec.clone(), t.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // a transaction in flight and a session holding a temp table, on the old primary
    let mut in_txn = connect(&p, "strict").await;
    in_txn.query_drop("BEGIN").await.unwrap();
    in_txn
        .query_drop(format!("INSERT INTO {t} (tag) VALUES ('in-flight')"))
        .await
        .unwrap();
    // one whose replies replay the same (explicit ids): it survives the failover
    let mut replayed = connect(&p, "strict").await;
    replayed.query_drop("BEGIN").await.unwrap();
    replayed
        .query_drop(format!("INSERT INTO {t} (id, tag) VALUES (-1, 'replayed')"))
        .await
        .unwrap();
    let mine: Option<String> = replayed
        .query_first(format!("SELECT tag FROM {t} WHERE id = -1"))
        .await
        .unwrap();
    assert_eq!(mine.as_deref(), Some("replayed"));
    let mut temp = connect(&p, "strict").await;
    temp.query_drop("CREATE TEMPORARY TABLE tmp_fo (x INT)")
        .await
        .unwrap();
    let mut acked_before = 0;
    for to in [1, 2, 0] {
        fail_over(&k8s, &p, to).await;
        if to == 1 {
            // replayed on the new primary: the same replies, then the next statement
            replayed
                .query_drop(format!(
                    "INSERT INTO {t} (id, tag) VALUES (-2, 'replayed-after')"
                ))
                .await
                .expect("the transaction goes on after the failover");
            replayed.query_drop("COMMIT").await.unwrap();
            // its auto-increment id would differ when replayed (the writer went on): lost
            let e = in_txn.query_drop("SELECT 1").await.unwrap_err();
            assert_eq!(
                code(&e),
                Some(1213),
                "a transaction whose replay differs is lost: {e}"
            );
            in_txn.query_drop("ROLLBACK").await.unwrap();
            in_txn
                .query_drop(format!("INSERT INTO {t} (tag) VALUES ('after')"))
                .await
                .expect("then it goes on");
            let e = temp
                .query_drop("INSERT INTO tmp_fo VALUES (1)")
                .await
                .unwrap_err();
            assert_eq!(
                code(&e),
                Some(9004),
                "temp tables lost with the old primary: {e}"
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let n = rec.lock().acked.len();
        assert!(
            n > acked_before,
            "writes went on after failing over to {}",
            PODS[to].0
        );
        acked_before = n;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let r = std::mem::take(&mut *rec.lock());
    assert!(
        r.read_errors.is_empty(),
        "failed reads: {:?}",
        &r.read_errors[..r.read_errors.len().min(3)]
    );
    assert!(
        r.write_errors.is_empty(),
        "failed writes: {:?}",
        &r.write_errors[..r.write_errors.len().min(3)]
    );
    assert_eq!(
        current_primary().await,
        "127.0.0.11",
        "the cluster ends with 127.0.0.11 primary"
    );
    let have: Vec<String> = direct("127.0.0.11")
        .await
        .query(format!("SELECT tag FROM {t}"))
        .await
        .unwrap();
    let have: std::collections::HashSet<String> = have.into_iter().collect();
    assert!(
        !have.contains("in-flight"),
        "the lost transaction left nothing behind"
    );
    let replayed_rows: Vec<String> = direct("127.0.0.11")
        .await
        .query(format!(
            "SELECT tag FROM {t} WHERE id IN (-1, -2) ORDER BY id DESC"
        ))
        .await
        .unwrap();
    assert_eq!(
        replayed_rows,
        ["replayed", "replayed-after"],
        "the replayed transaction committed once, whole"
    );
    assert!(p.shared.stats.replays.load(Ordering::Relaxed) >= 1);
    let lost: Vec<&String> = r.acked.iter().filter(|tag| !have.contains(*tag)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        r.acked.len() > 50,
        "the writer kept writing: {}",
        r.acked.len()
    );
    // a client that sat idle through every failover carries on, reads and writes
    let one: u32 = idle.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
    idle.query_drop(format!("INSERT INTO {t} (tag) VALUES ('idle')"))
        .await
        .unwrap();
    setup.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}
