//! The lexer path: a conservative reading, from the PostgreSQL-exact tokens
//! alone, of statements sqlparser cannot read (array subscripts in
//! `UPDATE … SET a[1] =`, XML functions, `VARIADIC`, `(expr).*`, custom
//! operators, `TABLE t`, `MOVE`, several `FETCH`/`COPY`/`VACUUM` forms,
//! `SET CONSTRAINTS`, `PREPARE TRANSACTION`/`COMMIT PREPARED`, deep
//! nesting, very long statements…).
//!
//! It decides by the statement's head keyword (`heads`), which is what the
//! server's grammar dispatches on, and allows a statement only when its
//! whole shape is plainly harmless:
//!
//! * data access (`SELECT`, `VALUES`, `TABLE`, `WITH`, `INSERT`, `UPDATE`,
//!   `DELETE`, `MERGE`, or `(` leading to a query): allowed unless a *lexer
//!   guard* trips. Besides the guards shared with the parser path (denied
//!   function calls, `set_config`, `INTO`, `pg_settings`, `U&"…"`), the
//!   lexer path refuses the unquoted keywords `CREATE`, `ALTER`, `DROP`,
//!   `GRANT`, `REVOKE`, `TRUNCATE`, `IMPORT`, `CHECKPOINT`, `VACUUM`,
//!   `ANALYZE`, `REINDEX` and `REASSIGN` anywhere, and the names
//!   `row_security` and `session_authorization` anywhere. PostgreSQL's grammar lets no keyword start a nested
//!   statement inside a data statement (CTE bodies and subqueries are
//!   queries or DML), so this list is defence in depth against a
//!   misreading, and it is kept to words that are reserved or practically
//!   never column names. Left out on purpose: `DO` (part of `ON CONFLICT DO
//!   UPDATE`), and `COMMENT`, `COPY`, `CALL`, `LOAD`, `CLUSTER`, `REFRESH`,
//!   `SECURITY` (plausible column names) — each can only *start* a
//!   statement, which the head check covers. `role` and `client_encoding`
//!   are left out too (`users.role` is common): changing them needs
//!   `SET`/`RESET` (read exactly by `settings`) or `set_config` (a guard).
//!   `U&'…'` strings (with or without `UESCAPE`) are allowed: a string
//!   constant cannot hide a name from the guards, and the places where a
//!   string's value matters (`set_config`'s setting name, `SET
//!   client_encoding`) accept plain `'…'`/`$$…$$` strings only. `U&"…"`
//!   *identifiers* are always refused (a guard).
//!
//!   `WITH` needs no special care: PostgreSQL allows only `SELECT`,
//!   `INSERT`, `UPDATE`, `DELETE`, `MERGE` and `VALUES` as CTE bodies and as
//!   the main statement, all of them allowed, and anything else inside them
//!   is an expression, whose only dangerous parts are function calls (a
//!   guard) and `SELECT INTO` (a guard).
//! * transaction control (`BEGIN`, `START TRANSACTION`, `COMMIT`, `END`,
//!   `ROLLBACK`, `ABORT`, `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `PREPARE
//!   TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED`): allowed when
//!   only words, strings, numbers and commas follow (their grammar takes no
//!   expressions, so anything else is a server-side syntax error).
//!   Two-phase commit is transaction control: it needs
//!   `max_prepared_transactions` on the server, and commits or aborts only
//!   work the session role may do.
//! * `SET`/`RESET`/`SHOW`: the exact reader in `settings`.
//! * `FETCH`/`MOVE`/`CLOSE`, `DEALLOCATE`, `DISCARD`, `LISTEN`/`UNLISTEN`,
//!   `LOCK`, `NOTIFY`, `TRUNCATE`, `VACUUM`/`ANALYZE`: allowed when their
//!   tokens are only words, identifiers, numbers, signs and the
//!   punctuation their grammar uses (no expressions anywhere).
//! * `EXECUTE name(args)`: arguments are expressions, guarded like data
//!   access. `PREPARE name [(types)] AS body`, `DECLARE … CURSOR … FOR
//!   body`, `EXPLAIN [options] body`, `COPY (body) TO STDOUT`: the body is
//!   read recursively and must itself be allowed (and of a kind the server
//!   accepts there).
//! * `COPY table [(columns)] FROM STDIN` / `TO STDOUT`: the first `FROM` or
//!   `TO` outside parentheses must be followed by the word `STDIN`/`STDOUT`;
//!   a string or `PROGRAM` there is `copy_file`.
//! * `CALL name(args)`, `CREATE TEMP TABLE …`: read like the parser path,
//!   subject to their switches; `CREATE TEMP TABLE` also gets the DDL
//!   keyword check (except `ON COMMIT DROP`).
//! * everything else is refused: with its family's class when the head
//!   keyword names one (`CREATE …` → `ddl`, `GRANT` → `role_change`), else
//!   `unparseable`.

use super::heads::{Head, Label};
use super::lex::{Kind, StrKind, Token};
use super::settings;
use super::{Class, Decision, Need};

/// Unquoted words the lexer path refuses anywhere in a statement.
/// PostgreSQL's grammar lets none of them start a nested statement inside a
/// data statement, so this is defence in depth against a misreading, kept
/// to words that are reserved or practically never column names (`load`,
/// `cluster`, `security`, `copy`, `call`, `refresh`, `comment` are plausible
/// column names and are left out: the head check covers them).
const DDL_WORDS: &[&str] = &[
    "create",
    "alter",
    "drop",
    "grant",
    "revoke",
    "truncate",
    "import",
    "checkpoint",
    "vacuum",
    "analyze",
    "analyse",
    "reindex",
    "reassign",
];

/// Bodies nest (EXPLAIN of PREPARE …) only a few levels in real SQL.
const MAX_NESTING: usize = 8;

/// The refusal for a head that names a refused family.
pub(crate) fn head_refusal(head: Head) -> Decision {
    match head {
        Head::Ddl(label) => ddl(label),
        Head::RoleDdl(label) => Decision::refuse(
            Class::RoleChange,
            format!("role and privilege changes are not allowed on a runtime session ({label})"),
        ),
        _ => Decision::refuse(
            Class::Unparseable,
            "the classifier cannot read this statement, so it is refused",
        ),
    }
}

fn ddl(label: Label) -> Decision {
    Decision::refuse(
        Class::Ddl,
        format!("DDL is not allowed on a runtime session ({label})"),
    )
}

fn unreadable(what: &str) -> Decision {
    Decision::refuse(
        Class::Unparseable,
        format!("the classifier cannot read this {what} statement, so it is refused"),
    )
}

/// Classify one statement (its tokens, no `;`) from tokens alone.
pub(crate) fn classify(src: &str, toks: &[Token], head: Head) -> Decision {
    statement(src, toks, head, 0)
}

fn statement(src: &str, toks: &[Token], head: Head, depth: usize) -> Decision {
    if depth > MAX_NESTING {
        return unreadable("deeply nested");
    }
    // A statement whose grammar takes no expressions is allowed when only
    // the tokens its `Tail` admits follow the keyword.
    let only = |tail: Tail, allowed: Decision, what: &str| {
        if toks
            .get(1..)
            .is_some_and(|r| r.iter().all(|t| tail.admits(src, t)))
        {
            allowed
        } else {
            unreadable(what)
        }
    };
    match head {
        Head::Query | Head::Insert | Head::Update | Head::Delete | Head::Merge => {
            data(src, toks, head)
        }
        Head::Begin
        | Head::Start
        | Head::Commit
        | Head::End
        | Head::Rollback
        | Head::Abort
        | Head::Savepoint
        | Head::Release
        | Head::PrepareTransaction
        | Head::CommitPrepared
        | Head::RollbackPrepared => only(
            Tail::Constants,
            Decision::allow(Class::Transaction),
            "transaction",
        ),
        Head::Set | Head::Reset | Head::Show => settings::classify(src, toks),
        Head::Fetch | Head::Move | Head::Close => {
            only(Tail::Cursor, Decision::allow(Class::Cursor), "cursor")
        }
        Head::Deallocate => only(
            Tail::Identifiers,
            Decision::allow(Class::Prepared),
            "DEALLOCATE",
        ),
        Head::Discard => only(Tail::Words, Decision::allow(Class::Discard), "DISCARD"),
        Head::Listen | Head::Unlisten => {
            only(Tail::Names, Decision::allow(Class::ListenNotify), "LISTEN")
        }
        Head::Notify => only(
            Tail::Constants,
            Decision::allow(Class::ListenNotify),
            "NOTIFY",
        ),
        Head::Lock => only(Tail::Names, Decision::allow(Class::Lock), "LOCK"),
        Head::Truncate => only(Tail::Names, truncate(), "TRUNCATE"),
        Head::Vacuum | Head::Analyze => only(Tail::Maintenance, maintenance(), "VACUUM/ANALYZE"),
        Head::Execute => lexer_guards(src, toks, 1).unwrap_or(Decision::allow(Class::Prepared)),
        Head::Prepare => prepare(src, toks, depth),
        Head::Declare => declare(src, toks, depth),
        Head::Explain => explain(src, toks, depth),
        Head::Copy => copy(src, toks, depth),
        Head::Call => call(src, toks),
        Head::CreateTempTable => lexer_guards(src, toks, 1).unwrap_or_else(temp_table),
        Head::Ddl(_) | Head::RoleDdl(_) | Head::Unknown => head_refusal(head),
    }
}

/// Data access: allowed unless a lexer guard trips.
fn data(src: &str, toks: &[Token], head: Head) -> Decision {
    if let Some(r) = lexer_guards(src, toks, 0) {
        return r;
    }
    Decision::allow(if head == Head::Query && !modifies(src, toks) {
        Class::Read
    } else {
        Class::Write
    })
}

/// What may follow the keyword of a statement whose grammar takes no
/// expressions (anything else there is a server-side syntax error).
#[derive(Clone, Copy)]
enum Tail {
    /// Words, identifiers, standard and dollar strings, numbers, commas
    /// (transaction control, `NOTIFY`).
    Constants,
    /// Words, identifiers, numbers and signs (`FETCH`/`MOVE`/`CLOSE`).
    Cursor,
    /// Words and identifiers (`DEALLOCATE`).
    Identifiers,
    /// Words (`DISCARD`).
    Words,
    /// Words, identifiers, `.`, `,` and `*` (`LISTEN`, `LOCK`, `TRUNCATE`).
    Names,
    /// Names, parenthesised options, numbers and standard strings
    /// (`VACUUM`/`ANALYZE`).
    Maintenance,
}

impl Tail {
    fn admits(self, src: &str, t: &Token) -> bool {
        match self {
            Tail::Constants => matches!(
                t.kind,
                Kind::Word
                    | Kind::QuotedIdent
                    | Kind::Str(StrKind::Standard | StrKind::Dollar)
                    | Kind::Number
                    | Kind::Comma
            ),
            Tail::Cursor => {
                matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Number)
                    || is_op(src, t, "-")
                    || is_op(src, t, "+")
            }
            Tail::Identifiers => matches!(t.kind, Kind::Word | Kind::QuotedIdent),
            Tail::Words => t.kind == Kind::Word,
            Tail::Names => {
                matches!(
                    t.kind,
                    Kind::Word | Kind::QuotedIdent | Kind::Dot | Kind::Comma
                ) || is_op(src, t, "*")
            }
            Tail::Maintenance => {
                Tail::Names.admits(src, t)
                    || matches!(
                        t.kind,
                        Kind::LParen | Kind::RParen | Kind::Number | Kind::Str(StrKind::Standard)
                    )
            }
        }
    }
}

/// `TRUNCATE` (both rolegate paths), subject to its switch.
pub(crate) fn truncate() -> Decision {
    Decision::switchable(
        Class::Truncate,
        Need::Truncate,
        "TRUNCATE is not allowed on a runtime session (it bypasses row-level security)",
    )
}

/// `VACUUM`/`ANALYZE` (both rolegate paths), subject to its switch.
pub(crate) fn maintenance() -> Decision {
    Decision::switchable(
        Class::Maintenance,
        Need::Maintenance,
        "VACUUM/ANALYZE is not allowed on a runtime session",
    )
}

/// `CREATE TEMP TABLE` (both rolegate paths), subject to its switch.
pub(crate) fn temp_table() -> Decision {
    Decision::switchable(
        Class::TempTable,
        Need::TempTables,
        "CREATE TEMP TABLE is not allowed on a runtime session",
    )
}

/// `CALL` of the procedure named `parts` (both rolegate paths), subject to
/// `allow_call`.
pub(crate) fn call_switch(parts: Vec<String>) -> Decision {
    Decision::switchable(
        Class::Call,
        Need::Call(parts),
        "CALL is not allowed on a runtime session for procedures outside [policy] allow_call",
    )
}

fn is_op(src: &str, t: &Token, op: &str) -> bool {
    t.kind == Kind::Op && t.text(src) == op
}

/// True when a query-led statement modifies data (for the class label
/// only: `WITH … INSERT`); `FOR UPDATE` and `DO UPDATE` do not count.
fn modifies(src: &str, toks: &[Token]) -> bool {
    toks.iter().enumerate().any(|(i, t)| {
        ["insert", "update", "delete", "merge"]
            .iter()
            .any(|k| t.is_kw(src, k))
            && !(i > 0
                && ["for", "key", "do", "of"]
                    .iter()
                    .any(|k| toks[i - 1].is_kw(src, k)))
    })
}

/// The lexer path's extra checks, over `toks[from..]`.
fn lexer_guards(src: &str, toks: &[Token], from: usize) -> Option<Decision> {
    let mut prev: Option<&Token> = if from > 0 { toks.get(from - 1) } else { None };
    for t in toks.get(from..).unwrap_or(&[]) {
        if t.kind == Kind::Word {
            let on_commit_drop =
                t.is_kw(src, "drop") && prev.is_some_and(|p| p.is_kw(src, "commit"));
            if !on_commit_drop && DDL_WORDS.iter().any(|w| t.is_kw(src, w)) {
                return Some(Decision::refuse(
                    Class::Unparseable,
                    "the statement could not be parsed and contains a DDL keyword, so it is refused",
                ));
            }
        }
        if matches!(t.kind, Kind::Word | Kind::QuotedIdent)
            && (t.is_name(src, "row_security") || t.is_name(src, "session_authorization"))
        {
            return Some(Decision::refuse(
                Class::Unparseable,
                "the statement could not be parsed and names a protected setting, so it is refused",
            ));
        }
        prev = Some(t);
    }
    None
}

/// Index of the matching `)` for the `(` at `open`.
fn matching_paren(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Index of the first token at parenthesis depth 0 (from `from`) for which
/// `pred` holds.
fn find_top(toks: &[Token], from: usize, pred: impl Fn(&Token) -> bool) -> Option<usize> {
    let mut depth = 0isize;
    for (i, t) in toks.iter().enumerate().skip(from) {
        match t.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => depth -= 1,
            _ if depth == 0 && pred(t) => return Some(i),
            _ => {}
        }
    }
    None
}

/// Read a nested statement body and require one of `allowed_heads`.
fn body(src: &str, toks: &[Token], depth: usize, allowed_heads: &[Head], what: &str) -> Decision {
    let h = super::heads::head(src, toks);
    if !allowed_heads.contains(&h) {
        return match h {
            Head::Ddl(_) | Head::RoleDdl(_) => head_refusal(h),
            _ => unreadable(what),
        };
    }
    statement(src, toks, h, depth + 1)
}

pub(crate) const QUERY_HEADS: &[Head] = &[Head::Query];
pub(crate) const PREPARABLE_HEADS: &[Head] = &[
    Head::Query,
    Head::Insert,
    Head::Update,
    Head::Delete,
    Head::Merge,
];
pub(crate) const EXPLAINABLE_HEADS: &[Head] = &[
    Head::Query,
    Head::Insert,
    Head::Update,
    Head::Delete,
    Head::Merge,
    Head::Execute,
    Head::Declare,
    Head::CreateTempTable,
];

fn relabel(d: Decision, class: Class) -> Decision {
    if d.allowed && d.need.is_none() {
        Decision::allow(class)
    } else {
        d
    }
}

/// The body of `PREPARE name [(types)] AS body`.
pub(crate) fn prepare_body<'t>(src: &str, toks: &'t [Token]) -> Option<&'t [Token]> {
    let as_at = find_top(toks, 2, |t| t.is_kw(src, "as"))?;
    let header_ok = toks[1..as_at].iter().all(|t| {
        matches!(
            t.kind,
            Kind::Word
                | Kind::QuotedIdent
                | Kind::Dot
                | Kind::Comma
                | Kind::LParen
                | Kind::RParen
                | Kind::Number
        ) || is_op(src, t, "[")
            || is_op(src, t, "]")
    });
    header_ok.then(|| &toks[as_at + 1..])
}

/// The query of `DECLARE name [options] CURSOR [WITH|WITHOUT HOLD] FOR query`.
pub(crate) fn declare_body<'t>(src: &str, toks: &'t [Token]) -> Option<&'t [Token]> {
    let cursor_at = toks.iter().position(|t| t.is_kw(src, "cursor"))?;
    let header_ok = toks[1..cursor_at]
        .iter()
        .all(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent));
    let for_at = toks
        .iter()
        .enumerate()
        .skip(cursor_at + 1)
        .take(4)
        .find(|(_, t)| t.is_kw(src, "for"))
        .map(|(i, _)| i)?;
    let hold_ok = toks[cursor_at + 1..for_at]
        .iter()
        .all(|t| t.kind == Kind::Word);
    (header_ok && hold_ok).then(|| &toks[for_at + 1..])
}

/// The statement of `EXPLAIN [ANALYZE] [VERBOSE] body` or `EXPLAIN (options) body`.
pub(crate) fn explain_body<'t>(src: &str, toks: &'t [Token]) -> Option<&'t [Token]> {
    let mut i = 1;
    if toks.get(1).is_some_and(|t| t.kind == Kind::LParen) {
        let close = matching_paren(toks, 1)?;
        let options_ok = toks[2..close].iter().all(|t| {
            matches!(
                t.kind,
                Kind::Word | Kind::Comma | Kind::Number | Kind::Str(StrKind::Standard)
            )
        });
        if !options_ok {
            return None;
        }
        i = close + 1;
    } else {
        while toks.get(i).is_some_and(|t| {
            ["analyze", "analyse", "verbose"]
                .iter()
                .any(|k| t.is_kw(src, k))
        }) {
            i += 1;
        }
    }
    toks.get(i..).filter(|b| !b.is_empty())
}

/// The query of `COPY [BINARY] (query) TO …`, if the statement has that form.
pub(crate) fn copy_query_body<'t>(src: &str, toks: &'t [Token]) -> Option<&'t [Token]> {
    let i = if toks.get(1).is_some_and(|t| t.is_kw(src, "binary")) {
        2
    } else {
        1
    };
    if toks.get(i)?.kind != Kind::LParen {
        return None;
    }
    let close = matching_paren(toks, i)?;
    Some(&toks[i + 1..close])
}

fn prepare(src: &str, toks: &[Token], depth: usize) -> Decision {
    match prepare_body(src, toks) {
        Some(b) => relabel(
            body(src, b, depth, PREPARABLE_HEADS, "PREPARE"),
            Class::Prepared,
        ),
        None => unreadable("PREPARE"),
    }
}

fn declare(src: &str, toks: &[Token], depth: usize) -> Decision {
    match declare_body(src, toks) {
        Some(b) => relabel(body(src, b, depth, QUERY_HEADS, "DECLARE"), Class::Cursor),
        None => unreadable("DECLARE"),
    }
}

fn explain(src: &str, toks: &[Token], depth: usize) -> Decision {
    match explain_body(src, toks) {
        Some(b) => body(src, b, depth, EXPLAINABLE_HEADS, "EXPLAIN"),
        None => unreadable("EXPLAIN"),
    }
}

/// COPY …
/// Where a `COPY` reads from or writes to, read from its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyEnd {
    /// `FROM STDIN` / `TO STDOUT`; the index of the first token after it.
    Stream(usize),
    /// A file name or `PROGRAM`.
    FileOrProgram,
}

/// Read `COPY [BINARY] {table [(columns)] | (query)} {FROM | TO} target …`:
/// the first `FROM`/`TO` after the table or query decides. `None` when the
/// statement does not have that shape.
pub(crate) fn copy_end(src: &str, toks: &[Token]) -> Option<CopyEnd> {
    let mut i = if toks.get(1).is_some_and(|t| t.is_kw(src, "binary")) {
        2
    } else {
        1
    };
    let query = toks.get(i).is_some_and(|t| t.kind == Kind::LParen);
    if query {
        i = matching_paren(toks, i)? + 1;
    } else {
        // table name, then an optional column list
        while toks
            .get(i)
            .is_some_and(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Dot))
            && !toks[i].is_kw(src, "from")
            && !toks[i].is_kw(src, "to")
        {
            i += 1;
        }
        if toks.get(i).is_some_and(|t| t.kind == Kind::LParen) {
            let close = matching_paren(toks, i)?;
            let columns_ok = toks[i + 1..close]
                .iter()
                .all(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Comma));
            if !columns_ok {
                return None;
            }
            i = close + 1;
        }
    }
    let (dir, target) = (toks.get(i)?, toks.get(i + 1)?);
    let from = dir.is_kw(src, "from");
    let to = dir.is_kw(src, "to");
    if !(from || to) || (from && query) {
        return None;
    }
    if (from && target.is_kw(src, "stdin")) || (to && target.is_kw(src, "stdout")) {
        return Some(CopyEnd::Stream(i + 2));
    }
    (target.is_kw(src, "program") || matches!(target.kind, Kind::Str(_)))
        .then_some(CopyEnd::FileOrProgram)
}

/// The refusal for `COPY` to or from a file or program.
pub(crate) fn copy_file() -> Decision {
    Decision::refuse(
        Class::CopyFile,
        "COPY to or from a server file or program is not allowed on a runtime session",
    )
}

fn copy(src: &str, toks: &[Token], depth: usize) -> Decision {
    match copy_end(src, toks) {
        None => unreadable("COPY"),
        Some(CopyEnd::FileOrProgram) => copy_file(),
        Some(CopyEnd::Stream(options)) => {
            if let Some(r) = lexer_guards(src, toks, options) {
                return r;
            }
            match copy_query_body(src, toks) {
                Some(b) => relabel(body(src, b, depth, PREPARABLE_HEADS, "COPY"), Class::Copy),
                None => Decision::allow(Class::Copy),
            }
        }
    }
}

/// CALL name(args)
fn call(src: &str, toks: &[Token]) -> Decision {
    let mut parts = Vec::new();
    let mut i = 1;
    loop {
        let Some(t) = toks.get(i) else {
            return unreadable("CALL");
        };
        match t.kind {
            Kind::Word => parts.push(t.text(src).to_ascii_lowercase()),
            Kind::QuotedIdent => parts.push(t.ident_value(src).into_owned()),
            _ => return unreadable("CALL"),
        }
        i += 1;
        match toks.get(i).map(|t| t.kind) {
            Some(Kind::Dot) => i += 1,
            Some(Kind::LParen) => break,
            _ => return unreadable("CALL"),
        }
    }
    if matching_paren(toks, i) != Some(toks.len() - 1) {
        return unreadable("CALL");
    }
    if let Some(r) = lexer_guards(src, toks, i) {
        return r;
    }
    call_switch(parts)
}
