//! Optimistic transactions: a plain BEGIN is answered by the proxy and the transaction
//! opens where its first statement belongs. One that starts with a plain read runs on a
//! standby while it only reads; at its first write it moves to the primary, where its
//! reads are replayed and their results compared byte for byte with what the client got.
//! Equal: the transaction goes on there, the client never knows. Different: the client
//! gets a deadlock error (1213, 40001) and retries, as it would after a real one. A
//! session whose transactions keep moving stops trying for a while.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};

use super::backend_use::{relay_on, InUse};
use super::command::{Cmd, OwnedCmd};
use super::{Held, Session, SessionEnd};
use crate::backend::relay::Discard;
use crate::error::ClientError;
use crate::protocol::packet::PacketStream;
use crate::protocol::scan::ResponseKind;
use crate::router::{Statement, Target};

/// Reads kept for a replay, at most.
const MAX_ENTRIES: usize = 256;
const MAX_BYTES: usize = 4 << 20;
/// Transactions sent straight to the primary after one had to move; doubles with every
/// move up to MAX_COOLDOWN, back to COOLDOWN after a transaction that stayed read-only.
pub const COOLDOWN: u32 = 16;
const MAX_COOLDOWN: u32 = 1024;

/// A read of a transaction running on a standby, and the digest of what the client got.
pub struct Entry {
    cmd: OwnedCmd,
    digest: u64,
    /// Sequence id of the reply (part of the digested bytes).
    seq: u8,
}

#[derive(Default)]
pub enum Spec {
    #[default]
    Off,
    /// BEGIN answered by the proxy; the SQL that opens the transaction on its backend.
    Pending(Vec<u8>),
    /// Running on a standby (the held connection) with only reads so far; `first`: the
    /// fingerprint of the statement that opened it.
    Running {
        begin: Vec<u8>,
        first: u64,
        log: Vec<Entry>,
        bytes: usize,
        overflow: bool,
    },
}

/// Statements that opened transactions which went on to write, per session: a
/// transaction opened by one of them goes to the primary at once.
#[derive(Default)]
pub struct Writers(std::collections::HashSet<u64>);

const MAX_WRITERS: usize = 64;

impl Writers {
    fn contains(&self, f: u64) -> bool {
        self.0.contains(&f)
    }
    fn insert(&mut self, f: u64) {
        if self.0.len() >= MAX_WRITERS {
            self.0.clear();
        }
        self.0.insert(f);
    }
}

/// A statement's shape: literals (numbers, quoted strings) do not count, so the text
/// protocol's `WHERE id=42` and `WHERE id=7` are one statement.
fn fingerprint(sql: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    let mut i = 0;
    let mut prev_word = false;
    while i < sql.len() {
        let b = sql[i];
        if b == b'\'' || b == b'"' {
            i += 1;
            // to the closing quote; a doubled quote or a backslash escape stays inside
            while i < sql.len() && (sql[i] != b || sql.get(i + 1) == Some(&b)) {
                i += if sql[i] == b || sql[i] == b'\\' { 2 } else { 1 };
            }
            h.write_u8(b'?');
        } else if b.is_ascii_digit() && !prev_word {
            while i + 1 < sql.len() && (sql[i + 1].is_ascii_alphanumeric() || sql[i + 1] == b'.') {
                i += 1;
            }
            h.write_u8(b'?');
        } else {
            h.write_u8(b.to_ascii_lowercase());
        }
        prev_word = b.is_ascii_alphanumeric() || b == b'_';
        i += 1;
    }
    h.finish()
}

/// A bare COMMIT or ROLLBACK (no savepoint, no chain, no release).
fn ends_plainly(sql: &[u8]) -> bool {
    let w = crate::router::first_keyword(sql);
    let w = w.as_bytes();
    if w != b"COMMIT" && w != b"ROLLBACK" {
        return false;
    }
    let rest: Vec<u8> = sql.iter().map(|b| b.to_ascii_uppercase()).collect();
    let has = |k: &[u8]| rest.windows(k.len()).any(|x| x == k);
    !has(b" TO ") && !has(b"CHAIN") && !has(b"RELEASE") && !rest.contains(&b';')
}

/// A plain BEGIN / START TRANSACTION that may open on a standby.
fn deferrable_begin(stmt: &Statement, sql: &[u8]) -> bool {
    if !stmt.begins_transaction || stmt.hint.is_some() {
        return false;
    }
    // only a plain BEGIN: WITH CONSISTENT SNAPSHOT must take its snapshot now, READ
    // WRITE / READ ONLY say where it belongs, XA and chains are not deferred
    let text = String::from_utf8_lossy(sql).to_ascii_uppercase();
    let words: Vec<&str> = text
        .trim()
        .trim_end_matches(';')
        .split_ascii_whitespace()
        .collect();
    matches!(
        words.as_slice(),
        ["BEGIN"] | ["BEGIN", "WORK"] | ["START", "TRANSACTION"]
    )
}

/// A read whose reply depends only on the data: no clock, random or id functions, no
/// `LIMIT` without `ORDER BY`, no SHOW. Anything else would differ when replayed on the
/// primary, and the client would get an error the primary never returns.
pub(super) fn deterministic(sql: &[u8]) -> bool {
    const VOLATILE: [&[u8]; 14] = [
        b"NOW",
        b"RAND",
        b"UUID",
        b"SYSDATE",
        b"CURRENT_TIMESTAMP",
        b"CURRENT_TIME",
        b"CURRENT_DATE",
        b"CURDATE",
        b"CURTIME",
        b"UNIX_TIMESTAMP",
        b"UTC_TIMESTAMP",
        b"LOCALTIME",
        b"CONNECTION_ID",
        b"SLEEP",
    ];
    let upper: Vec<u8> = sql.iter().map(u8::to_ascii_uppercase).collect();
    let has = |w: &[u8]| upper.windows(w.len()).any(|x| x == w);
    let limit_unordered = has(b"LIMIT") && !has(b"ORDER BY");
    let show = crate::router::first_keyword(sql).as_bytes() == b"SHOW";
    !show && !limit_unordered && !VOLATILE.iter().any(|w| has(w))
}

/// A statement a standby may run inside a speculative transaction. Reads of server
/// state (`@@variables`, CONNECTION_ID()) differ between servers whatever the data: a
/// transaction that asks them is asking the server it transacts with, the primary.
fn plain_read(stmt: &Statement, sql: &[u8]) -> bool {
    let upper = |b: &u8| b.to_ascii_uppercase();
    let server_state = sql.windows(2).any(|w| w == b"@@")
        || sql
            .windows(13)
            .any(|w| w.iter().map(upper).eq(b"CONNECTION_ID".iter().copied()));
    !server_state
        && deterministic(sql)
        && stmt.target == Target::Standby
        && !stmt.same_connection
        && stmt.pins.is_empty()
        && stmt.changes.is_empty()
        && !stmt.is_set_only
        && !stmt.begins_transaction
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The SQL text of a command (a query's text, an EXECUTE's statement).
    fn cmd_sql(&self, cmd: &Cmd<'_>) -> Vec<u8> {
        self.statement_sql(cmd)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn may_speculate(&self) -> bool {
        self.shared.limits.load().optimistic
            && self.policy == crate::config::RoutePolicy::Split
            && self.held.is_none()
            && self.autocommit()
            && !self.in_transaction()
            && self.pins.is_empty()
            && !self.read_your_writes()
    }

    /// Handles the command here when the optimistic transaction logic owns it; true when
    /// it was answered.
    pub(super) async fn optimistic(
        &mut self,
        cmd: &Cmd<'_>,
        stmt: &Statement,
    ) -> Result<bool, SessionEnd> {
        if cmd.payload.first() != Some(&crate::protocol::command::COM_QUERY) && cmd.exec.is_none() {
            return Ok(false);
        }
        match std::mem::take(&mut self.spec) {
            Spec::Off => self.maybe_defer(cmd, stmt).await,
            Spec::Pending(begin) => self.open_pending(cmd, stmt, begin).await,
            Spec::Running {
                begin,
                first,
                log,
                bytes,
                overflow,
            } => {
                let sql = self.cmd_sql(cmd);
                // a cursor or long data ties the statement to one connection: not here
                let bound = cmd.exec.is_some_and(|x| {
                    x.cursor || self.pins.contains(super::pins::Pin::LongData(x.id))
                });
                if !bound && (plain_read(stmt, &sql) || ends_plainly(&sql)) {
                    self.spec = Spec::Running {
                        begin,
                        first,
                        log,
                        bytes,
                        overflow,
                    };
                    return Ok(false);
                }
                self.spec_writers.insert(first);
                Box::pin(self.move_to_primary(begin, log, overflow)).await
            }
        }
    }

    async fn maybe_defer(&mut self, cmd: &Cmd<'_>, stmt: &Statement) -> Result<bool, SessionEnd> {
        if !stmt.begins_transaction || !self.may_speculate() {
            return Ok(false);
        }
        let sql = self.cmd_sql(cmd);
        if !deferrable_begin(stmt, &sql) {
            return Ok(false);
        }
        if self.spec_cooldown > 0 {
            self.spec_cooldown -= 1;
            return Ok(false);
        }
        self.spec = Spec::Pending(sql);
        self.txn.begin_deferred();
        self.send_ok().await?;
        Ok(true)
    }

    /// The first statement after a deferred BEGIN decides where the transaction opens.
    async fn open_pending(
        &mut self,
        cmd: &Cmd<'_>,
        stmt: &Statement,
        begin: Vec<u8>,
    ) -> Result<bool, SessionEnd> {
        let sql = self.cmd_sql(cmd);
        if ends_plainly(&sql) {
            self.txn.end_deferred();
            self.send_ok().await?;
            return Ok(true);
        }
        let first = fingerprint(&sql);
        let read = plain_read(stmt, &sql) && !self.spec_writers.contains(first);
        let target = if read {
            Target::Standby
        } else {
            Target::Primary
        };
        let opened = self.open_on(target, &begin).await;
        let Some(u) = opened else {
            self.txn.end_deferred();
            let e = ClientError::BackendUnavailable {
                role: "reachable",
                detail: String::new(),
            };
            self.send_err(self.reply_seq, &e).await?;
            return Ok(true);
        };
        if read && u.standby {
            self.spec = Spec::Running {
                begin,
                first,
                log: Vec::new(),
                bytes: 0,
                overflow: false,
            };
        }
        self.held = Some(Held {
            lease: u.lease,
            node: u.node,
            standby: u.standby,
        });
        Ok(false)
    }

    /// A connection for `target` with the transaction opened on it.
    async fn open_on(&mut self, target: Target, begin: &[u8]) -> Option<InUse> {
        let mut u = self.acquire(target, None).await.ok()?;
        let sql = String::from_utf8_lossy(begin).into_owned();
        let ok = u.lease.conn().query_ok(&sql).await.ok()?;
        self.txn.server_says(ok.status);
        Some(u)
    }

    /// A write arrived: replay the transaction's reads on the primary and compare.
    async fn move_to_primary(
        &mut self,
        begin: Vec<u8>,
        log: Vec<Entry>,
        overflow: bool,
    ) -> Result<bool, SessionEnd> {
        self.spec_cooldown = self.spec_backoff;
        self.spec_backoff = (self.spec_backoff * 2).min(MAX_COOLDOWN);
        let standby = self.held.take();
        let moved = if overflow {
            None
        } else {
            self.replay(&begin, &log).await
        };
        if let Some(mut h) = standby {
            if h.lease.conn().query_ok("ROLLBACK").await.is_ok() {
                h.lease.release();
            }
        }
        match moved {
            Some(u) => {
                self.shared
                    .stats
                    .optimistic_moved
                    .fetch_add(1, Ordering::Relaxed);
                self.held = Some(Held {
                    lease: u.lease,
                    node: u.node,
                    standby: u.standby,
                });
                Ok(false)
            }
            None => {
                self.shared
                    .stats
                    .optimistic_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.txn.end_deferred();
                self.send_err(self.reply_seq, &ClientError::OptimisticConflict)
                    .await?;
                Ok(true)
            }
        }
    }

    /// The transaction on the primary with every logged read giving the same bytes.
    async fn replay(&mut self, begin: &[u8], log: &[Entry]) -> Option<InUse> {
        let mut u = self.open_on(Target::Primary, begin).await?;
        let mut sink = PacketStream::new(Discard, self.shared.limits.load().max_packet);
        for e in log {
            let enc = self.encoding(u.lease.conn_ref().tracks);
            let cmd = e.cmd.as_cmd();
            let wire = self.wire_payload(&mut u, &cmd).await.ok()?.into_owned();
            let mut h = DefaultHasher::new();
            let (r, _) = relay_on(
                u.lease.conn(),
                &mut sink,
                &wire,
                (ResponseKind::Results, enc, e.seq),
                Some(&mut h),
                false,
            )
            .await;
            let summary = r.ok()?;
            if h.finish() != e.digest {
                return None;
            }
            self.take_status(&summary);
        }
        Some(u)
    }

    /// A digest to fill while a speculative transaction runs.
    pub(super) fn spec_digest(&self) -> Option<DefaultHasher> {
        matches!(self.spec, Spec::Running { .. }).then(DefaultHasher::new)
    }

    /// Logs a read that ran on the standby (or ends the speculation with the transaction).
    pub(super) fn spec_record(&mut self, cmd: &Cmd<'_>, digest: Option<DefaultHasher>) {
        if !self.in_transaction() {
            if matches!(self.spec, Spec::Running { .. }) {
                self.spec_backoff = COOLDOWN; // it stayed read-only
            }
            self.spec = Spec::Off;
            return;
        }
        let (
            Spec::Running {
                log,
                bytes,
                overflow,
                ..
            },
            Some(h),
        ) = (&mut self.spec, digest)
        else {
            return;
        };
        *bytes += cmd.payload.len();
        if *overflow || log.len() >= MAX_ENTRIES || *bytes > MAX_BYTES {
            *overflow = true;
            log.clear();
            return;
        }
        log.push(Entry {
            cmd: OwnedCmd {
                payload: cmd.payload.to_vec(),
                exec: cmd.exec,
            },
            digest: h.finish(),
            seq: self.reply_seq,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::classify;

    #[test]
    fn which_begins_defer() {
        for (sql, want) in [
            ("BEGIN", true),
            ("begin work;", true),
            ("START TRANSACTION", true),
            ("START TRANSACTION READ ONLY", false),
            ("START TRANSACTION WITH CONSISTENT SNAPSHOT", false),
            ("START TRANSACTION READ WRITE", false),
            ("BEGIN; SELECT 1", false),
            ("XA START 'x'", false),
            ("SELECT 1", false),
        ] {
            assert_eq!(
                deferrable_begin(&classify(sql.as_bytes()), sql.as_bytes()),
                want,
                "{sql}"
            );
        }
    }

    #[test]
    fn volatile_reads_are_not_deferred() {
        for (sql, want) in [
            ("SELECT c FROM t WHERE id = 1", true),
            ("SELECT c FROM t ORDER BY id LIMIT 3", true),
            ("SELECT c FROM t LIMIT 3", false),
            ("SELECT NOW(), c FROM t", false),
            ("select rand() from t", false),
            ("SELECT UUID()", false),
            ("SHOW TABLES", false),
        ] {
            assert_eq!(deterministic(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn fingerprints_ignore_literals() {
        let f = |s: &str| fingerprint(s.as_bytes());
        assert_eq!(
            f("SELECT c FROM sbtest1 WHERE id=4213"),
            f("select c from sbtest1 where id=7")
        );
        assert_eq!(f("SELECT 'a''b', 1.5e3"), f("SELECT 'zz', 2"));
        assert_ne!(
            f("SELECT c FROM sbtest1 WHERE id=1"),
            f("SELECT c FROM sbtest2 WHERE id=1")
        );
        assert_ne!(f("SELECT a FROM t"), f("SELECT b FROM t"));
    }

    #[test]
    fn plain_ends() {
        assert!(ends_plainly(b"COMMIT"));
        assert!(ends_plainly(b"rollback"));
        assert!(ends_plainly(b"/* x */ COMMIT WORK"));
        assert!(!ends_plainly(b"ROLLBACK TO SAVEPOINT a"));
        assert!(!ends_plainly(b"COMMIT AND CHAIN"));
        assert!(!ends_plainly(b"COMMIT; SELECT 1"));
        assert!(!ends_plainly(b"SELECT 1"));
    }

    #[test]
    fn reads_that_may_stay_on_a_standby() {
        let read = |s: &str| plain_read(&classify(s.as_bytes()), s.as_bytes());
        assert!(read("SELECT c FROM sbtest1 WHERE id = 5"));
        assert!(!read("SELECT c FROM sbtest1 WHERE id = 5 FOR UPDATE"));
        assert!(!read("UPDATE sbtest1 SET k = k + 1 WHERE id = 5"));
        assert!(!read("SELECT LAST_INSERT_ID()"));
        assert!(!read("SET @a = 1"));
        assert!(!read("SELECT @@server_id"), "server state: the primary's");
        assert!(!read("select connection_id()"));
    }
}
