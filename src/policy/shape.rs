//! Literal-insensitive cache keys: texts that differ only in the values of
//! their constants share one verdict-cache entry.
//!
//! Applications that inline constants (`pgbench -M simple`, hand-written
//! SQL, ORMs' `IN (1, 2, 3)`, string filters) send a new text for every row
//! they touch, so an exact-bytes cache misses every time. The key folds a
//! constant only where no reading of the classifier looks at its value:
//!
//! * **Numbers**: plain decimal integers (`42` → `0`) and plain decimals
//!   (`4.25` → `0.0`), in any text without a `SET`, `RESET` or `SHOW`
//!   (the only readings that look at a number's value). Other forms (`1e5`,
//!   `0x1F`, `1_000`, `.5`) stay in the key: parsers read them differently.
//! * **Strings**: standard `'…'` constants (→ `''`), only when every
//!   statement of the text is a query, `INSERT`/`UPDATE`/`DELETE`/`MERGE` or
//!   transaction control, and the text names neither `set_config` (whose
//!   setting-name argument decides its verdict) nor anything `U&` (whose
//!   `UESCAPE` string changes how a name is spelled). Within those, no
//!   reading looks at a string's value: functions are refused by name,
//!   `pg_settings` as a write target whatever the condition.
//!
//! A folded constant must be one token to PostgreSQL too, whatever the
//! settings: a string only when its body has no quote, backslash or control
//! character and no letter, digit, `_`, `$` or `&` touches its opening quote
//! (no `E'`, `U&'`, `B'`, `X'`, `N'` or typed-literal prefix), a number only
//! when no letter, digit, `_`, `$` or `.` touches it. `tests/differential.rs`
//! checks every folded span against PostgreSQL's own scanner, and that the
//! folded text gets the same verdict as the text, over its whole corpus.
//! A miss still classifies the exact bytes; the cached verdict of a shape is
//! by that property the verdict of every text of that shape.

use std::ops::Range;

use super::heads::{self, Head};
use super::lex::{self, Kind, StrKind, Token};

/// What a folded constant was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    /// A standard `'…'` string, folded to `''`.
    String,
    /// A plain decimal integer, folded to `0`.
    Integer,
    /// A plain decimal with a fraction, folded to `0.0`.
    Decimal,
}

impl Literal {
    fn placeholder(self) -> &'static [u8] {
        match self {
            Literal::String => b"''",
            Literal::Integer => b"0",
            Literal::Decimal => b"0.0",
        }
    }
}

/// `sql` with its foldable constants replaced by placeholders; `None` when
/// nothing folds (no such constant, a text that does not scan cleanly, a
/// NUL, or a `SET`/`RESET`/`SHOW`).
pub(crate) fn shape(sql: &[u8]) -> Option<Vec<u8>> {
    let spans = literal_spans(sql);
    let first = spans.first()?;
    let mut out = Vec::with_capacity(sql.len());
    out.extend_from_slice(&sql[..first.0.start]);
    for (i, (range, lit)) in spans.iter().enumerate() {
        out.extend_from_slice(lit.placeholder());
        let next = spans.get(i + 1).map_or(sql.len(), |n| n.0.start);
        out.extend_from_slice(&sql[range.end..next]);
    }
    Some(out)
}

/// The byte ranges [`shape`] folds, in order, with what each was.
pub fn literal_spans(sql: &[u8]) -> Vec<(Range<usize>, Literal)> {
    let mut out = Vec::new();
    if !sql.iter().any(|b| b.is_ascii_digit() || *b == b'\'') || sql.contains(&0) {
        return out;
    }
    let Ok(src) = std::str::from_utf8(sql) else {
        return out;
    };
    let scan = lex::scan(src);
    if scan.error.is_some() {
        return out;
    }
    let Some(strings) = strings_fold(src, &scan.tokens) else {
        return out;
    };
    for t in &scan.tokens {
        let lit = match t.kind {
            Kind::Number => number(sql, t),
            Kind::Str(StrKind::Standard) if strings => string(sql, t),
            _ => None,
        };
        if let Some(lit) = lit {
            out.push((t.start..t.end, lit));
        }
    }
    out
}

/// Whether strings fold in this text: `None` when nothing may fold at all
/// (a `SET`, `RESET` or `SHOW` statement).
fn strings_fold(src: &str, tokens: &[Token]) -> Option<bool> {
    let mut strings = !contains_ignore_case(src.as_bytes(), b"set_config")
        && !contains_ignore_case(src.as_bytes(), b"u&");
    for range in lex::split(tokens) {
        match heads::head(src, &tokens[range]) {
            Head::Set | Head::Reset | Head::Show => return None,
            h if h.is_dml() || h.is_transaction_control() => {}
            _ => strings = false,
        }
    }
    Some(strings)
}

/// A plain integer or decimal that no identifier character touches.
fn number(sql: &[u8], t: &Token) -> Option<Literal> {
    let text = &sql[t.start..t.end];
    let touches = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.') || b >= 0x80;
    if t.start.checked_sub(1).is_some_and(|i| touches(sql[i]))
        || sql.get(t.end).is_some_and(|b| touches(*b))
    {
        return None;
    }
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match text.iter().position(|b| *b == b'.') {
        None if digits(text) => Some(Literal::Integer),
        Some(dot) if digits(&text[..dot]) && digits(&text[dot + 1..]) => Some(Literal::Decimal),
        _ => None,
    }
}

/// A standard string with a plain body and no prefix.
fn string(sql: &[u8], t: &Token) -> Option<Literal> {
    let text = &sql[t.start..t.end];
    let body = text.strip_prefix(b"'")?.strip_suffix(b"'")?;
    let plain = |b: &u8| !matches!(*b, b'\'' | b'\\' | 0..=0x1f | 0x7f);
    let prefixed = t.start.checked_sub(1).is_some_and(|i| {
        let b = sql[i];
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'&') || b >= 0x80
    });
    (!prefixed && body.iter().all(plain)).then_some(Literal::String)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(sql: &str) -> Option<String> {
        shape(sql.as_bytes()).map(|s| String::from_utf8(s).unwrap())
    }

    #[test]
    fn folds_plain_numbers_and_strings() {
        assert_eq!(
            shaped("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = 0;")
        );
        assert_eq!(
            shaped("update t set a = a + -5, b = 'x-1/2 %é' where id in (1, 22, 333)").as_deref(),
            Some("update t set a = a + -0, b = '' where id in (0, 0, 0)")
        );
        // Other numeric forms, prefixed strings, identifiers and parameters
        // stay.
        assert_eq!(
            shaped(
                "select 1e5, 0x1F, 1.5, .5, 't1', e't2', n't3', b'01', c2, $1 from t3 where x = 7"
            )
            .as_deref(),
            Some("select 1e5, 0x1F, 0.0, .5, '', e't2', n't3', b'01', c2, $1 from t3 where x = 0")
        );
        assert_eq!(
            shaped("begin; insert into t values ('a', 2.50); commit").as_deref(),
            Some("begin; insert into t values ('', 0.0); commit")
        );
        assert_eq!(shaped("select $1 from t2"), None);
        // Idempotent: a shape is its own shape.
        assert_eq!(
            shaped("select '', 0, 0.0").as_deref(),
            Some("select '', 0, 0.0")
        );
    }

    #[test]
    fn strings_stay_where_a_reading_looks_at_them() {
        for sql in [
            // Bodies that are not plain, or continued over lines.
            "select 'it''s'",
            "select 'a\\'",
            "select 'a'\n'b'",
            "select 'tab\there'",
            // A string's value decides: set_config, U& with UESCAPE, and
            // statements other than DML and transaction control.
            "select set_config('application_name', 'x', false)",
            "select SET_CONFIG('application_name', 'x', false)",
            "select U&\"\\0073et_config\"('row_security', 'off', false)",
            "select u&'x' uescape '!'",
            "copy t from 'x'",
            "notify c, 'payload'",
            "prepare p as select 'x'",
            "explain (format 'json') select 1",
            "do 'begin null; end'",
            "select 1; listen 'x'",
            "select text'x'",
        ] {
            let spans = literal_spans(sql.as_bytes());
            assert!(
                spans.iter().all(|(_, l)| *l != Literal::String),
                "{sql}: {spans:?}"
            );
        }
    }

    #[test]
    fn never_for_settings_or_unreadable_text() {
        for sql in [
            "SET row_security = 0",
            "select 1; set standard_conforming_strings = 0",
            "RESET statement_timeout; select 1",
            "show work_mem; select 2",
            "select 1 from t where a = 'unterminated",
            "select 123abc",
            "select \"a\0\" from t where x = 1",
        ] {
            assert_eq!(shape(sql.as_bytes()), None, "{sql}");
        }
    }

    /// The shape's verdict is the text's verdict, refused and allowed alike.
    #[test]
    fn shape_reads_like_the_text() {
        let switches = crate::policy::Switches::default();
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 98765",
            "UPDATE pgbench_accounts SET abalance = abalance + 42 WHERE aid = 7",
            "select * from t where id in (1, 2, 3) limit 10 offset 20",
            "select * from t where name = 'pg_read_file' and x = 'drop table t'",
            "select 'x' into t2",
            "select 'a' || pg_read_file('/etc/passwd', 0, 100)",
            "select pg_terminate_backend(12345)",
            "select pg_cancel_backend(1), 2",
            "select lo_import('/etc/passwd', 4242)",
            "select lo_export(16384, '/tmp/x')",
            "create table t1 (a int default 5)",
            "alter table notes disable row level security; select 1",
            "select set_config('row_security', 'off', false) where 1 = 1",
            "update pg_settings set setting = 'off' where name = 'row_security'",
            "select pg_read_file('/etc/passwd', 0, 100)",
            "copy (select 1) to '/tmp/x'",
            "vacuum t; select 1",
            "truncate t; select 2",
            "begin; select 1; commit",
            "select pg_advisory_lock(424242)",
            "fetch 5 from c1",
            "grant select on t to public; select 1",
            "select 1; drop table t",
            "select 'a'; select 'b' from t where c = 1.25",
            "select x.'a' from t x",
        ] {
            let Some(shaped) = shape(sql.as_bytes()) else {
                continue;
            };
            let a = crate::policy::classify(sql.as_bytes(), &switches);
            let b = crate::policy::classify(&shaped, &switches);
            assert_eq!(a, b, "{sql}");
        }
    }
}
