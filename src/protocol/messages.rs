//! OK, ERR and EOF packets: building the ones switchyard sends itself and reading the few
//! fields of the server's that the proxy needs (status flags, insert id, error code).

use super::StatusFlags;

/// Reads a length-encoded integer at the start of `buf`: (value, bytes used).
pub fn read_lenenc(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let width = match first {
        0..=0xFA => return Some((u64::from(first), 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = buf.get(1..1 + width)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some((v, 1 + width))
}

/// Appends a length-encoded integer.
pub fn write_lenenc(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xFA => out.push(v as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// What an OK packet (0x00, or 0xFE when it ends a result set under DEPRECATE_EOF) says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

impl OkInfo {
    pub fn flags(&self) -> StatusFlags {
        StatusFlags::from_bits_truncate(self.status)
    }
}

/// Parses an OK payload (header byte included).
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo> {
    let rest = payload.get(1..)?;
    let (affected_rows, a) = read_lenenc(rest)?;
    let (last_insert_id, b) = read_lenenc(rest.get(a..)?)?;
    let tail = rest.get(a + b..a + b + 4)?;
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status: u16::from_le_bytes([tail[0], tail[1]]),
        warnings: u16::from_le_bytes([tail[2], tail[3]]),
    })
}

/// Parses a classic EOF payload (0xFE, warnings, status).
pub fn parse_eof(payload: &[u8]) -> Option<OkInfo> {
    let b = payload.get(1..5)?;
    Some(OkInfo {
        warnings: u16::from_le_bytes([b[0], b[1]]),
        status: u16::from_le_bytes([b[2], b[3]]),
        ..OkInfo::default()
    })
}

/// Code, SQLSTATE and message of an ERR payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub state: [u8; 5],
    /// The server's bytes, in the connection's character set: relayed as they are.
    pub message: Vec<u8>,
}

pub fn parse_err(payload: &[u8]) -> Option<ErrInfo> {
    if payload.first() != Some(&0xFF) {
        return None;
    }
    let code = u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]);
    let (state, msg) = if payload.get(3) == Some(&b'#') {
        let s = payload.get(4..9)?;
        (
            [s[0], s[1], s[2], s[3], s[4]],
            payload.get(9..).unwrap_or_default(),
        )
    } else {
        (*b"HY000", payload.get(3..).unwrap_or_default())
    };
    Some(ErrInfo {
        code,
        state,
        message: msg.to_vec(),
    })
}

/// An ERR that says the statement did not run there and may run elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server is read-only (fenced, or a standby): MariaDB/MySQL 1290, Dolt 1105.
    ReadOnly,
    /// The server killed the connection (1927) or is shutting down (1053).
    Killed,
}

impl ErrInfo {
    /// The message for logs and errors of the proxy's own (lossy where not UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }

    /// A deadlock's victim (1213): the server rolled its whole transaction back.
    pub fn deadlock(&self) -> bool {
        self.code == 1213
    }

    /// Whether this error refuses the statement in a way that another server may not.
    /// Only the read-only-server texts count: Dolt's 1105 is generic (a write to a
    /// read-only revision database on a healthy primary says `Database db/v1.0 is
    /// read-only.`).
    pub fn refusal(&self) -> Option<Refusal> {
        let m = &self.message;
        let has = |needle: &[u8]| m.windows(needle.len()).any(|w| w == needle);
        match self.code {
            1290 if has(b"--read-only") || has(b"--super-read-only") => Some(Refusal::ReadOnly),
            1105 if m.as_slice() == b"database server is set to read only mode" => {
                Some(Refusal::ReadOnly)
            }
            1927 | 1053 => Some(Refusal::Killed),
            _ => None,
        }
    }
}

/// ERR payload.
pub fn err_payload(code: u16, state: &[u8; 5], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + message.len());
    out.push(0xFF);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    out.extend_from_slice(state);
    out.extend_from_slice(message);
    out
}

/// OK payload with header `header` (0x00, or 0xFE to end a result set under DEPRECATE_EOF).
pub fn ok_payload_with(header: u8, ok: &OkInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(header);
    write_lenenc(&mut out, ok.affected_rows);
    write_lenenc(&mut out, ok.last_insert_id);
    out.extend_from_slice(&ok.status.to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    out
}

/// Plain OK payload carrying only status flags.
pub fn ok_payload(status: StatusFlags) -> Vec<u8> {
    ok_payload_with(
        0x00,
        &OkInfo {
            status: status.bits(),
            ..OkInfo::default()
        },
    )
}

/// Classic EOF payload.
pub fn eof_payload(warnings: u16, status: u16) -> [u8; 5] {
    let w = warnings.to_le_bytes();
    let s = status.to_le_bytes();
    [0xFE, w[0], w[1], s[0], s[1]]
}

/// A column definition (protocol 4.1) for a result switchyard builds itself.
pub fn column_def(name: &str, column_type: u8, flags: u16, length: u32, charset: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    for s in ["def", "", "", "", name, ""] {
        write_lenenc(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    out.push(0x0c);
    out.extend_from_slice(&charset.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.push(column_type);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0]);
    out
}

/// MYSQL_TYPE_LONG.
pub const TYPE_LONG: u8 = 0x03;
/// MYSQL_TYPE_LONGLONG.
pub const TYPE_LONGLONG: u8 = 0x08;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_every_width() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_lenenc(&mut out, v);
            assert_eq!(read_lenenc(&out), Some((v, out.len())), "value {v}");
        }
        assert_eq!(read_lenenc(&[0xFC, 1]), None, "truncated");
        assert_eq!(read_lenenc(&[0xFF]), None, "0xFF is not an integer");
    }

    #[test]
    fn ok_round_trips_and_eof_parses() {
        let ok = OkInfo {
            affected_rows: 3,
            last_insert_id: 70000,
            status: 0x0003,
            warnings: 2,
        };
        assert_eq!(parse_ok(&ok_payload_with(0, &ok)), Some(ok));
        let eof = eof_payload(7, 0x0022);
        let got = parse_eof(&eof).unwrap();
        assert_eq!((got.warnings, got.status), (7, 0x0022));
    }

    #[test]
    fn refusals_are_recognised() {
        let e = |code, m: &str| ErrInfo {
            code,
            state: *b"HY000",
            message: m.as_bytes().to_vec(),
        };
        let maria = "The MariaDB server is running with the --read-only option so it cannot execute this statement";
        assert_eq!(e(1290, maria).refusal(), Some(Refusal::ReadOnly));
        assert_eq!(
            e(1105, "database server is set to read only mode").refusal(),
            Some(Refusal::ReadOnly)
        );
        assert_eq!(e(1105, "unknown error").refusal(), None);
        assert_eq!(
            e(1105, "Database db/v1.0 is read-only.").refusal(),
            None,
            "a read-only revision database is no demotion"
        );
        assert_eq!(
            e(1792, "Cannot execute statement in a READ ONLY transaction").refusal(),
            None
        );
        assert_eq!(e(1290, "--skip-grant-tables prevents it").refusal(), None);
        assert_eq!(
            e(1927, "Connection was killed").refusal(),
            Some(Refusal::Killed)
        );
        assert_eq!(e(1062, "Duplicate entry").refusal(), None);
    }

    #[test]
    fn err_round_trips() {
        let p = err_payload(1045, b"28000", b"Access denied \x84");
        let e = parse_err(&p).unwrap();
        assert_eq!(
            (e.code, &e.state, e.message.as_slice()),
            (1045, b"28000", b"Access denied \x84".as_slice()),
            "the server's bytes, not lossy UTF-8"
        );
        assert_eq!(parse_err(&[0x00]), None);
    }
}
