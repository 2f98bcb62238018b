//! The PostgreSQL-exact scanner: statement text → tokens, the way the
//! server's lexer (`src/backend/parser/scan.l`) reads it with
//! `standard_conforming_strings = on`.
//!
//! This module owns the one reading of the text that every decision rests
//! on: statement boundaries, which bytes are strings, comments or quoted
//! identifiers, and which words are words. sqlparser's tokenizer is close but
//! not identical (see the module docs of `parsed`), so the classifier never
//! trusts it alone: the parser path only runs when sqlparser's tokens line up
//! with these, and the token-level guards and the lexer path read only these.
//!
//! Differences from PostgreSQL are deliberate and only in the safe direction:
//! where the server raises a lexical error ("trailing junk after numeric
//! literal", an unterminated string…) nothing of the query string executes,
//! so any reading is acceptable there; this scanner then either errors too or
//! keeps going with a reading that shows *more* words, never fewer.

use std::borrow::Cow;

/// The flavours of string constant PostgreSQL's lexer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrKind {
    /// `'…'` (`''` doubles a quote; backslash is an ordinary character).
    Standard,
    /// `E'…'` (backslash escapes).
    Escape,
    /// `N'…'` (a standard string read as `nchar`).
    National,
    /// `B'…'` bit string.
    Bit,
    /// `X'…'` hex bit string.
    Hex,
    /// `U&'…'` (escapes decoded later by the grammar, with `UESCAPE`).
    Unicode,
    /// `$tag$…$tag$`.
    Dollar,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted identifier or keyword (PostgreSQL folds ASCII to lower case).
    Word,
    /// `"…"` (`""` doubles a quote; case kept).
    QuotedIdent,
    /// `U&"…"`.
    UnicodeIdent,
    /// A string constant.
    Str(StrKind),
    /// A numeric constant.
    Number,
    /// `$n`.
    Param,
    LParen,
    RParen,
    Comma,
    Semicolon,
    /// A lone `.` (not `..`, not part of a number).
    Dot,
    /// Operators and the remaining punctuation (`[`, `]`, `:`, `::`, `..`, …).
    Op,
    /// A character no lexer rule claims (`\`, `{`, a lone `$`…); the grammar
    /// will reject it.
    Other,
}

/// One token: its kind and its byte range in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's source text.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// True when this is the unquoted keyword `kw` (given in lower case).
    pub fn is_kw(&self, src: &str, kw: &str) -> bool {
        self.kind == Kind::Word && self.text(src).eq_ignore_ascii_case(kw)
    }

    /// True when this is an identifier (quoted or not) whose name equals
    /// `name` ignoring ASCII case. Quoted identifiers are compared
    /// case-insensitively too: stricter than the server, on purpose.
    pub fn is_name(&self, src: &str, name: &str) -> bool {
        match self.kind {
            Kind::Word => self.text(src).eq_ignore_ascii_case(name),
            Kind::QuotedIdent => self.ident_value(src).eq_ignore_ascii_case(name),
            _ => false,
        }
    }

    /// The name an identifier token denotes: unquoted words as written
    /// (callers compare ignoring ASCII case, as PostgreSQL folds ASCII only),
    /// quoted identifiers without their quotes and with `""` undoubled.
    pub fn ident_value<'a>(&self, src: &'a str) -> Cow<'a, str> {
        let t = self.text(src);
        match self.kind {
            Kind::QuotedIdent if t.len() >= 2 => {
                let inner = &t[1..t.len() - 1];
                if inner.contains("\"\"") {
                    Cow::Owned(inner.replace("\"\"", "\""))
                } else {
                    Cow::Borrowed(inner)
                }
            }
            _ => Cow::Borrowed(t),
        }
    }

    /// The value of a string constant whose value this classifier is willing
    /// to rely on: standard `'…'` strings (including SQL's newline-separated
    /// continuation) and dollar-quoted strings. Every other flavour (`E''`,
    /// `U&''`, `N''`, bit strings) returns `None`, and callers treat it as
    /// "not a plain constant".
    pub fn plain_str_value<'a>(&self, src: &'a str) -> Option<Cow<'a, str>> {
        let t = self.text(src);
        match self.kind {
            Kind::Str(StrKind::Dollar) => {
                // `$tag$body$tag$`: the delimiter is the prefix up to the second `$`.
                let close = t.get(1..)?.find('$')? + 2;
                t.get(close..t.len().checked_sub(close)?).map(Cow::Borrowed)
            }
            Kind::Str(StrKind::Standard) => Some(decode_standard(t)),
            _ => None,
        }
    }
}

/// Why the scanner gave up. PostgreSQL raises a syntax error in each case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LexError {
    /// A string, quoted identifier, dollar quote or block comment runs to the
    /// end of the text.
    Unterminated,
    /// `""`: PostgreSQL rejects a zero-length delimited identifier.
    EmptyIdent,
    /// A NUL byte: the server reads a query string only up to its first NUL
    /// (and then rejects the message), so text after it is not what runs.
    Nul,
    /// A number or parameter running straight into an identifier (`1abc`,
    /// `$1x`, `1；drop`): "trailing junk" to the server.
    TrailingJunk,
}

/// The result of scanning: every token read before an error, and the error.
/// Callers that decide refuse on any error; `fingerprint` uses the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    pub tokens: Vec<Token>,
    pub error: Option<LexError>,
}

fn is_space(c: u8) -> bool {
    // PostgreSQL 16+: [ \t\n\r\f\v]. (Older servers reject \v outright.)
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn is_dolq_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Scan the whole text.
pub(crate) fn scan(src: &str) -> Scan {
    scan_until(src, 0, false, usize::MAX).0
}

/// Scan at most the first `max_tokens` tokens (for renderings that stop
/// early, so a huge text costs no more than its prefix).
fn scan_prefix(src: &str, max_tokens: usize) -> Scan {
    scan_until(src, 0, false, max_tokens).0
}

/// The end of the statement starting at byte `from`: the offset of its
/// terminating `;` token (or of the text's end), or the scanner's error.
/// Only that statement's tokens are held, so a huge text can be walked one
/// statement at a time in memory proportional to a statement.
pub(crate) fn statement_end(src: &str, from: usize) -> Result<usize, LexError> {
    let (scan, end) = scan_until(src, from, true, usize::MAX);
    match scan.error {
        Some(e) => Err(e),
        None => Ok(end),
    }
}

/// Scan from `from`; with `one_statement`, stop at the first `;` token;
/// stop after `max_tokens` tokens. Returns the scan and where it stopped
/// (the `;`'s offset, the end of the last token kept, or the end).
fn scan_until(src: &str, from: usize, one_statement: bool, max_tokens: usize) -> (Scan, usize) {
    let n = src.len();
    let capacity = if one_statement { 64 } else { n / 5 + 4 };
    let mut tokens = Vec::with_capacity(capacity.min(max_tokens));
    let mut scanner = Scanner {
        src,
        b: src.as_bytes(),
        i: from,
    };
    let mut error = None;
    while scanner.i < n {
        let start = scanner.i;
        let kind = match scanner.token() {
            Ok(Some(kind)) => kind,
            Ok(None) => continue,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        if one_statement && kind == Kind::Semicolon {
            return (Scan { tokens, error }, start);
        }
        tokens.push(Token {
            kind,
            start,
            end: scanner.i,
        });
        if tokens.len() >= max_tokens {
            return (Scan { tokens, error }, scanner.i);
        }
    }
    (Scan { tokens, error }, n)
}

/// The scanner's position in one text. Each method reads one class of
/// token starting at `i` and leaves `i` just after it; on an error `i` no
/// longer matters (the scan stops).
struct Scanner<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    /// What starts at `i`: a token's kind, `None` for white space or a
    /// comment, or the lexical error that ends the scan. The arms follow
    /// scan.l's rules; their order matters where their first bytes overlap.
    fn token(&mut self) -> Result<Option<Kind>, LexError> {
        let (b, i) = (self.b, self.i);
        let c = b[i];
        let kind = match c {
            _ if is_space(c) => {
                self.i += 1;
                return Ok(None);
            }
            0 => return Err(LexError::Nul),
            b'-' if at(b, i + 1) == b'-' => {
                // `--` comment: to the next \n or \r (PostgreSQL accepts either).
                self.i = line_comment_end(b, i);
                return Ok(None);
            }
            b'/' if at(b, i + 1) == b'*' => {
                self.i = skip_block_comment(b, i).ok_or(LexError::Unterminated)?;
                return Ok(None);
            }
            b'\'' => self.string(i + 1, StrKind::Standard)?,
            b'"' => self.quoted_ident(i + 1, Kind::QuotedIdent)?,
            b'$' if at(b, i + 1).is_ascii_digit() => self.param()?,
            b'$' => self.dollar()?,
            b'0'..=b'9' | b'.' if c != b'.' || at(b, i + 1).is_ascii_digit() => self.number()?,
            _ if is_ident_start(c) => self.word()?,
            _ => self.punctuation(c),
        };
        Ok(Some(kind))
    }

    /// A string constant of flavour `sk` whose body starts at `body`.
    fn string(&mut self, body: usize, sk: StrKind) -> Result<Kind, LexError> {
        self.i = scan_quoted(self.b, body, sk).ok_or(LexError::Unterminated)?;
        Ok(Kind::Str(sk))
    }

    /// A double-quoted identifier (`"…"` or `U&"…"`) whose body starts at `body`.
    fn quoted_ident(&mut self, body: usize, kind: Kind) -> Result<Kind, LexError> {
        self.i = scan_dquoted(self.b, body)?;
        Ok(kind)
    }

    /// `$n`.
    fn param(&mut self) -> Result<Kind, LexError> {
        let b = self.b;
        let mut i = self.i + 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i < b.len() && is_ident_start(b[i]) {
            // {param_junk}: `$1abc` is an error to the server.
            return Err(LexError::TrailingJunk);
        }
        self.i = i;
        Ok(Kind::Param)
    }

    /// A dollar-quoted string, or a lone `$`.
    fn dollar(&mut self) -> Result<Kind, LexError> {
        let i = self.i;
        let Some(open_end) = dollar_delimiter(self.b, i) else {
            // {dolqfailed} or a lone `$`: the `$` alone is an {other}
            // character; what follows is rescanned.
            self.i += 1;
            return Ok(Kind::Other);
        };
        let delim = &self.src[i..open_end];
        let pos = self.src[open_end..]
            .find(delim)
            .ok_or(LexError::Unterminated)?;
        self.i = open_end + pos + delim.len();
        Ok(Kind::Str(StrKind::Dollar))
    }

    /// A numeric constant.
    fn number(&mut self) -> Result<Kind, LexError> {
        let i = scan_number(self.b, self.i);
        if i < self.b.len() && is_ident_start(self.b[i]) {
            // {integer_junk}, {numeric_junk}, {real_junk}: `1abc`, `0x`,
            // `1.5e`, `1；` are errors to PostgreSQL 15+ (older servers read
            // `1 AS abc`); refusing is safe either way.
            return Err(LexError::TrailingJunk);
        }
        self.i = i;
        Ok(Kind::Number)
    }

    /// An identifier or keyword, or the string or quoted identifier that
    /// a prefix (`E'`, `B'`, `X'`, `N'`, `U&'`, `U&"`) opens.
    fn word(&mut self) -> Result<Kind, LexError> {
        let (b, i) = (self.b, self.i);
        let next = at(b, i + 1);
        let lower = b[i].to_ascii_lowercase();
        let prefixed = match (lower, next) {
            (b'e', b'\'') => Some((StrKind::Escape, i + 2)),
            (b'b', b'\'') => Some((StrKind::Bit, i + 2)),
            (b'x', b'\'') => Some((StrKind::Hex, i + 2)),
            (b'n', b'\'') => Some((StrKind::National, i + 2)),
            (b'u', b'&') if at(b, i + 2) == b'\'' => Some((StrKind::Unicode, i + 3)),
            _ => None,
        };
        if let Some((sk, body)) = prefixed {
            return self.string(body, sk);
        }
        if lower == b'u' && next == b'&' && at(b, i + 2) == b'"' {
            return self.quoted_ident(i + 3, Kind::UnicodeIdent);
        }
        let mut end = i + 1;
        while end < b.len() && is_ident_cont(b[end]) {
            end += 1;
        }
        self.i = end;
        Ok(Kind::Word)
    }

    /// Punctuation, an operator, or an {other} character: always a token.
    fn punctuation(&mut self, c: u8) -> Kind {
        let (b, i) = (self.b, self.i);
        let (kind, end) = match c {
            b'.' if at(b, i + 1) == b'.' => (Kind::Op, i + 2),
            b'.' => (Kind::Dot, i + 1),
            b'(' => (Kind::LParen, i + 1),
            b')' => (Kind::RParen, i + 1),
            b',' => (Kind::Comma, i + 1),
            b';' => (Kind::Semicolon, i + 1),
            b'[' | b']' => (Kind::Op, i + 1),
            b':' if matches!(at(b, i + 1), b':' | b'=') => (Kind::Op, i + 2),
            b':' => (Kind::Op, i + 1),
            _ if is_op_char(c) => (Kind::Op, scan_operator(b, i)),
            // {other}: one character (ASCII here: bytes >= 0x80 start identifiers).
            _ => (Kind::Other, i + 1),
        };
        self.i = end;
        kind
    }
}

/// The end of a `--` comment starting at `i`: the next \n or \r (PostgreSQL
/// accepts either), or the end of the text.
fn line_comment_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
        i += 1;
    }
    i
}

/// `/* … */` with nesting, as `<xc>` in scan.l. Returns the index after the
/// closing `*/`, or `None` if the comment is unterminated.
fn skip_block_comment(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = start + 2;
    while j < b.len() {
        if b[j] == b'/' && at(b, j + 1) == b'*' {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && at(b, j + 1) == b'/' {
            if depth == 0 {
                return Some(j + 2);
            }
            depth -= 1;
            j += 2;
        } else {
            j += 1;
        }
    }
    None
}

/// The body of a single-quoted string of kind `sk`, starting just after the
/// opening quote. Handles `''` (not in bit strings), backslash escapes (in
/// `E''` only) and SQL's continuation (`'a'` newline `'b'` is one string,
/// read on in the *same* flavour). Returns the index after the final quote.
fn scan_quoted(b: &[u8], mut i: usize, sk: StrKind) -> Option<usize> {
    let doubling = !matches!(sk, StrKind::Bit | StrKind::Hex);
    loop {
        match *b.get(i)? {
            b'\\' if sk == StrKind::Escape => {
                // Any character after a backslash is taken literally,
                // including a quote; a backslash at the very end is unterminated.
                b.get(i + 1)?;
                i += 2;
            }
            b'\'' if doubling && at(b, i + 1) == b'\'' => i += 2,
            b'\'' => match continuation(b, i + 1) {
                Some(next_quote) => i = next_quote + 1,
                None => return Some(i + 1),
            },
            _ => i += 1,
        }
    }
}

/// After a closing quote at `i - 1`: if `{whitespace_with_newline}{quote}`
/// follows, return the index of that quote. Horizontal space and `--`
/// comments may come before the newline; any space and `--` comments (each
/// ended by a newline) after it. Block comments break the continuation.
fn continuation(b: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    loop {
        match *b.get(i)? {
            b' ' | b'\t' | 0x0b | 0x0c => i += 1,
            b'\n' | b'\r' => {
                newline = true;
                i += 1;
            }
            b'-' if at(b, i + 1) == b'-' => i = line_comment_end(b, i),
            b'\'' if newline => return Some(i),
            _ => return None,
        }
    }
}

/// A double-quoted identifier body (after the opening quote); `""` doubles.
fn scan_dquoted(b: &[u8], mut i: usize) -> Result<usize, LexError> {
    let body = i;
    loop {
        match b.get(i) {
            None => return Err(LexError::Unterminated),
            Some(b'"') if at(b, i + 1) == b'"' => i += 2,
            Some(b'"') => {
                return if i == body {
                    Err(LexError::EmptyIdent)
                } else {
                    Ok(i + 1)
                };
            }
            Some(_) => i += 1,
        }
    }
}

/// `{dolqdelim}`: `$` [tag] `$` at `i`; returns the index after it.
fn dollar_delimiter(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && is_ident_start(b[j]) {
        j += 1;
        while j < b.len() && is_dolq_cont(b[j]) {
            j += 1;
        }
    }
    (at(b, j) == b'$').then_some(j + 1)
}

/// Digits with optional `_` separators.
fn scan_digits(b: &[u8], mut i: usize, radix_ok: impl Fn(u8) -> bool) -> usize {
    while i < b.len() {
        if radix_ok(b[i]) {
            i += 1;
        } else if b[i] == b'_' && i + 1 < b.len() && radix_ok(b[i + 1]) {
            i += 2;
        } else {
            break;
        }
    }
    i
}

/// A numeric constant at `i` (PostgreSQL 16+ forms). Trailing identifier
/// characters are left for the next token: the server rejects them
/// ("trailing junk"), and older servers read them as a separate word.
fn scan_number(b: &[u8], start: usize) -> usize {
    let dec = |c: u8| c.is_ascii_digit();
    if b[start] == b'0' {
        let radix: Option<fn(u8) -> bool> = match at(b, start + 1) {
            b'x' | b'X' => Some(|c: u8| c.is_ascii_hexdigit()),
            b'o' | b'O' => Some(|c: u8| (b'0'..=b'7').contains(&c)),
            b'b' | b'B' => Some(|c: u8| c == b'0' || c == b'1'),
            _ => None,
        };
        if let Some(ok) = radix {
            let mut j = start + 2;
            if at(b, j) == b'_' {
                j += 1;
            }
            if ok(at(b, j)) {
                return scan_digits(b, j, ok);
            }
        }
    }
    let mut i = start;
    if b[i] != b'.' {
        i = scan_digits(b, i, dec);
    }
    if at(b, i) == b'.' && at(b, i + 1) != b'.' {
        i += 1;
        if dec(at(b, i)) {
            i = scan_digits(b, i, dec);
        }
    }
    if matches!(at(b, i), b'e' | b'E') {
        let mut j = i + 1;
        if matches!(at(b, j), b'+' | b'-') {
            j += 1;
        }
        if dec(at(b, j)) {
            i = scan_digits(b, j, dec);
        }
    }
    i
}

/// `{operator}`: a run of operator characters, cut before an embedded `/*`
/// or `--`, and without trailing `+`/`-` unless the operator holds one of
/// `~!@#^&|`?%` (scan.l's rule). Returns the index after the operator.
fn scan_operator(b: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < b.len() && is_op_char(b[end]) {
        end += 1;
    }
    for k in start..end.saturating_sub(1) {
        if (b[k] == b'/' && b[k + 1] == b'*') || (b[k] == b'-' && b[k + 1] == b'-') {
            end = k;
            break;
        }
    }
    let mut len = end - start;
    if len > 1 && matches!(b[start + len - 1], b'+' | b'-') {
        let special = b[start..start + len - 1]
            .iter()
            .any(|c| b"~!@#^&|`?%".contains(c));
        if !special {
            while len > 1 && matches!(b[start + len - 1], b'+' | b'-') {
                len -= 1;
            }
        }
    }
    start + len.max(1)
}

/// The value of a standard string token: `''` undoubled, continuation
/// segments joined.
fn decode_standard(t: &str) -> Cow<'_, str> {
    let b = t.as_bytes();
    // Fast path: one segment, no doubled quote.
    if b.len() >= 2 && !t[1..t.len() - 1].contains('\'') {
        return Cow::Borrowed(&t[1..t.len() - 1]);
    }
    let mut out = String::with_capacity(t.len());
    let mut i = 1;
    let mut seg = 1;
    while i < b.len() {
        if b[i] == b'\'' {
            if at(b, i + 1) == b'\'' {
                out.push_str(&t[seg..=i]);
                i += 2;
                seg = i;
                continue;
            }
            out.push_str(&t[seg..i]);
            match continuation(b, i + 1) {
                Some(q) => {
                    i = q + 1;
                    seg = i;
                }
                None => break,
            }
        } else {
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Decode the body of a `U&"…"` identifier (between the quotes, `""`
/// already undoubled) with escape character `esc`, as PostgreSQL does:
/// `<esc>XXXX`, `<esc>+XXXXXX`, `<esc><esc>`, UTF-16 surrogate pairs. `None`
/// where the server would raise an error.
pub(crate) fn decode_unicode_ident(body: &str, esc: char) -> Option<String> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    let mut pending_high: Option<u32> = None;
    while i < chars.len() {
        let c = chars[i];
        if c != esc {
            if pending_high.is_some() {
                return None;
            }
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&esc) {
            if pending_high.is_some() {
                return None;
            }
            out.push(esc);
            i += 2;
            continue;
        }
        let (digits, skip) = if chars.get(i + 1) == Some(&'+') {
            (6, 2)
        } else {
            (4, 1)
        };
        let hex: String = chars.get(i + skip..i + skip + digits)?.iter().collect();
        if hex.len() != digits || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
            return None;
        }
        let cp = u32::from_str_radix(&hex, 16).ok()?;
        i += skip + digits;
        match (pending_high.take(), cp) {
            (None, 0xD800..=0xDBFF) => pending_high = Some(cp),
            (None, 0xDC00..=0xDFFF) => return None,
            (None, cp) => out.push(char::from_u32(cp).filter(|c| *c != '\0')?),
            (Some(high), 0xDC00..=0xDFFF) => {
                let full = 0x10000 + ((high - 0xD800) << 10) + (cp - 0xDC00);
                out.push(char::from_u32(full)?);
            }
            (Some(_), _) => return None,
        }
    }
    if pending_high.is_some() {
        return None;
    }
    Some(out)
}

/// The name a `U&"…"` token at `toks[i]` denotes, honouring a following
/// `UESCAPE '<c>'`; `None` if the server would reject it.
pub(crate) fn unicode_ident_name(src: &str, toks: &[Token], i: usize) -> Option<String> {
    let t = toks.get(i)?;
    if t.kind != Kind::UnicodeIdent {
        return None;
    }
    let text = t.text(src);
    // U&"…": drop `U&"` and the closing quote, undouble `""`.
    let body = text
        .get(3..text.len().checked_sub(1)?)?
        .replace("\"\"", "\"");
    let mut esc = '\\';
    if toks.get(i + 1).is_some_and(|u| u.is_kw(src, "uescape")) {
        let value = toks.get(i + 2)?.plain_str_value(src)?;
        let mut cs = value.chars();
        let c = cs.next()?;
        if cs.next().is_some()
            || c.is_ascii_hexdigit()
            || matches!(c, '+' | '\'' | '"')
            || c.is_whitespace()
        {
            return None;
        }
        esc = c;
    }
    decode_unicode_ident(&body, esc)
}

/// Token index ranges of the statements in `tokens`, split at every `;`.
/// Empty statements (`;;`) are dropped, as the server drops them.
///
/// Every `;` token splits. Inside parentheses that is a syntax error for
/// the server anyway; inside `BEGIN ATOMIC … END` or `CREATE RULE … (a; b)`
/// the server keeps one statement, but such a statement starts with
/// `CREATE`, so its first piece is refused and with it the whole text.
pub(crate) fn split(tokens: &[Token]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut begin = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.kind == Kind::Semicolon {
            if i > begin {
                out.push(begin..i);
            }
            begin = i + 1;
        }
    }
    if tokens.len() > begin {
        out.push(begin..tokens.len());
    }
    out
}

/// Longest fingerprint returned; longer ones are cut and marked.
pub(crate) const FINGERPRINT_MAX: usize = 4096;

/// A literal-free, whitespace- and comment-normalised rendering of `src`.
pub(crate) fn fingerprint(src: &str) -> String {
    // Every token renders as at least one character, so this many tokens
    // always fill the fingerprint: a huge text is scanned no further.
    let scan = scan_prefix(src, FINGERPRINT_MAX + 1);
    let mut out = String::with_capacity(src.len().min(FINGERPRINT_MAX) + 8);
    let mut prev: Option<Kind> = None;
    for t in &scan.tokens {
        let piece: Cow<'_, str> = match t.kind {
            Kind::Word => Cow::Owned(t.text(src).to_ascii_lowercase()),
            Kind::Str(_) | Kind::Number => Cow::Borrowed("?"),
            _ => Cow::Borrowed(t.text(src)),
        };
        let glue = matches!(prev, None | Some(Kind::LParen) | Some(Kind::Dot))
            || matches!(
                t.kind,
                Kind::RParen | Kind::Comma | Kind::Dot | Kind::Semicolon
            )
            || (t.kind == Kind::LParen && matches!(prev, Some(Kind::Word | Kind::QuotedIdent)));
        if !glue {
            out.push(' ');
        }
        out.push_str(&piece);
        prev = Some(t.kind);
        if out.len() > FINGERPRINT_MAX {
            break;
        }
    }
    if scan.error.is_some() {
        // Never echo what the scanner could not read: it may be the inside
        // of an unterminated string.
        out.push_str(if out.is_empty() { "?…" } else { " ?…" });
    }
    if out.len() > FINGERPRINT_MAX {
        let mut cut = FINGERPRINT_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Converts byte offsets of one text to sqlparser's `(line, column)`
/// locations (1-based, columns counted in characters, lines split at `\n`
/// only), walking forward: offsets must be asked in increasing order.
pub(crate) struct LineCol<'a> {
    src: &'a str,
    pos: usize,
    line: u64,
    col: u64,
}

impl<'a> LineCol<'a> {
    pub fn new(src: &'a str) -> Self {
        LineCol {
            src,
            pos: 0,
            line: 1,
            col: 1,
        }
    }

    /// The location of byte offset `to` (`to >= ` every earlier offset).
    pub fn at(&mut self, to: usize) -> (u64, u64) {
        if to > self.pos {
            if let Some(chunk) = self.src.get(self.pos..to) {
                for ch in chunk.chars() {
                    if ch == '\n' {
                        self.line += 1;
                        self.col = 1;
                    } else {
                        self.col += 1;
                    }
                }
            }
            self.pos = to;
        }
        (self.line, self.col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, &str)> {
        let s = scan(src);
        assert_eq!(s.error, None, "{src:?}");
        s.tokens.iter().map(|t| (t.kind, t.text(src))).collect()
    }

    fn words(src: &str) -> Vec<String> {
        let s = scan(src);
        s.tokens
            .iter()
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.text(src).to_ascii_lowercase())
            .collect()
    }

    fn pieces(src: &str) -> usize {
        let s = scan(src);
        assert_eq!(s.error, None, "{src:?}");
        split(&s.tokens).len()
    }

    #[test]
    fn standard_strings_have_no_backslash_escapes() {
        // 'c\' ends at the second quote: standard_conforming_strings is on.
        assert_eq!(
            kinds(r"SELECT 'c\', 'd'"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Str(StrKind::Standard), r"'c\'"),
                (Kind::Comma, ","),
                (Kind::Str(StrKind::Standard), "'d'"),
            ]
        );
        assert_eq!(pieces(r"SELECT 'a\'; DROP TABLE t; --'"), 2);
        assert_eq!(words(r"SELECT 'it''s; DROP' x"), vec!["select", "x"]);
    }

    #[test]
    fn escape_strings_take_backslash_escapes() {
        // E'\'' is one string holding a quote; the `;` after it is real.
        assert_eq!(pieces(r"SELECT E'\''; SELECT 2"), 2);
        // E'\\' ends at the third quote.
        assert_eq!(pieces(r"SELECT E'\\'; SELECT 2"), 2);
        // E'a\'; DROP TABLE t; --' is one string.
        assert_eq!(pieces(r"SELECT E'a\'; DROP TABLE t; --'"), 1);
        assert_eq!(words(r"SELECT e'x\'y' FROM t"), vec!["select", "from", "t"]);
        // An identifier ending in e is not an E-string prefix.
        assert_eq!(
            kinds("SELECT xe'a'"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Word, "xe"),
                (Kind::Str(StrKind::Standard), "'a'"),
            ]
        );
        assert_eq!(scan(r"SELECT E'abc\").error, Some(LexError::Unterminated));
    }

    #[test]
    fn string_continuation_keeps_the_flavour() {
        // 'a' newline 'b' is one string 'ab'.
        let src = "SELECT 'row_'\n  'security'";
        let s = scan(src);
        assert_eq!(s.tokens.len(), 2);
        assert_eq!(
            s.tokens[1].plain_str_value(src).as_deref(),
            Some("row_security")
        );
        // Comments before and after the newline are allowed; block comments are not.
        let src = "SELECT 'a' -- c\n -- d\n 'b'";
        let s = scan(src);
        assert_eq!(s.tokens.len(), 2);
        assert_eq!(s.tokens[1].plain_str_value(src).as_deref(), Some("ab"));
        assert_eq!(scan("SELECT 'a' /* c */\n 'b'").tokens.len(), 3);
        // Without a newline there is no continuation.
        assert_eq!(scan("SELECT 'a' 'b'").tokens.len(), 3);
        // An E-string continued: the second segment still has backslash
        // escapes, so \' does not end it.
        assert_eq!(pieces("SELECT E'a'\n'\\'; DROP TABLE t; --'"), 1);
        // A standard string continued stays standard.
        assert_eq!(pieces("SELECT 'a'\n'\\'; SELECT 2"), 2);
        // '' inside a continued segment.
        let src = "SELECT 'a'\n'b''c'";
        assert_eq!(
            scan(src).tokens[1].plain_str_value(src).as_deref(),
            Some("ab'c")
        );
    }

    #[test]
    fn bit_strings_do_not_double_quotes() {
        // B'01''x' is B'01' followed by the string 'x'.
        assert_eq!(
            kinds("SELECT B'01''x'"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Str(StrKind::Bit), "B'01'"),
                (Kind::Str(StrKind::Standard), "'x'"),
            ]
        );
        assert_eq!(kinds("SELECT x'1F'")[1].0, Kind::Str(StrKind::Hex));
        assert_eq!(kinds("SELECT n'x'")[1].0, Kind::Str(StrKind::National));
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(pieces("SELECT $$a; DROP TABLE t; $$; SELECT 2"), 2);
        assert_eq!(pieces("SELECT $x$ $$ ; $y$ $x$"), 1);
        // $a$ … $ab$ … $a$: only the identical tag closes.
        let src = "SELECT $a$ x $ab$ y $a$";
        let s = scan(src);
        assert_eq!(s.tokens.len(), 2);
        assert_eq!(
            s.tokens[1].plain_str_value(src).as_deref(),
            Some(" x $ab$ y ")
        );
        // An identifier swallows `$`: a$$ is a word, the $$ after it opens a quote.
        assert_eq!(
            kinds("SELECT a$$ FROM t$$b"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Word, "a$$"),
                (Kind::Word, "FROM"),
                (Kind::Word, "t$$b")
            ]
        );
        assert_eq!(pieces("SELECT 1 $$;$$"), 1);
        // $1 is a parameter; $1$ is a parameter then a lone $.
        assert_eq!(
            kinds("SELECT $1, $2$"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Param, "$1"),
                (Kind::Comma, ","),
                (Kind::Param, "$2"),
                (Kind::Other, "$"),
            ]
        );
        // $tag without a closing $ is a lone $ then a word.
        assert_eq!(kinds("SELECT $abc")[1], (Kind::Other, "$"));
        assert_eq!(scan("SELECT $q$ abc").error, Some(LexError::Unterminated));
        // Tags are case-sensitive.
        assert_eq!(scan("SELECT $A$ x $a$").error, Some(LexError::Unterminated));
    }

    #[test]
    fn nested_block_comments() {
        assert_eq!(
            words("SELECT 1 /* a /* b */ DROP */ FROM t"),
            vec!["select", "from", "t"]
        );
        assert_eq!(pieces("SELECT 1 /* /* */ ; DROP TABLE t; -- */"), 1);
        assert_eq!(
            scan("SELECT 1 /* /* */").error,
            Some(LexError::Unterminated)
        );
        // `*/*` closes then leaves `*`; `/*/` does not close.
        assert_eq!(words("SELECT /*/ x */ 1"), vec!["select"]);
        assert_eq!(kinds("SELECT 1 */* c */ 2").len(), 4);
        // A quote inside a comment is not a string start.
        assert_eq!(pieces("SELECT 1 /* ' */; SELECT 2 /* ' */"), 2);
    }

    #[test]
    fn line_comments() {
        assert_eq!(pieces("SELECT 1 -- ; DROP TABLE t\n"), 1);
        assert_eq!(pieces("SELECT 1 -- x\r; SELECT 2"), 2);
        assert_eq!(words("SELECT 1 --"), vec!["select"]);
        // An operator stops before an embedded comment start.
        assert_eq!(kinds("SELECT 1 +-- c\n2").len(), 4);
        assert_eq!(kinds("SELECT 1 */* c */ 2")[2], (Kind::Op, "*"));
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(pieces(r#"SELECT "a;b"";" FROM t; SELECT 2"#), 2);
        let src = r#"SELECT "PG_read""x""#;
        let t = scan(src).tokens[1];
        assert_eq!(t.kind, Kind::QuotedIdent);
        assert_eq!(t.ident_value(src), "PG_read\"x");
        assert_eq!(scan(r#"SELECT """#).error, Some(LexError::EmptyIdent));
        assert_eq!(kinds(r#"SELECT U&"a""#)[1].0, Kind::UnicodeIdent);
        assert_eq!(kinds("SELECT U&'a'")[1].0, Kind::Str(StrKind::Unicode));
        // u& not followed by a quote: the word u, then an operator.
        assert_eq!(kinds("SELECT u&1")[1], (Kind::Word, "u"));
    }

    #[test]
    fn numbers_and_operators() {
        assert_eq!(
            kinds("SELECT 1.5e-3, .5, 5., 0x1F, 1_000, 1..2"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Number, "1.5e-3"),
                (Kind::Comma, ","),
                (Kind::Number, ".5"),
                (Kind::Comma, ","),
                (Kind::Number, "5."),
                (Kind::Comma, ","),
                (Kind::Number, "0x1F"),
                (Kind::Comma, ","),
                (Kind::Number, "1_000"),
                (Kind::Comma, ","),
                (Kind::Number, "1"),
                (Kind::Op, ".."),
                (Kind::Number, "2"),
            ]
        );
        assert_eq!(kinds("SELECT a=-1")[2], (Kind::Op, "="));
        assert_eq!(kinds("SELECT a @- 1")[2], (Kind::Op, "@-"));
        assert_eq!(kinds("SELECT a::int")[2], (Kind::Op, "::"));
        // Trailing junk is an error, as in PostgreSQL 15+.
        for junk in [
            "SELECT 123abc",
            "SELECT 1e",
            "SELECT 0x",
            "SELECT 1.5e",
            "SELECT $1a",
            "SELECT 1\u{ff1b}drop",
        ] {
            assert_eq!(scan(junk).error, Some(LexError::TrailingJunk), "{junk}");
        }
        assert_eq!(
            scan("SELECT 1..2, 1::int, $1::int, 0b101, 1_000").error,
            None
        );
    }

    #[test]
    fn unicode_identifiers_decode_like_postgres() {
        assert_eq!(
            decode_unicode_ident("pg\\005fread\\005ffile", '\\').as_deref(),
            Some("pg_read_file")
        );
        assert_eq!(
            decode_unicode_ident("\\+01F600x", '\\').as_deref(),
            Some("\u{1F600}x")
        );
        assert_eq!(
            decode_unicode_ident("\\D83D\\DE00", '\\').as_deref(),
            Some("\u{1F600}")
        );
        assert_eq!(
            decode_unicode_ident("a\\\\b", '\\').as_deref(),
            Some("a\\b")
        );
        assert_eq!(decode_unicode_ident("a!0041", '!').as_deref(), Some("aA"));
        assert_eq!(decode_unicode_ident("\\00g1", '\\'), None);
        assert_eq!(decode_unicode_ident("\\D83D", '\\'), None);
        assert_eq!(decode_unicode_ident("\\DE00", '\\'), None);
        let src = "SELECT U&\"pg!005fls!005fdir\" UESCAPE '!' ('.')";
        let s = scan(src);
        assert_eq!(
            unicode_ident_name(src, &s.tokens, 1).as_deref(),
            Some("pg_ls_dir")
        );
    }

    #[test]
    fn nul_and_unterminated() {
        assert_eq!(scan("SELECT 1\0; DROP TABLE t").error, Some(LexError::Nul));
        assert_eq!(scan("SELECT 'abc").error, Some(LexError::Unterminated));
        assert_eq!(scan("SELECT \"abc").error, Some(LexError::Unterminated));
    }

    #[test]
    fn non_ascii_is_identifier() {
        // NBSP is an identifier character to PostgreSQL, not whitespace.
        assert_eq!(
            words("SELECT\u{a0}pg_read_file('x')"),
            vec!["select\u{a0}pg_read_file"]
        );
    }

    #[test]
    fn fingerprint_drops_literals() {
        let fp =
            fingerprint("SELECT  a, 'secret', E'x\\'y', $$z$$, 42 FROM t WHERE b = $1 -- hi\n");
        assert_eq!(fp, "select a, ?, ?, ?, ? from t where b = $1");
        assert!(!fingerprint("SELECT 'unterminated secret").contains("secret"));
        assert_eq!(fingerprint("SELECT f(1)"), "select f(?)");
        let long = format!("SELECT {}", "a, ".repeat(5000));
        assert!(fingerprint(&long).len() <= FINGERPRINT_MAX + 4);
    }

    #[test]
    fn line_col_matches_sqlparser_convention() {
        let src = "ab\ncé d";
        let mut lc = LineCol::new(src);
        assert_eq!(lc.at(0), (1, 1));
        assert_eq!(lc.at(3), (2, 1));
        assert_eq!(lc.at(src.len()), (2, 5));
    }
}
