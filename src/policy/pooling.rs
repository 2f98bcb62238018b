//! What transaction pooling cannot give a runtime session: features whose
//! state lives in one server backend beyond the transaction that created
//! it. Under `[pool] mode = "transaction"` the next transaction may run on
//! another backend, where that state is missing (or, reset, gone), so such
//! statements are refused rather than silently broken. Pure: reads the
//! exact text with rolegate's scanner (strings and comments are never
//! mistaken for keywords), no I/O.

use super::lex::{self, Kind, Token};

/// The one-backend feature a statement text uses, if any (first found):
/// a name for the client's error message.
pub fn needs_one_backend(sql: &[u8]) -> Option<&'static str> {
    // Not UTF-8: the policy refuses it already.
    let src = std::str::from_utf8(sql).ok()?;
    let scan = lex::scan(src);
    let toks = &scan.tokens;
    if toks.iter().any(|t| is_advisory_lock(src, t)) {
        return Some(
            "a session-level advisory lock (pg_advisory_lock and friends; use pg_advisory_xact_lock)",
        );
    }
    lex::split(toks)
        .into_iter()
        .find_map(|range| statement_feature(src, &toks[range]))
}

/// The prepared statements a text's `DEALLOCATE [PREPARE] name | ALL`
/// statements drop: `None` for ALL, else the name as the server reads it
/// (unquoted names folded to lower case). Protocol-level statements are
/// among them, so transaction pooling forgets them too.
pub fn deallocated(sql: &[u8]) -> Vec<Option<String>> {
    let Ok(src) = std::str::from_utf8(sql) else {
        return Vec::new();
    };
    let scan = lex::scan(src);
    let toks = &scan.tokens;
    lex::split(toks)
        .into_iter()
        .filter_map(|range| {
            let st = &toks[range];
            if !st.first()?.is_kw(src, "deallocate") {
                return None;
            }
            let mut i = 1;
            if st.get(i)?.is_kw(src, "prepare") {
                i += 1;
            }
            let t = st.get(i)?;
            if t.is_kw(src, "all") {
                return Some(None);
            }
            match t.kind {
                Kind::Word => Some(Some(t.text(src).to_ascii_lowercase())),
                Kind::QuotedIdent => Some(Some(t.ident_value(src).into_owned())),
                _ => None,
            }
        })
        .collect()
}

fn statement_feature(src: &str, toks: &[Token]) -> Option<&'static str> {
    let head = toks.first()?;
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(src, k));
    if head.is_kw(src, "listen") {
        return Some("LISTEN");
    }
    if head.is_kw(src, "prepare") {
        return Some("PREPARE (an SQL-level prepared statement)");
    }
    if head.is_kw(src, "declare")
        && toks
            .windows(2)
            .any(|w| w[0].is_kw(src, "with") && w[1].is_kw(src, "hold"))
    {
        return Some("a WITH HOLD cursor");
    }
    if head.is_kw(src, "create") && (1..4).any(|i| kw(i, "temp") || kw(i, "temporary")) {
        return Some("a temporary table");
    }
    None
}

/// The session-level advisory lock functions (their `_xact_` forms end
/// with the transaction and are fine).
const SESSION_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

fn is_advisory_lock(src: &str, t: &Token) -> bool {
    matches!(t.kind, Kind::Word | Kind::QuotedIdent)
        && SESSION_LOCKS.iter().any(|f| t.is_name(src, f))
}

#[cfg(test)]
mod tests {
    use super::{deallocated, needs_one_backend};

    #[test]
    fn deallocate_names_what_it_drops() {
        assert_eq!(
            deallocated(b"DEALLOCATE S1; deallocate prepare \"Mixed\"; DEALLOCATE ALL; select 'deallocate x'"),
            vec![Some("s1".to_string()), Some("Mixed".to_string()), None]
        );
    }

    #[test]
    fn one_backend_features_are_found() {
        for sql in [
            "LISTEN jobs",
            "select 1; listen \"jobs\"",
            "SELECT pg_advisory_lock(1)",
            "select pg_catalog.PG_TRY_ADVISORY_LOCK_SHARED(1, 2)",
            "PREPARE p AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CREATE TEMP TABLE t (i int)",
            "create local temporary table t (i int)",
        ] {
            assert!(needs_one_backend(sql.as_bytes()).is_some(), "{sql}");
        }
    }

    #[test]
    fn the_rest_is_fine() {
        for sql in [
            "SELECT 'LISTEN x', pg_advisory_xact_lock(1)",
            "-- LISTEN x\nSELECT 1",
            "NOTIFY jobs",
            "UNLISTEN *",
            "DECLARE c CURSOR FOR SELECT 1",
            "EXECUTE p",
            "DEALLOCATE ALL",
            "select \"pg_advisory_lock_x\"()",
        ] {
            assert_eq!(needs_one_backend(sql.as_bytes()), None, "{sql}");
        }
    }
}
