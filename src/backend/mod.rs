//! One server connection: connect and authenticate with one fixed capability set, run the
//! proxy's own commands, bring session state in line, relay responses to a client.

pub mod relay;
pub mod state;
pub mod stmt_cache;

use std::time::{Duration, Instant};

use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use tokio::net::TcpStream;

use crate::protocol::handshake::ServerProfile;
use crate::protocol::messages::{parse_err, parse_ok, ErrInfo, OkInfo};
use crate::protocol::packet::{Packet, PacketStream};
use crate::protocol::{
    auth, backend_capabilities, command as cmd, CapabilityFlags, ConnClass, ProtoError,
    UTF8MB4_GENERAL_CI,
};
use state::{Charset, ConnState};
use stmt_cache::StmtCache;

/// Errors of the backend layer. `retry_safe` tells whether nothing reached the server.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    #[error("authentication to {0} failed: {1}")]
    Auth(String, String),
    #[error("backend i/o: {0}")]
    Io(#[from] ProtoError),
    #[error("server error {}: {}", .0.code, .0.text())]
    Server(ErrInfo),
    #[error("unexpected reply from backend: {0}")]
    Protocol(&'static str),
}

impl BackendError {
    /// As a wire error, for the lost-backend paths.
    pub fn into_proto(self) -> ProtoError {
        match self {
            BackendError::Io(p) => p,
            other => ProtoError::Io(std::io::Error::other(other.to_string())),
        }
    }

    /// The connection can no longer be used.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, BackendError::Server(_))
    }
}

/// Who to connect as, and how.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub address: String,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    pub max_packet: usize,
    pub statement_cache: usize,
    /// The client capabilities this connection is opened with (FOUND_ROWS, DEPRECATE_EOF,
    /// IGNORE_SPACE, INTERACTIVE, MariaDB extended type info).
    pub class: ConnClass,
}

/// The byte stream under a backend connection: a TCP socket in production, any duplex
/// stream in tests (pool and session paths run against in-memory servers).
pub trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static
{
    /// False when the peer closed the stream or sent something unasked while idle.
    fn idle_and_open(&self) -> bool;
}

impl Stream for TcpStream {
    fn idle_and_open(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

impl Stream for tokio::io::DuplexStream {
    fn idle_and_open(&self) -> bool {
        true
    }
}

/// A backend connection's packet stream.
pub type BackendIo = PacketStream<Box<dyn Stream>>;

/// An authenticated server connection.
pub struct BackendConn {
    pub io: BackendIo,
    pub thread_id: u32,
    /// What the server's greeting said.
    pub profile: ServerProfile,
    pub class: ConnClass,
    /// CLIENT_SESSION_TRACK was negotiated: OK packets carry session state (GTIDs).
    pub tracks: bool,
    pub state: ConnState,
    /// Status flags from the last OK/EOF.
    pub status: u16,
    pub stmts: StmtCache,
    pub created: Instant,
    pub idle_since: Instant,
    /// Times this connection was leased: tells an untouched idle connection apart.
    pub leases: u64,
}

impl BackendConn {
    /// Connects and authenticates (mysql_native_password, or caching_sha2 fast auth).
    pub async fn connect(p: &ConnectParams) -> Result<BackendConn, BackendError> {
        let fut = Self::connect_inner(p);
        tokio::time::timeout(p.connect_timeout, fut)
            .await
            .map_err(|_| BackendError::ConnectTimeout(p.address.clone()))?
    }

    async fn connect_inner(p: &ConnectParams) -> Result<BackendConn, BackendError> {
        let tcp = TcpStream::connect(&p.address)
            .await
            .map_err(|e| BackendError::Connect(p.address.clone(), e.to_string()))?;
        tcp.set_nodelay(true).ok();
        Self::over(Box::new(tcp), p).await
    }

    /// Authenticates over an open stream (the handshake from the server's greeting on).
    pub async fn over(
        stream: Box<dyn Stream>,
        p: &ConnectParams,
    ) -> Result<BackendConn, BackendError> {
        let mut io = PacketStream::new(stream, p.max_packet);
        let greeting = io.read_packet().await?;
        if greeting.payload.first() == Some(&0xFF) {
            let e = parse_err(&greeting.payload)
                .map(|e| e.text())
                .unwrap_or_default();
            return Err(BackendError::Connect(p.address.clone(), e));
        }
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload))
            .map_err(|_| BackendError::Protocol("bad greeting"))?;
        let profile = ServerProfile::from_greeting(&greeting.payload)
            .ok_or(BackendError::Protocol("bad greeting"))?;
        let caps = backend_capabilities(p.class)
            & (hs.capabilities() | CapabilityFlags::CLIENT_LONG_PASSWORD);
        let nonce = hs.nonce();
        let plugin = match hs.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => auth::CACHING_SHA2,
            _ => auth::NATIVE,
        };
        let resp = auth::client_response(plugin, &nonce, p.password.as_bytes()).unwrap_or_default();
        let hello = HandshakeResponse::new(
            Some(resp),
            hs.server_version_parsed().unwrap_or((8, 0, 0)),
            Some(p.user.as_bytes()),
            None::<&[u8]>,
            Some(AuthPlugin::from_bytes(plugin.as_bytes())),
            caps,
            Some([("_client_name".to_string(), "switchyard".to_string())].into()),
            p.max_packet as u32,
        );
        let mut buf = Vec::with_capacity(128);
        hello.serialize(&mut buf);
        buf[8] = UTF8MB4_GENERAL_CI;
        if profile.mariadb && p.class.ext() != 0 {
            buf[0] &= !1; // CLIENT_MYSQL off: the extended capabilities follow
            buf[28..32].copy_from_slice(&(p.class.ext() & profile.ext).to_le_bytes());
        }
        io.send(greeting.seq.wrapping_add(1), &buf).await?;
        finish_auth(&mut io, p, plugin).await?;
        let now = Instant::now();
        let mut conn = BackendConn {
            io,
            thread_id: hs.connection_id(),
            tracks: caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK),
            profile,
            class: p.class,
            state: ConnState {
                charset: Charset::Collation(UTF8MB4_GENERAL_CI),
                multi_statements: Some(true),
                ..ConnState::default()
            },
            status: 0x0002,
            stmts: StmtCache::new(p.statement_cache),
            created: now,
            idle_since: now,
            leases: 0,
        };
        conn.track_gtids().await?;
        Ok(conn)
    }

    /// Asks the server to report the session's last GTID in OK packets (read-your-writes):
    /// MariaDB's `last_gtid` system-variable tracker, MySQL's own-GTID tracker. A server
    /// without them (Dolt) tracks nothing.
    async fn track_gtids(&mut self) -> Result<(), BackendError> {
        if !self.tracks {
            return Ok(());
        }
        // and to say when a statement changed session state the proxy cannot see (a
        // procedure that sets variables or creates temporary tables)
        let sql = if self.profile.mariadb {
            "SET SESSION session_track_system_variables = CONCAT(@@session_track_system_variables, ',last_gtid'), session_track_state_change = ON"
        } else {
            "SET SESSION session_track_gtids = OWN_GTID, session_track_state_change = ON"
        };
        match self.query_ok(sql).await {
            Err(BackendError::Server(e)) => {
                tracing::debug!(error = %e.text(), "the server does not track GTIDs");
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Waits (up to `timeout`) until this server has applied `gtid`; false on timeout.
    pub async fn wait_gtid(
        &mut self,
        gtid: &[u8],
        timeout: Duration,
    ) -> Result<bool, BackendError> {
        let gtid = String::from_utf8_lossy(gtid).replace('\'', "");
        let secs = timeout.as_secs_f64();
        let sql = if self.profile.mariadb {
            format!("SELECT MASTER_GTID_WAIT('{gtid}', {secs})")
        } else {
            format!("SELECT WAIT_FOR_EXECUTED_GTID_SET('{gtid}', {secs})")
        };
        let rows = self.query_rows(&sql).await?;
        Ok(matches!(rows.first().and_then(|r| r.first()), Some(Some(v)) if v.as_slice() == b"0"))
    }

    /// Sends a command (sequence 0) and reads one reply packet.
    pub async fn command(&mut self, payload: &[u8]) -> Result<Packet, BackendError> {
        self.flush_stmt_closes();
        self.io.send(0, payload).await?;
        Ok(self.io.read_packet().await?)
    }

    /// Runs a command answered by OK (or EOF) or ERR.
    pub async fn simple(&mut self, payload: &[u8]) -> Result<OkInfo, BackendError> {
        let p = self.command(payload).await?;
        self.expect_ok(&p.payload)
    }

    fn expect_ok(&mut self, payload: &[u8]) -> Result<OkInfo, BackendError> {
        match payload.first() {
            Some(0x00) | Some(0xFE) => {
                let ok = if payload.len() > 5 || payload[0] == 0 {
                    parse_ok(payload)
                } else {
                    crate::protocol::messages::parse_eof(payload)
                };
                let ok = ok.ok_or(BackendError::Protocol("bad OK packet"))?;
                self.status = ok.status;
                Ok(ok)
            }
            Some(0xFF) => Err(BackendError::Server(
                parse_err(payload).ok_or(BackendError::Protocol("bad ERR packet"))?,
            )),
            _ => Err(BackendError::Protocol("expected OK or ERR")),
        }
    }

    /// Runs a text query whose results are OK packets only (SET, USE, ...).
    pub async fn query_ok(&mut self, sql: &str) -> Result<OkInfo, BackendError> {
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(cmd::COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        let mut ok = self.simple(&payload).await?;
        // multi-statement SETs answer with one OK each
        while ok
            .flags()
            .contains(crate::protocol::StatusFlags::SERVER_MORE_RESULTS_EXISTS)
        {
            let p = self.io.read_packet().await?;
            ok = self.expect_ok(&p.payload)?;
        }
        Ok(ok)
    }

    /// Runs a text query and reads its rows (small results only: the proxy's own
    /// look-ups); NULL is None.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<Vec<u8>>>>, BackendError> {
        let mut payload = vec![cmd::COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        let first = self.command(&payload).await?.payload;
        let columns = match first.first() {
            Some(0x00) => return Ok(Vec::new()),
            Some(0xFF) => {
                return Err(self
                    .expect_ok(&first)
                    .err()
                    .unwrap_or(BackendError::Protocol("bad ERR")))
            }
            _ => {
                crate::protocol::messages::read_lenenc(&first)
                    .ok_or(BackendError::Protocol("bad column count"))?
                    .0
            }
        };
        for _ in 0..columns {
            self.io.read_packet().await?;
        }
        if !self.class.deprecate_eof() {
            self.io.read_packet().await?;
        }
        let mut rows = Vec::new();
        loop {
            let p = self.io.read_packet().await?.payload;
            match p.first() {
                Some(0xFE) if p.len() < 0xFF_FFFF => {
                    self.expect_ok(&p)?;
                    return Ok(rows);
                }
                Some(0xFF) => {
                    return Err(self
                        .expect_ok(&p)
                        .err()
                        .unwrap_or(BackendError::Protocol("bad ERR")))
                }
                _ => rows.push(text_row(&p, columns as usize)?),
            }
        }
    }

    /// Brings the connection to the session's wanted state; on error the connection is
    /// left in an unknown state and must be discarded.
    pub async fn sync(&mut self, want: &ConnState) -> Result<(), BackendError> {
        let plan = state::sync_plan(want, &self.state, self.profile.mariadb);
        if plan.is_empty() {
            return Ok(());
        }
        if let Some(on) = plan.multi_statements {
            let opt = if on {
                cmd::MYSQL_OPTION_MULTI_STATEMENTS_ON
            } else {
                cmd::MYSQL_OPTION_MULTI_STATEMENTS_OFF
            };
            let b = opt.to_le_bytes();
            self.simple(&[cmd::COM_SET_OPTION, b[0], b[1]]).await?;
            self.state.multi_statements = Some(on);
        }
        if let Some(db) = plan.init_db {
            let mut p = vec![cmd::COM_INIT_DB];
            p.extend_from_slice(db.as_bytes());
            self.simple(&p).await?;
            self.state.schema = Some(db);
        }
        for sql in [plan.set_sql, plan.transaction_sql].into_iter().flatten() {
            self.query_ok(&sql).await?;
        }
        let multi = self.state.multi_statements;
        let schema = self.state.schema.clone();
        self.state = want.clone();
        self.state.multi_statements = multi;
        self.state.schema = schema;
        Ok(())
    }

    /// COM_RESET_CONNECTION: variables back to global values, statements dropped.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        self.simple(&[cmd::COM_RESET_CONNECTION]).await?;
        self.state.vars.clear();
        self.state.transaction = None;
        self.state.charset = Charset::Unknown;
        self.stmts.clear_without_close();
        self.track_gtids().await
    }

    /// False when the server closed the socket or sent something unasked while idle.
    pub fn looks_alive(&self) -> bool {
        if !self.io.read_idle() {
            return false;
        }
        self.io.stream.idle_and_open()
    }

    /// Queues COM_STMT_CLOSE for statements evicted from the cache (no reply to read).
    fn flush_stmt_closes(&mut self) {
        for id in self.stmts.take_evicted() {
            let b = id.to_le_bytes();
            self.io
                .queue(0, &[cmd::COM_STMT_CLOSE, b[0], b[1], b[2], b[3]]);
        }
    }

    /// Sends the queued statement closes together with a command's first bytes.
    pub fn queue_command(&mut self, payload: &[u8]) {
        self.flush_stmt_closes();
        self.io.queue(0, payload);
    }
}

/// The columns of a text-protocol row.
fn text_row(mut p: &[u8], n: usize) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if p.first() == Some(&0xFB) {
            out.push(None);
            p = &p[1..];
            continue;
        }
        let (len, used) = crate::protocol::messages::read_lenenc(p)
            .ok_or(BackendError::Protocol("bad text row"))?;
        let end = used + len as usize;
        out.push(Some(
            p.get(used..end)
                .ok_or(BackendError::Protocol("short text row"))?
                .to_vec(),
        ));
        p = &p[end..];
    }
    Ok(out)
}

async fn finish_auth(
    io: &mut BackendIo,
    p: &ConnectParams,
    mut plugin: &'static str,
) -> Result<(), BackendError> {
    let auth_err = |m: String| BackendError::Auth(p.address.clone(), m);
    for _ in 0..4 {
        let r = io.read_packet().await?;
        match r.payload.first() {
            Some(0x00) => return Ok(()),
            Some(0xFF) => {
                let e = parse_err(&r.payload).map(|e| e.text()).unwrap_or_default();
                return Err(auth_err(e));
            }
            Some(0xFE) => {
                // auth switch: plugin name NUL nonce
                let body = &r.payload[1..];
                let nul = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                plugin = match &body[..nul] {
                    b"caching_sha2_password" => auth::CACHING_SHA2,
                    b"mysql_native_password" => auth::NATIVE,
                    other => {
                        return Err(auth_err(format!(
                            "unsupported auth plugin {}",
                            String::from_utf8_lossy(other)
                        )))
                    }
                };
                let nonce = body.get(nul + 1..).unwrap_or_default();
                let nonce = nonce.strip_suffix(&[0]).unwrap_or(nonce);
                let resp =
                    auth::client_response(plugin, nonce, p.password.as_bytes()).unwrap_or_default();
                io.send(r.seq.wrapping_add(1), &resp).await?;
            }
            Some(0x01) if r.payload.get(1) == Some(&auth::FAST_AUTH_SUCCESS) => continue,
            Some(0x01) => {
                return Err(auth_err(format!(
                "{plugin} full authentication needs TLS, which backend connections do not use yet"
            )))
            }
            _ => return Err(auth_err("unexpected packet during authentication".into())),
        }
    }
    Err(auth_err("authentication did not finish".into()))
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod conn_tests;
