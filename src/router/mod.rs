//! The statement router: where a statement must run and what it does to the session.
//!
//! Pure: no I/O, no globals. [`classify`] reads one statement's bytes (UTF-8 not required) and
//! never panics. Cheap cases are decided by their first keyword; a SELECT goes to sqlparser only
//! when a byte scan finds something suspicious in it (see `fast`), so sysbench's reads never
//! parse. SET is read with our own tokenizer (`set`).

pub mod digest;
pub mod hint;

mod fast;
mod kw;
mod lex;
mod set;
mod split;
mod walk;

#[cfg(test)]
mod tests;

/// Where a statement must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The primary (writes, locking reads, side effects, anything unknown).
    #[default]
    Primary,
    /// A plain read that any healthy standby may run.
    Standby,
}

/// Why a statement ties the session to its backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinReason {
    UserVariable,
    TempTable,
    LockTables,
    GetLock,
    TextPrepare,
    FoundRows,
    UnknownSet,
    NextTransaction,
    SqlLogBin,
    Handler,
    Xa,
}

impl PinReason {
    /// Every reason, in declaration order.
    pub const ALL: [PinReason; 11] = [
        PinReason::UserVariable,
        PinReason::TempTable,
        PinReason::LockTables,
        PinReason::GetLock,
        PinReason::TextPrepare,
        PinReason::FoundRows,
        PinReason::UnknownSet,
        PinReason::NextTransaction,
        PinReason::SqlLogBin,
        PinReason::Handler,
        PinReason::Xa,
    ];

    /// snake_case name, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            PinReason::UserVariable => "user_variable",
            PinReason::TempTable => "temp_table",
            PinReason::LockTables => "lock_tables",
            PinReason::GetLock => "get_lock",
            PinReason::TextPrepare => "text_prepare",
            PinReason::FoundRows => "found_rows",
            PinReason::UnknownSet => "unknown_set",
            PinReason::NextTransaction => "next_transaction",
            PinReason::SqlLogBin => "sql_log_bin",
            PinReason::Handler => "handler",
            PinReason::Xa => "xa",
        }
    }
}

/// Session state a statement changes, which the proxy tracks and replays on borrowed connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// `USE db`, ``USE `db/branch` ``, `USE db/branch`.
    UseSchema(String),
    /// `SET NAMES cs [COLLATE coll]`. Lower-cased.
    SetNames {
        charset: String,
        collation: Option<String>,
    },
    /// `SET CHARACTER SET cs` / `SET CHARSET cs`: client and results in `cs`, the
    /// connection in the database's character set (not what SET NAMES does). Lower-cased.
    SetCharacterSet { charset: String },
    /// A known session variable set to a literal: `name` lower-cased without scope, `value` the
    /// SQL text to replay as `SET SESSION name = value` (`'ANSI'`, `0`, `DEFAULT`).
    SetVar { name: String, value: String },
    /// A known session variable set to an expression (`CONCAT(@@sql_mode, ',X')`): the
    /// value is read back from the server after the statement and tracked as a literal.
    SetVarExpr { name: String },
    /// `SET SESSION TRANSACTION ...`, to replay as `SET SESSION TRANSACTION ISOLATION LEVEL
    /// {isolation}, READ ONLY|READ WRITE`. `isolation` is SQL text, e.g. `READ COMMITTED`.
    SetTransaction {
        isolation: Option<String>,
        read_only: Option<bool>,
    },
}

/// A named thing a statement opens or closes on its connection (a temporary table, a user
/// lock, a text prepared statement, a HANDLER): the pin of its reason ends when the last
/// one is closed. `None`: a name the router cannot read (an expression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOp {
    Open(PinReason, Option<String>),
    Close(PinReason, Option<String>),
    /// `RELEASE_ALL_LOCKS()`.
    CloseAll(PinReason),
}

/// `KILL [CONNECTION|QUERY] id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// What the router decided about a statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statement {
    /// Where it must run (Standby only for plain reads).
    pub target: Target,
    /// It reads what the previous statement left on its backend connection (`LAST_INSERT_ID()`,
    /// `FOUND_ROWS()`, `ROW_COUNT()`, `SHOW WARNINGS`, `SHOW ERRORS`, `GET DIAGNOSTICS`).
    pub same_connection: bool,
    /// Reasons this statement ties the session to its backend connection (sorted, unique).
    pub pins: Vec<PinReason>,
    /// Pin reasons it releases (`UNLOCK TABLES`, `RELEASE_ALL_LOCKS()`, `XA COMMIT`).
    pub unpins: Vec<PinReason>,
    /// Session state to track.
    pub changes: Vec<SessionChange>,
    /// Named things opened or closed, in order.
    pub names: Vec<NameOp>,
    /// It reads the session's last insert id (`LAST_INSERT_ID()`, `@@identity`).
    pub reads_insert_id: bool,
    /// `START TRANSACTION READ ONLY`: may run on a standby.
    pub read_only_transaction: bool,
    /// `SET GLOBAL ...`: the server's defaults for new sessions change.
    pub sets_global: bool,
    /// A SET/USE made only of replayable known changes: may run anywhere and be replayed.
    pub is_set_only: bool,
    /// `KILL [CONNECTION|QUERY] n`.
    pub kill: Option<Kill>,
    /// BEGIN, START TRANSACTION, XA START/BEGIN, COMMIT/ROLLBACK AND CHAIN.
    pub begins_transaction: bool,
    /// The routing hint read from a leading comment (even when it could not be followed).
    pub hint: Option<hint::Hint>,
    /// A read the fast path could not clear and sqlparser could not judge (it did not
    /// parse, or carries an executable comment): sent to the primary to be safe.
    pub unparsed: bool,
}

/// What of a session decides where its next statement runs (pure data: `route` needs no
/// socket, pool or topology).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    /// The user's policy sends everything to the primary.
    pub primary_only: bool,
    pub autocommit: bool,
    pub in_transaction: bool,
    /// The session wrote recently on a backend that reports no GTIDs (Dolt): its reads
    /// stay on the primary for the read-your-writes window.
    pub recent_untracked_write: bool,
}

/// Where a statement runs when no connection is held: the one routing decision.
pub fn route(stmt: &Statement, ctx: &Context) -> Target {
    if ctx.primary_only || !ctx.autocommit || ctx.in_transaction || ctx.recent_untracked_write {
        // a recent untracked write covers SET-like statements too: `USE db/branch` of a
        // branch just made must find it
        return Target::Primary;
    }
    if stmt.read_only_transaction {
        return Target::Standby; // a READ ONLY transaction: the safe way to scale reads
    }
    if stmt.is_set_only && stmt.pins.is_empty() && stmt.kill.is_none() {
        return Target::Standby; // validated by a server, replayed on every later lease
    }
    if stmt.target == Target::Primary || stmt.same_connection {
        return Target::Primary;
    }
    Target::Standby
}

/// A statement's classification and whether it is a read that a standby hint may move.
#[derive(Debug, Default)]
pub(crate) struct Classified {
    pub st: Statement,
    /// No write, lock or side effect: a `standby` hint may send it to a standby.
    pub read: bool,
}

impl Classified {
    pub fn standby() -> Self {
        Classified {
            st: Statement {
                target: Target::Standby,
                ..Statement::default()
            },
            read: true,
        }
    }

    pub fn primary(read: bool) -> Self {
        Classified {
            st: Statement::default(),
            read,
        }
    }

    /// A read that could not be judged: the primary, counted as a parse fallback.
    pub fn unparsed() -> Self {
        let mut c = Classified::primary(true);
        c.st.unparsed = true;
        c
    }

    fn pin(mut self, r: PinReason) -> Self {
        self.st.pins.push(r);
        self
    }
}

/// The first keyword of a statement after leading comments and hints, upper-cased, without
/// allocating (empty when there is none or it is longer than 16 bytes).
pub struct Keyword {
    buf: [u8; 16],
    len: usize,
}

impl Keyword {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub fn first_keyword(sql: &[u8]) -> Keyword {
    let (_, start) = hint::parse(sql);
    let mut buf = [0u8; 16];
    let len = fast::first_word(sql, start, &mut buf);
    Keyword { buf, len }
}

/// Classifies one statement (a COM_QUERY without MULTI_STATEMENTS, or a COM_STMT_PREPARE). If it
/// holds several statements after all, they are classified as [`classify_multi`] does.
pub fn classify(sql: &[u8]) -> Statement {
    let (hint, off) = hint::parse(sql);
    if fast::has_inner_semicolon(sql, off) {
        let pieces = split::pieces(sql);
        if pieces.len() > 1 {
            return finish(classify_pieces(sql, &pieces), hint);
        }
    }
    finish(kw::classify_one(sql, off), hint)
}

/// Classifies a COM_QUERY of a client with MULTI_STATEMENTS: Standby only if every statement is
/// a plain read; pins, unpins, changes and same_connection are merged in order.
pub fn classify_multi(sql: &[u8]) -> Statement {
    let (hint, off) = hint::parse(sql);
    let pieces = split::pieces(sql);
    if pieces.len() <= 1 {
        return finish(kw::classify_one(sql, off), hint);
    }
    finish(classify_pieces(sql, &pieces), hint)
}

fn classify_pieces(sql: &[u8], pieces: &[(usize, usize)]) -> Classified {
    let mut acc: Option<Classified> = None;
    for &(a, b) in pieces {
        let piece = &sql[a..b];
        let (_, off) = hint::parse(piece);
        let c = kw::classify_one(piece, off);
        acc = Some(match acc {
            None => c,
            Some(prev) => merge(prev, c),
        });
    }
    acc.unwrap_or_default()
}

/// `a` then `b`, as one statement.
fn merge(mut a: Classified, b: Classified) -> Classified {
    let (st, next) = (&mut a.st, b.st);
    if next.target == Target::Primary {
        st.target = Target::Primary;
    }
    st.same_connection |= next.same_connection;
    for r in next.unpins {
        st.pins.retain(|p| *p != r);
        st.unpins.push(r);
    }
    for r in next.pins {
        st.unpins.retain(|p| *p != r);
        st.pins.push(r);
    }
    st.changes.extend(next.changes);
    st.names.extend(next.names);
    st.reads_insert_id |= next.reads_insert_id;
    st.sets_global |= next.sets_global;
    st.read_only_transaction = false;
    st.is_set_only &= next.is_set_only;
    st.kill = st.kill.or(next.kill);
    st.begins_transaction |= next.begins_transaction;
    a.read &= b.read;
    a
}

/// Normalises pin lists and applies the hint.
fn finish(c: Classified, hint: Option<hint::Hint>) -> Statement {
    let mut st = c.st;
    st.pins.sort_unstable();
    st.pins.dedup();
    st.unpins.sort_unstable();
    st.unpins.dedup();
    match hint {
        Some(hint::Hint::Primary) => st.target = Target::Primary,
        Some(hint::Hint::Standby) if c.read && movable(&st) => st.target = Target::Standby,
        _ => {}
    }
    st.hint = hint;
    st
}

/// Nothing ties the statement to the primary connection beyond its own routing.
fn movable(st: &Statement) -> bool {
    st.pins.is_empty()
        && st.unpins.is_empty()
        && !st.same_connection
        && st.changes.is_empty()
        && st.names.is_empty()
        && st.kill.is_none()
        && !st.begins_transaction
}
