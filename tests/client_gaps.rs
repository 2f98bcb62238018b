//! Gaps real clients and tools hit, each through the proxy against the real
//! cluster: pg_dump under row-level security, harmless `row_security`
//! forms, UTF-8 spelled `UNICODE`, and the bare `rolegate` command.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::{self, Raw};
use common::*;

fn pg_dump_bin() -> PathBuf {
    if let Ok(dir) = rolegate::demo::cluster::Cluster::find_bindir() {
        let p = dir.join("pg_dump");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("pg_dump")
}

/// Run pg_dump through the proxy as `web` with the given extra arguments
/// and tenant; (status ok, stdout, stderr).
fn pg_dump(proxy: &ProxyProcess, args: &[&str], tenant: &str) -> (bool, String, String) {
    let out = Command::new(pg_dump_bin())
        .arg("--dbname")
        .arg(proxy.url("web", WEB_PASSWORD, "require"))
        .args(["--data-only", "--table", "public.notes"])
        .args(args)
        .env("PGOPTIONS", format!("-c app.tenant={tenant}"))
        .env("PGSSLROOTCERT", &harness().pki.ca_file)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run pg_dump ({e}): apt-get install postgresql-client"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pg_dump --enable-row-security` exports what the runtime role may see;
/// plain pg_dump (which turns row_security off) is refused with a hint
/// naming the way out.
#[test]
fn pg_dump_exports_under_row_level_security() {
    let h = harness();
    let proxy = h.start_proxy();
    let (ok, out, err) = pg_dump(&proxy, &["--enable-row-security"], "acme");
    assert!(ok, "pg_dump --enable-row-security failed:\n{err}");
    assert!(out.contains("Order more anvils"), "{out}");
    assert!(out.contains("Rocket skates"), "{out}");
    assert!(
        !out.contains("Hammock") && !out.contains("doomsday"),
        "another tenant's rows were exported:\n{out}"
    );

    let (ok, _, err) = pg_dump(&proxy, &[], "acme");
    assert!(!ok, "plain pg_dump (row_security = off) must be refused");
    assert!(err.contains("rolegate:"), "{err}");
    assert!(err.contains("row_security"), "{err}");
    assert!(
        err.contains("--enable-row-security"),
        "the hint names the way out: {err}"
    );
}

/// Forms of `row_security` that cannot loosen anything are allowed; every
/// form that could turn it off stays refused; the session ends with it on.
#[tokio::test(flavor = "multi_thread")]
async fn harmless_row_security_forms_are_allowed() {
    let h = harness();
    let proxy = h.start_proxy();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    for sql in [
        "SET row_security = on",
        "SET row_security TO true",
        "SET row_security = yes",
        "SET row_security = 1",
        "SET row_security TO DEFAULT",
        "RESET row_security",
        "BEGIN; SET LOCAL row_security = on; COMMIT",
        "SET SESSION row_security = 'on'",
    ] {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} was refused: {e}"));
    }
    for sql in [
        "SET row_security = off",
        "SET row_security = of",
        "SET LOCAL row_security TO false",
        "SET row_security = 0",
        "SET row_security = on, off",
        "SELECT set_config('row_security', 'off', false)",
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'row_security'",
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'work_mem' OR true",
    ] {
        let e = client
            .simple_query(sql)
            .await
            .expect_err(&format!("{sql} must be refused"));
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
    }
    let rs: String = client
        .query_one("select current_setting('row_security')", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(rs, "on");
}

/// `UNICODE` (which the server reports back as given) is UTF-8: in `SET`
/// and in the StartupMessage, the session carries on.
#[tokio::test(flavor = "multi_thread")]
async fn unicode_is_utf8() {
    let h = harness();
    let proxy = h.start_proxy();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    for sql in [
        "SET client_encoding = 'UNICODE'",
        "SET client_encoding TO 'utf-8'",
        "SET NAMES 'unicode'",
    ] {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let one: i32 = client
            .query_one("select 1", &[])
            .await
            .unwrap_or_else(|e| panic!("the session died after {sql}: {e}"))
            .get(0);
        assert_eq!(one, 1);
    }

    let db = h.model.database.clone();
    let (mut raw, greeting) = Raw::login(
        proxy.port,
        &[
            ("user", "web"),
            ("database", &db),
            ("client_encoding", "UNICODE"),
        ],
        WEB_PASSWORD,
    )
    .await
    .unwrap_or_else(|m| panic!("startup with UNICODE refused: {:?}", m.field(b'M')));
    assert!(greeting.iter().any(|m| m.tag == b'Z'));
    raw.send(&raw::query("SELECT 'é'")).await;
    let msgs = raw.until_ready().await;
    assert_eq!(raw::tags(&msgs), "TDCZ");
}

/// `rolegate` without a subcommand is `rolegate serve`: it reads
/// `ROLEGATE_CONFIG`, and with port 0 it logs the port it bound.
#[tokio::test(flavor = "multi_thread")]
async fn bare_rolegate_serves_from_rolegate_config() {
    let h = harness();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("rolegate.toml");
    std::fs::write(&config, h.base_config(0, 0)).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .env("ROLEGATE_CONFIG", &config)
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rolegate");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut port = None;
    while port.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["event"] == "listening" {
            port = event["port"].as_u64();
            assert_ne!(event["admin_port"].as_u64(), Some(0), "{line}");
        }
    }
    let Some(port) = port else {
        let _ = child.kill();
        panic!("no `listening` event with the bound port");
    };
    assert_ne!(port, 0);
    let url = format!(
        "postgres://web:{WEB_PASSWORD}@127.0.0.1:{port}/{}?sslmode=require",
        h.model.database
    );
    let answer = match connect_tls(&url).await {
        Ok(client) => client
            .query_one("select 1", &[])
            .await
            .map(|r| r.get::<_, i32>(0)),
        Err(e) => Err(e),
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.expect("a session on the port the log named"), 1);
}

/// `setval` needs UPDATE on the sequence: off by default (the runtime role
/// may only `nextval`), on with `-v sequence_update=on` when provisioning
/// (`RoleModel::sequence_update`); a re-run without it revokes it again.
#[tokio::test(flavor = "multi_thread")]
async fn sequence_update_is_a_provisioning_choice() {
    let h = harness();
    let proxy = h.start_proxy();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    let setval = "select setval('public.notes_id_seq', nextval('public.notes_id_seq'))";
    let e = client
        .simple_query(setval)
        .await
        .expect_err("setval without UPDATE on the sequence");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        !message.starts_with("rolegate:"),
        "the server's grant decides, not rolegate: {message}"
    );

    let with = rolegate::demo::cluster::RoleModel {
        sequence_update: true,
        ..h.model.clone()
    };
    h.with_cluster(|c| c.provision(&with))
        .expect("provision with sequence_update");
    let result = client.simple_query(setval).await;
    h.with_cluster(|c| c.provision(&h.model))
        .expect("provision without");
    result.expect("setval with sequence_update = on");
    let e = client
        .simple_query(setval)
        .await
        .expect_err("revoked again by a re-run without it");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    client
        .simple_query("select nextval('public.notes_id_seq')")
        .await
        .expect("nextval stays allowed");
}
