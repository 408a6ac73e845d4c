//! Client authentication: the greeting, the handshake response, verifying the scramble
//! against the configured password, and COM_CHANGE_USER (handled in the proxy).

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, SessionEnd, Shared};
use crate::backend::state::{Charset, ConnState};
use crate::error::ClientError;
use crate::protocol::handshake::ServerProfile;
use crate::protocol::handshake::{self, ClientHello};
use crate::protocol::messages::ok_payload;
use crate::protocol::packet::PacketStream;
use crate::protocol::{auth, CapabilityFlags, ConnClass, ProtoError, StatusFlags};
use crate::tls::ClientStream;

/// A client that passed authentication.
pub struct Authenticated {
    pub user: String,
    pub caps: CapabilityFlags,
    pub class: ConnClass,
    pub scramble: [u8; 20],
    pub want: ConnState,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Io(#[from] ProtoError),
    #[error("{0}")]
    Refused(ClientError),
}

/// Runs the server side of the handshake; on failure the client got an ERR packet. A client
/// that sends an SSLRequest (offered when `[server.tls]` has a certificate) goes on over TLS.
pub async fn handshake(
    io: &mut PacketStream<ClientStream>,
    shared: &Shared,
    id: u32,
    host: &str,
) -> Result<Authenticated, HandshakeError> {
    let scramble = auth::new_scramble();
    let tls = shared.tls.load_full();
    let greeting = handshake::greeting(id, &scramble, &shared.profile, tls.acceptor.is_some());
    io.send(0, &greeting).await?;
    let mut p = io.read_packet().await?;
    if handshake::is_ssl_request(&p.payload) {
        let Some(acceptor) = &tls.acceptor else {
            return refuse(io, p.seq.wrapping_add(1), ClientError::BadHandshake).await;
        };
        // exact mode: nothing past the SSLRequest was read, the TLS handshake follows it
        io.stream.upgrade(acceptor).await.map_err(ProtoError::Io)?;
        p = io.read_packet().await?;
    }
    let seq = p.seq.wrapping_add(1);
    if tls.require && !io.stream.is_tls() {
        return refuse(io, seq, ClientError::InsecureTransport).await;
    }
    let hello = match handshake::parse_hello(&p.payload) {
        Ok(h) => h,
        Err(_) => return refuse(io, seq, ClientError::BadHandshake).await,
    };
    let seq = verify_hello(io, shared, &hello, &scramble, seq, host).await?;
    let caps = hello.capabilities & shared.profile.offered();
    let ext = hello.mariadb_ext & shared.profile.offered_ext();
    let class = ConnClass::of(caps, ext);
    if let Some(db) = &hello.database {
        if let Err(e) = check_schema(shared, &hello.user, class, db).await {
            return refuse(io, seq, e).await;
        }
    }
    io.send(seq, &ok_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT))
        .await?;
    tracing::debug!(conn = id, user = %hello.user, "client authenticated");
    Ok(Authenticated {
        user: hello.user,
        caps,
        class,
        scramble,
        want: ConnState {
            schema: hello.database,
            charset: handshake_charset(&shared.profile, hello.collation),
            multi_statements: Some(caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS)),
            ..ConnState::default()
        },
    })
}

/// The character set a handshake's collation id gives: the server's names for it, or the
/// server's defaults when it does not know the id (what a server does at a handshake).
pub(super) fn handshake_charset(profile: &ServerProfile, id: u8) -> Charset {
    match profile.names_for(id) {
        Some((charset, collation)) => Charset::Names {
            charset,
            collation: Some(collation),
        },
        None => Charset::ServerDefault,
    }
}

/// Checks the password (switching the client to mysql_native_password when it chose a
/// plugin switchyard cannot verify); returns the sequence id for the final OK.
async fn verify_hello<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut PacketStream<S>,
    shared: &Shared,
    hello: &ClientHello,
    scramble: &[u8; 20],
    mut seq: u8,
    host: &str,
) -> Result<u8, HandshakeError> {
    let mut plugin = hello.plugin.as_deref().unwrap_or(auth::NATIVE);
    let mut response = hello.auth_response.clone();
    if plugin != auth::NATIVE && plugin != auth::CACHING_SHA2 {
        io.send(seq, &handshake::auth_switch(auth::NATIVE, scramble))
            .await?;
        let p = io.read_packet().await?;
        seq = p.seq.wrapping_add(1);
        plugin = auth::NATIVE;
        response = p.payload.to_vec();
    }
    let ok =
        shared.users.load().get(&hello.user).is_some_and(|u| {
            auth::verify(plugin, scramble, u.password.expose().as_bytes(), &response)
        });
    if !ok {
        shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(user = %hello.user, plugin, "authentication failed");
        let using = if response.is_empty() { "NO" } else { "YES" };
        let e = ClientError::AccessDenied {
            user: hello.user.clone(),
            host: host.to_string(),
            using,
        };
        return refuse(io, seq, e).await;
    }
    if plugin == auth::CACHING_SHA2 {
        seq = io.send(seq, &[0x01, auth::FAST_AUTH_SUCCESS]).await?;
    }
    Ok(seq)
}

/// A schema named in the handshake must exist, as on a server (1049 at connect, not at the
/// first statement). Checked on a standby (or the primary); with no backend reachable the
/// client is let in and learns it at its first statement.
async fn check_schema(
    shared: &Shared,
    user: &str,
    class: ConnClass,
    db: &str,
) -> Result<(), ClientError> {
    let node = {
        let snap = shared.topology.snapshot();
        match snap.standby(None, db.len()).or_else(|| snap.primary()) {
            Some(n) => n.clone(),
            None => return Ok(()),
        }
    };
    let Ok(mut lease) = shared
        .pools_of(&node)
        .lease(user, class, shared.limits.load().lease_timeout)
        .await
    else {
        return Ok(());
    };
    let conn = lease.conn();
    if conn.state.schema.as_deref() == Some(db) {
        lease.release();
        return Ok(());
    }
    let mut p = vec![crate::protocol::command::COM_INIT_DB];
    p.extend_from_slice(db.as_bytes());
    // a server that stops answering (frozen) is given up once the probes notice
    let asked = tokio::select! {
        biased;
        r = conn.simple(&p) => r,
        () = shared.topology.failed(node.id) => return Ok(()),
    };
    match asked {
        Ok(_) => {
            conn.state.schema = Some(db.to_string());
            lease.release();
            Ok(())
        }
        Err(crate::backend::BackendError::Server(e)) => {
            lease.release();
            Err(e.into())
        }
        Err(_) => Ok(()),
    }
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin, T>(
    io: &mut PacketStream<S>,
    seq: u8,
    e: ClientError,
) -> Result<T, HandshakeError> {
    io.send(seq, &e.payload()).await?;
    Err(HandshakeError::Refused(e))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// COM_CHANGE_USER: re-authenticates here (Dolt lacks the command), then starts the
    /// session afresh as the new user. A failed attempt answers 1045 and keeps the connection.
    pub(super) async fn change_user(&mut self, p: &[u8]) -> Result<(), SessionEnd> {
        let cu = match handshake::parse_change_user(p, self.caps) {
            Ok(c) => c,
            Err(_) => {
                self.send_err(self.reply_seq, &ClientError::Malformed("COM_CHANGE_USER"))
                    .await?;
                return Err(SessionEnd::Closed("bad COM_CHANGE_USER".into()));
            }
        };
        let mut plugin = match cu.plugin.as_deref() {
            Some(auth::CACHING_SHA2) => auth::CACHING_SHA2,
            Some(auth::NATIVE) | None => auth::NATIVE,
            Some(_) => "",
        };
        let mut response = cu.auth_response.clone();
        let mut seq = self.reply_seq;
        if plugin.is_empty() || (response.is_empty() && self.has_password(&cu.user)) {
            // as a server: a plugin it cannot check, or no answer yet (MySQL 8's C client
            // sends none), gets an AuthSwitchRequest with a fresh scramble
            self.scramble = auth::new_scramble();
            self.io
                .send(seq, &handshake::auth_switch(auth::NATIVE, &self.scramble))
                .await?;
            let p = self.io.read_packet().await?;
            seq = p.seq.wrapping_add(1);
            self.reply_seq = seq;
            plugin = auth::NATIVE;
            response = p.payload.to_vec();
        }
        let ok = self.shared.users.load().get(&cu.user).is_some_and(|u| {
            auth::verify(
                plugin,
                &self.scramble,
                u.password.expose().as_bytes(),
                &response,
            )
        });
        if !ok {
            self.shared
                .stats
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(user = %cu.user, "COM_CHANGE_USER authentication failed");
            let using = if response.is_empty() { "NO" } else { "YES" };
            let e = ClientError::AccessDenied {
                user: cu.user,
                host: self.handle.client.clone(),
                using,
            };
            // as MariaDB: the session is reset (variables, temp tables, transaction), the
            // previous user, schema and character set stay, the connection stays open
            let (user, schema) = (self.user.clone(), self.want.schema.clone());
            self.start_over(&user, schema, None);
            return self.send_err(self.reply_seq, &e).await;
        }
        self.start_over(&cu.user, cu.database, cu.collation);
        // the server applies IGNORE_SPACE and INTERACTIVE at connect only: a changed
        // user's session runs with the global sql_mode and wait_timeout
        let keep =
            self.caps - CapabilityFlags::CLIENT_IGNORE_SPACE - CapabilityFlags::CLIENT_INTERACTIVE;
        self.class = ConnClass::of(keep, self.class.ext());
        if plugin == auth::CACHING_SHA2 {
            seq = self.io.send(seq, &[0x01, auth::FAST_AUTH_SUCCESS]).await?;
        }
        self.io.send(seq, &ok_payload(self.flags())).await?;
        Ok(())
    }

    fn has_password(&self, user: &str) -> bool {
        self.shared
            .users
            .load()
            .get(user)
            .is_some_and(|u| !u.password.expose().is_empty())
    }

    /// Drops all session state (a held connection is closed: its transaction rolls back).
    fn start_over(&mut self, user: &str, schema: Option<String>, collation: Option<u8>) {
        self.held = None;
        self.spec = super::optimistic::Spec::Off;
        self.pins.clear();
        self.stmts.clear();
        self.txn.reset();
        self.last_conn = None;
        self.last_write = None;
        self.user = user.to_string();
        self.policy = self
            .shared
            .users
            .load()
            .get(user)
            .map(|u| u.policy)
            .unwrap_or_default();
        *self.handle.user.lock() = user.to_string();
        let charset = match collation {
            Some(c) => handshake_charset(&self.shared.profile, c),
            None => self.want.charset.clone(),
        };
        self.want = ConnState {
            schema,
            charset,
            multi_statements: self.want.multi_statements,
            ..ConnState::default()
        };
    }
}
