//! SET statements, read with our own tokens: sqlparser fails on `SET @a := 1`, and SET is hot for
//! ORMs and connectors.

use super::lex::{unquote, Tk, Token};
use super::{Classified, PinReason, SessionChange};

/// Session variables whose literal values the proxy can replay on a borrowed connection.
const KNOWN: [&str; 42] = [
    "autocommit",
    "sql_mode",
    "time_zone",
    "transaction_isolation",
    "tx_isolation",
    "transaction_read_only",
    "tx_read_only",
    "character_set_client",
    "character_set_results",
    "character_set_connection",
    "collation_connection",
    "sql_select_limit",
    "max_execution_time",
    "max_statement_time",
    "group_concat_max_len",
    "div_precision_increment",
    "lc_time_names",
    "sql_auto_is_null",
    "sql_safe_updates",
    "unique_checks",
    "foreign_key_checks",
    "net_read_timeout",
    "net_write_timeout",
    "wait_timeout",
    "interactive_timeout",
    "innodb_lock_wait_timeout",
    "lock_wait_timeout",
    "session_track_schema",
    "session_track_system_variables",
    "session_track_state_change",
    "session_track_transaction_info",
    "sql_notes",
    "sql_warnings",
    "big_tables",
    "optimizer_switch",
    "default_week_format",
    "sql_big_selects",
    "sql_quote_show_create",
    "character_set_database",
    "collation_database",
    "sql_buffer_result",
    "sql_log_off",
];

/// Boolean variables: `ON`/`TRUE` and `OFF`/`FALSE` are recorded as `1` and `0`.
const BOOLEAN: [&str; 15] = [
    "autocommit",
    "transaction_read_only",
    "tx_read_only",
    "sql_auto_is_null",
    "sql_safe_updates",
    "unique_checks",
    "foreign_key_checks",
    "session_track_schema",
    "session_track_state_change",
    "sql_notes",
    "sql_warnings",
    "big_tables",
    "sql_big_selects",
    "sql_quote_show_create",
    "sql_buffer_result",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Session,
    Global,
}

/// What the assignments of one SET statement add up to.
#[derive(Default)]
struct Acc {
    pins: Vec<PinReason>,
    unpins: Vec<PinReason>,
    changes: Vec<SessionChange>,
    global: bool,
    /// Last scope keyword, which carries over to later assignments without one.
    carried: Option<Scope>,
}

/// Classifies a SET statement; `toks` are the tokens after the `SET` keyword.
pub(crate) fn classify(sql: &[u8], toks: &[Token]) -> Classified {
    let mut c = Classified::primary(false);
    let Some(first) = toks.first() else { return c };
    if ["PASSWORD", "DEFAULT", "RESOURCE", "STATEMENT"]
        .iter()
        .any(|k| first.is_kw(sql, k))
    {
        return c;
    }
    if first.is_kw(sql, "ROLE") {
        c.st.pins.push(PinReason::UnknownSet);
        return c;
    }
    let (scope, i) = scope_kw(sql, toks, 0);
    if toks.get(i).is_some_and(|t| t.is_kw(sql, "TRANSACTION")) {
        return transaction(sql, &toks[i + 1..], scope);
    }
    let mut acc = Acc::default();
    let mut i = 0;
    while i < toks.len() && !toks[i].is_punct(b';') {
        let end = element_end(toks, i);
        element(sql, &toks[i..end], &mut acc);
        i = end;
        if toks.get(i).is_some_and(|t| t.is_punct(b',')) {
            i += 1;
            if i == toks.len() {
                acc.pins.push(PinReason::UnknownSet);
            }
        }
    }
    if toks[i.min(toks.len())..].iter().any(|t| !t.is_punct(b';')) {
        acc.pins.push(PinReason::UnknownSet);
    }
    c.st.is_set_only =
        !acc.global && acc.pins.is_empty() && acc.unpins.is_empty() && !acc.changes.is_empty();
    c.st.sets_global = acc.global;
    c.st.pins = acc.pins;
    c.st.unpins = acc.unpins;
    c.st.changes = acc.changes;
    c
}

/// A scope keyword at `i`: the scope and the index after it.
fn scope_kw(sql: &[u8], toks: &[Token], i: usize) -> (Option<Scope>, usize) {
    let Some(t) = toks.get(i) else {
        return (None, i);
    };
    if t.is_kw(sql, "SESSION") || t.is_kw(sql, "LOCAL") {
        (Some(Scope::Session), i + 1)
    } else if ["GLOBAL", "PERSIST", "PERSIST_ONLY"]
        .iter()
        .any(|k| t.is_kw(sql, k))
    {
        (Some(Scope::Global), i + 1)
    } else {
        (None, i)
    }
}

/// Index of the `,` or `;` (outside parentheses) that ends the element starting at `i`.
fn element_end(toks: &[Token], i: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t.kind {
            Tk::Punct(b'(') => depth += 1,
            Tk::Punct(b')') => depth = depth.saturating_sub(1),
            Tk::Punct(b',' | b';') if depth == 0 => return j,
            _ => {}
        }
    }
    toks.len()
}

/// One assignment (or `NAMES ..`, `CHARACTER SET ..`).
fn element(sql: &[u8], el: &[Token], acc: &mut Acc) {
    let (kw_scope, i) = scope_kw(sql, el, 0);
    if kw_scope.is_some() {
        acc.carried = kw_scope;
    }
    let Some(t) = el.get(i) else {
        acc.pins.push(PinReason::UnknownSet);
        return;
    };
    let rest = &el[i..];
    if kw_scope.is_none()
        && (t.is_kw(sql, "NAMES") || t.is_kw(sql, "CHARSET") || t.is_kw(sql, "CHARACTER"))
    {
        match names(sql, rest) {
            Some(change) => acc.changes.push(change),
            None => acc.pins.push(PinReason::UnknownSet),
        }
        return;
    }
    let (scope, name) = match t.kind {
        Tk::UserVar => {
            acc.pins.push(PinReason::UserVariable);
            return;
        }
        Tk::SysVar => sysvar_name(t.text(sql)),
        Tk::Word | Tk::QIdent => {
            let scope = match (kw_scope, acc.carried) {
                (Some(s), _) => s,
                // Whether an earlier GLOBAL carries over is a trap: do not guess.
                (None, Some(Scope::Global)) => {
                    acc.pins.push(PinReason::UnknownSet);
                    return;
                }
                _ => Scope::Session,
            };
            (scope, lower(&unquote(t, sql)))
        }
        _ => {
            acc.pins.push(PinReason::UnknownSet);
            return;
        }
    };
    assign(sql, &rest[1..], scope, &name, acc);
}

/// `= value` or `:= value` for the system variable `name`.
fn assign(sql: &[u8], rest: &[Token], scope: Scope, name: &str, acc: &mut Acc) {
    let op_ok = rest
        .first()
        .is_some_and(|t| t.is_punct(b'=') || t.kind == Tk::Assign);
    if !op_ok {
        acc.pins.push(PinReason::UnknownSet);
        return;
    }
    let value = &rest[1..];
    if scope == Scope::Global {
        acc.global = true;
        return;
    }
    if name == "sql_log_bin" {
        match literal(sql, value, true).as_deref() {
            Some("1") => acc.unpins.push(PinReason::SqlLogBin),
            _ => acc.pins.push(PinReason::SqlLogBin),
        }
        return;
    }
    match literal(sql, value, BOOLEAN.contains(&name)) {
        Some(v) if KNOWN.contains(&name) => acc.changes.push(SessionChange::SetVar {
            name: name.to_string(),
            value: v,
        }),
        None if KNOWN.contains(&name) && plain_expression(sql, value) => {
            acc.changes.push(SessionChange::SetVarExpr {
                name: name.to_string(),
            })
        }
        _ => acc.pins.push(PinReason::UnknownSet),
    }
}

/// An expression whose value the server can compute on any connection in the session's
/// state: no user variables, side effects, locks or same-connection reads.
fn plain_expression(sql: &[u8], value: &[Token]) -> bool {
    if value.is_empty() || value.iter().any(|t| t.kind == Tk::UserVar) {
        return false;
    }
    !super::walk::facts(sql, value).primary()
}

/// Scope and lower-cased name of `@@name`, `@@session.name`, `@@global.name`, ...
fn sysvar_name(text: &[u8]) -> (Scope, String) {
    let body = lower(text.get(2..).unwrap_or(&[]));
    if let Some((prefix, rest)) = body.split_once('.') {
        match prefix {
            "session" | "local" => return (Scope::Session, rest.to_string()),
            "global" | "persist" | "persist_only" => return (Scope::Global, rest.to_string()),
            _ => {}
        }
    }
    (Scope::Session, body)
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// The SQL text of a literal value to replay: a number, a string (with an optional charset
/// introducer), a bare word (`DEFAULT`, `SYSTEM`, `ON`). Booleans become `1` / `0`.
fn literal(sql: &[u8], value: &[Token], boolean: bool) -> Option<String> {
    let (first, last) = match value {
        [t] if matches!(t.kind, Tk::Num | Tk::Str | Tk::Word) => (t, t),
        [sign, n]
            if (sign.is_punct(b'-') || sign.is_punct(b'+'))
                && n.kind == Tk::Num
                && sign.end == n.start =>
        {
            (sign, n)
        }
        [intro, s] if intro.kind == Tk::Word && s.kind == Tk::Str && intro.end == s.start => {
            let w = intro.text(sql);
            let short = w.len() == 1 && matches!(w[0].to_ascii_uppercase(), b'N' | b'X' | b'B');
            if !(short || w.first() == Some(&b'_')) {
                return None;
            }
            (intro, s)
        }
        _ => return None,
    };
    let text = std::str::from_utf8(sql.get(first.start..last.end)?).ok()?;
    if first.kind != Tk::Word {
        return Some(text.to_string());
    }
    let upper = text.to_ascii_uppercase();
    Some(match upper.as_str() {
        "ON" | "TRUE" if boolean => "1".to_string(),
        "OFF" | "FALSE" if boolean => "0".to_string(),
        "DEFAULT" | "NULL" => upper,
        _ => text.to_string(),
    })
}

/// `NAMES cs [COLLATE coll]`, `CHARACTER SET cs`, `CHARSET cs`.
fn names(sql: &[u8], rest: &[Token]) -> Option<SessionChange> {
    let is_names = rest.first()?.is_kw(sql, "NAMES");
    let mut i = 1;
    if rest.first()?.is_kw(sql, "CHARACTER") {
        if !rest.get(1)?.is_kw(sql, "SET") {
            return None;
        }
        i = 2;
    }
    let charset = charset_name(sql, rest.get(i)?)?;
    i += 1;
    let mut collation = None;
    if is_names && rest.get(i).is_some_and(|t| t.is_kw(sql, "COLLATE")) {
        collation = Some(charset_name(sql, rest.get(i + 1)?)?);
        i += 2;
    }
    if i != rest.len() {
        return None;
    }
    Some(if is_names {
        SessionChange::SetNames { charset, collation }
    } else {
        SessionChange::SetCharacterSet { charset }
    })
}

fn charset_name(sql: &[u8], t: &Token) -> Option<String> {
    if !matches!(t.kind, Tk::Word | Tk::Str | Tk::QIdent) {
        return None;
    }
    let name = unquote(t, sql);
    let ok = !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    (ok && !name.eq_ignore_ascii_case(b"DEFAULT")).then(|| lower(&name))
}

/// `SET [scope] TRANSACTION ...`; `toks` follow `TRANSACTION`.
fn transaction(sql: &[u8], toks: &[Token], scope: Option<Scope>) -> Classified {
    let mut c = Classified::primary(false);
    match scope {
        None => c.st.pins.push(PinReason::NextTransaction),
        Some(Scope::Global) => c.st.sets_global = true,
        Some(Scope::Session) => match characteristics(sql, toks) {
            Some((isolation, read_only)) => {
                c.st.changes.push(SessionChange::SetTransaction {
                    isolation,
                    read_only,
                });
                c.st.is_set_only = true;
            }
            None => c.st.pins.push(PinReason::UnknownSet),
        },
    }
    c
}

/// `ISOLATION LEVEL x`, `READ ONLY`, `READ WRITE`, comma separated.
fn characteristics(sql: &[u8], toks: &[Token]) -> Option<(Option<String>, Option<bool>)> {
    let n = toks
        .iter()
        .rposition(|t| !t.is_punct(b';'))
        .map_or(0, |p| p + 1);
    let toks = &toks[..n];
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(sql, k));
    let (mut isolation, mut read_only) = (None, None);
    let mut i = 0;
    while i < toks.len() {
        if kw(i, "ISOLATION") && kw(i + 1, "LEVEL") {
            let (level, len) = if kw(i + 2, "SERIALIZABLE") {
                ("SERIALIZABLE", 1)
            } else if kw(i + 2, "REPEATABLE") && kw(i + 3, "READ") {
                ("REPEATABLE READ", 2)
            } else if kw(i + 2, "READ") && kw(i + 3, "COMMITTED") {
                ("READ COMMITTED", 2)
            } else if kw(i + 2, "READ") && kw(i + 3, "UNCOMMITTED") {
                ("READ UNCOMMITTED", 2)
            } else {
                return None;
            };
            isolation = Some(level.to_string());
            i += 2 + len;
        } else if kw(i, "READ") && (kw(i + 1, "ONLY") || kw(i + 1, "WRITE")) {
            read_only = Some(kw(i + 1, "ONLY"));
            i += 2;
        } else {
            return None;
        }
        if i < toks.len() {
            if !toks[i].is_punct(b',') || i + 1 == toks.len() {
                return None;
            }
            i += 1;
        }
    }
    (isolation.is_some() || read_only.is_some()).then_some((isolation, read_only))
}
