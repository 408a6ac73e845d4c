//! COM_QUERY: classify, route, run on a backend with raw relay, then take the session
//! state the statement changed (status flags, variables, pins).

use tokio::io::{AsyncRead, AsyncWrite};

use super::backend_use::InUse;
use super::command::Cmd;
use super::outcome::{self, Attempt, Verdict};
use super::pins::{Ended, Pin};
use super::replay::{self, Loss};
use super::txn::Gate;
use super::{Session, SessionEnd};
use std::sync::atomic::Ordering;

use crate::backend::relay::RelayError;
use crate::backend::state::{Charset, ConnState};
use crate::backend::BackendError;
use crate::config::Role;
use crate::error::ClientError;
use crate::protocol::messages::{ErrInfo, Refusal};
use crate::protocol::scan::{ResponseKind, Summary};
use crate::protocol::{CapabilityFlags, ProtoError, StatusFlags};
use crate::router::{self, SessionChange, Statement, Target};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn com_query(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let sql = &p[1..];
        if self.txn.lost() && !self.lost_transaction_gate(Some(sql)).await? {
            return Ok(());
        }
        let stmt = if self.caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS) {
            router::classify_multi(sql)
        } else {
            router::classify(sql)
        };
        self.count_fallback(&stmt);
        if let Some(k) = stmt.kill {
            return self.kill(k.id, k.query_only).await;
        }
        match proxy_answered(sql) {
            Some(Answered::ConnectionId) => return self.answer_connection_id().await,
            Some(Answered::RowCount) => return self.answer_row_count().await,
            None => {}
        }
        let target = self.route(&stmt);
        self.run_statement(&Cmd::plain(p), &stmt, target, ResponseKind::Results)
            .await
    }

    /// Runs a command that a statement classification routes. Retries where nothing took
    /// effect: a read whose standby failed before any reply goes elsewhere once; a
    /// statement refused as read-only (a failover under way) or by a killed connection
    /// runs again on the true primary, within the write hold; so does one whose pooled
    /// connection the server had already closed without reading it (a reset). A write whose
    /// connection died otherwise is never run again: it may have taken effect.
    pub(super) async fn run_statement(
        &mut self,
        cmd: &Cmd<'_>,
        stmt: &Statement,
        mut target: Target,
        kind: ResponseKind,
    ) -> Result<(), SessionEnd> {
        self.end_diagnostics_hold(stmt);
        if self.optimistic(cmd, stmt).await? {
            return Ok(());
        }
        let started = std::time::Instant::now();
        if self.in_transaction() && self.statement_sql(cmd).is_some_and(replay::commits) {
            let since = self.shared.topology.observer.since_failover();
            self.shared.replaying.settle(since).await;
        }
        let deadline = tokio::time::Instant::now() + self.shared.limits.load().write_hold;
        let mut exclude = None;
        let mut retries = 0u32;
        loop {
            // the transaction's primary stopped being one (a failover): replayed first
            if let Some(node) = self.replay_if_held_moved().await {
                let detail = "it is no longer the primary".to_string();
                return Box::pin(self.transaction_lost(node, detail)).await;
            }
            // a replay moved its REPEATABLE READ snapshot: a plain read cannot run
            if let Some(node) = self.snapshot_forbids(cmd) {
                self.held = None;
                let detail = "a replay found its first reads changed since; a plain read would see the new snapshot".to_string();
                return Box::pin(self.transaction_lost(node, detail)).await;
            }
            let mut u = match self.acquire_for(cmd, stmt, target, exclude).await {
                Ok(u) => u,
                Err(e) => return self.send_err(self.reply_seq, &e).await,
            };
            let wire = match self.wire_payload(&mut u, cmd).await {
                Ok(w) => w,
                Err(BackendError::Server(e)) => {
                    self.finish(u);
                    return self.send_err(self.reply_seq, &e.into()).await;
                }
                // the connection failed before the statement was sent (preparing it there):
                // it never ran; another connection runs it, or the transaction is replayed
                Err(e) if retries < 3 && (!u.from_held || self.may_replay()) => {
                    let node = u.node;
                    self.shared.topology.suspect(node, e.to_string());
                    let held = u.from_held;
                    drop(u);
                    retries += 1;
                    if held && !Box::pin(self.replay_transaction(None)).await {
                        return Box::pin(self.transaction_lost(node, e.to_string())).await;
                    }
                    continue;
                }
                Err(e) => {
                    return Box::pin(self.backend_lost(u, e.into_proto(), self.reply_seq)).await
                }
            };
            let mark = match self.write_mark(&mut u, cmd).await {
                Ok(m) => m,
                Err(err) => {
                    // the COMMIT was not sent: as for a refused or lost statement
                    let node = u.node;
                    self.note_loss(node, &err);
                    drop(u);
                    retries += 1;
                    let read_only = matches!(&err, RelayError::Refused(e) if e.refusal() == Some(Refusal::ReadOnly));
                    if retries < 4
                        && self.may_replay()
                        && Box::pin(self.replay_transaction(read_only.then_some(node))).await
                    {
                        target = Target::Primary;
                        continue;
                    }
                    return Box::pin(self.transaction_lost(node, err.to_string())).await;
                }
            };
            self.count_route(&u);
            let mut digest = self.spec_digest().or_else(|| self.journal_digest(stmt));
            let f = self.forward(&mut u, &wire, kind, digest.as_mut()).await;
            match f.result {
                Ok(summary) => {
                    let took = started.elapsed();
                    self.shared
                        .metrics
                        .statement(u.standby, cmd.payload[0], took);
                    self.record_digest(cmd, &summary, took, u.standby);
                    let resolved = self.resolve_expressions(&mut u, stmt, &summary).await;
                    let ended = self.after_statement(&mut u, stmt, &summary, cmd, &resolved);
                    let journal = digest.clone();
                    self.spec_record(cmd, digest);
                    let changed = summary.last_ok.is_some_and(|o| o.affected_rows > 0);
                    self.journal_record(
                        (cmd, stmt),
                        journal,
                        (self.reply_seq, summary.rows, changed),
                    );
                    if partly_applied(stmt, &summary) && !self.in_transaction() && !u.from_held {
                        // some statements of a batch ran before one failed: what they
                        // changed is unknown here, so the connection is not pooled
                        self.last_conn = None;
                        drop(u);
                        return Ok(());
                    }
                    // a backend without state-change tracking (Dolt) cannot say what a
                    // procedure left on the connection: it is reset before it is pooled
                    let untracked_call = !u.lease.conn_ref().tracks && self.is_call(cmd);
                    if ended.reset || untracked_call {
                        self.reset_before_release(&mut u).await;
                    }
                    self.finish(u);
                    return Ok(());
                }
                // the server rolled the transaction back as a deadlock's victim (the
                // reply is held back only where it can be replayed)
                Err(RelayError::Refused(e)) if e.deadlock() => {
                    let node = u.node;
                    drop(u);
                    if retries < 4 && Box::pin(self.replay_deadlocked()).await {
                        retries += 1;
                        target = Target::Primary;
                        continue;
                    }
                    return Box::pin(self.transaction_lost(node, e.text())).await;
                }
                Err(err) => {
                    if u.from_held && !u.standby && self.in_transaction() {
                        let commits = self.statement_sql(cmd).is_some_and(replay::commits);
                        let mut loss = replay::judge(&err, commits);
                        if loss == Loss::Replayable && !(self.may_replay() && retries < 4) {
                            loss = Loss::Lost;
                        }
                        match loss {
                            Loss::Replayable => {
                                let node = u.node;
                                self.note_loss(node, &err);
                                drop(u);
                                // a read-only refusal: wait for another primary; a killed or
                                // lost connection: its node may still be the primary
                                let read_only = matches!(&err, RelayError::Refused(e) if e.refusal() == Some(Refusal::ReadOnly));
                                if Box::pin(self.replay_transaction(read_only.then_some(node)))
                                    .await
                                {
                                    target = Target::Primary;
                                    retries += 1;
                                    continue;
                                }
                                return Box::pin(self.transaction_lost(node, err.to_string()))
                                    .await;
                            }
                            Loss::InDoubt => {
                                let node = u.node;
                                self.note_loss(node, &err);
                                drop(u);
                                match Box::pin(self.resolve_commit(mark)).await {
                                    Some(true) => {
                                        return Box::pin(self.committed_after_all()).await
                                    }
                                    Some(false)
                                        if retries < 4
                                            && self.may_replay()
                                            && Box::pin(self.replay_transaction(None)).await =>
                                    {
                                        retries += 1;
                                        target = Target::Primary;
                                        continue;
                                    }
                                    Some(false) => {
                                        return Box::pin(
                                            self.transaction_lost(node, err.to_string()),
                                        )
                                        .await
                                    }
                                    None => return Box::pin(self.commit_in_doubt(&err)).await,
                                }
                            }
                            Loss::Lost if matches!(err, RelayError::Refused(_)) => {
                                // never the raw refusal inside a transaction: it is lost
                                let node = u.node;
                                self.note_loss(node, &err);
                                drop(u);
                                return Box::pin(self.transaction_lost(node, err.to_string()))
                                    .await;
                            }
                            Loss::Lost => {}
                        }
                    }
                    let a = Attempt {
                        standby: u.standby,
                        from_held: u.from_held,
                        auto: self.is_auto(u.node),
                        retries,
                        time_left: tokio::time::Instant::now() < deadline,
                        // a statement bound to its previous connection is not tried elsewhere
                        excluded: exclude.is_some() || u.previous,
                        rerunnable: self.rerunnable(cmd),
                        harmless: !self.in_transaction()
                            && (stmt.target == Target::Standby || stmt.begins_transaction),
                    };
                    let verdict = outcome::judge(&err, &a);
                    match (verdict, err) {
                        (Verdict::Rerun { to_primary }, RelayError::Refused(e)) => {
                            if to_primary {
                                target = Target::Primary;
                            }
                            Box::pin(self.after_refusal(u, &e, true, deadline)).await;
                            retries += 1;
                        }
                        (Verdict::PassRefusal, RelayError::Refused(e)) => {
                            Box::pin(self.after_refusal(u, &e, false, deadline)).await;
                            return self.send_err(self.reply_seq, &e.into()).await;
                        }
                        (Verdict::HeldLost, RelayError::Refused(e)) => {
                            // the held connection (a transaction, a pin) is gone with its state
                            let err = ProtoError::Io(std::io::Error::other(e.text()));
                            return Box::pin(self.backend_lost(u, err, self.reply_seq)).await;
                        }
                        (Verdict::CloseClient, RelayError::Backend { err, .. }) => {
                            // half a packet reached the client: nothing can follow it
                            tracing::warn!(error = %err, "backend lost inside a packet; closing the client");
                            self.shared.topology.suspect(u.node, err.to_string());
                            return Err(SessionEnd::Closed("backend lost mid-packet".into()));
                        }
                        (Verdict::RetryElsewhere, RelayError::Backend { err, .. }) => {
                            tracing::info!(error = %err, "read failed on a standby before any reply; retrying elsewhere");
                            self.shared.topology.suspect(u.node, err.to_string());
                            if matches!(&err, ProtoError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
                            {
                                // given up while the standby may still run it (slow, not
                                // frozen): the work it would waste is stopped, best effort
                                let thread = u.lease.conn_ref().thread_id;
                                self.spawn_kill_query(u.node, thread, self.user.clone(), None);
                            }
                            self.shared
                                .stats
                                .read_retries
                                .fetch_add(1, Ordering::Relaxed);
                            exclude = Some(u.node);
                        }
                        (Verdict::RerunUnread, RelayError::Backend { err, .. }) => {
                            // a pooled connection the server had already closed (Dolt kills
                            // them on a role change): another connection runs it
                            tracing::info!(error = %err, "the server had closed the connection; running the statement on another");
                            self.shared.topology.suspect(u.node, err.to_string());
                            self.shared.stats.reroutes.fetch_add(1, Ordering::Relaxed);
                            retries += 1;
                        }
                        (Verdict::ClientGone, RelayError::Client(e)) => {
                            self.abandon(u);
                            return Err(SessionEnd::Client(e));
                        }
                        (_, RelayError::Backend { err, .. }) => {
                            return Box::pin(self.backend_lost(u, err, f.out_seq)).await
                        }
                        (_, other) => {
                            let err = ProtoError::Io(std::io::Error::other(other.to_string()));
                            return Box::pin(self.backend_lost(u, err, f.out_seq)).await;
                        }
                    }
                }
            }
        }
    }

    /// Adds a statement to the query digests.
    fn record_digest(
        &mut self,
        cmd: &Cmd<'_>,
        s: &Summary,
        took: std::time::Duration,
        standby: bool,
    ) {
        let query = cmd.exec.is_some() || cmd.payload[0] == crate::protocol::command::COM_QUERY;
        if !self.shared.digests.enabled() || !query {
            return;
        }
        let mut text = std::mem::take(&mut self.digest_buf);
        let Some(hash) = self
            .statement_sql(cmd)
            .map(|sql| router::digest::digest(sql, &mut text))
        else {
            self.digest_buf = text;
            return;
        };
        self.shared.digests.record(&crate::digest::Observation {
            user: &self.user,
            schema: self.want.schema.as_deref(),
            text: &text,
            hash,
            took,
            rows: s.rows,
            error: s.error.is_some(),
            standby,
        });
        self.digest_buf = text;
    }

    /// Whether a node's role is left to the probes.
    fn is_auto(&self, node: usize) -> bool {
        self.shared
            .topology
            .snapshot()
            .node(node)
            .is_some_and(|n| n.configured == Role::Auto)
    }

    /// A CALL, as text or as a prepared statement.
    fn is_call(&self, cmd: &Cmd<'_>) -> bool {
        self.statement_sql(cmd)
            .is_some_and(|sql| router::first_keyword(sql).as_bytes() == b"CALL")
    }

    fn rerunnable(&self, cmd: &Cmd<'_>) -> bool {
        self.statement_sql(cmd).is_some_and(rerunnable)
    }

    /// A statement refused before it took effect: tells the topology, gives the
    /// connection back (or drops a killed one) and, when it runs `again`, waits while the
    /// snapshot still names the refusing backend primary.
    async fn after_refusal(
        &mut self,
        u: InUse,
        e: &ErrInfo,
        again: bool,
        deadline: tokio::time::Instant,
    ) {
        let topo = self.shared.topology.clone();
        let seen = topo.snapshot().version;
        let held = u.from_held;
        let node = u.node;
        let kind = e.refusal();
        // only the node the snapshot calls primary is demoted by a refusal; a standby
        // refusing a read that writes says nothing new
        let was_primary = topo.snapshot().primary().map(|n| n.id) == Some(node);
        match kind {
            Some(Refusal::ReadOnly) => {
                if was_primary {
                    topo.read_only(u.node);
                }
                if held {
                    self.finish(u);
                } else {
                    u.lease.release();
                }
            }
            _ => {
                topo.suspect(u.node, e.text());
                drop(u);
            }
        }
        if again {
            self.shared.stats.reroutes.fetch_add(1, Ordering::Relaxed);
            // wait while the snapshot still names the refusing backend primary (the owner
            // demotes it at once; a newer snapshot may already name the true primary)
            let mut v = seen;
            while kind == Some(Refusal::ReadOnly)
                && was_primary
                && tokio::time::Instant::now() < deadline
            {
                let snap = topo.snapshot();
                if snap.primary().map(|n| n.id) != Some(node) {
                    break;
                }
                v = v.max(snap.version);
                topo.changed_since(v, deadline).await;
            }
        }
    }

    /// A same-connection statement gets the connection that ran the previous one when it
    /// is still idle; otherwise LAST_INSERT_ID is carried over to the new connection.
    async fn acquire_for(
        &mut self,
        cmd: &Cmd<'_>,
        stmt: &Statement,
        target: Target,
        exclude: Option<usize>,
    ) -> Result<InUse, ClientError> {
        let mut found = None;
        if stmt.same_connection && self.held.is_none() && exclude.is_none() {
            // a read of what the previous statement left (SHOW WARNINGS after a standby
            // read) follows it anywhere; anything else only onto a connection that fits
            let fits = if reads_only(cmd) {
                Target::Standby
            } else {
                target
            };
            found = self.acquire_previous(fits).await;
        }
        let found_previous = found.is_some();
        let mut u = match found {
            Some(u) => u,
            None => self.acquire(target, exclude).await?,
        };
        let c = u.lease.conn_ref();
        // the inserting connection, untouched since: the previous statement was the insert
        let untouched =
            found_previous && self.last_insert_conn == Some((u.node, c.thread_id, c.leases - 1));
        let this = (u.node, c.thread_id, c.leases);
        let elsewhere = self.last_insert_conn != Some(this) && !untouched;
        if stmt.reads_insert_id && self.last_insert_id != 0 && elsewhere {
            // LAST_INSERT_ID is the session's, from the connection that inserted
            let sql = format!("DO LAST_INSERT_ID({})", self.last_insert_id);
            if let Err(e) = u.lease.conn().query_ok(&sql).await {
                let e = format!("carrying LAST_INSERT_ID over: {e}");
                return Err(ClientError::Internal(e));
            }
            self.last_insert_conn = Some(this);
        }
        Ok(u)
    }

    /// Applies what a finished statement did to the session: status, insert id, state
    /// changes, and the pins it set or ended.
    pub(super) fn after_statement(
        &mut self,
        u: &mut InUse,
        stmt: &Statement,
        s: &Summary,
        cmd: &Cmd<'_>,
        resolved: &[SessionChange],
    ) -> Ended {
        self.take_status(s);
        // ROW_COUNT(): a DML statement's affected rows, -1 after a result set or an error
        self.row_count = match (&s.error, s.last_ok) {
            (None, Some(ok)) if !s.last_result_set => ok.affected_rows as i64,
            _ => -1,
        };
        if s.flags()
            .is_some_and(|f| f.contains(StatusFlags::SERVER_STATUS_DB_DROPPED))
        {
            // the current schema was dropped: the server's session has none now
            self.want.schema = None;
            u.lease.conn().state.schema = None;
        }
        self.pins.next_statement(&stmt.pins);
        match s.status {
            Some(st) if st & StatusFlags::SERVER_STATUS_IN_TRANS.bits() == 0 => {
                self.pins.remove(Pin::UnknownTransaction);
                self.pins.transaction_ended(&stmt.pins);
            }
            Some(_) => self.pins.remove(Pin::UnknownTransaction),
            // an ERR carries no flags: under autocommit=0 it may have opened a transaction
            None if !self.autocommit() => {
                self.pins.add(Pin::UnknownTransaction);
            }
            None => {}
        }
        let warned = s.last_ok.is_some_and(|ok| ok.warnings > 0);
        if s.error.is_some() || warned {
            self.pins.add(Pin::Diagnostics);
        }
        if s.state_changed && unexplained_state_change(stmt, s) {
            // a procedure or function changed session state on this connection: it is
            // this session's now, never lent to another
            self.pin_unknown_set();
        }
        if s.last_ok.is_some_and(|ok| ok.last_insert_id != 0) {
            let c = u.lease.conn_ref();
            self.last_insert_conn = Some((u.node, c.thread_id, c.leases));
        }
        if let Some(x) = cmd.exec.filter(|x| x.cursor) {
            let open = s
                .flags()
                .is_some_and(|f| f.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS));
            if open && self.pins.add(Pin::Cursor(x.id)) {
                self.shared.stats.count_pin("cursor");
            }
        }
        let mut ended = Ended::default();
        if s.error.is_none() {
            for c in stmt.changes.iter().chain(resolved) {
                apply_change(&mut self.want, c);
                apply_change(&mut u.lease.conn().state, c);
            }
            for r in &stmt.pins {
                if self.pins.add(Pin::Statement(*r)) {
                    self.shared.stats.count_pin(r.name());
                }
            }
            for r in &stmt.unpins {
                self.pins.remove(Pin::Statement(*r));
            }
            ended = self.pins.apply_names(&stmt.names);
            if stmt.sets_global {
                self.renew_pools();
            }
        }
        if let Some(gtid) = &s.gtid {
            if self.shared.limits.load().causal_global {
                record_latest(&self.shared.last_gtid, gtid);
            }
            self.causal = Some(super::Causal {
                gtid: gtid.clone(),
                applied: Vec::new(),
            });
        } else if stmt.target == Target::Primary
            && !stmt.is_set_only
            && !u.standby
            && !u.lease.conn_ref().tracks
        {
            self.note_write(); // no GTIDs here (Dolt): a time window instead
        }
        ended
    }

    /// A SET of a known variable to an expression: the value the server computed, read
    /// back on the same connection and tracked as a literal (a framework's
    /// `SET @@SESSION.sql_mode = CONCAT(...)` keeps reads on standbys). When it cannot be
    /// read, the session is pinned instead.
    async fn resolve_expressions(
        &mut self,
        u: &mut InUse,
        stmt: &Statement,
        s: &Summary,
    ) -> Vec<SessionChange> {
        let mut out = Vec::new();
        if s.error.is_some() {
            return out;
        }
        for c in &stmt.changes {
            let SessionChange::SetVarExpr { name } = c else {
                continue;
            };
            let sql = format!("SELECT @@SESSION.{name}");
            match u.lease.conn().query_rows(&sql).await {
                Ok(rows) => match rows.first().and_then(|r| r.first()) {
                    Some(Some(v)) => out.push(SessionChange::SetVar {
                        name: name.clone(),
                        value: sql_literal(v),
                    }),
                    _ => self.pin_unknown_set(),
                },
                Err(_) => self.pin_unknown_set(),
            }
        }
        out
    }

    /// After SET GLOBAL, pooled connections hold stale session defaults.
    fn renew_pools(&self) {
        self.shared.pools.renew();
    }

    fn pin_unknown_set(&mut self) {
        if self.pins.add(Pin::Statement(router::PinReason::UnknownSet)) {
            self.shared.stats.count_pin("unknown_set");
        }
    }

    /// Resets a connection whose temporary tables the session dropped, so that nothing of
    /// its own can reach the pool; a failure closes it instead.
    async fn reset_before_release(&mut self, u: &mut InUse) {
        if !self.pins.is_empty() || self.in_transaction() {
            return;
        }
        if u.lease.conn().reset().await.is_err() {
            self.last_conn = None;
        }
    }

    /// The previous statement's diagnostics held its connection for this one: a statement
    /// that does not read them runs wherever it belongs.
    fn end_diagnostics_hold(&mut self, stmt: &Statement) {
        if stmt.same_connection || !self.pins.only_diagnostics() || self.in_transaction() {
            return;
        }
        self.pins.remove(Pin::Diagnostics);
        if let Some(h) = self.held.take() {
            h.lease.release();
        }
    }

    /// After a lost transaction only ROLLBACK (answered here) or a new transaction
    /// (BEGIN, START TRANSACTION: how retry loops restart) is accepted; either ends the
    /// lost one. Anything else would commit half a transaction in autocommit. True: run
    /// the statement.
    pub(super) async fn lost_transaction_gate(
        &mut self,
        sql: Option<&[u8]>,
    ) -> Result<bool, SessionEnd> {
        let (kw, stmt) = match sql {
            Some(sql) => (router::first_keyword(sql), router::classify(sql)),
            None => (router::first_keyword(b""), Statement::default()),
        };
        let rollback = kw.as_bytes() == b"ROLLBACK" && !stmt.begins_transaction;
        let begins = stmt.begins_transaction && matches!(kw.as_bytes(), b"BEGIN" | b"START");
        match self.txn.gate(rollback, begins) {
            Gate::Run => Ok(true),
            Gate::AnswerOk => {
                self.send_ok().await?;
                Ok(false)
            }
            Gate::Refuse => {
                self.send_err(self.reply_seq, &ClientError::InLostTransaction)
                    .await?;
                Ok(false)
            }
        }
    }
}

/// A statement that may run again after a refusal: one statement (text without `;`), not
/// a CALL, whose procedure may have committed before it was refused.
fn rerunnable(sql: &[u8]) -> bool {
    let body = sql.trim_ascii();
    let body = body.strip_suffix(b";").unwrap_or(body);
    router::first_keyword(sql).as_bytes() != b"CALL" && !body.contains(&b';')
}

/// A text statement that only reads (SELECT, SHOW, GET DIAGNOSTICS).
fn reads_only(cmd: &Cmd<'_>) -> bool {
    if cmd.exec.is_some() {
        return false;
    }
    let sql = cmd.payload.get(1..).unwrap_or_default();
    let word = router::first_keyword(sql);
    matches!(word.as_bytes(), b"SELECT" | b"SHOW" | b"GET") && !sql.contains(&b';')
}

/// A batch whose later statement failed after earlier ones changed session state.
fn partly_applied(stmt: &Statement, s: &Summary) -> bool {
    s.error.is_some() && s.results > 0 && (!stmt.pins.is_empty() || !stmt.changes.is_empty())
}

/// Statements switchyard answers itself.
enum Answered {
    /// `SELECT CONNECTION_ID()`: switchyard's own id, the one KILL takes (a backend's
    /// thread id would name a stranger's connection).
    ConnectionId,
    /// `SELECT ROW_COUNT()`: the session's previous statement's count, which the
    /// connection that ran it may have lost to another session by now.
    RowCount,
}

/// One of the statements switchyard answers itself, alone (no other columns or clauses).
fn proxy_answered(sql: &[u8]) -> Option<Answered> {
    let t = sql.trim_ascii();
    let t = t.strip_suffix(b";").unwrap_or(t).trim_ascii();
    if t.eq_ignore_ascii_case(b"SELECT CONNECTION_ID()") {
        Some(Answered::ConnectionId)
    } else if t.eq_ignore_ascii_case(b"SELECT ROW_COUNT()") {
        Some(Answered::RowCount)
    } else {
        None
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    async fn answer_connection_id(&mut self) -> Result<(), SessionEnd> {
        use crate::protocol::messages::{TYPE_LONG, TYPE_LONGLONG};
        let id = self.handle.id.to_string();
        // as the server types it: MariaDB INT UNSIGNED, MySQL BIGINT UNSIGNED
        let (kind, len) = if self.shared.profile.mariadb {
            (TYPE_LONG, 10)
        } else {
            (TYPE_LONGLONG, 21)
        };
        self.answer_number("CONNECTION_ID()", kind, 0x00A1, len, &id)
            .await
    }

    async fn answer_row_count(&mut self) -> Result<(), SessionEnd> {
        use crate::protocol::messages::TYPE_LONGLONG;
        let n = self.row_count.to_string();
        self.answer_number("ROW_COUNT()", TYPE_LONGLONG, 0x0081, 21, &n)
            .await?;
        self.row_count = -1; // a SELECT's own count
        Ok(())
    }

    /// A one-row, one-column result of a number, as a server encodes it for this client.
    async fn answer_number(
        &mut self,
        name: &str,
        kind: u8,
        flags: u16,
        len: u32,
        value: &str,
    ) -> Result<(), SessionEnd> {
        use crate::protocol::messages::{column_def, eof_payload, ok_payload_with, OkInfo};
        let status = self.flags().bits();
        let def = column_def(name, kind, flags, len, 63);
        let mut row = vec![value.len() as u8];
        row.extend_from_slice(value.as_bytes());
        let mut seq = self.io.queue(self.reply_seq, &[1]);
        seq = self.io.queue(seq, &def);
        if self.classic_client() {
            seq = self.io.queue(seq, &eof_payload(0, status));
            seq = self.io.queue(seq, &row);
            self.io.queue(seq, &eof_payload(0, status));
        } else {
            seq = self.io.queue(seq, &row);
            let end = OkInfo {
                status,
                ..OkInfo::default()
            };
            self.io.queue(seq, &ok_payload_with(0xFE, &end));
        }
        self.io.flush().await?;
        Ok(())
    }
}

/// Keeps the latest of the GTIDs sessions report: a single `domain-server-seq` of the same
/// domain replaces an older one only when its sequence number is higher.
fn record_latest(cell: &parking_lot::Mutex<Option<Vec<u8>>>, gtid: &[u8]) {
    fn parts(g: &[u8]) -> Option<(&[u8], u64)> {
        let text = std::str::from_utf8(g).ok()?;
        let (domain, rest) = text.split_once('-')?;
        let (_, seq) = rest.rsplit_once('-')?;
        Some((domain.as_bytes(), seq.parse().ok()?))
    }
    let mut latest = cell.lock();
    let newer = match (latest.as_deref().and_then(parts), parts(gtid)) {
        (Some((d0, s0)), Some((d1, s1))) if d0 == d1 => s1 > s0,
        _ => true,
    };
    if newer {
        *latest = Some(gtid.to_vec());
    }
}

/// A change of session state that the statement's classification does not account for.
fn unexplained_state_change(stmt: &Statement, s: &Summary) -> bool {
    let dropped_db = s
        .flags()
        .is_some_and(|f| f.contains(StatusFlags::SERVER_STATUS_DB_DROPPED));
    stmt.changes.is_empty()
        && stmt.pins.is_empty()
        && stmt.names.is_empty()
        && !stmt.is_set_only
        && !stmt.sets_global
        && !dropped_db
}

/// A server's value as SQL text to replay: a number as it is, anything else quoted.
fn sql_literal(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v);
    let numeric = !text.is_empty()
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (b == b'.' && i > 0) || (b == b'-' && i == 0));
    if numeric {
        return text.into_owned();
    }
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Records a session state change on a state (the session's wanted, or a connection's).
pub(super) fn apply_change(state: &mut ConnState, c: &SessionChange) {
    match c {
        SessionChange::UseSchema(db) => state.schema = Some(db.clone()),
        SessionChange::SetNames { charset, collation } => {
            state.charset = Charset::Names {
                charset: charset.clone(),
                collation: collation.clone(),
            };
            for v in CHARSET_VARS {
                state.vars.remove(v); // SET NAMES sets them all
            }
        }
        SessionChange::SetCharacterSet { charset } => {
            state.charset = Charset::CharacterSet(charset.clone());
            for v in CHARSET_VARS {
                state.vars.remove(v);
            }
        }
        SessionChange::SetVar { name, value } if transaction_var(name).is_some() => {
            set_transaction_var(state, name, value);
        }
        SessionChange::SetVar { name, value } if value.eq_ignore_ascii_case("DEFAULT") => {
            state.vars.remove(name);
        }
        SessionChange::SetVar { name, value } => {
            state.vars.insert(name.clone(), value.clone());
        }
        // tracked through the value read back (`resolve_expressions`)
        SessionChange::SetVarExpr { .. } => {}
        SessionChange::SetTransaction {
            isolation,
            read_only,
        } => {
            let mut parts = Vec::new();
            if let Some(i) = isolation {
                parts.push(format!("ISOLATION LEVEL {i}"));
            }
            if let Some(ro) = read_only {
                parts.push(if *ro {
                    "READ ONLY".into()
                } else {
                    "READ WRITE".into()
                });
            }
            merge_transaction(state, parts);
        }
    }
}

/// The variables SET NAMES and SET CHARACTER SET set together.
const CHARSET_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_results",
    "character_set_connection",
    "collation_connection",
];

/// `tx_isolation` / `transaction_isolation` (true) and `tx_read_only` /
/// `transaction_read_only` (false): the same state as SET SESSION TRANSACTION.
fn transaction_var(name: &str) -> Option<bool> {
    match name {
        "tx_isolation" | "transaction_isolation" => Some(true),
        "tx_read_only" | "transaction_read_only" => Some(false),
        _ => None,
    }
}

/// A transaction variable set by name, tracked as SET SESSION TRANSACTION's state.
fn set_transaction_var(state: &mut ConnState, name: &str, value: &str) {
    let v = value
        .trim_matches('\'')
        .to_ascii_uppercase()
        .replace('-', " ");
    let isolation = transaction_var(name) == Some(true);
    let keep_other = |s: &ConnState| {
        s.transaction
            .as_deref()
            .unwrap_or_default()
            .split(", ")
            .filter(|p| !p.is_empty() && p.starts_with("ISOLATION") != isolation)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut parts = keep_other(state);
    if v != "DEFAULT" {
        parts.push(if isolation {
            format!("ISOLATION LEVEL {v}")
        } else if v == "1" || v == "ON" {
            "READ ONLY".into()
        } else {
            "READ WRITE".into()
        });
    }
    parts.sort_by_key(|p| !p.starts_with("ISOLATION"));
    state.transaction = (!parts.is_empty()).then(|| parts.join(", "));
}

/// Keeps both characteristics when a later SET SESSION TRANSACTION names only one.
fn merge_transaction(state: &mut ConnState, parts: Vec<String>) {
    let old = state.transaction.take().unwrap_or_default();
    let keep_iso = !parts.iter().any(|p| p.starts_with("ISOLATION"));
    let keep_ro = !parts.iter().any(|p| p.starts_with("READ"));
    let mut all: Vec<String> = old
        .split(", ")
        .filter(|p| !p.is_empty())
        .filter(|p| (keep_iso && p.starts_with("ISOLATION")) || (keep_ro && p.starts_with("READ")))
        .map(str::to_string)
        .collect();
    all.extend(parts);
    state.transaction = (!all.is_empty()).then(|| all.join(", "));
}
