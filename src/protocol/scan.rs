//! Finds where a server response ends while its packets stream past, reading only packet
//! headers, the first byte of a packet, and whole OK/EOF/ERR terminators. Column
//! definitions and rows are never decoded. The backend connection was opened with the
//! client's own encoding capabilities (DEPRECATE_EOF, extended type info), so packets pass
//! as the server wrote them; only OK packets are rewritten, when the backend tracks session
//! state for the proxy (GTIDs) and the client did not ask for all of it.

use super::messages::{parse_err, parse_ok, read_lenenc, write_lenenc, ErrInfo, OkInfo};
use super::{StatusFlags, MAX_WIRE_PAYLOAD};

/// Which command's response is being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// COM_QUERY and COM_STMT_EXECUTE: OK, ERR, LOCAL INFILE or result sets, maybe several.
    Results,
    /// COM_FIELD_LIST: column definitions up to a terminator.
    FieldList,
    /// COM_STMT_FETCH: rows up to a terminator.
    Rows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    First,
    Columns(u64),
    /// The classic EOF after column definitions.
    ColumnsEof,
    Rows,
}

/// What the response said, for the session: status flags, insert id, error.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Status flags of the last OK/EOF seen (None: only an ERR, which carries no flags).
    pub status: Option<u16>,
    pub last_ok: Option<OkInfo>,
    pub error: Option<ErrInfo>,
    /// Result sets and OKs seen.
    pub results: u32,
    /// The last result was a result set (rows), not an OK.
    pub last_result_set: bool,
    /// Rows sent, all result sets together.
    pub rows: u64,
    /// The session's last GTID, from an OK's session state (MariaDB `last_gtid`, MySQL's
    /// own GTIDs).
    pub gtid: Option<Vec<u8>>,
    /// The server reported a change of session state (`session_track_state_change`): user
    /// variables, temporary tables, prepared statements, variables or schema.
    pub state_changed: bool,
}

impl Summary {
    pub fn flags(&self) -> Option<StatusFlags> {
        self.status.map(StatusFlags::from_bits_truncate)
    }
}

/// How to pass one packet on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Forward,
    /// Replace the (whole, small) packet with `Scanner::rewritten`.
    Rewrite,
}

/// What follows the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    More,
    Done,
    /// The server asked for a LOCAL INFILE: pump the client's file packets, then `resume`.
    LocalInfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub body: Body,
    pub next: Next,
    /// The packet ends a result (OK, EOF, ERR): its meaning is in the summary.
    pub ends: bool,
    /// A row (not the column count, a column definition or a terminator).
    pub row: bool,
}

const FWD: Step = Step {
    body: Body::Forward,
    next: Next::More,
    ends: false,
    row: false,
};

/// The encodings on both sides of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    /// The connection (and the client) use CLIENT_DEPRECATE_EOF.
    pub deprecate_eof: bool,
    /// The backend connection negotiated CLIENT_SESSION_TRACK.
    pub backend_tracks: bool,
    /// The client negotiated CLIENT_SESSION_TRACK.
    pub client_tracks: bool,
    /// The client's own session tracking includes `last_gtid` (pass it on).
    pub client_wants_gtid: bool,
    /// The client turned `session_track_state_change` on itself (pass it on).
    pub client_wants_state_change: bool,
}

/// The scanner for one response.
#[derive(Debug)]
pub struct Scanner {
    kind: ResponseKind,
    enc: Encoding,
    phase: Phase,
    continuation: bool,
    pub summary: Summary,
    /// The packet to send instead, after a `Body::Rewrite` step.
    pub rewritten: Vec<u8>,
}

impl Scanner {
    pub fn new(kind: ResponseKind, enc: Encoding) -> Self {
        let phase = match kind {
            ResponseKind::Results => Phase::First,
            ResponseKind::FieldList | ResponseKind::Rows => Phase::Rows,
        };
        Scanner {
            kind,
            enc,
            phase,
            continuation: false,
            summary: Summary::default(),
            rewritten: Vec::new(),
        }
    }

    /// A 0xFE packet of this length ends a result (classic EOF, or OK under DEPRECATE_EOF).
    fn is_terminator(&self, len: usize) -> bool {
        if self.enc.deprecate_eof {
            len < MAX_WIRE_PAYLOAD
        } else {
            len < 9
        }
    }

    /// Payload bytes that must be buffered before `step` can decide, given the packet's
    /// length and its first byte if already buffered.
    pub fn wants(&self, len: usize, first: Option<u8>) -> usize {
        if self.continuation || len == 0 {
            return 0;
        }
        match (self.phase, first) {
            (Phase::Columns(_), _) => 0,
            (_, None) => 1,
            (Phase::ColumnsEof, _) => len.min(9),
            (Phase::First, Some(0x00 | 0xFF | 0xFE)) => len,
            (Phase::First, Some(_)) => len.min(9),
            (_, Some(0xFF)) => len,
            (_, Some(0xFE)) if self.is_terminator(len) => len,
            _ => 1,
        }
    }

    /// Decides about one wire packet. `head` holds at least `wants(len, ..)` payload bytes.
    pub fn step(&mut self, len: usize, head: &[u8]) -> Step {
        if std::mem::replace(&mut self.continuation, len == MAX_WIRE_PAYLOAD) {
            return FWD; // the rest of a payload over 16 MiB: never inspected
        }
        match self.phase {
            Phase::First => self.first(len, head),
            Phase::Columns(n) => {
                self.phase = if n > 1 {
                    Phase::Columns(n - 1)
                } else {
                    self.after_columns()
                };
                FWD
            }
            Phase::ColumnsEof => self.columns_eof(head),
            Phase::Rows => self.row(len, head),
        }
    }

    /// After a LOCAL INFILE exchange the server answers with OK or ERR.
    pub fn resume(&mut self) {
        self.phase = Phase::First;
        self.continuation = false;
    }

    fn after_columns(&self) -> Phase {
        match self.kind {
            ResponseKind::Results if !self.enc.deprecate_eof => Phase::ColumnsEof,
            _ => Phase::Rows,
        }
    }

    fn first(&mut self, len: usize, head: &[u8]) -> Step {
        match head.first() {
            Some(0x00) => {
                self.summary.last_result_set = false;
                self.ok_end(head)
            }
            Some(0xFF) => self.err_end(head),
            Some(0xFB) => Step {
                next: Next::LocalInfile,
                ..FWD
            },
            Some(_) => match read_lenenc(head) {
                Some((0, _)) | None => self.malformed(),
                Some((n, _)) => {
                    self.phase = Phase::Columns(n);
                    self.summary.last_result_set = true;
                    FWD
                }
            },
            None if len == 0 => self.malformed(),
            None => FWD,
        }
    }

    /// The classic EOF after column definitions: rows follow, unless a cursor was opened
    /// (COM_STMT_EXECUTE with a cursor: the rows come with COM_STMT_FETCH).
    fn columns_eof(&mut self, head: &[u8]) -> Step {
        match head.first() {
            Some(0xFF) => return self.err_end(head),
            Some(0xFE) => {}
            _ => return self.malformed(),
        }
        let Some(eof) = super::messages::parse_eof(head) else {
            return self.malformed();
        };
        self.summary.status = Some(eof.status);
        self.phase = Phase::Rows;
        if eof
            .flags()
            .contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
        {
            self.summary.last_ok = Some(eof);
            self.summary.results += 1;
            return Step {
                next: Next::Done,
                ends: true,
                ..FWD
            };
        }
        Step { ends: true, ..FWD }
    }

    fn row(&mut self, len: usize, head: &[u8]) -> Step {
        match head.first() {
            Some(0xFF) => self.err_end(head),
            Some(0xFE) if self.is_terminator(len) && self.enc.deprecate_eof => self.ok_end(head),
            Some(0xFE) if self.is_terminator(len) => self.eof_end(head),
            _ => {
                self.summary.rows += u64::from(self.kind == ResponseKind::Results);
                Step { row: true, ..FWD }
            }
        }
    }

    /// A classic EOF that ends a result set.
    fn eof_end(&mut self, head: &[u8]) -> Step {
        let Some(eof) = super::messages::parse_eof(head) else {
            return self.malformed();
        };
        self.end_with(eof, Body::Forward)
    }

    fn ok_end(&mut self, head: &[u8]) -> Step {
        let Some(ok) = parse_ok(head) else {
            return self.malformed();
        };
        let mut body = Body::Forward;
        if self.enc.backend_tracks {
            let r = retrack(head, &ok, self.enc, &mut self.rewritten);
            self.summary.gtid = r.gtid.or(self.summary.gtid.take());
            self.summary.state_changed |= r.state_changed;
            if r.rewritten {
                body = Body::Rewrite;
            }
        }
        self.end_with(ok, body)
    }

    fn end_with(&mut self, ok: OkInfo, body: Body) -> Step {
        self.summary.status = Some(ok.status);
        self.summary.last_ok = Some(ok);
        self.summary.results += 1;
        let more = ok.flags().contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS);
        self.phase = Phase::First;
        Step {
            body,
            next: if more { Next::More } else { Next::Done },
            ends: true,
            row: false,
        }
    }

    fn err_end(&mut self, head: &[u8]) -> Step {
        self.summary.error = parse_err(head);
        Step {
            next: Next::Done,
            ends: true,
            ..FWD
        }
    }

    fn malformed(&mut self) -> Step {
        self.summary.error = Some(ErrInfo {
            code: 2027,
            state: *b"HY000",
            message: b"malformed packet from backend".to_vec(),
        });
        Step {
            next: Next::Done,
            ..FWD
        }
    }
}

/// What `retrack` found in an OK packet.
struct Retracked {
    rewritten: bool,
    gtid: Option<Vec<u8>>,
    state_changed: bool,
}

/// Session-state tracker types (the OK packet's state block).
const TRACK_SYSTEM_VARIABLES: u8 = 0;
const TRACK_STATE_CHANGE: u8 = 2;
const TRACK_GTIDS: u8 = 3;

/// Reads the session state of an OK from a tracking backend: takes the GTID, and rewrites
/// the packet into `out` as the server would have sent it to this client: without the
/// state block (and its flag) for a client without session tracking, without the proxy's
/// own `last_gtid` tracker for one that did not ask for it.
fn retrack(p: &[u8], ok: &OkInfo, enc: Encoding, out: &mut Vec<u8>) -> Retracked {
    let mut r = Retracked {
        rewritten: false,
        gtid: None,
        state_changed: false,
    };
    let Some(fixed) = ok_fixed_len(p) else {
        return r;
    };
    let rest = &p[fixed..];
    let (info, after_info) = match read_lenenc(rest) {
        Some((n, used)) if rest.len() >= used + n as usize => {
            (&rest[used..used + n as usize], used + n as usize)
        }
        _ if rest.is_empty() => (&rest[..0], 0),
        _ => return r,
    };
    let changed = ok
        .flags()
        .contains(StatusFlags::SERVER_SESSION_STATE_CHANGED);
    let mut kept = Vec::new();
    let mut dropped = false;
    if changed {
        let state = &rest[after_info..];
        let Some((n, used)) = read_lenenc(state) else {
            return r;
        };
        let block = state.get(used..used + n as usize).unwrap_or_default();
        for (kind, data) in entries(block) {
            let gtid = entry_gtid(kind, data);
            let ours = (kind == TRACK_SYSTEM_VARIABLES && gtid.is_some() && !enc.client_wants_gtid)
                || (kind == TRACK_STATE_CHANGE && !enc.client_wants_state_change);
            if gtid.is_some() {
                r.gtid = gtid;
            }
            r.state_changed |= kind == TRACK_STATE_CHANGE;
            if !enc.client_tracks || ours {
                dropped = true;
                continue;
            }
            kept.push(kind);
            write_lenenc(&mut kept, data.len() as u64);
            kept.extend_from_slice(data);
        }
    }
    if !dropped {
        return r;
    }
    out.clear();
    out.extend_from_slice(&p[..fixed]);
    let mut status = ok.status;
    if kept.is_empty() {
        status &= !StatusFlags::SERVER_SESSION_STATE_CHANGED.bits();
    }
    let at = fixed - 4;
    out[at..at + 2].copy_from_slice(&status.to_le_bytes());
    if !info.is_empty() || !kept.is_empty() {
        write_lenenc(out, info.len() as u64);
        out.extend_from_slice(info);
    }
    if !kept.is_empty() {
        write_lenenc(out, kept.len() as u64);
        out.extend_from_slice(&kept);
    }
    r.rewritten = out.as_slice() != p;
    r
}

/// Length of an OK packet's fixed part: header, affected rows, insert id, status, warnings.
fn ok_fixed_len(p: &[u8]) -> Option<usize> {
    let (_, a) = read_lenenc(p.get(1..)?)?;
    let (_, b) = read_lenenc(p.get(1 + a..)?)?;
    let end = 1 + a + b + 4;
    (p.len() >= end).then_some(end)
}

/// The (type, data) entries of a session-state block.
fn entries(mut block: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let kind = *block.first()?;
        let (n, used) = read_lenenc(&block[1..])?;
        let data = block.get(1 + used..1 + used + n as usize)?;
        block = &block[1 + used + n as usize..];
        Some((kind, data))
    })
}

/// The GTID an entry carries: MariaDB's `last_gtid` system variable or MySQL's GTIDs.
fn entry_gtid(kind: u8, data: &[u8]) -> Option<Vec<u8>> {
    let lenenc_str = |d: &[u8]| -> Option<(Vec<u8>, usize)> {
        let (n, used) = read_lenenc(d)?;
        Some((d.get(used..used + n as usize)?.to_vec(), used + n as usize))
    };
    match kind {
        TRACK_SYSTEM_VARIABLES => {
            let (name, used) = lenenc_str(data)?;
            if !name.eq_ignore_ascii_case(b"last_gtid") {
                return None;
            }
            let (value, _) = lenenc_str(&data[used..])?;
            Some(value)
        }
        TRACK_GTIDS => lenenc_str(data.get(1..)?).map(|(v, _)| v),
        _ => None,
    }
    .filter(|v| !v.is_empty())
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
