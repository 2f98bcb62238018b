//! Statement heads: what kind of statement a token sequence is, read from
//! its first keywords the way PostgreSQL's grammar dispatches on them.
//!
//! Both paths use this. The lexer path decides from it; the parser path
//! checks that sqlparser's statement type agrees with it (so a quirk of
//! sqlparser cannot turn, say, a `CREATE` into something allowed) and takes
//! its refusal labels from it, so both paths name refusals identically.
//! Labels are `&'static str` built from fixed keyword tables: a refusal
//! reason never contains text from the statement.

use std::fmt;

use super::lex::{Kind, Token};

/// A static, literal-free description of a statement kind, e.g. `DROP TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label {
    pub verb: &'static str,
    pub object: Option<&'static str>,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.object {
            Some(o) => write!(f, "{} {}", self.verb, o),
            None => f.write_str(self.verb),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// SELECT, VALUES, TABLE, WITH, or `(` leading to one of them.
    Query,
    Insert,
    Update,
    Delete,
    Merge,
    Begin,
    Start,
    Commit,
    End,
    Rollback,
    Abort,
    Savepoint,
    Release,
    PrepareTransaction,
    CommitPrepared,
    RollbackPrepared,
    Set,
    Reset,
    Show,
    Prepare,
    Execute,
    Deallocate,
    Declare,
    Fetch,
    Move,
    Close,
    Listen,
    Notify,
    Unlisten,
    Discard,
    Lock,
    Copy,
    Explain,
    Truncate,
    Vacuum,
    Analyze,
    Call,
    /// CREATE [GLOBAL|LOCAL] {TEMP|TEMPORARY} [UNLOGGED] TABLE
    CreateTempTable,
    /// Schema changes and other server-level commands.
    Ddl(Label),
    /// Privilege and role commands.
    RoleDdl(Label),
    Unknown,
}

impl Head {
    /// A query or a row change: what runtime sessions mostly send.
    pub(crate) fn is_dml(self) -> bool {
        matches!(
            self,
            Head::Query | Head::Insert | Head::Update | Head::Delete | Head::Merge
        )
    }

    /// Transaction control within a session (not two-phase commit).
    pub(crate) fn is_transaction_control(self) -> bool {
        matches!(
            self,
            Head::Begin
                | Head::Start
                | Head::Commit
                | Head::End
                | Head::Rollback
                | Head::Abort
                | Head::Savepoint
                | Head::Release
        )
    }
}

/// Object keywords after CREATE/ALTER/DROP/COMMENT ON…, with their labels.
const OBJECTS: &[(&str, &str)] = &[
    ("table", "TABLE"),
    ("index", "INDEX"),
    ("view", "VIEW"),
    ("materialized", "MATERIALIZED VIEW"),
    ("function", "FUNCTION"),
    ("procedure", "PROCEDURE"),
    ("routine", "ROUTINE"),
    ("schema", "SCHEMA"),
    ("extension", "EXTENSION"),
    ("sequence", "SEQUENCE"),
    ("type", "TYPE"),
    ("domain", "DOMAIN"),
    ("trigger", "TRIGGER"),
    ("event", "EVENT TRIGGER"),
    ("policy", "POLICY"),
    ("rule", "RULE"),
    ("database", "DATABASE"),
    ("tablespace", "TABLESPACE"),
    ("server", "SERVER"),
    ("foreign", "FOREIGN TABLE"),
    ("aggregate", "AGGREGATE"),
    ("operator", "OPERATOR"),
    ("cast", "CAST"),
    ("collation", "COLLATION"),
    ("conversion", "CONVERSION"),
    ("language", "LANGUAGE"),
    ("publication", "PUBLICATION"),
    ("subscription", "SUBSCRIPTION"),
    ("statistics", "STATISTICS"),
    ("transform", "TRANSFORM"),
    ("text", "TEXT SEARCH"),
    ("access", "ACCESS METHOD"),
    ("large", "LARGE OBJECT"),
    ("column", "COLUMN"),
    ("constraint", "CONSTRAINT"),
    ("system", "SYSTEM"),
    ("owned", "OWNED"),
    ("role", "ROLE"),
    ("user", "USER"),
    ("group", "GROUP"),
    ("default", "DEFAULT PRIVILEGES"),
];

/// Modifiers that may come between CREATE and the object keyword.
const CREATE_MODIFIERS: &[&str] = &[
    "or",
    "replace",
    "global",
    "local",
    "temp",
    "temporary",
    "unlogged",
    "unique",
    "recursive",
    "trusted",
    "procedural",
    "constraint",
];

fn object_label(
    src: &str,
    toks: &[Token],
    from: usize,
    skip_modifiers: bool,
) -> Option<&'static str> {
    let mut i = from;
    if skip_modifiers {
        while toks
            .get(i)
            .is_some_and(|t| CREATE_MODIFIERS.iter().any(|m| t.is_kw(src, m)))
        {
            i += 1;
        }
    }
    let t = toks.get(i)?;
    if t.is_kw(src, "user") && toks.get(i + 1).is_some_and(|n| n.is_kw(src, "mapping")) {
        return Some("USER MAPPING");
    }
    if t.is_kw(src, "foreign") && toks.get(i + 1).is_some_and(|n| n.is_kw(src, "data")) {
        return Some("FOREIGN DATA WRAPPER");
    }
    OBJECTS
        .iter()
        .find(|(k, _)| t.is_kw(src, k))
        .map(|(_, label)| *label)
}

fn is_role_object(object: Option<&str>) -> bool {
    matches!(
        object,
        Some("ROLE" | "USER" | "GROUP" | "DEFAULT PRIVILEGES")
    )
}

/// Commands refused whatever follows their keyword, with their labels.
const REFUSED_COMMANDS: &[(&str, Head)] = &[
    ("grant", role_command("GRANT")),
    ("revoke", role_command("REVOKE")),
    ("reassign", role_command("REASSIGN OWNED")),
    ("comment", ddl_command("COMMENT")),
    ("security", ddl_command("SECURITY LABEL")),
    ("reindex", ddl_command("REINDEX")),
    ("cluster", ddl_command("CLUSTER")),
    ("refresh", ddl_command("REFRESH MATERIALIZED VIEW")),
    ("do", ddl_command("DO")),
    ("load", ddl_command("LOAD")),
    ("import", ddl_command("IMPORT FOREIGN SCHEMA")),
    ("checkpoint", ddl_command("CHECKPOINT")),
];

const fn role_command(verb: &'static str) -> Head {
    Head::RoleDdl(Label { verb, object: None })
}

const fn ddl_command(verb: &'static str) -> Head {
    Head::Ddl(Label { verb, object: None })
}

fn kw_at(src: &str, toks: &[Token], i: usize, kw: &str) -> bool {
    toks.get(i).is_some_and(|t| t.is_kw(src, kw))
}

/// The head of a statement (its tokens, without the `;`).
pub(crate) fn head(src: &str, toks: &[Token]) -> Head {
    let Some(first) = toks.first() else {
        return Head::Unknown;
    };
    if first.kind == Kind::LParen {
        return parenthesised(src, toks);
    }
    if first.kind != Kind::Word {
        return Head::Unknown;
    }
    let kw = |i: usize, k: &str| kw_at(src, toks, i, k);
    let w = first.text(src).to_ascii_lowercase();
    match w.as_str() {
        "select" | "values" | "table" | "with" => Head::Query,
        "insert" => Head::Insert,
        "update" => Head::Update,
        "delete" => Head::Delete,
        "merge" => Head::Merge,
        "begin" => Head::Begin,
        "start" if kw(1, "transaction") => Head::Start,
        "commit" if kw(1, "prepared") => Head::CommitPrepared,
        "commit" => Head::Commit,
        "end" => Head::End,
        "rollback" if kw(1, "prepared") => Head::RollbackPrepared,
        "rollback" => Head::Rollback,
        "abort" => Head::Abort,
        "savepoint" => Head::Savepoint,
        "release" => Head::Release,
        "prepare" if kw(1, "transaction") => Head::PrepareTransaction,
        "prepare" => Head::Prepare,
        "set" => Head::Set,
        "reset" => Head::Reset,
        "show" => Head::Show,
        "execute" => Head::Execute,
        "deallocate" => Head::Deallocate,
        "declare" => Head::Declare,
        "fetch" => Head::Fetch,
        "move" => Head::Move,
        "close" => Head::Close,
        "listen" => Head::Listen,
        "notify" => Head::Notify,
        "unlisten" => Head::Unlisten,
        "discard" => Head::Discard,
        "lock" => Head::Lock,
        "copy" => Head::Copy,
        "explain" => Head::Explain,
        "truncate" => Head::Truncate,
        "vacuum" => Head::Vacuum,
        "analyze" | "analyse" => Head::Analyze,
        "call" => Head::Call,
        "create" => create(src, toks),
        "alter" => schema_change("ALTER", object_label(src, toks, 1, false)),
        "drop" => schema_change("DROP", object_label(src, toks, 1, false)),
        other => REFUSED_COMMANDS
            .iter()
            .find(|(k, _)| *k == other)
            .map_or(Head::Unknown, |(_, head)| *head),
    }
}

/// A parenthesised query: `(SELECT …) UNION …`.
fn parenthesised(src: &str, toks: &[Token]) -> Head {
    let inner = toks.iter().find(|t| t.kind != Kind::LParen);
    match inner {
        Some(t)
            if ["select", "values", "table", "with"]
                .iter()
                .any(|k| t.is_kw(src, k)) =>
        {
            Head::Query
        }
        _ => Head::Unknown,
    }
}

/// `CREATE [GLOBAL|LOCAL] {TEMP|TEMPORARY} [UNLOGGED] TABLE`, or a schema
/// change.
fn create(src: &str, toks: &[Token]) -> Head {
    let kw = |i: usize, k: &str| kw_at(src, toks, i, k);
    let mut i = 1;
    if kw(i, "global") || kw(i, "local") {
        i += 1;
    }
    if kw(i, "temp") || kw(i, "temporary") {
        i += 1;
        if kw(i, "unlogged") {
            i += 1;
        }
        if kw(i, "table") {
            return Head::CreateTempTable;
        }
    }
    schema_change("CREATE", object_label(src, toks, 1, true))
}

/// `verb object`: a role or privilege change for role objects, else DDL.
fn schema_change(verb: &'static str, object: Option<&'static str>) -> Head {
    let label = Label { verb, object };
    if is_role_object(object) {
        Head::RoleDdl(label)
    } else {
        Head::Ddl(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::lex::scan;

    fn h(sql: &str) -> Head {
        let s = scan(sql);
        head(sql, &s.tokens)
    }

    #[test]
    fn heads() {
        assert_eq!(h("select 1"), Head::Query);
        assert_eq!(h("((SELECT 1)) UNION (SELECT 2)"), Head::Query);
        assert_eq!(h("(DROP TABLE t)"), Head::Unknown);
        assert_eq!(h("WITH x AS (SELECT 1) DELETE FROM t"), Head::Query);
        assert_eq!(h("COMMIT PREPARED 'x'"), Head::CommitPrepared);
        assert_eq!(h("create temp table x (a int)"), Head::CreateTempTable);
        assert_eq!(
            h("CREATE GLOBAL TEMPORARY TABLE x (a int)"),
            Head::CreateTempTable
        );
        assert_eq!(
            h("CREATE TEMP VIEW v AS SELECT 1"),
            Head::Ddl(Label {
                verb: "CREATE",
                object: Some("VIEW")
            })
        );
        assert_eq!(
            h("CREATE OR REPLACE FUNCTION f()"),
            Head::Ddl(Label {
                verb: "CREATE",
                object: Some("FUNCTION")
            })
        );
        assert_eq!(
            h("CREATE UNIQUE INDEX i ON t (a)").to_string_label(),
            "CREATE INDEX"
        );
        assert_eq!(
            h("CREATE USER MAPPING FOR u SERVER s").to_string_label(),
            "CREATE USER MAPPING"
        );
        assert_eq!(
            h("CREATE ROLE r"),
            Head::RoleDdl(Label {
                verb: "CREATE",
                object: Some("ROLE")
            })
        );
        assert_eq!(
            h("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO u").to_string_label(),
            "ALTER DEFAULT PRIVILEGES"
        );
        assert_eq!(
            h("alter system set x = 1").to_string_label(),
            "ALTER SYSTEM"
        );
        assert_eq!(h("DROP TABLE t").to_string_label(), "DROP TABLE");
        assert_eq!(h("\"select\" 1"), Head::Unknown);
        assert_eq!(h("START 1"), Head::Unknown);
    }

    impl Head {
        fn to_string_label(self) -> String {
            match self {
                Head::Ddl(l) | Head::RoleDdl(l) => l.to_string(),
                other => format!("{other:?}"),
            }
        }
    }
}
