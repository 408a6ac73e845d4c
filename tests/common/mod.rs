//! Shared helpers for the integration tests: the real local MariaDB cluster
//! (scripts/local-cluster.sh), an in-process switchyard on ephemeral loopback ports, and
//! a raw protocol client for what no client library sends.
#![allow(dead_code)]

pub mod chaos;
pub mod dolt;
pub mod fake_k8s;
pub mod raw;

use std::sync::Once;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use switchyard::app::Running;
use switchyard::config::Config;

pub const PRIMARY: &str = "127.0.0.11";
pub const STANDBYS: [&str; 2] = ["127.0.0.12", "127.0.0.13"];

static CLUSTER: Once = Once::new();

/// Makes sure the local cluster runs (idempotent, fast when it is already up).
pub fn ensure_cluster() {
    CLUSTER.call_once(|| {
        let up = ["127.0.0.11:3306", "127.0.0.12:3306", "127.0.0.13:3306"]
            .iter()
            .all(|a| std::net::TcpStream::connect(a).is_ok());
        if up {
            return;
        }
        // test processes start in parallel: one `up` at a time
        let root = env!("CARGO_MANIFEST_DIR");
        let st = std::process::Command::new("flock")
            .args([
                "/tmp/switchyard-cluster.lock",
                &format!("{root}/scripts/local-cluster.sh"),
                "up",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run scripts/local-cluster.sh");
        assert!(st.success(), "scripts/local-cluster.sh up failed");
    });
}

/// examples/local.toml on ephemeral ports, adjusted by `tweak`.
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.toml"))
        .unwrap();
    let mut cfg = Config::from_toml(&text).unwrap();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.admin_listen = "127.0.0.1:0".into();
    cfg.health.interval_ms = 500;
    // one slow probe on a loaded machine must not take a backend out of the rotation (a
    // refused or cut connection still fails at once)
    cfg.health.timeout_ms = 5_000;
    tweak(&mut cfg);
    cfg.validate().unwrap();
    cfg.resolve_secrets().unwrap();
    cfg
}

/// Starts a proxy and waits (bounded) until its first health checks finished.
pub async fn start(cfg: Config) -> Running {
    ensure_cluster();
    let r = switchyard::app::start(cfg)
        .await
        .expect("switchyard starts");
    for _ in 0..100 {
        if r.shared.topology.snapshot().ready() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy not ready within 5 s");
}

pub async fn start_default() -> Running {
    start(config(|_| {})).await
}

pub fn opts(r: &Running, user: &str) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(r.listen.port())
        .user(Some(user))
        .pass(Some(user))
        .db_name(Some("sbtest"))
        .prefer_socket(false)
        .into()
}

pub async fn connect(r: &Running, user: &str) -> Conn {
    Conn::new(opts(r, user))
        .await
        .expect("connect through switchyard")
}

/// A direct connection to one server as `app`.
pub async fn direct(host: &str) -> Conn {
    let o: Opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(3306)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("sbtest"))
        .prefer_socket(false)
        .into();
    Conn::new(o).await.expect("direct connect")
}

pub async fn server_id_of(host: &str) -> u32 {
    let mut c = direct(host).await;
    let id: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    c.disconnect().await.ok();
    id
}

pub async fn primary_id() -> u32 {
    server_id_of(PRIMARY).await
}

/// The MySQL error code of a mysql_async error, if it is a server error.
pub fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// A table name unique to this process and purpose.
pub fn table(purpose: &str) -> String {
    format!("t_{purpose}_{}", std::process::id())
}

/// Waits (bounded: 30 s, for a loaded machine) until a table exists on every standby.
pub async fn wait_replicated(table: &str) {
    for host in STANDBYS {
        let mut c = direct(host).await;
        let mut ok = false;
        for _ in 0..600 {
            let q = format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest' AND TABLE_NAME='{table}'");
            if c.query_first::<u32, _>(q).await.unwrap() == Some(1) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "{table} did not reach {host}");
    }
}

/// Waits (bounded: 30 s) until a table has `n` rows on every standby.
pub async fn wait_rows(table: &str, n: u32) {
    wait_replicated(table).await;
    for host in STANDBYS {
        let mut c = direct(host).await;
        let mut seen = None;
        for _ in 0..1200 {
            seen = c
                .query_first::<u32, _>(format!("SELECT COUNT(*) FROM {table}"))
                .await
                .unwrap();
            if seen == Some(n) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(seen, Some(n), "{table} rows on {host}");
    }
}

/// A proxy that discovers its backends from `k8s` (through an explicit kubeconfig).
pub fn kube_config(k8s: &fake_k8s::FakeK8s, tweak: impl FnOnce(&mut Config)) -> Config {
    let kubeconfig = k8s.kubeconfig().display().to_string();
    config(|c| {
        c.backends.clear();
        c.discovery.kind = switchyard::config::DiscoveryKind::Kubernetes;
        c.discovery.kubeconfig = kubeconfig;
        tweak(c);
    })
}

/// Waits (bounded) until the proxy's topology satisfies `check`.
pub async fn wait_topology(
    r: &Running,
    what: &str,
    check: impl Fn(&switchyard::topology::Snapshot) -> bool,
) {
    for _ in 0..400 {
        if check(&r.shared.topology.full()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let s = r.shared.topology.full();
    let seen: Vec<String> = s
        .entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {:?} {:?} healthy={}",
                e.key, e.node.address, e.label, e.role, e.healthy
            )
        })
        .collect();
    panic!("topology never reached: {what}; it has {seen:?}");
}

/// The discovered primary's key, if any.
pub fn primary_key(s: &switchyard::topology::Snapshot) -> Option<String> {
    let p = s.primary()?;
    s.node(p.id).map(|e| e.key.clone())
}

/// Runs `body`; then `cleanup` whether or not it panicked; then passes its panic on.
pub async fn with_cleanup<T>(
    body: impl std::future::Future<Output = T>,
    cleanup: impl std::future::Future<Output = ()>,
) -> T {
    use futures_util::FutureExt;
    let r = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}
