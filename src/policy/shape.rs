//! Literal-insensitive cache keys: texts that differ only in plain integer
//! constants share one verdict-cache entry.
//!
//! Applications that inline constants (`pgbench -M simple`, hand-written
//! SQL, some ORMs' `IN (1, 2, 3)`) send a new text for every row they touch,
//! so an exact-bytes cache misses every time. No reading in this module's
//! siblings looks at a number's value except the `SET`/`RESET`/`SHOW`
//! readings (`settings.rs`), so outside those statements `… id = 7` and
//! `… id = 8` get the same verdict by construction. Only plain decimal
//! digit runs are folded: other numeric forms (`1e5`, `0x1F`, `1_000`,
//! `1.5`) stay in the key, since a parser may read them differently. The
//! statement itself is still classified from its exact bytes on a miss.

use super::heads::{self, Head};
use super::lex::{self, Kind};

/// `sql` with every plain decimal integer constant replaced by `0`, when
/// that cannot change the verdict; `None` when the text has no such
/// constant, does not scan cleanly, contains a NUL, or holds a `SET`,
/// `RESET` or `SHOW` statement.
pub(crate) fn shape(sql: &[u8]) -> Option<Vec<u8>> {
    if !sql.iter().any(u8::is_ascii_digit) || sql.contains(&0) {
        return None;
    }
    let src = std::str::from_utf8(sql).ok()?;
    let scan = lex::scan(src);
    if scan.error.is_some() {
        return None;
    }
    let mut out = Vec::new();
    let mut last = 0;
    for t in &scan.tokens {
        if t.kind == Kind::Number && t.text(src).bytes().all(|b| b.is_ascii_digit()) {
            if out.is_empty() {
                out.reserve(sql.len());
            }
            out.extend_from_slice(&sql[last..t.start]);
            out.push(b'0');
            last = t.end;
        }
    }
    if last == 0 {
        return None;
    }
    for range in lex::split(&scan.tokens) {
        if matches!(
            heads::head(src, &scan.tokens[range]),
            Head::Set | Head::Reset | Head::Show
        ) {
            return None;
        }
    }
    out.extend_from_slice(&sql[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_plain_integers_only() {
        assert_eq!(
            shape(b"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;").as_deref(),
            Some(&b"SELECT abalance FROM pgbench_accounts WHERE aid = 0;"[..])
        );
        assert_eq!(
            shape(b"update t set a = a + -5 where id in (1, 22, 333)").as_deref(),
            Some(&b"update t set a = a + -0 where id in (0, 0, 0)"[..])
        );
        // Other numeric forms, digits in strings, identifiers and
        // parameters stay.
        assert_eq!(
            shape(b"select 1e5, 0x1F, 1.5, 't1', c2, $1 from t3 where x = 7").as_deref(),
            Some(&b"select 1e5, 0x1F, 1.5, 't1', c2, $1 from t3 where x = 0"[..])
        );
        assert_eq!(shape(b"select $1 from t2"), None);
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
            "select pg_terminate_backend(12345)",
            "select pg_cancel_backend(1), 2",
            "select lo_import('/etc/passwd', 4242)",
            "select lo_export(16384, '/tmp/x')",
            "create table t1 (a int default 5)",
            "alter table notes disable row level security; select 1",
            "select set_config('row_security', 'off', false) where 1 = 1",
            "select pg_read_file('/etc/passwd', 0, 100)",
            "copy (select 1) to '/tmp/x'",
            "vacuum t; select 1",
            "truncate t; select 2",
            "begin; select 1; commit",
            "select pg_advisory_lock(424242)",
            "fetch 5 from c1",
            "grant select on t to public; select 1",
            "select 1; drop table t",
        ] {
            let Some(shaped) = shape(sql.as_bytes()) else {
                continue;
            };
            let a = crate::policy::classify(sql.as_bytes(), &switches);
            let b = crate::policy::classify(&shaped, &switches);
            assert_eq!((a.allowed, a.class), (b.allowed, b.class), "{sql}");
        }
    }
}
