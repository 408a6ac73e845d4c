//! Handshake v10 towards clients and the handshake response parser; the backend-side
//! handshake packets come from mysql_common too.

use std::collections::HashMap;

use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::MyDeserialize;

use super::{auth, client_capabilities, CapabilityFlags, ProtoError, StatusFlags};

/// What the backends' greeting says, presented to clients as the server itself would:
/// version string (MariaDB's `5.5.5-` prefix included), capabilities, MariaDB's extended
/// capabilities, default collation, and the collations the server knows.
#[derive(Debug, Clone, Default)]
pub struct ServerProfile {
    pub version: String,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities (0 for MySQL, Dolt).
    pub ext: u32,
    /// The greeting cleared CLIENT_MYSQL: a MariaDB server that reads extended capabilities.
    pub mariadb: bool,
    pub collation: u8,
    /// Collation id -> (character set, collation) as the server names them; empty when not
    /// learned.
    pub collations: HashMap<u8, (String, String)>,
}

impl ServerProfile {
    /// Used until a backend has been reached: a version string and every capability.
    pub fn fallback(version: &str) -> Self {
        ServerProfile {
            version: version.to_string(),
            caps: client_capabilities(),
            collation: super::UTF8MB4_GENERAL_CI,
            ..ServerProfile::default()
        }
    }

    /// From a backend's greeting payload.
    pub fn from_greeting(payload: &[u8]) -> Option<Self> {
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(payload)).ok()?;
        let caps = hs.capabilities();
        let mariadb = !caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD);
        Some(ServerProfile {
            version: hs.server_version_str().into_owned(),
            caps,
            ext: if mariadb { greeting_ext(payload) } else { 0 },
            mariadb,
            collation: hs.default_collation(),
            collations: HashMap::new(),
        })
    }

    /// Capabilities offered to clients: switchyard's set, less what the backends lack.
    pub fn offered(&self) -> CapabilityFlags {
        let mut c = client_capabilities() & self.caps;
        c.set(CapabilityFlags::CLIENT_LONG_PASSWORD, !self.mariadb);
        c | CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION
    }

    /// MariaDB extended capabilities offered to clients.
    pub fn offered_ext(&self) -> u32 {
        if self.mariadb {
            self.ext & super::mariadb::SUPPORTED
        } else {
            0
        }
    }

    /// `SET NAMES` text for a handshake collation id, as the server names it; None when
    /// the server does not know the id (it then keeps its defaults, as at a handshake).
    pub fn names_for(&self, id: u8) -> Option<(String, String)> {
        if !self.collations.is_empty() {
            return self.collations.get(&id).cloned();
        }
        use mysql_common::collations::{Collation, CollationId};
        let c = Collation::resolve(CollationId::from(u16::from(id)));
        let mysql8_only = c.collation().contains("_0900_");
        let unknown = c.charset().is_empty() || (self.mariadb && mysql8_only);
        (!unknown).then(|| (c.charset().to_string(), c.collation().to_string()))
    }
}

/// MariaDB's extended capabilities: the last 4 of the 10 reserved bytes of a greeting.
fn greeting_ext(payload: &[u8]) -> u32 {
    let Some(nul) = payload.iter().skip(1).position(|b| *b == 0) else {
        return 0;
    };
    let at = 1 + nul + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 6;
    payload
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Builds the greeting payload for a new client connection, as `profile`'s server would
/// (offering TLS when `tls`).
pub fn greeting(conn_id: u32, scramble: &[u8; 20], profile: &ServerProfile, tls: bool) -> Vec<u8> {
    let mut offered = profile.offered();
    offered.set(CapabilityFlags::CLIENT_SSL, tls);
    let caps = offered.bits();
    let mut out = Vec::with_capacity(96 + profile.version.len());
    out.push(10);
    out.extend_from_slice(profile.version.as_bytes());
    out.push(0);
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(&scramble[..8]);
    out.push(0);
    out.extend_from_slice(&(caps as u16).to_le_bytes());
    out.push(profile.collation);
    out.extend_from_slice(&StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits().to_le_bytes());
    out.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    out.push(21);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&profile.offered_ext().to_le_bytes());
    out.extend_from_slice(&scramble[8..]);
    out.push(0); // on the wire a NUL follows part 2
    out.extend_from_slice(auth::NATIVE.as_bytes());
    out.push(0);
    out
}

/// What a client said in its handshake response.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub attributes: HashMap<String, String>,
    /// MariaDB extended capabilities (a client that cleared CLIENT_MYSQL sends them).
    pub mariadb_ext: u32,
}

/// True for a 32-byte SSLRequest (a handshake response cut short after the reserved bytes).
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
            & CapabilityFlags::CLIENT_SSL.bits()
            != 0
}

/// Parses a HandshakeResponse41.
pub fn parse_hello(payload: &[u8]) -> Result<ClientHello, ProtoError> {
    let r = HandshakeResponse::deserialize((), &mut ParseBuf(payload))
        .map_err(|_| ProtoError::Malformed("handshake response"))?;
    let caps = r.capabilities();
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(ProtoError::Malformed("client does not speak protocol 4.1"));
    }
    Ok(ClientHello {
        capabilities: caps,
        collation: r.collation(),
        user: String::from_utf8_lossy(r.user()).into_owned(),
        auth_response: r.scramble_buf().to_vec(),
        database: r
            .db_name()
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        plugin: r
            .auth_plugin()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned()),
        attributes: r.connect_attributes().unwrap_or_default(),
        mariadb_ext: if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
            0
        } else {
            payload
                .get(28..32)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        },
    })
}

/// An AuthSwitchRequest payload asking the client for `plugin` over `scramble`.
pub fn auth_switch(plugin: &str, scramble: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + plugin.len() + 21);
    out.push(0xFE);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out.extend_from_slice(scramble);
    out.push(0);
    out
}

/// What COM_CHANGE_USER carries.
#[derive(Debug, Clone)]
pub struct ChangeUser {
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub collation: Option<u8>,
    pub plugin: Option<String>,
}

/// Parses a COM_CHANGE_USER payload (command byte included).
pub fn parse_change_user(payload: &[u8], caps: CapabilityFlags) -> Result<ChangeUser, ProtoError> {
    let bad = ProtoError::Malformed("COM_CHANGE_USER");
    let mut rest = payload
        .get(1..)
        .ok_or(ProtoError::Malformed("COM_CHANGE_USER"))?;
    let user = take_nul(&mut rest).ok_or(ProtoError::Malformed("COM_CHANGE_USER user"))?;
    let auth_response = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let n = usize::from(*rest.first().ok_or(bad)?);
        let a = rest
            .get(1..1 + n)
            .ok_or(ProtoError::Malformed("COM_CHANGE_USER auth"))?;
        rest = &rest[1 + n..];
        a.to_vec()
    } else {
        take_nul(&mut rest).unwrap_or_default().to_vec()
    };
    let database = take_nul(&mut rest).filter(|d| !d.is_empty());
    let collation = (rest.len() >= 2).then(|| {
        let c = rest[0];
        rest = &rest[2..];
        c
    });
    let plugin = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        take_nul(&mut rest).map(|p| String::from_utf8_lossy(p).into_owned())
    } else {
        None
    };
    Ok(ChangeUser {
        user: String::from_utf8_lossy(user).into_owned(),
        auth_response,
        database: database.map(|d| String::from_utf8_lossy(d).into_owned()),
        collation,
        plugin,
    })
}

fn take_nul<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let pos = rest.iter().position(|b| *b == 0)?;
    let s = &rest[..pos];
    *rest = &rest[pos + 1..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::proto::MySerialize;

    #[test]
    fn greeting_parses_back_with_the_full_scramble() {
        let scramble = auth::new_scramble();
        let mut profile = ServerProfile::fallback("5.5.5-10.11.6-MariaDB");
        profile.mariadb = true;
        profile.ext = super::super::mariadb::CLIENT_EXTENDED_TYPE_INFO | 1;
        let g = greeting(42, &scramble, &profile, false);
        let p = HandshakePacket::deserialize((), &mut ParseBuf(&g)).unwrap();
        assert_eq!(p.connection_id(), 42);
        assert_eq!(p.nonce(), scramble.to_vec());
        assert_eq!(p.server_version_ref(), b"5.5.5-10.11.6-MariaDB");
        assert_eq!(
            p.capabilities(),
            client_capabilities() - CapabilityFlags::CLIENT_LONG_PASSWORD
        );
        let back = ServerProfile::from_greeting(&g).unwrap();
        assert!(back.mariadb);
        assert_eq!(
            back.ext,
            super::super::mariadb::CLIENT_EXTENDED_TYPE_INFO,
            "only what switchyard supports is offered"
        );
        assert_eq!(back.collation, 45);
        assert_eq!(
            p.auth_plugin().map(|a| a.as_bytes().to_vec()),
            Some(b"mysql_native_password".to_vec())
        );
    }

    #[test]
    fn hello_round_trip() {
        let caps = client_capabilities();
        let r = HandshakeResponse::new(
            Some(vec![1u8; 20]),
            (8, 0, 0),
            Some(b"app".to_vec()),
            Some(b"sbtest".to_vec()),
            Some(mysql_common::packets::AuthPlugin::MysqlNativePassword),
            caps,
            Some([("_client_name".to_string(), "t".to_string())].into()),
            1 << 24,
        );
        let mut buf = Vec::new();
        r.serialize(&mut buf);
        let h = parse_hello(&buf).unwrap();
        assert_eq!(h.user, "app");
        assert_eq!(h.database.as_deref(), Some("sbtest"));
        assert_eq!(h.auth_response, vec![1u8; 20]);
        assert_eq!(h.plugin.as_deref(), Some(auth::NATIVE));
        assert_eq!(
            h.attributes.get("_client_name").map(String::as_str),
            Some("t")
        );
        assert!(!is_ssl_request(&buf));
    }

    #[test]
    fn garbage_hello_is_an_error_not_a_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_hello(&junk);
            let _ = parse_change_user(&junk, client_capabilities());
        }
    }

    #[test]
    fn change_user_parses() {
        let mut p = vec![0x11];
        p.extend_from_slice(b"bob\0");
        p.push(3);
        p.extend_from_slice(&[9, 9, 9]);
        p.extend_from_slice(b"db1\0");
        p.extend_from_slice(&[45, 0]);
        p.extend_from_slice(b"mysql_native_password\0");
        let c = parse_change_user(&p, client_capabilities()).unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(c.auth_response, vec![9, 9, 9]);
        assert_eq!(c.database.as_deref(), Some("db1"));
        assert_eq!(c.collation, Some(45));
        assert_eq!(c.plugin.as_deref(), Some(auth::NATIVE));
    }
}
