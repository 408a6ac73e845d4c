//! A small MySQL lexer on raw bytes (no UTF-8 needed, never panics).
//!
//! It knows quoting (`'..'`, `".."`, `` `..` `` with doubled quotes and backslash escapes),
//! comments (`#`, `-- `, `/* */`) and executable comments (`/*! .. */`, `/*M! .. */`), whose
//! content it yields as ordinary tokens, as the server runs it.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tk {
    /// Unquoted identifier or keyword.
    Word,
    /// `` `quoted identifier` ``.
    QIdent,
    /// `'string'` or `"string"`.
    Str,
    /// Starts with a digit.
    Num,
    /// `@name`, `@'name'`.
    UserVar,
    /// `@@name`, `@@session.name`.
    SysVar,
    /// `:=`.
    Assign,
    /// Any other single byte.
    Punct(u8),
}

/// A token: its kind and its byte range in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Tk,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, s: &'a [u8]) -> &'a [u8] {
        s.get(self.start..self.end).unwrap_or(&[])
    }

    /// An unquoted word equal to `kw` (ASCII case-insensitive).
    pub fn is_kw(&self, s: &[u8], kw: &str) -> bool {
        self.kind == Tk::Word && self.text(s).eq_ignore_ascii_case(kw.as_bytes())
    }

    pub fn is_punct(&self, b: u8) -> bool {
        self.kind == Tk::Punct(b)
    }
}

/// Identifier byte: ASCII letters, digits, `_`, `$` and any non-ASCII byte.
pub(crate) fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Lexer over `s`, starting at byte `pos`.
pub(crate) struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    in_exec: bool,
    /// An executable comment (`/*!`, `/*M!`) was entered.
    pub saw_exec: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(s: &'a [u8], pos: usize) -> Self {
        Lexer {
            s,
            pos,
            in_exec: false,
            saw_exec: false,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    /// Skips whitespace and comments; returns false at the end of input.
    fn skip_trivia(&mut self) -> bool {
        loop {
            let b = match self.s.get(self.pos) {
                Some(b) => *b,
                None => return false,
            };
            if is_space(b) {
                self.pos += 1;
            } else if self.in_exec && b == b'*' && self.at(self.pos + 1) == b'/' {
                self.in_exec = false;
                self.pos += 2;
            } else if b == b'#'
                || (b == b'-' && self.at(self.pos + 1) == b'-' && self.at(self.pos + 2) <= b' ')
            {
                self.pos = memchr(b'\n', self.s, self.pos).unwrap_or(self.s.len());
            } else if b == b'/' && self.at(self.pos + 1) == b'*' {
                let exec = exec_prefix_len(&self.s[self.pos..]);
                if exec > 0 && !self.in_exec {
                    self.in_exec = true;
                    self.saw_exec = true;
                    self.pos += exec;
                    while self.at(self.pos).is_ascii_digit() {
                        self.pos += 1;
                    }
                } else {
                    self.pos = find_comment_end(self.s, self.pos + 2);
                }
            } else {
                return true;
            }
        }
    }

    fn quoted(&mut self) {
        self.pos = skip_quoted(self.s, self.pos);
    }

    fn ident_run(&mut self, dots: bool) {
        while let Some(&b) = self.s.get(self.pos) {
            if is_ident(b) || (dots && b == b'.') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn number(&mut self) {
        loop {
            self.ident_run(true);
            let prev = self.s.get(self.pos.wrapping_sub(1)).copied().unwrap_or(0);
            let sign = matches!(self.at(self.pos), b'+' | b'-');
            if sign && (prev == b'e' || prev == b'E') && self.at(self.pos + 1).is_ascii_digit() {
                self.pos += 1;
            } else {
                return;
            }
        }
    }

    fn variable(&mut self) -> Tk {
        // self.pos is on '@'
        if self.at(self.pos + 1) == b'@' {
            self.pos += 2;
            if matches!(self.at(self.pos), b'`' | b'\'' | b'"') {
                self.quoted();
            } else {
                self.ident_run(true);
            }
            return Tk::SysVar;
        }
        self.pos += 1;
        match self.at(self.pos) {
            b'`' | b'\'' | b'"' => self.quoted(),
            _ => self.ident_run(true),
        }
        Tk::UserVar
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        if !self.skip_trivia() {
            return None;
        }
        let start = self.pos;
        let b = self.at(start);
        let kind = match b {
            b'\'' | b'"' => {
                self.quoted();
                Tk::Str
            }
            b'`' => {
                self.quoted();
                Tk::QIdent
            }
            b'@' => self.variable(),
            b'0'..=b'9' => {
                self.number();
                Tk::Num
            }
            _ if is_ident(b) => {
                self.ident_run(false);
                Tk::Word
            }
            b':' if self.at(start + 1) == b'=' => {
                self.pos += 2;
                Tk::Assign
            }
            _ => {
                self.pos += 1;
                Tk::Punct(b)
            }
        };
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }
}

/// Length of `/*!` or `/*M!` at the start of `s`, else 0.
pub(crate) fn exec_prefix_len(s: &[u8]) -> usize {
    if s.starts_with(b"/*!") {
        3
    } else if s.len() >= 4 && s.starts_with(b"/*") && (s[2] == b'M' || s[2] == b'm') && s[3] == b'!'
    {
        4
    } else {
        0
    }
}

/// Position just after the `*/` that closes a comment whose body starts at `from`.
pub(crate) fn find_comment_end(s: &[u8], from: usize) -> usize {
    let mut i = from;
    while i + 1 < s.len() {
        if s[i] == b'*' && s[i + 1] == b'/' {
            return i + 2;
        }
        i += 1;
    }
    s.len()
}

pub(crate) fn memchr(needle: u8, s: &[u8], from: usize) -> Option<usize> {
    s.get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|p| p + from)
}

/// All tokens of `s` from `pos`, and whether an executable comment was seen.
pub(crate) fn tokens(s: &[u8], pos: usize) -> (Vec<Token>, bool) {
    let mut lx = Lexer::new(s, pos);
    let v: Vec<Token> = lx.by_ref().collect();
    (v, lx.saw_exec)
}

/// Unquotes a quoted identifier or string token's text (doubled quotes, backslash escapes for
/// strings). Returns the raw bytes of a word unchanged.
pub(crate) fn unquote(tok: &Token, s: &[u8]) -> Vec<u8> {
    let t = tok.text(s);
    let q = match (tok.kind, t.first()) {
        (Tk::QIdent | Tk::Str, Some(&q)) => q,
        _ => return t.to_vec(),
    };
    let body = if t.len() >= 2 && t[t.len() - 1] == q {
        &t[1..t.len() - 1]
    } else {
        &t[1..]
    };
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'\\' && q != b'`' && i + 1 < body.len() {
            out.push(body[i + 1]);
            i += 2;
        } else if b == q && body.get(i + 1) == Some(&q) {
            out.push(q);
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// Position just after the quoted string or identifier whose opening quote is at `pos`
/// (doubled quotes; backslash escapes except in backticks). Unterminated: the end of `s`.
pub(crate) fn skip_quoted(s: &[u8], pos: usize) -> usize {
    let q = match s.get(pos) {
        Some(&q) => q,
        None => return s.len(),
    };
    let mut i = pos + 1;
    while let Some(&b) = s.get(i) {
        if b == b'\\' && q != b'`' {
            i += 2;
        } else if b == q {
            if s.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}
