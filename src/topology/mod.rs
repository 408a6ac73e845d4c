//! The topology: which backends exist, their roles and health. One owner task applies
//! updates (health results, passive failure reports) and publishes immutable snapshots;
//! sessions load the current snapshot at each lease, with no lock on the hot path.

pub mod health;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::Role;
use crate::pool::NodePools;

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
    pub role: Role,
    pub healthy: bool,
    /// The first health check has finished.
    pub checked: bool,
    pub last_error: Option<String>,
}

/// An immutable view of the topology.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    pub version: u64,
}

impl Snapshot {
    /// The healthy primary, if any.
    pub fn primary(&self) -> Option<&Arc<Node>> {
        self.entries
            .iter()
            .find(|e| e.role == Role::Primary && e.healthy)
            .map(|e| &e.node)
    }

    /// The healthy standby with the fewest outstanding requests, skipping `exclude`;
    /// ties go round-robin from `spread`.
    pub fn standby(&self, exclude: Option<usize>, spread: usize) -> Option<&Arc<Node>> {
        let n = self.entries.len().max(1);
        (0..n)
            .map(|i| &self.entries[(i + spread) % n])
            .filter(|e| e.role == Role::Standby && e.healthy && Some(e.node.id) != exclude)
            .min_by_key(|e| e.node.pools.outstanding.load(Ordering::Relaxed))
            .map(|e| &e.node)
    }

    pub fn node(&self, id: usize) -> Option<&Entry> {
        self.entries.iter().find(|e| e.node.id == id)
    }

    /// Every backend has had its first health check.
    pub fn ready(&self) -> bool {
        self.entries.iter().all(|e| e.checked)
    }
}

/// What the owner is told.
#[derive(Debug)]
pub enum Update {
    /// A health check finished.
    Health {
        id: usize,
        ok: bool,
        error: Option<String>,
    },
    /// A session failed to connect or lost a connection: check again soon.
    Suspect { id: usize, error: String },
}

/// The handle sessions and the admin endpoint hold.
pub struct Topology {
    current: ArcSwap<Snapshot>,
    updates: mpsc::Sender<Update>,
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

    pub fn sender(&self) -> mpsc::Sender<Update> {
        self.updates.clone()
    }

    fn publish(&self, s: Snapshot) {
        self.current.store(Arc::new(s));
    }
}

/// The owner loop: applies updates and publishes snapshots until every sender is gone.
pub async fn run_owner(
    topo: Arc<Topology>,
    mut rx: mpsc::Receiver<Update>,
    pokes: Vec<Arc<tokio::sync::Notify>>,
) {
    while let Some(u) = rx.recv().await {
        let mut next = (**topo.current.load()).clone();
        let changed = apply(&mut next, u, &pokes);
        if changed {
            next.version += 1;
            topo.publish(next);
        }
    }
}

fn apply(s: &mut Snapshot, u: Update, pokes: &[Arc<tokio::sync::Notify>]) -> bool {
    match u {
        Update::Health { id, ok, error } => {
            let Some(e) = s.entries.iter_mut().find(|e| e.node.id == id) else {
                return false;
            };
            let changed = e.healthy != ok || !e.checked || e.last_error != error;
            if e.healthy && !ok {
                tracing::warn!(backend = %e.node.name, error = ?error, "backend unhealthy");
                e.node.pools.drain_idle();
            } else if !e.healthy && ok {
                tracing::info!(backend = %e.node.name, "backend healthy");
            }
            e.healthy = ok;
            e.checked = true;
            e.last_error = error;
            changed
        }
        Update::Suspect { id, error } => {
            tracing::debug!(backend = id, %error, "passive failure signal");
            if let Some(p) = pokes.get(id) {
                p.notify_one();
            }
            false
        }
    }
}
