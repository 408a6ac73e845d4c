//! The topology: which backends exist, their roles and health. One owner task applies
//! updates (probe results, passive failure signals, read-only errors, and later discovery)
//! and publishes immutable snapshots; sessions load the current snapshot at each lease,
//! with no lock on the hot path, and may wait for the next one (the write hold).

pub mod probe;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Role;
use crate::pool::NodePools;
use probe::Probed;

/// A backend server: its identity and its pools. Role and health live in snapshots.
pub struct Node {
    pub id: usize,
    pub name: String,
    pub address: String,
    pub pools: NodePools,
}

/// One backend as a snapshot sees it.
#[derive(Clone)]
pub struct Entry {
    pub node: Arc<Node>,
    /// The configured role: Primary, Standby, or Auto (left to the probes).
    pub configured: Role,
    /// The role in force: Primary or Standby; None while an Auto backend is unprobed.
    pub role: Option<Role>,
    /// Dolt's role epoch, from the probe.
    pub epoch: Option<u64>,
    pub healthy: bool,
    /// Within the maximum replication lag.
    pub lag_ok: bool,
    /// The first probe has finished.
    pub checked: bool,
    pub last_error: Option<String>,
}

impl Entry {
    pub fn new(node: Arc<Node>, configured: Role) -> Entry {
        let role = (configured != Role::Auto).then_some(configured);
        Entry {
            node,
            configured,
            role,
            epoch: None,
            healthy: true,
            lag_ok: true,
            checked: false,
            last_error: None,
        }
    }
}

/// An immutable view of the topology.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    pub version: u64,
}

impl Snapshot {
    /// The primary: the one healthy backend in that role. Two claim it: the higher epoch
    /// wins; if that cannot be told, there is none (writes wait rather than go to both).
    pub fn primary(&self) -> Option<&Arc<Node>> {
        let mut claims = self
            .entries
            .iter()
            .filter(|e| e.healthy && e.role == Some(Role::Primary));
        let first = claims.next()?;
        let mut best = first;
        let mut unique = true;
        for e in claims {
            match (e.epoch, best.epoch) {
                (Some(a), Some(b)) if a > b => {
                    best = e;
                    unique = true;
                }
                (Some(a), Some(b)) if a < b => {}
                _ => unique = false,
            }
        }
        unique.then_some(&best.node)
    }

    /// The healthy standby within lag with the fewest outstanding requests, skipping
    /// `exclude`; ties go round-robin from `spread`.
    pub fn standby(&self, exclude: Option<usize>, spread: usize) -> Option<&Arc<Node>> {
        let n = self.entries.len().max(1);
        (0..n)
            .map(|i| &self.entries[(i + spread) % n])
            .filter(|e| {
                e.role == Some(Role::Standby) && e.healthy && e.lag_ok && Some(e.node.id) != exclude
            })
            .min_by_key(|e| e.node.pools.outstanding.load(Ordering::Relaxed))
            .map(|e| &e.node)
    }

    pub fn node(&self, id: usize) -> Option<&Entry> {
        self.entries.iter().find(|e| e.node.id == id)
    }

    /// Every backend has had its first probe.
    pub fn ready(&self) -> bool {
        self.entries.iter().all(|e| e.checked)
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
}

/// How the owner judges probes.
#[derive(Debug, Clone)]
pub struct Judge {
    pub max_lag: Option<Duration>,
}

/// The handle sessions and the admin endpoint hold.
pub struct Topology {
    current: ArcSwap<Snapshot>,
    updates: mpsc::Sender<Update>,
    version: watch::Sender<u64>,
}

impl Topology {
    pub fn new(entries: Vec<Entry>) -> (Arc<Topology>, mpsc::Receiver<Update>) {
        let (tx, rx) = mpsc::channel(1024);
        let t = Topology {
            current: ArcSwap::from_pointee(Snapshot {
                entries,
                version: 1,
            }),
            updates: tx,
            version: watch::channel(1).0,
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

    pub fn sender(&self) -> mpsc::Sender<Update> {
        self.updates.clone()
    }

    /// Waits until a snapshot newer than `seen` is published or `deadline` passes.
    pub async fn changed_since(&self, seen: u64, deadline: tokio::time::Instant) {
        let mut rx = self.version.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|v| *v > seen)).await;
    }

    fn publish(&self, s: Snapshot) {
        let v = s.version;
        self.current.store(Arc::new(s));
        self.version.send_replace(v);
    }
}

/// The owner loop: applies updates and publishes snapshots; `fast` tells the probes
/// whether a primary is missing (they probe every few milliseconds then).
pub async fn run_owner(
    topo: Arc<Topology>,
    mut rx: mpsc::Receiver<Update>,
    pokes: Vec<Arc<Notify>>,
    judge: Judge,
    fast: watch::Sender<bool>,
) {
    while let Some(u) = rx.recv().await {
        let mut next = (**topo.current.load()).clone();
        if apply(&mut next, u, &pokes, &judge) {
            next.version += 1;
            let missing = next.primary().is_none();
            topo.publish(next);
            fast.send_if_modified(|f| std::mem::replace(f, missing) != missing);
        }
    }
}

fn apply(s: &mut Snapshot, u: Update, pokes: &[Arc<Notify>], judge: &Judge) -> bool {
    match u {
        Update::Probe { id, result } => s
            .entries
            .iter_mut()
            .find(|e| e.node.id == id)
            .is_some_and(|e| apply_probe(e, result, judge)),
        Update::Suspect { id, error } => {
            tracing::debug!(backend = id, %error, "passive failure signal");
            if let Some(p) = pokes.get(id) {
                p.notify_one();
            }
            false
        }
        Update::ReadOnly { id } => {
            pokes.iter().for_each(|p| p.notify_one());
            let Some(e) = s.entries.iter_mut().find(|e| e.node.id == id) else {
                return false;
            };
            if e.configured != Role::Auto || e.role != Some(Role::Primary) {
                return false;
            }
            tracing::warn!(backend = %e.node.name, "write refused as read-only: no longer primary");
            set_role(e, Role::Standby);
            true
        }
    }
}

fn apply_probe(e: &mut Entry, result: Result<Probed, String>, judge: &Judge) -> bool {
    let before = (
        e.role,
        e.epoch,
        e.healthy,
        e.lag_ok,
        e.checked,
        e.last_error.clone(),
    );
    match result {
        Ok(p) => {
            if !e.healthy {
                tracing::info!(backend = %e.node.name, "backend healthy");
            }
            e.healthy = true;
            e.last_error = None;
            e.epoch = p.epoch;
            e.lag_ok = match (judge.max_lag, p.lag_ms) {
                (None, _) => true,
                (Some(max), Some(ms)) => ms <= max.as_millis() as u64,
                (Some(_), None) => false,
            };
            if e.configured == Role::Auto {
                set_role(e, p.role);
            }
        }
        Err(err) => {
            if e.healthy {
                tracing::warn!(backend = %e.node.name, error = %err, "backend unhealthy");
                e.node.pools.drain_idle();
            }
            e.healthy = false;
            e.last_error = Some(err);
        }
    }
    e.checked = true;
    before
        != (
            e.role,
            e.epoch,
            e.healthy,
            e.lag_ok,
            e.checked,
            e.last_error.clone(),
        )
}

fn set_role(e: &mut Entry, role: Role) {
    if e.role == Some(role) {
        return;
    }
    tracing::info!(backend = %e.node.name, from = ?e.role, to = role.as_str(), "role changed");
    if e.role == Some(Role::Primary) {
        e.node.pools.drain_idle(); // connections to a demoted primary are not reused
    }
    e.role = Some(role);
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
