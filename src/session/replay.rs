//! Transaction replay: while a transaction runs, its statements (prepared executions with
//! their parameters) are kept with a digest of what the client was told of each. When the
//! transaction's connection is lost to a failover before COMMIT, the session opens the
//! transaction again on the new primary, replays the statements, compares each digest,
//! and then runs the statement that was interrupted as if nothing happened. A difference,
//! a statement whose effect cannot be replayed (clock, random, ids of the connection), or a
//! transaction over the bounds: the client gets 1213 (40001), as after a deadlock.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};

use super::backend_use::{relay_on, InUse};
use super::command::{Cmd, OwnedCmd};
use super::{Held, Session};
use crate::backend::relay::{Discard, RelayError};
use crate::protocol::messages::Refusal;
use crate::protocol::packet::PacketStream;
use crate::protocol::scan::ResponseKind;
use crate::router::{Statement, Target};

/// One statement of the running transaction and the digest of its reply.
pub struct Entry {
    pub cmd: OwnedCmd,
    pub digest: u64,
    /// Sequence id of the reply.
    pub seq: u8,
    /// Rows the client got (said when a replay differs).
    pub rows: u64,
    /// A plain (consistent, non-locking) read before anything else of the transaction but
    /// its BEGIN: its reply may differ on replay (see [`Journal::snapshot_moved`]).
    pub snapshot_read: bool,
}

/// Why a transaction cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreplayable {
    /// More statements or bytes than the bounds.
    TooLarge,
    /// A statement whose effect or reply depends on the moment or the connection.
    NonDeterministic,
    /// A statement replay cannot repeat (LOCAL INFILE, a cursor, long data).
    Unrepeatable,
}

impl Unreplayable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unreplayable::TooLarge => "too large",
            Unreplayable::NonDeterministic => "non-deterministic",
            Unreplayable::Unrepeatable => "unrepeatable",
        }
    }
}

/// The bounds of a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub statements: usize,
    pub bytes: usize,
}

/// The journal of the running transaction.
#[derive(Default)]
pub struct Journal {
    entries: Vec<Entry>,
    bytes: usize,
    broken: Option<Unreplayable>,
    /// A statement of the transaction changed rows: its COMMIT matters.
    wrote: bool,
    /// A statement other than BEGIN and plain reads was kept.
    past_reads: bool,
    /// A replay found what the transaction's first reads saw changed since (others
    /// committed after its snapshot): under REPEATABLE READ no plain read may follow.
    moved: bool,
}

/// What a kept statement is, for the first reads rule (see [`Journal::snapshot_moved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BEGIN, START TRANSACTION (and the like).
    Begin,
    /// A consistent, non-locking read: what the router sends to a standby.
    PlainRead,
    Other,
}

impl Kind {
    pub fn of(stmt: &Statement) -> Kind {
        if stmt.begins_transaction {
            Kind::Begin
        } else if stmt.target == Target::Standby {
            Kind::PlainRead
        } else {
            Kind::Other
        }
    }
}

/// A commit marker written inside the transaction just before its COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
}

impl Journal {
    /// Whether anything is kept (a transaction is being recorded).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.broken.is_none()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// What stops a replay, if anything.
    pub fn broken(&self) -> Option<Unreplayable> {
        self.broken
    }

    /// The transaction ended (or was lost): nothing to keep.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.broken = None;
        self.wrote = false;
        self.past_reads = false;
        self.moved = false;
    }

    /// Whether a replay moved the transaction's REPEATABLE READ snapshot: its plain reads
    /// would no longer all come from one snapshot, so none may run.
    pub fn snapshot_moved(&self) -> bool {
        self.moved
    }

    /// Whether a statement of the transaction changed rows.
    pub fn wrote(&self) -> bool {
        self.wrote
    }

    pub fn note_write(&mut self) {
        self.wrote = true;
    }

    /// Keeps a statement of the transaction with the digest of its reply; `sql` is its
    /// text (for an EXECUTE, the prepared statement's), `kind` what the router made of it.
    pub fn record(
        &mut self,
        cmd: &Cmd<'_>,
        (sql, kind): (Option<&[u8]>, Kind),
        (digest, seq, rows): (u64, u8, u64),
        b: Bounds,
    ) {
        if self.broken.is_some() {
            return;
        }
        let why = match sql {
            None => Some(Unreplayable::Unrepeatable),
            Some(_) if cmd.exec.is_some_and(|x| x.cursor) => Some(Unreplayable::Unrepeatable),
            Some(sql) if !replayable(sql) => Some(Unreplayable::NonDeterministic),
            Some(_) if self.entries.len() >= b.statements => Some(Unreplayable::TooLarge),
            Some(_) if self.bytes + cmd.payload.len() > b.bytes => Some(Unreplayable::TooLarge),
            Some(_) => None,
        };
        if let Some(why) = why {
            self.entries.clear();
            self.bytes = 0;
            self.broken = Some(why);
            return;
        }
        self.bytes += cmd.payload.len();
        let snapshot_read = !self.past_reads && kind == Kind::PlainRead;
        self.past_reads |= kind == Kind::Other;
        self.entries.push(Entry {
            cmd: OwnedCmd {
                payload: cmd.payload.to_vec(),
                exec: cmd.exec,
            },
            digest,
            seq,
            rows,
            snapshot_read,
        });
    }

    /// Marks the transaction as one that cannot be replayed.
    pub fn break_with(&mut self, why: Unreplayable) {
        self.entries.clear();
        self.bytes = 0;
        self.broken = Some(why);
    }
}

/// What the failed attempt means for the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The statement did not take effect, and the transaction is rolled back (or will be
    /// with its connection): replay it, then run the statement.
    Replayable,
    /// A COMMIT (or a statement that commits) may or may not have committed.
    InDoubt,
    /// Part of the reply reached the client, or replay is off: the transaction is lost.
    Lost,
}

/// Judges a failure of a statement on the transaction's connection. `commits`: the
/// statement ends the transaction by committing it.
pub fn judge(err: &RelayError, commits: bool) -> Loss {
    match err {
        // refused as read-only: it did not run (a COMMIT refused did not commit)
        RelayError::Refused(e) if e.refusal() == Some(Refusal::ReadOnly) => Loss::Replayable,
        RelayError::Refused(_) | RelayError::Backend { .. } if commits => match err {
            RelayError::Backend {
                err,
                client_touched: false,
                ..
            } if err.never_read() => Loss::Replayable,
            _ => Loss::InDoubt,
        },
        // killed, or the connection died: the server rolls the transaction back
        RelayError::Refused(_) => Loss::Replayable,
        RelayError::Backend {
            client_touched: false,
            ..
        } => Loss::Replayable,
        RelayError::Backend { .. } | RelayError::Client(_) => Loss::Lost,
    }
}

/// A statement that commits the transaction if it runs: COMMIT, and those with an implicit
/// commit (DDL, LOCK TABLES, a new BEGIN, SET autocommit).
pub fn commits(sql: &[u8]) -> bool {
    let w = crate::router::first_keyword(sql);
    let upper: Vec<u8> = sql.iter().map(u8::to_ascii_uppercase).collect();
    let has = |k: &[u8]| upper.windows(k.len()).any(|x| x == k);
    match w.as_bytes() {
        b"COMMIT" | b"CREATE" | b"ALTER" | b"DROP" | b"RENAME" | b"TRUNCATE" | b"GRANT"
        | b"REVOKE" | b"LOCK" | b"UNLOCK" | b"BEGIN" | b"START" | b"XA" | b"ANALYZE"
        | b"OPTIMIZE" | b"REPAIR" | b"FLUSH" | b"INSTALL" | b"UNINSTALL" => true,
        b"SET" => has(b"AUTOCOMMIT"),
        _ => false,
    }
}

/// The replays under way across sessions. After a failover every interrupted transaction
/// replays at once; one that finished first and committed would change what the others
/// read back (a mismatch, a needless 1213). So a COMMIT waits, briefly, while replays run.
#[derive(Default)]
pub struct Replaying {
    running: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

/// How long a COMMIT waits for replays under way, at most (a replay blocked on a lock the
/// waiting transaction holds must not wait for it long).
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// How long after a failover's election COMMITs wait for interrupted sessions to notice
/// and start their replays.
const AFTER_FAILOVER: std::time::Duration = std::time::Duration::from_millis(100);

impl Replaying {
    fn start(&self) -> ReplayGuard<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        ReplayGuard(self)
    }

    /// Waits (bounded) until no replay is under way. Right after a failover every
    /// interrupted session replays, and some only notice at their next statement: COMMITs
    /// wait out a short window after the election first.
    pub async fn settle(&self, since_failover: Option<std::time::Duration>) {
        if let Some(left) = since_failover.and_then(|d| AFTER_FAILOVER.checked_sub(d)) {
            tokio::time::sleep(left).await;
        }
        let until = tokio::time::Instant::now() + COMMIT_WAIT;
        while self.running.load(Ordering::Relaxed) > 0 {
            let done = self.done.notified();
            if self.running.load(Ordering::Relaxed) == 0
                || tokio::time::timeout_at(until, done).await.is_err()
            {
                return;
            }
        }
    }
}

struct ReplayGuard<'a>(&'a Replaying);

impl Drop for ReplayGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.done.notify_waiters();
    }
}

/// Replay attempts when the replay itself meets a failover still under way.
const ATTEMPTS: u32 = 4;

/// How long a session's end may spend deleting its commit marker.
const FORGET_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Whether this statement's reply is digested for the journal.
    pub(super) fn journal_digest(&self, stmt: &Statement) -> Option<DefaultHasher> {
        let on = self.shared.limits.load().replay.is_some();
        let txn = self.in_transaction() || stmt.begins_transaction || !self.autocommit();
        (on && txn).then(DefaultHasher::new)
    }

    /// After a statement relayed whole: kept while its transaction runs, dropped when the
    /// transaction ends.
    pub(super) fn journal_record(
        &mut self,
        (cmd, stmt): (&Cmd<'_>, &Statement),
        digest: Option<DefaultHasher>,
        (seq, rows, changed): (u8, u64, bool),
    ) {
        let bounds = self.shared.limits.load().replay;
        let (Some(bounds), true) = (bounds, self.in_transaction()) else {
            self.journal.clear();
            return;
        };
        let long_data = cmd
            .exec
            .is_some_and(|x| self.pins.contains(super::pins::Pin::LongData(x.id)));
        let mut j = std::mem::take(&mut self.journal);
        if changed {
            j.note_write();
        }
        match digest {
            Some(_) if long_data => j.break_with(Unreplayable::Unrepeatable),
            Some(h) => j.record(
                cmd,
                (self.statement_sql(cmd), Kind::of(stmt)),
                (h.finish(), seq, rows),
                bounds,
            ),
            None => j.break_with(Unreplayable::Unrepeatable),
        }
        self.journal = j;
    }

    /// A failure on the transaction's connection, told to the topology: a read-only
    /// refusal demotes the node, anything else makes it probed now.
    pub(super) fn note_loss(&self, node: usize, err: &RelayError) {
        let topo = &self.shared.topology;
        match err {
            RelayError::Refused(e) if e.refusal() == Some(Refusal::ReadOnly) => {
                topo.read_only(node)
            }
            _ => topo.suspect(node, err.to_string()),
        }
    }

    /// The transaction's connection is gone and it was not replayed: the client gets 1213
    /// and the lost-transaction rule (or 9004 and a close, for state that cannot be rebuilt).
    pub(super) async fn transaction_lost(
        &mut self,
        node: usize,
        detail: String,
    ) -> Result<(), super::SessionEnd> {
        let lost = self.lose_connection(self.node_name(node), detail);
        self.journal.clear();
        self.send_err(self.reply_seq, &lost).await?;
        if self.closing {
            return Err(super::SessionEnd::Closed(format!("lost {lost}")));
        }
        Ok(())
    }

    /// The held connection's backend is no longer the primary (a failover was seen before
    /// this statement): the transaction is replayed on the new one. Some(node): it could
    /// not be.
    pub(super) async fn replay_if_held_moved(&mut self) -> Option<usize> {
        let h = self.held.as_ref().filter(|h| !h.standby)?;
        let node = h.node;
        let elected = self.shared.topology.snapshot().primary().map(|n| n.id);
        if elected == Some(node) || !self.may_replay() {
            return None; // as it was, or the usual lost-transaction path
        }
        if Box::pin(self.replay_transaction(None)).await {
            return None;
        }
        Some(node)
    }

    /// A COMMIT whose connection died after it was sent: it may have committed or not, and
    /// nothing here can tell. The client gets what a server's death gives, 2013, and the
    /// connection closes, as it would have.
    pub(super) async fn commit_in_doubt(
        &mut self,
        err: &RelayError,
    ) -> Result<(), super::SessionEnd> {
        self.shared
            .stats
            .commits_in_doubt
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, "COMMIT in flight when its connection was lost: its outcome is unknown; closing the client with 2013");
        self.journal.clear();
        self.txn.lose_connection();
        self.closing = true;
        let e = crate::error::ClientError::BackendLost {
            backend: String::new(),
            detail: "the COMMIT's outcome is unknown".into(),
        };
        self.send_err(self.reply_seq, &e).await?;
        Err(super::SessionEnd::Closed("COMMIT in doubt".into()))
    }

    /// Before a plain COMMIT of a transaction that changed rows, with a marker table
    /// configured: the marker is written inside the transaction, so that the COMMIT's
    /// outcome can be found out if its connection dies. Err: the connection failed on it
    /// (the COMMIT was not sent).
    pub(super) async fn write_mark(
        &mut self,
        u: &mut InUse,
        cmd: &Cmd<'_>,
    ) -> Result<Option<Mark>, RelayError> {
        let table = self.shared.limits.load().commit_marker.clone();
        let plain_commit = self
            .statement_sql(cmd)
            .is_some_and(|s| crate::router::first_keyword(s).as_bytes() == b"COMMIT");
        let (Some(table), true) = (table, plain_commit && self.journal.wrote() && u.from_held)
        else {
            return Ok(None);
        };
        let seq = self.marks + 1;
        let sql = format!(
            "INSERT INTO {table} (instance, conn, seq) VALUES ({}, {}, {seq}) ON DUPLICATE KEY UPDATE seq = VALUES(seq)",
            self.shared.instance, self.handle.id
        );
        match u.lease.conn().query_ok(&sql).await {
            Ok(_) => {
                self.marks = seq;
                Ok(Some(Mark { seq }))
            }
            Err(crate::backend::BackendError::Server(e)) if e.refusal().is_some() => {
                Err(RelayError::Refused(e))
            }
            Err(crate::backend::BackendError::Server(e)) => {
                tracing::warn!(%table, error = %e.text(), "the commit marker could not be written; COMMIT goes on unmarked");
                Ok(None)
            }
            Err(e) => Err(RelayError::Backend {
                err: e.into_proto(),
                client_touched: false,
                mid_packet: false,
            }),
        }
    }

    /// Whether the marked COMMIT took effect, asked of the primary (after a failover, the
    /// new one, which applied everything the fenced one committed). None: cannot tell.
    pub(super) async fn commit_outcome(&mut self, mark: Mark) -> Option<bool> {
        let table = self.shared.limits.load().commit_marker.clone()?;
        let sql = format!(
            "SELECT seq FROM {table} WHERE instance = {} AND conn = {}",
            self.shared.instance, self.handle.id
        );
        let mut u = self.acquire(Target::Primary, None).await.ok()?;
        let rows = u.lease.conn().query_rows(&sql).await.ok()?;
        u.lease.release();
        let seq = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        Some(seq == Some(mark.seq))
    }

    /// The session ends: its marker row is of no more use and is deleted on the primary
    /// (bounded; a row left by a failure or a crash is the operator's to prune by `at`).
    pub(super) async fn forget_marks(&mut self) {
        let Some(table) = self.shared.limits.load().commit_marker.clone() else {
            return;
        };
        if self.marks == 0 {
            return;
        }
        drop(self.held.take()); // an open transaction is not this DELETE's
        let sql = format!(
            "DELETE FROM {table} WHERE instance = {} AND conn = {}",
            self.shared.instance, self.handle.id
        );
        let work = async {
            let mut u = self.acquire(Target::Primary, None).await.ok()?;
            let conn = u.lease.conn();
            // a session with autocommit off leaves the DELETE open: COMMIT it
            let done = conn.query_ok(&sql).await.is_ok() && conn.query_ok("COMMIT").await.is_ok();
            u.lease.release();
            Some(done)
        };
        let done = tokio::time::timeout(FORGET_WAIT, work).await;
        tracing::debug!(?done, "commit marker deleted at the session's end");
    }

    /// A COMMIT whose connection died after it was sent: did it commit? Some(true): yes (or
    /// the transaction changed nothing); Some(false): no, its marker is absent; None: cannot
    /// tell (no marker).
    pub(super) async fn resolve_commit(&mut self, mark: Option<Mark>) -> Option<bool> {
        if !self.journal.wrote() {
            return Some(true); // nothing to commit: its COMMIT changes nothing either way
        }
        let found = self.commit_outcome(mark?).await;
        let st = &self.shared.stats;
        if found.is_some() {
            st.commits_resolved.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(committed = ?found, "a COMMIT lost in flight, found out by its marker");
        found
    }

    /// The COMMIT took effect although its reply was lost: the client gets its OK.
    pub(super) async fn committed_after_all(&mut self) -> Result<(), super::SessionEnd> {
        self.journal.clear();
        self.txn.end_deferred();
        self.send_ok().await
    }

    /// A replay moved the transaction's snapshot and this statement would read it (see
    /// [`allowed_after_move`]): Some(node of the held connection), to lose the transaction.
    pub(super) fn snapshot_forbids(&self, cmd: &Cmd<'_>) -> Option<usize> {
        let moved = self.in_transaction() && self.journal.snapshot_moved();
        let allowed = || self.statement_sql(cmd).is_some_and(allowed_after_move);
        if !moved || allowed() {
            return None;
        }
        self.shared
            .stats
            .replays_moved_lost
            .fetch_add(1, Ordering::Relaxed);
        Some(self.held.as_ref().map_or(usize::MAX, |h| h.node))
    }

    /// Whether a deadlock (1213) that ends the running transaction is replayed rather than
    /// told: the reply of a statement on its connection is held back if it is one.
    pub(super) fn deadlock_replayable(&self) -> bool {
        self.shared.limits.load().replay_deadlocks && self.may_replay()
    }

    /// Whether the running transaction can be replayed if its connection is lost.
    pub(super) fn may_replay(&self) -> bool {
        self.in_transaction()
            && self.journal.broken().is_none()
            && !self.journal.entries().is_empty()
            && self.pins.unrecoverable().is_none()
    }

    /// The transaction's connection is gone (a failover): the transaction opens again on
    /// the primary and its statements are replayed, each reply compared with what the
    /// client got. True: the session holds the new connection in the same state; false:
    /// the transaction is lost.
    pub(super) async fn replay_transaction(&mut self, refused_on: Option<usize>) -> bool {
        Box::pin(self.replay_for(refused_on, Cause::Failover)).await
    }

    /// The server chose the transaction as a deadlock's victim and rolled it back: it is
    /// replayed the same way (on a new connection; the old one said it was in one).
    pub(super) async fn replay_deadlocked(&mut self) -> bool {
        self.shared
            .stats
            .deadlocks_replayed
            .fetch_add(1, Ordering::Relaxed);
        Box::pin(self.replay_for(None, Cause::Deadlock)).await
    }

    async fn replay_for(&mut self, refused_on: Option<usize>, cause: Cause) -> bool {
        let journal = std::mem::take(&mut self.journal);
        self.held = None;
        let shared = self.shared.clone();
        // COMMITs elsewhere wait for failover replays only: a deadlock's winner may be one
        let _running = (cause == Cause::Failover).then(|| shared.replaying.start());
        let deadline = tokio::time::Instant::now() + self.shared.limits.load().write_hold;
        let mut avoid = refused_on;
        let mut done = Err("no attempt");
        for _ in 0..ATTEMPTS {
            self.wait_primary_other_than(avoid, deadline).await;
            match self.replay_once(&journal).await {
                Ok(u) => {
                    done = Ok(u);
                    break;
                }
                Err(Retry::Differs(i)) => {
                    tracing::info!(statement = i, "replay: a reply differs from the client's");
                    done = Err("a reply differs");
                    break;
                }
                Err(Retry::Again(node)) => {
                    avoid = node;
                    done = Err("the failover went on past the attempts or the write hold");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let st = &self.shared.stats;
        let (u, moved) = match done {
            Ok(u) => u,
            Err(why) => {
                st.replays_failed.fetch_add(1, Ordering::Relaxed);
                let statements = journal.entries().len();
                tracing::info!(statements, why, ?cause, "transaction replay failed");
                return false;
            }
        };
        if moved {
            st.replays_moved.fetch_add(1, Ordering::Relaxed);
        } else {
            st.replays.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(statements = journal.entries().len(), moved, ?cause, backend = %self.node_name(u.node), "transaction replayed");
        self.held = Some(Held {
            lease: u.lease,
            node: u.node,
            standby: u.standby,
        });
        self.journal = journal;
        self.journal.moved |= moved;
        true
    }

    /// Waits (bounded) until the snapshot's primary is not `node` (the one that refused).
    async fn wait_primary_other_than(&self, node: Option<usize>, deadline: tokio::time::Instant) {
        let Some(node) = node else {
            return;
        };
        let topo = &self.shared.topology;
        while tokio::time::Instant::now() < deadline {
            let snap = topo.snapshot();
            if snap.primary().is_some_and(|n| n.id != node) {
                return;
            }
            let v = snap.version;
            drop(snap);
            let step =
                (tokio::time::Instant::now() + std::time::Duration::from_millis(50)).min(deadline);
            topo.changed_since(v, step).await;
        }
    }

    /// One replay on the primary. Ok(moved): the first reads' snapshot moved (see
    /// [`Journal::snapshot_moved`]).
    async fn replay_once(&mut self, journal: &Journal) -> Result<(InUse, bool), Retry> {
        self.in_replay = true;
        let leased = self.acquire(Target::Primary, None).await;
        self.in_replay = false;
        let mut u = leased.map_err(|_| Retry::Again(None))?;
        let node = u.node;
        let mut level = None; // asked at the first read that differs
        let limits = self.shared.limits.load_full();
        let mut sink = PacketStream::new(Discard, limits.max_packet);
        let hold = limits.replay_deadlocks;
        for (i, e) in journal.entries().iter().enumerate() {
            let enc = self.encoding(u.lease.conn_ref().tracks);
            let cmd = e.cmd.as_cmd();
            let wire = match self.wire_payload(&mut u, &cmd).await {
                Ok(w) => w.into_owned(),
                Err(_) => return Err(Retry::Again(None)),
            };
            let mut h = DefaultHasher::new();
            let kind = (ResponseKind::Results, enc, e.seq);
            let (r, _) = relay_on(u.lease.conn(), &mut sink, &wire, kind, Some(&mut h), hold).await;
            let summary = match r {
                Ok(summary) => summary,
                // refused as read-only: another primary is coming; killed or lost (a
                // promotion kills connections too): the same one may do
                Err(RelayError::Refused(err)) if err.refusal() == Some(Refusal::ReadOnly) => {
                    self.shared.topology.read_only(node);
                    return Err(Retry::Again(Some(node)));
                }
                // the replay itself was a deadlock's victim: again, on another connection
                Err(RelayError::Refused(err)) if err.deadlock() => return Err(Retry::Again(None)),
                Err(e) => {
                    self.shared.topology.suspect(node, e.to_string());
                    return Err(Retry::Again(None));
                }
            };
            if h.finish() != e.digest {
                // a first read that saw what others committed after the client's snapshot:
                // the client's answer was true of it, and what follows reads the latest
                // rows (writes, locking reads), unless the level is SERIALIZABLE
                let first_read = e.snapshot_read && summary.error.is_none();
                let level = match level {
                    Some(l) => l,
                    None if first_read => *level.insert(isolation(&mut u).await),
                    None => Isolation::Exact,
                };
                if !first_read || level == Isolation::Exact {
                    let sql = self
                        .statement_sql(&cmd)
                        .map(|s| String::from_utf8_lossy(s).into_owned());
                    tracing::debug!(statement = i, sql = ?sql, rows_then = e.rows, rows_now = summary.rows, error = ?summary.error.as_ref().map(|e| e.code), "replay: reply differs");
                    return Err(Retry::Differs(i));
                }
            }
            if let Some(st) = summary.status {
                u.lease.conn().status = st;
            }
            self.take_status(&summary);
        }
        Ok((u, level == Some(Isolation::Snapshot)))
    }
}

/// What the connection's isolation level lets a transaction's first reads do on replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// REPEATABLE READ: differ, and then no plain read may follow.
    Snapshot,
    /// READ COMMITTED, READ UNCOMMITTED: differ (each statement reads what is committed).
    Committed,
    /// SERIALIZABLE (reads lock: a difference is a conflict), or not known: never differ.
    Exact,
}

async fn isolation(u: &mut InUse) -> Isolation {
    let conn = u.lease.conn();
    let sql = if conn.profile.mariadb {
        "SELECT @@session.tx_isolation"
    } else {
        "SELECT @@session.transaction_isolation"
    };
    let rows = conn.query_rows(sql).await.unwrap_or_default();
    let level = rows.first().and_then(|r| r.first()).cloned().flatten();
    match level.unwrap_or_default().to_ascii_uppercase().as_slice() {
        b"REPEATABLE-READ" => Isolation::Snapshot,
        b"READ-COMMITTED" | b"READ-UNCOMMITTED" => Isolation::Committed,
        _ => Isolation::Exact,
    }
}

/// What lost the transaction's connection or its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A failover: refused as read-only, killed, or the connection died.
    Failover,
    /// The server rolled it back as a deadlock's victim.
    Deadlock,
}

/// Why one replay attempt stopped.
enum Retry {
    /// The reply of this statement differs from the client's: the transaction is lost.
    Differs(usize),
    /// The replay met the failover (a refusal, a lost connection): try again on another
    /// primary than this one.
    Again(Option<usize>),
}

/// What may still run in a transaction whose snapshot a replay moved: writes and locking
/// reads (which read the latest rows in InnoDB's REPEATABLE READ too) and its end; a plain
/// read (or anything else) would read the new snapshot after the client saw the old one.
pub fn allowed_after_move(sql: &[u8]) -> bool {
    match crate::router::first_keyword(sql).as_bytes() {
        b"INSERT" | b"UPDATE" | b"DELETE" | b"REPLACE" | b"COMMIT" | b"ROLLBACK" | b"SAVEPOINT"
        | b"RELEASE" => true,
        b"SELECT" => ends_locking(sql),
        _ => false,
    }
}

/// The statement ends with a locking clause (`FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE
/// MODE`, then perhaps `NOWAIT`, `SKIP LOCKED` or `WAIT n`): not the words in a literal.
fn ends_locking(sql: &[u8]) -> bool {
    let upper: Vec<u8> = sql.iter().map(u8::to_ascii_uppercase).collect();
    let mut words: Vec<&[u8]> = upper
        .split(|b| b.is_ascii_whitespace() || *b == b';')
        .filter(|w| !w.is_empty())
        .collect();
    match words.as_slice() {
        [.., b"NOWAIT"] => drop(words.pop()),
        [.., b"SKIP", b"LOCKED"] => words.truncate(words.len() - 2),
        [.., b"WAIT", n] if n.iter().all(u8::is_ascii_digit) => words.truncate(words.len() - 2),
        _ => {}
    }
    matches!(
        words.as_slice(),
        [.., b"FOR", b"UPDATE"] | [.., b"FOR", b"SHARE"] | [.., b"LOCK", b"IN", b"SHARE", b"MODE"]
    )
}

/// A statement that gives the same effect and reply when run again on another server with
/// the same data: no clock, random or connection ids, no unordered LIMIT, no LOAD DATA
/// LOCAL (its file is the client's), no SHOW or `@@` (server state).
pub fn replayable(sql: &[u8]) -> bool {
    let upper: Vec<u8> = sql.iter().map(u8::to_ascii_uppercase).collect();
    let has = |w: &[u8]| upper.windows(w.len()).any(|x| x == w);
    let first = crate::router::first_keyword(sql);
    let first = first.as_bytes();
    super::optimistic::deterministic(sql)
        && !has(b"@@")
        && !has(b"LAST_INSERT_ID")
        && !has(b"ROW_COUNT")
        && !has(b"FOUND_ROWS")
        && !has(b"GET_LOCK")
        && !(first == b"LOAD" && has(b"LOCAL"))
        && first != b"CALL"
        && first != b"HANDLER"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::command::ExecInfo;

    const B: Bounds = Bounds {
        statements: 3,
        bytes: 100,
    };

    fn q(sql: &str) -> Vec<u8> {
        let mut p = vec![crate::protocol::command::COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        p
    }

    fn rec(j: &mut Journal, sql: &str) {
        let p = q(sql);
        let kind = Kind::of(&crate::router::classify(sql.as_bytes()));
        j.record(&Cmd::plain(&p), (Some(sql.as_bytes()), kind), (7, 1, 0), B);
    }

    #[test]
    fn keeps_statements_until_a_bound() {
        let mut j = Journal::default();
        assert!(j.is_empty());
        rec(&mut j, "BEGIN");
        rec(&mut j, "UPDATE t SET v = 1 WHERE id = 2");
        rec(&mut j, "SELECT v FROM t WHERE id = 2");
        assert_eq!(j.entries().len(), 3);
        assert_eq!(j.broken(), None);
        rec(&mut j, "SELECT 1");
        assert_eq!(j.broken(), Some(Unreplayable::TooLarge));
        assert!(j.entries().is_empty(), "nothing kept once it cannot replay");
        j.clear();
        assert!(j.is_empty());
        rec(&mut j, &format!("SELECT '{}'", "x".repeat(120)));
        assert_eq!(j.broken(), Some(Unreplayable::TooLarge), "bytes bound");
    }

    #[test]
    fn only_first_plain_reads_may_find_a_newer_snapshot() {
        let mut j = Journal::default();
        let b = Bounds {
            statements: 10,
            bytes: 1000,
        };
        for sql in [
            "BEGIN",
            "SELECT c FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 2 FOR UPDATE",
            "SELECT c FROM t WHERE id = 3",
            "UPDATE t SET c = 1 WHERE id = 3",
            "SELECT c FROM t WHERE id = 3",
        ] {
            let kind = Kind::of(&crate::router::classify(sql.as_bytes()));
            j.record(
                &Cmd::plain(&q(sql)),
                (Some(sql.as_bytes()), kind),
                (7, 1, 0),
                b,
            );
        }
        let tolerant: Vec<bool> = j.entries().iter().map(|e| e.snapshot_read).collect();
        assert_eq!(
            tolerant,
            [false, true, false, false, false, false],
            "a locking read ends the first reads; a read after it must match"
        );
        assert!(!j.snapshot_moved());
    }

    fn plain_read(sql: &str) -> bool {
        Kind::of(&crate::router::classify(sql.as_bytes())) == Kind::PlainRead
    }

    #[test]
    fn plain_reads_and_what_may_follow_a_moved_snapshot() {
        for sql in [
            "SELECT c FROM t WHERE id = 1",
            "select sum(k) from t where id between 1 and 9;",
            "/* x */ SELECT 1",
        ] {
            assert!(plain_read(sql), "{sql}");
            assert!(!allowed_after_move(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT c FROM t WHERE id = 1 FOR UPDATE",
            "SELECT c FROM t LOCK IN SHARE MODE",
            "SELECT c FROM t FOR SHARE",
            "SELECT c INTO @x FROM t",
            "SELECT 1; DELETE FROM t",
            "UPDATE t SET c = 1",
        ] {
            assert!(!plain_read(sql), "{sql}");
        }
        for sql in [
            "UPDATE t SET c = c + 1 WHERE id = 2",
            "INSERT INTO t SELECT * FROM u",
            "DELETE FROM t WHERE id = 3",
            "SELECT c FROM t WHERE id = 1 FOR UPDATE",
            "select c from t where id = 1 for update skip locked;",
            "SELECT c FROM t LOCK IN SHARE MODE WAIT 5",
            "COMMIT",
            "ROLLBACK",
        ] {
            assert!(allowed_after_move(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SHOW TABLES",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "DO 1",
            "SELECT 'FOR UPDATE' FROM t",
            "SELECT c FROM t WHERE c = 'x FOR UPDATE'",
        ] {
            assert!(!allowed_after_move(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn non_deterministic_or_unrepeatable_statements_stop_it() {
        for sql in [
            "INSERT INTO t VALUES (RAND())",
            "UPDATE t SET at = NOW()",
            "SELECT LAST_INSERT_ID()",
            "SELECT @@hostname",
            "SELECT * FROM t LIMIT 1",
            "LOAD DATA LOCAL INFILE 'x' INTO TABLE t",
            "CALL p()",
        ] {
            let mut j = Journal::default();
            rec(&mut j, sql);
            assert!(j.broken().is_some(), "{sql}");
        }
        let mut j = Journal::default();
        let p = vec![0x17, 1, 0, 0, 0, 1];
        let cursor = ExecInfo {
            id: 1,
            types_at: 0,
            bound: false,
            cursor: true,
        };
        let cmd = Cmd {
            payload: &p,
            exec: Some(cursor),
        };
        j.record(&cmd, (Some(b"SELECT 1"), Kind::PlainRead), (0, 1, 0), B);
        assert_eq!(j.broken(), Some(Unreplayable::Unrepeatable));
        let mut j = Journal::default();
        j.record(&Cmd::plain(&q("x")), (None, Kind::Other), (0, 1, 0), B);
        assert_eq!(
            j.broken(),
            Some(Unreplayable::Unrepeatable),
            "unknown statement"
        );
    }
}
