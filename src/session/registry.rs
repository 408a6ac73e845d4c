//! Live client sessions by proxy connection id: what KILL needs (which backend thread
//! runs a session's command now) and what /status shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The backend connection a session is using at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub node: usize,
    pub thread_id: u32,
}

/// The statement text a session view keeps (its start).
pub const STATEMENT_SHOWN: usize = 120;

/// What `GET /sessions` shows of a session, updated at each command's start and end (no
/// allocation on the way: the statement's start is copied into a fixed buffer).
#[derive(Debug, Clone)]
pub struct View {
    pub schema: Option<String>,
    pub in_transaction: bool,
    pub pins: Vec<&'static str>,
    /// The backend connection held between commands: (backend id, thread id).
    pub held: Option<(usize, u32)>,
    /// The command running now: its start, and its text's first bytes.
    pub since: Option<std::time::Instant>,
    pub statement: [u8; STATEMENT_SHOWN],
    pub statement_len: usize,
}

impl Default for View {
    fn default() -> Self {
        View {
            schema: None,
            in_transaction: false,
            pins: Vec::new(),
            held: None,
            since: None,
            statement: [0; STATEMENT_SHOWN],
            statement_len: 0,
        }
    }
}

/// What other tasks may see of and do to one session.
pub struct Handle {
    pub id: u32,
    pub user: Mutex<String>,
    /// The client's address.
    pub client: String,
    /// The client connection runs over TLS.
    pub tls: bool,
    pub running: Mutex<Option<Running>>,
    pub view: Mutex<View>,
    /// Notified to close the session (KILL CONNECTION).
    pub close: Notify,
    /// The backend (id + 1; 0: none) whose reply the session waits for and may give up
    /// on: a standby read's (see [`Handle::stalled_on`]).
    waiting_on: AtomicUsize,
    /// Wakes the waiter when that backend leaves health.
    stalled: Notify,
}

impl Handle {
    /// Resolves once backend `node` is out of health while the session waits on it (or
    /// already is); till then the session is listed as waiting on it.
    pub async fn stalled_on(&self, topology: &crate::topology::Topology, node: usize) {
        let woken = self.stalled.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // SeqCst: a sweep that misses this store comes after the snapshot checked below
        self.waiting_on.store(node + 1, Ordering::SeqCst);
        if !topology.snapshot().healthy(node) {
            return;
        }
        woken.await
    }

    /// The session no longer waits on a backend's reply.
    pub fn done_waiting(&self) {
        self.waiting_on.store(0, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU32,
    map: Mutex<HashMap<u32, Arc<Handle>>>,
}

impl Registry {
    /// A fresh connection id before the user is known.
    pub fn next_id(&self) -> u32 {
        self.next
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .max(1)
    }

    pub fn insert(&self, id: u32, user: &str, client: &str, tls: bool) -> Arc<Handle> {
        let h = Arc::new(Handle {
            id,
            user: Mutex::new(user.to_string()),
            client: client.to_string(),
            tls,
            running: Mutex::new(None),
            view: Mutex::new(View::default()),
            close: Notify::new(),
            waiting_on: AtomicUsize::new(0),
            stalled: Notify::new(),
        });
        self.map.lock().insert(id, h.clone());
        h
    }

    /// Backend `id` left health (or the topology): sessions waiting on its reply give up.
    pub fn give_up_on(&self, id: usize) {
        for h in self.map.lock().values() {
            if h.waiting_on.load(Ordering::SeqCst) == id + 1 {
                h.stalled.notify_waiters();
            }
        }
    }

    pub fn remove(&self, id: u32) {
        self.map.lock().remove(&id);
    }

    /// Every live session, by id.
    pub fn all(&self) -> Vec<Arc<Handle>> {
        let mut v: Vec<_> = self.map.lock().values().cloned().collect();
        v.sort_by_key(|h| h.id);
        v
    }

    pub fn get(&self, id: u32) -> Option<Arc<Handle>> {
        self.map.lock().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Session-wide counters for /status.
#[derive(Default)]
pub struct Stats {
    pub auth_failures: std::sync::atomic::AtomicU64,
    pub rejected_connections: std::sync::atomic::AtomicU64,
    pub queries: std::sync::atomic::AtomicU64,
    pub standby_reads: std::sync::atomic::AtomicU64,
    pub primary_statements: std::sync::atomic::AtomicU64,
    pub read_retries: std::sync::atomic::AtomicU64,
    /// Statements refused as read-only or by a killed connection and run again.
    pub reroutes: std::sync::atomic::AtomicU64,
    /// Optimistic transactions moved to the primary with equal reads, and those that could not.
    pub optimistic_moved: std::sync::atomic::AtomicU64,
    pub optimistic_failed: std::sync::atomic::AtomicU64,
    /// Reads that waited on a standby for the session's last write, and those that went
    /// to the primary because the standby had not applied it in time.
    pub causal_waits: std::sync::atomic::AtomicU64,
    pub causal_fallbacks: std::sync::atomic::AtomicU64,
    pub pins: Mutex<HashMap<&'static str, u64>>,
    /// Client connections accepted (before authentication).
    pub accepted_connections: std::sync::atomic::AtomicU64,
    /// Statements the fast path could not clear and sqlparser could not parse: sent to
    /// the primary to be safe.
    pub parse_fallbacks: std::sync::atomic::AtomicU64,
    /// Error packets by origin and code.
    pub errors: ErrorCounts,
    /// Transactions replayed on a new primary after their connection was lost, those
    /// that could not be (1213), and COMMITs lost in flight (2013).
    pub replays: std::sync::atomic::AtomicU64,
    pub replays_failed: std::sync::atomic::AtomicU64,
    /// Replayed, the first reads finding a newer snapshot; and of those, lost later to
    /// a plain read (REPEATABLE READ).
    pub replays_moved: std::sync::atomic::AtomicU64,
    pub replays_moved_lost: std::sync::atomic::AtomicU64,
    /// Transactions a deadlock rolled back, replayed (or tried).
    pub deadlocks_replayed: std::sync::atomic::AtomicU64,
    pub commits_in_doubt: std::sync::atomic::AtomicU64,
    /// COMMITs lost in flight whose outcome the commit marker told.
    pub commits_resolved: std::sync::atomic::AtomicU64,
}

/// Where an error packet a client got came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// switchyard wrote it.
    Proxy = 0,
    /// A backend wrote it and switchyard relayed it.
    Server = 1,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Proxy => "proxy",
            Origin::Server => "server",
        }
    }
}

/// Error counts by (origin, code), one atomic per possible code: counting takes no lock
/// and allocates nothing. Codes at or above `CODES` (none MySQL or MariaDB use) share the
/// last slot.
pub struct ErrorCounts {
    counts: Box<[std::sync::atomic::AtomicU64]>,
}

impl ErrorCounts {
    pub const CODES: usize = 10_000;

    pub fn count(&self, origin: Origin, code: u16) {
        let i = origin as usize * Self::CODES + usize::from(code).min(Self::CODES - 1);
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every (origin, code, count) with a count above zero.
    pub fn nonzero(&self) -> Vec<(Origin, u16, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(std::sync::atomic::Ordering::Relaxed);
                let origin = if i < Self::CODES {
                    Origin::Proxy
                } else {
                    Origin::Server
                };
                (n > 0).then_some((origin, (i % Self::CODES) as u16, n))
            })
            .collect()
    }
}

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts {
            counts: (0..2 * Self::CODES).map(|_| Default::default()).collect(),
        }
    }
}

impl Stats {
    pub fn count_pin(&self, name: &'static str) {
        *self.pins.lock().entry(name).or_default() += 1;
    }
}
