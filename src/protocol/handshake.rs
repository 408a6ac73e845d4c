//! Handshake v10 towards clients and the handshake response parser; the backend-side
//! handshake packets come from mysql_common too.

use std::borrow::Cow;
use std::collections::HashMap;

use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

use super::{auth, client_capabilities, CapabilityFlags, ProtoError, StatusFlags};

/// Builds the greeting payload for a new client connection.
pub fn greeting(conn_id: u32, scramble: &[u8; 20], server_version: &str, collation: u8) -> Vec<u8> {
    let mut part2 = scramble[8..].to_vec();
    part2.push(0); // on the wire a NUL follows part 2; mysql_common writes the bytes as given
    let mut s1 = [0u8; 8];
    s1.copy_from_slice(&scramble[..8]);
    let p = HandshakePacket::new(
        10,
        Cow::Borrowed(server_version.as_bytes()),
        conn_id,
        s1,
        Some(part2),
        client_capabilities(),
        collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(auth::NATIVE.as_bytes()),
    );
    let mut out = Vec::with_capacity(96);
    p.serialize(&mut out);
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

    #[test]
    fn greeting_parses_back_with_the_full_scramble() {
        let scramble = auth::new_scramble();
        let g = greeting(42, &scramble, "10.11.6-MariaDB", 45);
        let p = HandshakePacket::deserialize((), &mut ParseBuf(&g)).unwrap();
        assert_eq!(p.connection_id(), 42);
        assert_eq!(p.nonce(), scramble.to_vec());
        assert_eq!(p.server_version_ref(), b"10.11.6-MariaDB");
        assert_eq!(p.capabilities(), client_capabilities());
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
