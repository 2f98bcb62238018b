//! Table-driven corpus for the runtime statement policy (PRODUCT.md §5,
//! issue 3): every statement in `tests/corpus/*.sql`, plus a few generated
//! ones (very long, very deeply nested, control bytes, invalid UTF-8), is
//! classified with `rolegate::policy::classify` and checked against its
//! expected verdict. All mismatches are collected and reported together.
//!
//! # Corpus format
//!
//! ```text
//! -- expect: allow                          # optional note
//! SELECT 1
//!
//! -- expect: refuse ddl                     # exactly this class
//! DROP TABLE t
//!
//! -- expect: refuse ddl|maintenance         # any of these classes
//! REINDEX TABLE t
//!
//! -- expect: refuse any                     # any refusal class
//! CREATE TABLE x (a int); GRANT ALL ON x TO PUBLIC
//!
//! -- expect: allow
//! -- switches: allow_truncate allow_call=proc_a,proc_b
//! TRUNCATE t
//!
//! -- expect-hex: refuse invalid_utf8        # body is hex, whitespace ignored
//! 73656c65637420ff
//! ```
//!
//! * A header line starts with `-- expect:` (or `-- expect-hex:`); the note
//!   is everything after the first `#`.
//! * `-- switches:` lines may directly follow a header; switches are separated
//!   by whitespace: `allow_temp_tables`, `allow_truncate`,
//!   `allow_maintenance`, `allow_call=name[,name...]`.
//! * The statement is every following line up to the next header or section
//!   marker (a line starting with `-- ===`), joined with `\n`, with trailing
//!   newlines stripped. It is passed to the classifier byte for byte, so
//!   comments and blank lines inside it are part of the statement.
//! * Lines before the first header must be blank or `--` comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use rolegate::policy::{self, Switches, Verdict, VerdictCache};

/// The refusal classes of the policy, as `Class::as_str` names them.
fn refusal_classes() -> Vec<&'static str> {
    policy::Class::REFUSED.iter().map(|c| c.as_str()).collect()
}

/// Entries longer than this need not be cache hits on the second lookup (a
/// bounded cache may reasonably decline to keep huge statements); their
/// cached verdict must still equal the fresh one.
const CACHE_HIT_REQUIRED_UP_TO: usize = 16 * 1024;

const MIN_ENTRIES: usize = 400;
const MIN_EVASION_REFUSALS: usize = 150;
const EVASIONS_FILE: &str = "evasions.sql";
const GENERATED: &str = "<generated>";

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Allow,
    /// Any of these classes; empty means any refusal class.
    Refuse(Vec<&'static str>),
}

impl Expect {
    fn matches(&self, v: &Verdict) -> bool {
        match self {
            Expect::Allow => v.allowed,
            Expect::Refuse(classes) => {
                !v.allowed && (classes.is_empty() || classes.contains(&v.class.as_str()))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Expect::Allow => "allow".to_string(),
            Expect::Refuse(c) if c.is_empty() => "refuse any".to_string(),
            Expect::Refuse(c) => format!("refuse {}", c.join("|")),
        }
    }
}

struct Entry {
    file: String,
    line: usize,
    expect: Expect,
    switches: Switches,
    switches_text: String,
    note: String,
    sql: Vec<u8>,
}

impl Entry {
    fn origin(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

// ------------------------------------------------------------------ parsing

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load_corpus() -> Vec<Entry> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|d| d.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{name}: not UTF-8 ({e}); use `-- expect-hex:`"));
                continue;
            }
        };
        match parse_file(&name, &text) {
            Ok(mut e) => entries.append(&mut e),
            Err(mut e) => errors.append(&mut e),
        }
    }
    assert!(
        errors.is_empty(),
        "malformed corpus:\n  {}",
        errors.join("\n  ")
    );
    entries
}

struct Pending {
    line: usize,
    hex: bool,
    expect: Expect,
    note: String,
    switches: Switches,
    switches_text: Vec<String>,
    body: Vec<String>,
}

fn parse_file(file: &str, text: &str) -> Result<Vec<Entry>, Vec<String>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut cur: Option<Pending> = None;
    for (idx, line) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let header = line
            .strip_prefix("-- expect:")
            .map(|r| (false, r))
            .or_else(|| line.strip_prefix("-- expect-hex:").map(|r| (true, r)));
        if let Some((hex, rest)) = header {
            finish(file, cur.take(), &mut entries, &mut errors);
            match parse_header(rest) {
                Ok((expect, note)) => {
                    cur = Some(Pending {
                        line: lineno,
                        hex,
                        expect,
                        note,
                        switches: Switches::default(),
                        switches_text: Vec::new(),
                        body: Vec::new(),
                    })
                }
                Err(e) => errors.push(format!("{file}:{lineno}: {e}")),
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("-- switches:") {
            match cur.as_mut() {
                Some(p) if p.body.is_empty() => {
                    if let Err(e) = parse_switches(rest, &mut p.switches) {
                        errors.push(format!("{file}:{lineno}: {e}"));
                    }
                    p.switches_text.push(rest.trim().to_string());
                }
                _ => errors.push(format!(
                    "{file}:{lineno}: `-- switches:` must directly follow an expect header"
                )),
            }
            continue;
        }
        if line.starts_with("-- ===") {
            finish(file, cur.take(), &mut entries, &mut errors);
            continue;
        }
        match cur.as_mut() {
            Some(p) => p.body.push(line.to_string()),
            None => {
                if !(line.trim().is_empty() || line.starts_with("--")) {
                    errors.push(format!(
                        "{file}:{lineno}: statement text before the first `-- expect:` header"
                    ));
                }
            }
        }
    }
    finish(file, cur.take(), &mut entries, &mut errors);
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

fn finish(file: &str, p: Option<Pending>, entries: &mut Vec<Entry>, errors: &mut Vec<String>) {
    let Some(p) = p else { return };
    let mut text = p.body.join("\n");
    while text.ends_with('\n') {
        text.pop();
    }
    let sql = if p.hex {
        match decode_hex(&text) {
            Ok(b) => b,
            Err(e) => {
                errors.push(format!("{file}:{}: {e}", p.line));
                return;
            }
        }
    } else {
        text.into_bytes()
    };
    if sql.is_empty() {
        errors.push(format!("{file}:{}: entry has no statement text", p.line));
        return;
    }
    entries.push(Entry {
        file: file.to_string(),
        line: p.line,
        expect: p.expect,
        switches: p.switches,
        switches_text: p.switches_text.join(" "),
        note: p.note,
        sql,
    });
}

fn parse_header(rest: &str) -> Result<(Expect, String), String> {
    let (spec, note) = match rest.find('#') {
        Some(i) => (&rest[..i], rest[i + 1..].trim().to_string()),
        None => (rest, String::new()),
    };
    let words: Vec<&str> = spec.split_whitespace().collect();
    let expect = match words.as_slice() {
        ["allow"] => Expect::Allow,
        ["refuse", "any"] => Expect::Refuse(Vec::new()),
        ["refuse", classes] => {
            let mut v = Vec::new();
            for c in classes.split('|') {
                match refusal_classes().into_iter().find(|k| *k == c) {
                    Some(k) => v.push(k),
                    None => return Err(format!("unknown refusal class `{c}`")),
                }
            }
            Expect::Refuse(v)
        }
        _ => {
            return Err(format!(
                "bad expectation `{}` (want `allow`, `refuse <class>[|<class>...]` or `refuse any`)",
                spec.trim()
            ));
        }
    };
    Ok((expect, note))
}

fn parse_switches(rest: &str, s: &mut Switches) -> Result<(), String> {
    for word in rest.split_whitespace() {
        match word {
            "allow_temp_tables" => s.allow_temp_tables = true,
            "allow_truncate" => s.allow_truncate = true,
            "allow_maintenance" => s.allow_maintenance = true,
            _ => match word.strip_prefix("allow_call=") {
                Some(list) if !list.is_empty() => {
                    s.allow_call.extend(list.split(',').map(str::to_string))
                }
                _ => return Err(format!("unknown switch `{word}`")),
            },
        }
    }
    Ok(())
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".to_string());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| "non-ASCII in hex body".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("bad hex byte `{s}`"))
        })
        .collect()
}

// ------------------------------------------------------- generated entries

fn generated_entries() -> Vec<Entry> {
    fn gen_entry(n: usize, expect: Expect, note: &str, sql: Vec<u8>) -> Entry {
        Entry {
            file: GENERATED.to_string(),
            line: n,
            expect,
            switches: Switches::default(),
            switches_text: String::new(),
            note: note.to_string(),
            sql,
        }
    }
    let refuse = |c: &[&'static str]| Expect::Refuse(c.to_vec());
    let nest =
        |depth: usize, inner: &str| format!("{}{inner}{}", "(".repeat(depth), ")".repeat(depth));
    const BIG: usize = 200 * 1024;

    let mut cases: Vec<(Expect, &str, Vec<u8>)> = Vec::new();

    // Very long statements.
    // A flat ~200 KB IN list of constants (PostgreSQL caps target lists at
    // 1664 entries, IN lists are unbounded).
    let mut long_where = String::from("SELECT id FROM users WHERE id IN (1");
    let mut i = 2;
    while long_where.len() < BIG {
        let _ = write!(long_where, ", {i}");
        i += 1;
    }
    long_where.push(')');
    let mut long_in = String::from("SELECT id, email FROM users WHERE id IN ($1");
    for i in 2..=30_000 {
        let _ = write!(long_in, ", ${i}");
    }
    long_in.push(')');
    cases.push((
        Expect::Allow,
        "ORM-style IN list with 30000 parameters (~200 KB)",
        long_in.into_bytes(),
    ));
    cases.push((
        refuse(&["dangerous_function", "unparseable"]),
        "200 KB WHERE clause with pg_read_file at the very end",
        format!("{long_where} OR name = pg_read_file('/etc/passwd')").into_bytes(),
    ));
    cases.push((
        refuse(&["rls_toggle", "unparseable"]),
        "200 KB WHERE clause with set_config(row_security) at the very end",
        format!("{long_where} OR name = set_config('row_security', 'off', false)").into_bytes(),
    ));
    cases.push((
        refuse(&["ddl", "unparseable"]),
        "20000 harmless statements, then DROP TABLE",
        format!("{}DROP TABLE users", "SELECT 1;".repeat(20_000)).into_bytes(),
    ));
    cases.push((
        Expect::Allow,
        "a 200 KB string literal full of statement separators is one string",
        format!(
            "SELECT '{}'",
            "x'; DROP TABLE users; --"
                .replace('\'', "''")
                .repeat(BIG / 24)
        )
        .into_bytes(),
    ));
    cases.push((
        refuse(&["ddl"]),
        "a 200 KB block comment, then DROP TABLE",
        format!("/* {} */ DROP TABLE users", "pad ".repeat(BIG / 4)).into_bytes(),
    ));
    cases.push((
        Expect::Allow,
        "a 200 KB block comment hiding a DROP TABLE",
        format!(
            "SELECT 1 /* {} DROP TABLE users; */",
            "pad ".repeat(BIG / 4)
        )
        .into_bytes(),
    ));

    // Deeply nested statements (PostgreSQL 15 accepts 1000 and more nested
    // parentheses; sqlparser's recursion limit is far lower).
    cases.push((
        Expect::Allow,
        "1000 nested parentheses around a constant (lexer path)",
        format!("SELECT {}", nest(1000, "1")).into_bytes(),
    ));
    cases.push((
        refuse(&["dangerous_function", "unparseable"]),
        "1000 nested parentheses around pg_read_file",
        format!("SELECT {}", nest(1000, "pg_read_file('/etc/passwd')")).into_bytes(),
    ));
    cases.push((
        refuse(&["rls_toggle", "unparseable"]),
        "1000 nested parentheses around set_config(row_security)",
        format!(
            "SELECT {}",
            nest(1000, "set_config('row_security', 'off', false)")
        )
        .into_bytes(),
    ));
    cases.push((
        refuse(&["rls_toggle", "unparseable"]),
        "500 nested coalesce() calls around set_config(row_security)",
        format!(
            "SELECT {}set_config('row_security', 'off', false){}",
            "coalesce(".repeat(500),
            ")".repeat(500)
        )
        .into_bytes(),
    ));
    cases.push((
        refuse(&["dangerous_function", "unparseable"]),
        "300 nested derived tables around pg_ls_dir",
        format!(
            "SELECT * FROM {}(SELECT pg_ls_dir('.') AS d) s{}",
            "(SELECT * FROM ".repeat(300),
            ") s".repeat(300)
        )
        .into_bytes(),
    ));
    cases.push((
        refuse(&["ddl", "unparseable"]),
        "1000 nested parentheses, then a second statement",
        format!("SELECT {}; DROP TABLE users", nest(1000, "1")).into_bytes(),
    ));
    cases.push((
        refuse(&["ddl", "unparseable"]),
        "500-deep nested block comment, closed, then DROP",
        format!(
            "{}{} DROP TABLE users",
            "/* ".repeat(500),
            "*/ ".repeat(500)
        )
        .into_bytes(),
    ));
    cases.push((
        Expect::Allow,
        "500-deep nested block comment hiding a DROP (closed only at the end)",
        format!(
            "SELECT 1 {}DROP TABLE users; {}",
            "/* ".repeat(500),
            "*/ ".repeat(500)
        )
        .into_bytes(),
    ));

    // Control bytes PostgreSQL 15 treats as whitespace or line ends.
    cases.push((
        refuse(&["ddl"]),
        "a line comment ends at a bare CR (PostgreSQL: non_newline is [^\\n\\r])",
        b"SELECT 1; -- comment\rDROP TABLE users".to_vec(),
    ));
    cases.push((
        refuse(&["ddl"]),
        "a line comment ends at CR before the separator",
        b"SELECT 1 -- comment\r; DROP TABLE users".to_vec(),
    ));
    cases.push((
        refuse(&["rls_toggle"]),
        "CR-terminated line comment before SET row_security",
        b"SELECT 1; -- \rSET row_security = off".to_vec(),
    ));
    cases.push((
        refuse(&["ddl"]),
        "form feed is whitespace",
        b"SELECT 1;\x0cDROP\x0cTABLE\x0cusers".to_vec(),
    ));
    cases.push((
        refuse(&["ddl"]),
        "CRLF line ends",
        b"SELECT 1;\r\nDROP TABLE users\r\n".to_vec(),
    ));
    cases.push((
        Expect::Allow,
        "CRLF line ends in an allowed statement",
        b"SELECT id\r\nFROM users\r\nWHERE id = $1\r\n".to_vec(),
    ));
    cases.push((
        refuse(&[]),
        "vertical tab is not whitespace in PostgreSQL 15: syntax error; fail closed",
        b"SELECT 1;\x0bDROP TABLE users".to_vec(),
    ));

    // Invalid UTF-8 is refused, never repaired.
    cases.push((
        refuse(&["invalid_utf8"]),
        "lone 0xFF in a string",
        b"SELECT '\xff'".to_vec(),
    ));
    cases.push((
        refuse(&["invalid_utf8"]),
        "multibyte lead byte swallowing a quote (the GBK/BIG5 trick, in UTF8)",
        b"SELECT '\xe5'; DROP TABLE users; --'".to_vec(),
    ));
    cases.push((
        refuse(&["invalid_utf8"]),
        "overlong encoding of '/' inside a comment",
        b"SELECT 1 /* \xc0\xaf */".to_vec(),
    ));
    cases.push((
        refuse(&["invalid_utf8"]),
        "UTF-8 encoded surrogate half",
        b"SELECT '\xed\xa0\x80'".to_vec(),
    ));
    cases.push((
        refuse(&["invalid_utf8"]),
        "truncated multibyte sequence at the end",
        b"SELECT 'abc\xe2\x82".to_vec(),
    ));
    cases.push((
        refuse(&["invalid_utf8", "ddl"]),
        "invalid byte in an otherwise refused statement",
        b"DROP TABLE \xfeusers".to_vec(),
    ));
    cases.push((
        refuse(&["invalid_utf8"]),
        "invalid byte in an otherwise allowed statement",
        b"SELECT id FROM users WHERE name = 'caf\xe9'".to_vec(),
    ));

    cases
        .into_iter()
        .enumerate()
        .map(|(i, (expect, note, sql))| gen_entry(i + 1, expect, note, sql))
        .collect()
}

// ------------------------------------------------------------ literal scan

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The contents of the string literals in `sql` (standard, `E''`, `U&''`,
/// dollar-quoted), read the way PostgreSQL 15's lexer reads them with
/// `standard_conforming_strings = on`. Good enough for a leak check.
fn string_literals(sql: &[u8]) -> Vec<String> {
    let b = sql;
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < n && b[i] != b'\n' && b[i] != b'\r' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < n {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'"' {
            i += 1;
            while i < n {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        } else if c == b'\'' {
            let (content, next) = read_quoted(b, i + 1, false);
            out.push(content);
            i = next;
        } else if c == b'$'
            && b.get(i + 1)
                .is_some_and(|&d| d == b'$' || is_ident_start(d))
        {
            let mut j = i + 1;
            while j < n && b[j] != b'$' && is_ident_cont(b[j]) {
                j += 1;
            }
            if j < n && b[j] == b'$' {
                let tag = &b[i..=j];
                let body_start = j + 1;
                let end = b[body_start..]
                    .windows(tag.len())
                    .position(|w| w == tag)
                    .map(|p| body_start + p);
                let body_end = end.unwrap_or(n);
                out.push(String::from_utf8_lossy(&b[body_start..body_end]).into_owned());
                i = end.map_or(n, |e| e + tag.len());
            } else {
                i = j;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < n && is_ident_cont(b[i]) {
                i += 1;
            }
            if i - start == 1 && (c == b'e' || c == b'E') && b.get(i) == Some(&b'\'') {
                let (content, next) = read_quoted(b, i + 1, true);
                out.push(content);
                i = next;
            }
        } else if c.is_ascii_digit() {
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Reads a quoted literal body starting after the opening quote; returns its
/// content and the index after the closing quote.
fn read_quoted(b: &[u8], mut i: usize, backslash_escapes: bool) -> (String, usize) {
    let mut content = Vec::new();
    while i < b.len() {
        match b[i] {
            b'\\' if backslash_escapes && i + 1 < b.len() => {
                content.extend_from_slice(&b[i..i + 2]);
                i += 2;
            }
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                content.push(b'\'');
                i += 2;
            }
            b'\'' => return (String::from_utf8_lossy(&content).into_owned(), i + 1),
            other => {
                content.push(other);
                i += 1;
            }
        }
    }
    (String::from_utf8_lossy(&content).into_owned(), i)
}

/// Literals worth checking for: long enough to be data, and not shaped like a
/// setting or object name (a reason may legitimately name `row_security`).
fn is_sensitive_literal(lit: &str) -> bool {
    lit.chars().count() >= 4
        && !lit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

// ------------------------------------------------------------------ checks

/// Whether `class` is one a switch turns from refused to allowed, and that
/// switch is on (an allowed verdict may keep naming such a class).
fn switched_on(class: &str, s: &Switches) -> bool {
    match class {
        "temp_table" => s.allow_temp_tables,
        "truncate" => s.allow_truncate,
        "maintenance" => s.allow_maintenance,
        "call" => !s.allow_call.is_empty(),
        _ => false,
    }
}

fn same_verdict(a: &Verdict, b: &Verdict) -> bool {
    a.allowed == b.allowed
        && a.class.as_str() == b.class.as_str()
        && a.reason == b.reason
        && format!("{:?}", a.path) == format!("{:?}", b.path)
        && a.statements == b.statements
}

fn show_verdict(v: &Verdict) -> String {
    format!(
        "{} (class {}, path {:?}, statements {}, reason {:?})",
        if v.allowed { "allow" } else { "refuse" },
        v.class.as_str(),
        v.path,
        v.statements,
        v.reason
    )
}

fn excerpt(sql: &[u8]) -> String {
    const MAX: usize = 240;
    let text = String::from_utf8_lossy(sql);
    let mut s: String = text.chars().take(MAX).collect();
    if text.chars().count() > MAX {
        let _ = write!(s, "… ({} bytes)", sql.len());
    }
    format!("{s:?}")
}

fn report(e: &Entry, problem: &str, details: &str) -> String {
    let mut s = format!("{}  {problem}\n", e.origin());
    if !details.is_empty() {
        let _ = writeln!(s, "    {details}");
    }
    if !e.switches_text.is_empty() {
        let _ = writeln!(s, "    switches: {}", e.switches_text);
    }
    if !e.note.is_empty() {
        let _ = writeln!(s, "    note: {}", e.note);
    }
    let _ = write!(s, "    sql: {}", excerpt(&e.sql));
    s
}

fn check_structure(entries: &[Entry]) {
    let from_files: Vec<&Entry> = entries.iter().filter(|e| e.file != GENERATED).collect();
    let evasion_refusals = from_files
        .iter()
        .filter(|e| e.file == EVASIONS_FILE && matches!(e.expect, Expect::Refuse(_)))
        .count();
    let mut per_file: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in entries {
        let c = per_file.entry(e.file.as_str()).or_default();
        match e.expect {
            Expect::Allow => c.0 += 1,
            Expect::Refuse(_) => c.1 += 1,
        }
    }
    println!("policy corpus:");
    for (file, (allow, refuse)) in &per_file {
        println!(
            "  {file:<22} {:>4} entries ({allow} allow, {refuse} refuse)",
            allow + refuse
        );
    }
    assert!(
        from_files.len() >= MIN_ENTRIES,
        "the corpus files hold {} entries, want at least {MIN_ENTRIES}",
        from_files.len()
    );
    assert!(
        evasion_refusals >= MIN_EVASION_REFUSALS,
        "{EVASIONS_FILE} holds {evasion_refusals} refusal entries, want at least {MIN_EVASION_REFUSALS}"
    );

    // Every refusal class is expected somewhere, on its own.
    let named: BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| match &e.expect {
            Expect::Refuse(c) if c.len() == 1 => Some(c[0]),
            _ => None,
        })
        .collect();
    let missing: Vec<&str> = refusal_classes()
        .into_iter()
        .filter(|c| !named.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "no entry expects exactly these classes: {missing:?}"
    );

    // Each switch is tested both ways: refused without it, allowed with it.
    type SwitchOn = fn(&Switches) -> bool;
    let switches: [(&str, &str, SwitchOn); 4] = [
        ("allow_temp_tables", "temp_table", |s| s.allow_temp_tables),
        ("allow_truncate", "truncate", |s| s.allow_truncate),
        ("allow_maintenance", "maintenance", |s| s.allow_maintenance),
        ("allow_call", "call", |s| !s.allow_call.is_empty()),
    ];
    for (name, class, on) in switches {
        let allowed_with = entries
            .iter()
            .any(|e| on(&e.switches) && e.expect == Expect::Allow);
        let refused_without = entries
            .iter()
            .any(|e| !on(&e.switches) && matches!(&e.expect, Expect::Refuse(c) if c == &[class]));
        assert!(
            allowed_with && refused_without,
            "switch {name} must be tested both ways (allowed with it: {allowed_with}, \
             refused as {class} without it: {refused_without})"
        );
    }
}

#[test]
fn corpus_is_well_formed() {
    let mut entries = load_corpus();
    entries.extend(generated_entries());
    check_structure(&entries);
}

#[test]
fn corpus_verdicts_match_and_cache_agrees() {
    let mut entries = load_corpus();
    entries.extend(generated_entries());

    let mut failures: Vec<String> = Vec::new();
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    let mut fresh: Vec<Verdict> = Vec::with_capacity(entries.len());

    for e in &entries {
        let v = policy::classify(&e.sql, &e.switches);
        *paths.entry(format!("{:?}", v.path)).or_default() += 1;

        if !e.expect.matches(&v) {
            failures.push(report(
                e,
                &format!("expected {}, got {}", e.expect.describe(), show_verdict(&v)),
                "",
            ));
        }
        let refusal_class = refusal_classes().contains(&v.class.as_str());
        if !v.allowed && !refusal_class {
            failures.push(report(
                e,
                "verdict is inconsistent: refused with a non-refusal class",
                &show_verdict(&v),
            ));
        }
        if v.allowed && refusal_class && !switched_on(v.class.as_str(), &e.switches) {
            failures.push(report(
                e,
                "verdict is inconsistent: allowed with a refusal class whose switch is off",
                &show_verdict(&v),
            ));
        }
        if !v.allowed && v.reason.trim().is_empty() {
            failures.push(report(e, "refusal without a reason", &show_verdict(&v)));
        }
        for lit in string_literals(&e.sql) {
            if is_sensitive_literal(&lit) && v.reason.contains(lit.as_str()) {
                failures.push(report(
                    e,
                    "the reason repeats a string literal from the statement",
                    &format!("literal {lit:?} in reason {:?}", v.reason),
                ));
            }
        }
        fresh.push(v);
    }

    // One cache shared by every entry, so statements that differ only in
    // literals or switches meet in it; two full passes, the second must hit.
    let cache = VerdictCache::new(10_000);
    for pass in 1..=2 {
        for (e, want) in entries.iter().zip(&fresh) {
            let (cached, hit) = cache.classify(&e.sql, &e.switches);
            let cached: &Verdict = &cached;
            if !same_verdict(cached, want) {
                failures.push(report(
                    e,
                    &format!(
                        "cache pass {pass} (hit: {hit}) disagrees with a fresh classification"
                    ),
                    &format!(
                        "cached {} vs fresh {}",
                        show_verdict(cached),
                        show_verdict(want)
                    ),
                ));
            }
            if pass == 2 && !hit && e.sql.len() <= CACHE_HIT_REQUIRED_UP_TO {
                failures.push(report(e, "second cache lookup was not a hit", ""));
            }
        }
    }

    let path_summary: Vec<String> = paths.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    println!(
        "policy corpus: {} entries classified; decided by {}",
        entries.len(),
        path_summary.join(", ")
    );
    if !failures.is_empty() {
        panic!(
            "{} policy corpus mismatch(es) out of {} entries:\n\n{}\n",
            failures.len(),
            entries.len(),
            failures.join("\n\n")
        );
    }
}

#[test]
fn literal_scanner_reads_like_postgres() {
    let lits = |s: &str| string_literals(s.as_bytes());
    assert_eq!(
        lits("select 'a''b', E'c\\'d', $x$e'f$x$"),
        ["a'b", "c\\'d", "e'f"]
    );
    assert_eq!(lits("select 'a\\'; drop table t; --'"), ["a\\"]);
    assert_eq!(
        lits("select 1 as a$b$; drop table t; --$b$"),
        Vec::<String>::new()
    );
    assert_eq!(lits("/* /* ' */ ' */ select \"it's\", 'x'"), ["x"]);
    assert_eq!(lits("select $1, U&'d\\0061t'"), ["d\\0061t"]);
    assert!(is_sensitive_literal("/etc/passwd"));
    assert!(!is_sensitive_literal("row_security"));
    assert!(!is_sensitive_literal("off"));
}
