//! Builds every part from a Config and wires them together; the only module that knows
//! them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::backend::{BackendConn, ConnectParams};
use crate::config::Config;
use crate::pool::{NodePools, PoolLimits};
use crate::session::registry::{Registry, Stats};
use crate::session::{SessionLimits, Shared, UserInfo};
use crate::topology::probe::{self, ProbeParams};
use crate::topology::{self, Entry, Judge, Node, Topology};

/// A running proxy: its bound addresses and a way to stop it.
pub struct Running {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
}

/// Starts the proxy inside the current tokio runtime.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let base = connect_params(&cfg);
    let users = user_passwords(&cfg);
    let nodes = build_nodes(&cfg, &users, &base);
    let entries = nodes
        .iter()
        .zip(&cfg.backends)
        .map(|(n, b)| Entry::new(n.clone(), b.role))
        .collect();
    let (topo, rx) = Topology::new(entries);
    let pokes: Vec<Arc<Notify>> = nodes.iter().map(|_| Arc::new(Notify::new())).collect();
    let (fast_tx, fast_rx) = watch::channel(false);
    spawn_probes(&cfg, &nodes, &users, &topo, &pokes, fast_rx);
    let max_lag = (cfg.health.max_lag_ms > 0).then(|| Duration::from_millis(cfg.health.max_lag_ms));
    tokio::spawn(topology::run_owner(
        topo.clone(),
        rx,
        pokes,
        Judge { max_lag },
        fast_tx,
    ));
    spawn_reaper(topo.clone());
    let server_version = server_version(&cfg, &users, &base).await;
    let shared = Arc::new(Shared {
        topology: topo,
        users: cfg
            .users
            .iter()
            .map(|u| {
                let password = u.password.password.clone().unwrap_or_default();
                (
                    u.name.clone(),
                    UserInfo {
                        password,
                        policy: u.policy,
                    },
                )
            })
            .collect(),
        registry: Registry::default(),
        stats: Stats::default(),
        server_version,
        limits: session_limits(&cfg),
    });
    let (tx, rx) = watch::channel(false);
    let listener = bind(&cfg.server.listen).await?;
    let admin = bind(&cfg.server.admin_listen).await?;
    let running = Running {
        listen: listener
            .local_addr()
            .map_err(|e| StartError::Bind(cfg.server.listen.clone(), e))?,
        admin: admin
            .local_addr()
            .map_err(|e| StartError::Bind(cfg.server.admin_listen.clone(), e))?,
        shared: shared.clone(),
        shutdown: tx,
    };
    tokio::spawn(crate::listener::run(
        listener,
        shared.clone(),
        cfg.server.max_client_connections,
        rx.clone(),
    ));
    tokio::spawn(serve_admin(admin, shared, rx));
    tracing::info!(listen = %running.listen, admin = %running.admin, "switchyard started");
    Ok(running)
}

async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Bind(addr.to_string(), e))
}

async fn serve_admin(l: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let app = crate::admin::router(shared);
    let _ = axum::serve(l, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

fn connect_params(cfg: &Config) -> ConnectParams {
    ConnectParams {
        address: String::new(),
        user: String::new(),
        password: String::new(),
        connect_timeout: Duration::from_millis(cfg.pool.connect_timeout_ms),
        max_packet: cfg.server.max_packet_bytes.max(64 << 20),
        statement_cache: cfg.pool.statement_cache,
        found_rows: false,
    }
}

fn user_passwords(cfg: &Config) -> Vec<(String, String)> {
    cfg.users
        .iter()
        .map(|u| {
            let pw = u
                .password
                .password
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default();
            (u.name.clone(), pw)
        })
        .collect()
}

fn build_nodes(cfg: &Config, users: &[(String, String)], base: &ConnectParams) -> Vec<Arc<Node>> {
    let limits = PoolLimits {
        max_per_user: cfg.pool.max_per_user,
        max_per_backend: cfg.pool.max_per_backend,
        min_idle: cfg.pool.min_idle,
        idle_timeout: Duration::from_secs(cfg.pool.idle_timeout_s),
        max_lifetime: Duration::from_secs(cfg.pool.max_lifetime_s),
    };
    cfg.backends
        .iter()
        .enumerate()
        .map(|(id, b)| {
            let address = b.address();
            let pools = NodePools::new(&b.name, &address, users, &limits, base);
            Arc::new(Node {
                id,
                name: b.name.clone(),
                address,
                pools,
            })
        })
        .collect()
}

/// Probe credentials: [health] user, or the first configured user.
fn monitor_credentials(cfg: &Config, users: &[(String, String)]) -> (String, String) {
    if cfg.health.user.is_empty() {
        return users.first().cloned().unwrap_or_default();
    }
    let pw = cfg
        .health
        .password
        .password
        .as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default();
    (cfg.health.user.clone(), pw)
}

/// Connection parameters with the probe credentials (reading the server version).
fn monitor_params(
    cfg: &Config,
    users: &[(String, String)],
    base: &ConnectParams,
    address: String,
) -> ConnectParams {
    let (user, password) = monitor_credentials(cfg, users);
    ConnectParams {
        address,
        user,
        password,
        statement_cache: 1,
        ..base.clone()
    }
}

fn spawn_probes(
    cfg: &Config,
    nodes: &[Arc<Node>],
    users: &[(String, String)],
    topo: &Arc<Topology>,
    pokes: &[Arc<Notify>],
    fast: watch::Receiver<bool>,
) {
    let p = ProbeParams {
        kind: cfg.topology.kind,
        interval: Duration::from_millis(cfg.health.interval_ms),
        fast_interval: Duration::from_millis(cfg.health.fast_interval_ms),
        timeout: Duration::from_millis(cfg.health.timeout_ms),
        failures: cfg.health.failures.max(1),
        lag: cfg.health.max_lag_ms > 0,
    };
    let (user, password) = monitor_credentials(cfg, users);
    for ((n, poke), b) in nodes.iter().zip(pokes).zip(&cfg.backends) {
        let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(b.host.clone())
            .tcp_port(b.port)
            .user(Some(user.clone()))
            .pass(Some(password.clone()))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .into();
        let task = probe::probe_loop(
            n.id,
            opts,
            p.clone(),
            topo.sender(),
            poke.clone(),
            fast.clone(),
        );
        tokio::spawn(task);
    }
}

/// Every second: idle connections past their time are closed, and healthy backends are
/// topped up to pool.min_idle.
fn spawn_reaper(topo: Arc<Topology>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let snap = topo.full();
            for e in &snap.entries {
                e.node.pools.reap();
                if e.healthy {
                    e.node.pools.top_up().await;
                }
            }
        }
    });
}

fn session_limits(cfg: &Config) -> SessionLimits {
    SessionLimits {
        handshake_timeout: Duration::from_millis(cfg.server.handshake_timeout_ms),
        lease_timeout: Duration::from_millis(cfg.pool.lease_timeout_ms),
        max_packet: cfg.server.max_packet_bytes,
        read_your_writes: Duration::from_millis(cfg.routing.read_your_writes_ms),
        idle_timeout: (cfg.server.client_idle_timeout_s > 0)
            .then(|| Duration::from_secs(cfg.server.client_idle_timeout_s)),
        max_statements: 16_382,
        write_hold: Duration::from_millis(cfg.topology.write_hold_ms),
        optimistic: cfg.routing.optimistic_transactions,
    }
}

/// The configured version string, or the first reachable backend's own.
async fn server_version(cfg: &Config, users: &[(String, String)], base: &ConnectParams) -> String {
    if !cfg.server.server_version.is_empty() {
        return cfg.server.server_version.clone();
    }
    for b in &cfg.backends {
        let p = monitor_params(cfg, users, base, b.address());
        if let Ok(c) = BackendConn::connect(&p).await {
            return c.server_version.clone();
        }
    }
    tracing::warn!("no backend reachable at start: greeting with a default version string");
    "8.0.35-switchyard".into()
}
