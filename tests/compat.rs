//! Driver compatibility: real client drivers through `rolegate serve` to a
//! real PostgreSQL. One test per driver, so a failure names the driver:
//! psycopg 3 (incl. pipeline mode and binary COPY), asyncpg, node-postgres,
//! the PostgreSQL JDBC driver, each run as a script under `tests/compat/`,
//! and sqlx, driven here in Rust. Every driver logs in as the runtime client
//! `web` with SCRAM over TLS verifying the proxy's certificate, then does
//! CRUD, prepared statements, transactions, a 100k-row result, COPY, a
//! refused DDL (42501, connection still usable) and cancel / statement
//! timeout (57014). `.ci/run` installs the interpreters and packages.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, Row};

/// A whole driver script may take this long on a loaded 2-core machine; it
/// is a hang guard, not a performance assertion.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// A fresh table for one driver, created by the migrator so the default
/// privileges grant DML on it to the runtime role. The cluster belongs to
/// this test binary, so a fixed name per driver is enough.
fn driver_table(driver: &str) -> String {
    let name = format!("compat_{driver}");
    harness().psql_migrator(&format!(
        "drop table if exists {name}; create table {name} (id int primary key, v text, b bytea)"
    ));
    name
}

/// Run a program that is a required tool; a missing one fails the test with
/// how to install it.
fn require(program: &str, args: &[&str], hint: &str) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&out.stderr));
            s.trim().to_string()
        }
        Ok(out) => panic!(
            "`{program} {}` failed ({}):\n{}{}\n{hint}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run `{program}`: {e}\n{hint}"),
    }
}

/// Run one driver script against a fresh proxy with the ROLEGATE_*
/// connection variables; panic with its output (and the proxy's log) unless
/// it exits 0.
fn run_driver(driver: &str, mut cmd: Command) {
    let h = harness();
    let proxy = h.start_proxy();
    let table = driver_table(driver);
    cmd.env("ROLEGATE_HOST", "127.0.0.1")
        .env("ROLEGATE_PORT", proxy.port.to_string())
        .env("ROLEGATE_USER", "web")
        .env("ROLEGATE_PASSWORD", WEB_PASSWORD)
        .env("ROLEGATE_DB", &h.model.database)
        .env("ROLEGATE_CA", &h.pki.ca_file)
        .env("ROLEGATE_WRONG_CA", &h.pki.wrong_ca_file)
        .env("ROLEGATE_TABLE", &table)
        .env("ROLEGATE_RUNTIME_ROLE", &h.model.runtime)
        // libpq-based drivers must not pick up the developer's settings.
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .env_remove("PGOPTIONS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {driver} script: {e}"));
    // Drain both pipes on threads so a chatty script cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    // Shown with --nocapture, and by the harness when the test fails.
    println!("{stdout}");
    match status {
        Some(s) if s.success() => {}
        other => {
            let what = match other {
                Some(s) => format!("exited with {s}"),
                None => format!("did not finish within {SCRIPT_TIMEOUT:?} and was killed"),
            };
            let logs = proxy.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            panic!(
                "the {driver} compatibility script {what}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- rolegate log (last 60 lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn python_script(driver: &str, module: &str, script: &str) {
    let py = python();
    let version = require(
        &py,
        &[
            "-c",
            &format!("import {module}; print({module}.__version__)"),
        ],
        "install the pinned Python packages: python3 -m pip install -r tests/compat/requirements.txt",
    );
    println!("{module} {version}");
    let mut cmd = Command::new(&py);
    cmd.arg("-u").arg(compat_dir().join("python").join(script));
    run_driver(driver, cmd);
}

#[test]
fn psycopg3() {
    python_script("psycopg", "psycopg", "psycopg_compat.py");
}

#[test]
fn asyncpg() {
    python_script("asyncpg", "asyncpg", "asyncpg_compat.py");
}

#[test]
fn node_postgres() {
    let dir = compat_dir().join("node");
    let node_version = require(
        "node",
        &["--version"],
        "install Node.js: apt-get install nodejs npm",
    );
    println!("node {node_version}");
    assert!(
        dir.join("node_modules/pg/package.json").exists(),
        "node-postgres is not installed: run `npm ci` in tests/compat/node"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("pg_compat.js")).current_dir(&dir);
    run_driver("node", cmd);
}

/// Debian's libpostgresql-jdbc-java installs the driver here.
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[test]
fn jdbc() {
    let jar = std::env::var("ROLEGATE_JDBC_JAR").unwrap_or_else(|_| JDBC_JAR.to_string());
    assert!(
        Path::new(&jar).exists(),
        "the PostgreSQL JDBC driver is missing at {jar}: apt-get install libpostgresql-jdbc-java (or set ROLEGATE_JDBC_JAR)"
    );
    let hint = "install a JDK: apt-get install default-jdk-headless";
    println!("{}", require("javac", &["-version"], hint));
    println!("{}", require("java", &["-version"], hint));
    let classes = tempfile::tempdir().expect("class dir");
    let source = compat_dir().join("java/Compat.java");
    let out = Command::new("javac")
        .args(["-Xlint:none", "-d"])
        .arg(classes.path())
        .arg("-cp")
        .arg(&jar)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run javac: {e}\n{hint}"));
    assert!(
        out.status.success(),
        "javac {} failed:\n{}{}",
        source.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}:{jar}", classes.path().display()))
        .arg("Compat");
    run_driver("jdbc", cmd);
}

/// The SQLSTATE of a sqlx error, if the server (or proxy) sent one.
fn sqlx_state(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn sqlx() {
    let h = harness();
    let proxy = h.start_proxy();
    driver_table("sqlx");
    let opts = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(proxy.port)
        .username("web")
        .password(WEB_PASSWORD)
        .database(&h.model.database)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(&h.pki.ca_file);

    // A certificate from another CA is refused by the driver.
    let wrong = opts.clone().ssl_root_cert(&h.pki.wrong_ca_file);
    assert!(
        sqlx::PgConnection::connect_with(&wrong).await.is_err(),
        "sqlx accepted the proxy's certificate with the wrong CA"
    );

    let mut conn = sqlx::PgConnection::connect_with(&opts)
        .await
        .expect("sqlx connect (SCRAM over TLS, verify-full)");
    let who: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await
        .expect("current_user");
    assert_eq!(who, h.model.runtime);

    // CRUD with bound parameters; sqlx prepares (and caches) every statement.
    for (id, v) in [(1, "one"), (2, "two"), (3, "three")] {
        sqlx::query("insert into compat_sqlx (id, v, b) values ($1, $2, $3)")
            .bind(id)
            .bind(v)
            .bind(vec![id as u8, 0u8, 255u8])
            .execute(&mut conn)
            .await
            .expect("insert");
    }
    let n = sqlx::query("update compat_sqlx set v = $1 where id = $2")
        .bind("uno")
        .bind(1)
        .execute(&mut conn)
        .await
        .expect("update")
        .rows_affected();
    assert_eq!(n, 1);
    let rows = sqlx::query("select id, v, b from compat_sqlx order by id")
        .fetch_all(&mut conn)
        .await
        .expect("select");
    let got: Vec<(i32, String, Vec<u8>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            (1, "uno".to_string(), vec![1, 0, 255]),
            (2, "two".to_string(), vec![2, 0, 255]),
            (3, "three".to_string(), vec![3, 0, 255]),
        ]
    );
    let n = sqlx::query("delete from compat_sqlx where id >= $1")
        .bind(2)
        .execute(&mut conn)
        .await
        .expect("delete")
        .rows_affected();
    assert_eq!(n, 2);

    // The statement cache: the same text again reuses the prepared statement.
    for _ in 0..3 {
        let v: String = sqlx::query_scalar("select v from compat_sqlx where id = $1")
            .bind(1)
            .fetch_one(&mut conn)
            .await
            .expect("cached prepared statement");
        assert_eq!(v, "uno");
    }
    let prepared: i64 =
        sqlx::query_scalar("select count(*) from pg_prepared_statements where not from_sql")
            .fetch_one(&mut conn)
            .await
            .expect("pg_prepared_statements");
    assert!(
        prepared >= 1,
        "sqlx's statements should be prepared server-side"
    );

    // Row level security on notes follows app.tenant.
    sqlx::query("select set_config('app.tenant', $1, false)")
        .bind("globex")
        .execute(&mut conn)
        .await
        .expect("set_config app.tenant");
    let tenants: Vec<String> = sqlx::query_scalar("select distinct tenant from notes")
        .fetch_all(&mut conn)
        .await
        .expect("notes");
    assert_eq!(tenants, ["globex"]);

    // Transactions: commit, rollback, and a savepoint (nested begin).
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("insert into compat_sqlx (id, v) values (10, 'committed')")
        .execute(&mut *tx)
        .await
        .expect("insert in tx");
    {
        let mut sp = tx.begin().await.expect("savepoint");
        sqlx::query("insert into compat_sqlx (id, v) values (11, 'savepoint')")
            .execute(&mut *sp)
            .await
            .expect("insert in savepoint");
        sp.rollback().await.expect("rollback to savepoint");
    }
    tx.commit().await.expect("commit");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("insert into compat_sqlx (id, v) values (12, 'rolled back')")
        .execute(&mut *tx)
        .await
        .expect("insert in tx");
    tx.rollback().await.expect("rollback");
    let ids: Vec<i32> = sqlx::query_scalar("select id from compat_sqlx where id >= 10 order by id")
        .fetch_all(&mut conn)
        .await
        .expect("select after transactions");
    assert_eq!(ids, [10]);

    // A large result, streamed.
    let mut stream =
        sqlx::query("select g, md5(g::text) from generate_series(1, 100000) g").fetch(&mut conn);
    let (mut count, mut sum) = (0i64, 0i64);
    while let Some(row) = stream.try_next().await.expect("stream row") {
        count += 1;
        sum += i64::from(row.get::<i32, _>(0));
    }
    drop(stream);
    assert_eq!((count, sum), (100_000, 100_000 * 100_001 / 2));

    // COPY in and out, text and binary.
    let mut copy = conn
        .copy_in_raw("copy compat_sqlx (id, v) from stdin")
        .await
        .expect("copy in");
    let data: String = (100..1100).map(|i| format!("{i}\tcopied {i}\n")).collect();
    copy.send(data.as_bytes()).await.expect("copy data");
    assert_eq!(copy.finish().await.expect("copy finish"), 1000);
    let chunks: Vec<_> = conn
        .copy_out_raw("copy (select id, v from compat_sqlx where id >= 100 order by id) to stdout")
        .await
        .expect("copy out")
        .try_collect()
        .await
        .expect("copy out data");
    let text: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(text).expect("utf-8"), data);
    let chunks: Vec<_> = conn
        .copy_out_raw(
            "copy (select id, v, b from compat_sqlx where id >= 100) to stdout (format binary)",
        )
        .await
        .expect("binary copy out")
        .try_collect()
        .await
        .expect("binary copy out data");
    let binary: Vec<u8> = chunks.concat();
    assert!(
        binary.starts_with(b"PGCOPY\n\xff\r\n\0"),
        "binary COPY header"
    );
    sqlx::query("delete from compat_sqlx where id >= 100")
        .execute(&mut conn)
        .await
        .expect("delete copied");
    let mut copy = conn
        .copy_in_raw("copy compat_sqlx (id, v, b) from stdin (format binary)")
        .await
        .expect("binary copy in");
    copy.send(binary.as_slice())
        .await
        .expect("binary copy data");
    assert_eq!(copy.finish().await.expect("binary copy finish"), 1000);

    // A refused DDL is an ordinary database error with 42501; the
    // connection carries on, also for a statement prepared after it.
    for ddl in ["create table compat_x (i int)", "drop table compat_sqlx"] {
        let e = sqlx::query(ddl)
            .execute(&mut conn)
            .await
            .expect_err("DDL must be refused");
        assert_eq!(sqlx_state(&e).as_deref(), Some("42501"), "{ddl}: {e}");
        assert!(e.to_string().contains("rolegate"), "{e}");
        let one: i32 = sqlx::query_scalar("select 1")
            .fetch_one(&mut conn)
            .await
            .expect("connection usable after the refusal");
        assert_eq!(one, 1);
    }
    // Through the simple protocol too.
    let e = sqlx::raw_sql("alter table notes add column x int")
        .execute(&mut conn)
        .await
        .expect_err("DDL must be refused");
    assert_eq!(sqlx_state(&e).as_deref(), Some("42501"), "{e}");
    let n: i64 = sqlx::query_scalar("select count(*) from compat_sqlx")
        .fetch_one(&mut conn)
        .await
        .expect("connection usable after the refusal");
    assert_eq!(n, 1002);

    // sqlx has no cancel API: statement_timeout is its way to stop a query.
    sqlx::raw_sql("set statement_timeout = '500ms'")
        .execute(&mut conn)
        .await
        .expect("set statement_timeout");
    let e = sqlx::query("select pg_sleep(30)")
        .execute(&mut conn)
        .await
        .expect_err("statement_timeout");
    assert_eq!(sqlx_state(&e).as_deref(), Some("57014"), "{e}");
    sqlx::raw_sql("reset statement_timeout")
        .execute(&mut conn)
        .await
        .expect("reset statement_timeout");
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut conn)
        .await
        .expect("connection usable after the timeout");
    assert_eq!(one, 1);
    conn.close().await.expect("close");
}
