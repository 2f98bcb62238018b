//! Protected settings and the reader for `SET`, `RESET` and `SHOW`.
//!
//! This module owns the rules about *settings*: which setting names a
//! runtime session may not change (`row_security`, `role`,
//! `session_authorization`, and the two the proxy pins so that its reading
//! of statement text is the server's: `client_encoding` and
//! `standard_conforming_strings`), and the reading of the `SET` family.
//!
//! `SET`/`RESET`/`SHOW` are read from the PostgreSQL-exact tokens on both
//! paths, never from sqlparser's AST: the server's grammar for them is
//! small and takes constants only (no expressions, no function calls), and
//! sqlparser's `SET` is a superset of several dialects' (`SET a = 1, b = 2`,
//! `SET (a, b) = …`) whose AST does not say which setting PostgreSQL would
//! change. Setting names are compared ignoring ASCII case *also when
//! quoted*: the server looks settings up case-insensitively, so
//! `SET "ROW_SECURITY" = off` changes `row_security`.

use super::lex::{self, Kind, StrKind, Token};
use super::{Class, Decision};

/// A setting a runtime session may not change freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protected {
    RowSecurity,
    Role,
    SessionAuthorization,
    ClientEncoding,
    StandardConformingStrings,
}

/// A plain setting name: `[A-Za-z0-9_.$]+`, the characters of the names
/// the server's setting lookup can match without quoting surprises.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$')
}

/// A plain setting name that is not protected: one `set_config` may change.
pub(crate) fn is_ordinary_name(name: &str) -> bool {
    is_plain_name(name) && protected(name).is_none()
}

/// The protected setting `name` denotes (compared ignoring ASCII case).
pub(crate) fn protected(name: &str) -> Option<Protected> {
    const NAMES: &[(&str, Protected)] = &[
        ("row_security", Protected::RowSecurity),
        ("role", Protected::Role),
        ("session_authorization", Protected::SessionAuthorization),
        ("client_encoding", Protected::ClientEncoding),
        (
            "standard_conforming_strings",
            Protected::StandardConformingStrings,
        ),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, p)| *p)
}

/// True when `value` names UTF-8 the way the server's encoding lookup
/// reads it (non-alphanumerics dropped, case ignored): `UTF8`, `utf-8`,
/// `Unicode`. Setting `client_encoding` to UTF-8 changes nothing (the proxy
/// pins UTF-8), so it is allowed: drivers send it routinely.
pub(crate) fn is_utf8_name(value: &str) -> bool {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // A non-ASCII character would be dropped by the filter above but is not
    // dropped by the server; refuse such values outright.
    value.is_ascii() && (cleaned == "utf8" || cleaned == "unicode")
}

/// True for the spellings of boolean *on* accepted here for
/// `standard_conforming_strings` (a subset of what the server accepts:
/// refusing `t` or `tr` costs nothing).
pub(crate) fn is_on(value: &str) -> bool {
    ["on", "true", "yes", "1"]
        .iter()
        .any(|v| v.eq_ignore_ascii_case(value))
}

/// The refusal for changing protected setting `p` through `how`
/// (a static description such as `"SET"` or `"RESET"`).
pub(crate) fn refusal(p: Protected, how: &str) -> Decision {
    match p {
        Protected::RowSecurity => Decision::refuse(
            Class::RlsToggle,
            format!(
                "changing row_security is not allowed on a runtime session ({how} row_security)"
            ),
        ),
        Protected::Role => Decision::refuse(
            Class::RoleChange,
            format!("changing role is not allowed on a runtime session ({how} role)"),
        ),
        Protected::SessionAuthorization => Decision::refuse(
            Class::RoleChange,
            format!(
                "changing session_authorization is not allowed on a runtime session ({how} session_authorization)"
            ),
        ),
        Protected::ClientEncoding => Decision::refuse(
            Class::EncodingChange,
            format!(
                "client_encoding is pinned to UTF8 on a runtime session ({how} client_encoding)"
            ),
        ),
        Protected::StandardConformingStrings => Decision::refuse(
            Class::EncodingChange,
            format!(
                "standard_conforming_strings is pinned to on on a runtime session ({how} standard_conforming_strings)"
            ),
        ),
    }
}

struct Reader<'a> {
    src: &'a str,
    toks: &'a [Token],
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self, k: usize) -> Option<&'a Token> {
        self.toks.get(self.i + k)
    }
    fn kw(&self, k: usize, kw: &str) -> bool {
        self.peek(k).is_some_and(|t| t.is_kw(self.src, kw))
    }
    fn done(&self) -> bool {
        self.i >= self.toks.len()
    }
    /// `var_name`: identifiers joined by dots. Returns the dotted name in
    /// lower case (ASCII), or `None` if no name is there.
    fn var_name(&mut self) -> Option<String> {
        let mut name = String::new();
        loop {
            let t = self.peek(0)?;
            if !matches!(t.kind, Kind::Word | Kind::QuotedIdent) {
                return None;
            }
            name.push_str(&t.ident_value(self.src).to_ascii_lowercase());
            self.i += 1;
            if self.peek(0).is_some_and(|t| t.kind == Kind::Dot) {
                name.push('.');
                self.i += 1;
            } else {
                return Some(name);
            }
        }
    }
    /// The rest consists only of tokens for which `ok` holds.
    fn rest_all(&self, ok: impl Fn(&Token) -> bool) -> bool {
        self.toks[self.i.min(self.toks.len())..].iter().all(ok)
    }
}

fn unreadable(what: &str) -> Decision {
    Decision::refuse(
        Class::Unparseable,
        format!("the classifier cannot read this {what} statement"),
    )
}

/// A constant `SET` value token: a word, an identifier, a string or a
/// number (with a sign). Returns the value's text when it is plain enough
/// to compare (word, identifier, standard or dollar string, number).
fn value_text(src: &str, t: &Token) -> Option<String> {
    match t.kind {
        Kind::Word | Kind::QuotedIdent => Some(t.ident_value(src).into_owned()),
        Kind::Number => Some(t.text(src).to_owned()),
        Kind::Str(StrKind::Standard | StrKind::Dollar) => {
            t.plain_str_value(src).map(|v| v.into_owned())
        }
        _ => None,
    }
}

/// A word, an identifier, a string, a number or a comma.
fn is_constant(t: &Token) -> bool {
    matches!(
        t.kind,
        Kind::Word | Kind::QuotedIdent | Kind::Str(_) | Kind::Number | Kind::Comma
    )
}

/// A constant or a sign.
fn is_value_token(src: &str, t: &Token) -> bool {
    is_constant(t) || (t.kind == Kind::Op && matches!(t.text(src), "+" | "-"))
}

/// Classify a statement whose first token is `SET`, `RESET` or `SHOW`.
pub(crate) fn classify(src: &str, toks: &[Token]) -> Decision {
    let Some(first) = toks.first() else {
        return unreadable("SET");
    };
    if first.is_kw(src, "show") {
        return show(toks);
    }
    // A U&"…" identifier could spell any setting name: refused, and named
    // by what it spells when that is a protected setting.
    if let Some(i) = toks.iter().position(|t| t.kind == Kind::UnicodeIdent) {
        let how = if first.is_kw(src, "reset") {
            "RESET"
        } else {
            "SET"
        };
        return match lex::unicode_ident_name(src, toks, i).and_then(|n| protected(&n)) {
            Some(p) => refusal(p, how),
            None => unreadable("SET"),
        };
    }
    if first.is_kw(src, "reset") {
        return reset(src, toks);
    }
    set(src, toks)
}

fn show(toks: &[Token]) -> Decision {
    // SHOW name | SHOW ALL | SHOW TIME ZONE | SHOW TRANSACTION ISOLATION
    // LEVEL | SHOW SESSION AUTHORIZATION: reading a setting is harmless.
    let ok = toks.len() >= 2
        && toks[1..]
            .iter()
            .all(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Dot));
    if ok {
        Decision::allow(Class::Session)
    } else {
        unreadable("SHOW")
    }
}

fn reset(src: &str, toks: &[Token]) -> Decision {
    let mut r = Reader { src, toks, i: 1 };
    let d = if r.kw(0, "all") {
        r.i += 1;
        // RESET ALL returns settings to their session-start values; the
        // proxy pins client_encoding and standard_conforming_strings at
        // session start, and role/session_authorization are not reset by it.
        Decision::allow(Class::Session)
    } else if r.kw(0, "time") && r.kw(1, "zone") {
        r.i += 2;
        Decision::allow(Class::Session)
    } else if r.kw(0, "transaction") && r.kw(1, "isolation") && r.kw(2, "level") {
        r.i += 3;
        Decision::allow(Class::Session)
    } else if r.kw(0, "session") && r.kw(1, "authorization") {
        r.i += 2;
        refusal(Protected::SessionAuthorization, "RESET")
    } else {
        match r.var_name() {
            Some(name) => match protected(&name) {
                // Back to the session's default: the role's or database's
                // setting (a runtime login cannot set row_security at
                // startup), which `rolegate check` requires to be on.
                Some(Protected::RowSecurity) => Decision::allow(Class::Session),
                Some(p) => refusal(p, "RESET"),
                None => Decision::allow(Class::Session),
            },
            None => return unreadable("RESET"),
        }
    };
    if !r.done() && d.allowed {
        return unreadable("RESET");
    }
    d
}

fn set(src: &str, toks: &[Token]) -> Decision {
    let mut r = Reader { src, toks, i: 1 };
    // `SESSION` is a scope unless it starts SESSION AUTHORIZATION or
    // SESSION CHARACTERISTICS.
    let scoped = r.kw(0, "local")
        || (r.kw(0, "session") && !r.kw(1, "authorization") && !r.kw(1, "characteristics"));
    if scoped {
        r.i += 1;
    }
    match set_keyword_form(&mut r, scoped) {
        Some(d) => d,
        None => set_variable(&mut r),
    }
}

/// The `SET` forms led by a keyword rather than a setting name, or `None`
/// for `SET var_name …`.
fn set_keyword_form(r: &mut Reader<'_>, scoped: bool) -> Option<Decision> {
    let src = r.src;
    if r.kw(0, "session") && r.kw(1, "authorization") {
        return Some(refusal(Protected::SessionAuthorization, "SET"));
    }
    if r.kw(0, "role") {
        return Some(refusal(Protected::Role, "SET"));
    }
    if r.kw(0, "names") {
        // SET NAMES = SET client_encoding.
        r.i += 1;
        return Some(encoding_value(src, &r.toks[r.i..]));
    }
    if r.kw(0, "transaction") || (r.kw(0, "session") && r.kw(1, "characteristics")) {
        return Some(if r.rest_all(is_constant) {
            Decision::allow(Class::Transaction)
        } else {
            unreadable("SET TRANSACTION")
        });
    }
    if r.kw(0, "constraints") && !scoped {
        let names = |t: &Token| {
            matches!(
                t.kind,
                Kind::Word | Kind::QuotedIdent | Kind::Dot | Kind::Comma
            )
        };
        return Some(if r.rest_all(names) {
            Decision::allow(Class::Transaction)
        } else {
            unreadable("SET CONSTRAINTS")
        });
    }
    if r.kw(0, "time") && r.kw(1, "zone") {
        // SET TIME ZONE 'x' | LOCAL | DEFAULT | INTERVAL '…' [HOUR TO MINUTE] | INTERVAL(p) '…'
        r.i += 2;
        let ok = !r.done()
            && r.rest_all(|t| {
                is_value_token(src, t) || matches!(t.kind, Kind::LParen | Kind::RParen)
            });
        return Some(if ok {
            Decision::allow(Class::Session)
        } else {
            unreadable("SET TIME ZONE")
        });
    }
    if (r.kw(0, "schema") && r.peek(1).is_some_and(|t| matches!(t.kind, Kind::Str(_))))
        || (r.kw(0, "xml") && r.kw(1, "option"))
    {
        // SET SCHEMA 'x' (= search_path), SET XML OPTION {DOCUMENT|CONTENT}.
        return Some(if r.rest_all(is_constant) {
            Decision::allow(Class::Session)
        } else {
            unreadable("SET")
        });
    }
    None
}

/// `SET var_name {TO | =} value, …`, `SET var_name {TO | =} DEFAULT`,
/// `SET var_name FROM CURRENT`.
fn set_variable(r: &mut Reader<'_>) -> Decision {
    let (src, toks) = (r.src, r.toks);
    let Some(name) = r.var_name() else {
        return unreadable("SET");
    };
    let from_current = r.kw(0, "from") && r.kw(1, "current") && r.toks.len() == r.i + 2;
    let assign = r.kw(0, "to")
        || r.peek(0)
            .is_some_and(|t| t.kind == Kind::Op && t.text(src) == "=");
    if !from_current && !assign {
        return unreadable("SET");
    }
    r.i += if from_current { 2 } else { 1 };
    let values = &toks[r.i.min(toks.len())..];
    if !from_current && (values.is_empty() || !values.iter().all(|t| is_value_token(src, t))) {
        return unreadable("SET");
    }
    match protected(&name) {
        None => Decision::allow(Class::Session),
        Some(Protected::ClientEncoding) if !from_current => encoding_value(src, values),
        Some(Protected::StandardConformingStrings) if !from_current => {
            let on = values.len() == 1 && value_text(src, &values[0]).is_some_and(|v| is_on(&v));
            if on {
                Decision::allow(Class::Session)
            } else {
                refusal(Protected::StandardConformingStrings, "SET")
            }
        }
        // On (which cannot loosen anything) or back to the default (see
        // `reset`): `pg_dump --enable-row-security` sends the former.
        Some(Protected::RowSecurity)
            if !from_current
                && values.len() == 1
                && (values[0].is_kw(src, "default")
                    || value_text(src, &values[0]).is_some_and(|v| is_on(&v))) =>
        {
            Decision::allow(Class::Session)
        }
        Some(p) => refusal(p, "SET"),
    }
}

/// `SET NAMES …` / `SET client_encoding …`: allowed only to UTF-8.
fn encoding_value(src: &str, values: &[Token]) -> Decision {
    let utf8 = values.len() == 1
        && !values[0].is_kw(src, "default")
        && value_text(src, &values[0]).is_some_and(|v| is_utf8_name(&v));
    if utf8 {
        Decision::allow(Class::Session)
    } else {
        refusal(Protected::ClientEncoding, "SET")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::lex::scan;

    fn class_of(sql: &str) -> (bool, Class) {
        let s = scan(sql);
        assert!(s.error.is_none());
        let d = classify(sql, &s.tokens);
        (d.allowed, d.class)
    }

    #[test]
    fn ordinary_settings_are_allowed() {
        for sql in [
            "SET app.current_tenant_id = '42'",
            "SET LOCAL app.current_tenant_id TO $$42$$",
            // row_security forms that cannot loosen anything.
            "SET row_security = on",
            "SET row_security TO TRUE",
            "SET LOCAL row_security = 'yes'",
            "SET SESSION row_security TO 1",
            "SET \"ROW_SECURITY\" = \"on\"",
            "SET row_security TO DEFAULT",
            "RESET row_security",
            "SET SESSION statement_timeout = 5000",
            "SET search_path TO public, \"$user\"",
            "SET TIME ZONE 'UTC'",
            "SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE",
            "SET LOCAL TIME ZONE LOCAL",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            "SET CONSTRAINTS ALL DEFERRED",
            "SET CONSTRAINTS a.b, c IMMEDIATE",
            "SET extra_float_digits = -3",
            "SET DateStyle = ISO, MDY",
            "SET search_path FROM CURRENT",
            "SET client_encoding TO 'UTF8'",
            "SET client_encoding = utf8",
            "SET NAMES 'utf-8'",
            "SET client_encoding TO 'unicode'",
            "SET standard_conforming_strings = on",
            "SET standard_conforming_strings TO 'true'",
            "SET app.role = 'admin'",
            "RESET ALL",
            "RESET statement_timeout",
            "RESET TIME ZONE",
            "RESET TRANSACTION ISOLATION LEVEL",
            "SHOW row_security",
            "SHOW ALL",
            "SHOW TRANSACTION ISOLATION LEVEL",
            "SHOW standard_conforming_strings",
            "SET SCHEMA 'public'",
            "SET XML OPTION DOCUMENT",
        ] {
            assert!(class_of(sql).0, "{sql}");
        }
    }

    #[test]
    fn protected_settings_are_refused() {
        for (sql, class) in [
            ("SET row_security = off", Class::RlsToggle),
            ("SET LOCAL row_security = off", Class::RlsToggle),
            ("SET SESSION row_security = off", Class::RlsToggle),
            ("SET \"ROW_SECURITY\" = off", Class::RlsToggle),
            ("set Row_Security to OFF", Class::RlsToggle),
            ("SET U&\"row\\005fsecurity\" = off", Class::RlsToggle),
            (
                "SET U&\"row!005fsecurity\" UESCAPE '!' TO off",
                Class::RlsToggle,
            ),
            ("RESET U&\"\\0072ole\"", Class::RoleChange),
            ("SET row_security FROM CURRENT", Class::RlsToggle),
            ("SET row_security = of", Class::RlsToggle),
            ("SET row_security = 'no'", Class::RlsToggle),
            ("SET row_security = on, off", Class::RlsToggle),
            ("SET row_security = +1", Class::RlsToggle),
            ("SET row_security = E'on'", Class::RlsToggle),
            ("SET ROLE admin", Class::RoleChange),
            ("SET SESSION ROLE admin", Class::RoleChange),
            ("SET LOCAL ROLE admin", Class::RoleChange),
            ("SET role = 'admin'", Class::RoleChange),
            ("SET \"role\" TO admin", Class::RoleChange),
            ("SET ROLE NONE", Class::RoleChange),
            ("RESET ROLE", Class::RoleChange),
            ("SET SESSION AUTHORIZATION admin", Class::RoleChange),
            ("SET SESSION SESSION AUTHORIZATION admin", Class::RoleChange),
            ("SET LOCAL SESSION AUTHORIZATION DEFAULT", Class::RoleChange),
            ("SET session_authorization = admin", Class::RoleChange),
            ("RESET SESSION AUTHORIZATION", Class::RoleChange),
            ("SET client_encoding = 'LATIN1'", Class::EncodingChange),
            ("SET client_encoding = DEFAULT", Class::EncodingChange),
            ("SET client_encoding = E'UTF8'", Class::EncodingChange),
            ("SET NAMES 'SJIS'", Class::EncodingChange),
            ("SET NAMES", Class::EncodingChange),
            ("SET NAMES DEFAULT", Class::EncodingChange),
            ("RESET client_encoding", Class::EncodingChange),
            (
                "SET standard_conforming_strings = off",
                Class::EncodingChange,
            ),
            (
                "SET standard_conforming_strings = DEFAULT",
                Class::EncodingChange,
            ),
            ("RESET standard_conforming_strings", Class::EncodingChange),
        ] {
            assert_eq!(class_of(sql), (false, class), "{sql}");
        }
    }

    #[test]
    fn unreadable_forms_fail_closed() {
        for sql in [
            "SET U&\"app\\002ex\" = 1",
            "SET",
            "SET x",
            "SET x = f(1)",
            "SET x = (1)",
            "SHOW",
            "RESET",
            "SET LOCAL CONSTRAINTS ALL DEFERRED",
        ] {
            assert_eq!(class_of(sql), (false, Class::Unparseable), "{sql}");
        }
    }

    #[test]
    fn encoding_names() {
        assert!(is_utf8_name("UTF8"));
        assert!(is_utf8_name("utf-8"));
        assert!(is_utf8_name("Unicode"));
        assert!(!is_utf8_name("LATIN1"));
        assert!(!is_utf8_name("utf8\u{e9}"));
        assert!(!is_utf8_name(""));
    }
}
