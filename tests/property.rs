//! A property test against a live proxy: several hundred random and
//! mutated frontend byte streams (random bytes; mutated StartupMessages;
//! after a valid SCRAM login, mutated Query/Parse/Bind/Execute/… streams
//! with flipped length bytes, truncations, random tags, invalid UTF-8 and
//! refused statements such as `CREATE TABLE pwned_probe.pwned_<n>`), each
//! on its own connection. Properties: after every batch the proxy process
//! is running, a bystander session opened at the start still answers
//! `SELECT 1`, and a new login works; every ErrorResponse carries a
//! SQLSTATE; and at the end no refused statement reached the server (the
//! runtime role is given CREATE on a probe schema so that a slipped-through
//! `CREATE TABLE`/`DROP TABLE` would really take effect, and the probe
//! schema is checked through a superuser connection).
//!
//! The cases come from a seeded RNG: the seed is printed and named in every
//! failure; set `ROLEGATE_PROPERTY_SEED=<n>` to replay a run.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Raw, Recv};
use common::{WEB_PASSWORD, harness};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CASES: usize = 400;
const BATCH: usize = 50;
const CONCURRENCY: usize = 10;
/// A case ends when the proxy has been silent this long (a truncated
/// message legitimately waits for more bytes, as PostgreSQL does).
const QUIET: Duration = Duration::from_millis(1200);
/// A case that takes longer than this is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(60);
const DEFAULT_SEED: u64 = 0x0dd5_eed5_2026;
const SCHEMA: &str = "pwned_probe";

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Random bytes as the first thing on the connection.
    RandomBytes,
    /// A StartupMessage with random mutations.
    MutatedStartup,
    /// A valid login, then a mutated stream of frontend messages.
    AfterLogin,
}

struct Case {
    idx: usize,
    kind: Kind,
    bytes: Vec<u8>,
}

/// Statement texts: harmless, refused, and refused ones that the runtime
/// role could really run on the server (the probe schema grants CREATE).
fn sql_text(rng: &mut StdRng, case: usize, j: usize) -> Vec<u8> {
    let pwned = format!("{SCHEMA}.pwned_{case}_{j}");
    let texts: Vec<String> = vec![
        "SELECT 1".into(),
        "SELECT $1::int".into(),
        "SELECT repeat('x', 100)".into(),
        "BEGIN".into(),
        "COMMIT".into(),
        format!("CREATE TABLE {pwned} (a int)"),
        format!("SELECT 1; CREATE TABLE {pwned} (a int)"),
        format!("/* x */ CREATE TABLE {pwned} (a int); SELECT 1"),
        format!("CrEaTe TaBlE {pwned} AS SELECT 1"),
        format!("SELECT 1 -- \nCREATE TABLE {pwned} (a int)"),
        format!("PREPARE p{j} AS SELECT 1; CREATE TABLE {pwned} (a int)"),
        format!("DO $$BEGIN CREATE TABLE {pwned} (a int); END$$"),
        format!("DROP TABLE {SCHEMA}.sentinel"),
        format!("ALTER TABLE {SCHEMA}.sentinel RENAME TO pwned_{case}_{j}"),
        "SET row_security = off".into(),
        "SET ROLE postgres".into(),
        "SELECT pg_read_file('/etc/passwd')".into(),
        "SELECT 'unterminated".into(),
        "".into(),
        ";;;".into(),
    ];
    let mut t = texts[rng.random_range(0..texts.len())].clone().into_bytes();
    match rng.random_range(0..10) {
        // Invalid UTF-8 somewhere.
        0 if !t.is_empty() => {
            let at = rng.random_range(0..t.len());
            t.insert(at, [0xff, 0xc3, 0x80, 0xed][rng.random_range(0..4)]);
        }
        // Random printable noise.
        1 => {
            for _ in 0..rng.random_range(1..20) {
                t.push(rng.random_range(0x20..0x7f));
            }
        }
        // An embedded NUL (the server stops reading the string there).
        2 if !t.is_empty() => {
            let at = rng.random_range(0..t.len());
            t.insert(at, 0);
        }
        _ => {}
    }
    t
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// One frontend message (tag + length + body) of a random kind.
fn frontend_message(rng: &mut StdRng, case: usize, j: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let tag = match rng.random_range(0..14) {
        0..=3 => {
            cstr(&mut b, &sql_text(rng, case, j));
            b'Q'
        }
        4..=6 => {
            let name = ["", "s1", "p"][rng.random_range(0..3)];
            cstr(&mut b, name.as_bytes());
            cstr(&mut b, &sql_text(rng, case, j));
            let n = rng.random_range(0..3i16);
            b.extend_from_slice(&n.to_be_bytes());
            for _ in 0..n {
                b.extend_from_slice(&rng.random_range(0..30u32).to_be_bytes());
            }
            b'P'
        }
        7 => {
            cstr(&mut b, ["", "c1"][rng.random_range(0..2)].as_bytes());
            cstr(&mut b, ["", "s1", "p"][rng.random_range(0..3)].as_bytes());
            let formats = rng.random_range(0..3i16);
            b.extend_from_slice(&formats.to_be_bytes());
            for _ in 0..formats {
                b.extend_from_slice(&rng.random_range(0..2i16).to_be_bytes());
            }
            let params = rng.random_range(0..3i16);
            b.extend_from_slice(&params.to_be_bytes());
            for _ in 0..params {
                if rng.random_bool(0.2) {
                    b.extend_from_slice(&(-1i32).to_be_bytes());
                } else {
                    let v = format!("{}", rng.random_range(0..1000));
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
            }
            b.extend_from_slice(&0i16.to_be_bytes());
            b'B'
        }
        8 => {
            cstr(&mut b, ["", "c1"][rng.random_range(0..2)].as_bytes());
            b.extend_from_slice(&rng.random_range(0..3i32).to_be_bytes());
            b'E'
        }
        9 => {
            b.push([b'S', b'P'][rng.random_range(0..2)]);
            cstr(&mut b, ["", "s1", "c1"][rng.random_range(0..3)].as_bytes());
            [b'D', b'C'][rng.random_range(0..2)]
        }
        10 => [b'S', b'H'][rng.random_range(0..2)],
        11 => {
            // FunctionCall by OID, CopyData/CopyDone/CopyFail outside COPY.
            let t = [b'F', b'd', b'c', b'f'][rng.random_range(0..4)];
            for _ in 0..rng.random_range(0..16) {
                b.push(rng.random());
            }
            t
        }
        _ => {
            // Any tag at all, random body.
            for _ in 0..rng.random_range(0..40) {
                b.push(rng.random());
            }
            rng.random()
        }
    };
    raw::msg(tag, &b)
}

/// Apply 1–3 random mutations to `s`. `starts` are the offsets of message
/// starts, so length and tag bytes can be hit on purpose.
fn mutate(rng: &mut StdRng, s: &mut Vec<u8>, starts: &[usize]) {
    for _ in 0..rng.random_range(1..4) {
        if s.is_empty() {
            return;
        }
        match rng.random_range(0..8) {
            // A length byte of some message.
            0 | 1 if !starts.is_empty() => {
                let at = starts[rng.random_range(0..starts.len())] + rng.random_range(1..5);
                if at < s.len() {
                    s[at] = match rng.random_range(0..4) {
                        0 => 0xff,
                        1 => 0,
                        2 => s[at].wrapping_add(1),
                        _ => rng.random(),
                    };
                }
            }
            // A tag.
            2 if !starts.is_empty() => {
                let at = starts[rng.random_range(0..starts.len())];
                if at < s.len() {
                    s[at] = rng.random();
                }
            }
            // Truncate.
            3 => {
                let at = rng.random_range(0..s.len());
                s.truncate(at);
            }
            // Insert random bytes.
            4 => {
                let at = rng.random_range(0..=s.len());
                let n = rng.random_range(1..8);
                for i in 0..n {
                    s.insert(at + i, rng.random());
                }
            }
            // Delete a byte.
            5 => {
                let at = rng.random_range(0..s.len());
                s.remove(at);
            }
            // Any byte.
            _ => {
                let at = rng.random_range(0..s.len());
                s[at] ^= 1 << rng.random_range(0..8);
            }
        }
    }
}

fn generate(rng: &mut StdRng, idx: usize) -> Case {
    let db = harness().model.database.clone();
    let kind = match rng.random_range(0..10) {
        0 | 1 => Kind::RandomBytes,
        2 | 3 => Kind::MutatedStartup,
        _ => Kind::AfterLogin,
    };
    let bytes = match kind {
        Kind::RandomBytes => {
            let mut v = Vec::new();
            if rng.random_bool(0.5) {
                // A plausible header, so the body gets read.
                v.extend_from_slice(&rng.random_range(8..400i32).to_be_bytes());
                v.extend_from_slice(&196_608u32.to_be_bytes());
            }
            for _ in 0..rng.random_range(0..400) {
                v.push(rng.random());
            }
            v
        }
        Kind::MutatedStartup => {
            let mut params = vec![("user", "web".to_string()), ("database", db)];
            for (k, v) in [
                ("application_name", "prop"),
                ("options", "-c row_security=off"),
                ("client_encoding", "UTF8"),
                ("x.y", "z"),
                ("replication", "true"),
            ] {
                if rng.random_bool(0.3) {
                    params.push((k, v.to_string()));
                }
            }
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut v = raw::startup_packet(&p);
            mutate(rng, &mut v, &[]);
            // Hit the length field itself half the time.
            if rng.random_bool(0.5) && v.len() >= 4 {
                v[rng.random_range(0..4)] = rng.random();
            }
            v
        }
        Kind::AfterLogin => {
            let mut v = Vec::new();
            let mut starts = Vec::new();
            for j in 0..rng.random_range(1..7) {
                starts.push(v.len());
                v.extend_from_slice(&frontend_message(rng, idx, j));
            }
            if rng.random_bool(0.3) {
                // The extended-protocol way to run a refused statement.
                starts.push(v.len());
                v.extend_from_slice(&raw::parse(
                    "",
                    &format!("CREATE TABLE {SCHEMA}.pwned_{idx}_x (a int)"),
                ));
                v.extend_from_slice(&raw::bind("", ""));
                v.extend_from_slice(&raw::execute(""));
                v.extend_from_slice(&raw::sync());
            }
            if rng.random_bool(0.7) {
                mutate(rng, &mut v, &starts);
            }
            if rng.random_bool(0.6) {
                // A marker that ends the case early when the stream is
                // still in sync.
                v.extend_from_slice(&raw::sync());
                v.extend_from_slice(&raw::query("SELECT 4242"));
            }
            v
        }
    };
    Case { idx, kind, bytes }
}

/// What one case saw, for the failure message.
#[derive(Debug, Default)]
struct Outcome {
    messages: usize,
    errors: Vec<String>,
    closed: bool,
}

async fn run_case(port: u16, case: &Case, seed: u64) -> Outcome {
    let db = harness().model.database.clone();
    let mut conn = match case.kind {
        Kind::AfterLogin => {
            match Raw::login(port, &[("user", "web"), ("database", &db)], WEB_PASSWORD).await {
                Ok((r, _)) => r,
                Err(m) => panic!(
                    "seed {seed} case {}: login failed: {:?}",
                    case.idx,
                    m.field(b'M')
                ),
            }
        }
        _ => Raw::connect(port).await,
    };
    // The proxy may close (or reset) before everything is written.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut conn.stream, &case.bytes).await;
    let mut out = Outcome::default();
    let mut marker = false;
    loop {
        match conn.recv_within(QUIET).await {
            Recv::Msg(m) => {
                out.messages += 1;
                if m.tag == b'E' && matches!(case.kind, Kind::AfterLogin) {
                    let code = m.sqlstate().unwrap_or_default();
                    assert!(
                        code.len() == 5 && code.bytes().all(|c| c.is_ascii_alphanumeric()),
                        "seed {seed} case {}: ErrorResponse without a valid SQLSTATE: {m:?}",
                        case.idx
                    );
                    out.errors.push(code);
                }
                if m.tag == b'D' && m.body.ends_with(b"4242") {
                    marker = true;
                }
                if marker && m.tag == b'Z' {
                    break;
                }
            }
            Recv::Closed => {
                out.closed = true;
                break;
            }
            Recv::Quiet => break,
        }
    }
    out
}

async fn assert_healthy(
    proxy: &mut common::ProxyProcess,
    bystander: &tokio_postgres::Client,
    seed: u64,
    after: usize,
) {
    assert!(
        proxy.is_running(),
        "seed {seed}: rolegate exited after case {after}\n{}",
        proxy.logs()
    );
    let row = tokio::time::timeout(
        Duration::from_secs(30),
        bystander.query_one("SELECT 1::int4", &[]),
    )
    .await
    .unwrap_or_else(|_| panic!("seed {seed}: the bystander hung after case {after}"))
    .unwrap_or_else(|e| panic!("seed {seed}: the bystander failed after case {after}: {e}"));
    assert_eq!(row.get::<_, i32>(0), 1);
    let db = harness().model.database.clone();
    let (mut r, _) = Raw::login(
        proxy.port,
        &[("user", "web"), ("database", &db)],
        WEB_PASSWORD,
    )
    .await
    .unwrap_or_else(|m| {
        panic!(
            "seed {seed}: a new login failed after case {after}: {:?}",
            m.field(b'M')
        )
    });
    r.send(&raw::query("SELECT 1")).await;
    assert_eq!(
        raw::tags(&r.until_ready().await),
        "TDCZ",
        "seed {seed}: a new session after case {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_streams_never_break_the_proxy_or_the_policy() {
    let seed = std::env::var("ROLEGATE_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("property seed: {seed} (replay with ROLEGATE_PROPERTY_SEED={seed})");
    let h = harness();
    let runtime = h.model.runtime.clone();

    // Let the runtime role really create and drop in the probe schema, so a
    // refused statement that slipped through would leave a trace.
    h.psql_super(&format!(
        "CREATE SCHEMA IF NOT EXISTS {SCHEMA};
         GRANT USAGE, CREATE ON SCHEMA {SCHEMA} TO {runtime};
         CREATE TABLE IF NOT EXISTS {SCHEMA}.sentinel (a int);
         ALTER TABLE {SCHEMA}.sentinel OWNER TO {runtime};"
    ));
    // Control: directly (not through the proxy) the server does let it.
    h.psql_as(
        &runtime,
        &h.model.runtime_password,
        &format!("CREATE TABLE {SCHEMA}.control (a int); DROP TABLE {SCHEMA}.control;"),
    );

    let mut proxy = h.start_proxy();
    let bystander = common::connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("bystander login");
    bystander
        .query_one("SELECT 1", &[])
        .await
        .expect("bystander");
    // Control: through the proxy, the same statement is refused.
    let e = bystander
        .batch_execute(&format!("CREATE TABLE {SCHEMA}.pwned_control (a int)"))
        .await
        .expect_err("DDL through the proxy");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("42501"));

    let mut rng = StdRng::seed_from_u64(seed);
    let cases: Vec<Case> = (0..CASES).map(|i| generate(&mut rng, i)).collect();
    let started = Instant::now();
    let (mut closed, mut quiet_or_done, mut errors) = (0, 0, 0);
    for batch in cases.chunks(BATCH) {
        let port = proxy.port;
        let outcomes: Vec<(usize, Outcome)> = futures_util::stream::iter(batch.iter())
            .map(|case| async move {
                let out = tokio::time::timeout(CASE_LIMIT, run_case(port, case, seed))
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "seed {seed} case {} ({:?}, {} bytes) hung for {CASE_LIMIT:?}",
                            case.idx,
                            case.kind,
                            case.bytes.len()
                        )
                    });
                (case.idx, out)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (_, o) in &outcomes {
            if o.closed {
                closed += 1;
            } else {
                quiet_or_done += 1;
            }
            errors += o.errors.len();
        }
        let last = batch.last().map(|c| c.idx).unwrap_or(0);
        assert_healthy(&mut proxy, &bystander, seed, last).await;
    }
    println!(
        "{CASES} cases in {:?}: {closed} closed by the proxy, {quiet_or_done} left open, \
         {errors} ErrorResponses after login",
        started.elapsed()
    );

    // Every runtime backend has finished what it was sent before the
    // catalogue is checked (idle ones may stay: upstream reuse).
    drop(bystander);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = h.psql_super(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{runtime}' AND state <> 'idle'"
        ));
        if n.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runtime backends still busy after 60 s: {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tables = h.psql_super(&format!(
        "SELECT coalesce(string_agg(relname, ',' ORDER BY relname), '') FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{SCHEMA}'"
    ));
    assert_eq!(
        tables.trim(),
        "sentinel",
        "seed {seed}: refused statements reached the server (tables in {SCHEMA})"
    );
}
