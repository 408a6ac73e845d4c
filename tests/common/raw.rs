//! A raw protocol client: handshake with mysql_native_password, then any command bytes.
//! It talks to switchyard or straight to a server, so replies can be compared byte by byte.

use switchyard::protocol::auth;
use switchyard::protocol::messages::{parse_eof, parse_ok, read_lenenc};
use switchyard::protocol::packet::PacketStream;
use switchyard::protocol::CapabilityFlags;
use tokio::net::{TcpSocket, TcpStream};

use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

pub struct Raw {
    pub io: PacketStream<TcpStream>,
    pub conn_id: u32,
    /// The capabilities in effect: what the client asked for and the greeting offered.
    pub caps: CapabilityFlags,
    /// The greeting payload as the peer sent it.
    pub greeting: Vec<u8>,
}

/// The capabilities of a classic client (no DEPRECATE_EOF), as the mariadb CLI sends.
pub fn classic_caps() -> CapabilityFlags {
    switchyard::protocol::client_capabilities() - CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// utf8mb4_general_ci, what `connect` asks for.
pub const UTF8MB4_GENERAL_CI: u8 = 45;

/// SERVER_MORE_RESULTS_EXISTS in an OK's or EOF's status.
const MORE_RESULTS: u16 = 0x0008;

/// Connects to switchyard on 127.0.0.1:`port` and authenticates; Err carries the
/// server's first reply payload on failure.
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    caps: CapabilityFlags,
) -> Result<Raw, Vec<u8>> {
    connect_to(
        &format!("127.0.0.1:{port}"),
        user,
        password,
        caps,
        0,
        UTF8MB4_GENERAL_CI,
    )
    .await
}

/// Connects from 127.0.0.1 to `addr` (switchyard or a server: loopback only) with database
/// sbtest and authenticates. `collation` is the handshake's collation byte; a non-zero
/// `mariadb_ext` clears CLIENT_LONG_PASSWORD (MariaDB's CLIENT_MYSQL) and sends those
/// MariaDB extended capabilities. Answers an auth switch. Err carries the ERR payload.
pub async fn connect_to(
    addr: &str,
    user: &str,
    password: &str,
    caps: CapabilityFlags,
    mariadb_ext: u32,
    collation: u8,
) -> Result<Raw, Vec<u8>> {
    let addr: std::net::SocketAddr = addr.parse().expect("an ip:port address");
    assert!(addr.ip().is_loopback(), "loopback only: {addr}");
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
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
    buf[8] = collation;
    if mariadb_ext != 0 {
        buf[0] &= !(CapabilityFlags::CLIENT_LONG_PASSWORD.bits() as u8);
        buf[28..32].copy_from_slice(&mariadb_ext.to_le_bytes());
    }
    let sent =
        CapabilityFlags::from_bits_truncate(u32::from_le_bytes(buf[..4].try_into().unwrap()));
    io.send(g.seq.wrapping_add(1), &buf).await.unwrap();
    let mut r = io.read_packet().await.unwrap();
    // bounded: a server asks for a switch at most once or twice
    for _ in 0..3 {
        if r.payload.first() != Some(&0xFE) || r.payload.len() < 2 {
            break;
        }
        let nul = r.payload[1..].iter().position(|b| *b == 0).unwrap();
        let plugin = String::from_utf8_lossy(&r.payload[1..1 + nul]).into_owned();
        let mut nonce = r.payload[2 + nul..].to_vec();
        if nonce.last() == Some(&0) {
            nonce.pop();
        }
        let answer = auth::client_response(&plugin, &nonce, password.as_bytes())
            .unwrap_or_else(|| panic!("no answer for plugin {plugin}"));
        io.send(r.seq.wrapping_add(1), &answer).await.unwrap();
        r = io.read_packet().await.unwrap();
    }
    if r.payload[0] != 0 {
        return Err(r.payload.to_vec());
    }
    Ok(Raw {
        io,
        conn_id: hs.connection_id(),
        caps: sent & hs.capabilities(),
        greeting: g.payload.to_vec(),
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

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Reads one packet: (sequence id of its last wire packet, payload).
    async fn next(&mut self) -> (u8, Vec<u8>) {
        let p = self.io.read_packet().await.unwrap();
        (p.seq, p.payload.to_vec())
    }

    /// Reads the whole reply to a text command (every result of a multi-result reply),
    /// with each packet's sequence id. Works for classic and DEPRECATE_EOF clients.
    pub async fn read_reply(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        // bounded: a reply holds at most this many results
        for _ in 0..1000 {
            let first = self.next().await;
            let head = first.1[0];
            out.push(first);
            let status = match head {
                0x00 => parse_ok(&out.last().unwrap().1).unwrap().status,
                0xFF => return out,
                0xFB => panic!("LOCAL INFILE requests are not handled here"),
                _ => {
                    let (columns, _) = read_lenenc(&out.last().unwrap().1).unwrap();
                    for _ in 0..columns {
                        let c = self.next().await;
                        out.push(c);
                    }
                    if !self.deprecate_eof() {
                        let e = self.next().await;
                        out.push(e);
                    }
                    self.read_rows(&mut out).await
                }
            };
            if status & MORE_RESULTS == 0 {
                return out;
            }
        }
        panic!("more than 1000 results in one reply");
    }

    /// Rows up to the terminator; returns its status (0 after an ERR).
    async fn read_rows(&mut self, out: &mut Vec<(u8, Vec<u8>)>) -> u16 {
        loop {
            let p = self.next().await;
            let (head, len) = (p.1[0], p.1.len());
            out.push(p);
            let last = &out.last().unwrap().1;
            match head {
                0xFF => return 0,
                0xFE if self.deprecate_eof() && len < 0xFF_FFFF => {
                    return parse_ok(last).unwrap().status
                }
                0xFE if !self.deprecate_eof() && len < 9 => return parse_eof(last).unwrap().status,
                _ => {}
            }
        }
    }

    /// COM_QUERY of `sql` (any bytes); the reply's payloads.
    pub async fn query(&mut self, sql: impl AsRef<[u8]>) -> Vec<Vec<u8>> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_ref());
        self.io.send(0, &p).await.unwrap();
        self.read_reply()
            .await
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// The text rows of a one-result reply (panics on an ERR).
    pub async fn rows(&mut self, sql: &str) -> Vec<Vec<Option<Vec<u8>>>> {
        let reply = self.query(sql).await;
        assert_ne!(
            reply[0][0],
            0xFF,
            "{sql}: {}",
            String::from_utf8_lossy(&reply[0])
        );
        text_rows(&reply, self.deprecate_eof())
    }

    /// COM_STMT_PREPARE of `sql`: PREPARE_OK (or ERR) and the definitions that follow.
    pub async fn prepare(&mut self, sql: &[u8]) -> Vec<Vec<u8>> {
        let mut p = vec![0x16];
        p.extend_from_slice(sql);
        self.io.send(0, &p).await.unwrap();
        let first = self.next().await.1;
        if first[0] != 0x00 {
            return vec![first];
        }
        let columns = u16::from_le_bytes([first[5], first[6]]);
        let params = u16::from_le_bytes([first[7], first[8]]);
        let mut out = vec![first];
        for n in [params, columns] {
            for _ in 0..n {
                out.push(self.next().await.1);
            }
            if n > 0 && !self.deprecate_eof() {
                out.push(self.next().await.1);
            }
        }
        out
    }
}

/// The rows of a one-result text reply: each value's bytes, None for NULL.
pub fn text_rows(reply: &[Vec<u8>], deprecate_eof: bool) -> Vec<Vec<Option<Vec<u8>>>> {
    if reply[0][0] == 0x00 {
        return Vec::new();
    }
    let (columns, _) = read_lenenc(&reply[0]).unwrap();
    let skip = 1 + columns as usize + usize::from(!deprecate_eof);
    let rows = &reply[skip..reply.len() - 1];
    rows.iter()
        .map(|r| {
            let mut at = 0;
            (0..columns)
                .map(|_| {
                    if r[at] == 0xFB {
                        at += 1;
                        return None;
                    }
                    let (n, used) = read_lenenc(&r[at..]).unwrap();
                    let v = r[at + used..at + used + n as usize].to_vec();
                    at += used + n as usize;
                    Some(v)
                })
                .collect()
        })
        .collect()
}
