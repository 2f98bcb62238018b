//! The command line: startup invariants refuse to start with one clear
//! line, `scram-hash` makes verifiers `serve` accepts, and `demo` works.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");

/// One verifier per test binary (hashing salts randomly, so tests that
/// edit the config by replacing it must see the same string).
fn verifier(pw: &str) -> String {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    assert_eq!(pw, "pw");
    V.get_or_init(|| rolegate::client_auth::hash_password(pw))
        .clone()
}

/// A valid config with no TLS, pointing nowhere in particular.
fn valid() -> String {
    format!(
        r#"[listen]
address = "127.0.0.1:0"
[upstream]
host = "127.0.0.1"
port = 1
database = "app"
tls = "disable"
[upstream.runtime]
user = "app_user"
password = "rt"
[upstream.migration]
user = "app_migrator"
password = "mg"
[[clients]]
name = "web"
password_scram = "{}"
"#,
        verifier("pw")
    )
}

/// Run `rolegate serve` with a config and env; it must exit by itself.
fn serve_fails(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env_remove("ROLEGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rolegate serve kept running with a bad config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

fn assert_refused(config: &str, env: &[(&str, &str)], must_name: &[&str]) {
    let (code, stderr) = serve_fails(config, env);
    assert_eq!(code, 1, "exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one clear line, got:\n{stderr}");
    for key in must_name {
        assert!(stderr.contains(key), "message must name {key:?}:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn same_role_for_runtime_and_migration() {
    let c = valid().replace("user = \"app_migrator\"", "user = \"app_user\"");
    assert_refused(
        &c,
        &[],
        &["upstream.runtime.user", "upstream.migration.user"],
    );
}

#[test]
fn client_named_like_the_migration_login() {
    let c = valid().replace("name = \"web\"", "name = \"migrator\"");
    assert_refused(&c, &[], &["clients[0].name", "migration.user"]);
    let c = format!("{}\n[migration]\nuser = \"web\"\n", valid());
    assert_refused(&c, &[], &["clients[0].name", "migration.user"]);
}

#[test]
fn missing_secret_file_and_env_var() {
    let c = valid().replace(
        "password = \"rt\"",
        "password_file = \"/nonexistent/runtime-password\"",
    );
    assert_refused(
        &c,
        &[],
        &[
            "upstream.runtime.password_file",
            "/nonexistent/runtime-password",
        ],
    );
    let c = valid().replace(
        "password = \"mg\"",
        "password_env = \"ROLEGATE_TEST_UNSET_VAR\"",
    );
    assert_refused(
        &c,
        &[],
        &["upstream.migration.password_env", "ROLEGATE_TEST_UNSET_VAR"],
    );
    let c = valid().replace(
        &format!("password_scram = \"{}\"", verifier("pw")),
        "password_file = \"/nonexistent/web-password\"",
    );
    assert_refused(&c, &[], &["clients[0]", "/nonexistent/web-password"]);
    let c = format!(
        "{}\n[[migration.keys]]\npublic_key_file = \"/nonexistent/migrator.pub\"\n",
        valid()
    );
    assert_refused(&c, &[], &["migration.keys[0].public_key_file"]);
}

#[test]
fn tls_files_that_do_not_load() {
    let dir = tempfile::tempdir().expect("dir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let c = format!(
        "{}\n[listen.tls]\nmode = \"require\"\ncert_file = \"{g}\"\nkey_file = \"{g}\"\n",
        valid(),
        g = garbage.display()
    );
    // The [listen.tls] table must come after [listen]'s keys; append works
    // because TOML tables may appear anywhere.
    assert_refused(&c, &[], &["listen.tls.cert_file"]);
    let c = format!(
        "{}\n[listen.tls]\nmode = \"require\"\ncert_file = \"/nonexistent.crt\"\nkey_file = \"/nonexistent.key\"\n",
        valid()
    );
    assert_refused(&c, &[], &["listen.tls.cert_file", "/nonexistent.crt"]);
    let c = valid().replace(
        "tls = \"disable\"",
        &format!("tls = \"verify-full\"\nca_file = \"{}\"", garbage.display()),
    );
    assert_refused(&c, &[], &["upstream.ca_file"]);
}

#[test]
fn malformed_and_inconsistent_windows() {
    for (window, key) in [
        (
            "start = \"2026-11-29T04:00:00Z\"\nend = \"2026-11-29T02:00:00Z\"",
            "migration.windows[0]",
        ),
        (
            "start = \"yesterday\"\nend = \"2026-11-29T02:00:00Z\"",
            "migration.windows[0].start",
        ),
        (
            "days = [\"sat\"]\nfrom = \"02:00\"\nto = \"04:00\"\ntimezone = \"Mars/Olympus\"",
            "migration.windows[0].timezone",
        ),
        (
            "days = [\"caturday\"]\nfrom = \"02:00\"\nto = \"04:00\"\ntimezone = \"UTC\"",
            "migration.windows[0].days",
        ),
        (
            "days = [\"sat\"]\nfrom = \"02:00\"\nto = \"02:00\"\ntimezone = \"UTC\"",
            "migration.windows[0]",
        ),
        (
            "start = \"2026-11-29T02:00:00Z\"\nend = \"2026-11-29T04:00:00Z\"\ndays = [\"sat\"]\nfrom = \"02:00\"\nto = \"04:00\"\ntimezone = \"UTC\"",
            "migration.windows[0]",
        ),
    ] {
        let c = format!("{}\n[[migration.windows]]\n{window}\n", valid());
        assert_refused(&c, &[], &[key]);
    }
}

#[test]
fn typos_and_bad_values_are_named() {
    let c = valid().replace("tls = \"disable\"", "tls = \"sometimes\"");
    assert_refused(&c, &[], &["upstream.tls"]);
    let c = valid().replace("[upstream]", "[upstream]\nhots = \"x\"");
    assert_refused(&c, &[], &["hots"]);
    // A ROLEGATE__ override is applied (and validated) too.
    assert_refused(
        &valid(),
        &[("ROLEGATE__UPSTREAM__MIGRATION__USER", "app_user")],
        &["upstream.migration.user"],
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .arg("no-such-command")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn scram_hash_output_logs_in() {
    let mut child = Command::new(BIN)
        .arg("scram-hash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hunter2-but-longer\n")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
    let h = harness();
    let proxy = h.start_proxy_with(|c| c.replace(&h.web_verifier, &v));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let c = connect_plain(&proxy.url("web", "hunter2-but-longer", "disable"))
            .await
            .expect("login with the scram-hash password");
        c.simple_query("select 1").await.expect("query");
    });
}

#[test]
fn demo_prints_a_working_url_and_cleans_up_on_sigterm() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("Ctrl-C") {
            break;
        }
    }
    // `export NAME='value'` lines, pasteable into a shell.
    let exported = |name: &str| -> String {
        let prefix = format!("export {name}='");
        seen.lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str())?.strip_suffix('\''))
            .unwrap_or_else(|| panic!("demo printed no {prefix}…':\n{seen}"))
            .to_string()
    };
    let url = exported("DATABASE_URL");
    let migration_url = exported("MIGRATION_URL");
    let file = |label: &str| -> std::path::PathBuf {
        seen.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").into())
            .unwrap_or_else(|| panic!("no {label} line:\n{seen}"))
    };
    let config = file("config ");
    let log = file("JSON log ");
    let dir = config.parent().expect("demo dir").to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the demo directory");
    assert_eq!(mode(&config), 0o600, "the config holds passwords");
    assert_eq!(mode(&dir.join("migrator.key")), 0o600, "the signing key");
    let admin = seen
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("http://127.0.0.1:")?
                .strip_suffix("/healthz")
        })
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no admin /healthz URL:\n{seen}"));
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(http_get(admin, "/metrics").0, 200);
    assert!(seen.contains("token issue --key"), "{seen}");

    let rt = tokio::runtime::Runtime::new().expect("rt");
    let who = rt.block_on(async {
        let c = connect_plain(&url).await.expect("connect to the demo");
        c.batch_execute("set app.tenant = 'acme'")
            .await
            .expect("tenant");
        let n: i64 = c
            .query_one("select count(*) from notes", &[])
            .await
            .expect("notes")
            .get(0);
        assert!(n > 0);
        c.batch_execute("drop table notes")
            .await
            .expect_err("refused");
        let m = connect_plain(&migration_url)
            .await
            .expect("migration login");
        m.batch_execute("create table demo_t (x int)")
            .await
            .expect("DDL on the migration URL");
        c.query_one("select current_user::text", &[])
            .await
            .expect("who")
            .get::<_, String>(0)
    });
    assert_eq!(who, "app_user");
    // The refusal and the migration statement as terminal lines.
    let mut lines = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(lines.contains("refused") && lines.contains("create table demo_t")) {
        assert!(Instant::now() < deadline, "no audit lines:\n{lines}");
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            break;
        }
        lines.push_str(&line);
    }
    let json = std::fs::read_to_string(&log).expect("JSON log");
    assert!(json.contains("\"event\":\"statement_refused\""), "{json}");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait demo");
    assert!(status.success(), "demo exit status {status:?}");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    assert!(rest.contains("stopped"), "{rest}");
    assert!(!dir.exists(), "the demo directory is left behind");
}

/// `rolegate explain`: the proxy's decision per statement and for the whole
/// text, the config's switches applied, exit 0 / 1 / 2.
#[test]
fn explain_shows_the_decision_and_exits_by_it() {
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(BIN)
            .arg("explain")
            .args(args)
            .env_remove("ROLEGATE_CONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("explain");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("output");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["select 1 from t where id = 42"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ALLOWED"), "{out}");
    assert!(!out.contains("42"), "literals never shown: {out}");

    let (code, out) = run(&["--json", "select 1; truncate t"], "");
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["verdict"], "refused");
    assert_eq!(v["class"], "truncate");
    assert_eq!(v["statements"][0]["verdict"], "allowed");
    assert_eq!(v["statements"][1]["fingerprint"], "truncate t");

    // The config's [policy] switches apply; nothing else in it is needed.
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("policy.toml");
    std::fs::write(&config, "[policy]\nallow_truncate = true\n").expect("config");
    let path = config.display().to_string();
    let (code, out) = run(&["--config", &path, "-"], "truncate t");
    assert_eq!(code, Some(0), "{out}");

    let (code, _) = run(&[], "");
    assert_eq!(code, Some(2), "no SQL is a usage error");
}

/// `--version` names the commit; `--log-format` belongs to `serve` and says
/// where text goes; `check` warns when no runtime client is configured.
#[test]
fn version_log_format_and_check_warnings() {
    let out = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("version");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("(commit "), "{version}");

    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--log-format") && help.contains("stderr"),
        "{help}"
    );
    let out = Command::new(BIN)
        .args(["token", "keygen", "--help"])
        .output()
        .expect("help");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("--log-format"));

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.toml");
    let no_clients = valid();
    let no_clients = &no_clients[..no_clients.find("[[clients]]").expect("clients")];
    std::fs::write(&path, no_clients).expect("config");
    let out = Command::new(BIN)
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .env_remove("ROLEGATE_CONFIG")
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("WARN no [[clients]]"), "{text}");
}
