//! The runtime policy end to end: refused statements get `ERROR 42501`
//! from the proxy, the database is unchanged (checked directly as the
//! migrator), the session stays usable, and the protocol stays in step.

mod common;

use std::time::Duration;

use common::raw::{self, Raw, tags};
use common::*;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

/// A migrator-owned table with rows 1..=3.
fn table() -> String {
    let t = unique("pe");
    harness().psql_migrator(&format!(
        "create table {t} (id int primary key, v text); insert into {t} select g, 'v' || g from generate_series(1,3) g"
    ));
    t
}

fn assert_proxy_refusal(e: &tokio_postgres::Error, ctx: &str) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("{ctx}: expected an ErrorResponse, got {e}"));
    assert_eq!(db.code().code(), "42501", "{ctx}: {}", db.message());
    assert_eq!(db.severity(), "ERROR", "{ctx}");
    assert!(
        db.message().starts_with("rolegate:"),
        "{ctx}: {}",
        db.message()
    );
    assert!(db.hint().is_some(), "{ctx}: a hint names the way out");
}

#[tokio::test]
async fn every_refused_family_is_refused_and_changes_nothing() {
    let h = harness();
    let proxy = h.start_proxy();
    let t = table();
    let mig = &h.model.migrator;
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    let state = |h: &Harness| {
        h.psql_migrator(&format!(
            "select (select count(*) from {t}) || ':' || (select count(*) from information_schema.columns where table_name = '{t}') || ':' || (select count(*) from pg_class where relname like '{t}%') || ':' || (select count(*) from information_schema.role_table_grants where table_name = '{t}' and grantee = 'PUBLIC')"
        ))
    };
    let before = state(h);
    let cases = [
        format!("drop table {t}"),
        format!("alter table {t} add column extra int"),
        format!("create index on {t} (v)"),
        format!("create table {t}_new (x int)"),
        format!("truncate {t}"),
        format!("comment on table {t} is 'x'"),
        format!("alter table {t} disable row level security"),
        format!("select * into {t}_copy from {t}"),
        format!("create table {t}_ctas as select * from {t}"),
        format!("do $$ begin execute 'drop table {t}'; end $$"),
        format!("vacuum {t}"),
        format!("analyze {t}"),
        format!("grant select on {t} to public"),
        format!("revoke select on {t} from {}", h.model.runtime),
        format!("set role {mig}"),
        "set session authorization postgres".to_string(),
        "set row_security = off".to_string(),
        "select set_config('row_security', 'off', false)".to_string(),
        "set client_encoding = 'LATIN1'".to_string(),
        "select pg_read_file('/etc/hostname')".to_string(),
        "select pg_ls_dir('.')".to_string(),
        format!("copy {t} to '/tmp/rolegate-should-not-exist'"),
        format!("copy {t} from program 'true'"),
        format!("insert into {t} values (99, 'x'); drop table {t}"),
        format!(
            "with x as (select 1) insert into {t} select 98, set_config('role', '{mig}', false)"
        ),
        format!("explain analyze create table {t}_e as select 1"),
        "call some_procedure()".to_string(),
        "create temp table tmp_x (x int)".to_string(),
    ];
    for sql in &cases {
        let e = client.simple_query(sql).await.map(|_| ()).expect_err(sql);
        assert_proxy_refusal(&e, sql);
        // The session is still usable and in step.
        let one: i32 = client
            .query_one("select 1", &[])
            .await
            .expect("usable")
            .get(0);
        assert_eq!(one, 1);
    }
    // Extended protocol too (tokio-postgres prepares every query).
    for sql in [
        "select pg_read_file('/etc/hostname')",
        &format!("delete from {t} returning set_config('row_security','off',false)"),
    ] {
        let e = client.query(sql, &[]).await.map(|_| ()).expect_err(sql);
        assert_proxy_refusal(&e, sql);
    }
    assert_eq!(state(h), before, "the database changed");
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, h.model.runtime);
    let rs: String = client
        .query_one("show row_security", &[])
        .await
        .expect("rs")
        .get(0);
    assert_eq!(rs, "on");
    assert!(!std::path::Path::new("/tmp/rolegate-should-not-exist").exists());
    // Refusals are audited without literals.
    let logs = proxy.logs();
    assert!(logs.contains("\"event\":\"statement_refused\""), "{logs}");
    assert!(!logs.contains("/etc/hostname"), "a literal reached the log");
}

#[tokio::test]
async fn a_refusal_inside_a_transaction_aborts_it() {
    let h = harness();
    let proxy = h.start_proxy();
    let t = table();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    client.batch_execute("begin").await.expect("begin");
    client
        .execute(&format!("insert into {t} values (100, 'in tx')"), &[])
        .await
        .expect("insert");
    let e = client
        .batch_execute(&format!("drop table {t}"))
        .await
        .expect_err("refused");
    assert_proxy_refusal(&e, "drop in tx");
    let e = client
        .simple_query("select 1")
        .await
        .map(|_| ())
        .expect_err("transaction is aborted");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"));
    let msgs = client.simple_query("commit").await.expect("commit");
    let tag = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(_) => Some(()),
        _ => None,
    });
    assert!(tag.is_some());
    assert_eq!(
        h.psql_migrator(&format!("select count(*) from {t} where id = 100")),
        "0"
    );

    // Raw: COMMIT after a refusal answers ROLLBACK, as the server would.
    let (mut r, _) = Raw::login(
        proxy.port,
        &[("user", "web"), ("database", &h.model.database)],
        WEB_PASSWORD,
    )
    .await
    .map_err(|m| m.field(b'M'))
    .expect("raw login");
    r.send(&raw::query(&format!(
        "begin; insert into {t} values (101, 'x')"
    )))
    .await;
    let m = r.until_ready().await;
    assert_eq!(m.last().map(|z| z.body.clone()), Some(b"T".to_vec()));
    r.send(&raw::query("set role postgres")).await;
    let m = r.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(m[0].sqlstate().as_deref(), Some("42501"));
    assert_eq!(m[1].body, b"E", "the transaction is now aborted");
    r.send(&raw::query("commit")).await;
    let m = r.until_ready().await;
    let cc = m.iter().find(|m| m.tag == b'C').expect("CommandComplete");
    assert_eq!(cc.body, b"ROLLBACK\0");
    assert_eq!(
        h.psql_migrator(&format!("select count(*) from {t} where id = 101")),
        "0"
    );
}

#[tokio::test]
async fn extended_protocol_refusal_skips_to_sync_and_the_name_stays_unknown() {
    let h = harness();
    let proxy = h.start_proxy();
    let t = table();
    let (mut r, _) = Raw::login(
        proxy.port,
        &[("user", "web"), ("database", &h.model.database)],
        WEB_PASSWORD,
    )
    .await
    .map_err(|m| m.field(b'M'))
    .expect("raw login");
    // Allowed, then refused, then more (skipped), one Sync.
    let mut batch = Vec::new();
    batch.extend(raw::parse("ok", &format!("select v from {t} where id = 1")));
    batch.extend(raw::bind("", "ok"));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("bad", &format!("drop table {t}")));
    batch.extend(raw::bind("", "bad"));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("after", "select 2"));
    batch.extend(raw::sync());
    r.send(&batch).await;
    let m = r.until_ready().await;
    assert_eq!(tags(&m), "12DCEZ", "{m:?}");
    assert_eq!(m[4].sqlstate().as_deref(), Some("42501"));
    assert!(
        m[4].field(b'M')
            .unwrap_or_default()
            .starts_with("rolegate:")
    );
    assert_eq!(m[5].body, b"I");
    // The refused name was never prepared; "after" was skipped.
    let mut batch = raw::bind("", "bad");
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    r.send(&batch).await;
    let m = r.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(m[0].sqlstate().as_deref(), Some("26000"));
    let mut batch = raw::bind("", "after");
    batch.extend(raw::sync());
    r.send(&batch).await;
    let m = r.until_ready().await;
    assert_eq!(m[0].sqlstate().as_deref(), Some("26000"));
    // The allowed statement is still usable.
    let mut batch = raw::bind("", "ok");
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    r.send(&batch).await;
    assert_eq!(tags(&r.until_ready().await), "2DCZ");
    // A FunctionCall by an OID that is not a large-object function is refused.
    let mut f = Vec::new();
    f.extend_from_slice(&2624i32.to_be_bytes()); // pg_read_file(text)
    f.extend_from_slice(&0i16.to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes());
    r.send(&raw::msg(b'F', &f)).await;
    let m = r.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(m[0].sqlstate().as_deref(), Some("42501"));
    // Any function, harmless or not: the refusal says what is true (the
    // proxy does not map OIDs to names) and the way out (call it in SQL).
    let mut f = Vec::new();
    f.extend_from_slice(&1397i32.to_be_bytes()); // abs(int4)
    f.extend_from_slice(&0i16.to_be_bytes());
    f.extend_from_slice(&1i16.to_be_bytes());
    f.extend_from_slice(&2i32.to_be_bytes());
    f.extend_from_slice(b"-5"); // text format: no format codes given
    f.extend_from_slice(&0i16.to_be_bytes());
    r.send(&raw::msg(b'F', &f)).await;
    let m = r.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    let message = m[0].field(b'M').unwrap_or_default();
    let hint = m[0].field(b'H').unwrap_or_default();
    assert!(message.contains("by OID (1397)"), "{message}");
    assert!(message.contains("does not map OIDs"), "{message}");
    assert!(!message.contains("server files"), "{message}");
    assert!(hint.contains("in SQL"), "{hint}");
    assert!(!hint.contains("server files"), "{hint}");
    assert_eq!(h.psql_migrator(&format!("select count(*) from {t}")), "3");
}

#[tokio::test]
async fn tokio_postgres_pipeline_with_a_refusal() {
    let h = harness();
    let proxy = h.start_proxy();
    let t = table();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    let q1 = format!("select v from {t} where id = 1");
    let q3 = format!("select v from {t} where id = 2");
    let (a, b, c) = tokio::join!(
        client.query_one(&q1, &[]),
        client.query("select pg_terminate_backend(pg_backend_pid())", &[]),
        client.query_one(&q3, &[]),
    );
    assert_eq!(a.expect("first").get::<_, String>(0), "v1");
    assert_proxy_refusal(&b.map(|_| ()).expect_err("refused"), "pipelined refusal");
    assert_eq!(c.expect("third").get::<_, String>(0), "v2");
}

#[tokio::test]
async fn startup_parameters_that_weaken_the_session_are_refused() {
    let h = harness();
    let proxy = h.start_proxy();
    let db = h.model.database.clone();
    for params in [
        vec![("options", "-c row_security=off")],
        vec![("options", "-crow_security=off")],
        vec![("options", "--row-security=off")],
        vec![("options", "-c application_name=x\\ y -c role=postgres")],
        vec![(
            "options",
            "-c search_path=public --session_authorization=postgres",
        )],
        vec![("row_security", "off")],
        vec![("role", "postgres")],
        vec![("client_encoding", "LATIN1")],
        vec![("standard_conforming_strings", "off")],
        vec![("replication", "database")],
    ] {
        let mut all = vec![("user", "web"), ("database", db.as_str())];
        all.extend(params.iter().copied());
        let e = Raw::login(proxy.port, &all, WEB_PASSWORD)
            .await
            .map(|_| ())
            .expect_err(&format!("{params:?} must be refused"));
        assert_eq!(e.field(b'S').as_deref(), Some("FATAL"), "{params:?}");
        assert_eq!(
            e.sqlstate().as_deref(),
            Some("42501"),
            "{params:?}: {:?}",
            e.field(b'M')
        );
    }
    // Harmless options pass, including escaped spaces.
    let (_r, _) = Raw::login(
        proxy.port,
        &[
            ("user", "web"),
            ("database", &db),
            (
                "options",
                "-c application_name=a\\ b -c statement_timeout=5s",
            ),
            ("client_encoding", "UTF8"),
        ],
        WEB_PASSWORD,
    )
    .await
    .map_err(|m| m.field(b'M'))
    .expect("harmless options");
    // psql with PGOPTIONS.
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let out = std::process::Command::new(psql_bin())
        .arg(&url)
        .args(["-X", "-c", "select 1"])
        .env("PGOPTIONS", "-c row_security=off")
        .env("PGSSLROOTCERT", &h.pki.ca_file)
        .output()
        .expect("psql");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rolegate:") && stderr.contains("row_security"),
        "{stderr}"
    );
}

#[tokio::test]
async fn switches_and_report_mode() {
    let h = harness();
    let t = table();
    // Switch off: the proxy refuses. Switch on: the statement reaches the
    // server, whose own grants then decide (the runtime role has no
    // TRUNCATE or TEMPORARY privilege in this model).
    let off = h.start_proxy();
    let on = h.start_proxy_with(|c| {
        format!("{c}\n[policy]\nallow_truncate = true\nallow_temp_tables = true\nallow_maintenance = true\n")
    });
    for sql in [
        format!("truncate {t}"),
        "create temp table tt (x int)".to_string(),
        format!("vacuum {t}"),
    ] {
        let c = connect_plain(&off.url("web", WEB_PASSWORD, "disable"))
            .await
            .expect("connect");
        let e = c.simple_query(&sql).await.map(|_| ()).expect_err(&sql);
        assert_proxy_refusal(&e, &sql);
        let c = connect_plain(&on.url("web", WEB_PASSWORD, "disable"))
            .await
            .expect("connect");
        match c.simple_query(&sql).await {
            Ok(_) => {}
            Err(e) => {
                let msg = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_default();
                assert!(
                    !msg.starts_with("rolegate:"),
                    "{sql} with the switch on: {msg}"
                );
            }
        }
    }
    assert_eq!(h.psql_migrator(&format!("select count(*) from {t}")), "3");

    // Report mode: nothing refused, every would-be refusal logged.
    let report = h.start_proxy_with(|c| format!("{c}\n[policy]\nmode = \"report\"\n"));
    let c = connect_plain(&report.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("connect");
    c.simple_query("select set_config('row_security', 'on', false)")
        .await
        .expect("report mode forwards");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = report.logs();
    assert!(logs.contains("\"event\":\"statement_refused\""), "{logs}");
    assert!(logs.contains("\"enforced\":false"), "{logs}");
}

#[tokio::test]
async fn psql_large_objects_use_the_allowed_fastpath() {
    let h = harness();
    let proxy = h.start_proxy();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("blob.txt");
    std::fs::write(&file, "large object through rolegate").expect("write");
    let out_file = dir.path().join("out.txt");
    let (ok, out, err) = psql_url(
        &proxy.url("web", WEB_PASSWORD, "require"),
        &["-A", "-t"],
        &format!(
            "\\lo_import {}\n\\set oid :LASTOID\n\\lo_export :oid {}\n\\lo_unlink :oid\n",
            file.display(),
            out_file.display()
        ),
    );
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(&out_file).expect("exported"),
        "large object through rolegate"
    );
}
