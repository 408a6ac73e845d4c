//! The small commands: COM_INIT_DB, COM_FIELD_LIST, COM_STATISTICS, COM_SET_OPTION,
//! COM_RESET_CONNECTION, COM_PROCESS_KILL and KILL.

use tokio::io::{AsyncRead, AsyncWrite};

use super::command::Cmd;
use super::{Session, SessionEnd};
use crate::backend::state::Charset;
use crate::error::ClientError;
use crate::protocol::command as cmd;
use crate::protocol::messages::{eof_payload, ok_payload_with, OkInfo};
use crate::protocol::scan::ResponseKind;
use crate::router::{SessionChange, Statement, Target};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// COM_INIT_DB runs on a backend (which checks the schema) and becomes session state.
    pub(super) async fn init_db(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let db = String::from_utf8_lossy(&p[1..]).into_owned();
        let stmt = Statement {
            target: Target::Standby,
            is_set_only: true,
            changes: vec![SessionChange::UseSchema(db)],
            ..Statement::default()
        };
        let target = self.route(&stmt);
        self.run_statement(&Cmd::plain(p), &stmt, target, ResponseKind::Results)
            .await
    }

    pub(super) async fn field_list(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let stmt = Statement {
            target: Target::Standby,
            ..Statement::default()
        };
        let target = self.route(&stmt);
        self.run_statement(&Cmd::plain(p), &stmt, target, ResponseKind::FieldList)
            .await
    }

    /// COM_STATISTICS: one string packet from a backend.
    pub(super) async fn statistics(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let stmt = Statement {
            target: Target::Standby,
            ..Statement::default()
        };
        let mut u = match self.acquire(self.route(&stmt), None).await {
            Ok(u) => u,
            Err(e) => return self.send_err(self.reply_seq, &e).await,
        };
        match u.lease.conn().command(p).await {
            Ok(reply) => {
                self.finish(u);
                self.io.send(self.reply_seq, &reply.payload).await?;
                Ok(())
            }
            Err(e) => {
                let err = ClientError::BackendLost {
                    backend: self.node_name(u.node),
                    detail: e.to_string(),
                };
                self.send_err(self.reply_seq, &err).await
            }
        }
    }

    /// COM_SET_OPTION: MULTI_STATEMENTS follows the client onto every leased connection.
    pub(super) async fn set_option(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let on = match p.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]])) {
            Some(cmd::MYSQL_OPTION_MULTI_STATEMENTS_ON) => true,
            Some(cmd::MYSQL_OPTION_MULTI_STATEMENTS_OFF) => false,
            _ => {
                return self
                    .send_err(self.reply_seq, &ClientError::UnknownOption)
                    .await;
            }
        };
        self.caps.set(
            crate::protocol::CapabilityFlags::CLIENT_MULTI_STATEMENTS,
            on,
        );
        self.want.multi_statements = Some(on);
        let status = self.flags().bits();
        let reply = if self.classic_client() {
            eof_payload(0, status).to_vec()
        } else {
            ok_payload_with(
                0xFE,
                &OkInfo {
                    status,
                    ..OkInfo::default()
                },
            )
        };
        self.io.send(self.reply_seq, &reply).await?;
        Ok(())
    }

    /// COM_RESET_CONNECTION: answered here (state and statements cleared); a held
    /// connection is reset on the server too and goes back to the pool.
    pub(super) async fn reset_connection(&mut self) -> Result<(), SessionEnd> {
        if let Some(mut h) = self.held.take() {
            if h.lease.conn().reset().await.is_ok() {
                h.lease.release();
            }
        }
        self.pins.clear();
        self.spec = super::optimistic::Spec::Off;
        self.stmts.clear();
        self.txn.reset();
        self.last_conn = None;
        let keep = (
            self.want.schema.take(),
            self.want.charset.clone(),
            self.want.multi_statements,
        );
        self.want = Default::default();
        self.want.schema = keep.0;
        self.want.charset = if keep.1 == Charset::Unknown {
            Charset::Unknown
        } else {
            keep.1
        };
        self.want.multi_statements = keep.2;
        self.send_ok().await
    }

    pub(super) async fn process_kill(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let id = p
            .get(1..5)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        self.kill(u64::from(id), false).await
    }

    /// KILL [QUERY] n names a switchyard connection id: the query it runs now is killed on
    /// its backend; KILL CONNECTION also closes that client session.
    pub(super) async fn kill(&mut self, id: u64, query_only: bool) -> Result<(), SessionEnd> {
        let target = u32::try_from(id)
            .ok()
            .and_then(|i| self.shared.registry.get(i));
        let Some(h) = target else {
            return self
                .send_err(self.reply_seq, &ClientError::NoSuchThread(id))
                .await;
        };
        let owner = h.user.lock().clone();
        if owner != self.user {
            return self
                .send_err(self.reply_seq, &ClientError::KillDenied(id))
                .await;
        }
        let running = *h.running.lock();
        if let Some(r) = running {
            // only while the target still runs there: its connection may move on to a
            // stranger's statement before the KILL gets out
            self.spawn_kill_query(r.node, r.thread_id, owner, Some((h.clone(), r)));
        }
        if !query_only {
            if h.id == self.handle.id {
                self.send_err(self.reply_seq, &ClientError::ConnectionKilled)
                    .await?;
                return Err(SessionEnd::Closed("killed itself".into()));
            }
            h.close.notify_one();
        }
        self.send_ok().await
    }
}
