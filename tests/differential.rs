//! Differential test of the runtime policy against PostgreSQL's own parser.
//!
//! Every statement of `tests/corpus/*.sql` plus a deterministic set of
//! generated mutations (at least [`MIN_GENERATED`], from a fixed seed) is
//! classified by `rolegate::policy::classify` with the default switches and,
//! in one batch, by the oracle `tests/differential/oracle.py`, which parses
//! the text with pglast (libpg_query, PostgreSQL's grammar) and walks the
//! whole JSON parse tree. The oracle's rule (see the module docs of
//! `oracle.py`) says which texts rolegate MUST refuse:
//!
//! 1. an `IntoClause` anywhere but as the target of `CREATE TABLE AS`;
//! 2. a denied name (`DENIED_FUNCTIONS`, plus the views `pg_file_settings`,
//!    `pg_hba_file_rules`, `pg_ident_file_mappings`, `pg_config`) as a called
//!    function, in a `ColumnRef` (attribute notation), in an `A_Indirection`
//!    or as a relation; `set_config` with a non-constant or protected name;
//! 3. `SET`/`RESET` of a protected setting;
//! 4. a top-level statement type outside the allow-list.
//!
//! Outcomes per text:
//!
//! * **unsafe**: the oracle says refuse, rolegate allows. The test fails and
//!   prints them grouped by the oracle's reason (counts, then up to
//!   [`MAX_UNSAFE_SHOWN`] examples).
//! * **false refusal**: the oracle finds the text harmless, rolegate refuses.
//!   Reported (count, a sample of [`FALSE_REFUSAL_SAMPLE`]); never a failure.
//! * **unparseable**: pglast rejects the text, so would the server; no
//!   requirement, only counted.
//!
//! The last line printed is
//! `differential: N texts, U unsafe, F false refusals, P unparseable by pglast`.
//!
//! # Running
//!
//! Needs Python 3 with pglast (`python3 -m pip install -r
//! tests/differential/requirements.txt`; `.ci/run` installs it). Without it
//! the test fails and says so — it is never skipped. `ROLEGATE_PYTHON`
//! names another interpreter. `cargo test --test differential -- --nocapture`
//! shows the report also when the test passes.
//!
//! The generator also runs a self-check of the oracle (texts whose oracle
//! verdict is known), so a change in pglast's JSON cannot silently turn the
//! oracle into one that finds everything harmless.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rolegate::policy::{self, DENIED_FUNCTIONS, Switches};
use serde_json::{Value, json};

/// Generated texts (unique, excluding the corpus) at least.
const MIN_GENERATED: usize = 100_000;
/// Seed of the generator; change it to explore, keep it fixed in CI.
const SEED: u64 = 0x005e_ed0f_d1ff;
const MAX_UNSAFE_SHOWN: usize = 30;
const FALSE_REFUSAL_SAMPLE: usize = 20;
const INSTALL_HINT: &str = "install the oracle's parser: \
    `PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -r tests/differential/requirements.txt` \
    (pglast ships PostgreSQL's parser as a binary wheel); set ROLEGATE_PYTHON to use another interpreter";

// ------------------------------------------------------------------ inputs

struct Text {
    origin: String,
    sql: String,
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The statements of `tests/corpus/*.sql`, split as `tests/policy_corpus.rs`
/// splits them (a `-- expect:`/`-- expect-hex:` header starts an entry, a
/// `-- ===` line ends one, `-- switches:` lines right after a header are not
/// part of the body, trailing newlines are dropped). Returns the UTF-8
/// texts and the number of entries that are not UTF-8 (not sent).
fn corpus() -> (Vec<Text>, usize) {
    let dir = manifest().join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|d| d.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut not_utf8 = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        // (line, hex, body lines, body started)
        let mut cur: Option<(usize, bool, Vec<&str>)> = None;
        let mut finish = |cur: Option<(usize, bool, Vec<&str>)>| {
            let Some((line, hex, body)) = cur else { return };
            let mut s = body.join("\n");
            while s.ends_with('\n') {
                s.pop();
            }
            let bytes = if hex {
                let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                digits
                    .chunks(2)
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
                    .collect()
            } else {
                s.into_bytes()
            };
            if bytes.is_empty() {
                return;
            }
            match String::from_utf8(bytes) {
                Ok(sql) => out.push(Text {
                    origin: format!("{name}:{line}"),
                    sql,
                }),
                Err(_) => not_utf8 += 1,
            }
        };
        for (idx, line) in text.split('\n').enumerate() {
            if let Some(hex) = line
                .strip_prefix("-- expect:")
                .map(|_| false)
                .or_else(|| line.strip_prefix("-- expect-hex:").map(|_| true))
            {
                finish(cur.take());
                cur = Some((idx + 1, hex, Vec::new()));
            } else if line.starts_with("-- switches:")
                && cur.as_ref().is_some_and(|c| c.2.is_empty())
            {
            } else if line.starts_with("-- ===") {
                finish(cur.take());
            } else if let Some(c) = cur.as_mut() {
                c.2.push(line);
            }
        }
        finish(cur.take());
    }
    (out, not_utf8)
}

// --------------------------------------------------------------- generator

/// SplitMix64: tiny, deterministic on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// An expression to place somewhere, with the FROM item it needs (attribute
/// notation `x.f` needs a relation `x`).
struct Core {
    expr: String,
    from: Option<String>,
}

/// Spellings PostgreSQL resolves to the same lower-case identifier `name`
/// (plus, rarely, a quoted upper-case one, which names something else).
fn spell_ident(r: &mut Rng, name: &str) -> String {
    match r.below(14) {
        0..=4 => name.to_string(),
        5 => name.to_ascii_uppercase(),
        6 => {
            let mut s: Vec<char> = name.chars().collect();
            for (i, c) in s.iter_mut().enumerate() {
                if i % 2 == 0 {
                    *c = c.to_ascii_uppercase();
                }
            }
            s.into_iter().collect()
        }
        7 | 8 => format!("\"{name}\""),
        9 => {
            // U&"\0070g_read_file": first letter escaped.
            let mut cs = name.chars();
            let first = cs.next().unwrap();
            format!("U&\"\\{:04x}{}\"", first as u32, cs.as_str())
        }
        10 => format!("U&\"{}\"", name.replace('_', "\\005f")),
        11 => {
            let mut cs = name.chars();
            let first = cs.next().unwrap();
            format!("u&\"!{:04x}{}\" UESCAPE '!'", first as u32, cs.as_str())
        }
        12 => format!("U&\"\\+{:06x}{}\"", name.as_bytes()[0], &name[1..]),
        _ => format!("\"{}\"", name.to_ascii_uppercase()),
    }
}

/// A string constant with value `v` (no quotes or backslashes in `v`).
fn spell_str(r: &mut Rng, v: &str) -> String {
    match r.below(12) {
        0..=4 => format!("'{v}'"),
        5 => format!("E'{v}'"),
        6 => format!("$${v}$$"),
        7 => format!("$q${v}$q$"),
        8 if v.len() > 2 => {
            let mid = v.len() / 2;
            format!("'{}'\n'{}'", &v[..mid], &v[mid..])
        }
        9 if v.len() > 2 => {
            let mid = v.len() / 2;
            format!("'{}' -- continued\n  '{}'", &v[..mid], &v[mid..])
        }
        10 => format!("U&'{v}'"),
        11 => format!("E'{}'", v.replace('/', "\\x2f").replace('_', "\\137")),
        _ => format!("'{v}'"),
    }
}

/// Denied functions with arguments (`S` marks a text argument).
const DENIED_CALLS: &[(&str, &str)] = &[
    ("pg_read_file", "S:/etc/passwd"),
    ("pg_read_file", "S:/etc/passwd, 0, 100"),
    ("pg_read_binary_file", "S:/etc/shadow"),
    ("pg_ls_dir", "S:."),
    ("pg_stat_file", "S:postgresql.conf"),
    ("pg_ls_waldir", ""),
    ("pg_ls_logdir", ""),
    ("lo_import", "S:/etc/passwd"),
    ("lo_export", "1, '/tmp/x'"),
    ("dblink", "S:host=h, 'select 1'"),
    ("dblink_exec", "S:host=h, 'drop table t'"),
    ("pg_terminate_backend", "42"),
    ("pg_cancel_backend", "42"),
    ("pg_reload_conf", ""),
    ("query_to_xml", "S:select 1, true, true, ''"),
    ("pg_logical_emit_message", "true, 'p', 'x'"),
    ("pg_file_write", "S:x, 'y', false"),
    ("pg_current_logfile", ""),
    ("get_raw_page", "S:users, 0"),
    ("crosstab", "S:select 1"),
    ("pg_stat_reset", ""),
    ("pg_show_all_file_settings", ""),
    ("pg_hba_file_rules", ""),
    ("pg_promote", ""),
    ("pg_switch_wal", ""),
    ("ts_stat", "S:select v from t"),
];

/// One-text-argument denied functions usable with attribute notation.
const DENIED_UNARY: &[(&str, &str)] = &[
    ("pg_read_file", "/etc/passwd"),
    ("pg_read_file", "/etc/hostname"),
    ("pg_read_binary_file", "/etc/shadow"),
    ("pg_ls_dir", "."),
    ("pg_stat_file", "postgresql.conf"),
    ("lo_import", "/etc/passwd"),
    ("query_to_xml", "select 1"),
    ("crosstab", "select 1"),
    ("dblink", "host=h"),
    ("pg_file_unlink", "x"),
    ("ts_stat", "select 1"),
];

const ALIASES: &[&str] = &[
    "x",
    "t",
    "f",
    "pg_catalog",
    "public",
    "information_schema",
    "\"pg_catalog\"",
    "users",
    "PG_CATALOG",
    "app",
];

fn args_of(r: &mut Rng, spec: &str) -> String {
    match spec.strip_prefix("S:") {
        Some(rest) => {
            let (first, tail) = match rest.find(", ") {
                Some(i) if !rest.starts_with("host") || rest[i..].starts_with(", '") => {
                    (&rest[..i], &rest[i..])
                }
                _ => (rest, ""),
            };
            format!("{}{tail}", spell_str(r, first))
        }
        None => spec.to_string(),
    }
}

fn schema_prefix(r: &mut Rng) -> &'static str {
    r.pick(&[
        "",
        "",
        "",
        "pg_catalog.",
        "\"pg_catalog\".",
        "PG_CATALOG.",
        "public.",
        "myschema.",
        "pg_catalog . ",
    ])
}

fn dangerous_core(r: &mut Rng) -> Core {
    match r.below(20) {
        // Plain calls, schema-qualified or not, any spelling.
        0..=5 => {
            let (name, spec) = DENIED_CALLS[r.below(DENIED_CALLS.len())];
            let prefix = schema_prefix(r);
            Core {
                expr: format!("{prefix}{}({})", spell_ident(r, name), args_of(r, spec)),
                from: None,
            }
        }
        // Attribute notation on a relation: x.f FROM btrim('…') AS x.
        6..=9 => {
            let (name, arg) = DENIED_UNARY[r.below(DENIED_UNARY.len())];
            let alias = r.pick(ALIASES);
            let s = spell_str(r, arg);
            let from = match r.below(6) {
                0 | 1 => format!("btrim({s}) AS {alias}"),
                2 => format!("lower({s}) {alias}"),
                3 => format!("CAST({s} AS text) AS {alias}"),
                4 => format!("(SELECT {s}::text AS v) AS {alias}"),
                _ => format!("unnest(ARRAY[{s}]) AS {alias}"),
            };
            let col = match r.below(4) {
                0 => format!("{alias}.*, {alias}.{}", spell_ident(r, name)),
                _ => format!("{alias}.{}", spell_ident(r, name)),
            };
            Core {
                expr: col,
                from: Some(from),
            }
        }
        // (expr).f
        10..=12 => {
            let (name, arg) = DENIED_UNARY[r.below(DENIED_UNARY.len())];
            let s = spell_str(r, arg);
            let inner = match r.below(5) {
                0 => format!("{s}::text"),
                1 => format!("btrim({s})"),
                2 => format!("CAST({s} AS text)"),
                3 => format!("(SELECT {s}::text)"),
                _ => format!("ROW({s}::text)"),
            };
            Core {
                expr: format!("({inner}).{}", spell_ident(r, name)),
                from: None,
            }
        }
        // set_config with a protected or non-constant setting name.
        13..=16 => {
            let name = match r.below(16) {
                0..=2 => spell_str(r, "row_security"),
                3 => "'ROW_SECURITY'".to_string(),
                4 => "'Row_Security'".to_string(),
                5 => "E'row\\x5fsecurity'".to_string(),
                6 => "U&'row\\005fsecurity'".to_string(),
                7 => spell_str(r, "role"),
                8 => spell_str(r, "session_authorization"),
                9 => spell_str(r, "client_encoding"),
                10 => spell_str(r, "standard_conforming_strings"),
                11 => "'row_' || 'security'".to_string(),
                12 => "lower('ROW_SECURITY')".to_string(),
                13 => "$1".to_string(),
                14 => "'row_security'::text".to_string(),
                _ => "concat('ro', 'le')".to_string(),
            };
            let f = match r.below(5) {
                0 => "pg_catalog.set_config",
                1 => "\"set_config\"",
                2 => "SET_CONFIG",
                _ => "set_config",
            };
            let value = r.pick(&["'off'", "'false'", "'0'", "'postgres'", "'SQL_ASCII'", "$2"]);
            let local = r.pick(&["false", "true", "$3"]);
            Core {
                expr: format!("{f}({name}, {value}, {local})"),
                from: None,
            }
        }
        // A denied function or view as a FROM item; the expression uses it.
        _ => {
            let from = match r.below(8) {
                0 => "pg_file_settings AS s".to_string(),
                1 => "pg_catalog.pg_hba_file_rules s".to_string(),
                2 => "pg_ident_file_mappings s".to_string(),
                3 => "pg_config s".to_string(),
                4 => format!("pg_ls_dir({}) AS s", spell_str(r, ".")),
                5 => format!(
                    "LATERAL {}({}) AS s",
                    spell_ident(r, "pg_read_file"),
                    spell_str(r, "/etc/passwd")
                ),
                6 => format!("ROWS FROM (pg_ls_dir({})) AS s", spell_str(r, "/")),
                _ => "\"pg_file_settings\" s".to_string(),
            };
            Core {
                expr: "s.*".to_string(),
                from: Some(from),
            }
        }
    }
}

fn harmless_core(r: &mut Rng) -> Core {
    let e = |s: &str| Core {
        expr: s.to_string(),
        from: None,
    };
    match r.below(34) {
        0 => e("1"),
        1 => e("now()"),
        2 => e("lower('ABC')"),
        3 => e("count(*)"),
        4 => e("current_setting('app.tenant_id', true)"),
        5 => e("pg_sleep(0)"),
        6 => e("pg_advisory_xact_lock(42)"),
        7 => e("'pg_read_file(''/etc/passwd'')'"),
        8 => e("$$pg_ls_dir('.') INTO t$$"),
        9 => e("/* pg_read_file('/etc/passwd') */ 1"),
        10 => e("1 -- pg_ls_dir('.'); SELECT 1 INTO t\n"),
        11 => e("pg_catalog.lower('x')"),
        12 => e("pg_catalog.now()"),
        13 => e("pg_notify('jobs', 'x')"),
        14 => e("txid_current()"),
        15 => e("jsonb_build_object('k', 1)"),
        16 => e("E'\\' INTO t --'"),
        17 => e("set_config('app.tenant_id', '42', true)"),
        18 => e("set_config('search_path', 'public', false)"),
        19 => e("pg_catalog.set_config('statement_timeout', '5s', true)"),
        20 => e("'row_security'"),
        21 => e("U&'\\0070g_read_file'"),
        22 => e("\"pg_catalog\".\"btrim\"('x')"),
        23 => e("coalesce(NULL, 'x')"),
        24 => e("extract(epoch FROM now())"),
        25 => e("pg_try_advisory_lock(hashtext('k'))"),
        26 => {
            let f = r.pick(&["length", "btrim", "upper", "md5"]);
            let v = r.pick(&["/etc/hostname", "abc"]);
            Core {
                expr: format!("x.{f}"),
                from: Some(format!("btrim({}) AS x", spell_str(r, v))),
            }
        }
        27 => Core {
            expr: "pg_catalog.lower".to_string(),
            from: Some("btrim('x') AS pg_catalog".to_string()),
        },
        28 => Core {
            expr: "u.email".to_string(),
            from: Some("users u".to_string()),
        },
        29 => Core {
            expr: "(u).email".to_string(),
            from: Some("users u".to_string()),
        },
        30 => e("('x'::text).length"),
        31 => Core {
            expr: "x.pg_read_file_count".to_string(),
            from: Some("stats x".to_string()),
        },
        32 => Core {
            expr: "s.setting".to_string(),
            from: Some("pg_settings s".to_string()),
        },
        _ => e("version()"),
    }
}

/// A column label, sometimes a keyword (`AS insert`, bare `prepare`).
fn label(r: &mut Rng) -> String {
    const KW: &[&str] = &[
        "insert",
        "merge",
        "union",
        "prepare",
        "transaction",
        "temp",
        "unlogged",
        "into",
        "select",
        "copy",
        "explain",
        "set",
        "table",
        "update",
        "delete",
        "values",
        "execute",
        "with",
        "from",
        "temporary",
        "local",
        "call",
        "do",
        "grant",
    ];
    match r.below(8) {
        0..=2 => String::new(),
        3 | 4 => format!(" AS {}", r.pick(KW)),
        5 | 6 => format!(" {}", r.pick(KW)),
        _ => format!(" AS \"{}\"", r.pick(KW)),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Select,
    Dml,
}

/// Place `c` in some clause of a SELECT or DML statement.
fn place(r: &mut Rng, c: &Core) -> (String, Kind) {
    let e = &c.expr;
    let fr = c.from.clone().unwrap_or_else(|| "users u".to_string());
    // The expression where no FROM item of ours is in scope.
    let sub = match &c.from {
        Some(f) => format!("(SELECT {e} FROM {f})"),
        None => e.clone(),
    };
    let and_from = c
        .from
        .as_ref()
        .map(|f| format!(", {f}"))
        .unwrap_or_default();
    let lbl = label(r);
    use Kind::*;
    match r.below(44) {
        0..=3 => (format!("SELECT {e}{lbl} FROM {fr}"), Select),
        4 => match &c.from {
            Some(_) => (format!("SELECT {e}{lbl} FROM {fr} WHERE true"), Select),
            None => (format!("SELECT {e}{lbl}"), Select),
        },
        5 => (
            format!("SELECT u.id FROM users u{and_from} WHERE {e} IS NOT NULL"),
            Select,
        ),
        6 => (
            format!("SELECT u.id FROM users u{and_from} ORDER BY {e} DESC NULLS LAST"),
            Select,
        ),
        7 => (
            format!("SELECT count(*) FROM users u{and_from} GROUP BY {e}"),
            Select,
        ),
        8 => (
            format!("SELECT count(*) FROM users u{and_from} GROUP BY u.id HAVING {e} IS NULL"),
            Select,
        ),
        9 => (
            format!("SELECT u.id FROM users u LIMIT length({sub}::text)"),
            Select,
        ),
        10 => (
            format!("SELECT u.id FROM users u OFFSET length({sub}::text) LIMIT 1"),
            Select,
        ),
        11 => (format!("VALUES ({sub}), (1)"), Select),
        12 => (format!("SELECT (SELECT {e} FROM {fr}) AS v"), Select),
        13 => (
            format!("SELECT * FROM (SELECT {e}{lbl} FROM {fr}) AS s0"),
            Select,
        ),
        14 => (
            format!("SELECT u.id FROM users u WHERE EXISTS (SELECT {e} FROM {fr})"),
            Select,
        ),
        15 => (
            format!("SELECT u.id FROM users u WHERE u.name IN (SELECT {e} FROM {fr})"),
            Select,
        ),
        16 => (
            format!("WITH c AS (SELECT {e}{lbl} FROM {fr}) SELECT * FROM c"),
            Select,
        ),
        17 => (
            format!(
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3) \
                 SELECT n, {sub} FROM c"
            ),
            Select,
        ),
        18 => (
            format!(
                "WITH a AS MATERIALIZED (SELECT 1), b AS NOT MATERIALIZED (SELECT {e} FROM {fr}) \
                 SELECT * FROM a, b"
            ),
            Select,
        ),
        19 => (
            format!("SELECT CASE WHEN u.id > 0 THEN {e} ELSE NULL END FROM users u{and_from}"),
            Select,
        ),
        20 => (
            format!("SELECT CASE {e} WHEN 'a' THEN 1 END FROM users u{and_from}"),
            Select,
        ),
        21 => (
            format!("SELECT coalesce({e}, 'x'){lbl} FROM users u{and_from}"),
            Select,
        ),
        22 => (
            format!("SELECT substring('abcdef' FROM {e}) FROM users u{and_from}"),
            Select,
        ),
        23 => (
            format!("SELECT substring(u.name FROM 1 FOR {e}) FROM users u{and_from}"),
            Select,
        ),
        24 => (
            format!("SELECT trim(FROM {e}) FROM users u{and_from}"),
            Select,
        ),
        25 => (
            format!("SELECT trim(BOTH 'x' FROM {e}) FROM users u{and_from}"),
            Select,
        ),
        26 => (
            format!("SELECT u.name IS DISTINCT FROM {e} FROM users u{and_from}"),
            Select,
        ),
        27 => (
            format!("SELECT u.id FROM users u{and_from} WHERE u.name IS NOT DISTINCT FROM {e}"),
            Select,
        ),
        28 => (
            format!(
                "SELECT overlay('abc' PLACING {e} FROM 1), position('a' IN {e}) FROM users u{and_from}"
            ),
            Select,
        ),
        29 => (
            format!("SELECT ARRAY[{e}], ROW({e}, 1) FROM users u{and_from}"),
            Select,
        ),
        30 => (
            format!(
                "SELECT count(*) FILTER (WHERE {e} IS NOT NULL), row_number() OVER (ORDER BY {e}) \
                 FROM users u{and_from}"
            ),
            Select,
        ),
        31 => (
            format!("SELECT CAST({e} AS text), ({e})::text FROM users u{and_from}"),
            Select,
        ),
        32 => (
            format!("SELECT u.id FROM users u JOIN {fr} ON {e} IS NOT NULL"),
            Select,
        ),
        33 => (
            format!(
                "SELECT u.id, l.v FROM users u CROSS JOIN LATERAL (SELECT {e} AS v FROM {fr}) l"
            ),
            Select,
        ),
        34 => (format!("SELECT 1 UNION ALL SELECT {e} FROM {fr}"), Select),
        35 => (format!("INSERT INTO audit (note) VALUES ({sub})"), Dml),
        36 => (
            format!("INSERT INTO audit (note) SELECT {e} FROM {fr}"),
            Dml,
        ),
        37 => (
            format!(
                "INSERT INTO audit (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = {sub}"
            ),
            Dml,
        ),
        38 => (
            format!(
                "INSERT INTO audit (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = excluded.note \
                 WHERE {sub} IS NOT NULL RETURNING id"
            ),
            Dml,
        ),
        39 => (
            format!("INSERT INTO audit (note) VALUES ('x') RETURNING {sub}{lbl}"),
            Dml,
        ),
        40 => (
            format!(
                "UPDATE users u SET name = {e} FROM {} WHERE u.id = 1",
                c.from.clone().unwrap_or_else(|| "orders o".to_string())
            ),
            Dml,
        ),
        41 => (
            format!("UPDATE users SET name = 'x' WHERE id = 1 RETURNING {sub}"),
            Dml,
        ),
        42 => (
            match r.below(2) {
                0 => format!(
                    "DELETE FROM users u USING {} WHERE {e} IS NOT NULL",
                    c.from.clone().unwrap_or_else(|| "orders o".to_string())
                ),
                _ => format!("DELETE FROM users WHERE id = 1 RETURNING {sub}"),
            },
            Dml,
        ),
        _ => (
            format!(
                "MERGE INTO users u USING {} ON true WHEN MATCHED THEN UPDATE SET name = {e} \
                 WHEN NOT MATCHED THEN INSERT (name) VALUES ({e})",
                c.from
                    .clone()
                    .unwrap_or_else(|| "(SELECT 1 AS id) s".to_string())
            ),
            Dml,
        ),
    }
}

/// Wrap a statement: EXPLAIN, COPY (q), DECLARE, PREPARE, WITH, INSERT …
/// SELECT, CREATE TEMP TABLE … AS, multi-statement texts.
fn wrap(r: &mut Rng, s: &str, kind: Kind) -> String {
    if r.chance(40) {
        return s.to_string();
    }
    let sel = kind == Kind::Select;
    match r.below(17) {
        0 => format!("EXPLAIN {s}"),
        1 => format!("EXPLAIN ANALYZE {s}"),
        2 => format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {s}"),
        3 => format!("EXPLAIN VERBOSE {s}"),
        4 => format!("COPY ({s}) TO STDOUT"),
        5 => format!("COPY ({s}) TO STDOUT WITH (FORMAT csv, HEADER)"),
        6 if sel => format!("DECLARE c CURSOR FOR {s}"),
        7 if sel => format!("DECLARE c NO SCROLL CURSOR WITH HOLD FOR {s}"),
        8 => format!("PREPARE p AS {s}"),
        9 => format!("PREPARE p (int, text) AS {s}"),
        10 if sel => format!("WITH w AS ({s}) SELECT * FROM w"),
        10 => format!("WITH w AS ({s} RETURNING 1) SELECT 1"),
        11 if sel => format!("INSERT INTO audit (note) {s}"),
        12 if sel => format!(
            "CREATE {} TABLE tt AS {s}",
            r.pick(&["TEMP", "TEMPORARY", "UNLOGGED", "LOCAL TEMP"])
        ),
        13 => format!("SELECT 1; {s}"),
        14 => format!("BEGIN; {s}; COMMIT"),
        15 => format!("{s};"),
        16 if sel => format!("SELECT * FROM ({s}) q"),
        _ => format!("{s}; SELECT 1"),
    }
}

fn select_into(r: &mut Rng) -> String {
    let cols = r.pick(&[
        "*",
        "1",
        "u.id",
        "u.id, u.email",
        "count(*)",
        "'x'",
        "now()",
        "",
    ]);
    let lbl = if cols.is_empty() {
        String::new()
    } else {
        label(r)
    };
    let opt = r.pick(&[
        "",
        "",
        "TEMP ",
        "TEMPORARY ",
        "UNLOGGED ",
        "TABLE ",
        "TEMP TABLE ",
        "LOCAL TEMP ",
        "GLOBAL TEMPORARY TABLE ",
    ]);
    let tgt = r.pick(&[
        "t",
        "\"T\"",
        "s.t",
        "pg_temp.t",
        "newtab",
        "\"into\"",
        "insert",
    ]);
    let into = format!(
        "{}INTO{}{opt}{tgt}",
        r.pick(&[" ", " /* c */ ", "\n", " --c\n"]),
        r.pick(&[" ", " /**/ ", "\n"])
    );
    let head = r.pick(&[
        "SELECT",
        "SELECT DISTINCT",
        "SELECT ALL",
        "SELECT DISTINCT ON (u.id)",
    ]);
    let from = r.pick(&[
        " FROM users u",
        " FROM users u WHERE u.id = $1",
        "",
        " FROM users u ORDER BY 1 LIMIT 1",
        " FROM users u FOR UPDATE",
    ]);
    let base = format!("{head} {cols}{lbl}{into}{from}");
    let s = match r.below(14) {
        0..=4 => base,
        5 => format!("{base} UNION SELECT 1"),
        6 => format!("WITH c AS (SELECT 1) {base}"),
        7 => format!("WITH c AS ({base}) SELECT * FROM c"),
        8 => format!("SELECT * FROM ({base}) s"),
        9 => format!("SELECT ({base})"),
        10 => format!("SELECT 1 WHERE EXISTS ({base})"),
        11 => format!("SELECT 1 WHERE 1 IN ({base})"),
        12 => format!("SELECT 1 UNION ALL ({base})"),
        _ => format!("({base})"),
    };
    wrap(r, &s, Kind::Select)
}

/// Variants of pg_dump's `SELECT set_config(name, …) FROM pg_settings
/// WHERE name = '…'`: rolegate allows only the exact shape with an ordinary
/// setting, so every variant that could reach another row (another
/// condition, another relation or alias, a shadowing CTE, a set operation,
/// a computed name) must be refused wherever the oracle says so.
fn pinned_set_config(r: &mut Rng) -> String {
    let func = r.pick(&[
        "set_config",
        "pg_catalog.set_config",
        "SET_CONFIG",
        "\"set_config\"",
    ]);
    let arg = r.pick(&[
        "name",
        "name",
        "name",
        "\"name\"",
        "lower(name)",
        "s.name",
        "pg_settings.name",
        "name || ''",
        "(name)",
        "$1",
    ]);
    let value = r.pick(&[
        "'view, foreign-table'",
        "'off'",
        "$$x$$",
        "E'off'",
        "$2",
        "name",
    ]);
    let local = r.pick(&["false", "true", "$3", "'f'"]);
    let from = r.pick(&[
        "pg_settings",
        "pg_settings",
        "pg_catalog.pg_settings",
        "pg_settings s",
        "pg_settings AS pg_settings",
        "ONLY pg_settings",
        "public.pg_settings",
        "pg_settings, pg_settings p",
        "(SELECT 'row_security'::text AS name) pg_settings",
        "pg_show_all_settings() pg_settings",
    ]);
    let setting = r.pick(&[
        "'restrict_nonsystem_relation_kind'",
        "'work_mem'",
        "'row_security'",
        "'ROW_SECURITY'",
        "'role'",
        "'session_authorization'",
        "'client_encoding'",
        "'standard_conforming_strings'",
        "E'row\\137security'",
        "'row_' || 'security'",
        "$4",
        "'work_mem'\n'row_security'",
        "U&'row\\005fsecurity'",
    ]);
    let filter = match r.below(8) {
        0 => format!("{setting} = name"),
        1 => format!("name = {setting} OR name = 'row_security'"),
        2 => format!("name = {setting} OR true"),
        3 => format!("name <> {setting}"),
        4 => format!("name IN ({setting}, 'row_security')"),
        _ => format!("name = {setting}"),
    };
    let core = format!("SELECT {func}({arg}, {value}, {local}) FROM {from} WHERE {filter}");
    match r.below(10) {
        0 => format!("WITH pg_settings AS (SELECT 'row_security'::text AS name) {core}"),
        1 => format!("{core} UNION ALL SELECT set_config(name, 'off', false) FROM pg_settings"),
        2 => format!("SELECT * FROM ({core}) q"),
        3 => format!("{core} LIMIT 1"),
        _ => core,
    }
}

fn set_statement(r: &mut Rng) -> String {
    let scope = r.pick(&["", "", "LOCAL ", "SESSION "]);
    let assign = r.pick(&[" = ", " TO ", "=", " to "]);
    match r.below(10) {
        0..=3 => {
            let name = match r.below(8) {
                0..=2 => "row_security".to_string(),
                3 => "ROW_SECURITY".to_string(),
                4 => "\"row_security\"".to_string(),
                5 => "\"ROW_SECURITY\"".to_string(),
                6 => "U&\"row\\005fsecurity\"".to_string(),
                _ => "Row_Security".to_string(),
            };
            let value = r.pick(&[
                "off",
                "'off'",
                "false",
                "'false'",
                "0",
                "'0'",
                "no",
                "OFF",
                "E'off'",
                "$$off$$",
                "'of'\n'f'",
                "on",
                "true",
                "1",
                "'on'",
                "DEFAULT",
                "yes",
                "'yes'",
                "ON",
            ]);
            match r.below(10) {
                0 => format!("RESET {name}"),
                _ => format!("SET {scope}{name}{assign}{value}"),
            }
        }
        4 | 5 => r
            .pick(&[
                "SET ROLE admin",
                "SET ROLE 'postgres'",
                "SET ROLE NONE",
                "SET LOCAL ROLE postgres",
                "SET role = admin",
                "SET \"role\" TO 'postgres'",
                "SET ROLE = postgres",
                "RESET ROLE",
                "SET SESSION AUTHORIZATION postgres",
                "SET SESSION AUTHORIZATION DEFAULT",
                "SET SESSION SESSION AUTHORIZATION 'postgres'",
                "RESET SESSION AUTHORIZATION",
                "SET session_authorization = 'postgres'",
                "SET \"Role\" = 'x'",
                "SET U&\"\\0072ole\" = admin",
            ])
            .to_string(),
        6 => {
            let v = r.pick(&[
                "'LATIN1'",
                "'SQL_ASCII'",
                "'UTF8'",
                "utf8",
                "'utf-8'",
                "'Unicode'",
                "'GBK'",
                "'BIG5'",
                "DEFAULT",
                "'u t f 8'",
                "SJIS",
                "'UTF8', 'LATIN1'",
            ]);
            match r.below(6) {
                0 => format!("SET NAMES {v}"),
                1 => "RESET client_encoding".to_string(),
                2 => format!("SET {scope}\"client_encoding\"{assign}{v}"),
                _ => format!("SET {scope}client_encoding{assign}{v}"),
            }
        }
        7 => {
            let v = r.pick(&[
                "off", "on", "'on'", "true", "false", "DEFAULT", "0", "1", "'of' 'f'",
            ]);
            match r.below(6) {
                0 => "RESET standard_conforming_strings".to_string(),
                _ => format!("SET {scope}standard_conforming_strings{assign}{v}"),
            }
        }
        _ => r
            .pick(&[
                "SET search_path TO public",
                "SET search_path = \"$user\", public",
                "SET application_name = 'web'",
                "SET statement_timeout = 0",
                "SET LOCAL statement_timeout TO '5s'",
                "SET LOCAL app.tenant_id = '42'",
                "SET app.row_security = off",
                "SET app.role = 'admin'",
                "SET TIME ZONE 'UTC'",
                "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                "RESET ALL",
                "RESET search_path",
                "SET search_path = row_security",
                "SET extra_float_digits = 3",
                "SET lock_timeout = '1s'",
                "SET idle_in_transaction_session_timeout = 60000",
                "SET DateStyle = ISO, MDY",
                "SET XML OPTION CONTENT",
                "SHOW row_security",
                "SHOW ROLE",
                "SHOW client_encoding",
                "SET CONSTRAINTS ALL DEFERRED",
            ])
            .to_string(),
    }
}

const TABLES: &[&str] = &[
    "users",
    "orders",
    "\"order_items\"",
    "accounts",
    "\"Posts\"",
    "comments",
    "sessions",
    "audit_log",
    "app.invoices",
    "\"public\".\"users\"",
];
const COLS: &[&str] = &[
    "id",
    "email",
    "name",
    "created_at",
    "updated_at",
    "tenant_id",
    "status",
    "\"userId\"",
    "total",
    "deleted_at",
    "\"position\"",
    "\"type\"",
    "value",
    "\"order\"",
    "insert_count",
    "into_date",
];

/// ORM-style statements a runtime session sends all day.
fn orm(r: &mut Rng) -> String {
    let t = r.pick(TABLES);
    let t2 = r.pick(TABLES);
    let c1 = r.pick(COLS);
    let c2 = r.pick(COLS);
    let c3 = r.pick(COLS);
    let n = r.below(50) + 1;
    let ins_vals: Vec<String> = (1..=r.below(4) + 1).map(|i| format!("${i}")).collect();
    match r.below(46) {
        0 => format!("SELECT t0.{c1}, t0.{c2} FROM {t} t0 WHERE t0.{c3} = $1 LIMIT $2"),
        1 => format!(
            "SELECT t0.{c1} AS a0, t0.{c2} AS a1 FROM {t} AS t0 WHERE (t0.{c3} = $1) ORDER BY t0.{c1} DESC LIMIT {n}"
        ),
        2 => format!("SELECT COUNT(*) AS \"__count\" FROM {t} WHERE {c1} IS NULL"),
        3 => format!("SELECT EXISTS(SELECT 1 FROM {t} WHERE {c1} = $1 LIMIT 1)"),
        4 => format!(
            "INSERT INTO {t} ({c1}, {c2}) VALUES ($1, $2) RETURNING {t}.{c3}",
            t = "\"users\""
        ),
        5 => format!(
            "INSERT INTO {t} ({c1}, {c2}) VALUES ($1, $2) ON CONFLICT ({c1}) DO UPDATE SET {c2} = EXCLUDED.{c2} RETURNING id"
        ),
        6 => format!(
            "INSERT INTO {t} ({c1}) VALUES ({}) ON CONFLICT DO NOTHING",
            ins_vals.join(", ")
        ),
        7 => format!("UPDATE {t} SET {c1} = $1, updated_at = now() WHERE {t}.id = $2"),
        8 => format!("DELETE FROM {t} WHERE id IN ($1, $2, $3)"),
        9 => format!(
            "SELECT a.{c1}, b.{c2} FROM {t} a INNER JOIN {t2} b ON b.user_id = a.id WHERE a.{c3} ILIKE $1 ORDER BY a.created_at LIMIT $2 OFFSET $3"
        ),
        10 => format!("SELECT * FROM {t} WHERE id = $1 FOR UPDATE SKIP LOCKED"),
        11 => format!("SELECT id FROM {t} WHERE {c1} = ANY($1::int[]) FOR NO KEY UPDATE"),
        12 => r
            .pick(&[
                "BEGIN",
                "BEGIN ISOLATION LEVEL REPEATABLE READ",
                "START TRANSACTION READ ONLY",
                "COMMIT",
                "ROLLBACK",
                "SAVEPOINT sp_1",
                "RELEASE SAVEPOINT sp_1",
                "ROLLBACK TO SAVEPOINT sp_1",
                "BEGIN READ WRITE",
                "COMMIT AND NO CHAIN",
                "END",
                "ABORT",
            ])
            .to_string(),
        13 => "SELECT set_config('app.tenant_id', $1, true)".to_string(),
        14 => r
            .pick(&[
                "SHOW server_version",
                "SHOW TRANSACTION ISOLATION LEVEL",
                "SHOW search_path",
                "SHOW ALL",
                "LISTEN jobs",
                "NOTIFY jobs, 'x'",
                "UNLISTEN *",
                "DISCARD ALL",
                "DISCARD PLANS",
                "DEALLOCATE ALL",
                "DEALLOCATE pdo_stmt_00000001",
                "CLOSE ALL",
                "CLOSE c1",
                "FETCH 100 FROM c1",
                "FETCH FORWARD 10 IN c1",
                "MOVE NEXT IN c1",
                "EXECUTE s1(1)",
                "SELECT pg_notify('jobs', $1)",
                "SELECT pg_advisory_xact_lock($1)",
                "SELECT pg_try_advisory_lock(hashtext($1))",
                "SELECT current_setting('app.tenant_id', true)",
                "SELECT version()",
                "SELECT 1",
                "SELECT txid_current()",
                "SELECT pg_backend_pid()",
                "SELECT current_user, session_user",
            ])
            .to_string(),
        15 => format!("PREPARE s1 (int) AS SELECT {c1} FROM {t} WHERE id = $1"),
        16 => format!("DECLARE c1 CURSOR FOR SELECT {c1} FROM {t} ORDER BY id"),
        17 => format!("LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE"),
        18 => format!("COPY {t} ({c1}, {c2}) FROM STDIN WITH (FORMAT csv)"),
        19 => format!("COPY (SELECT {c1} FROM {t} WHERE {c2} > $1) TO STDOUT WITH (FORMAT binary)"),
        20 => format!("SELECT nextval('{}_id_seq')", r.pick(&["users", "orders"])),
        21 => format!("EXPLAIN SELECT {c1} FROM {t} WHERE {c2} = 1"),
        22 => format!(
            "WITH recent AS (SELECT id, {c1} FROM {t} WHERE created_at > now() - interval '1 day') SELECT * FROM recent"
        ),
        23 => format!("SELECT data->>'{c1}' AS v FROM {t} WHERE data @> $1::jsonb"),
        24 => {
            format!("SELECT id FROM {t} WHERE to_tsvector('english', body) @@ plainto_tsquery($1)")
        }
        25 => format!("SELECT {t}.* FROM {t}"),
        26 => format!("SELECT x.{c1} FROM {t} x WHERE x.{c2} IS DISTINCT FROM $1"),
        27 => format!("SELECT substring(x.{c1} FROM 1 FOR 3), trim(FROM x.{c2}) FROM {t} x"),
        28 => format!(
            "SELECT {c1}, row_number() OVER (PARTITION BY {c2} ORDER BY created_at) FROM {t}"
        ),
        29 => format!("SELECT {c1}, count(*) FROM {t} GROUP BY {c1} HAVING count(*) > {n}"),
        30 => format!("SELECT CASE WHEN {c1} IS NULL THEN 'none' ELSE 'some' END AS kind FROM {t}"),
        31 => format!(
            "SELECT 1 AS {} FROM {t}",
            r.pick(&[
                "insert",
                "merge",
                "\"into\"",
                "prepare",
                "transaction",
                "temp",
                "unlogged",
                "copy"
            ])
        ),
        32 => format!(
            "SELECT {c1} {} FROM {t}",
            r.pick(&[
                "insert",
                "merge",
                "prepare",
                "transaction",
                "temp",
                "unlogged",
                "copy"
            ])
        ),
        33 => format!("SELECT 'SELECT 1 INTO t' AS q, $$pg_read_file$$ AS f FROM {t}"),
        34 => format!("SELECT {c1} /* pg_ls_dir('.') */ FROM {t} -- INTO t\n"),
        35 => format!(
            "INSERT INTO {t} ({c1}, {c2}, {c3}) SELECT {c1}, {c2}, {c3} FROM {t2} WHERE {c1} = $1"
        ),
        36 => format!(
            "UPDATE {t} AS a SET {c1} = b.{c1} FROM {t2} AS b WHERE a.id = b.id RETURNING a.*"
        ),
        37 => format!(
            "MERGE INTO {t} a USING {t2} b ON a.id = b.id WHEN MATCHED THEN UPDATE SET {c1} = b.{c1} \
             WHEN NOT MATCHED THEN INSERT ({c1}) VALUES (b.{c1})"
        ),
        38 => format!(
            "SELECT u.id FROM {t} u WHERE u.{c1} IN (SELECT {c2} FROM {t2} WHERE {c3} = $1)"
        ),
        39 => format!(
            "SELECT \"{t0}\".\"{c0}\" FROM \"{t0}\"",
            t0 = "users",
            c0 = "email"
        ),
        40 => {
            format!("SELECT {c1} FROM {t} WHERE {c2} BETWEEN $1 AND $2 ORDER BY {c3} NULLS FIRST")
        }
        41 => format!("SELECT E'line\\nnext', U&'d\\0061t\\+000061', $tag$it's$tag$ FROM {t}"),
        42 => format!("SELECT {c1} FROM {t} WHERE {c2} = 'a'\n'b'"),
        43 => format!("VALUES ({})", ins_vals.join(", ")),
        44 => format!(
            "SELECT array_agg({c1} ORDER BY {c2}), jsonb_agg(to_jsonb({t0}.*)) FROM {t} {t0}",
            t0 = "r"
        ),
        _ => format!("TABLE {t}"),
    }
}

/// Comments, whitespace and case changes between tokens: every run of
/// spaces outside quotes and comments may become another separator, and a
/// separator may be inserted around `(`, `,` and a `.` between names.
fn noise(r: &mut Rng, sql: &str) -> String {
    const SEPS: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\t",
        "/**/",
        " /* c */ ",
        "/* /* nested */ still comment */",
        " --x\n",
        " -- ; SELECT pg_read_file('/etc/passwd') INTO t;\n",
        "\r\n",
        "/*;*/",
        "/* INTO t */",
        " /*'*/ ",
        "\x0c",
    ];
    let level = r.below(3) as u64; // how much noise
    let sep_p = [15, 40, 80][level as usize];
    let punct_p = [0, 10, 30][level as usize];
    let flip_case = r.chance(30);
    let b: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() * 2);
    let mut i = 0;
    let n = b.len();
    let copy_until = |out: &mut String, i: &mut usize, end: usize| {
        for c in &b[*i..end.min(n)] {
            out.push(*c);
        }
        *i = end.min(n);
    };
    while i < n {
        let c = b[i];
        if c == '\'' {
            // '…' with '' doubling; E'…' with backslashes.
            let escapes = i > 0 && (b[i - 1] == 'E' || b[i - 1] == 'e');
            let mut j = i + 1;
            while j < n {
                if escapes && b[j] == '\\' {
                    j += 2;
                    continue;
                }
                if b[j] == '\'' {
                    if j + 1 < n && b[j + 1] == '\'' {
                        j += 2;
                        continue;
                    }
                    break;
                }
                j += 1;
            }
            copy_until(&mut out, &mut i, j + 1);
        } else if c == '"' {
            let mut j = i + 1;
            while j < n && b[j] != '"' {
                j += 1;
            }
            copy_until(&mut out, &mut i, j + 1);
        } else if c == '$' && i + 1 < n && (b[i + 1] == '$' || b[i + 1].is_ascii_alphabetic()) {
            let mut j = i + 1;
            while j < n && b[j] != '$' && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            if j < n && b[j] == '$' {
                let tag: String = b[i..=j].iter().collect();
                let rest: String = b[j + 1..].iter().collect();
                let end = match rest.find(&tag) {
                    Some(p) => j + 1 + rest[..p].chars().count() + tag.chars().count(),
                    None => n,
                };
                copy_until(&mut out, &mut i, end);
            } else {
                copy_until(&mut out, &mut i, j);
            }
        } else if c == '-' && i + 1 < n && b[i + 1] == '-' {
            let mut j = i;
            while j < n && b[j] != '\n' {
                j += 1;
            }
            copy_until(&mut out, &mut i, j);
        } else if c == '/' && i + 1 < n && b[i + 1] == '*' {
            let mut depth = 0;
            let mut j = i;
            while j < n {
                if b[j] == '/' && j + 1 < n && b[j + 1] == '*' {
                    depth += 1;
                    j += 2;
                } else if b[j] == '*' && j + 1 < n && b[j + 1] == '/' {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            copy_until(&mut out, &mut i, j);
        } else if c == ' ' {
            let mut j = i;
            while j < n && b[j] == ' ' {
                j += 1;
            }
            if r.chance(sep_p) {
                out.push_str(r.pick(SEPS));
            } else {
                out.push(' ');
            }
            i = j;
        } else if (c == '(' || c == ',') && r.chance(punct_p) {
            out.push(c);
            out.push_str(r.pick(SEPS));
            i += 1;
        } else if c == '.'
            && i > 0
            && i + 1 < n
            && !b[i - 1].is_ascii_digit()
            && !b[i + 1].is_ascii_digit()
            && b[i + 1] != '*'
            && r.chance(punct_p)
        {
            out.push_str(r.pick(&[" . ", "/**/./**/", "\n.\n", " ."]));
            i += 1;
        } else if c.is_ascii_alphabetic() {
            // A word: maybe flip its case (keywords and unquoted names fold);
            // never a U&/E prefix, a UESCAPE, or a word touching a quote.
            let mut j = i;
            while j < n && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            let word: String = b[i..j].iter().collect();
            let next_quote = j < n && (b[j] == '\'' || b[j] == '&' || b[j] == '$');
            let after_dollar = i > 0 && b[i - 1] == '$';
            if flip_case && !next_quote && !after_dollar && r.chance(50) {
                if r.chance(50) {
                    out.push_str(&word.to_ascii_uppercase());
                } else {
                    out.push_str(&word.to_ascii_lowercase());
                }
            } else {
                out.push_str(&word);
            }
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The generated texts: unique, deterministic, at least [`MIN_GENERATED`].
/// DML whose constants take every spelling, hostile bodies and broken
/// quoting included, sometimes next to a statement whose verdict depends on
/// a constant: the verdict cache folds constants (`policy::literal_spans`),
/// and the test checks every folded span against PostgreSQL's scanner and
/// every folded text's verdict against the text's.
fn literals(r: &mut Rng) -> String {
    const BODIES: &[&str] = &[
        "abc",
        "x-1/2 %",
        "é ü",
        "'; drop table t; --",
        "\\'; select pg_read_file('/etc/passwd') into t; --",
        "*/ drop table t; /*",
        "$$; drop table t; $$",
        "\" ; drop",
        "set_config",
        "pg_read_file",
        "1e5",
        "",
    ];
    const NUMBERS: &[&str] = &[
        "1",
        "42",
        "4.25",
        "0.5",
        ".5",
        "1e5",
        "0x1F",
        "1_000",
        "1.",
        "-7",
        "99999999999999999999",
    ];
    let value = |r: &mut Rng| -> String {
        let body = r.pick(BODIES);
        match r.below(12) {
            0..=3 => r.pick(NUMBERS).to_string(),
            4 => format!("'{}'", body.replace('\'', "''")),
            5 => format!("'{body}'"),
            6 => format!("E'{}'", body.replace('\\', "\\\\").replace('\'', "\\'")),
            7 if !body.contains('$') => format!("$${body}$$"),
            8 => format!("text'{}'", body.replace('\'', "''")),
            9 => format!("U&'{}'", body.replace('\'', "''")),
            10 => format!("'{}'\n'x'", body.replace('\'', "''")),
            _ => format!("'{}'", r.pick(&["a", "b c", "2024-01-01", "ü"])),
        }
    };
    let n = 1 + r.below(4);
    let vals: Vec<String> = (0..n).map(|_| value(r)).collect();
    let list = vals.join(", ");
    let first = &vals[0];
    match r.below(6) {
        0 => format!("SELECT {list} FROM t WHERE c = {first}"),
        1 => format!("INSERT INTO t VALUES ({list})"),
        2 => format!("UPDATE t SET a = {first} WHERE b IN ({list})"),
        3 => format!("DELETE FROM t WHERE a = {first} /* {list} */"),
        4 => format!("BEGIN; SELECT {list}; COMMIT"),
        _ => {
            let other = r.pick(&[
                "drop table t",
                "set row_security = off",
                "select set_config('row_security', 'off', false)",
                "copy t to '/tmp/x'",
                "select pg_read_file('/etc/passwd')",
                "notify c, 'x'",
            ]);
            format!("SELECT {list}; {other}")
        }
    }
}

fn generated() -> Vec<Text> {
    let mut r = Rng(SEED);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut attempts = 0usize;
    while out.len() < MIN_GENERATED {
        attempts += 1;
        assert!(
            attempts < MIN_GENERATED * 20,
            "generator produces too many duplicates"
        );
        let (family, sql) = match r.below(100) {
            0..=34 => {
                let c = dangerous_core(&mut r);
                let (s, k) = place(&mut r, &c);
                ("dangerous-core", wrap(&mut r, &s, k))
            }
            35..=46 => {
                let c = harmless_core(&mut r);
                let (s, k) = place(&mut r, &c);
                ("harmless-core", wrap(&mut r, &s, k))
            }
            47..=61 => ("select-into", select_into(&mut r)),
            62..=68 => ("set", set_statement(&mut r)),
            69..=71 => ("pinned-set-config", pinned_set_config(&mut r)),
            72..=77 => ("literals", literals(&mut r)),
            _ => ("orm", orm(&mut r)),
        };
        let sql = if r.chance(55) {
            noise(&mut r, &sql)
        } else {
            sql
        };
        if seen.insert(sql.clone()) {
            out.push(Text {
                origin: format!("<generated {family} #{}>", out.len() + 1),
                sql,
            });
        }
    }
    out
}

// -------------------------------------------------------------- the oracle

/// Texts whose oracle verdict is known: the oracle must get them right, or
/// the comparison means nothing.
const ORACLE_SELF_CHECK: &[(&str, &str)] = &[
    ("SELECT 1", "harmless"),
    ("SELECT id FROM users WHERE id = $1", "harmless"),
    ("SELECT 'pg_read_file(''/etc/passwd'')'", "harmless"),
    ("SELECT 1 AS \"into\" FROM t", "harmless"),
    ("SET row_security = on", "harmless"),
    ("RESET row_security", "harmless"),
    ("SET client_encoding = 'UTF8'", "harmless"),
    ("SELECT set_config('app.x', '1', false)", "harmless"),
    ("COPY t FROM STDIN", "harmless"),
    ("EXPLAIN SELECT 1", "harmless"),
    ("SELECT pg_read_file('/etc/passwd')", "refuse"),
    (
        "SELECT x.pg_read_file FROM btrim('/etc/hostname') AS x",
        "refuse",
    ),
    ("SELECT ('/etc/passwd'::text).pg_read_file", "refuse"),
    ("SELECT * FROM pg_file_settings", "refuse"),
    ("SELECT * FROM pg_catalog.pg_config", "refuse"),
    ("SELECT U&\"\\0070g_read_file\"('/etc/passwd')", "refuse"),
    // Under fields typed `Expr*` (CaseWhen.result, NullTest.arg, …).
    (
        "SELECT CASE WHEN true THEN set_config('row_security', 'off', false) END",
        "refuse",
    ),
    (
        "SELECT 1 WHERE ('x'::text).pg_read_file IS NOT NULL",
        "refuse",
    ),
    ("SELECT 1 AS insert INTO t", "refuse"),
    ("SELECT 1 prepare INTO t", "refuse"),
    ("EXPLAIN ANALYZE SELECT 1 INTO t", "refuse"),
    ("WITH c AS (SELECT 1 INTO t) SELECT 1", "refuse"),
    ("SELECT 1 INTO t UNION SELECT 2", "refuse"),
    ("SELECT set_config('ROW_SECURITY', 'off', false)", "refuse"),
    ("SELECT set_config($1, 'off', false)", "refuse"),
    ("SET row_security = off", "refuse"),
    ("SET \"ROW_SECURITY\" = 0", "refuse"),
    ("SET ROLE admin", "refuse"),
    ("SET NAMES 'LATIN1'", "refuse"),
    ("SET standard_conforming_strings = off", "refuse"),
    ("CREATE TABLE t AS SELECT 1", "refuse"),
    ("EXPLAIN CREATE TABLE t AS SELECT 1", "refuse"),
    ("COPY t TO '/tmp/x'", "refuse"),
    ("COPY t FROM PROGRAM 'id'", "refuse"),
    ("SELECT 1; DROP TABLE t", "refuse"),
    ("VACUUM", "refuse"),
    ("selec 1", "unparseable"),
    (
        "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
        "harmless",
    ),
    (
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'row_security'",
        "refuse",
    ),
    (
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'work_mem' OR true",
        "refuse",
    ),
];

struct OracleVerdict {
    /// "harmless", "refuse" or "unparseable".
    v: String,
    /// (group, detail) for a refusal.
    reasons: Vec<(String, String)>,
    /// PostgreSQL's constant tokens: byte range and kind (`S`, `I`, `F`).
    consts: Vec<(usize, usize, char)>,
}

fn python() -> String {
    std::env::var("ROLEGATE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Write the texts, start the oracle on them (it runs while rolegate
/// classifies), and return a handle to collect the verdicts.
struct OracleRun {
    child: std::process::Child,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_oracle(texts: &[&str]) -> OracleRun {
    let script = manifest().join("tests/differential/oracle.py");
    let py = python();
    let probe = Command::new(&py)
        .args([
            "-c",
            "import pglast, pglast.parser; print(pglast.__version__)",
        ])
        .output();
    match probe {
        Err(e) => {
            panic!("cannot run `{py}` ({e}): the differential test needs Python 3; {INSTALL_HINT}")
        }
        Ok(o) if !o.status.success() => panic!(
            "`{py}` cannot import pglast ({}); {INSTALL_HINT}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(o) => println!(
            "oracle: {py}, pglast {}",
            String::from_utf8_lossy(&o.stdout).trim()
        ),
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("texts.jsonl");
    let output = dir.path().join("verdicts.jsonl");
    {
        let mut w = BufWriter::new(std::fs::File::create(&input).expect("create input"));
        writeln!(w, "{}", json!({ "denied": DENIED_FUNCTIONS })).unwrap();
        for t in texts {
            writeln!(w, "{}", json!({ "sql": t })).unwrap();
        }
        w.flush().unwrap();
    }
    let child = Command::new(&py)
        .arg(&script)
        .arg(&input)
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", script.display()));
    OracleRun {
        child,
        output,
        _dir: dir,
    }
}

fn finish_oracle(run: OracleRun, expected: usize) -> Vec<OracleVerdict> {
    let out = run
        .child
        .wait_with_output()
        .expect("waiting for the oracle");
    assert!(
        out.status.success(),
        "the oracle failed ({}):\n{}\n{}\n{INSTALL_HINT}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    read_verdicts(&run.output, expected)
}

fn read_verdicts(path: &Path, expected: usize) -> Vec<OracleVerdict> {
    let f = std::fs::File::open(path).expect("oracle output");
    let mut v = Vec::with_capacity(expected);
    for line in BufReader::new(f).lines() {
        let line = line.expect("reading oracle output");
        let j: Value = serde_json::from_str(&line).expect("oracle output is JSON");
        let reasons = j["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["group"].as_str().unwrap_or("?").to_string(),
                            r["detail"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let consts = j["c"]
            .as_array()
            .expect("the oracle reports constant tokens")
            .iter()
            .map(|c| {
                let at = |k: usize| c[k].as_u64().expect("a byte offset") as usize;
                let kind = c[2].as_str().and_then(|k| k.chars().next()).unwrap_or('?');
                (at(0), at(1), kind)
            })
            .collect();
        v.push(OracleVerdict {
            v: j["v"].as_str().unwrap_or("?").to_string(),
            reasons,
            consts,
        });
    }
    assert_eq!(
        v.len(),
        expected,
        "the oracle returned {} verdicts for {expected} texts",
        v.len()
    );
    v
}

fn excerpt(sql: &str) -> String {
    const MAX: usize = 300;
    let mut s: String = sql.chars().take(MAX).collect();
    if sql.chars().count() > MAX {
        let _ = write!(s, "… ({} bytes)", sql.len());
    }
    format!("{s:?}")
}

// ----------------------------------------------------------- cache folding

/// Checks of the verdict cache's literal folding over every text: each
/// folded span is one constant token to PostgreSQL's scanner (same bytes,
/// a string for a string, a number for a number), and the folded text gets
/// exactly the text's verdict. Returns the failures, described.
fn check_folding(
    texts: &[Text],
    ours: &[Option<policy::Verdict>],
    theirs: &[OracleVerdict],
) -> (usize, Vec<String>) {
    let switches = Switches::default();
    let mut folded = 0usize;
    let mut failures = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let sql = t.sql.as_bytes();
        let spans = policy::literal_spans(sql);
        if spans.is_empty() {
            continue;
        }
        folded += 1;
        for (range, lit) in &spans {
            let kinds: &[char] = match lit {
                policy::Literal::String => &['S'],
                // An integer too large for int8 is a numeric to PostgreSQL.
                policy::Literal::Integer => &['I', 'F'],
                policy::Literal::Decimal => &['F'],
            };
            let agrees = theirs[i]
                .consts
                .iter()
                .any(|&(s, e, k)| s == range.start && e == range.end && kinds.contains(&k));
            if !agrees {
                failures.push(format!(
                    "{}: folded {lit:?} at {range:?} ({:?}) is not one such token to PostgreSQL's scanner (its constants: {:?})\n    sql: {}",
                    t.origin,
                    String::from_utf8_lossy(&sql[range.clone()]),
                    theirs[i].consts,
                    excerpt(&t.sql)
                ));
            }
        }
        let Some(shape) = policy::literal_shape(sql) else {
            failures.push(format!("{}: spans but no shape", t.origin));
            continue;
        };
        let of_shape = policy::classify(&shape, &switches);
        if ours[i].as_ref() != Some(&of_shape) {
            failures.push(format!(
                "{}: the folded text's verdict {:?} differs from the text's {:?}\n    sql: {}\n    shape: {}",
                t.origin,
                of_shape,
                ours[i],
                excerpt(&t.sql),
                excerpt(&String::from_utf8_lossy(&shape))
            ));
        }
    }
    (folded, failures)
}

// -------------------------------------------------------------------- test

#[test]
fn policy_agrees_with_postgres_parser() {
    let started = Instant::now();
    let (corpus, not_utf8) = corpus();
    let generated = generated();
    let mut texts: Vec<Text> = Vec::new();
    for (sql, _) in ORACLE_SELF_CHECK {
        texts.push(Text {
            origin: "<oracle self-check>".to_string(),
            sql: sql.to_string(),
        });
    }
    let n_check = texts.len();
    let n_corpus = corpus.len();
    texts.extend(corpus);
    texts.extend(generated);
    println!(
        "differential: {} corpus entries ({not_utf8} not UTF-8, left to tests/policy_corpus.rs), \
         {} generated (seed {SEED:#x}), {n_check} oracle self-checks; generated in {:.1?}",
        n_corpus,
        texts.len() - n_corpus - n_check,
        started.elapsed()
    );

    let sqls: Vec<&str> = texts.iter().map(|t| t.sql.as_str()).collect();
    let oracle = start_oracle(&sqls);

    // rolegate classifies while the oracle runs.
    let t0 = Instant::now();
    let switches = Switches::default();
    let mut ours = Vec::with_capacity(texts.len());
    let mut panics = Vec::new();
    for t in &texts {
        match std::panic::catch_unwind(|| policy::classify(t.sql.as_bytes(), &switches)) {
            Ok(v) => ours.push(Some(v)),
            Err(_) => {
                panics.push(format!("{}: {}", t.origin, excerpt(&t.sql)));
                ours.push(None);
            }
        }
    }
    let classify_time = t0.elapsed();
    let t1 = Instant::now();
    let theirs = finish_oracle(oracle, texts.len());
    println!(
        "differential: rolegate classified {} texts in {classify_time:.1?} ({:.0} µs each); \
         the oracle finished {:.1?} later",
        texts.len(),
        classify_time.as_secs_f64() * 1e6 / texts.len() as f64,
        t1.elapsed()
    );

    // The oracle checks itself first.
    let mut self_check = Vec::new();
    for (i, (sql, want)) in ORACLE_SELF_CHECK.iter().enumerate() {
        if theirs[i].v != *want {
            self_check.push(format!(
                "  {sql:?}: oracle says {} {:?}, want {want}",
                theirs[i].v, theirs[i].reasons
            ));
        }
    }
    assert!(
        self_check.is_empty(),
        "the pglast oracle is broken (its verdicts on known texts are wrong):\n{}",
        self_check.join("\n")
    );

    let mut unsafe_groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut false_refusals: Vec<usize> = Vec::new();
    let mut false_by_class: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut unparseable = 0usize;
    let mut unparseable_allowed = 0usize;
    let mut agree_refuse = 0usize;
    let mut agree_allow = 0usize;
    for (i, t) in texts.iter().enumerate().skip(n_check) {
        let Some(v) = &ours[i] else { continue };
        let o = &theirs[i];
        match o.v.as_str() {
            "unparseable" => {
                unparseable += 1;
                if v.allowed {
                    unparseable_allowed += 1;
                }
            }
            "refuse" if v.allowed => {
                let group = o.reasons.first().map_or("?".to_string(), |r| r.0.clone());
                unsafe_groups.entry(group).or_default().push(i);
            }
            "refuse" => agree_refuse += 1,
            "harmless" if !v.allowed => {
                false_refusals.push(i);
                *false_by_class.entry(v.class.as_str()).or_default() += 1;
            }
            "harmless" => agree_allow += 1,
            other => panic!("oracle verdict {other:?} for {}", t.origin),
        }
    }
    let n = texts.len() - n_check;
    let n_unsafe: usize = unsafe_groups.values().map(Vec::len).sum();

    let mut report = String::new();
    let _ = writeln!(
        report,
        "differential: agreement: {agree_refuse} refused by both, {agree_allow} allowed by both; \
         {unparseable} unparseable by pglast ({unparseable_allowed} of them allowed by rolegate: \
         no requirement, the server rejects them)"
    );
    let _ = writeln!(
        report,
        "differential: {} false refusals (oracle: harmless; rolegate refuses) by rolegate class: {:?}",
        false_refusals.len(),
        false_by_class
    );
    for &i in false_refusals.iter().take(FALSE_REFUSAL_SAMPLE) {
        let v = ours[i].as_ref().unwrap();
        let _ = writeln!(
            report,
            "  false refusal {} [{}: {}]\n    sql: {}",
            texts[i].origin,
            v.class.as_str(),
            v.reason,
            excerpt(&texts[i].sql)
        );
    }
    if n_unsafe > 0 {
        let _ = writeln!(
            report,
            "\ndifferential: {n_unsafe} UNSAFE disagreements (oracle: must refuse; rolegate allows), \
             by the oracle's first reason:"
        );
        let mut groups: Vec<(&String, &Vec<usize>)> = unsafe_groups.iter().collect();
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        for (g, idx) in &groups {
            let _ = writeln!(report, "  {:>6}  {g}", idx.len());
        }
        // Up to MAX_UNSAFE_SHOWN examples, spread over the groups.
        let per_group = (MAX_UNSAFE_SHOWN / groups.len()).max(1);
        let mut shown = 0;
        let mut pass = 0;
        while shown < MAX_UNSAFE_SHOWN.min(n_unsafe) {
            let mut any = false;
            for (g, idx) in &groups {
                for &i in idx.iter().skip(pass * per_group).take(per_group) {
                    if shown >= MAX_UNSAFE_SHOWN {
                        break;
                    }
                    any = true;
                    shown += 1;
                    let reasons: Vec<String> = theirs[i]
                        .reasons
                        .iter()
                        .map(|(g, d)| format!("{g} ({d})"))
                        .collect();
                    let _ = writeln!(
                        report,
                        "\n  UNSAFE {} [{g}]\n    oracle: {}\n    sql: {}",
                        texts[i].origin,
                        reasons.join("; "),
                        excerpt(&texts[i].sql)
                    );
                }
            }
            if !any {
                break;
            }
            pass += 1;
        }
    }
    if !panics.is_empty() {
        let _ = writeln!(
            report,
            "\ndifferential: classify panicked on {} texts:\n  {}",
            panics.len(),
            panics
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    let (folded, fold_failures) = check_folding(&texts, &ours, &theirs);
    let _ = writeln!(
        report,
        "differential: verdict-cache folding: {folded} texts fold constants, {} disagreements",
        fold_failures.len()
    );
    for f in fold_failures.iter().take(MAX_UNSAFE_SHOWN) {
        let _ = writeln!(report, "  FOLDING {f}");
    }
    let last = format!(
        "differential: {n} texts, {n_unsafe} unsafe, {} false refusals, {unparseable} unparseable by pglast, {} folding disagreements",
        false_refusals.len(),
        fold_failures.len()
    );
    println!("{report}");
    println!("differential: took {:.1?}", started.elapsed());
    println!("{last}");
    assert!(
        fold_failures.is_empty(),
        "the verdict cache folds constants where PostgreSQL reads them otherwise, or where the verdict depends on them; see the report above\n{last}"
    );
    if n_unsafe > 0 || !panics.is_empty() {
        panic!(
            "{n_unsafe} texts that PostgreSQL's parse tree says must be refused are allowed by rolegate \
             ({} classify panics); see the report above\n{last}",
            panics.len()
        );
    }
}
