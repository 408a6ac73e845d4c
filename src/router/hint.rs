//! Routing hints in leading comments: `/* switchyard: primary */`, `/*+ switchyard: standby */`,
//! `-- switchyard: primary`, `# switchyard: standby` (case-insensitive, whitespace-tolerant).

use super::lex::{exec_prefix_len, find_comment_end, is_ident, is_space, memchr};

/// Where a hint asks a statement to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Run on the primary.
    Primary,
    /// Run on a standby, if the statement is a read (a write ignores it).
    Standby,
}

/// Reads the leading whitespace and comments of `sql`: the first routing hint among them, and
/// the offset of the first byte after them. Executable comments (`/*!`, `/*M!`) are statement
/// text, not comments: the offset stops at them.
pub fn parse(sql: &[u8]) -> (Option<Hint>, usize) {
    let mut hint = None;
    let mut pos = 0;
    loop {
        while pos < sql.len() && is_space(sql[pos]) {
            pos += 1;
        }
        let rest = &sql[pos..];
        let (body_start, end) = if rest.starts_with(b"/*") {
            if exec_prefix_len(rest) > 0 {
                break;
            }
            let end = find_comment_end(sql, pos + 2);
            (pos + 2, end)
        } else if rest.starts_with(b"#")
            || (rest.starts_with(b"--") && rest.get(2).is_none_or(|&b| b <= b' '))
        {
            let end = memchr(b'\n', sql, pos).unwrap_or(sql.len());
            (pos + 1, end)
        } else {
            break;
        };
        if hint.is_none() {
            hint = hint_in(&sql[body_start..end]);
        }
        pos = end;
    }
    (hint, pos)
}

/// Finds `switchyard [:=] primary|standby` in a comment body.
fn hint_in(body: &[u8]) -> Option<Hint> {
    const KEY: &[u8] = b"switchyard";
    let mut from = 0;
    while from + KEY.len() <= body.len() {
        let at = body[from..]
            .windows(KEY.len())
            .position(|w| w.eq_ignore_ascii_case(KEY))?
            + from;
        from = at + KEY.len();
        if at > 0 && is_ident(body[at - 1]) {
            continue;
        }
        if let Some(h) = hint_value(&body[from..]) {
            return Some(h);
        }
    }
    None
}

fn hint_value(s: &[u8]) -> Option<Hint> {
    let mut i = 0;
    let skip = |mut i: usize| {
        while i < s.len() && is_space(s[i]) {
            i += 1;
        }
        i
    };
    i = skip(i);
    if !matches!(s.get(i), Some(b':') | Some(b'=')) {
        return None;
    }
    i = skip(i + 1);
    let start = i;
    while i < s.len() && is_ident(s[i]) {
        i += 1;
    }
    let word = &s[start..i];
    if word.eq_ignore_ascii_case(b"primary") {
        Some(Hint::Primary)
    } else if word.eq_ignore_ascii_case(b"standby") {
        Some(Hint::Standby)
    } else {
        None
    }
}
