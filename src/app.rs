//! Builds every part from a Config and wires them together; the only module that knows
//! them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::{BackendConn, ConnectParams};
use crate::config::Config;
use crate::config::DiscoveryKind;
use crate::config::Role;
use crate::pool::{PoolLimits, Pools};
use crate::protocol::handshake::ServerProfile;
use crate::session::registry::{Registry, Stats};
use crate::session::{SessionLimits, Shared, UserInfo};
use crate::topology::probe::ProbeParams;
use crate::topology::{Endpoint, NodeFactory, Owner, Topology, Update};
use std::collections::HashMap;

/// A running proxy: its bound addresses and a way to stop it.
pub struct Running {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// Starts a graceful shutdown: readiness turns false, no new clients are accepted, and
    /// each session closes at its next boundary outside a transaction.
    /// Shutdown: readiness turns false at once while clients are still accepted and
    /// served for `delay` (load balancers stop sending new ones; the image has no `sleep`
    /// for a preStop hook), then the listener closes and sessions end at their next
    /// boundary.
    pub async fn drain_after(&self, delay: std::time::Duration) {
        self.shared
            .unready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        self.drain();
    }

    pub fn drain(&self) {
        self.shared
            .unready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.draining.send_replace(true);
    }

    /// Waits until every session has ended or `deadline` passes; the sessions left.
    pub async fn drained(&self, deadline: std::time::Duration) -> usize {
        let end = tokio::time::Instant::now() + deadline;
        while !self.shared.registry.is_empty() && tokio::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.shared.registry.len()
    }

    /// Stops the admin endpoint (after draining).
    pub fn shutdown(&self) {
        self.drain();
        let _ = self.shutdown.send(true);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Starts the proxy inside the current tokio runtime.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    // one crypto provider for every TLS client (kube) and, later, server: ring
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = crate::tls::ClientTlsPolicy::load(&cfg.server.tls)?;
    let base = connect_params(&cfg);
    let users = user_passwords(&cfg);
    let metrics = crate::metrics::Metrics::new();
    let (topo, rx) = Topology::observed(metrics.topology_observer());
    let pools = Arc::new(Pools::new(&users, &pool_limits(&cfg), &base));
    let factory = node_factory(&cfg, &users);
    let initial = (cfg.discovery.kind == DiscoveryKind::Static).then(|| static_endpoints(&cfg));
    Owner::start(topo.clone(), rx, factory, initial);
    if cfg.discovery.kind == DiscoveryKind::Kubernetes {
        crate::discovery::kubernetes::spawn(cfg.discovery.clone(), topo.sender());
    }
    spawn_reaper(topo.clone(), pools.clone());
    let profile = server_profile(&cfg, &users, &base, &topo).await;
    let shared = Arc::new(Shared {
        topology: topo,
        pools,
        users: arc_swap::ArcSwap::from_pointee(user_infos(&cfg)),
        config_version: 1.into(),
        registry: Registry::default(),
        stats: Stats::default(),
        metrics,
        digests: crate::digest::Digests::new(cfg.server.digest_bytes),
        admin_token: arc_swap::ArcSwap::from_pointee(cfg.admin.token.clone()),
        tls: arc_swap::ArcSwap::from_pointee(tls),
        profile,
        last_gtid: Default::default(),
        limits: arc_swap::ArcSwap::from_pointee(session_limits(&cfg)),
        draining: watch::channel(false).0,
        unready: Default::default(),
        replaying: Default::default(),
        instance: instance_id(),
    });
    spawn_pool_keeper(shared.clone());
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
    let draining = shared.draining.subscribe();
    tokio::spawn(crate::listener::run(
        listener,
        shared.clone(),
        cfg.server.max_client_connections,
        draining,
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
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
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
        class: crate::protocol::ConnClass::modern(),
    }
}

/// The users clients log in as, with their passwords and policies.
fn user_infos(cfg: &Config) -> HashMap<String, UserInfo> {
    cfg.users
        .iter()
        .map(|u| {
            let password = u.password.password.clone().unwrap_or_default();
            let info = UserInfo {
                password,
                policy: u.policy,
            };
            (u.name.clone(), info)
        })
        .collect()
}

/// Applies a new configuration to a running proxy. Users, passwords and policies apply at
/// once (sessions already in keep their login; pools of a removed user or a changed password
/// are retired); pool sizes and timeouts, routing, session limits and the write hold apply
/// to the next statement or lease (connections in use keep working; a smaller pool takes
/// places back as they return); health settings restart the probes; static backends are
/// added, removed or changed as the file says (a removed one's sessions keep their
/// connection until they let it go). The settings that only a restart applies are named in
/// the result.
pub fn reload(shared: &Shared, old: &Config, new: &Config) -> Vec<&'static str> {
    let users = user_passwords(new);
    shared.users.store(Arc::new(user_infos(new)));
    shared.pools.set_users(&users);
    shared.limits.store(Arc::new(session_limits(new)));
    shared.admin_token.store(Arc::new(new.admin.token.clone()));
    // certificates are read again (a rotated Secret); unreadable ones keep the running TLS
    match crate::tls::ClientTlsPolicy::load(&new.server.tls) {
        Ok(t) => shared.tls.store(Arc::new(t)),
        Err(e) => tracing::error!(error = %e, "reload: TLS keeps its running certificate"),
    }
    if old.pool != new.pool {
        shared.pools.set_limits(&pool_limits(new));
    }
    let monitor = |c: &Config| monitor_credentials(c, &user_passwords(c));
    if old.health != new.health || monitor(old) != monitor(new) {
        let f = Box::new(node_factory(new, &users));
        send(shared, Update::Health(f));
    }
    let is_static = new.discovery.kind == DiscoveryKind::Static;
    if is_static && old.backends != new.backends {
        send(shared, Update::Endpoints(static_endpoints(new)));
    }
    shared
        .config_version
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    needs_restart(old, new)
}

fn send(shared: &Shared, u: Update) {
    if let Err(e) = shared.topology.sender().try_send(u) {
        tracing::error!(error = %e, "reload: the topology did not take the update");
    }
}

/// The settings that differ and only a restart applies.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    [
        ("server.listen", o.listen != n.listen),
        ("server.admin_listen", o.admin_listen != n.admin_listen),
        (
            "server.max_client_connections",
            o.max_client_connections != n.max_client_connections,
        ),
        (
            "server.server_version",
            o.server_version != n.server_version,
        ),
        ("server.digest_bytes", o.digest_bytes != n.digest_bytes),
        (
            "pool.connect_timeout_ms",
            old.pool.connect_timeout_ms != new.pool.connect_timeout_ms,
        ),
        (
            "pool.statement_cache",
            old.pool.statement_cache != new.pool.statement_cache,
        ),
        ("topology.kind", old.topology.kind != new.topology.kind),
        ("discovery", old.discovery != new.discovery),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// A random id for this proxy instance (commit markers tell instances apart by it).
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() >> 1 // fits a signed BIGINT too
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

fn static_endpoints(cfg: &Config) -> Vec<Endpoint> {
    cfg.backends
        .iter()
        .map(|b| Endpoint {
            key: b.name.clone(),
            address: b.address(),
            configured: b.role,
            label: None,
        })
        .collect()
}

fn pool_limits(cfg: &Config) -> PoolLimits {
    PoolLimits {
        max_per_user: cfg.pool.max_per_user,
        max_per_backend: cfg.pool.max_per_backend,
        min_idle: cfg.pool.min_idle,
        idle_timeout: Duration::from_secs(cfg.pool.idle_timeout_s),
        max_lifetime: Duration::from_secs(cfg.pool.max_lifetime_s),
    }
}

fn node_factory(cfg: &Config, users: &[(String, String)]) -> NodeFactory {
    let probe = ProbeParams {
        kind: cfg.topology.kind,
        interval: Duration::from_millis(cfg.health.interval_ms),
        fast_interval: Duration::from_millis(cfg.health.fast_interval_ms),
        timeout: Duration::from_millis(cfg.health.timeout_ms),
        failures: cfg.health.failures.max(1),
        lag: cfg.health.max_lag_ms > 0,
    };
    NodeFactory {
        probe,
        monitor: monitor_credentials(cfg, users),
        max_lag: (cfg.health.max_lag_ms > 0).then(|| Duration::from_millis(cfg.health.max_lag_ms)),
    }
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

/// Every second: idle connections past their time are closed, and healthy backends are
/// topped up to pool.min_idle.
fn spawn_reaper(topo: Arc<Topology>, pools: Arc<Pools>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let snap = topo.full();
            for e in &snap.entries {
                let p = pools.node(
                    e.node.id,
                    &e.node.name,
                    &e.node.address,
                    &e.node.outstanding,
                );
                p.reap();
                if e.healthy {
                    p.top_up().await;
                }
            }
        }
    });
}

/// Pools follow the topology's snapshots: a backend that stops being primary or healthy
/// has its idle connections closed (Dolt kills them on a role change; a demoted primary's
/// are not reused), one that leaves the topology has its pools retired. Sessions waiting
/// on the reply of a backend that left health or the topology give up on it.
fn spawn_pool_keeper(shared: Arc<Shared>) {
    let (topo, pools) = (shared.topology.clone(), shared.pools.clone());
    tokio::spawn(async move {
        let mut seen: HashMap<usize, (Option<Role>, bool)> = HashMap::new();
        loop {
            let snap = topo.full();
            let now: HashMap<usize, (Option<Role>, bool)> = snap
                .entries
                .iter()
                .map(|e| (e.node.id, (e.role, e.healthy)))
                .collect();
            for (id, (role, healthy)) in &seen {
                match now.get(id) {
                    None => {
                        pools.retire(*id);
                        shared.registry.give_up_on(*id);
                    }
                    Some((r, h)) => {
                        let demoted = *role == Some(Role::Primary) && *r != Some(Role::Primary);
                        if demoted || (*healthy && !h) {
                            pools.drain(*id);
                        }
                    }
                }
            }
            // level, not edge: every look (at each change, and each second) wakes whoever
            // waits on a backend out of health now
            for (id, _) in now.iter().filter(|(_, (_, healthy))| !healthy) {
                shared.registry.give_up_on(*id);
            }
            seen = now;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            topo.changed_since(snap.version, deadline).await;
        }
    });
}

fn session_limits(cfg: &Config) -> SessionLimits {
    SessionLimits {
        handshake_timeout: Duration::from_millis(cfg.server.handshake_timeout_ms),
        lease_timeout: Duration::from_millis(cfg.pool.lease_timeout_ms),
        max_packet: cfg.server.max_packet_bytes,
        read_your_writes: match cfg.routing.read_your_writes {
            crate::config::ReadYourWrites::None => None,
            _ => Some(Duration::from_millis(cfg.routing.read_your_writes_ms)),
        },
        causal_global: cfg.routing.read_your_writes == crate::config::ReadYourWrites::Global,
        causal_timeout: Duration::from_millis(cfg.routing.causal_timeout_ms),
        idle_timeout: (cfg.server.client_idle_timeout_s > 0)
            .then(|| Duration::from_secs(cfg.server.client_idle_timeout_s)),
        max_statements: 16_382,
        max_statement_bytes: cfg.server.max_session_statement_bytes,
        write_hold: Duration::from_millis(cfg.topology.write_hold_ms),
        optimistic: cfg.routing.optimistic_transactions,
        replay: cfg
            .routing
            .transaction_replay
            .then_some(crate::session::replay::Bounds {
                statements: cfg.routing.replay_max_statements,
                bytes: cfg.routing.replay_max_bytes,
            }),
        commit_marker: (!cfg.routing.commit_marker.is_empty())
            .then(|| cfg.routing.commit_marker.clone()),
        replay_deadlocks: cfg.routing.replay_deadlocks,
    }
}

/// What the backends' greeting says, learned from the first reachable backend
/// (discovered backends are waited for, briefly); a configured version string wins.
async fn server_profile(
    cfg: &Config,
    users: &[(String, String)],
    base: &ConnectParams,
    topo: &Topology,
) -> ServerProfile {
    let mut addresses: Vec<String> = cfg.backends.iter().map(|b| b.address()).collect();
    for _ in 0..50 {
        if !addresses.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        addresses = topo
            .full()
            .entries
            .iter()
            .map(|e| e.node.address.clone())
            .collect();
    }
    let mut profile = None;
    for a in addresses {
        if let Ok(mut c) = BackendConn::connect(&monitor_params(cfg, users, base, a)).await {
            profile = Some(learn_collations(&mut c).await);
            break;
        }
    }
    let mut profile = profile.unwrap_or_else(|| {
        tracing::warn!("no backend reachable at start: greeting with a default version string");
        ServerProfile::fallback("8.0.35-switchyard")
    });
    if !cfg.server.server_version.is_empty() {
        profile.version = cfg.server.server_version.clone();
    }
    profile
}

/// The server's collation table, so that a client's handshake collation id becomes a
/// `SET NAMES` the server understands (or the server's defaults, when it lacks the id).
async fn learn_collations(c: &mut BackendConn) -> ServerProfile {
    let mut profile = c.profile.clone();
    let sql = "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS";
    let Ok(rows) = c.query_rows(sql).await else {
        return profile;
    };
    for r in rows {
        let text = |i: usize| {
            r.get(i)
                .cloned()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let (Some(id), Some(cs), Some(coll)) = (text(0), text(1), text(2)) else {
            continue;
        };
        if let Ok(id) = id.parse::<u8>() {
            profile.collations.insert(id, (cs, coll));
        }
    }
    profile
}
