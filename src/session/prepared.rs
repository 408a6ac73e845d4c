//! Prepared statements across pooled backends: client statement ids belong to the proxy;
//! a statement is classified once at PREPARE and prepared on whichever backend connection
//! runs it (each connection's cache maps SQL to its own id); parameter types are cached
//! and sent again on a connection that has not seen them.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::command::{Cmd, ExecInfo};
use super::pins::Pin;
use super::{Session, SessionEnd};
use crate::backend::relay::RelayError;
use crate::backend::stmt_cache::{BackendStmt, StmtKey};
use crate::backend::{BackendConn, BackendError};
use crate::error::ClientError;
use crate::protocol::command as cmd;
use crate::protocol::scan::ResponseKind;
use crate::router::{self, Statement, Target};

/// A statement as the client knows it.
pub struct ClientStmt {
    pub sql: Arc<[u8]>,
    pub class: Statement,
    pub params: u16,
    /// Parameter types (2 bytes each) from the last EXECUTE that sent them.
    pub types: Option<std::sync::Arc<[u8]>>,
}

/// A backend's COM_STMT_PREPARE reply.
struct Prepared {
    first: BytesMut,
    stmt: BackendStmt,
    defs: Vec<BytesMut>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn stmt_prepare(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let bytes: usize = self.stmts.values().map(|s| s.sql.len()).sum();
        if bytes + p.len() > self.shared.limits.load().max_statement_bytes {
            let e = ClientError::OutOfMemory(bytes + p.len());
            return self.send_err(self.reply_seq, &e).await;
        }
        if self.stmts.len() >= self.shared.limits.load().max_statements {
            let e = ClientError::TooManyStatements(self.shared.limits.load().max_statements);
            return self.send_err(self.reply_seq, &e).await;
        }
        let sql: Arc<[u8]> = Arc::from(&p[1..]);
        let class = router::classify(&sql);
        self.count_fallback(&class);
        let target = self.route(&class);
        let key = self.stmt_key(&sql);
        let mut exclude = None;
        loop {
            let mut u = match self.acquire(target, exclude).await {
                Ok(u) => u,
                Err(e) => return self.send_err(self.reply_seq, &e).await,
            };
            // a standby that stops answering (frozen) is given up; another one prepares it
            let watch = u.standby && !u.from_held && !self.in_transaction();
            let prep = prepare_on(u.lease.conn(), &key);
            match self.unless_failed(u.node, watch, prep).await {
                Ok(prep) => {
                    let id = self.next_stmt;
                    self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
                    u.lease.conn().stmts.insert(key, prep.stmt.clone());
                    let params = prep.stmt.params;
                    self.stmts.insert(
                        id,
                        ClientStmt {
                            sql,
                            class,
                            params,
                            types: None,
                        },
                    );
                    self.send_prepare_ok(id, prep).await?;
                    self.finish(u);
                    return Ok(());
                }
                Err(BackendError::Server(e)) => {
                    self.finish(u);
                    return self.send_err(self.reply_seq, &e.into()).await;
                }
                Err(e) if watch && exclude.is_none() => {
                    tracing::info!(error = %e, "prepare failed on a standby before any reply; retrying elsewhere");
                    self.shared.topology.suspect(u.node, e.to_string());
                    exclude = Some(u.node);
                }
                Err(e) => {
                    return Box::pin(self.backend_lost(u, e.into_proto(), self.reply_seq)).await
                }
            }
        }
    }

    async fn send_prepare_ok(&mut self, id: u32, prep: Prepared) -> Result<(), SessionEnd> {
        let mut first = prep.first;
        first[1..5].copy_from_slice(&id.to_le_bytes());
        let mut seq = self.io.queue(self.reply_seq, &first);
        for d in &prep.defs {
            seq = self.io.queue(seq, d);
        }
        self.io.flush().await?;
        Ok(())
    }

    fn stmt_key(&self, sql: &Arc<[u8]>) -> StmtKey {
        StmtKey {
            sql: sql.clone(),
            schema: self.want.schema.clone(),
        }
    }

    pub(super) async fn stmt_execute(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        if self.txn.lost() {
            // the prepared statement's SQL decides, as a query's text does (ROLLBACK, BEGIN)
            let id = p
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let sql = id.and_then(|id| self.stmts.get(&id)).map(|s| s.sql.clone());
            if !self.lost_transaction_gate(sql.as_deref()).await? {
                return Ok(());
            }
        }
        let Some((id, _, class, params)) = self.lookup(p) else {
            return self.unknown_stmt(p, "mysqld_stmt_execute").await;
        };
        let types_at = 10 + usize::from(params).div_ceil(8);
        let bound = params > 0 && p.get(types_at) == Some(&1);
        if bound {
            let types = p.get(types_at + 1..types_at + 1 + 2 * usize::from(params));
            if let (Some(st), Some(t)) = (self.stmts.get_mut(&id), types) {
                st.types = Some(t.into());
            }
        }
        let cursor = p
            .get(5)
            .is_some_and(|f| f & cmd::CURSOR_TYPE_READ_ONLY != 0);
        let exec = ExecInfo {
            id,
            types_at,
            bound,
            cursor,
        };
        // a cursor pins its connection; statements while it is open may write: the primary
        let target = if cursor {
            Target::Primary
        } else {
            self.route(&class)
        };
        self.run_statement(
            &Cmd {
                payload: p,
                exec: Some(exec),
            },
            &class,
            target,
            ResponseKind::Results,
        )
        .await?;
        self.pins.remove(Pin::LongData(id));
        self.release_if_unpinned();
        Ok(())
    }

    fn lookup(&self, p: &[u8]) -> Option<(u32, Arc<[u8]>, Statement, u16)> {
        let id = u32::from_le_bytes(p.get(1..5)?.try_into().ok()?);
        let st = self.stmts.get(&id)?;
        Some((id, st.sql.clone(), st.class.clone(), st.params))
    }

    async fn unknown_stmt(&mut self, p: &[u8], what: &'static str) -> Result<(), SessionEnd> {
        let id = p
            .get(1..5)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
        self.send_err(self.reply_seq, &ClientError::UnknownStatement(id, what))
            .await
    }

    pub(super) async fn stmt_close(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let Some((id, sql, ..)) = self.lookup(p) else {
            return Ok(()); // COM_STMT_CLOSE has no reply, not even for an unknown id
        };
        if self.pins.contains(Pin::LongData(id)) || self.pins.contains(Pin::Cursor(id)) {
            // the backend statement stays cached for others: clear its long data or cursor
            self.reset_backend_stmt(&sql).await;
        }
        self.stmts.remove(&id);
        self.pins.remove_stmt(id);
        self.release_if_unpinned();
        Ok(()) // backend statements stay cached (LRU) and are closed when evicted
    }

    /// COM_STMT_RESET of a statement on the held connection; a failure drops it.
    async fn reset_backend_stmt(&mut self, sql: &Arc<[u8]>) {
        let key = self.stmt_key(sql);
        let Some(h) = self.held.as_mut() else { return };
        let Some(bs) = h.lease.conn().stmts.get(&key).cloned() else {
            return;
        };
        let mut c = vec![cmd::COM_STMT_RESET];
        c.extend_from_slice(&bs.id.to_le_bytes());
        if h.lease.conn().simple(&c).await.is_err() {
            self.held = None;
        }
    }

    pub(super) async fn stmt_reset(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let Some((id, sql, ..)) = self.lookup(p) else {
            return self.unknown_stmt(p, "mysqld_stmt_reset").await;
        };
        self.pins.remove_stmt(id);
        self.reset_backend_stmt(&sql).await;
        self.release_if_unpinned();
        self.send_ok().await
    }

    /// SEND_LONG_DATA ties the statement to one connection until its EXECUTE.
    pub(super) async fn stmt_long_data(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let Some((id, sql, class, _)) = self.lookup(p) else {
            return Ok(()); // no reply is allowed; the EXECUTE reports the unknown id
        };
        let target = self.route(&class);
        let mut u = match self.acquire(target, None).await {
            Ok(u) => u,
            Err(_) => return Ok(()),
        };
        let key = self.stmt_key(&sql);
        let conn = u.lease.conn();
        let Ok(stmt) = ensure_prepared(conn, &key).await else {
            return Ok(());
        };
        let mut out = p.to_vec();
        out[1..5].copy_from_slice(&stmt.id.to_le_bytes());
        conn.queue_command(&out);
        if conn.io.flush().await.is_err() {
            return Ok(());
        }
        if self.pins.add(Pin::LongData(id)) {
            self.shared.stats.count_pin("send_long_data");
        }
        self.finish(u);
        Ok(())
    }

    /// COM_STMT_FETCH runs on the connection holding the cursor.
    pub(super) async fn stmt_fetch(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let Some((id, sql, class, _)) = self.lookup(p) else {
            return self.unknown_stmt(p, "mysqld_stmt_fetch").await;
        };
        if !self.pins.contains(Pin::Cursor(id)) || self.held.is_none() {
            return self
                .send_err(self.reply_seq, &ClientError::NoCursor(id))
                .await;
        }
        let key = self.stmt_key(&sql);
        let mut u = match self.acquire(self.route(&class), None).await {
            Ok(u) => u,
            Err(e) => return self.send_err(self.reply_seq, &e).await,
        };
        let Some(bs) = u.lease.conn().stmts.get(&key).cloned() else {
            self.finish(u);
            return self
                .send_err(
                    self.reply_seq,
                    &ClientError::UnknownStatement(id, "mysqld_stmt_fetch"),
                )
                .await;
        };
        let mut out = p.to_vec();
        out[1..5].copy_from_slice(&bs.id.to_le_bytes());
        let f = self.forward(&mut u, &out, ResponseKind::Rows, None).await;
        match f.result {
            Ok(s) => {
                self.take_status(&s);
                self.finish(u);
                Ok(())
            }
            Err(RelayError::Refused(e)) => {
                self.finish(u);
                self.send_err(self.reply_seq, &e.into()).await
            }
            Err(RelayError::Backend { err, .. }) => {
                Box::pin(self.backend_lost(u, err, f.out_seq)).await
            }
            Err(RelayError::Client(e)) => {
                self.abandon(u);
                Err(SessionEnd::Client(e))
            }
        }
    }

    /// Returns a held connection once nothing pins it any more.
    pub(super) fn release_if_unpinned(&mut self) {
        if self.pins.is_empty() && !self.in_transaction() {
            if let Some(h) = self.held.take() {
                h.lease.release();
            }
        }
    }
}

/// The statement on this connection, prepared now if it is not cached.
pub(super) async fn ensure_prepared(
    conn: &mut BackendConn,
    key: &StmtKey,
) -> Result<BackendStmt, BackendError> {
    if let Some(s) = conn.stmts.get(key) {
        return Ok(s.clone());
    }
    let prep = prepare_on(conn, key).await?;
    conn.stmts.insert(key.clone(), prep.stmt.clone());
    Ok(prep.stmt)
}

/// COM_STMT_PREPARE on a backend connection; reads the whole (small) reply.
async fn prepare_on(conn: &mut BackendConn, key: &StmtKey) -> Result<Prepared, BackendError> {
    let mut payload = Vec::with_capacity(1 + key.sql.len());
    payload.push(cmd::COM_STMT_PREPARE);
    payload.extend_from_slice(&key.sql);
    let first = conn.command(&payload).await?.payload;
    match first.first() {
        Some(0x00) if first.len() >= 12 => {}
        Some(0xFF) => {
            let e = crate::protocol::messages::parse_err(&first)
                .ok_or(BackendError::Protocol("bad ERR"))?;
            return Err(BackendError::Server(e));
        }
        _ => return Err(BackendError::Protocol("bad COM_STMT_PREPARE reply")),
    }
    let stmt = BackendStmt {
        id: u32::from_le_bytes([first[1], first[2], first[3], first[4]]),
        columns: u16::from_le_bytes([first[5], first[6]]),
        params: u16::from_le_bytes([first[7], first[8]]),
        types: None,
    };
    // parameter and column definitions, each group followed by an EOF on a classic
    // connection (the client's own encoding: relayed as they are)
    let eofs = !conn.class.deprecate_eof();
    let mut defs = Vec::new();
    for n in [stmt.params, stmt.columns] {
        for _ in 0..n {
            defs.push(conn.io.read_packet().await?.payload);
        }
        if eofs && n > 0 {
            defs.push(conn.io.read_packet().await?.payload);
        }
    }
    Ok(Prepared { first, stmt, defs })
}
