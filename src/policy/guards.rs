//! Token-level guards: checks run on the PostgreSQL-exact tokens of every
//! statement that a path would otherwise allow, whichever path read it.
//!
//! They are deliberately independent of any AST walk, so nothing sqlparser
//! nests somewhere unexpected (a CTE, a `FROM` function, `ORDER BY`, a
//! `VALUES` row, `RETURNING`, a function argument, an `EXPLAIN` target, a
//! `PREPARE` body…) can hide from them:
//!
//! * **Denied names** — any identifier (plain or quoted) whose name is on
//!   [`DENIED_FUNCTIONS`](super::DENIED_FUNCTIONS), in any position:
//!   PostgreSQL's attribute notation calls `f(x)` for `x.f`, `(expr).f`
//!   and `pg_catalog.f` on a relation aliased `pg_catalog`, so "call
//!   position" is not a property of the tokens. A column merely named like
//!   a denied function is refused too; that costs nothing real.
//! * **`set_config`** — every occurrence of the name must be a call whose
//!   first argument is exactly one plain constant string (`'…'`, including
//!   continued strings, or `$$…$$`) followed by `,`, naming an ordinary
//!   setting. A parameter (`$1`), a concatenation, a cast, a subquery, named
//!   notation (`setting_name => …`), `VARIADIC`, an `E''`/`U&''` string, or
//!   the name in any non-call position is refused as `rls_toggle`.
//! * **`SELECT … INTO`** — the keyword `INTO` anywhere except right after
//!   `INSERT` or `MERGE` (the only allowed statements that use it).
//! * **Writing `pg_settings`** — `UPDATE pg_settings SET setting = …` is
//!   `set_config` in disguise (a rule on the view); `pg_settings` as the
//!   target of `UPDATE`, `INSERT INTO`, `MERGE INTO`, `DELETE FROM` or `COPY`
//!   (qualified or not, with or without `ONLY`) is refused. Reading it in a
//!   write (`INSERT … SELECT setting FROM pg_settings`) is a read.
//! * **`U&"…"` identifiers** — a Unicode-escaped identifier could spell any
//!   name; refused rather than decoded.

use super::denylist;
use super::lex::{self, Kind, StrKind, Token};
use super::settings::{self, Protected};
use super::{Class, Decision};

/// Refusal from the first guard that fails, or `None`.
pub(crate) fn check(src: &str, toks: &[Token]) -> Option<Decision> {
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Kind::UnicodeIdent => return Some(unicode_ident(src, toks, i)),
            Kind::Word | Kind::QuotedIdent => {}
            _ => continue,
        }
        let name = t.ident_value(src);
        if name.eq_ignore_ascii_case("set_config") {
            if let Some(refusal) = set_config(src, toks, i) {
                return Some(refusal);
            }
            continue;
        }
        // A denied name is refused wherever it appears as a name: besides
        // `f(…)` and `x.f`, PostgreSQL resolves `(expr).f` and a column
        // reference `f` of a relation aliased like a schema as calls, and
        // views such as pg_hba_file_rules call the function they wrap.
        if let Some(entry) = denylist::denied(&name) {
            return Some(Decision::refuse(
                Class::DangerousFunction,
                format!(
                    "function {entry} is not allowed on a runtime session ({})",
                    denylist::why(entry)
                ),
            ));
        }
        if t.is_kw(src, "into") {
            let prev_ok =
                i > 0 && (toks[i - 1].is_kw(src, "insert") || toks[i - 1].is_kw(src, "merge"));
            if !prev_ok {
                return Some(Decision::refuse(
                    Class::Ddl,
                    "DDL is not allowed on a runtime session (SELECT INTO creates a table)",
                ));
            }
        }
        if name.eq_ignore_ascii_case("pg_settings") && write_target(src, toks, i) {
            return Some(Decision::refuse(
                Class::RlsToggle,
                "writing pg_settings changes settings and is not allowed on a runtime session",
            ));
        }
    }
    None
}

/// The refusal for a `U&"…"` identifier: always refused (it could spell any
/// name), named by what it spells when that is a denied function,
/// `set_config` or a protected setting.
fn unicode_ident(src: &str, toks: &[Token], i: usize) -> Decision {
    let name = lex::unicode_ident_name(src, toks, i);
    if let Some(name) = name.as_deref() {
        if let Some(entry) = denylist::denied(name) {
            return Decision::refuse(
                Class::DangerousFunction,
                format!(
                    "function {entry} (spelled with Unicode escapes) is not allowed on a runtime session ({})",
                    denylist::why(entry)
                ),
            );
        }
        if name.eq_ignore_ascii_case("set_config") {
            return Decision::refuse(
                Class::RlsToggle,
                "set_config spelled with Unicode escapes is not allowed on a runtime session",
            );
        }
        if let Some(p) = settings::protected(name) {
            return settings::refusal(p, "U&-escaped");
        }
    }
    Decision::refuse(
        Class::Unparseable,
        "Unicode-escaped identifiers (U&\"…\") are not accepted on a runtime session",
    )
}

/// True when the statement contains a data-modifying keyword.
/// Whether the relation name at `toks[i]` is the target of a write: right
/// after `UPDATE`, `INTO` (of `INSERT`/`MERGE`; any other `INTO` is refused
/// on its own), `DELETE FROM` or `COPY`, past an optional schema qualifier
/// and `ONLY`.
fn write_target(src: &str, toks: &[Token], i: usize) -> bool {
    let mut j = i;
    let before = |j: usize| j.checked_sub(1).map(|k| (k, &toks[k]));
    if let Some((k, dot)) = before(j)
        && dot.kind == Kind::Dot
        && let Some((q, qualifier)) = before(k)
        && matches!(qualifier.kind, Kind::Word | Kind::QuotedIdent)
    {
        j = q;
    }
    if let Some((k, only)) = before(j)
        && only.is_kw(src, "only")
    {
        j = k;
    }
    let Some((k, head)) = before(j) else {
        return false;
    };
    head.is_kw(src, "update")
        || head.is_kw(src, "into")
        || head.is_kw(src, "copy")
        || (head.is_kw(src, "from") && before(k).is_some_and(|(_, d)| d.is_kw(src, "delete")))
}

/// The whole statement is `SELECT [pg_catalog.]set_config(name, '…',
/// false|true) FROM [pg_catalog.]pg_settings WHERE name = '…'` with an
/// ordinary setting's name (what `pg_dump` sends): the call can only set
/// that one setting.
fn pinned_to_one_setting(src: &str, toks: &[Token], i: usize) -> bool {
    let head_ok = match i {
        1 => toks[0].is_kw(src, "select"),
        3 => {
            toks[0].is_kw(src, "select")
                && toks[1].is_kw(src, "pg_catalog")
                && toks[2].kind == Kind::Dot
        }
        _ => false,
    };
    let plain_str = |t: &Token| matches!(t.kind, Kind::Str(StrKind::Standard | StrKind::Dollar));
    let rest = &toks[i + 1..];
    let (args, from) = rest.split_at(rest.len().min(7));
    let args_ok = matches!(args, [open, name, c1, value, c2, local, close]
        if open.kind == Kind::LParen
            && name.is_kw(src, "name")
            && c1.kind == Kind::Comma
            && plain_str(value)
            && c2.kind == Kind::Comma
            && (local.is_kw(src, "false") || local.is_kw(src, "true"))
            && close.kind == Kind::RParen);
    let from = match from {
        [f, schema, dot, rest @ ..]
            if f.is_kw(src, "from") && schema.is_kw(src, "pg_catalog") && dot.kind == Kind::Dot =>
        {
            rest
        }
        [f, rest @ ..] if f.is_kw(src, "from") => rest,
        _ => return false,
    };
    let pinned = match from {
        [rel, w, name, eq, setting]
            if rel.is_kw(src, "pg_settings")
                && w.is_kw(src, "where")
                && name.is_kw(src, "name")
                && eq.kind == Kind::Op
                && eq.text(src) == "="
                && plain_str(setting) =>
        {
            setting.plain_str_value(src)
        }
        _ => None,
    };
    head_ok && args_ok && pinned.is_some_and(|s| settings::is_ordinary_name(&s))
}

/// Check the `set_config` occurrence at `toks[i]`.
fn set_config(src: &str, toks: &[Token], i: usize) -> Option<Decision> {
    let not_constant = || {
        Some(Decision::refuse(
            Class::RlsToggle,
            "set_config with a setting name that is not a constant string is not allowed on a runtime session",
        ))
    };
    if !toks.get(i + 1).is_some_and(|t| t.kind == Kind::LParen) {
        return not_constant();
    }
    if pinned_to_one_setting(src, toks, i) {
        return None;
    }
    let (Some(arg), Some(comma)) = (toks.get(i + 2), toks.get(i + 3)) else {
        return not_constant();
    };
    if comma.kind != Kind::Comma
        || !matches!(arg.kind, Kind::Str(StrKind::Standard | StrKind::Dollar))
    {
        return not_constant();
    }
    let Some(value) = arg.plain_str_value(src) else {
        return not_constant();
    };
    if !settings::is_plain_name(&value) {
        return Some(Decision::refuse(
            Class::RlsToggle,
            "set_config with an unusual setting name is not allowed on a runtime session",
        ));
    }
    match settings::protected(&value) {
        None => None,
        Some(p) => {
            let mut d = settings::refusal(p, "set_config");
            let which = match p {
                Protected::RowSecurity => "row_security",
                Protected::Role => "role",
                Protected::SessionAuthorization => "session_authorization",
                Protected::ClientEncoding => "client_encoding",
                Protected::StandardConformingStrings => "standard_conforming_strings",
            };
            d.reason = match p {
                Protected::RowSecurity => format!(
                    "changing row_security is not allowed on a runtime session (set_config('{which}'))"
                ),
                Protected::Role | Protected::SessionAuthorization => format!(
                    "changing the role is not allowed on a runtime session (set_config('{which}'))"
                ),
                Protected::ClientEncoding | Protected::StandardConformingStrings => {
                    format!("{which} is pinned on a runtime session (set_config('{which}'))")
                }
            };
            Some(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::lex::scan;

    fn guard(sql: &str) -> Option<Class> {
        let s = scan(sql);
        assert!(s.error.is_none(), "{sql}");
        check(sql, &s.tokens).map(|d| d.class)
    }

    #[test]
    fn set_config_forms() {
        assert_eq!(guard("SELECT set_config('app.tenant', $1, true)"), None);
        assert_eq!(guard("SELECT set_config($$app.tenant$$, '1', false)"), None);
        assert_eq!(
            guard("SELECT pg_catalog.set_config('search_path', '', false)"),
            None
        );
        for sql in [
            "SELECT set_config('row_security', 'off', false)",
            "SELECT set_config('ROW_SECURITY', 'off', false)",
            "SELECT set_config('row_'\n'security', 'off', false)",
            "SELECT \"set_config\"('row_security', 'off', false)",
            "SELECT SET_CONFIG ( /* c */ 'row_security' , 'off', false)",
            "SELECT set_config($1, 'off', false)",
            "SELECT set_config('row_' || 'security', 'off', false)",
            "SELECT set_config((SELECT 'row_security'), 'off', false)",
            "SELECT set_config('row_security'::text, 'off', false)",
            "SELECT set_config(E'row\\_security', 'off', false)",
            "SELECT set_config(U&'row_security', 'off', false)",
            "SELECT set_config(setting_name => 'row_security', new_value => 'off', is_local => false)",
            "SELECT set_config(VARIADIC ARRAY['row_security'])",
            "SELECT set_config",
            "SELECT set_config('row security', 'off', false)",
            "SELECT * FROM t ORDER BY set_config('row_security', 'off', false)",
        ] {
            assert_eq!(guard(sql), Some(Class::RlsToggle), "{sql}");
        }
        assert_eq!(
            guard("SELECT set_config('role', 'admin', false)"),
            Some(Class::RoleChange)
        );
        assert_eq!(
            guard("SELECT set_config('session_authorization', 'x', false)"),
            Some(Class::RoleChange)
        );
        assert_eq!(
            guard("SELECT set_config('client_encoding', 'UTF8', false)"),
            Some(Class::EncodingChange)
        );
        assert_eq!(
            guard("SELECT set_config('standard_conforming_strings', 'off', false)"),
            Some(Class::EncodingChange)
        );
    }

    #[test]
    fn denied_names_anywhere() {
        for sql in [
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_catalog.pg_read_file('/etc/passwd')",
            "SELECT \"pg_read_file\"('/etc/passwd')",
            "SELECT PG_READ_FILE /* */ ('/etc/passwd')",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT t.pg_read_file FROM t",
            "SELECT (y).pg_ls_dir FROM (SELECT '.'::text) x(y)",
            "SELECT U&\"pg\\005fread\\005ffile\"('x')",
            "SELECT U&\"pg!005fls!005fdir\" UESCAPE '!' ('.')",
            "SELECT (x).pg_read_file FROM t",
            "SELECT dblink_exec('dbname=x', 'DROP TABLE t')",
            "SELECT myschema.pg_terminate_backend(1)",
            "SELECT query_to_xml('select 1', true, true, '')",
            "SELECT pg_ls_dir FROM t",
            "SELECT pg_catalog.pg_read_file FROM btrim('/etc/hostname') AS pg_catalog",
            "SELECT * FROM pg_replication_origin_status",
            "SELECT * FROM pg_catalog.pg_hba_file_rules",
        ] {
            assert_eq!(guard(sql), Some(Class::DangerousFunction), "{sql}");
        }
        for sql in [
            "SELECT * FROM app.dblink_targets JOIN s.dblink_id ON true",
            "SELECT 'pg_read_file(1)'",
            "SELECT pg_advisory_lock(1)",
            "SELECT lo_create(0)",
        ] {
            assert_eq!(guard(sql), None, "{sql}");
        }
    }

    #[test]
    fn into_and_pg_settings() {
        assert_eq!(guard("SELECT 1 INTO t"), Some(Class::Ddl));
        assert_eq!(guard("SELECT 1 /* x */ into TEMP t"), Some(Class::Ddl));
        assert_eq!(guard("INSERT INTO t VALUES (1)"), None);
        assert_eq!(guard("INSERT /* c */ INTO t VALUES (1)"), None);
        assert_eq!(
            guard("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE"),
            None
        );
        assert_eq!(guard("SELECT \"into\" FROM t"), None);
        assert_eq!(
            guard("UPDATE pg_settings SET setting = 'off' WHERE name = 'row_security'"),
            Some(Class::RlsToggle)
        );
        assert_eq!(
            guard(
                "WITH x AS (UPDATE pg_catalog.\"pg_settings\" SET setting = 'off' RETURNING 1) SELECT 1"
            ),
            Some(Class::RlsToggle)
        );
        assert_eq!(guard("SELECT name, setting FROM pg_settings"), None);
        for write in [
            "INSERT INTO pg_settings (name) VALUES ('x')",
            "DELETE FROM ONLY pg_catalog.pg_settings",
            "MERGE INTO pg_settings s USING t ON true WHEN MATCHED THEN DELETE",
            "COPY pg_settings FROM STDIN",
            "UPDATE ONLY \"pg_settings\" SET setting = 'off'",
        ] {
            assert_eq!(guard(write), Some(Class::RlsToggle), "{write}");
        }
        for read in [
            "INSERT INTO t (v) SELECT setting FROM pg_settings WHERE name = 'work_mem'",
            "UPDATE t SET v = s.setting FROM pg_settings s WHERE s.name = 'work_mem'",
            "DELETE FROM t USING pg_settings s WHERE t.v = s.name",
            "WITH s AS (SELECT setting FROM pg_settings) INSERT INTO t (v) SELECT * FROM s",
        ] {
            assert_eq!(guard(read), None, "{read}");
        }
        assert_eq!(
            guard("SELECT U&\"pg_read_file\"('x')"),
            Some(Class::DangerousFunction)
        );
        assert_eq!(
            guard("SELECT U&\"set\\005fconfig\"('a.b', 'c', true)"),
            Some(Class::RlsToggle)
        );
        assert_eq!(guard("SELECT U&\"x\" FROM t"), Some(Class::Unparseable));
        assert_eq!(guard("SELECT U&\"\\zz\" FROM t"), Some(Class::Unparseable));
    }
}
