//! One client connection: the handshake, its session state, and a short command loop that
//! hands each command to the file for its family (query, prepared, simple, auth).

mod auth;
mod backend_use;
mod command;
mod optimistic;
mod outcome;
mod pins;
mod prepared;
mod query;
pub mod registry;
pub mod replay;
mod simple;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::state::ConnState;
use crate::config::{RoutePolicy, Secret};
use crate::error::ClientError;
use crate::pool::Lease;
use crate::protocol::messages::ok_payload;
use crate::protocol::packet::PacketStream;
use crate::protocol::scan::Encoding;
use crate::protocol::{command as cmd, CapabilityFlags, ConnClass, ProtoError, StatusFlags};
use crate::topology::Topology;
pub use pins::{Pin, Pins};
use prepared::ClientStmt;
use registry::{Handle, Registry, Stats};

/// A configured user.
pub struct UserInfo {
    pub password: Secret,
    pub policy: RoutePolicy,
}

/// Limits every session obeys.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub handshake_timeout: Duration,
    pub lease_timeout: Duration,
    pub max_packet: usize,
    /// Read-your-writes: None is off; Some(window) is on, the window applying to backends
    /// without GTIDs.
    pub read_your_writes: Option<Duration>,
    /// How long a standby may wait for a session's last GTID.
    pub causal_timeout: Duration,
    /// Reads wait for the last write of any session (read_your_writes = "global").
    pub causal_global: bool,
    pub idle_timeout: Option<Duration>,
    pub max_statements: usize,
    /// SQL bytes a session's prepared statements may hold together.
    pub max_statement_bytes: usize,
    /// How long a statement bound for the primary waits while there is none.
    pub write_hold: Duration,
    /// Plain BEGIN opens where the first statement belongs (see session/optimistic.rs).
    pub optimistic: bool,
    /// Transactions are kept for replay within these bounds (None: no replay).
    pub replay: Option<replay::Bounds>,
    /// The commit marker table (`schema.table`), if any.
    pub commit_marker: Option<String>,
    /// A deadlock's victim transaction is replayed (within `replay`).
    pub replay_deadlocks: bool,
}

/// What all sessions share.
pub struct Shared {
    pub topology: Arc<Topology>,
    /// Every backend's pools (the pool layer owns them; snapshots only name backends).
    pub pools: Arc<crate::pool::Pools>,
    /// The configured users, swapped whole by a reload.
    pub users: arc_swap::ArcSwap<HashMap<String, UserInfo>>,
    /// Configurations applied: 1 at start, one more per reload.
    pub config_version: std::sync::atomic::AtomicU64,
    pub registry: Registry,
    pub stats: Stats,
    /// The exported metrics (`/metrics`); statements are counted and timed on the hot path.
    pub metrics: crate::metrics::Metrics,
    /// Query digests (`/digests`).
    pub digests: crate::digest::Digests,
    /// The bearer token the admin port's mutating endpoints need (None: loopback only).
    pub admin_token: arc_swap::ArcSwap<Option<Secret>>,
    /// TLS towards clients (read again at each reload).
    pub tls: arc_swap::ArcSwap<crate::tls::ClientTlsPolicy>,
    /// The last GTID any session's write reported (read_your_writes = "global").
    pub last_gtid: parking_lot::Mutex<Option<Vec<u8>>>,
    /// What the backends' greeting says, presented to clients.
    pub profile: crate::protocol::handshake::ServerProfile,
    /// Swapped whole by a reload.
    pub limits: arc_swap::ArcSwap<SessionLimits>,
    /// True once a graceful shutdown started.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// Readiness is withdrawn (a shutdown is coming) while clients are still served.
    pub unready: std::sync::atomic::AtomicBool,
    /// Transaction replays under way (see session/replay.rs: COMMITs wait for them).
    pub replaying: replay::Replaying,
    /// This proxy instance in commit markers (random at start).
    pub instance: u64,
}

impl Shared {
    /// The pools of a backend of the topology.
    pub fn pools_of(&self, n: &crate::topology::Node) -> Arc<crate::pool::NodePools> {
        self.pools.node(n.id, &n.name, &n.address, &n.outstanding)
    }
}

/// A backend connection kept across commands (transaction or pin).
pub struct Held {
    pub lease: Lease,
    pub node: usize,
    pub standby: bool,
}

/// One client's session.
pub struct Session<S> {
    io: PacketStream<S>,
    shared: Arc<Shared>,
    handle: Arc<Handle>,
    user: String,
    policy: RoutePolicy,
    caps: CapabilityFlags,
    /// The backend connection class this client's capabilities ask for.
    class: ConnClass,
    /// Sequence id of the reply to the current command (a command of 16 MiB or more
    /// takes several packets).
    reply_seq: u8,
    scramble: [u8; 20],
    /// The backend state this session expects (schema, charset, variables).
    want: ConnState,
    /// Autocommit, in transaction, a transaction lost with its connection.
    txn: txn::TxnState,
    held: Option<Held>,
    pins: Pins,
    last_write: Option<Instant>,
    /// The session's last write, for read-your-writes on standbys.
    causal: Option<Causal>,
    /// The connection that ran the previous statement, for same-connection statements.
    last_conn: Option<LastConn>,
    last_insert_id: u64,
    /// What ROW_COUNT() gives after the previous statement.
    row_count: i64,
    /// The digest text of the statement being recorded (reused: no allocation per statement).
    digest_buf: String,
    /// The connection that holds `last_insert_id` as its own (node, thread id).
    last_insert_conn: Option<(usize, u32, u64)>,
    stmts: HashMap<u32, ClientStmt>,
    next_stmt: u32,
    /// Optimistic transaction state.
    spec: optimistic::Spec,
    /// Transactions to send straight to the primary before trying a standby again.
    spec_cooldown: u32,
    spec_backoff: u32,
    spec_writers: optimistic::Writers,
    /// The running transaction's statements, kept for a replay after a failover.
    journal: replay::Journal,
    /// A replay is leasing: it may go over the user's connection limit.
    in_replay: bool,
    /// Commit markers written by this session (the last one's number).
    marks: u64,
    /// Close the client connection after the current reply.
    closing: bool,
}

/// A session's last write as a GTID, and the standbys known to have applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Causal {
    pub gtid: Vec<u8>,
    pub applied: Vec<usize>,
}

/// The backend connection that ran a session's previous statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastConn {
    pub node: usize,
    pub thread_id: u32,
    pub leases: u64,
}

/// Why a session ends.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client quit")]
    Quit,
    #[error("client i/o: {0}")]
    Client(#[from] ProtoError),
    #[error("closed: {0}")]
    Closed(String),
}

/// Serves one accepted client connection to its end.
/// `host`: the client's address, as servers name it in their messages.
pub async fn serve(stream: crate::tls::ClientStream, shared: Arc<Shared>, host: String) {
    let id = shared.registry.next_id();
    // every line this session logs carries its id (the one /sessions and KILL use)
    let span = tracing::info_span!("session", conn = id, client = %host);
    tracing::Instrument::instrument(serve_in_span(stream, shared, host, id), span).await
}

async fn serve_in_span(
    stream: crate::tls::ClientStream,
    shared: Arc<Shared>,
    host: String,
    id: u32,
) {
    let mut io = PacketStream::client(stream, shared.limits.load().max_packet);
    io.exact = true;
    let hs = tokio::time::timeout(
        shared.limits.load().handshake_timeout,
        Box::pin(auth::handshake(&mut io, &shared, id, &host)),
    )
    .await;
    let ok = match hs {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => return tracing::debug!(error = %e, "handshake failed"),
        Err(_) => return tracing::debug!("handshake timed out"),
    };
    io.exact = false;
    tracing::info!(user = %ok.user, "session started");
    let started = std::time::Instant::now();
    let handle = shared
        .registry
        .insert(id, &ok.user, &host, io.stream.is_tls());
    let mut s = Session::new(io, shared.clone(), handle, ok);
    let end = s.run().await;
    Box::pin(s.forget_marks()).await;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(reason = %end, secs, "session ended");
    shared.registry.remove(id);
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn new(
        io: PacketStream<S>,
        shared: Arc<Shared>,
        handle: Arc<Handle>,
        ok: auth::Authenticated,
    ) -> Self {
        let policy = shared
            .users
            .load()
            .get(&ok.user)
            .map(|u| u.policy)
            .unwrap_or_default();
        Session {
            io,
            shared,
            handle,
            user: ok.user,
            policy,
            caps: ok.caps,
            class: ok.class,
            reply_seq: 1,
            scramble: ok.scramble,
            want: ok.want,
            txn: txn::TxnState::default(),
            held: None,
            pins: Pins::default(),
            last_write: None,
            causal: None,
            last_conn: None,
            last_insert_id: 0,
            row_count: -1,
            digest_buf: String::new(),
            last_insert_conn: None,
            stmts: HashMap::new(),
            next_stmt: 1,
            spec: optimistic::Spec::Off,
            spec_cooldown: 0,
            spec_backoff: optimistic::COOLDOWN,
            spec_writers: optimistic::Writers::default(),
            journal: replay::Journal::default(),
            in_replay: false,
            marks: 0,
            closing: false,
        }
    }

    async fn run(&mut self) -> SessionEnd {
        let handle = self.handle.clone();
        let mut draining = self.shared.draining.subscribe();
        loop {
            // shutting down: close between transactions (a transaction finishes first) and
            // between commands (not inside one the client is still sending)
            if *draining.borrow_and_update() && !self.in_transaction() && self.io.read_idle() {
                return SessionEnd::Closed("shutting down".into());
            }
            let packet = tokio::select! {
                p = self.read_command() => p,
                _ = draining.changed() => continue,
                _ = handle.close.notified() => return SessionEnd::Closed("killed".into()),
            };
            let payload = match packet {
                Ok(p) => p,
                Err(e) => return e,
            };
            self.view_start(&payload);
            // boxed: an idle session's task holds only what waiting for a command needs
            let r = Box::pin(self.dispatch(&payload)).await;
            self.view_end();
            self.io.trim();
            if let Err(e) = r {
                return e;
            }
            if self.closing {
                return SessionEnd::Closed("session state lost".into());
            }
        }
    }

    async fn read_command(&mut self) -> Result<bytes::BytesMut, SessionEnd> {
        let read = self.io.read_packet();
        let packet = match self.shared.limits.load().idle_timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| SessionEnd::Closed("idle timeout".into()))?,
            None => read.await,
        };
        match packet {
            Ok(p) if p.payload.is_empty() => Err(SessionEnd::Closed("empty packet".into())),
            Ok(p) => {
                self.reply_seq = p.seq.wrapping_add(1);
                Ok(p.payload)
            }
            Err(ProtoError::TooLarge(..)) => {
                let _ = self
                    .send_err(self.reply_seq, &ClientError::PacketTooLarge)
                    .await;
                Err(SessionEnd::Closed("packet too large".into()))
            }
            Err(e) => Err(SessionEnd::Client(e)),
        }
    }

    async fn dispatch(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        match p[0] {
            cmd::COM_QUERY => self.com_query(p).await,
            cmd::COM_STMT_PREPARE => self.stmt_prepare(p).await,
            cmd::COM_STMT_EXECUTE => self.stmt_execute(p).await,
            cmd::COM_STMT_CLOSE => self.stmt_close(p).await,
            cmd::COM_STMT_RESET => self.stmt_reset(p).await,
            cmd::COM_STMT_SEND_LONG_DATA => self.stmt_long_data(p).await,
            cmd::COM_STMT_FETCH => self.stmt_fetch(p).await,
            cmd::COM_PING => self.send_ok().await,
            cmd::COM_QUIT => Err(SessionEnd::Quit),
            cmd::COM_INIT_DB => self.init_db(p).await,
            cmd::COM_FIELD_LIST => self.field_list(p).await,
            cmd::COM_STATISTICS => self.statistics(p).await,
            cmd::COM_SET_OPTION => self.set_option(p).await,
            cmd::COM_RESET_CONNECTION => self.reset_connection().await,
            cmd::COM_CHANGE_USER => self.change_user(p).await,
            cmd::COM_PROCESS_KILL => self.process_kill(p).await,
            other => {
                let e =
                    ClientError::UnknownCommand(format!("0x{other:02x} ({})", cmd::name(other)));
                self.send_err(self.reply_seq, &e).await
            }
        }
    }

    /// `GET /sessions`: a command starts (its text's first bytes are copied, not allocated).
    fn view_start(&self, payload: &[u8]) {
        let mut v = self.handle.view.lock();
        v.since = Some(Instant::now());
        let text = if payload[0] == cmd::COM_QUERY {
            &payload[1..]
        } else {
            cmd::name(payload[0]).as_bytes()
        };
        let n = text.len().min(registry::STATEMENT_SHOWN);
        v.statement[..n].copy_from_slice(&text[..n]);
        v.statement_len = n;
    }

    /// `GET /sessions`: a command ended; what the session holds now.
    fn view_end(&self) {
        let mut v = self.handle.view.lock();
        v.since = None;
        v.in_transaction = self.in_transaction();
        v.held = self
            .held
            .as_ref()
            .map(|h| (h.node, h.lease.conn_ref().thread_id));
        if !(v.pins.is_empty() && self.pins.is_empty()) {
            v.pins = self.pins.names();
        }
        if v.schema != self.want.schema {
            v.schema = self.want.schema.clone();
        }
    }

    /// The flags an OK written by the proxy carries: the session's real state.
    fn flags(&self) -> StatusFlags {
        self.txn.flags()
    }

    fn in_transaction(&self) -> bool {
        self.txn.in_transaction()
    }

    fn autocommit(&self) -> bool {
        self.txn.autocommit()
    }

    fn classic_client(&self) -> bool {
        !self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// How replies are encoded between this client and a backend connection.
    fn encoding(&self, backend_tracks: bool) -> Encoding {
        let tracked = self
            .want
            .vars
            .get("session_track_system_variables")
            .is_some_and(|v| v.to_ascii_lowercase().contains("last_gtid"));
        let state = self
            .want
            .vars
            .get("session_track_state_change")
            .is_some_and(|v| v == "1");
        Encoding {
            deprecate_eof: !self.classic_client(),
            backend_tracks,
            client_tracks: self.caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK),
            client_wants_gtid: tracked,
            client_wants_state_change: state,
        }
    }

    async fn send_ok(&mut self) -> Result<(), SessionEnd> {
        let ok = ok_payload(self.flags());
        self.io.send(self.reply_seq, &ok).await?;
        Ok(())
    }

    async fn send_err(&mut self, seq: u8, e: &ClientError) -> Result<(), SessionEnd> {
        let (code, origin) = match e {
            ClientError::Server(s) => (s.code, registry::Origin::Server),
            _ => (e.code().0, registry::Origin::Proxy),
        };
        self.shared.stats.errors.count(origin, code);
        self.io.send(seq, &e.payload()).await?;
        Ok(())
    }
}
