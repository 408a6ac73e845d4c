//! Splitting a multi-statement COM_QUERY on `;` outside quotes and comments.

use super::hint;
use super::lex::{find_comment_end, memchr, skip_quoted};

/// Byte ranges of the statements in `sql`; pieces made only of whitespace and comments are left
/// out. An executable comment is never split.
pub(crate) fn pieces(sql: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut i, mut start) = (0, 0);
    while i < sql.len() {
        match sql[i] {
            b'\'' | b'"' | b'`' => i = skip_quoted(sql, i),
            b'#' => i = memchr(b'\n', sql, i).unwrap_or(sql.len()),
            b'-' if sql.get(i + 1) == Some(&b'-') && sql.get(i + 2).is_none_or(|&c| c <= b' ') => {
                i = memchr(b'\n', sql, i).unwrap_or(sql.len());
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => i = find_comment_end(sql, i + 2),
            b';' => {
                push(sql, start, i, &mut out);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(sql, start, sql.len(), &mut out);
    out
}

fn push(sql: &[u8], a: usize, b: usize, out: &mut Vec<(usize, usize)>) {
    if hint::parse(&sql[a..b]).1 < b - a {
        out.push((a, b));
    }
}
