//! Failover benchmark (a command, not a test): `cargo bench --bench failover [-- N]`.
//!
//! Label-driven (Kubernetes discovery against the fake apiserver, the local cluster behind
//! its pods): every pod is labelled standby, `scripts/local-cluster.sh failover
//! --kill-connections` moves the role, then the new primary is labelled. Measured: from
//! that label event to the first successful write through switchyard, p50 and p99 over N
//! failovers (default 50). A writer keeps a write in flight all along (held while there is
//! no primary).
//!
//! Probe-driven (`role = "auto"`, static backends): `scripts/local-cluster.sh failover`
//! under a writer every 10 ms; measured from the promotion (the script's "promoted ... at
//! EPOCH_MS" line) to the first write acknowledged after it, and the writes that failed.
//! Leaves 127.0.0.11 primary. Needs the local cluster (scripts/local-cluster.sh up).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fake_k8s::FakeK8s;
use common::*;
use mysql_async::prelude::*;
use parking_lot::Mutex;

const PODS: [(&str, &str, &str); 3] = [
    ("dolt-0", "127.0.0.11", "n1"),
    ("dolt-1", "127.0.0.12", "n2"),
    ("dolt-2", "127.0.0.13", "n3"),
];

fn script(args: &[&str]) -> String {
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/local-cluster.sh"
        ))
        .args(args)
        .output()
        .expect("run local-cluster.sh");
    assert!(
        out.status.success(),
        "local-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Completion times (epoch ms) of successful writes, and failed writes.
#[derive(Default)]
struct Writes {
    done: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

fn writer(
    p: &switchyard::app::Running,
    t: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
    w: Arc<Writes>,
) -> tokio::task::JoinHandle<()> {
    let o = opts(p, "strict");
    tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(o.clone()).await.unwrap();
        while !stop.load(Ordering::Relaxed) {
            match c
                .query_drop(format!("INSERT INTO {t} (v) VALUES (1)"))
                .await
            {
                Ok(()) => w.done.lock().push(epoch_ms()),
                Err(_) => {
                    w.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(n) = mysql_async::Conn::new(o.clone()).await {
                        c = n;
                    }
                }
            }
            tokio::time::sleep(pause).await;
        }
    })
}

fn first_after(w: &Writes, t: u64) -> Option<u64> {
    w.done
        .lock()
        .iter()
        .copied()
        .find(|d| *d >= t)
        .map(|d| d - t)
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn label_driven(n: usize) {
    let k8s = FakeK8s::start().await;
    for (i, (pod, ip, _)) in PODS.iter().enumerate() {
        k8s.add_pod(pod, ip, if i == 0 { "primary" } else { "standby" });
    }
    let p = start(kube_config(&k8s, |c| c.health.fast_interval_ms = 5)).await;
    wait_topology(&p, "dolt-0 primary", |s| {
        primary_key(s).as_deref() == Some("dolt-0")
    })
    .await;
    let t = format!("bench_fo_{}", std::process::id());
    let mut c = connect(&p, "strict").await;
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = Arc::new(Writes::default());
    let task = writer(
        &p,
        t.clone(),
        Duration::from_millis(1),
        stop.clone(),
        w.clone(),
    );
    let mut lat = Vec::new();
    for i in 0..n {
        let to = (i + 1) % 3;
        for (pod, _, _) in PODS {
            k8s.set_label(pod, "dolthub.com/cluster_role", "standby");
        }
        tokio::task::spawn_blocking(move || {
            script(&["failover", PODS[to].2, "--kill-connections"])
        })
        .await
        .unwrap();
        let t0 = epoch_ms();
        let started = Instant::now();
        k8s.set_label(PODS[to].0, "dolthub.com/cluster_role", "primary");
        while first_after(&w, t0).is_none() && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(first_after(&w, t0).expect("a write after the label event"));
    }
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    let failed = w.failed.load(Ordering::Relaxed);
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!("label-driven: {n} failovers; label event -> first write on the new primary: p50 {p50} ms, p99 {p99} ms, max {} ms; failed writes {failed}", lat.last().unwrap());
}

fn current_ip() -> String {
    let out = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.11",
            "-uapp",
            "-papp",
            "-N",
            "-B",
            "-e",
            "SELECT @@read_only",
        ])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stdout).trim() == "0" {
        "127.0.0.11".into()
    } else {
        "other".into()
    }
}

async fn probe_driven(n: usize) {
    let p = start(config(|c| {
        for b in &mut c.backends {
            b.role = switchyard::config::Role::Auto;
        }
        c.health.fast_interval_ms = 5;
    }))
    .await;
    let t = format!("bench_auto_{}", std::process::id());
    let mut c = connect(&p, "strict").await;
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = Arc::new(Writes::default());
    let task = writer(
        &p,
        t.clone(),
        Duration::from_millis(10),
        stop.clone(),
        w.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = Vec::new();
    for i in 0..n {
        let to = PODS[(i + 1) % 3].2;
        let err =
            tokio::task::spawn_blocking(move || script(&["failover", to, "--kill-connections"]))
                .await
                .unwrap();
        let promoted: u64 = err
            .lines()
            .find_map(|l| {
                l.strip_prefix("promoted ")
                    .and_then(|r| r.rsplit(' ').next())
                    .and_then(|ms| ms.parse().ok())
            })
            .expect("the promotion time");
        tokio::time::sleep(Duration::from_millis(300)).await;
        lat.push(first_after(&w, promoted).expect("a write after the promotion"));
    }
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    let failed = w.failed.load(Ordering::Relaxed);
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!("probe-driven (role = auto, writer every 10 ms): {n} failovers; promotion -> first write: p50 {p50} ms, p99 {p99} ms, max {} ms; failed writes {failed}", lat.last().unwrap());
}

fn main() {
    let n: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        ensure_cluster();
        if current_ip() != "127.0.0.11" {
            script(&["failover", "n1"]);
        }
        label_driven(n).await;
        probe_driven(n).await;
        if current_ip() != "127.0.0.11" {
            script(&["failover", "n1"]);
        }
    });
}
