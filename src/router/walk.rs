//! The slow path for reads: token facts from our own lexer, then sqlparser and a walk of the
//! query's structure.
//!
//! The token facts find what the DOMAIN traps list, wherever it sits (subqueries, CTEs,
//! expressions): locking clauses, `INTO`, writes inside `WITH`, user variables, side-effect and
//! same-connection functions. A statement with none of them must still parse and be a plain
//! query to go to a standby: what does not parse goes to the primary.

use sqlparser::ast::{Query, SetExpr, Statement as Ast, TableFactor, TableWithJoins};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::fast::{is_dolt_function, is_function_word};
use super::lex::{tokens, unquote, Tk, Token};
use super::{Classified, NameOp, PinReason};

/// What the tokens of a statement say about it.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// Not a plain read: a write, a locking read, `INTO`, a side-effect function, a user
    /// variable.
    pub not_read: bool,
    pub same_connection: bool,
    pub pins: Vec<PinReason>,
    pub unpins: Vec<PinReason>,
    pub names: Vec<NameOp>,
    pub reads_insert_id: bool,
}

/// Session variables that read what the previous statement left on its connection.
const DIAGNOSTIC_VARS: [&[u8]; 4] = [
    b"warning_count",
    b"error_count",
    b"identity",
    b"last_insert_id",
];

/// Whether `@@[session.]name` reads the previous statement's diagnostics or insert id.
pub(crate) fn is_diagnostic_var(text: &[u8]) -> bool {
    let body = text.strip_prefix(b"@@").unwrap_or(text);
    let name = match body.iter().position(|b| *b == b'.') {
        Some(p) => &body[p + 1..],
        None => body,
    };
    DIAGNOSTIC_VARS.iter().any(|v| v.eq_ignore_ascii_case(name))
}

impl Facts {
    /// Whether the statement must run on the primary.
    pub fn primary(&self) -> bool {
        self.not_read
            || self.same_connection
            || !self.pins.is_empty()
            || !self.unpins.is_empty()
            || !self.names.is_empty()
    }

    /// Copies the facts that matter to the session onto a classification.
    pub fn onto(self, c: &mut Classified) {
        c.st.same_connection = self.same_connection;
        c.st.pins = self.pins;
        c.st.unpins = self.unpins;
        c.st.names = self.names;
        c.st.reads_insert_id = self.reads_insert_id;
    }
}

/// Facts from a statement's tokens.
pub(crate) fn facts(sql: &[u8], toks: &[Token]) -> Facts {
    let mut f = Facts::default();
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1);
        match t.kind {
            Tk::UserVar if next.is_some_and(|n| n.kind == Tk::Assign) => {
                f.pins.push(PinReason::UserVariable);
                f.not_read = true;
            }
            Tk::UserVar | Tk::Punct(b'@') => f.not_read = true,
            Tk::SysVar if is_diagnostic_var(t.text(sql)) => {
                f.same_connection = true;
                let text = t.text(sql);
                f.reads_insert_id |= text.len() > 8
                    && (text.to_ascii_lowercase().ends_with(b"identity")
                        || text.to_ascii_lowercase().ends_with(b"last_insert_id"));
            }
            Tk::Word => word_fact(sql, toks, i, &mut f),
            Tk::QIdent if next.is_some_and(|n| n.is_punct(b'(')) => {
                function_fact(&unquote(t, sql), arg(sql, toks, i), &mut f);
            }
            _ => {}
        }
    }
    f
}

fn word_fact(sql: &[u8], toks: &[Token], i: usize, f: &mut Facts) {
    let w = toks[i].text(sql);
    let next = toks.get(i + 1);
    let next_is = |kw: &str| next.is_some_and(|n| n.is_kw(sql, kw));
    let call = next.is_some_and(|n| n.is_punct(b'('));
    let is = |kw: &str| w.eq_ignore_ascii_case(kw.as_bytes());
    if (is("FOR") && (next_is("UPDATE") || next_is("SHARE"))) || (is("LOCK") && next_is("IN")) {
        f.not_read = true;
    } else if is("INTO") {
        f.not_read = true;
        if next.is_some_and(|n| n.kind == Tk::UserVar) {
            f.pins.push(PinReason::UserVariable);
        }
    } else if ["UPDATE", "DELETE", "INSERT", "REPLACE"]
        .iter()
        .any(|k| is(k))
        && !call
    {
        f.not_read = true;
    } else if is("SQL_CALC_FOUND_ROWS") {
        f.pins.push(PinReason::FoundRows);
    } else if (is("NEXT") || is("PREVIOUS")) && next_is("VALUE") {
        f.not_read = true;
    } else if call && !(i > 0 && toks[i - 1].is_punct(b'.')) {
        function_fact(w, arg(sql, toks, i), f);
    }
}

/// The first argument of the function named at `i` when it is a string literal alone
/// (`GET_LOCK('name', 5)`).
fn arg(sql: &[u8], toks: &[Token], i: usize) -> Option<String> {
    let (t, after) = (toks.get(i + 2)?, toks.get(i + 3)?);
    let alone = after.is_punct(b',') || after.is_punct(b')');
    (t.kind == Tk::Str && alone).then(|| String::from_utf8_lossy(&unquote(t, sql)).into_owned())
}

fn function_fact(name: &[u8], arg: Option<String>, f: &mut Facts) {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("LAST_INSERT_ID") {
        f.same_connection = true;
        f.reads_insert_id = true;
    } else if is("FOUND_ROWS") || is("ROW_COUNT") {
        f.same_connection = true;
    } else if is("GET_LOCK") {
        f.pins.push(PinReason::GetLock);
        f.names.push(NameOp::Open(PinReason::GetLock, arg));
    } else if is("RELEASE_LOCK") {
        f.names.push(NameOp::Close(PinReason::GetLock, arg));
    } else if is("RELEASE_ALL_LOCKS") {
        f.names.push(NameOp::CloseAll(PinReason::GetLock));
    } else if is("DOLT_CHECKOUT") {
        f.pins.push(PinReason::UnknownSet);
    }
    if is_function_word(name) || is_dolt_function(name) {
        f.not_read = true;
    }
}

/// A read statement (SELECT, WITH, TABLE, VALUES, parenthesised) starting at `off` that the fast
/// scan found suspicious.
pub(crate) fn slow_read(sql: &[u8], off: usize) -> Classified {
    let (toks, exec) = tokens(sql, off);
    let f = facts(sql, &toks);
    if f.primary() {
        let mut c = Classified::primary(false);
        f.onto(&mut c);
        return c;
    }
    if exec {
        // sqlparser drops executable comments that the server runs: it cannot judge them.
        return Classified::unparsed();
    }
    match parses_as_plain_query(&sql[off..]) {
        Some(true) => Classified::standby(),
        Some(false) => Classified::primary(false),
        None => Classified::unparsed(),
    }
}

/// Parses one statement: `None` when it does not parse (or is not UTF-8), else whether it is a
/// plain query.
fn parses_as_plain_query(sql: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(sql).ok()?;
    let parsed = std::panic::catch_unwind(|| Parser::parse_sql(&MySqlDialect {}, text));
    match parsed {
        Ok(Ok(stmts)) => match stmts.as_slice() {
            [Ast::Query(q)] => Some(query_is_read(q)),
            [_] => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// No locking clause, `INTO` or write anywhere in the query's structure.
pub(crate) fn query_is_read(q: &Query) -> bool {
    let ctes_read = q
        .with
        .as_ref()
        .is_none_or(|w| w.cte_tables.iter().all(|c| query_is_read(&c.query)));
    q.locks.is_empty() && ctes_read && set_expr_is_read(&q.body)
}

fn set_expr_is_read(e: &SetExpr) -> bool {
    match e {
        SetExpr::Select(s) => {
            let calc = s
                .select_modifiers
                .as_ref()
                .is_some_and(|m| m.sql_calc_found_rows);
            s.into.is_none() && !calc && s.from.iter().all(table_is_read)
        }
        SetExpr::Query(q) => query_is_read(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_is_read(left) && set_expr_is_read(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => true,
        _ => false,
    }
}

fn table_is_read(t: &TableWithJoins) -> bool {
    factor_is_read(&t.relation) && t.joins.iter().all(|j| factor_is_read(&j.relation))
}

fn factor_is_read(f: &TableFactor) -> bool {
    match f {
        TableFactor::Derived { subquery, .. } => query_is_read(subquery),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => table_is_read(table_with_joins),
        _ => true,
    }
}
