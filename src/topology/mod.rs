//! The topology: which backends exist, their roles and health. One owner task applies
//! updates (probe results, passive failure signals, read-only errors, and later discovery)
//! and publishes immutable snapshots; sessions load the current snapshot at each lease,
//! with no lock on the hot path, and may wait for the next one (the write hold).

mod owner;
pub mod probe;

pub use owner::{Endpoint, NodeFactory, Owner};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::config::Role;
use probe::Probed;

/// A backend server: its identity. Role and health live in snapshots; its pools belong to
/// the pool layer (`pool::Pools`), which shares the count of its requests in flight.
pub struct Node {
    pub id: usize,
    pub name: String,
    pub address: String,
    /// Requests running on this backend now (least-outstanding balancing).
    pub outstanding: Arc<std::sync::atomic::AtomicUsize>,
    /// The replication lag the last probe found, in ms (`LAG_UNKNOWN`: none known). Kept
    /// here, not in snapshots, so a probe that only moves the lag publishes nothing.
    pub lag_ms: std::sync::atomic::AtomicU64,
}

/// `Node::lag_ms` when no lag is known (a primary, replication stopped, not probed).
pub const LAG_UNKNOWN: u64 = u64::MAX;

impl Node {
    pub fn lag(&self) -> Option<u64> {
        Some(self.lag_ms.load(Ordering::Relaxed)).filter(|&l| l != LAG_UNKNOWN)
    }
}

/// What the topology reports to metrics: its counters, and histogram handles (no-ops
/// unless the proxy's metrics gave real ones).
#[derive(Default)]
pub struct Observer {
    /// Snapshots published (any change of role, health, lag standing, backends).
    pub changes: std::sync::atomic::AtomicU64,
    /// A different backend elected primary.
    pub failovers: std::sync::atomic::AtomicU64,
    /// Statements waiting now for a primary (the write hold's queue).
    pub holding: std::sync::atomic::AtomicUsize,
    /// Statements that waited for a primary, by outcome.
    pub holds_served: std::sync::atomic::AtomicU64,
    pub holds_timed_out: std::sync::atomic::AtomicU64,
    /// Seconds without an elected primary, observed when one is elected again.
    pub absent: Option<metrics::Histogram>,
    /// Seconds a statement waited for a primary.
    pub hold: Option<metrics::Histogram>,
    /// When the last failover elected a new primary (see `since_failover`).
    pub failover_at: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl Observer {
    /// Time since the last failover, if there was one.
    pub fn since_failover(&self) -> Option<std::time::Duration> {
        self.failover_at.lock().map(|t| t.elapsed())
    }

    /// Counts a statement that waits for a primary until the guard is dropped.
    pub fn hold_guard(&self) -> HoldGuard<'_> {
        self.holding.fetch_add(1, Ordering::Relaxed);
        HoldGuard {
            obs: self,
            started: std::time::Instant::now(),
            served: false,
        }
    }
}

/// One statement in the write hold.
pub struct HoldGuard<'a> {
    obs: &'a Observer,
    started: std::time::Instant,
    pub served: bool,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.obs.holding.fetch_sub(1, Ordering::Relaxed);
        let outcome = if self.served {
            &self.obs.holds_served
        } else {
            &self.obs.holds_timed_out
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.obs.hold {
            h.record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// One backend as a snapshot sees it.
#[derive(Clone)]
pub struct Entry {
    pub node: Arc<Node>,
    /// Where it came from: a backend name, or a pod name.
    pub key: String,
    /// The configured role: Primary, Standby, or Auto (left to the probes).
    pub configured: Role,
    /// The role a discovery label gives (None: not discovered).
    pub label: Option<Role>,
    /// The role the last probe found.
    pub probed: Option<Role>,
    /// The role in force: Primary or Standby; None while an Auto backend is unprobed.
    /// A discovered backend is primary only when its label and its probe agree.
    pub role: Option<Role>,
    /// Dolt's role epoch, from the probe.
    pub epoch: Option<u64>,
    pub healthy: bool,
    /// Within the maximum replication lag.
    pub lag_ok: bool,
    /// What a Dolt primary reports of its standbys' lag: (standby remote, lag in ms). Dolt
    /// standbys report none of their own.
    pub reported_lags: Vec<(String, Option<u64>)>,
    /// The first probe has finished.
    pub checked: bool,
    pub last_error: Option<String>,
    /// Drained by hand (admin): no new leases; work in flight finishes.
    pub drained: bool,
}

impl Entry {
    pub fn new(node: Arc<Node>, key: &str, configured: Role, label: Option<Role>) -> Entry {
        let mut e = Entry {
            node,
            key: key.to_string(),
            configured,
            label,
            probed: None,
            role: None,
            epoch: None,
            healthy: true,
            lag_ok: true,
            reported_lags: Vec::new(),
            checked: false,
            last_error: None,
            drained: false,
        };
        e.role = e.effective_role();
        e
    }

    /// The role in force from configuration, label and probe.
    pub fn effective_role(&self) -> Option<Role> {
        match (self.configured, self.label, self.probed) {
            (Role::Primary | Role::Standby, _, _) => Some(self.configured),
            (_, _, None) => None,
            (_, None, probed) => probed,
            (_, Some(l), Some(p)) if l == p => Some(p),
            // label and probe disagree (a failover under way): no writes there
            (_, Some(_), Some(_)) => Some(Role::Standby),
        }
    }
}

/// An immutable view of the topology.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    pub version: u64,
    /// Discovery has delivered its first set of backends.
    pub discovered: bool,
    /// Discovery cannot see the backends (an RBAC 403): not ready until it can.
    pub discovery_error: Option<String>,
}

impl Snapshot {
    /// The primary: the one healthy backend in that role. Two claim it: the higher epoch
    /// wins; if that cannot be told, there is none (writes wait rather than go to both).
    pub fn primary(&self) -> Option<&Arc<Node>> {
        let mut claims = self
            .entries
            .iter()
            .filter(|e| e.healthy && !e.drained && e.role == Some(Role::Primary));
        let first = claims.next()?;
        let mut best = (first, first.epoch);
        let mut tie = false;
        for e in claims {
            // several claims: only epochs can tell, and only when every claim has one
            let (Some(a), Some(b)) = (e.epoch, best.1) else {
                return None;
            };
            if a > b {
                best = (e, e.epoch);
                tie = false;
            } else if a == b {
                tie = true;
            }
        }
        (!tie).then_some(&best.0.node)
    }

    /// The healthy standby within lag with the fewest outstanding requests, skipping
    /// `exclude`; ties go round-robin from `spread`.
    pub fn standby(&self, exclude: Option<usize>, spread: usize) -> Option<&Arc<Node>> {
        let n = self.entries.len().max(1);
        (0..n)
            .map(|i| &self.entries[(i + spread) % n])
            .filter(|e| {
                e.role == Some(Role::Standby)
                    && e.healthy
                    && e.lag_ok
                    && !e.drained
                    && Some(e.node.id) != exclude
            })
            .min_by_key(|e| e.node.outstanding.load(Ordering::Relaxed))
            .map(|e| &e.node)
    }

    pub fn node(&self, id: usize) -> Option<&Entry> {
        self.entries.iter().find(|e| e.node.id == id)
    }

    /// Whether backend `id` is in the topology and in health.
    pub fn healthy(&self, id: usize) -> bool {
        self.node(id).is_some_and(|e| e.healthy)
    }

    /// Discovery has answered and every backend has had its first probe.
    pub fn ready(&self) -> bool {
        self.discovered && self.discovery_error.is_none() && self.entries.iter().all(|e| e.checked)
    }
}

/// What the owner is told.
#[derive(Debug)]
pub enum Update {
    /// A probe finished (an error only after the configured failures in a row).
    Probe {
        id: usize,
        result: Result<Probed, String>,
    },
    /// A session failed to connect or lost a connection: probe it now.
    Suspect { id: usize, error: String },
    /// A write was refused as read-only there: it is no primary now; find the one that is.
    ReadOnly { id: usize },
    /// The complete set of backends a discovery source sees now.
    Endpoints(Vec<Endpoint>),
    /// Drain a backend by hand (true) or put it back (false), by name.
    Drain { key: String, on: bool },
    /// New health settings or monitor credentials: the probes restart with them.
    Health(Box<NodeFactory>),
    /// Discovery is refused (RBAC): said until its next set of endpoints.
    DiscoveryFailed(String),
}

/// The handle sessions and the admin endpoint hold.
pub struct Topology {
    pub observer: Observer,
    current: ArcSwap<Snapshot>,
    updates: mpsc::Sender<Update>,
    version: watch::Sender<u64>,
}

impl Topology {
    /// An empty topology and the receiver its owner reads updates from.
    pub fn new() -> (Arc<Topology>, mpsc::Receiver<Update>) {
        Self::observed(Observer::default())
    }

    /// An empty topology that reports to `observer`.
    pub fn observed(observer: Observer) -> (Arc<Topology>, mpsc::Receiver<Update>) {
        let (tx, rx) = mpsc::channel(1024);
        let t = Topology {
            observer,
            current: ArcSwap::from_pointee(Snapshot::default()),
            updates: tx,
            version: watch::channel(0).0,
        };
        (Arc::new(t), rx)
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reports a passive failure signal (never blocks; dropped if the owner is busy).
    pub fn suspect(&self, id: usize, error: String) {
        let _ = self.updates.try_send(Update::Suspect { id, error });
    }

    /// Reports a write refused as read-only.
    pub fn read_only(&self, id: usize) {
        let _ = self.updates.try_send(Update::ReadOnly { id });
    }

    /// Asks the owner to drain a backend by name (or undrain it).
    pub async fn drain(&self, key: &str, on: bool) -> bool {
        let known = self.snapshot().entries.iter().any(|e| e.key == key);
        known
            && self
                .updates
                .send(Update::Drain {
                    key: key.to_string(),
                    on,
                })
                .await
                .is_ok()
    }

    pub fn sender(&self) -> mpsc::Sender<Update> {
        self.updates.clone()
    }

    /// Waits until a snapshot newer than `seen` is published or `deadline` passes.
    pub async fn changed_since(&self, seen: u64, deadline: tokio::time::Instant) {
        let mut rx = self.version.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|v| *v > seen)).await;
    }

    /// Resolves once a published snapshot has node `id` out of health (or gone): what a
    /// statement waiting on that node's reply gives up on.
    pub async fn failed(&self, id: usize) {
        let mut rx = self.version.subscribe();
        loop {
            if !self.snapshot().healthy(id) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    fn publish(&self, s: Snapshot) {
        let v = s.version;
        self.current.store(Arc::new(s));
        self.version.send_replace(v);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
