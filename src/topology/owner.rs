//! The one owner of the topology: it applies updates (probe results, passive signals,
//! read-only refusals, discovered endpoints), creates and retires nodes with their pools
//! and probe tasks, and publishes each new snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::probe::{self, ProbeParams, Probed};
use super::{Entry, Node, Snapshot, Topology, Update};
use crate::config::Role;

/// A backend as a source names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable name: a configured backend's name or a pod's name.
    pub key: String,
    /// host:port
    pub address: String,
    pub configured: Role,
    /// The role label of a discovered pod.
    pub label: Option<Role>,
}

/// What the owner needs to create a node: pools and a probe task.
pub struct NodeFactory {
    pub probe: ProbeParams,
    /// Probe credentials.
    pub monitor: (String, String),
    pub max_lag: Option<Duration>,
}

/// Never shows the monitor password.
impl std::fmt::Debug for NodeFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFactory")
            .field("probe", &self.probe)
            .field("monitor_user", &self.monitor.0)
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

impl NodeFactory {
    fn node(&self, id: usize, ep: &Endpoint) -> Arc<Node> {
        Arc::new(Node {
            id,
            name: ep.key.clone(),
            address: ep.address.clone(),
            outstanding: Default::default(),
            lag_ms: super::LAG_UNKNOWN.into(),
        })
    }

    fn probe_opts(&self, address: &str) -> mysql_async::Opts {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .tcp_port(port.parse().unwrap_or(3306))
            .user(Some(self.monitor.0.clone()))
            .pass(Some(self.monitor.1.clone()))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .into()
    }
}

struct Probe {
    poke: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The owner task's state.
pub struct Owner {
    topo: Arc<Topology>,
    factory: NodeFactory,
    probes: HashMap<usize, Probe>,
    next_id: usize,
    fast: watch::Sender<bool>,
    /// The elected primary of the last snapshot, and since when there has been none.
    elected: Option<usize>,
    absent_since: Option<std::time::Instant>,
    /// The last backend elected primary (None before the first election).
    last_primary: Option<usize>,
}

impl Owner {
    /// Starts the owner with the static backends (if any) and returns at once.
    pub fn start(
        topo: Arc<Topology>,
        rx: mpsc::Receiver<Update>,
        factory: NodeFactory,
        initial: Option<Vec<Endpoint>>,
    ) {
        let mut owner = Owner {
            topo,
            factory,
            probes: HashMap::new(),
            next_id: 0,
            fast: watch::channel(false).0,
            elected: None,
            absent_since: None,
            last_primary: None,
        };
        let mut snap = Snapshot::default();
        if let Some(eps) = initial {
            owner.set_endpoints(&mut snap, eps);
        }
        owner.publish(snap);
        tokio::spawn(owner.run(rx));
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Update>) {
        while let Some(u) = rx.recv().await {
            let mut next = (*self.topo.current()).clone();
            if self.apply(&mut next, u) {
                self.publish(next);
            }
        }
    }

    fn publish(&mut self, mut s: Snapshot) {
        s.version += 1;
        let elected = s.primary().map(|n| n.id);
        self.observe(elected, &s);
        let missing = elected.is_none();
        self.topo.publish(s);
        self.fast
            .send_if_modified(|f| std::mem::replace(f, missing) != missing);
    }

    /// Counts the change; a different backend elected primary is a failover, and the
    /// time without one (if any) is observed.
    fn observe(&mut self, elected: Option<usize>, s: &Snapshot) {
        use std::sync::atomic::Ordering::Relaxed;
        let obs = &self.topo.observer;
        obs.changes.fetch_add(1, Relaxed);
        let was = std::mem::replace(&mut self.elected, elected);
        let Some(new) = elected else {
            if was.is_some() {
                self.absent_since = Some(std::time::Instant::now());
                tracing::warn!(
                    topology_version = s.version,
                    "no primary: writes wait (the write hold)"
                );
            }
            return;
        };
        if was == Some(new) {
            return;
        }
        let gap = self.absent_since.take().map(|t| t.elapsed());
        // the first election at start is no failover
        let Some(prev) = self.last_primary.replace(new) else {
            return;
        };
        if let (Some(gap), Some(h)) = (gap, &obs.absent) {
            h.record(gap.as_secs_f64());
        }
        if prev != new {
            obs.failovers.fetch_add(1, Relaxed);
            *obs.failover_at.lock() = Some(std::time::Instant::now());
            let name = |id: usize| {
                s.entries
                    .iter()
                    .find(|e| e.node.id == id)
                    .map_or_else(|| format!("#{id}"), |e| e.key.clone())
            };
            let without_primary_ms = gap.map(|g| g.as_millis() as u64);
            tracing::info!(from = %name(prev), to = %name(new), without_primary_ms, topology_version = s.version, "failover: another backend elected primary");
        }
    }

    fn poke_all(&self) {
        self.probes.values().for_each(|p| p.poke.notify_one());
    }

    fn apply(&mut self, s: &mut Snapshot, u: Update) -> bool {
        match u {
            Update::Probe { id, result } => {
                let max_lag = self.factory.max_lag;
                let changed = s
                    .entries
                    .iter_mut()
                    .find(|e| e.node.id == id)
                    .is_some_and(|e| apply_probe(e, result, max_lag));
                let dolt = self.factory.probe.kind == crate::config::BackendKind::Dolt;
                changed | (dolt && dolt_standby_lags(s, max_lag))
            }
            Update::Suspect { id, error } => {
                tracing::debug!(backend = id, %error, "passive failure signal");
                if let Some(p) = self.probes.get(&id) {
                    p.poke.notify_one();
                }
                false
            }
            Update::ReadOnly { id } => {
                self.poke_all();
                s.entries
                    .iter_mut()
                    .find(|e| e.node.id == id)
                    .is_some_and(demote)
            }
            Update::Endpoints(eps) => self.set_endpoints(s, eps),
            Update::DiscoveryFailed(why) => s.discovery_error.replace(why.clone()) != Some(why),
            Update::Health(f) => {
                self.set_factory(s, *f);
                false
            }
            Update::Drain { key, on } => {
                s.entries
                    .iter_mut()
                    .find(|e| e.key == key)
                    .is_some_and(|e| {
                        tracing::info!(backend = %key, drained = on, "drain set by hand");
                        std::mem::replace(&mut e.drained, on) != on
                    })
            }
        }
    }

    /// Replaces the backends with `eps`: new ones get a node and a probe, gone ones are
    /// retired (their idle connections closed), label changes are probed at once.
    fn set_endpoints(&mut self, s: &mut Snapshot, eps: Vec<Endpoint>) -> bool {
        let mut changed = !s.discovered || s.discovery_error.is_some();
        s.discovered = true;
        s.discovery_error = None;
        let before = s.entries.len();
        let (keep, gone): (Vec<Entry>, Vec<Entry>) =
            std::mem::take(&mut s.entries).into_iter().partition(|e| {
                eps.iter().any(|ep| {
                    ep.key == e.key && ep.address == e.node.address && ep.configured == e.configured
                })
            });
        for e in gone {
            tracing::info!(backend = %e.key, address = %e.node.address, "backend removed");
            self.retire(&e);
        }
        s.entries = keep;
        for ep in &eps {
            match s.entries.iter_mut().find(|e| e.key == ep.key) {
                Some(e) if e.label != ep.label => {
                    tracing::info!(backend = %e.key, label = ?ep.label, "role label changed");
                    e.label = ep.label;
                    refresh_role(e);
                    if let Some(p) = self.probes.get(&e.node.id) {
                        p.poke.notify_one();
                    }
                    changed = true;
                }
                Some(_) => {}
                None => {
                    s.entries.push(self.add(ep));
                    changed = true;
                }
            }
        }
        changed || s.entries.len() != before
    }

    fn add(&mut self, ep: &Endpoint) -> Entry {
        let id = self.next_id;
        self.next_id += 1;
        tracing::info!(backend = %ep.key, address = %ep.address, role = ep.configured.as_str(), label = ?ep.label, "backend added");
        let node = self.factory.node(id, ep);
        self.spawn_probe(id, &ep.address);
        Entry::new(node, &ep.key, ep.configured, ep.label)
    }

    fn spawn_probe(&mut self, id: usize, address: &str) {
        let poke = Arc::new(Notify::new());
        let opts = self.factory.probe_opts(address);
        let updates = self.topo.sender();
        let task = tokio::spawn(probe::probe_loop(
            id,
            opts,
            self.factory.probe.clone(),
            updates,
            poke.clone(),
            self.fast.subscribe(),
        ));
        if let Some(old) = self.probes.insert(id, Probe { poke, task }) {
            old.task.abort();
        }
    }

    /// New health settings or monitor credentials (a reload): every probe restarts with
    /// them; roles and health stand until the new probes report.
    fn set_factory(&mut self, s: &Snapshot, factory: NodeFactory) {
        self.factory = factory;
        for e in &s.entries {
            self.spawn_probe(e.node.id, &e.node.address);
        }
        tracing::info!(
            backends = s.entries.len(),
            "health settings reloaded: probes restarted"
        );
    }

    fn retire(&mut self, e: &Entry) {
        if let Some(p) = self.probes.remove(&e.node.id) {
            p.task.abort();
        }
    }
}

/// A write refused as read-only: not primary now, whatever it claimed.
fn demote(e: &mut Entry) -> bool {
    if e.configured != Role::Auto || e.role != Some(Role::Primary) {
        return false;
    }
    tracing::warn!(backend = %e.key, "write refused as read-only: no longer primary");
    e.probed = Some(Role::Standby);
    refresh_role(e);
    true
}

/// Dolt standbys report no lag of their own: each takes the lag the primary reports for
/// it (its row names the standby remote; a remote named after the backend, or the largest
/// lag reported when no row names it). True when a standby's standing changed.
pub(super) fn dolt_standby_lags(s: &mut Snapshot, max_lag: Option<Duration>) -> bool {
    let Some(max) = max_lag else {
        return false;
    };
    let Some(reports) = s
        .entries
        .iter()
        .find(|e| e.role == Some(Role::Primary))
        .map(|e| e.reported_lags.clone())
        .filter(|r| !r.is_empty())
    else {
        return false;
    };
    let worst = reports
        .iter()
        .map(|r| r.1)
        .try_fold(0u64, |acc, l| l.map(|l| acc.max(l)));
    let mut changed = false;
    for e in s
        .entries
        .iter_mut()
        .filter(|e| e.role == Some(Role::Standby))
    {
        let own = reports
            .iter()
            .find(|(remote, _)| e.key.eq_ignore_ascii_case(remote))
            .map_or(worst, |r| r.1);
        let lag = own.unwrap_or(super::LAG_UNKNOWN);
        e.node
            .lag_ms
            .store(lag, std::sync::atomic::Ordering::Relaxed);
        let ok = own.is_some_and(|ms| ms <= max.as_millis() as u64);
        changed |= ok != e.lag_ok;
        e.lag_ok = ok;
    }
    changed
}

pub(super) fn apply_probe(
    e: &mut Entry,
    result: Result<Probed, String>,
    max_lag: Option<Duration>,
) -> bool {
    let before = observed(e);
    match result {
        Ok(p) => {
            if !e.healthy {
                tracing::info!(backend = %e.key, "backend healthy");
            }
            e.healthy = true;
            e.last_error = None;
            e.epoch = p.epoch;
            e.reported_lags = p.reported_lags;
            let lag = p.lag_ms.unwrap_or(super::LAG_UNKNOWN);
            e.node
                .lag_ms
                .store(lag, std::sync::atomic::Ordering::Relaxed);
            e.lag_ok = match (max_lag, p.lag_ms) {
                (None, _) => true,
                (Some(max), Some(ms)) => ms <= max.as_millis() as u64,
                (Some(_), None) => false,
            };
            e.probed = Some(p.role);
            refresh_role(e);
        }
        Err(err) => {
            if e.healthy {
                tracing::warn!(backend = %e.key, error = %err, "backend unhealthy");
            }
            e.healthy = false;
            e.last_error = Some(err);
        }
    }
    e.checked = true;
    before != observed(e)
}

/// What of an entry a snapshot publishes, to tell whether a probe changed anything.
fn observed(e: &Entry) -> (Option<Role>, Option<u64>, bool, bool, bool, Option<String>) {
    (
        e.role,
        e.epoch,
        e.healthy,
        e.lag_ok,
        e.checked,
        e.last_error.clone(),
    )
}

fn refresh_role(e: &mut Entry) {
    let role = e.effective_role();
    if e.role == role {
        return;
    }
    tracing::info!(backend = %e.key, from = ?e.role, to = ?role, "role changed");
    e.role = role;
}
