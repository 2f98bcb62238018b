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
//! 3. **Lexer path** first (step 4); only a statement it refuses is read
//!    again by the **parser path** (`parsed`, [`Path::Parser`]): sqlparser's
//!    `PostgreSqlDialect` reads each statement — but only after its own
//!    tokens were checked to coincide with the server's tokens span by span.
//!    The AST gives the statement type (which must agree with the leading
//!    keyword) and the nested statements (`EXPLAIN`, `PREPARE`, `DECLARE`,
//!    CTEs, `COPY (query)`, `CREATE TEMP TABLE … AS`).
//! 4. **Lexer path** (`fallback`, [`Path::Lexer`]), tried first for every
//!    statement (and deciding alone when sqlparser cannot read one, about
//!    3–4% of real DML): a conservative reading of the server's tokens: the
//!    leading keyword must name an allowed family and the rest must have that
//!    family's harmless shape, with extra guards (no DDL keyword anywhere…).
//!    It only ever allows what is certainly harmless.
//! 5. **Guards** (`guards`), on the server's tokens of every statement
//!    either path would allow: denied functions in call position anywhere
//!    (the deny-list is [`DENIED_FUNCTIONS`]), `set_config` only with a
//!    constant ordinary setting name, no `SELECT … INTO`, no writes to
//!    `pg_settings`, no `U&"…"` identifiers. They are token-level on purpose:
//!    no AST position can hide a call from them.
//! 6. **PostgreSQL's reading** (`grammar`). The same bytes are parsed by
//!    PostgreSQL's own grammar (libpg_query) and decided from the tree:
//!    statement types on an allow-list, every *name* anywhere checked
//!    against the deny-list (attribute notation `t.f` is `f(t)`),
//!    `IntoClause`, settings. Both readings must allow every statement and
//!    agree on how many there are (`analyze`, `cross_check`).
//! 7. **Switches** ([`Switches`]) turn `temp_table`, `truncate`,
//!    `maintenance` and `call` (per procedure) from refused to allowed.
//!
//! Texts of [`LARGE_TEXT`] bytes or more are read statement by statement
//! (memory bounded by the largest statement). [`check_other_readings`] is
//! the extra reading for a message pipelined behind unfinished work.
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
//! * `grammar.rs` — PostgreSQL's reading (libpg_query parse tree walk).
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
mod grammar;
mod guards;
mod heads;
mod lex;
mod parsed;
mod pooling;
mod settings;
mod shape;
mod startup;

#[cfg(test)]
mod tests;

pub use cache::VerdictCache;
pub use denylist::DENIED_FUNCTIONS;
pub use pooling::{deallocated, needs_one_backend};
pub use shape::{Literal, literal_spans};
pub use startup::check_startup;

use std::ops::Range;

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
    /// The refused families (the `reason` label of refusal metrics).
    pub const REFUSED: [Class; 12] = [
        Class::Ddl,
        Class::RlsToggle,
        Class::RoleChange,
        Class::DangerousFunction,
        Class::CopyFile,
        Class::EncodingChange,
        Class::TempTable,
        Class::Truncate,
        Class::Maintenance,
        Class::Call,
        Class::Unparseable,
        Class::InvalidUtf8,
    ];

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
}

/// Which reading decided (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// A parser decided: sqlparser allowed a statement the token reading
    /// would refuse, or PostgreSQL's grammar refused one (also used for
    /// the empty query).
    Parser,
    /// rolegate's token reading decided (the usual case for allowed SQL),
    /// or the text could not be tokenized at all (not UTF-8, unterminated
    /// string…).
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

/// The verdict cache's key for `sql`: the text with the constants folded
/// that cannot change its verdict (see [`literal_spans`]), or `None` when
/// nothing folds. Exposed for the differential test, which checks that a
/// text and its shape always get the same verdict.
pub fn literal_shape(sql: &[u8]) -> Option<Vec<u8>> {
    shape::shape(sql)
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

/// One statement of a text as `rolegate explain` shows it: its literal-free
/// fingerprint and its verdict read on its own.
#[derive(Debug, Clone)]
pub struct Explained {
    pub fingerprint: String,
    pub verdict: Verdict,
}

/// The proxy's decision for a whole text (what a runtime session's `Query`
/// gets) and, when the text splits into statements, each statement's own
/// reading. The same code path as the proxy, without the cache.
pub fn explain(sql: &[u8], switches: &Switches) -> (Verdict, Vec<Explained>) {
    let whole = classify(sql, switches);
    let mut each = Vec::new();
    if let Ok(src) = std::str::from_utf8(sql) {
        let mut from = 0;
        while from < src.len() {
            let Ok(end) = lex::statement_end(src, from) else {
                break;
            };
            let text = &src[from..end];
            from = end + 1;
            if !text.trim().is_empty() {
                each.push(Explained {
                    fingerprint: fingerprint(text.as_bytes()),
                    verdict: classify(text.as_bytes(), switches),
                });
            }
        }
    }
    (whole, each)
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
    /// A statement is refused whatever the switches say.
    fn hard_refusal(&self) -> bool {
        self.items.iter().any(|i| i.need.is_none())
    }

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

/// Texts at least this long are read one statement at a time (statement
/// boundaries from PostgreSQL's own scanner), so the memory a reading needs
/// stays proportional to one statement, not to the whole text. Callers on
/// an async runtime classify them off the async workers
/// ([`is_large`]).
pub const LARGE_TEXT: usize = 256 * 1024;

/// How much of a large text one reading takes at a time.
const LARGE_CHUNK: usize = 4 * 1024;

/// True when classifying `sql` is slow enough to keep off async workers.
pub fn is_large(sql: &[u8]) -> bool {
    sql.len() >= LARGE_TEXT
}

/// Read a text into an [`Analysis`] (no switches involved): rolegate's
/// own reading, cross-checked against PostgreSQL's grammar.
pub(crate) fn analyze(sql: &[u8]) -> Analysis {
    let src = match readable(sql) {
        Ok(src) => src,
        Err(refusal) => return refusal,
    };
    if sql.len() >= LARGE_TEXT {
        return analyze_large(src);
    }
    analyze_text(src)
}

/// The text when it is UTF-8 without a NUL byte, else the refusal of the
/// whole text. A NUL anywhere (even inside a quoted identifier, where the
/// scanner would carry it) is text PostgreSQL never receives.
fn readable(sql: &[u8]) -> Result<&str, Analysis> {
    let Ok(src) = std::str::from_utf8(sql) else {
        return Err(Analysis::whole(
            Class::InvalidUtf8,
            "statement text is not valid UTF-8",
            Path::Lexer,
        ));
    };
    if sql.contains(&0) {
        return Err(Analysis::whole(
            Class::Unparseable,
            "the text contains a NUL byte",
            Path::Lexer,
        ));
    }
    Ok(src)
}

/// Both readings of a text that is valid UTF-8 without NUL.
fn analyze_text(src: &str) -> Analysis {
    let ours = read_ours(src.as_bytes());
    if ours.hard_refusal() {
        return ours;
    }
    match grammar::read(src, grammar::Reading::Standard) {
        Ok(theirs) => cross_check(ours, &theirs),
        Err(grammar::Rejected) => Analysis::whole(
            Class::Unparseable,
            "PostgreSQL's parser rejects the text",
            Path::Lexer,
        ),
    }
}

/// For a setting the server reports (ParameterStatus): the name of a pinned
/// setting whose reported value is not its pinned one. Compared as the
/// server compares: any spelling of UTF-8 (the server keeps `UNICODE` as
/// given) and any spelling of boolean on.
pub fn unpinned_report(name: &[u8], value: &[u8]) -> Option<&'static str> {
    let value = std::str::from_utf8(value).unwrap_or("\u{fffd}");
    match name {
        b"client_encoding" if !settings::is_utf8_name(value) => Some("client_encoding"),
        b"standard_conforming_strings" if !settings::is_on(value) => {
            Some("standard_conforming_strings")
        }
        _ => None,
    }
}

/// The extra check for a message pipelined behind work the server has not
/// finished: that work could have changed `standard_conforming_strings` or
/// `client_encoding` (through SQL the proxy cannot see, e.g. a function),
/// and the message would then be read differently. Only backslashes make
/// the readings differ (quotes, comment and dollar-quote delimiters mean
/// the same in every reading and every client encoding PostgreSQL
/// accepts), so a text without one needs nothing. Otherwise the
/// `standard_conforming_strings = off` reading must be harmless too, and a
/// backslash right after a non-ASCII byte (where a multi-byte client
/// encoding could swallow it) is refused.
pub fn check_other_readings(sql: &[u8]) -> Option<Verdict> {
    if !sql.contains(&b'\\') {
        return None;
    }
    let refuse = |reason: &str| Verdict {
        allowed: false,
        class: Class::EncodingChange,
        reason: reason.to_owned(),
        path: Path::Parser,
        statements: 0,
    };
    if sql.windows(2).any(|w| w[0] >= 0x80 && w[1] == b'\\') {
        return Some(refuse(
            "a backslash after a non-ASCII character reads differently under another client_encoding, and earlier pipelined statements are still running",
        ));
    }
    let src = std::str::from_utf8(sql).ok()?;
    match grammar::read(src, grammar::Reading::NoStandardStrings) {
        // Under that reading the server would reject the text outright.
        Err(grammar::Rejected) => None,
        Ok(statements) => statements.iter().find(|d| !d.allowed || d.need.is_some()).map(|_| {
            refuse(
                "the text reads as a refused statement with standard_conforming_strings = off, and earlier pipelined statements are still running",
            )
        }),
    }
}

/// A large text, in chunks of whole statements: rolegate's scanner finds
/// statement ends, and both readings read each chunk of about
/// [`LARGE_CHUNK`] bytes alone (a chunk PostgreSQL would split differently
/// fails the cross-check, one it would not end there fails its parse). The
/// memory a reading needs is bounded by the chunk (or the one statement
/// larger than it), not by the text.
fn analyze_large(src: &str) -> Analysis {
    let mut total = Analysis {
        statements: 0,
        summary: Class::Empty,
        path: Path::Parser,
        items: Vec::new(),
    };
    let mut from = 0;
    while from < src.len() {
        let mut end = from;
        let mut whole = false;
        while end - from < LARGE_CHUNK {
            match lex::statement_end(src, end) {
                Ok(e) if e >= src.len() => {
                    end = src.len();
                    whole = true;
                    break;
                }
                Ok(e) => end = e + 1,
                // The reading of the rest names the precise error.
                Err(_) => {
                    end = src.len();
                    whole = true;
                    break;
                }
            }
        }
        let chunk = &src[from..end];
        from = end;
        if chunk.trim().is_empty() {
            continue;
        }
        let one = analyze_text(chunk);
        if total.statements == 0 || total.summary == Class::Transaction {
            total.summary = one.summary;
        }
        if one.path == Path::Lexer {
            total.path = Path::Lexer;
        }
        for mut item in one.items {
            item.index += total.statements;
            let hard = item.need.is_none();
            total.items.push(item);
            if hard {
                total.statements += one.statements.max(1);
                return total;
            }
        }
        total.statements += one.statements;
        if whole {
            break;
        }
    }
    total
}

/// Where rolegate's reading and PostgreSQL's meet: both must allow each
/// statement, a switch either names is needed, and they must agree on how
/// many statements there are.
fn cross_check(ours: Analysis, theirs: &[Decision]) -> Analysis {
    if theirs.len() != ours.statements {
        return Analysis::whole(
            Class::Unparseable,
            "rolegate's reading and PostgreSQL's disagree on where statements end",
            Path::Lexer,
        );
    }
    let mut items = Vec::new();
    let mut mine = ours.items.into_iter().peekable();
    for (index, g) in theirs.iter().enumerate() {
        let own = mine.next_if(|i| i.index == index);
        if !g.allowed {
            items.push(Item {
                index,
                class: g.class,
                path: Path::Parser,
                need: None,
                reason: g.reason.clone(),
            });
            break;
        }
        match (own, &g.need) {
            (Some(own), Some(need)) if own.need.as_ref() != Some(need) => {
                items.push(Item {
                    index,
                    class: Class::Unparseable,
                    path: Path::Parser,
                    need: None,
                    reason: "rolegate's reading and PostgreSQL's disagree on this statement"
                        .to_owned(),
                });
                break;
            }
            (Some(own), _) => items.push(own),
            (None, Some(need)) => items.push(Item {
                index,
                class: g.class,
                path: Path::Parser,
                need: Some(need.clone()),
                reason: g.reason.clone(),
            }),
            (None, None) => {}
        }
    }
    Analysis { items, ..ours }
}

/// rolegate's own reading of a text (see the module docs).
fn read_ours(sql: &[u8]) -> Analysis {
    let src = match readable(sql) {
        Ok(src) => src,
        Err(refusal) => return refusal,
    };
    let scan = lex::scan(src);
    if let Some(err) = scan.error {
        return Analysis::whole(Class::Unparseable, lex_refusal(err), Path::Lexer);
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
        let (d, path) = read_statement(src, &scan.tokens, range.clone());
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

/// The reason for refusing a text the scanner cannot read.
fn lex_refusal(err: lex::LexError) -> &'static str {
    match err {
        lex::LexError::Unterminated => {
            "the text has an unterminated string, quoted identifier or comment"
        }
        lex::LexError::EmptyIdent => "the text has a zero-length quoted identifier",
        lex::LexError::Nul => "the text contains a NUL byte",
        lex::LexError::TrailingJunk => "the text has a number running into a word",
    }
}

/// rolegate's reading of the statement `tokens[range]` of `src`: its
/// decision and the path that made it.
fn read_statement(src: &str, tokens: &[lex::Token], range: Range<usize>) -> (Decision, Path) {
    let toks = &tokens[range.clone()];
    let begin = if range.start == 0 {
        0
    } else {
        tokens[range.start - 1].end
    };
    let end = tokens.get(range.end).map_or(src.len(), |t| t.start);
    let head = heads::head(src, toks);
    // The token reading first: it is cheap and allows only plainly
    // harmless shapes. sqlparser reads only what it would refuse (it
    // may allow more, e.g. a statement whose shape the token reading
    // does not know), so ordinary SQL costs one scan here; PostgreSQL's
    // grammar reads every statement either way (`analyze_text`).
    let quick = fallback::classify(src, toks, head);
    let (mut d, path) = if quick.allowed {
        (quick, Path::Lexer)
    } else {
        match parsed::classify(&src[begin..end], begin, toks, src, head) {
            Some(d) => (d, Path::Parser),
            None => (quick, Path::Lexer),
        }
    };
    // Guards decide for everything a path would allow; for a statement
    // refused as unreadable they may name a more specific class (a
    // Unicode-escaped `pg_read_file` is a dangerous function).
    if (d.allowed || d.class == Class::Unparseable)
        && let Some(refusal) = guards::check(src, toks)
    {
        d = refusal;
    }
    (d, path)
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
