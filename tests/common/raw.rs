//! A raw protocol client: handshake with mysql_native_password, then any command bytes.

use switchyard::protocol::handshake;
use switchyard::protocol::packet::PacketStream;
use switchyard::protocol::{auth, CapabilityFlags};
use tokio::net::TcpStream;

use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

pub struct Raw {
    pub io: PacketStream<TcpStream>,
    pub conn_id: u32,
}

/// The capabilities of a classic client (no DEPRECATE_EOF), as the mariadb CLI sends.
pub fn classic_caps() -> CapabilityFlags {
    switchyard::protocol::client_capabilities() - CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Connects and authenticates; Err carries the server's first reply payload on failure.
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    caps: CapabilityFlags,
) -> Result<Raw, Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut io = PacketStream::new(tcp, 1 << 26);
    let g = io.read_packet().await.unwrap();
    if g.payload[0] == 0xFF {
        return Err(g.payload.to_vec());
    }
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(&g.payload)).unwrap();
    let resp = auth::client_response(auth::NATIVE, &hs.nonce(), password.as_bytes()).unwrap();
    let hello = HandshakeResponse::new(
        Some(resp),
        (8, 0, 0),
        Some(user.as_bytes()),
        Some(&b"sbtest"[..]),
        Some(AuthPlugin::MysqlNativePassword),
        caps,
        None,
        1 << 24,
    );
    let mut buf = Vec::new();
    hello.serialize(&mut buf);
    io.send(g.seq + 1, &buf).await.unwrap();
    let r = io.read_packet().await.unwrap();
    if r.payload[0] != 0 {
        return Err(r.payload.to_vec());
    }
    let _ = handshake::is_ssl_request(&[]);
    Ok(Raw {
        io,
        conn_id: hs.connection_id(),
    })
}

impl Raw {
    /// Sends a command and returns the reply packets up to (and including) the first
    /// packet for which `last` says true.
    pub async fn command(
        &mut self,
        payload: &[u8],
        last: impl Fn(&[u8], usize) -> bool,
    ) -> Vec<Vec<u8>> {
        self.io.send(0, payload).await.unwrap();
        let mut out = Vec::new();
        loop {
            let p = self.io.read_packet().await.unwrap();
            let done = last(&p.payload, out.len());
            out.push(p.payload.to_vec());
            if done {
                return out;
            }
        }
    }

    /// A text query whose reply ends at an OK/ERR first packet or the n-th EOF.
    pub async fn query_classic(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        let eofs = std::cell::Cell::new(0);
        self.command(&p, |pk, i| {
            if i == 0 && (pk[0] == 0x00 || pk[0] == 0xFF) {
                return true;
            }
            if pk[0] == 0xFE && pk.len() < 9 {
                eofs.set(eofs.get() + 1);
            }
            pk[0] == 0xFF || eofs.get() == 2
        })
        .await
    }
}
