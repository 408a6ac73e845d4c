//! Statement digests: the text with its literals replaced by `?`, lists of them collapsed,
//! comments dropped and spaces folded, written into a buffer the caller reuses (no
//! allocation per statement once it has grown), and its 64-bit hash.

use std::hash::{DefaultHasher, Hasher};

/// Writes `sql`'s digest text into `out` (cleared first) and returns its hash.
pub fn digest(sql: &[u8], out: &mut String) -> u64 {
    out.clear();
    let mut i = 0;
    let mut prev_word = false;
    while i < sql.len() {
        let b = sql[i];
        match b {
            b'\'' | b'"' => {
                i = skip_quoted(sql, i);
                literal(out);
                prev_word = false;
                continue;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(sql.len(), |p| i + 2 + p + 2);
                space(out);
                continue;
            }
            b'#' => {
                i = line_end(sql, i);
                continue;
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = line_end(sql, i);
                continue;
            }
            _ if b.is_ascii_digit() && !prev_word => {
                while i + 1 < sql.len()
                    && (sql[i + 1].is_ascii_alphanumeric() || sql[i + 1] == b'.')
                {
                    i += 1;
                }
                literal(out);
            }
            _ if b.is_ascii_whitespace() => space(out),
            _ => out.push(if b.is_ascii() { b as char } else { '\u{FFFD}' }),
        }
        prev_word = b.is_ascii_alphanumeric() || b == b'_' || b == b'`';
        i += 1;
    }
    while out.ends_with(' ') || out.ends_with(';') {
        out.pop();
    }
    let mut h = DefaultHasher::new();
    h.write(out.as_bytes());
    h.finish()
}

/// Index after the quoted literal starting at `i` (doubled quotes and backslashes inside).
fn skip_quoted(sql: &[u8], mut i: usize) -> usize {
    let q = sql[i];
    i += 1;
    while i < sql.len() {
        let escaped = sql[i] == b'\\' || (sql[i] == q && sql.get(i + 1) == Some(&q));
        if escaped {
            i += 2;
        } else if sql[i] == q {
            return i + 1;
        } else {
            i += 1;
        }
    }
    sql.len()
}

fn line_end(sql: &[u8], i: usize) -> usize {
    sql[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(sql.len(), |p| i + p)
}

fn space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') {
        out.push(' ');
    }
}

/// A `?`, folding a list of them (`IN (?, ?, ?)`, `VALUES (?, ?), (?, ?)`) into one.
fn literal(out: &mut String) {
    out.push('?');
    for tail in ["?, ?", "?,?"] {
        if out.ends_with(tail) {
            out.truncate(out.len() - tail.len() + 1);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(sql: &str) -> (String, u64) {
        let mut out = String::new();
        let h = digest(sql.as_bytes(), &mut out);
        (out, h)
    }

    #[test]
    fn literals_lists_comments_and_spaces() {
        assert_eq!(
            d("SELECT v FROM t WHERE id = 5").0,
            "SELECT v FROM t WHERE id = ?"
        );
        assert_eq!(
            d("SELECT v FROM t WHERE id = 5").1,
            d("SELECT v  FROM t\nWHERE id = 11;").1
        );
        assert_eq!(
            d("SELECT * FROM t WHERE id IN (1, 2, 3)").0,
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(
            d("SELECT 'it''s', \"x\\\"y\", c2 FROM t2").0,
            "SELECT ?, c2 FROM t2",
            "a run of literals folds into one"
        );
        assert_eq!(
            d("/* switchyard: primary */ SELECT 1 -- why\n").0,
            "SELECT ?"
        );
        assert_eq!(
            d("INSERT INTO t VALUES (1,2),(3,4)").0,
            "INSERT INTO t VALUES (?),(?)"
        );
        assert_ne!(d("SELECT a FROM t1").1, d("SELECT a FROM t2").1);
    }
}
