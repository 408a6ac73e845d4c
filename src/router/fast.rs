//! The byte-level fast path: the first keyword, and a cheap scan for words that might make a
//! SELECT something other than a plain read.
//!
//! The scan ignores quoting and comments on purpose: a suspicious word inside a string only costs
//! a trip to the slow path, while trusting a quote the server reads differently (for instance
//! under NO_BACKSLASH_ESCAPES) could hide a `FOR UPDATE`.

use super::lex::{exec_prefix_len, is_ident, is_space};

/// The first keyword at `off`, upper-cased into `buf`: returns its length (0 when `sql` does not
/// start with a word or the word is longer than `buf`).
pub(crate) fn first_word(sql: &[u8], off: usize, buf: &mut [u8; 16]) -> usize {
    let mut n = 0;
    for &b in sql.get(off..).unwrap_or(&[]) {
        if !is_ident(b) {
            break;
        }
        if n == buf.len() {
            return 0;
        }
        buf[n] = b.to_ascii_uppercase();
        n += 1;
    }
    n
}

/// Which words a scan looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Anything that can make a read statement more than a plain read.
    Read,
    /// Only side effects a write statement can carry: locks, user variables, same-connection
    /// functions, Dolt functions.
    SideEffects,
}

/// Whether `sql[from..]` holds a word, a `@user` variable or an executable comment that needs a
/// closer look. `@@system_variables` are fine.
pub(crate) fn suspicious(sql: &[u8], from: usize, scan: Scan) -> bool {
    let mut i = from;
    while i < sql.len() {
        let b = sql[i];
        if is_ident(b) {
            let start = i;
            while i < sql.len() && is_ident(sql[i]) {
                i += 1;
            }
            if word_suspicious(&sql[start..i], sql, i, scan) {
                return true;
            }
            continue;
        }
        if b == b'@' {
            if sql.get(i + 1) == Some(&b'@') && sql.get(i + 2).is_some_and(|&c| is_ident(c)) {
                let start = i;
                i += 2;
                while i < sql.len() && (is_ident(sql[i]) || sql[i] == b'.') {
                    i += 1;
                }
                if super::walk::is_diagnostic_var(&sql[start..i]) {
                    return true;
                }
                continue;
            }
            return true;
        }
        if b == b'/' && exec_prefix_len(&sql[i..]) > 0 {
            return true;
        }
        i += 1;
    }
    false
}

fn word_suspicious(w: &[u8], sql: &[u8], after: usize, scan: Scan) -> bool {
    if w.len() < 3 || w[0].is_ascii_digit() {
        return false;
    }
    if scan == Scan::Read && is_read_keyword(w) {
        return true;
    }
    if is_dolt_function(w) || is_function_word(w) {
        return maybe_call(sql, after);
    }
    false
}

/// `dolt_*`: Dolt's functions and procedures (many write: `dolt_commit`, `dolt_checkout`).
pub(crate) fn is_dolt_function(w: &[u8]) -> bool {
    w.len() > 5 && w[..5].eq_ignore_ascii_case(b"DOLT_")
}

/// Keywords that can turn a SELECT into a locking read, a write or a side effect.
fn is_read_keyword(w: &[u8]) -> bool {
    const WORDS: [&[u8]; 8] = [
        b"FOR",
        b"LOCK",
        b"INTO",
        b"UPDATE",
        b"DELETE",
        b"INSERT",
        b"REPLACE",
        b"SQL_CALC_FOUND_ROWS",
    ];
    WORDS
        .iter()
        .any(|k| k.len() == w.len() && k.eq_ignore_ascii_case(w))
}

/// Functions with side effects or that read the previous statement's connection.
pub(crate) fn is_function_word(w: &[u8]) -> bool {
    const WORDS: [&[u8]; 11] = [
        b"GET_LOCK",
        b"RELEASE_LOCK",
        b"RELEASE_ALL_LOCKS",
        b"IS_USED_LOCK",
        b"IS_FREE_LOCK",
        b"LAST_INSERT_ID",
        b"FOUND_ROWS",
        b"ROW_COUNT",
        b"NEXTVAL",
        b"SETVAL",
        b"LASTVAL",
    ];
    WORDS
        .iter()
        .any(|k| k.len() == w.len() && k.eq_ignore_ascii_case(w))
}

/// Whether a function name ending at `after` may be called: `(` follows, or something that may
/// be a closing backtick or a comment before a `(`.
fn maybe_call(sql: &[u8], after: usize) -> bool {
    let mut i = after + usize::from(sql.get(after) == Some(&b'`'));
    while i < sql.len() && is_space(sql[i]) {
        i += 1;
    }
    matches!(sql.get(i), Some(b'(' | b'/' | b'#' | b'-'))
}

/// Whether a `;` at or after `from` is followed by more than whitespace: then `sql` may hold
/// several statements and must be split properly.
pub(crate) fn has_inner_semicolon(sql: &[u8], from: usize) -> bool {
    let rest = sql.get(from..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == b';') {
        Some(p) => rest[p + 1..].iter().any(|&b| !is_space(b) && b != b';'),
        None => false,
    }
}
