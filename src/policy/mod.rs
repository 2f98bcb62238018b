//! Runtime statement policy: what a runtime (application) session may run
//! (PRODUCT.md §5).
//!
//! An allow-list classifier for the text of a simple Query (one or several
//! statements), a Parse, or a `PREPARE` body, plus the StartupMessage check
//! and a shared verdict cache. It is the only place that decides; the
//! session code asks [`VerdictCache::classify`] (or [`classify`]) and acts on
//! the [`Verdict`].
//!
//! # How a text is read
//!
//! 1. **Bytes.** Text that is not UTF-8 is refused (`invalid_utf8`), never
//!    repaired; a NUL byte is refused (the server would read only up to it).
//! 2. **The server's tokens** (`lex`). A scanner that follows PostgreSQL's
//!    `scan.l` with `standard_conforming_strings = on` (which the proxy pins)
//!    splits the text into tokens: standard strings without backslash
//!    escapes, `E''` strings with them, SQL string continuation across
//!    newlines, dollar quotes, quoted identifiers, nested `/* */` and `--`
//!    comments. Every `;` token ends a statement; a text is allowed only if
//!    every statement in it is. Anything the scanner cannot read
//!    (unterminated string or comment) is refused.
//! 3. **Parser path** (`parsed`, [`Path::Parser`]). sqlparser's
//!    `PostgreSqlDialect` reads each statement — but only after its own
//!    tokens were checked to coincide with the server's tokens span by span.
//!    The AST gives the statement type (which must agree with the leading
//!    keyword) and the nested statements (`EXPLAIN`, `PREPARE`, `DECLARE`,
//!    CTEs, `COPY (query)`, `CREATE TEMP TABLE … AS`).
//! 4. **Lexer path** (`fallback`, [`Path::Lexer`]). When sqlparser cannot
//!    read a statement (about 3–4% of real DML, more of the rarer session
//!    statements), a conservative reading of the server's tokens decides: the
//!    leading keyword must name an allowed family and the rest must have that
//!    family's harmless shape, with extra guards (no DDL keyword anywhere…).
//!    It only ever allows what is certainly harmless.
//! 5. **Guards** (`guards`), on the server's tokens of every statement
//!    either path would allow: denied functions in call position anywhere
//!    (the deny-list is [`DENIED_FUNCTIONS`]), `set_config` only with a
//!    constant ordinary setting name, no `SELECT … INTO`, no writes to
//!    `pg_settings`, no `U&"…"` identifiers. They are token-level on purpose:
//!    no AST position can hide a call from them.
//! 6. **Switches** ([`Switches`]) turn `temp_table`, `truncate`,
//!    `maintenance` and `call` (per procedure) from refused to allowed.
//!
//! `SET`/`RESET`/`SHOW` are read from the server's tokens on both paths
//! (`settings`): `row_security`, `role`, `session_authorization` may not be
//! changed, `client_encoding` only "changed" to UTF8 and
//! `standard_conforming_strings` only to `on` (no-ops, which drivers send).
//!
//! # Files
//!
//! * `mod.rs` — public types, [`classify`], [`fingerprint`], the verdict
//!   assembly (statements + switches → [`Verdict`]).
//! * `lex.rs` — the PostgreSQL-exact scanner, statement splitting, the
//!   fingerprint rendering.
//! * `heads.rs` — leading-keyword dispatch and literal-free labels.
//! * `parsed.rs` — the parser path (token alignment, AST classification).
//! * `fallback.rs` — the lexer path.
//! * `guards.rs` — the token-level guards.
//! * `settings.rs` — protected settings and the `SET`/`RESET`/`SHOW` reader.
//! * `denylist.rs` — [`DENIED_FUNCTIONS`].
//! * `startup.rs` — [`check_startup`].
//! * `cache.rs` — [`VerdictCache`].
//!
//! Reasons never contain text from the statement: they are built from
//! static labels only (`DROP TABLE`, `set_config('row_security')`,
//! `function pg_read_file`).

mod cache;
mod denylist;
mod fallback;
mod guards;
mod heads;
mod lex;
mod parsed;
mod settings;
mod shape;
mod startup;

#[cfg(test)]
mod tests;

pub use cache::VerdictCache;
pub use denylist::DENIED_FUNCTIONS;
pub use startup::check_startup;

/// What a statement is, for the verdict and as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    // Allowed families.
    Read,
    Write,
    Transaction,
    Session,
    Prepared,
    Cursor,
    ListenNotify,
    Copy,
    Lock,
    Discard,
    Empty,
    // Refused families (some allowed by a switch).
    Ddl,
    RlsToggle,
    RoleChange,
    DangerousFunction,
    CopyFile,
    EncodingChange,
    TempTable,
    Truncate,
    Maintenance,
    Call,
    Unparseable,
    InvalidUtf8,
}

impl Class {
    /// The snake_case metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Transaction => "transaction",
            Class::Session => "session",
            Class::Prepared => "prepared",
            Class::Cursor => "cursor",
            Class::ListenNotify => "listen_notify",
            Class::Copy => "copy",
            Class::Lock => "lock",
            Class::Discard => "discard",
            Class::Empty => "empty",
            Class::Ddl => "ddl",
            Class::RlsToggle => "rls_toggle",
            Class::RoleChange => "role_change",
            Class::DangerousFunction => "dangerous_function",
            Class::CopyFile => "copy_file",
            Class::EncodingChange => "encoding_change",
            Class::TempTable => "temp_table",
            Class::Truncate => "truncate",
            Class::Maintenance => "maintenance",
            Class::Call => "call",
            Class::Unparseable => "unparseable",
            Class::InvalidUtf8 => "invalid_utf8",
        }
    }

    /// A hint naming the way out, for the ErrorResponse of a refusal
    /// (empty for allowed families).
    pub fn hint(&self) -> &'static str {
        match self {
            Class::Ddl => {
                "Schema changes run on a migration session (a migrator token), not on the runtime role."
            }
            Class::RlsToggle => {
                "Row-level security stays on for runtime sessions; work that must bypass it belongs on a migration session."
            }
            Class::RoleChange => "Connect as the identity you need instead of switching roles.",
            Class::DangerousFunction => {
                "This function is on rolegate's deny-list (README, Runtime policy)."
            }
            Class::CopyFile => {
                "Use COPY … FROM STDIN or TO STDOUT and move the data through the client."
            }
            Class::EncodingChange => {
                "rolegate pins client_encoding = UTF8 and standard_conforming_strings = on; convert on the client."
            }
            Class::TempTable => "Set [policy] allow_temp_tables = true to allow temporary tables.",
            Class::Truncate => "Set [policy] allow_truncate = true, or use DELETE.",
            Class::Maintenance => {
                "Set [policy] allow_maintenance = true, or run maintenance from a migration session."
            }
            Class::Call => "Add the procedure to [policy] allow_call.",
            Class::Unparseable => {
                "rolegate could not read this statement and refuses what it cannot read; rewrite it or report it."
            }
            Class::InvalidUtf8 => "Send statement text in UTF-8.",
            _ => "",
        }
    }
}

/// Which reading decided (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// sqlparser read every statement (also used for the empty query).
    Parser,
    /// The lexer-level fallback decided at least one statement, or the text
    /// could not be tokenized at all (not UTF-8, unterminated string…).
    Lexer,
}

impl Path {
    pub fn as_str(&self) -> &'static str {
        match self {
            Path::Parser => "parser",
            Path::Lexer => "lexer",
        }
    }
}

/// The decision for one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// For a refusal, the refused statement's class; for an allowed text, the
    /// class of its first statement that is not transaction control (or of
    /// its first statement).
    pub class: Class,
    /// Human text: "allowed", or why it was refused (prefixed with
    /// "statement N of M: " in a multi-statement text). Never contains
    /// literals or identifiers from the statement.
    pub reason: String,
    pub path: Path,
    /// Number of non-empty statements in the text.
    pub statements: usize,
}

/// The `[policy]` switches (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Switches {
    pub allow_temp_tables: bool,
    pub allow_truncate: bool,
    pub allow_maintenance: bool,
    /// Procedures `CALL` may run, written as SQL names (`proc`,
    /// `app.proc`, `"MixedCase"`): unquoted parts fold to lower case as in
    /// PostgreSQL. A call matches an entry only with the same qualification:
    /// `CALL app.p()` needs `app.p`, `CALL p()` needs `p`.
    pub allow_call: Vec<String>,
}

/// Classify the full text of a simple Query (possibly several statements;
/// allowed only if every one is) or of one Parse / `PREPARE` body.
pub fn classify(sql: &[u8], switches: &Switches) -> Verdict {
    decide(&analyze(sql), switches)
}

/// A literal-free fingerprint of the text for logs: string and numeric
/// constants become `?` (parameters `$n` stay), keywords and unquoted
/// identifiers are lower-cased, whitespace and comments are normalised.
/// At most about 4 KiB; text the scanner cannot read ends in `?…`.
pub fn fingerprint(sql: &[u8]) -> String {
    match std::str::from_utf8(sql) {
        Ok(s) => lex::fingerprint(s),
        // Lossy decoding only for the log line; classification refuses such
        // text. Constants still become `?`.
        Err(_) => lex::fingerprint(&String::from_utf8_lossy(sql)),
    }
}

/// A switch a switchable statement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    TempTables,
    Truncate,
    Maintenance,
    /// The procedure's name parts, folded as PostgreSQL folds them.
    Call(Vec<String>),
}

/// One statement's decision, before switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub class: Class,
    /// Allowed (when `need` is `Some`, allowed only if that switch is on).
    pub allowed: bool,
    pub need: Option<Need>,
    /// Why it is (or, for a switchable one, may be) refused.
    pub reason: String,
}

impl Decision {
    pub(crate) fn allow(class: Class) -> Self {
        Decision {
            class,
            allowed: true,
            need: None,
            reason: String::new(),
        }
    }

    pub(crate) fn refuse(class: Class, reason: impl Into<String>) -> Self {
        Decision {
            class,
            allowed: false,
            need: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn switchable(class: Class, need: Need, reason: impl Into<String>) -> Self {
        Decision {
            class,
            allowed: true,
            need: Some(need),
            reason: reason.into(),
        }
    }
}

/// A statement whose verdict depends on switches, or the first refused one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    index: usize,
    class: Class,
    path: Path,
    need: Option<Need>,
    reason: String,
}

/// The switch-independent reading of a text: what the cache stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Analysis {
    statements: usize,
    /// Class and path reported when everything is allowed.
    summary: Class,
    path: Path,
    /// Switch-dependent statements in order, ending with the first
    /// statement refused regardless of switches (if any).
    items: Vec<Item>,
}

impl Analysis {
    fn whole(class: Class, reason: &str, path: Path) -> Self {
        Analysis {
            statements: 0,
            summary: class,
            path,
            items: vec![Item {
                index: 0,
                class,
                path,
                need: None,
                reason: reason.to_owned(),
            }],
        }
    }

    /// Rough heap size, for the cache's byte budget.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|i| std::mem::size_of::<Item>() + i.reason.len())
            .sum()
    }
}

/// Read a text into an [`Analysis`] (no switches involved).
pub(crate) fn analyze(sql: &[u8]) -> Analysis {
    let Ok(src) = std::str::from_utf8(sql) else {
        return Analysis::whole(
            Class::InvalidUtf8,
            "statement text is not valid UTF-8",
            Path::Lexer,
        );
    };
    // A NUL anywhere (even inside a quoted identifier, where the scanner
    // would carry it) is text PostgreSQL never receives: refuse it whole.
    if sql.contains(&0) {
        return Analysis::whole(
            Class::Unparseable,
            "the text contains a NUL byte",
            Path::Lexer,
        );
    }
    let scan = lex::scan(src);
    if let Some(err) = scan.error {
        let reason = match err {
            lex::LexError::Unterminated => {
                "the text has an unterminated string, quoted identifier or comment"
            }
            lex::LexError::EmptyIdent => "the text has a zero-length quoted identifier",
            lex::LexError::Nul => "the text contains a NUL byte",
            lex::LexError::TrailingJunk => "the text has a number running into a word",
        };
        return Analysis::whole(Class::Unparseable, reason, Path::Lexer);
    }
    let pieces = lex::split(&scan.tokens);
    let mut analysis = Analysis {
        statements: pieces.len(),
        summary: Class::Empty,
        path: Path::Parser,
        items: Vec::new(),
    };
    let mut summary: Option<Class> = None;
    for (index, range) in pieces.iter().enumerate() {
        let toks = &scan.tokens[range.clone()];
        let begin = if range.start == 0 {
            0
        } else {
            scan.tokens[range.start - 1].end
        };
        let end = scan.tokens.get(range.end).map_or(src.len(), |t| t.start);
        let head = heads::head(src, toks);
        let (mut d, path) = match parsed::classify(&src[begin..end], begin, toks, src, head) {
            Some(d) => (d, Path::Parser),
            None => (fallback::classify(src, toks, head), Path::Lexer),
        };
        // Guards decide for everything a path would allow; for a statement
        // refused as unreadable they may name a more specific class (a
        // Unicode-escaped `pg_read_file` is a dangerous function).
        if (d.allowed || d.class == Class::Unparseable)
            && let Some(refusal) = guards::check(src, toks)
        {
            d = refusal;
        }
        if path == Path::Lexer {
            analysis.path = Path::Lexer;
        }
        if d.allowed
            && summary.is_none_or(|c| c == Class::Transaction)
            && d.class != Class::Transaction
        {
            summary = Some(d.class);
        }
        if summary.is_none() {
            summary = Some(d.class);
        }
        if !d.allowed || d.need.is_some() {
            let hard = !d.allowed;
            analysis.items.push(Item {
                index,
                class: d.class,
                path,
                need: d.need,
                reason: d.reason,
            });
            if hard {
                break;
            }
        }
    }
    analysis.summary = summary.unwrap_or(Class::Empty);
    analysis
}

/// Fold a configured procedure name (`app.proc`, `"Mixed"`) into name parts
/// the way PostgreSQL reads an SQL name.
fn config_name_parts(entry: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = entry.trim().chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                parts.push(if was_quoted {
                    std::mem::take(&mut cur)
                } else {
                    std::mem::take(&mut cur).trim().to_ascii_lowercase()
                });
                was_quoted = false;
            }
            _ => cur.push(c),
        }
    }
    parts.push(if was_quoted {
        cur
    } else {
        cur.trim().to_ascii_lowercase()
    });
    parts
}

fn satisfied(need: &Need, switches: &Switches) -> bool {
    match need {
        Need::TempTables => switches.allow_temp_tables,
        Need::Truncate => switches.allow_truncate,
        Need::Maintenance => switches.allow_maintenance,
        Need::Call(parts) => switches
            .allow_call
            .iter()
            .any(|entry| config_name_parts(entry) == *parts),
    }
}

/// Apply switches to an analysis.
pub(crate) fn decide(a: &Analysis, switches: &Switches) -> Verdict {
    for item in &a.items {
        let refused = match &item.need {
            None => true,
            Some(need) => !satisfied(need, switches),
        };
        if refused {
            let reason = if a.statements > 1 {
                format!(
                    "statement {} of {}: {}",
                    item.index + 1,
                    a.statements,
                    item.reason
                )
            } else {
                item.reason.clone()
            };
            return Verdict {
                allowed: false,
                class: item.class,
                reason,
                path: item.path,
                statements: a.statements,
            };
        }
    }
    Verdict {
        allowed: true,
        class: a.summary,
        reason: "allowed".to_owned(),
        path: a.path,
        statements: a.statements,
    }
}
