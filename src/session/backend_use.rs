//! Getting a backend connection for a command and giving it back: the route decision,
//! the lease (or the held connection), state sync, and what happens when a backend fails.

use std::collections::hash_map::DefaultHasher;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::registry::Running;
use super::{Held, Session, SessionEnd};
use crate::backend::relay::{Relay, RelayError};
use crate::backend::BackendError;
use crate::config::RoutePolicy;
use crate::error::ClientError;
use crate::pool::{Lease, PoolError};
use crate::protocol::scan::{Encoding, ResponseKind, Scanner, Summary};
use crate::protocol::ProtoError;
use crate::router::{self, Target};

/// A backend connection in use for one command.
pub struct InUse {
    pub lease: Lease,
    pub node: usize,
    pub standby: bool,
    pub from_held: bool,
    /// The connection of the previous statement, for one that must run on it (FOUND_ROWS(),
    /// SHOW WARNINGS): never run elsewhere instead.
    pub previous: bool,
}

/// How a forwarded command ended.
pub struct Forwarded {
    pub result: Result<Summary, RelayError>,
    pub out_seq: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Where a statement runs when no connection is held.
    pub(super) fn route(&self, stmt: &router::Statement) -> Target {
        let ctx = router::Context {
            primary_only: self.policy == RoutePolicy::Primary,
            autocommit: self.autocommit(),
            in_transaction: self.in_transaction(),
            recent_untracked_write: self.read_your_writes(),
        };
        router::route(stmt, &ctx)
    }

    /// A write on a backend without GTIDs was recent: reads stay on the primary.
    pub(super) fn read_your_writes(&self) -> bool {
        let Some(w) = self.shared.limits.load().read_your_writes else {
            return false;
        };
        !w.is_zero() && self.last_write.is_some_and(|t| t.elapsed() < w)
    }

    /// Whether a standby lease must first wait for the session's last write
    /// (read-your-writes): a write it has not been seen to apply yet.
    fn causal_needed(&mut self, node: usize) -> bool {
        if self.shared.limits.load().read_your_writes.is_none() {
            return false;
        }
        if self.shared.limits.load().causal_global {
            self.follow_global_gtid();
        }
        let needed = self
            .causal
            .as_ref()
            .is_some_and(|c| !c.applied.contains(&node));
        if needed {
            let st = &self.shared.stats;
            st.causal_waits.fetch_add(1, Ordering::Relaxed);
        }
        needed
    }

    /// Whether a standby connection applies the session's last write within the causal
    /// timeout.
    async fn causal_applied(&self, lease: &mut Lease) -> Result<bool, BackendError> {
        let Some(c) = self.causal.as_ref() else {
            return Ok(true);
        };
        let timeout = self.shared.limits.load().causal_timeout;
        lease.conn().wait_gtid(&c.gtid, timeout).await
    }

    /// Remembers (until the next write) a standby that applied the session's last write.
    fn note_causal(&mut self, node: usize, applied: bool) {
        match (applied, self.causal.as_mut()) {
            (true, Some(c)) => c.applied.push(node),
            (true, None) => {}
            (false, _) => {
                let st = &self.shared.stats;
                st.causal_fallbacks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `work` on a standby's connection, given up if the standby leaves health meanwhile
    /// (a frozen server never answers; the probes notice).
    pub(super) async fn unless_failed<T>(
        &self,
        node: usize,
        standby: bool,
        work: impl std::future::Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        if !standby {
            return work.await;
        }
        let r = tokio::select! {
            biased;
            r = work => r,
            () = self.handle.stalled_on(&self.shared.topology, node) => {
                Err(BackendError::Io(stopped_answering()))
            }
        };
        self.handle.done_waiting();
        r
    }

    /// In global mode the write to wait for is the last any session made.
    fn follow_global_gtid(&mut self) {
        let latest = self.shared.last_gtid.lock().clone();
        let Some(gtid) = latest else { return };
        if self.causal.as_ref().is_some_and(|c| c.gtid == gtid) {
            return;
        }
        self.causal = Some(super::Causal {
            gtid,
            applied: Vec::new(),
        });
    }

    /// The connection that ran the previous statement, if it is idle and untouched since.
    pub(super) async fn acquire_previous(&mut self, target: Target) -> Option<InUse> {
        let last = self.last_conn?;
        let snap = self.shared.topology.snapshot();
        let entry = snap.node(last.node).cloned()?;
        // the elected primary, not any node whose probe says primary (two claimants)
        let primary = snap.primary().is_some_and(|n| n.id == last.node);
        // a statement bound for the primary never reuses a standby's connection
        if !entry.healthy || (target == Target::Primary && !primary) {
            return None;
        }
        let mut lease = self.shared.pools_of(&entry.node).take_idle(
            &self.user,
            self.class,
            last.thread_id,
            last.leases,
        )?;
        let standby = !primary;
        let sync = lease.conn().sync(&self.want);
        self.unless_failed(last.node, standby, sync).await.ok()?;
        Some(InUse {
            lease,
            node: last.node,
            standby,
            from_held: false,
            previous: true,
        })
    }

    /// The held connection, or a lease for `target` synced to the session's state. A
    /// read whose standby cannot be reached goes to another standby, then the primary.
    /// With no backend for the target, the statement waits up to the write hold.
    pub(super) async fn acquire(
        &mut self,
        mut target: Target,
        mut exclude: Option<usize>,
    ) -> Result<InUse, ClientError> {
        if let Some(h) = self.held.take() {
            let diagnostics = self.pins.only_diagnostics(); // a same-connection read
            if !(h.standby && target == Target::Primary && !self.in_transaction()) || diagnostics {
                return self.check_held(h);
            }
            // a standby held for a cursor or long data never takes a write: the statement
            // gets a primary connection of its own, the held one stays
            self.held = Some(h);
        }
        let deadline = tokio::time::Instant::now() + self.shared.limits.load().write_hold;
        let mut last_err = None;
        let mut tries = 0;
        while tries < 3 {
            tries += 1;
            let version = self.shared.topology.snapshot().version;
            let (node, standby) = match self.pick_or_hold(target, exclude, deadline).await {
                Ok(found) => found,
                Err(e) => return Err(last_err.unwrap_or(e)),
            };
            match self.lease_synced(&node, standby).await {
                // not applied in time: the session's own write is on the primary
                Ok(None) => target = Target::Primary,
                Ok(Some(lease)) => {
                    return Ok(InUse {
                        lease,
                        node: node.id,
                        standby,
                        from_held: false,
                        previous: false,
                    });
                }
                Err(e @ ClientError::Server(_)) => return Err(e),
                Err(e) if standby => {
                    exclude = Some(node.id);
                    last_err = Some(e);
                }
                // the primary cannot be reached (it died, unnoticed yet): it is suspected
                // and probed now; wait, within the write hold, for the topology to change
                Err(e @ ClientError::BackendUnavailable { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    let step = tokio::time::Instant::now() + std::time::Duration::from_millis(250);
                    self.shared
                        .topology
                        .changed_since(version, step.min(deadline))
                        .await;
                    last_err = Some(e);
                    tries -= 1; // waiting for the failover is not a failed try
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::Internal("no backend connection".into())))
    }

    /// A held connection whose backend stopped being primary (a failover) cannot go on:
    /// its transaction is lost, or the session state it holds.
    fn check_held(&mut self, h: Held) -> Result<InUse, ClientError> {
        let elected = self
            .shared
            .topology
            .snapshot()
            .primary()
            .is_some_and(|n| n.id == h.node);
        if h.standby || elected {
            return Ok(InUse {
                lease: h.lease,
                node: h.node,
                standby: h.standby,
                from_held: true,
                previous: false,
            });
        }
        tracing::info!(
            backend = h.node,
            "held connection's backend is no longer primary"
        );
        let backend = self.node_name(h.node);
        drop(h);
        Err(self.lose_connection(backend, "it is no longer the primary".into()))
    }

    /// The one path for a held or running connection that is gone (its backend died or
    /// stopped being primary): what the client is told, and the session's state after it.
    /// A transaction is lost (only ROLLBACK or a new BEGIN until it ends); state that
    /// cannot be rebuilt elsewhere (temp tables, locks, variables) closes the session.
    pub(super) fn lose_connection(&mut self, backend: String, detail: String) -> ClientError {
        self.spec = super::optimistic::Spec::Off;
        let in_txn = self.txn.lose_connection();
        let replay = self.journal.broken().map(|b| b.as_str());
        tracing::info!(%backend, %detail, in_transaction = in_txn, ?replay, "the connection holding the session's state was lost");
        if let Some(what) = self.pins.unrecoverable() {
            self.closing = true;
            return ClientError::SessionStateLost(what);
        }
        self.pins.clear();
        if in_txn {
            ClientError::TransactionLost
        } else {
            ClientError::BackendLost { backend, detail }
        }
    }

    /// A backend for `target`, waiting (up to `deadline`) for a snapshot that has one.
    async fn pick_or_hold(
        &self,
        target: Target,
        exclude: Option<usize>,
        deadline: tokio::time::Instant,
    ) -> Result<(std::sync::Arc<crate::topology::Node>, bool), ClientError> {
        let topo = &self.shared.topology;
        let version = topo.snapshot().version;
        let first = self.pick(target, exclude);
        if first.is_ok() || tokio::time::Instant::now() >= deadline {
            return first;
        }
        // the hold: counted while it lasts, its wait observed
        let mut hold = topo.observer.hold_guard();
        topo.changed_since(version, deadline).await;
        loop {
            let version = topo.snapshot().version;
            match self.pick(target, exclude) {
                Ok(found) => {
                    hold.served = true;
                    return Ok(found);
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => topo.changed_since(version, deadline).await,
            }
        }
    }

    /// A lease on `node` in the session's state; a pooled connection that fails on the
    /// way is replaced once. On a standby the session's last write is waited for first (a
    /// schema it created must exist before the sync's COM_INIT_DB): None when it was not
    /// applied in time.
    async fn lease_synced(
        &mut self,
        node: &crate::topology::Node,
        standby: bool,
    ) -> Result<Option<Lease>, ClientError> {
        for attempt in 0..2 {
            let mut lease = self.lease_on(node).await?;
            let ready = if standby && self.causal_needed(node.id) {
                let wait = self.causal_applied(&mut lease);
                let r = self.unless_failed(node.id, true, wait).await;
                if let Ok(applied) = r {
                    self.note_causal(node.id, applied);
                }
                r
            } else {
                Ok(true)
            };
            let synced = match ready {
                Ok(true) => {
                    let sync = lease.conn().sync(&self.want);
                    self.unless_failed(node.id, standby, sync).await
                }
                // the wait itself refused (a server without it): the primary has the write
                Ok(false) | Err(BackendError::Server(_)) => {
                    lease.release();
                    return Ok(None);
                }
                Err(e) => Err(e),
            };
            match synced {
                Ok(()) => return Ok(Some(lease)),
                Err(BackendError::Server(e)) => return Err(e.into()),
                // a pooled connection that had died is replaced once, unless the backend
                // itself left health meanwhile (a frozen standby: another one runs it)
                Err(e) if attempt == 0 && self.shared.topology.snapshot().healthy(node.id) => {
                    tracing::debug!(backend = %node.name, error = %e, "pooled connection failed on sync; retrying");
                }
                Err(e) => return Err(self.unavailable(node, e.to_string())),
            }
        }
        Err(ClientError::Internal("unreachable".into()))
    }

    fn pick(
        &self,
        target: Target,
        exclude: Option<usize>,
    ) -> Result<(std::sync::Arc<crate::topology::Node>, bool), ClientError> {
        let snap = self.shared.topology.snapshot();
        let found = match target {
            Target::Standby => snap
                .standby(
                    exclude,
                    self.shared.stats.queries.load(Ordering::Relaxed) as usize,
                )
                .map(|n| (n.clone(), true))
                .or_else(|| snap.primary().map(|n| (n.clone(), false))),
            Target::Primary => snap.primary().map(|n| (n.clone(), false)),
        };
        found.ok_or_else(|| ClientError::BackendUnavailable {
            role: if target == Target::Primary {
                "primary"
            } else {
                "healthy"
            },
            detail: String::new(),
        })
    }

    async fn lease_on(&self, node: &crate::topology::Node) -> Result<Lease, ClientError> {
        let timeout = self.shared.limits.load().lease_timeout;
        let no_schema = self.want.schema.is_none();
        match self
            .shared
            .pools_of(node)
            .lease_where(
                &self.user,
                self.class,
                timeout,
                &|c| {
                    // a schema cannot be unset: a client without one needs one without one
                    !no_schema || c.state.schema.is_none()
                },
                self.in_replay,
            )
            .await
        {
            Ok(l) => Ok(l),
            Err(PoolError::Timeout(_)) => Err(ClientError::LeaseTimeout {
                backend: node.name.clone(),
                ms: timeout.as_millis() as u64,
            }),
            Err(e) => Err(self.unavailable(node, e.to_string())),
        }
    }

    fn unavailable(&self, node: &crate::topology::Node, detail: String) -> ClientError {
        self.shared.topology.suspect(node.id, detail.clone());
        ClientError::BackendUnavailable {
            role: "reachable",
            detail: format!(" ({}: {detail})", node.name),
        }
    }

    /// Sends a command on a connection and relays its response to the client; with a
    /// digest, every byte the client gets is hashed too.
    pub(super) async fn forward(
        &mut self,
        u: &mut InUse,
        payload: &[u8],
        kind: ResponseKind,
        digest: Option<&mut DefaultHasher>,
    ) -> Forwarded {
        let enc = self.encoding(u.lease.conn_ref().tracks);
        let seq = self.reply_seq;
        let running = Running {
            node: u.node,
            thread_id: u.lease.conn_ref().thread_id,
        };
        *self.handle.running.lock() = Some(running);
        let hold = u.from_held && self.deadlock_replayable();
        // a standby read waits for its first reply byte only while the standby is healthy
        // (a frozen server never answers; another standby runs the read)
        let watch = u.standby && !u.from_held && !u.previous && !self.in_transaction();
        let (topology, handle, node) = (&self.shared.topology, &self.handle, u.node);
        let give_up = async move {
            match watch {
                true => handle.stalled_on(topology, node).await,
                false => std::future::pending().await,
            }
        };
        let conn = u.lease.conn();
        let first = (payload, give_up);
        let (result, out_seq) =
            relay_giving_up(conn, &mut self.io, first, (kind, enc, seq), digest, hold).await;
        if watch {
            self.handle.done_waiting();
        }
        *self.handle.running.lock() = None;
        if let Some(st) = result.as_ref().ok().and_then(|s| s.status) {
            u.lease.conn().status = st; // the pool checks it before taking the connection back
        }
        if let Some(e) = result.as_ref().ok().and_then(|s| s.error.as_ref()) {
            let origin = super::registry::Origin::Server;
            self.shared.stats.errors.count(origin, e.code);
        }
        Forwarded { result, out_seq }
    }

    /// Keeps the connection for the next command (transaction or pin) or returns it.
    pub(super) fn finish(&mut self, u: InUse) {
        let c = u.lease.conn_ref();
        self.last_conn = Some(super::LastConn {
            node: u.node,
            thread_id: c.thread_id,
            leases: c.leases,
        });
        if self.held.is_some() && !u.from_held {
            if !self.in_transaction() {
                u.lease.release(); // the held standby stays held for its pin
                return;
            }
            tracing::debug!("a transaction began beside a held standby connection; dropping it");
        }
        if self.in_transaction() || !self.pins.is_empty() {
            self.held = Some(Held {
                lease: u.lease,
                node: u.node,
                standby: u.standby,
            });
        } else {
            u.lease.release();
        }
    }

    /// Takes the status flags of a response as the session's own.
    pub(super) fn take_status(&mut self, s: &Summary) {
        if let Some(st) = s.status {
            self.txn.server_says(st);
        }
        if let Some(ok) = s.last_ok {
            if ok.last_insert_id != 0 {
                self.last_insert_id = ok.last_insert_id;
            }
        }
    }

    pub(super) fn note_write(&mut self) {
        self.last_write = Some(Instant::now());
    }

    /// A backend failed while running a command: tell the client what was lost.
    pub(super) async fn backend_lost(
        &mut self,
        u: InUse,
        err: ProtoError,
        seq: u8,
    ) -> Result<(), SessionEnd> {
        let name = self.node_name(u.node);
        tracing::warn!(backend = %name, error = %err, "backend connection lost during a command");
        self.shared.topology.suspect(u.node, err.to_string());
        drop(u);
        let e = self.lose_connection(name, err.to_string());
        self.send_err(seq, &e).await?;
        if self.closing {
            return Err(SessionEnd::Closed(format!("lost {e}")));
        }
        Ok(())
    }

    pub(super) fn node_name(&self, id: usize) -> String {
        self.shared
            .topology
            .snapshot()
            .node(id)
            .map(|e| e.node.name.clone())
            .unwrap_or_default()
    }

    /// The client went away mid-response: the connection is dropped (never pooled) and
    /// the query still running on the server is killed.
    pub(super) fn abandon(&mut self, u: InUse) {
        let thread_id = u.lease.conn_ref().thread_id;
        let node = u.node;
        drop(u);
        self.spawn_kill_query(node, thread_id, self.user.clone(), None);
    }

    /// KILL QUERY on a backend thread, over a pooled connection of `user`.
    pub(super) fn spawn_kill_query(
        &self,
        node: usize,
        thread_id: u32,
        user: String,
        still: Option<(std::sync::Arc<super::registry::Handle>, Running)>,
    ) {
        let Some(entry) = self.shared.topology.snapshot().node(node).cloned() else {
            return;
        };
        let timeout = self.shared.limits.load().lease_timeout;
        let class = self.class;
        let pools = self.shared.pools_of(&entry.node);
        tokio::spawn(async move {
            let Ok(mut lease) = pools.lease(&user, class, timeout).await else {
                return;
            };
            if let Some((h, r)) = &still {
                if *h.running.lock() != Some(*r) {
                    lease.release();
                    return; // the statement ended; its connection may serve another now
                }
            }
            let r = lease
                .conn()
                .query_ok(&format!("KILL QUERY {thread_id}"))
                .await;
            match r {
                Ok(_) => lease.release(),
                Err(e) if !e.is_fatal() => lease.release(),
                Err(_) => {}
            }
        });
    }

    /// A statement the router could not judge (it goes to the primary) is counted.
    pub(super) fn count_fallback(&self, stmt: &crate::router::Statement) {
        if stmt.unparsed {
            let s = &self.shared.stats;
            s.parse_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn count_route(&self, u: &InUse) {
        let s = &self.shared.stats;
        s.queries.fetch_add(1, Ordering::Relaxed);
        if u.standby {
            s.standby_reads.fetch_add(1, Ordering::Relaxed);
        } else {
            s.primary_statements.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends `payload` on `conn` and relays the response to `client`.
pub(super) async fn relay_on<C: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut crate::backend::BackendConn,
    client: &mut crate::protocol::packet::PacketStream<C>,
    payload: &[u8],
    (kind, enc, reply_seq): (ResponseKind, Encoding, u8),
    digest: Option<&mut DefaultHasher>,
    hold_deadlock: bool,
) -> (Result<Summary, RelayError>, u8) {
    let give_up = std::future::pending();
    let first = (payload, give_up);
    relay_giving_up(
        conn,
        client,
        first,
        (kind, enc, reply_seq),
        digest,
        hold_deadlock,
    )
    .await
}

/// [`relay_on`], giving up (before any byte reached the client) if `give_up` resolves
/// before the first byte of the reply arrives.
pub(super) async fn relay_giving_up<C: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut crate::backend::BackendConn,
    client: &mut crate::protocol::packet::PacketStream<C>,
    (payload, give_up): (&[u8], impl std::future::Future<Output = ()>),
    (kind, enc, reply_seq): (ResponseKind, Encoding, u8),
    digest: Option<&mut DefaultHasher>,
    hold_deadlock: bool,
) -> (Result<Summary, RelayError>, u8) {
    let unsent = |err| {
        let e = RelayError::Backend {
            err,
            client_touched: false,
            mid_packet: false,
        };
        (Err(e), reply_seq)
    };
    conn.queue_command(payload);
    if let Err(err) = conn.io.flush().await {
        return unsent(err);
    }
    let first = tokio::select! {
        biased;
        r = conn.io.fill(1) => r,
        () = give_up => Err(stopped_answering()),
    };
    if let Err(err) = first {
        return unsent(err);
    }
    let mut relay = Relay {
        backend: &mut conn.io,
        client,
        out_seq: reply_seq,
        touched: false,
        backend_seq: 0,
        hold_deadlock,
        digest,
    };
    let mut scanner = Scanner::new(kind, enc);
    let result = relay.run(&mut scanner).await;
    (result, relay.out_seq)
}

/// A backend waited on that the probes took out of health meanwhile.
fn stopped_answering() -> ProtoError {
    ProtoError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the backend stopped answering (out of health)",
    ))
}
