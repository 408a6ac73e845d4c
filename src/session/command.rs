//! A routed command as it travels: the client's payload, and for COM_STMT_EXECUTE what
//! is needed to rewrite it for each backend connection (its statement id, its types).

use std::borrow::Cow;

use tokio::io::{AsyncRead, AsyncWrite};

use super::backend_use::InUse;
use super::prepared::ensure_prepared;
use super::Session;
use crate::backend::stmt_cache::StmtKey;
use crate::backend::BackendError;

/// What an EXECUTE needs beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecInfo {
    pub id: u32,
    /// Offset of the new-params-bound flag.
    pub types_at: usize,
    /// The client sent parameter types with this EXECUTE.
    pub bound: bool,
    /// The client asked for a cursor.
    pub cursor: bool,
}

/// A command routed to a backend.
#[derive(Debug, Clone, Copy)]
pub struct Cmd<'a> {
    pub payload: &'a [u8],
    pub exec: Option<ExecInfo>,
}

impl<'a> Cmd<'a> {
    pub fn plain(payload: &'a [u8]) -> Self {
        Cmd {
            payload,
            exec: None,
        }
    }
}

/// An owned command, kept to replay it.
#[derive(Debug, Clone)]
pub struct OwnedCmd {
    pub payload: Vec<u8>,
    pub exec: Option<ExecInfo>,
}

impl OwnedCmd {
    pub fn as_cmd(&self) -> Cmd<'_> {
        Cmd {
            payload: &self.payload,
            exec: self.exec,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The SQL a command runs: a query's text, or an EXECUTE's prepared statement (None
    /// when the client's statement id is unknown).
    pub(super) fn statement_sql<'a>(&'a self, cmd: &Cmd<'a>) -> Option<&'a [u8]> {
        match cmd.exec {
            Some(x) => self.stmts.get(&x.id).map(|s| &*s.sql),
            None => cmd.payload.get(1..),
        }
    }

    /// The bytes to send on this connection: an EXECUTE gets the connection's own
    /// statement id (preparing it there if needed) and the cached parameter types when the
    /// client omitted them but this connection has not seen them.
    pub(super) async fn wire_payload<'c>(
        &self,
        u: &mut InUse,
        cmd: &Cmd<'c>,
    ) -> Result<Cow<'c, [u8]>, BackendError> {
        let Some(x) = cmd.exec else {
            return Ok(Cow::Borrowed(cmd.payload));
        };
        let Some(cs) = self.stmts.get(&x.id) else {
            return Err(BackendError::Protocol("statement vanished"));
        };
        let key = StmtKey {
            sql: cs.sql.clone(),
            schema: self.want.schema.clone(),
        };
        // a standby that stops answering (frozen) is given up: the caller runs it elsewhere
        let watch = u.standby && !u.from_held && !u.previous && !self.in_transaction();
        let node = u.node;
        let conn = u.lease.conn();
        let stmt = self
            .unless_failed(node, watch, ensure_prepared(conn, &key))
            .await?;
        let mut out = Vec::with_capacity(cmd.payload.len() + 2 * usize::from(stmt.params) + 1);
        out.extend_from_slice(cmd.payload);
        out[1..5].copy_from_slice(&stmt.id.to_le_bytes());
        let has_params = stmt.params > 0 && out.len() > x.types_at;
        if !has_params {
            return Ok(Cow::Owned(out));
        }
        // the types this execution means: its own, or the client's last ones; sent
        // whenever the server's last types for this statement differ (another session's)
        let meant = cs.types.clone();
        if !x.bound && meant.is_some() && stmt.types != meant {
            if let Some(t) = &meant {
                out[x.types_at] = 1;
                out.splice(x.types_at + 1..x.types_at + 1, t.iter().copied());
            }
        }
        if out[x.types_at] == 1 {
            if let Some(s) = conn.stmts.get(&key) {
                s.types = meant;
            }
        }
        Ok(Cow::Owned(out))
    }
}
