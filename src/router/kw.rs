//! Dispatch on the first keyword, and the statements decided by their first few tokens.

use super::fast::{self, Scan};
use super::lex::{exec_prefix_len, is_space, tokens, unquote, Lexer, Tk, Token};
use super::{set, walk, Classified, Kill, NameOp, PinReason, SessionChange, Target};

/// Classifies the single statement that starts at `off` (after leading comments).
pub(crate) fn classify_one(sql: &[u8], off: usize) -> Classified {
    let rest = sql.get(off..).unwrap_or(&[]);
    if exec_prefix_len(rest) > 0 {
        return exec_comment(sql, off);
    }
    let mut buf = [0u8; 16];
    let n = fast::first_word(sql, off, &mut buf);
    let after = off + n;
    match &buf[..n] {
        b"SELECT" | b"WITH" | b"TABLE" | b"VALUES" => read(sql, off),
        // Rare enough to always parse: a lone `(` must not look like a read.
        [] if rest.first() == Some(&b'(') => walk::slow_read(sql, off),
        b"SHOW" => show(sql, after),
        b"EXPLAIN" | b"DESCRIBE" | b"DESC" => explain(sql, after),
        b"HELP" => Classified::standby(),
        b"SET" => {
            let (toks, _) = tokens(sql, after);
            set::classify(sql, &toks)
        }
        b"USE" => use_schema(sql, after),
        b"BEGIN" | b"START" | b"COMMIT" | b"ROLLBACK" | b"XA" => transaction(sql, after, &buf[..n]),
        b"LOCK" => Classified::primary(false).pin(PinReason::LockTables),
        b"UNLOCK" => {
            let mut c = Classified::primary(false);
            c.st.unpins.push(PinReason::LockTables);
            c
        }
        b"HANDLER" => handler(sql, after),
        b"PREPARE" => prepare(sql, after),
        b"DEALLOCATE" => deallocate(sql, after),
        b"CREATE" => create(sql, after),
        b"DROP" => drop(sql, after),
        b"FLUSH" => flush(sql, after),
        b"KILL" => kill(sql, after),
        b"GET" => diagnostics(sql, after),
        b"INSERT" | b"UPDATE" | b"DELETE" | b"REPLACE" | b"DO" | b"CALL" | b"LOAD" | b"EXECUTE" => {
            write(sql, after, n == 4 && &buf[..4] == b"LOAD")
        }
        _ => Classified::primary(false),
    }
}

/// SELECT, WITH, TABLE, VALUES, `(`: a plain read unless the scan finds something.
fn read(sql: &[u8], off: usize) -> Classified {
    if fast::suspicious(sql, off, Scan::Read) {
        walk::slow_read(sql, off)
    } else {
        Classified::standby()
    }
}

/// A statement that starts with `/*!` or `/*M!`: only a SET inside is understood.
fn exec_comment(sql: &[u8], off: usize) -> Classified {
    let (toks, _) = tokens(sql, off);
    let mariadb_only = exec_prefix_len(&sql[off..]) == 4;
    match toks.first() {
        Some(t) if t.is_kw(sql, "SET") && !mariadb_only => set::classify(sql, &toks[1..]),
        Some(t) if t.is_kw(sql, "SET") || t.is_kw(sql, "USE") => {
            Classified::primary(false).pin(PinReason::UnknownSet)
        }
        _ => Classified::primary(false),
    }
}

/// Upper-case text of a word token (empty for other tokens).
fn word(sql: &[u8], t: Option<Token>) -> Vec<u8> {
    match t {
        Some(t) if t.kind == Tk::Word => t.text(sql).to_ascii_uppercase(),
        _ => Vec::new(),
    }
}

fn show(sql: &[u8], after: usize) -> Classified {
    let mut lx = Lexer::new(sql, after);
    let mut w = word(sql, lx.next());
    while matches!(
        w.as_slice(),
        b"FULL" | b"GLOBAL" | b"SESSION" | b"LOCAL" | b"EXTENDED"
    ) {
        w = word(sql, lx.next());
    }
    match w.as_slice() {
        b"WARNINGS" | b"ERRORS" | b"COUNT" => {
            let mut c = Classified::primary(false);
            c.st.same_connection = true;
            c
        }
        b"MASTER" | b"SLAVE" | b"REPLICA" | b"REPLICAS" | b"BINLOG" | b"BINARY" | b"RELAYLOG"
        | b"PROCESSLIST" | b"STATUS" | b"PROFILE" | b"PROFILES" | b"" => Classified::primary(true),
        _ => Classified::standby(),
    }
}

/// EXPLAIN / DESCRIBE / DESC: of a table or a read, a read; of anything else, the primary.
fn explain(sql: &[u8], after: usize) -> Classified {
    let mut lx = Lexer::new(sql, after);
    let mut analyze = false;
    while let Some(t) = lx.next() {
        if lx.saw_exec {
            return Classified::primary(true);
        }
        let w = word(sql, Some(t));
        match w.as_slice() {
            b"EXTENDED" | b"PARTITIONS" => {}
            b"ANALYZE" => analyze = true,
            b"FORMAT" => {
                lx.next();
                lx.next();
            }
            b"SELECT" | b"WITH" | b"TABLE" | b"VALUES" => {
                return explained(classify_one(sql, t.start), analyze)
            }
            _ if t.is_punct(b'(') => return explained(classify_one(sql, t.start), analyze),
            b"INTO" => return Classified::primary(false).pin(PinReason::UserVariable),
            b"INSERT" | b"UPDATE" | b"DELETE" | b"REPLACE" | b"FOR" => {
                return Classified::primary(false)
            }
            _ => return Classified::standby(),
        }
    }
    Classified::primary(true)
}

/// EXPLAIN of `inner`: plans only, unless ANALYZE runs it.
fn explained(inner: Classified, analyze: bool) -> Classified {
    if analyze {
        inner
    } else if inner.st.target == Target::Standby {
        Classified::standby()
    } else {
        Classified::primary(inner.read)
    }
}

/// `USE db`, ``USE `db/branch` ``, `USE db/branch`.
fn use_schema(sql: &[u8], after: usize) -> Classified {
    let mut lx = Lexer::new(sql, after);
    let Some(t) = lx.next() else {
        return Classified::primary(false);
    };
    let (name, end) = match t.kind {
        Tk::QIdent if !lx.saw_exec => (unquote(&t, sql), t.end),
        Tk::Word | Tk::Num if !lx.saw_exec => {
            let len = sql[t.start..]
                .iter()
                .position(|&b| is_space(b) || b == b';')
                .unwrap_or(sql.len() - t.start);
            (sql[t.start..t.start + len].to_vec(), t.start + len)
        }
        _ => return Classified::primary(false).pin(PinReason::UnknownSet),
    };
    let clean_tail = Lexer::new(sql, end).all(|t| t.is_punct(b';'));
    match String::from_utf8(name) {
        Ok(name) if clean_tail && !name.is_empty() => {
            let mut c = Classified::primary(false);
            c.st.changes.push(SessionChange::UseSchema(name));
            c.st.is_set_only = true;
            c
        }
        _ => Classified::primary(false).pin(PinReason::UnknownSet),
    }
}

/// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, XA.
fn transaction(sql: &[u8], after: usize, kw: &[u8]) -> Classified {
    let mut c = Classified::primary(false);
    let (toks, _) = tokens(sql, after);
    let w = |i: usize| word(sql, toks.get(i).copied());
    match kw {
        b"BEGIN" => {
            c.st.begins_transaction =
                toks.first().is_none_or(|t| t.is_punct(b';')) || w(0) == b"WORK"
        }
        b"START" => {
            c.st.begins_transaction = w(0) == b"TRANSACTION";
            c.st.read_only_transaction = c.st.begins_transaction
                && toks
                    .windows(2)
                    .any(|p| p[0].is_kw(sql, "READ") && p[1].is_kw(sql, "ONLY"));
        }
        b"COMMIT" | b"ROLLBACK" => {
            c.st.begins_transaction = toks
                .windows(2)
                .any(|p| p[0].is_kw(sql, "AND") && p[1].is_kw(sql, "CHAIN"));
        }
        _ => match w(0).as_slice() {
            b"START" | b"BEGIN" => {
                c.st.begins_transaction = true;
                c.st.pins.push(PinReason::Xa);
            }
            b"END" | b"PREPARE" => c.st.pins.push(PinReason::Xa),
            b"COMMIT" | b"ROLLBACK" => c.st.unpins.push(PinReason::Xa),
            _ => {}
        },
    }
    c
}

/// CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS] name pins the session.
fn create(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let mut i = 0;
    if toks.first().is_some_and(|t| t.is_kw(sql, "OR")) {
        i = 2;
    }
    let c = Classified::primary(false);
    if !toks.get(i).is_some_and(|t| t.is_kw(sql, "TEMPORARY")) {
        return c;
    }
    i += 2; // TEMPORARY TABLE
    if toks.get(i).is_some_and(|t| t.is_kw(sql, "IF")) {
        i += 3; // IF NOT EXISTS
    }
    let name = object_name(sql, &toks, i).map(|(n, _)| n);
    let mut c = c.pin(PinReason::TempTable);
    c.st.names.push(NameOp::Open(PinReason::TempTable, name));
    c
}

/// `DROP [TEMPORARY] TABLE [IF EXISTS] a, b` (a temporary table goes first, whichever
/// form), `DROP PREPARE s`.
fn drop(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let mut c = Classified::primary(false);
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(sql, k));
    if kw(0, "PREPARE") {
        let name = object_name(sql, &toks, 1).map(|(n, _)| n);
        c.st.names.push(NameOp::Close(PinReason::TextPrepare, name));
        return c;
    }
    let mut i = usize::from(kw(0, "TEMPORARY"));
    if !kw(i, "TABLE") && !kw(i, "TABLES") {
        return c;
    }
    i += 1;
    if kw(i, "IF") && kw(i + 1, "EXISTS") {
        i += 2;
    }
    while let Some((name, next)) = object_name(sql, &toks, i) {
        c.st.names
            .push(NameOp::Close(PinReason::TempTable, Some(name)));
        if !toks.get(next).is_some_and(|t| t.is_punct(b',')) {
            break;
        }
        i = next + 1;
    }
    c
}

/// `PREPARE name FROM ...` pins the session while the statement exists.
fn prepare(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let name = object_name(sql, &toks, 0).map(|(n, _)| n);
    let mut c = Classified::primary(false).pin(PinReason::TextPrepare);
    c.st.names.push(NameOp::Open(PinReason::TextPrepare, name));
    c
}

/// `DEALLOCATE PREPARE name`.
fn deallocate(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let mut c = Classified::primary(false);
    if toks.first().is_some_and(|t| t.is_kw(sql, "PREPARE")) {
        let name = object_name(sql, &toks, 1).map(|(n, _)| n);
        c.st.names.push(NameOp::Close(PinReason::TextPrepare, name));
    }
    c
}

/// `HANDLER t OPEN [AS a]` pins the session until `HANDLER a CLOSE`.
fn handler(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let mut c = Classified::primary(false).pin(PinReason::Handler);
    let Some((table, next)) = object_name(sql, &toks, 0) else {
        return c;
    };
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(sql, k));
    if kw(next, "OPEN") {
        let alias = match (kw(next + 1, "AS"), object_name(sql, &toks, next + 2)) {
            (true, Some((a, _))) => a,
            _ => match object_name(sql, &toks, next + 1) {
                Some((a, _)) => a,
                None => table,
            },
        };
        c.st.names
            .push(NameOp::Open(PinReason::Handler, Some(alias)));
    } else if kw(next, "CLOSE") {
        c.st.names
            .push(NameOp::Close(PinReason::Handler, Some(table)));
    }
    c
}

/// A possibly qualified object name at `i` (`t`, `` `db`.`t` ``), lower-cased, and the index
/// after it.
fn object_name(sql: &[u8], toks: &[Token], mut i: usize) -> Option<(String, usize)> {
    let mut name = Vec::new();
    loop {
        let t = toks.get(i)?;
        if !matches!(t.kind, Tk::Word | Tk::QIdent) {
            return None;
        }
        name.extend_from_slice(&unquote(t, sql));
        i += 1;
        if !toks.get(i).is_some_and(|t| t.is_punct(b'.')) {
            break;
        }
        name.push(b'.');
        i += 1;
    }
    Some((String::from_utf8_lossy(&name).to_lowercase(), i))
}

/// FLUSH TABLES ... WITH READ LOCK / FOR EXPORT holds locks until UNLOCK TABLES.
fn flush(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let locks = toks.windows(2).any(|p| {
        (p[0].is_kw(sql, "READ") && p[1].is_kw(sql, "LOCK"))
            || (p[0].is_kw(sql, "FOR") && p[1].is_kw(sql, "EXPORT"))
    });
    let c = Classified::primary(false);
    if locks {
        c.pin(PinReason::LockTables)
    } else {
        c
    }
}

/// `KILL [CONNECTION|QUERY] n`.
fn kill(sql: &[u8], after: usize) -> Classified {
    let (toks, _) = tokens(sql, after);
    let query_only = toks.first().is_some_and(|t| t.is_kw(sql, "QUERY"));
    let skip = usize::from(query_only || toks.first().is_some_and(|t| t.is_kw(sql, "CONNECTION")));
    let mut c = Classified::primary(false);
    let id = match toks.get(skip) {
        Some(t) if t.kind == Tk::Num => std::str::from_utf8(t.text(sql))
            .ok()
            .and_then(|s| s.parse::<u64>().ok()),
        _ => None,
    };
    let clean_tail = toks.iter().skip(skip + 1).all(|t| t.is_punct(b';'));
    if let (Some(id), true) = (id, clean_tail) {
        c.st.kill = Some(Kill { query_only, id });
    }
    c
}

/// `GET [CURRENT|STACKED] DIAGNOSTICS` reads the previous statement's connection.
fn diagnostics(sql: &[u8], after: usize) -> Classified {
    let mut lx = Lexer::new(sql, after);
    let mut w = word(sql, lx.next());
    if w == b"CURRENT" || w == b"STACKED" {
        w = word(sql, lx.next());
    }
    let mut c = Classified::primary(false);
    c.st.same_connection = w == b"DIAGNOSTICS";
    c
}

/// INSERT, UPDATE, DELETE, REPLACE, DO, CALL, LOAD, EXECUTE: the primary, with the pins and
/// same-connection needs of what they call.
fn write(sql: &[u8], after: usize, load: bool) -> Classified {
    let mut c = Classified::primary(false);
    if !fast::suspicious(sql, after, Scan::SideEffects) {
        return c;
    }
    let (toks, _) = tokens(sql, after);
    walk::facts(sql, &toks).onto(&mut c);
    if load && toks.iter().any(|t| t.kind == Tk::UserVar) {
        // LOAD DATA ... (col, @v) SET c = @v assigns user variables.
        c.st.pins.push(PinReason::UserVariable);
    }
    c
}
