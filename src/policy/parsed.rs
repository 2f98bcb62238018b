//! The parser path: sqlparser (`PostgreSqlDialect`) reads the statement and
//! the classifier decides from its AST.
//!
//! sqlparser's reading is used only when it is provably the server's
//! reading at the token level: the statement is tokenized by sqlparser and
//! every significant token (word, quoted identifier, string of each flavour,
//! number, parameter, `(`, `)`, `,`, `;`, and each run of operator
//! characters) must have exactly the same source span and kind as in the
//! PostgreSQL-exact scan (`lex`). Where they differ — sqlparser reads
//! `U&"…"` as `U & "…"`, `$1$` as a dollar quote, `'a'`⏎`'b'` as two
//! strings, keyword lookalikes such as `ſelect` (which it upper-cases to
//! `SELECT`) — the statement goes to the lexer path instead. The AST then
//! decides the statement type, which must agree with the head keyword the
//! server dispatches on (`heads`), and the nested statements: CTE bodies,
//! `EXPLAIN` targets, `PREPARE` bodies, cursor queries, `COPY (query)`,
//! `CREATE TEMP TABLE … AS`. Functions, `set_config`, `INTO` and
//! `pg_settings` are left to the token guards, which see every token.
//!
//! Resource bounds: sqlparser builds left-deep trees for operator chains
//! (`1+1+…`, `UNION` chains, `::` casts) without counting them against its
//! recursion limit (50, which bounds everything else), and dropping a
//! 100 000-deep tree overflows the stack. Statements with more than
//! [`MAX_PARSER_TOKENS`] tokens therefore skip the parser (the lexer path
//! reads them in linear time), and the AST walk here is iterative.

use sqlparser::ast::{
    CopySource, CopyTarget, CreateTable, Declare, Function, ObjectNamePart, Query, SetExpr,
    Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token as SqlToken, TokenWithSpan, Tokenizer};

use super::fallback;
use super::heads::{self, Head};
use super::lex::{Kind, LineCol, StrKind, Token};
use super::{Class, Decision};

/// Statements with more tokens than this are read by the lexer path only.
/// At this size the deepest tree sqlparser can build is a few thousand
/// levels, which its own `Drop` handles on a 2 MiB thread stack.
pub(crate) const MAX_PARSER_TOKENS: usize = 4096;

/// One significant token for the alignment check: its kind and its span as
/// (line, column). `.`, operators and other punctuation all count as
/// [`Kind::Op`], and touching ones merge into one run (see [`push_merged`]).
type Run = (Kind, Pos, Pos);

type Pos = (u64, u64);

/// Try the parser path for one statement. `piece` is the statement's text
/// (between `;`s), starting at byte `offset` of the full text that `toks`
/// (absolute offsets) were scanned from. `None` means "the parser cannot
/// decide": tokens do not line up, parse error, or too large.
pub(crate) fn classify(
    piece: &str,
    offset: usize,
    toks: &[Token],
    full: &str,
    head: Head,
) -> Option<Decision> {
    if toks.len() > MAX_PARSER_TOKENS {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let sp = Tokenizer::new(&dialect, piece)
        .tokenize_with_location()
        .ok()?;
    if !aligned(piece, offset, toks, &sp) {
        return None;
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(sp);
    let stmt = parser.parse_statement().ok()?;
    if parser.peek_token().token != SqlToken::EOF {
        return None;
    }
    Some(top_level(&stmt, toks, full, head))
}

/// True when sqlparser's tokens have the same significant tokens, with the
/// same spans, as the PostgreSQL-exact scan.
fn aligned(piece: &str, offset: usize, toks: &[Token], sp: &[TokenWithSpan]) -> bool {
    let Some(mine) = our_runs(piece, offset, toks) else {
        return false;
    };
    their_runs(sp, mine.len()).is_some_and(|theirs| theirs == mine)
}

/// The PostgreSQL-exact scan's runs; `None` when it has a token sqlparser
/// has no twin for.
fn our_runs(piece: &str, offset: usize, toks: &[Token]) -> Option<Vec<Run>> {
    let mut runs = Vec::with_capacity(toks.len());
    let mut lc = LineCol::new(piece);
    for t in toks {
        let kind = match t.kind {
            // sqlparser has no U&"…" token: never aligned, always the lexer path.
            Kind::UnicodeIdent => return None,
            Kind::Dot | Kind::Op | Kind::Other => Kind::Op,
            kind => kind,
        };
        let start = lc.at(t.start - offset);
        let end = lc.at(t.end - offset);
        push_merged(&mut runs, kind, start, end);
    }
    Some(runs)
}

/// sqlparser's runs; `None` when it read a token PostgreSQL's scanner has
/// no twin for.
fn their_runs(sp: &[TokenWithSpan], capacity: usize) -> Option<Vec<Run>> {
    let mut runs = Vec::with_capacity(capacity);
    for t in sp {
        let Some(kind) = their_kind(&t.token).ok()? else {
            continue;
        };
        let start = (t.span.start.line, t.span.start.column);
        let end = (t.span.end.line, t.span.end.column);
        push_merged(&mut runs, kind, start, end);
    }
    Some(runs)
}

/// A sqlparser token that PostgreSQL's scanner has no twin for.
struct NoTwin;

/// The kind of one sqlparser token as a run, `None` for white space and
/// the end.
fn their_kind(token: &SqlToken) -> Result<Option<Kind>, NoTwin> {
    let kind = match token {
        SqlToken::Whitespace(_) | SqlToken::EOF => return Ok(None),
        SqlToken::Word(w) => match w.quote_style {
            // A non-ASCII word that sqlparser takes for a keyword (`ſelect`
            // upper-cases to SELECT) is an identifier to PostgreSQL: not
            // the same reading.
            None if w.keyword != Keyword::NoKeyword && !w.value.is_ascii() => return Err(NoTwin),
            None => Kind::Word,
            Some('"') => Kind::QuotedIdent,
            Some(_) => return Err(NoTwin),
        },
        SqlToken::SingleQuotedString(_) => Kind::Str(StrKind::Standard),
        SqlToken::EscapedStringLiteral(_) => Kind::Str(StrKind::Escape),
        SqlToken::NationalStringLiteral(_) => Kind::Str(StrKind::National),
        SqlToken::SingleQuotedByteStringLiteral(_) => Kind::Str(StrKind::Bit),
        SqlToken::HexStringLiteral(_) => Kind::Str(StrKind::Hex),
        SqlToken::UnicodeStringLiteral(_) => Kind::Str(StrKind::Unicode),
        SqlToken::DollarQuotedString(_) => Kind::Str(StrKind::Dollar),
        SqlToken::Number(_, _) => Kind::Number,
        SqlToken::Placeholder(p) if p.starts_with('$') => Kind::Param,
        SqlToken::LParen => Kind::LParen,
        SqlToken::RParen => Kind::RParen,
        SqlToken::Comma => Kind::Comma,
        SqlToken::SemiColon => Kind::Semicolon,
        // Any other string-like or payload token has no PostgreSQL twin.
        SqlToken::Placeholder(_)
        | SqlToken::DoubleQuotedString(_)
        | SqlToken::TripleSingleQuotedString(_)
        | SqlToken::TripleDoubleQuotedString(_)
        | SqlToken::DoubleQuotedByteStringLiteral(_)
        | SqlToken::TripleSingleQuotedByteStringLiteral(_)
        | SqlToken::TripleDoubleQuotedByteStringLiteral(_)
        | SqlToken::SingleQuotedRawStringLiteral(_)
        | SqlToken::DoubleQuotedRawStringLiteral(_)
        | SqlToken::TripleSingleQuotedRawStringLiteral(_)
        | SqlToken::TripleDoubleQuotedRawStringLiteral(_)
        | SqlToken::QuoteDelimitedStringLiteral(_)
        | SqlToken::NationalQuoteDelimitedStringLiteral(_)
        | SqlToken::CopyData { .. } => return Err(NoTwin),
        _ => Kind::Op,
    };
    Ok(Some(kind))
}

/// Append, merging touching operator tokens into one run: PostgreSQL and
/// sqlparser split operator characters differently, and the split does not
/// matter here; which bytes are operator characters does.
fn push_merged(v: &mut Vec<Run>, kind: Kind, start: Pos, end: Pos) {
    if kind == Kind::Op
        && let Some(last) = v.last_mut()
        && last.0 == Kind::Op
        && last.2 == start
    {
        last.2 = end;
        return;
    }
    v.push((kind, start, end));
}

/// Heads a statement type may have (the server's dispatch keyword).
fn head_agrees(stmt: &Statement, head: Head) -> bool {
    use Head as H;
    match stmt {
        Statement::Query(_) => head == H::Query,
        Statement::Insert(_) => matches!(head, H::Insert | H::Query),
        Statement::Update(_) => matches!(head, H::Update | H::Query),
        Statement::Delete(_) => matches!(head, H::Delete | H::Query),
        Statement::Merge(_) => matches!(head, H::Merge | H::Query),
        Statement::StartTransaction { .. } => matches!(head, H::Begin | H::Start),
        Statement::Commit { .. } => matches!(head, H::Commit | H::End),
        Statement::Rollback { .. } => matches!(head, H::Rollback | H::Abort),
        Statement::Savepoint { .. } => head == H::Savepoint,
        Statement::ReleaseSavepoint { .. } => head == H::Release,
        Statement::Set(_) => head == H::Set,
        Statement::Reset(_) => head == H::Reset,
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => head == H::Show,
        Statement::Prepare { .. } => head == H::Prepare,
        Statement::Execute { .. } => head == H::Execute,
        Statement::Deallocate { .. } => head == H::Deallocate,
        Statement::Declare { .. } => head == H::Declare,
        Statement::Fetch { .. } => matches!(head, H::Fetch | H::Move),
        Statement::Close { .. } => head == H::Close,
        Statement::LISTEN { .. } => head == H::Listen,
        Statement::NOTIFY { .. } => head == H::Notify,
        Statement::UNLISTEN { .. } => head == H::Unlisten,
        Statement::Discard { .. } => head == H::Discard,
        Statement::Lock(_) => head == H::Lock,
        Statement::Copy { .. } => head == H::Copy,
        Statement::Explain { .. } => head == H::Explain,
        Statement::Truncate(_) => head == H::Truncate,
        Statement::Analyze(_) => head == H::Analyze,
        Statement::Vacuum(_) => head == H::Vacuum,
        Statement::Call(_) => head == H::Call,
        Statement::CreateTable(ct) => ct.temporary && head == H::CreateTempTable,
        _ => false,
    }
}

fn top_level(stmt: &Statement, toks: &[Token], full: &str, head: Head) -> Decision {
    if matches!(head, Head::Ddl(_) | Head::RoleDdl(_) | Head::Unknown) {
        // Refused families are named by the head, identically on both paths.
        return fallback::head_refusal(head);
    }
    if !head_agrees(stmt, head) {
        return Decision::refuse(
            Class::Unparseable,
            "the statement's parse does not match its leading keyword",
        );
    }
    if let Some(refusal) = nested_head_disagrees(stmt, toks, full) {
        return refusal;
    }
    if let Some(refusal) = copy_end_disagrees(stmt, toks, full) {
        return refusal;
    }
    match stmt {
        // SET/RESET/SHOW: read from the exact tokens (see `settings`).
        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. } => super::settings::classify(full, toks),
        _ => nested(stmt, 0),
    }
}

/// The server reads a nested statement's kind from its own leading
/// keyword: sqlparser's nested AST must agree with it too, and a nested
/// statement of a refused family is refused as that family. The refusal,
/// or `None` when they agree (or nothing is nested).
fn nested_head_disagrees(stmt: &Statement, toks: &[Token], full: &str) -> Option<Decision> {
    let (body, inner): (Option<&[Token]>, Option<&Statement>) = match stmt {
        Statement::Explain { statement, .. } => {
            (fallback::explain_body(full, toks), Some(statement))
        }
        Statement::Prepare { statement, .. } => {
            (fallback::prepare_body(full, toks), Some(statement))
        }
        Statement::Declare { .. } => (fallback::declare_body(full, toks), None),
        Statement::Copy {
            source: CopySource::Query(_),
            ..
        } => (fallback::copy_query_body(full, toks), None),
        // A COPY sqlparser reads from a table that the server reads from a query.
        Statement::Copy { .. } if fallback::copy_query_body(full, toks).is_some() => {
            return Some(nested_mismatch());
        }
        _ => return None,
    };
    let Some(body) = body else {
        return Some(Decision::refuse(
            Class::Unparseable,
            "the nested statement could not be located",
        ));
    };
    let body_head = heads::head(full, body);
    if matches!(body_head, Head::Ddl(_) | Head::RoleDdl(_)) {
        return Some(fallback::head_refusal(body_head));
    }
    let agrees = match (stmt, inner) {
        (_, Some(inner)) => head_agrees(inner, body_head),
        (Statement::Declare { stmts, .. }, None) => {
            stmts.len() == 1 && fallback::QUERY_HEADS.contains(&body_head)
        }
        _ => fallback::PREPARABLE_HEADS.contains(&body_head),
    };
    (!agrees).then(nested_mismatch)
}

fn nested_mismatch() -> Decision {
    Decision::refuse(
        Class::Unparseable,
        "the parse of the nested statement does not match its leading keyword",
    )
}

/// COPY's direction and target as the server reads them must agree with
/// sqlparser's: a file or program is refused whatever the AST says. The
/// refusal, or `None` when they agree (or this is not COPY).
fn copy_end_disagrees(stmt: &Statement, toks: &[Token], full: &str) -> Option<Decision> {
    let Statement::Copy { to, target, .. } = stmt else {
        return None;
    };
    let ast_stream = is_std_stream(*to, target);
    match fallback::copy_end(full, toks) {
        Some(fallback::CopyEnd::FileOrProgram) => Some(fallback::copy_file()),
        Some(fallback::CopyEnd::Stream(_)) if ast_stream => None,
        _ => Some(Decision::refuse(
            Class::Unparseable,
            "the parse of COPY does not match its direction and target",
        )),
    }
}

/// Nested statements are at most this deep (`EXPLAIN` of a `PREPARE`…); the
/// parser's recursion limit bounds it anyway, this keeps the walk obviously
/// finite.
const MAX_NESTING: usize = 64;

/// Classify a statement from its AST (top level or nested).
fn nested(stmt: &Statement, depth: usize) -> Decision {
    if depth > MAX_NESTING {
        return Decision::refuse(Class::Unparseable, "statement nesting is too deep");
    }
    match stmt {
        Statement::Query(q) => query(q, depth),
        Statement::Insert(ins) => match &ins.source {
            Some(q) => write(query(q, depth)),
            None => Decision::allow(Class::Write),
        },
        Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_) => {
            Decision::allow(Class::Write)
        }
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Decision::allow(Class::Transaction),
        Statement::Prepare { statement, .. } => prepare(statement, depth),
        Statement::Execute { .. } | Statement::Deallocate { .. } => {
            Decision::allow(Class::Prepared)
        }
        Statement::Declare { stmts, .. } => declare(stmts, depth),
        Statement::Fetch { into: None, .. } | Statement::Close { .. } => {
            Decision::allow(Class::Cursor)
        }
        Statement::LISTEN { .. } | Statement::NOTIFY { .. } | Statement::UNLISTEN { .. } => {
            Decision::allow(Class::ListenNotify)
        }
        Statement::Discard { .. } => Decision::allow(Class::Discard),
        Statement::Lock(_) => Decision::allow(Class::Lock),
        Statement::Copy {
            source, to, target, ..
        } => copy(source, *to, target, depth),
        Statement::Explain { statement, .. } => explain(statement, depth),
        Statement::Truncate(_) => fallback::truncate(),
        Statement::Analyze(_) | Statement::Vacuum(_) => fallback::maintenance(),
        Statement::Call(f) => call(f),
        Statement::CreateTable(ct) if ct.temporary => create_temp_table(ct, depth),
        Statement::CreateTable(_) => Decision::refuse(
            Class::Ddl,
            "DDL is not allowed on a runtime session (CREATE TABLE)",
        ),
        _ => Decision::refuse(
            Class::Unparseable,
            "the classifier does not allow this kind of statement",
        ),
    }
}

/// A query, `INSERT`, `UPDATE`, `DELETE` or `MERGE`.
fn is_dml(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_)
    )
}

/// `PREPARE name AS statement`: only DML can be prepared.
fn prepare(statement: &Statement, depth: usize) -> Decision {
    let body = nested(statement, depth + 1);
    if !is_dml(statement) {
        return Decision::refuse(
            Class::Unparseable,
            "PREPARE of a statement that cannot be prepared",
        );
    }
    relabel(body, Class::Prepared)
}

/// `DECLARE … CURSOR FOR query`: every cursor query must be allowed.
fn declare(stmts: &[Declare], depth: usize) -> Decision {
    for d in stmts {
        match &d.for_query {
            Some(q) => {
                let r = query(q, depth + 1);
                if !r.allowed {
                    return r;
                }
            }
            None => {
                return Decision::refuse(Class::Unparseable, "DECLARE without a cursor query");
            }
        }
    }
    Decision::allow(Class::Cursor)
}

/// `COPY … FROM STDIN` / `TO STDOUT` only; `COPY (query)` reads the query.
fn copy(source: &CopySource, to: bool, target: &CopyTarget, depth: usize) -> Decision {
    if !is_std_stream(to, target) {
        return match target {
            CopyTarget::File { .. } | CopyTarget::Program { .. } => fallback::copy_file(),
            _ => Decision::refuse(Class::Unparseable, "COPY with an unexpected direction"),
        };
    }
    match source {
        CopySource::Query(q) => relabel(query(q, depth + 1), Class::Copy),
        CopySource::Table { .. } => Decision::allow(Class::Copy),
    }
}

/// `TO STDOUT` or `FROM STDIN`.
fn is_std_stream(to: bool, target: &CopyTarget) -> bool {
    matches!(
        (to, target),
        (true, CopyTarget::Stdout) | (false, CopyTarget::Stdin)
    )
}

/// `EXPLAIN statement`: only of what may run on its own.
fn explain(statement: &Statement, depth: usize) -> Decision {
    let body = nested(statement, depth + 1);
    let explainable = is_dml(statement)
        || matches!(
            statement,
            Statement::Execute { .. } | Statement::Declare { .. } | Statement::CreateTable(_)
        );
    if explainable || !body.allowed {
        body
    } else {
        Decision::refuse(
            Class::Unparseable,
            "EXPLAIN of a statement that cannot be explained",
        )
    }
}

/// `CALL name(…)`: switchable per procedure, by its name parts folded as
/// PostgreSQL folds them.
fn call(f: &Function) -> Decision {
    let mut parts = Vec::with_capacity(f.name.0.len());
    for p in &f.name.0 {
        match p {
            ObjectNamePart::Identifier(id) => parts.push(match id.quote_style {
                None => id.value.to_ascii_lowercase(),
                Some(_) => id.value.clone(),
            }),
            ObjectNamePart::Function(_) => {
                return Decision::refuse(Class::Unparseable, "CALL of a computed name");
            }
        }
    }
    fallback::call_switch(parts)
}

/// `CREATE TEMP TABLE … [AS query]`: switchable; the query must be allowed.
fn create_temp_table(ct: &CreateTable, depth: usize) -> Decision {
    if let Some(q) = &ct.query {
        let r = query(q, depth + 1);
        if !r.allowed {
            return r;
        }
    }
    fallback::temp_table()
}

fn relabel(d: Decision, class: Class) -> Decision {
    if d.allowed && d.need.is_none() {
        Decision::allow(class)
    } else {
        d
    }
}

fn write(d: Decision) -> Decision {
    relabel(d, Class::Write)
}

/// Walk a query's set expressions and CTEs (iteratively: `UNION` chains are
/// left-deep) for `SELECT … INTO` and data-modifying parts.
fn query(q: &Query, depth: usize) -> Decision {
    enum Node<'a> {
        Query(&'a Query),
        Set(&'a SetExpr),
    }
    let mut stack = vec![Node::Query(q)];
    let mut wrote = false;
    while let Some(node) = stack.pop() {
        match node {
            Node::Query(q) => {
                if let Some(with) = &q.with {
                    stack.extend(with.cte_tables.iter().map(|c| Node::Query(&c.query)));
                }
                stack.push(Node::Set(&q.body));
            }
            Node::Set(s) => match s {
                SetExpr::Select(sel) => {
                    if sel.into.is_some() {
                        return Decision::refuse(
                            Class::Ddl,
                            "DDL is not allowed on a runtime session (SELECT INTO creates a table)",
                        );
                    }
                }
                SetExpr::Query(q) => stack.push(Node::Query(q)),
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push(Node::Set(left));
                    stack.push(Node::Set(right));
                }
                SetExpr::Values(_) | SetExpr::Table(_) => {}
                SetExpr::Insert(st)
                | SetExpr::Update(st)
                | SetExpr::Delete(st)
                | SetExpr::Merge(st) => {
                    let d = nested(st, depth + 1);
                    if !d.allowed || d.need.is_some() {
                        return d;
                    }
                    wrote = true;
                }
            },
        }
    }
    Decision::allow(if wrote { Class::Write } else { Class::Read })
}
