//! Finds where a server response ends while its packets stream past, reading only packet
//! headers, the first byte of a packet, and whole OK/EOF/ERR terminators. Column
//! definitions and rows are never decoded. Also says how to translate between a client
//! without CLIENT_DEPRECATE_EOF and a backend with it (switchyard's backends always have it).

use super::messages::{eof_payload, parse_err, parse_ok, read_lenenc, ErrInfo, OkInfo};
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
    AfterColumns,
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
    /// Replace the (whole, small) packet with this classic EOF payload.
    ReplaceEof([u8; 5]),
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
    /// A classic EOF to send before this packet (the end of column definitions).
    pub pre_eof: Option<[u8; 5]>,
    pub body: Body,
    pub next: Next,
}

const FWD: Step = Step {
    pre_eof: None,
    body: Body::Forward,
    next: Next::More,
};

/// The scanner for one response.
#[derive(Debug)]
pub struct Scanner {
    kind: ResponseKind,
    classic_client: bool,
    phase: Phase,
    continuation: bool,
    pub summary: Summary,
}

impl Scanner {
    /// `classic_client`: the client did not set CLIENT_DEPRECATE_EOF.
    pub fn new(kind: ResponseKind, classic_client: bool) -> Self {
        let phase = match kind {
            ResponseKind::Results => Phase::First,
            ResponseKind::FieldList | ResponseKind::Rows => Phase::Rows,
        };
        Scanner {
            kind,
            classic_client,
            phase,
            continuation: false,
            summary: Summary::default(),
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
            (Phase::First, Some(0x00 | 0xFF | 0xFE)) => len,
            (Phase::First, Some(_)) => len.min(9),
            (_, Some(0xFF)) => len,
            (_, Some(0xFE)) if len < MAX_WIRE_PAYLOAD => len,
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
            Phase::AfterColumns => self.after_column_defs(len, head),
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
            ResponseKind::Results => Phase::AfterColumns,
            _ => Phase::Rows,
        }
    }

    fn first(&mut self, len: usize, head: &[u8]) -> Step {
        match head.first() {
            Some(0x00) => self.ok_end(head, 0x00),
            Some(0xFF) => self.err_end(head),
            Some(0xFB) => Step {
                next: Next::LocalInfile,
                ..FWD
            },
            Some(_) => match read_lenenc(head) {
                Some((0, _)) | None => self.malformed(),
                Some((n, _)) => {
                    self.phase = Phase::Columns(n);
                    FWD
                }
            },
            None if len == 0 => self.malformed(),
            None => FWD,
        }
    }

    fn after_column_defs(&mut self, len: usize, head: &[u8]) -> Step {
        self.phase = Phase::Rows;
        let mut step = self.row(len, head);
        if !self.classic_client {
            return step;
        }
        let cursor = self
            .summary
            .flags()
            .is_some_and(|f| f.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS));
        match step.body {
            // a cursor was opened: classic clients get one EOF after the metadata, no rows
            Body::ReplaceEof(eof) if cursor && step.next == Next::Done => {
                step.pre_eof = None;
                step.body = Body::ReplaceEof(eof);
            }
            _ => step.pre_eof = Some(eof_payload(0, self.summary.status.unwrap_or(0))),
        }
        step
    }

    fn row(&mut self, len: usize, head: &[u8]) -> Step {
        match head.first() {
            Some(0xFF) => self.err_end(head),
            Some(0xFE) if len < MAX_WIRE_PAYLOAD => self.ok_end(head, 0xFE),
            _ => FWD,
        }
    }

    fn ok_end(&mut self, head: &[u8], header: u8) -> Step {
        let Some(ok) = parse_ok(head) else {
            return self.malformed();
        };
        self.summary.status = Some(ok.status);
        self.summary.last_ok = Some(ok);
        self.summary.results += 1;
        let more = ok.flags().contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS);
        self.phase = Phase::First;
        let body = if header == 0xFE && self.classic_client {
            Body::ReplaceEof(eof_payload(ok.warnings, ok.status))
        } else {
            Body::Forward
        };
        Step {
            pre_eof: None,
            body,
            next: if more { Next::More } else { Next::Done },
        }
    }

    fn err_end(&mut self, head: &[u8]) -> Step {
        self.summary.error = parse_err(head);
        Step {
            next: Next::Done,
            ..FWD
        }
    }

    fn malformed(&mut self) -> Step {
        self.summary.error = Some(ErrInfo {
            code: 2027,
            state: *b"HY000",
            message: "malformed packet from backend".into(),
        });
        Step {
            next: Next::Done,
            ..FWD
        }
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
