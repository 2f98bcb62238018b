//! Operations: the admin port, `rolegate check`, live reload, graceful
//! shutdown, connection limits and what the audit log never contains.
//! This binary stops and breaks its own cluster, so it has one of its own.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");

/// The value of a Prometheus sample whose line starts with `prefix` and
/// contains every label in `labels`.
fn metric(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_the_workload() {
    let h = harness();
    let proxy = h.start_proxy();
    let (status, _) = http_get(proxy.admin_port, "/healthz");
    assert_eq!(status, 200);
    let c = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("connect");
    for _ in 0..5 {
        c.simple_query("select 1").await.expect("select");
    }
    for _ in 0..3 {
        let _ = c.simple_query("drop table notes").await;
    }
    let _ = connect_plain(&proxy.url("web", "wrong", "disable")).await;
    let _ = connect_plain(&proxy.url("web", "wrong", "disable")).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = http_get(proxy.admin_port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &body,
            "rolegate_connections_total",
            &["identity=\"web\"", "outcome=\"ok\""]
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "rolegate_connections_total",
            &["identity=\"web\"", "outcome=\"auth_failed\""]
        ),
        2.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "rolegate_statements_total",
            &["verdict=\"allowed\"", "class=\"read\""]
        ),
        5.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "rolegate_statements_total",
            &["verdict=\"refused\"", "class=\"ddl\""]
        ),
        3.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "rolegate_refusals_total", &["reason=\"ddl\""]),
        3.0,
        "{body}"
    );
    assert!(body.contains("rolegate_classification_seconds"), "{body}");
    assert!(body.contains("rolegate_upstream_connect_seconds"), "{body}");
    assert!(
        metric(&body, "rolegate_bytes_total", &["direction=\"to_client\""]) > 0.0,
        "{body}"
    );
}

#[tokio::test]
async fn too_many_connections_get_53300() {
    let h = harness();
    let proxy = h.start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nmax_connections = 2\n"));
    let a = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("a");
    let b = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("b");
    let e = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .map(|_| ())
        .expect_err("third is over the limit");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("a slot is free again");
    c.simple_query("select 1").await.expect("query");
    b.simple_query("select 1").await.expect("b still works");
}

#[tokio::test]
async fn clients_that_never_authenticate_are_dropped_at_the_startup_timeout() {
    let h = harness();
    let proxy =
        h.start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nstartup_timeout = \"1s\"\n"));
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    assert!(t.elapsed() < Duration::from_secs(4));
}

fn write_config(dir: &std::path::Path, config: &str) -> std::path::PathBuf {
    let p = dir.join("rolegate.toml");
    std::fs::write(&p, config).expect("write config");
    p
}

#[test]
fn check_passes_on_the_model_and_names_each_broken_grant() {
    let h = harness();
    let dir = tempfile::tempdir().expect("dir");
    let port = rolegate::demo::cluster::free_port().expect("port");
    let cfg = write_config(
        dir.path(),
        &h.base_config(port, rolegate::demo::cluster::free_port().expect("port")),
    );
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("check")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .expect("check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--offline"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = run(&[]);
    assert_eq!(
        code,
        Some(0),
        "check must pass on the provisioned model:\n{out}{err}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    assert!(
        out.lines().filter(|l| l.starts_with("PASS")).count() >= 10,
        "{out}"
    );

    let rt = &h.model.runtime;
    let mig = &h.model.migrator;
    let t = format!("owned_{}", std::process::id());
    let nest = format!("nested_monitor_{}", std::process::id());
    h.psql_super(&format!(
        "grant create on schema public to {rt};
         alter role {rt} bypassrls;
         create table {t} (x int); alter table {t} owner to {rt};
         grant {mig} to {rt};
         grant pg_signal_backend to {rt};
         create role {nest} nologin; grant pg_monitor to {nest}; grant {nest} to {rt};
         grant execute on function pg_read_file(text) to {rt};
         alter role {rt} set row_security = off;"
    ));
    let (code, out, _) = run(&[]);
    // `serve` with upstream.strict refuses to start on the broken model.
    let strict = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("[upstream]\n", "[upstream]\nstrict = true\n");
    let strict_cfg = dir.path().join("strict.toml");
    std::fs::write(&strict_cfg, strict).expect("write");
    let serve = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&strict_cfg)
        .output()
        .expect("serve");
    h.psql_super(&format!(
        "revoke create on schema public from {rt};
         alter role {rt} nobypassrls;
         drop table {t};
         revoke {mig} from {rt};
         revoke pg_signal_backend from {rt};
         drop role {nest};
         revoke execute on function pg_read_file(text) from {rt};
         alter role {rt} reset row_security;"
    ));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(serve.status.code(), Some(1));
    let serve_err = String::from_utf8_lossy(&serve.stderr);
    assert!(serve_err.contains("upstream.strict"), "{serve_err}");
    for (finding, fix) in [
        (
            "has CREATE on schema public",
            "REVOKE CREATE ON SCHEMA \"public\" FROM PUBLIC",
        ),
        ("has BYPASSRLS", "NOBYPASSRLS"),
        (&format!("owns public.{t}")[..], "OWNER TO"),
        (
            "is a member of the migration role",
            &format!("REVOKE \"{mig}\" FROM \"{rt}\"")[..],
        ),
        (
            "is a member of pg_signal_backend",
            &format!("REVOKE pg_signal_backend FROM \"{rt}\"")[..],
        ),
        // Transitive: the fix revokes the role that leads there.
        (
            "is a member of pg_monitor",
            &format!("REVOKE {nest} FROM \"{rt}\"")[..],
        ),
        // pg_monitor (through the nested role) brings the pg_ls_* grants.
        ("can execute deny-listed functions:", "pg_read_file(text)"),
        ("can execute deny-listed functions:", "pg_ls_logdir()"),
        (
            "can execute deny-listed functions:",
            "REVOKE EXECUTE ON FUNCTION",
        ),
        (
            "is a member of pg_read_all_settings",
            &format!("REVOKE {nest} FROM \"{rt}\"")[..],
        ),
        (
            "turns row_security off (row_security=off)",
            &format!("ALTER ROLE \"{rt}\" RESET row_security")[..],
        ),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with("FAIL") && l.contains(finding))
            .unwrap_or_else(|| panic!("no FAIL line for {finding:?} in:\n{out}"));
        assert!(line.contains(fix), "{line}");
    }
    // The same role for both: refused as a config error before any audit.
    let same = h
        .base_config(port, 1)
        .replace(&format!("user = \"{mig}\""), &format!("user = \"{rt}\""));
    let cfg2 = dir.path().join("same.toml");
    std::fs::write(&cfg2, same).expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg2)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.migration.user"));
    // Back to passing.
    let (code, out, _) = run(&[]);
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn reload_changes_new_logins_and_keeps_old_sessions() {
    let h = harness();
    let dir = tempfile::tempdir().expect("dir");
    let pw_file = dir.path().join("web-password");
    std::fs::write(&pw_file, "first-password\n").expect("pw");
    let proxy = h.start_proxy_with(|c| {
        c.replace(
            &format!("password_scram = \"{}\"", h.web_verifier),
            &format!("password_file = \"{}\"", pw_file.display()),
        )
    });
    let old = connect_plain(&proxy.url("web", "first-password", "disable"))
        .await
        .expect("first login");
    // Rotate the secret file: picked up by the watcher, no signal needed.
    std::fs::write(&pw_file, "second-password\n").expect("rotate");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect_plain(&proxy.url("web", "second-password", "disable"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload did not happen:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        connect_plain(&proxy.url("web", "first-password", "disable"))
            .await
            .is_err()
    );
    old.simple_query("select 1")
        .await
        .expect("the old session keeps working");
    assert!(proxy.logs().contains("\"event\":\"config_reloaded\""));
    assert!(
        proxy.logs().contains("client web password changed"),
        "{}",
        proxy.logs()
    );

    // A broken config is refused and the old one stays.
    let config_path = proxy.dir.path().join("rolegate.toml");
    let good = std::fs::read_to_string(&config_path).expect("read");
    std::fs::write(
        &config_path,
        good.replace("[upstream]", "[upstream]\nbogus_key = 1"),
    )
    .expect("break");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.logs().contains("config_reload_failed") {
        assert!(
            Instant::now() < deadline,
            "no reload failure logged:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = connect_plain(&proxy.url("web", "second-password", "disable"))
        .await
        .expect("old config still serves");
    c.simple_query("select 1").await.expect("query");
    // SIGHUP reloads too.
    std::fs::write(&config_path, &good).expect("restore");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(proxy.pid() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.logs().contains("\"trigger\":\"sighup\"") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new migration window by rewriting the file.
    std::fs::write(
        &config_path,
        format!("{good}\n[[migration.windows]]\nstart = \"2030-01-01T00:00:00Z\"\nend = \"2030-01-01T02:00:00Z\"\n"),
    )
    .expect("add a window");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.logs().contains("migration windows changed") {
        assert!(
            Instant::now() < deadline,
            "window change not reloaded:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    old.simple_query("select 1")
        .await
        .expect("the old session still works");
}

#[tokio::test]
async fn shutdown_drains_then_terminates_with_57p01() {
    let h = harness();
    let mut proxy =
        h.start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nshutdown_timeout = \"2s\"\n"));
    let t = format!("drain_{}", std::process::id());
    h.psql_migrator(&format!("create table {t} (x int)"));
    let finishing = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("a");
    let lingering = connect_plain(&proxy.url("worker", WORKER_PASSWORD, "disable"))
        .await
        .expect("b");
    let idle = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("c");
    finishing
        .batch_execute(&format!("begin; insert into {t} values (1)"))
        .await
        .expect("tx a");
    lingering
        .batch_execute(&format!("begin; insert into {t} values (2)"))
        .await
        .expect("tx b");
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(proxy.pid() as i32, libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused; the idle session is already closed.
    assert!(
        connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
            .await
            .is_err()
    );
    assert!(idle.simple_query("select 1").await.is_err());
    // The open transaction finishes inside the timeout.
    finishing
        .batch_execute("commit")
        .await
        .expect("commit inside the drain");
    // The other one is past it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = lingering
        .simple_query("commit")
        .await
        .map(|_| ())
        .expect_err("closed");
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code().code(), "57P01");
    } else {
        assert!(lingering.is_closed(), "{e}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.is_running() {
        assert!(Instant::now() < deadline, "rolegate did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.exit_code(), Some(0));
    assert_eq!(
        h.psql_migrator(&format!("select string_agg(x::text, ',') from {t}")),
        "1"
    );
    assert!(
        proxy.logs().contains("57P01") || proxy.logs().contains("Shutdown"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn the_log_never_contains_secrets_or_runtime_literals() {
    let h = harness();
    let proxy = h.start_proxy();
    let c = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("connect");
    let literal = "sensitive-literal-4242";
    let _ = c
        .simple_query(&format!("select pg_read_file('{literal}')"))
        .await;
    let _ = c
        .simple_query(&format!(
            "select set_config('row_security', '{literal}', false)"
        ))
        .await;
    let _ = c.query("select 1 where $1 = 'x'", &[&literal]).await;
    let _ = connect_plain(&proxy.url("web", "wrong-password-9876", "disable")).await;
    let _ = Command::new(BIN)
        .stdin(Stdio::null())
        .arg("--version")
        .output();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = proxy.logs();
    assert!(logs.contains("statement_refused"), "{logs}");
    for secret in [
        literal,
        WEB_PASSWORD,
        "wrong-password-9876",
        &h.model.runtime_password,
        &h.model.migrator_password,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appeared in the log:\n{logs}"
        );
    }
}

#[tokio::test]
async fn healthcheck_command_probes_the_admin_port() {
    let h = harness();
    let proxy = h.start_proxy();
    let ok = Command::new(BIN)
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}/healthz", proxy.admin_port),
        ])
        .output()
        .expect("healthcheck");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let closed = rolegate::demo::cluster::free_port().expect("port");
    let bad = Command::new(BIN)
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{closed}/healthz"),
        ])
        .output()
        .expect("healthcheck");
    assert_eq!(bad.status.code(), Some(1));
}

#[tokio::test]
async fn idle_sessions_end_at_the_idle_timeout_but_running_queries_do_not() {
    let h = harness();
    let proxy =
        h.start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nidle_timeout = \"1s\"\n"));
    let idle = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("idle");
    let busy = connect_plain(&proxy.url("worker", WORKER_PASSWORD, "disable"))
        .await
        .expect("busy");
    // A query longer than the idle timeout is not idle time.
    busy.simple_query("select pg_sleep(2)")
        .await
        .expect("long query survives");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = idle
        .simple_query("select 1")
        .await
        .map(|_| ())
        .expect_err("idle session closed");
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code().code(), "57P01");
    } else {
        assert!(idle.is_closed(), "{e}");
    }
}

/// `rolegate report` over a report-mode proxy's own log: each refused shape
/// once, with its count, class, identities and first/last seen, as a table
/// and as JSON; literals never appear.
#[tokio::test(flavor = "multi_thread")]
async fn report_summarises_what_enforcing_would_refuse() {
    let h = harness();
    let proxy = h.start_proxy_with(|c| format!("{c}\n[policy]\nmode = \"report\"\n"));
    let web = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("web");
    let worker = connect_tls(&proxy.url("worker", WORKER_PASSWORD, "require"))
        .await
        .expect("worker");
    for (client, id) in [(&web, 1), (&web, 2), (&worker, 3)] {
        // Reported, forwarded, and failing at the server (no CREATE).
        let _ = client
            .simple_query(&format!("select 'secret-{id}' into report_t"))
            .await;
    }
    let _ = web.simple_query("set row_security = off").await;
    web.simple_query("select 1").await.expect("allowed");
    // The log is written asynchronously; wait for the last event.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .logs()
        .matches("\"event\":\"statement_refused\"")
        .count()
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "refusals not logged:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bin = env!("CARGO_BIN_EXE_rolegate");
    let out = Command::new(bin)
        .arg("report")
        .arg(&proxy.log)
        .output()
        .expect("report");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(!table.contains("secret-"), "a literal leaked:\n{table}");
    assert!(table.contains("select ? into report_t"), "{table}");
    let out = Command::new(bin)
        .args(["report", "--json"])
        .arg(&proxy.log)
        .output()
        .expect("report --json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report --json is JSON");
    assert_eq!(v["events"], 4, "{v}");
    let groups = v["groups"].as_array().expect("groups");
    // Three texts differing only in a literal: one group.
    let into = groups
        .iter()
        .find(|g| g["class"] == "ddl")
        .unwrap_or_else(|| panic!("no ddl group: {v}"));
    assert_eq!(into["count"], 3, "{v}");
    assert_eq!(into["fingerprint"], "select ? into report_t");
    assert_eq!(into["identities"], serde_json::json!(["web", "worker"]));
    assert!(into["first_seen"].as_str() <= into["last_seen"].as_str());
    assert_eq!(into["reported"], 3, "report mode: reported, not refused");
    let rls = groups
        .iter()
        .find(|g| g["class"] == "rls_toggle")
        .unwrap_or_else(|| panic!("no rls_toggle group: {v}"));
    assert_eq!(rls["count"], 1);
    assert_eq!(rls["identities"], serde_json::json!(["web"]));
}

/// Before any traffic: every metric family has HELP and TYPE, the bounded
/// series are present at zero, and `rolegate_build_info` names the build.
#[test]
fn metrics_are_described_and_present_from_startup() {
    let h = harness();
    let proxy = h.start_proxy();
    let (status, body) = http_get(proxy.admin_port, "/metrics");
    assert_eq!(status, 200);
    let families: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| l.starts_with("rolegate_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    assert!(families.len() >= 10, "{body}");
    for f in &families {
        assert!(
            body.contains(&format!("# HELP {f} ")),
            "no HELP for {f}:\n{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {f} ")),
            "no TYPE for {f}:\n{body}"
        );
    }
    for series in [
        "rolegate_refusals_total{reason=\"ddl\"} 0",
        "rolegate_refusals_total{reason=\"rls_toggle\"} 0",
        "rolegate_active_sessions{role=\"runtime\"} 0",
        "rolegate_upstream_errors_total{role=\"runtime\"} 0",
        "rolegate_config_reloads_total{outcome=\"rejected\"} 0",
        "rolegate_migration_window_open 0",
    ] {
        assert!(body.contains(series), "missing {series}:\n{body}");
    }
    let info = body
        .lines()
        .find(|l| l.starts_with("rolegate_build_info{"))
        .unwrap_or_else(|| panic!("no build_info:\n{body}"));
    assert!(
        info.contains("version=\"") && info.contains("commit=\""),
        "{info}"
    );
    assert!(info.ends_with(" 1"), "{info}");
    // Process metrics, sampled at scrape time.
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(&format!("{name} "))),
            "missing {name}:\n{body}"
        );
    }
}

/// Every metric the shipped Grafana dashboard and alerting rules query is
/// one a running proxy exports (after one login and one statement, so the
/// histograms have observations).
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_rules_query_only_exported_metrics() {
    let h = harness();
    let proxy = h.start_proxy();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    client.simple_query("select 1").await.expect("query");
    let (_, body) = http_get(proxy.admin_port, "/metrics");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut queried = std::collections::BTreeSet::new();
    for file in [
        "deploy/grafana/rolegate.json",
        "deploy/prometheus/rolegate-rules.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("rolegate_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            // Words like "rolegate_rules" in file names are not metrics.
            if name.ends_with('_') || name == "rolegate_rules" {
                continue;
            }
            queried.insert((file, name));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for (file, name) in &queried {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{file} queries {name}, which /metrics does not export:\n{body}"
        );
    }
}
