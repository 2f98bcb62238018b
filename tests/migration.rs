//! Migration access end to end: signed tokens, windows, governance,
//! audited migration sessions, window end, and several services.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use jiff::{SignedDuration, Timestamp};
use rolegate::migration::token::{self, IssueOptions};

struct Keys {
    _dir: tempfile::TempDir,
    private: String,
    public: PathBuf,
    other_private: String,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().expect("dir");
    let (private, public) = token::keygen(dir.path()).expect("keygen");
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let (other_private, _) = token::keygen(&other).expect("keygen 2");
    Keys {
        private: std::fs::read_to_string(private).expect("key"),
        public,
        other_private: std::fs::read_to_string(other_private).expect("key"),
        _dir: dir,
    }
}

fn opts(subject: &str) -> IssueOptions {
    IssueOptions {
        subject: subject.into(),
        ttl: Duration::from_secs(600),
        env: None,
        confirm: false,
        service: None,
        kid: None,
        now: Timestamp::now(),
    }
}

fn rfc(t: Timestamp) -> String {
    t.to_string()
}

/// A `[migration]` section with the key and one absolute window.
fn migration_toml(keys: &Keys, env: &str, start: Timestamp, end: Timestamp, grace: &str) -> String {
    format!(
        "\n[migration]\nenvironment = \"{env}\"\ngrace = \"{grace}\"\n[[migration.keys]]\npublic_key_file = \"{}\"\n[[migration.windows]]\nstart = \"{}\"\nend = \"{}\"\n",
        keys.public.display(),
        rfc(start),
        rfc(end)
    )
}

fn open_now(keys: &Keys, env: &str) -> String {
    let now = Timestamp::now();
    migration_toml(
        keys,
        env,
        now - SignedDuration::from_mins(5),
        now + SignedDuration::from_hours(2),
        "5m",
    )
}

fn db_error(e: &tokio_postgres::Error) -> (String, String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"));
    (
        db.severity().to_string(),
        db.code().code().to_string(),
        db.message().to_string(),
    )
}

#[tokio::test]
async fn an_admitted_token_gets_an_audited_migration_session() {
    let h = harness();
    let k = keys();
    let proxy = h.start_proxy_with(|c| format!("{c}{}", open_now(&k, "staging")));
    let jwt = token::issue(&k.private, opts("ci-deploy-42")).expect("issue");
    let client = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("migration login");
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, h.model.migrator);
    let t = format!("mig_{}", std::process::id());
    client
        .batch_execute(&format!(
            "create table {t} (id int primary key); alter table {t} add column note text"
        ))
        .await
        .expect("DDL is allowed on a migration session");
    // Default privileges: the runtime role can use the new table.
    let rt = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("runtime");
    rt.execute(&format!("insert into {t} values (1, 'x')"), &[])
        .await
        .expect("runtime DML on the new table");
    let e = rt
        .batch_execute(&format!("drop table {t}"))
        .await
        .expect_err("runtime still cannot DDL");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"event\":\"migration_statement\"") && l.contains("alter table"))
        .unwrap_or_else(|| panic!("no migration_statement event:\n{logs}"));
    assert!(line.contains("\"subject\":\"ci-deploy-42\""), "{line}");
    assert!(line.contains("\"jti\":\""), "{line}");
    assert!(line.contains("add column note text"), "{line}");
    assert!(!logs.contains(&jwt), "the token reached the log");
    assert!(logs.contains("\"event\":\"window_open\""), "{logs}");
}

#[tokio::test]
async fn each_refusal_has_its_fatal_and_opens_no_upstream_connection() {
    let h = harness();
    let k = keys();
    let now = Timestamp::now();
    let staging = h.start_proxy_with(|c| format!("{c}{}", open_now(&k, "staging")));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "bad signature",
            token::issue(&k.other_private, opts("x")).expect("t"),
            "28P01",
            "signature",
        ),
        (
            "expired",
            token::issue(
                &k.private,
                IssueOptions {
                    now: now - SignedDuration::from_hours(2),
                    ..opts("x")
                },
            )
            .expect("t"),
            "28P01",
            "expired",
        ),
        (
            "not yet valid",
            token::issue(
                &k.private,
                IssueOptions {
                    now: now + SignedDuration::from_hours(1),
                    ..opts("x")
                },
            )
            .expect("t"),
            "28P01",
            "not valid before",
        ),
        (
            "wrong environment",
            token::issue(
                &k.private,
                IssueOptions {
                    env: Some("prod".into()),
                    ..opts("x")
                },
            )
            .expect("t"),
            "28P01",
            "prod",
        ),
        ("a runtime password", WEB_PASSWORD.to_string(), "28P01", ""),
        (
            "unknown service",
            token::issue(
                &k.private,
                IssueOptions {
                    service: Some("nope".into()),
                    ..opts("x")
                },
            )
            .expect("t"),
            "28P01",
            "nope",
        ),
    ];
    for (what, jwt, code, needle) in &cases {
        let e = connect_tls(&staging.url("migrator", jwt, "require"))
            .await
            .map(|_| ())
            .expect_err(what);
        let (sev, c, msg) = db_error(&e);
        assert_eq!(sev, "FATAL", "{what}");
        assert_eq!(&c, code, "{what}: {msg}");
        assert!(msg.starts_with("rolegate:"), "{what}: {msg}");
        assert!(msg.to_lowercase().contains(needle), "{what}: {msg}");
    }
    // A token is never a runtime client's password.
    let jwt = token::issue(&k.private, opts("x")).expect("t");
    let e = connect_tls(&staging.url("web", &jwt, "require"))
        .await
        .map(|_| ())
        .expect_err("token as runtime password");
    assert_eq!(db_error(&e).1, "28P01");

    // No window open: 57P03 with the next opening.
    let next = now + SignedDuration::from_hours(3);
    let closed = h.start_proxy_with(|c| {
        format!(
            "{c}{}",
            migration_toml(
                &k,
                "staging",
                next,
                next + SignedDuration::from_hours(1),
                "5m"
            )
        )
    });
    let e = connect_tls(&closed.url("migrator", &jwt, "require"))
        .await
        .map(|_| ())
        .expect_err("closed window");
    let (_, code, msg) = db_error(&e);
    assert_eq!(code, "57P03");
    let next_s = next.round(jiff::Unit::Second).expect("round").to_string();
    assert!(
        msg.starts_with("rolegate: no migration window is open; next opens"),
        "{msg}"
    );
    assert!(msg.contains(&next_s[..16]), "{msg} should name {next_s}");

    // Replica: never.
    let replica = h.start_proxy_with(|c| format!("{c}{}", open_now(&k, "replica")));
    let e = connect_tls(&replica.url("migrator", &jwt, "require"))
        .await
        .map(|_| ())
        .expect_err("replica");
    assert_eq!(db_error(&e).1, "57P03");

    // Prod: only with the confirmation claim.
    let prod = h.start_proxy_with(|c| format!("{c}{}", open_now(&k, "prod")));
    let e = connect_tls(&prod.url("migrator", &jwt, "require"))
        .await
        .map(|_| ())
        .expect_err("prod unconfirmed");
    let (_, code, msg) = db_error(&e);
    assert_eq!(code, "28P01");
    assert!(msg.contains("confirm"), "{msg}");
    let confirmed = token::issue(
        &k.private,
        IssueOptions {
            env: Some("prod".into()),
            confirm: true,
            ..opts("release")
        },
    )
    .expect("t");
    let c = connect_tls(&prod.url("migrator", &confirmed, "require"))
        .await
        .expect("prod with --confirm");
    c.simple_query("select 1").await.expect("query");

    // None of the refused logins opened a migration upstream connection.
    for p in [&staging, &closed, &replica] {
        let logs = p.logs();
        assert!(
            !logs
                .lines()
                .any(|l| l.contains("session_start") && l.contains("\"role\":\"migration\"")),
            "{logs}"
        );
    }
    // The refusals were logged with their kinds, without the tokens.
    let logs = staging.logs();
    assert!(logs.contains("auth_failed"));
    for (_, jwt, _, _) in &cases {
        assert!(!logs.contains(jwt.as_str()), "a token reached the log");
    }
}

#[tokio::test]
async fn window_end_closes_idle_sessions_and_lets_a_transaction_finish_within_grace() {
    let h = harness();
    let k = keys();
    let now = Timestamp::now();
    let end = now + SignedDuration::from_secs(4);
    let proxy = h.start_proxy_with(|c| {
        format!(
            "{c}{}",
            migration_toml(&k, "staging", now - SignedDuration::from_mins(1), end, "3s")
        )
    });
    let jwt = token::issue(&k.private, opts("window-test")).expect("issue");
    let t = format!("wend_{}", std::process::id());
    h.psql_migrator(&format!("create table {t} (x int)"));
    let idle = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("idle session");
    let finishing = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("finishing");
    let lingering = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("lingering");
    finishing
        .batch_execute(&format!("begin; insert into {t} values (1)"))
        .await
        .expect("tx 1");
    lingering
        .batch_execute(&format!("begin; insert into {t} values (2)"))
        .await
        .expect("tx 2");
    let wait = Duration::try_from(end.duration_since(Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    // The idle one is gone at the window end.
    assert!(
        idle.simple_query("select 1").await.is_err(),
        "idle session must be closed at window end"
    );
    // Within grace, a transaction may finish.
    finishing
        .batch_execute("commit")
        .await
        .expect("commit within grace");
    // Past grace: FATAL 57P01 and the server rolls back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e = lingering
        .batch_execute("commit")
        .await
        .expect_err("closed after grace");
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code().code(), "57P01");
    } else {
        assert!(lingering.is_closed());
    }
    let start = Instant::now();
    loop {
        let v = h.psql_migrator(&format!(
            "select coalesce(string_agg(x::text, ',' order by x), '') from {t}"
        ));
        if v == "1" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "got {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And new logins are refused now that the window is closed.
    let e = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .map(|_| ())
        .expect_err("closed");
    assert_eq!(db_error(&e).1, "57P03");
    let logs = proxy.logs();
    assert!(logs.contains("\"event\":\"window_close\""), "{logs}");

    // A token that expires before the window ends narrows the session.
    let short = token::issue(
        &k.private,
        IssueOptions {
            ttl: Duration::from_secs(2),
            ..opts("short")
        },
    )
    .expect("t");
    let wide = h.start_proxy_with(|c| format!("{c}{}", open_now(&k, "staging")));
    let c = connect_tls(&wide.url("migrator", &short, "require"))
        .await
        .expect("short token");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        c.simple_query("select 1").await.is_err(),
        "session must end with its token"
    );
}

/// An open window, `grace = 60s` and `leeway = 3s`: a grace that would keep
/// a session alive well past the end of each test below.
fn long_grace_short_leeway(keys: &Keys) -> String {
    let now = Timestamp::now();
    migration_toml(
        keys,
        "staging",
        now - SignedDuration::from_mins(5),
        now + SignedDuration::from_hours(2),
        "60s",
    )
    .replace("grace = ", "leeway = \"3s\"\ngrace = ")
}

fn table_exists(h: &Harness, t: &str) -> bool {
    h.psql_migrator(&format!("select to_regclass('{t}') is not null")) == "t"
}

/// A token that expired 1s before login is admitted within the 3s leeway;
/// the client pipelines BEGIN and DDL with its login. The leeway forgives
/// skew but opens no window of work: the session is closed with FATAL
/// 57P01 by exp + leeway (not after the 60s grace), and the server rolls the
/// transaction back.
#[tokio::test]
async fn a_token_admitted_within_the_leeway_gets_no_grace() {
    let h = harness();
    let k = keys();
    let proxy = h.start_proxy_with(|c| format!("{c}{}", long_grace_short_leeway(&k)));
    let t = format!("leeway_{}", std::process::id());
    let jwt = token::issue(
        &k.private,
        IssueOptions {
            now: Timestamp::now() - SignedDuration::from_secs(601),
            ..opts("skewed")
        },
    )
    .expect("issue");
    let exp = Instant::now() - Duration::from_secs(1);
    let mut raw = raw::Raw::connect(proxy.port).await;
    let mut password = jwt.as_bytes().to_vec();
    password.push(0);
    raw.send(&raw::startup_packet(&[
        ("user", "migrator"),
        ("database", h.model.database.as_str()),
    ]))
    .await;
    let asked = raw.recv().await.expect("password request");
    assert_eq!(
        (asked.tag, &asked.body[..]),
        (b'R', &3i32.to_be_bytes()[..])
    );
    // The token, BEGIN and the DDL in one write.
    let mut pipelined = raw::msg(b'p', &password);
    pipelined.extend(raw::query("begin"));
    pipelined.extend(raw::query(&format!("create table {t} (x int)")));
    raw.send(&pipelined).await;
    let mut fatal = None;
    let mut tags = String::new();
    let closed_at = loop {
        match raw.recv_within(Duration::from_secs(15)).await {
            raw::Recv::Msg(m) => {
                tags.push(m.tag as char);
                if m.tag == b'E' {
                    fatal = Some((m.field(b'S'), m.sqlstate(), m.field(b'M')));
                }
            }
            raw::Recv::Closed => break Instant::now(),
            raw::Recv::Quiet => panic!("session still open 15s after login (tags {tags})"),
        }
    };
    // Admitted (AuthenticationOk), then closed by exp + leeway at the latest.
    assert!(tags.starts_with('R'), "{tags}");
    assert!(!tags.starts_with("RE"), "not admitted: {fatal:?}");
    assert!(
        closed_at < exp + Duration::from_secs(3) + Duration::from_millis(1500),
        "closed {:?} after exp; leeway is 3s (tags {tags})",
        closed_at - exp
    );
    let (severity, code, message) = fatal.unwrap_or_else(|| panic!("no FATAL (tags {tags})"));
    assert_eq!(severity.as_deref(), Some("FATAL"), "{tags}");
    assert_eq!(code.as_deref(), Some("57P01"), "{tags}");
    assert!(
        message
            .unwrap_or_default()
            .contains("migration window closed"),
        "{tags}"
    );
    assert!(!table_exists(h, &t), "the DDL outlived the session");
}

/// The token's own `exp` is a hard end: a transaction open when the token
/// expires is closed at exp + leeway, even though the window (with its 60s
/// grace) is still open; the COMMIT after that never reaches the server.
#[tokio::test]
async fn a_transaction_open_at_token_exp_ends_at_exp_plus_leeway() {
    let h = harness();
    let k = keys();
    let proxy = h.start_proxy_with(|c| format!("{c}{}", long_grace_short_leeway(&k)));
    let t = format!("tokexp_{}", std::process::id());
    let issued = Timestamp::now();
    let jwt = token::issue(
        &k.private,
        IssueOptions {
            ttl: Duration::from_secs(2),
            now: issued,
            ..opts("short-lived")
        },
    )
    .expect("issue");
    // exp is whole seconds: iat (truncated) + 2s.
    let exp = Timestamp::from_second(issued.as_second() + 2).expect("exp");
    let c = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("login with a valid token");
    c.batch_execute(&format!("begin; create table {t} (x int)"))
        .await
        .expect("DDL before exp");
    // Past exp + leeway (3s), well inside the window's 60s grace.
    let left = Duration::try_from(exp.duration_since(Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(3) + Duration::from_millis(800)).await;
    let e = c
        .batch_execute("commit")
        .await
        .expect_err("the session must be gone by exp + leeway");
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code().code(), "57P01", "{db:?}");
    } else {
        assert!(c.is_closed(), "{e}");
    }
    assert!(!table_exists(h, &t), "the transaction was committed");
}

#[tokio::test]
async fn services_keep_their_migration_roles_apart() {
    let h = harness();
    let k = keys();
    let db = &h.model.database;
    h.psql_super(&format!(
        "do $$ begin
           if not exists (select from pg_roles where rolname = 'billing_app_user') then
             create role billing_app_user login password 'billing-rt';
             create role billing_migrator login password 'billing-mg';
           end if;
         end $$;
         grant connect on database {db} to billing_app_user, billing_migrator;"
    ));
    let proxy = h.start_proxy_with(|c| {
        format!(
            "{c}{}\n[[services]]\nname = \"billing\"\n[services.runtime]\nuser = \"billing_app_user\"\npassword = \"billing-rt\"\n[services.migration]\nuser = \"billing_migrator\"\npassword = \"billing-mg\"\n\n[[clients]]\nname = \"billing_web\"\npassword_scram = \"{}\"\nservice = \"billing\"\n",
            open_now(&k, "staging"),
            h.worker_verifier
        )
    });
    let billing = token::issue(
        &k.private,
        IssueOptions {
            service: Some("billing".into()),
            ..opts("billing-ci")
        },
    )
    .expect("t");
    let c = connect_tls(&proxy.url("migrator", &billing, "require"))
        .await
        .expect("billing migration");
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, "billing_migrator");
    let default = token::issue(&k.private, opts("app-ci")).expect("t");
    let c = connect_tls(&proxy.url("migrator", &default, "require"))
        .await
        .expect("default migration");
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, h.model.migrator);
    let c = connect_tls(&proxy.url("billing_web", WORKER_PASSWORD, "require"))
        .await
        .expect("billing runtime");
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, "billing_app_user");
}

/// `rolegate token keygen --out DIR` through the binary, into a new dir.
fn cli_keygen() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["token", "keygen", "--out"])
        .arg(dir.path())
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Log in with `jwt` through a proxy that trusts `dir/migrator.pub`, with
/// a window open in `env`; the upstream user it got.
fn admitted_as(dir: &std::path::Path, env: &str, jwt: &str) -> String {
    let k = Keys {
        private: String::new(),
        public: dir.join("migrator.pub"),
        other_private: String::new(),
        _dir: tempfile::tempdir().expect("dir"),
    };
    let proxy = harness().start_proxy_with(|c| format!("{c}{}", open_now(&k, env)));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let c = connect_tls(&proxy.url("migrator", jwt, "require"))
            .await
            .expect("the token is admitted");
        c.query_one("select current_user::text", &[])
            .await
            .expect("who")
            .get(0)
    })
}

#[test]
fn token_cli_round_trip() {
    let dir = cli_keygen();
    let bin = env!("CARGO_BIN_EXE_rolegate");
    let out = std::process::Command::new(bin)
        .args(["token", "issue", "--key"])
        .arg(dir.path().join("migrator.key"))
        .args([
            "--subject",
            "cli",
            "--ttl",
            "10m",
            "--env",
            "prod",
            "--confirm",
        ])
        .output()
        .expect("issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(jwt.split('.').count(), 3);
    // Accepted by a proxy configured with the public key, in prod.
    assert_eq!(
        admitted_as(dir.path(), "prod", &jwt),
        harness().model.migrator
    );
    // Bad arguments are one line and exit 1.
    let out = std::process::Command::new(bin)
        .args(["token", "issue", "--key", "/nonexistent", "--subject", "x"])
        .output()
        .expect("issue");
    assert_eq!(out.status.code(), Some(1));
}

/// A third-party migration tool (refinery) runs through the proxy with a
/// token inside a window; refused logins leave the schema unchanged.
#[tokio::test]
async fn refinery_migrates_through_the_proxy_and_refusals_change_nothing() {
    let h = harness();
    let k = keys();
    let suffix = format!("{}_{}", std::process::id(), rand::random::<u16>());
    let history = format!("refinery_history_{suffix}");
    let table = format!("invoices_{suffix}");
    let migrations = [
        refinery::Migration::unapplied(
            "V1__create_invoices",
            &format!("create table {table} (id bigserial primary key, amount numeric not null)"),
        )
        .expect("migration 1"),
        refinery::Migration::unapplied(
            "V2__add_currency",
            &format!("alter table {table} add column currency text not null default 'EUR'; create index on {table} (currency)"),
        )
        .expect("migration 2"),
    ];
    let mut runner = refinery::Runner::new(&migrations);
    runner.set_migration_table_name(&history);
    let exists = |h: &Harness| {
        h.psql_migrator(&format!(
            "select count(*) from pg_class where relname = '{table}'"
        ))
    };

    let now = Timestamp::now();
    let refused: Vec<(&str, String, String, &str)> = vec![
        (
            "outside a window",
            migration_toml(
                &k,
                "staging",
                now + SignedDuration::from_hours(5),
                now + SignedDuration::from_hours(6),
                "5m",
            ),
            token::issue(&k.private, opts("ci")).expect("t"),
            "57P03",
        ),
        (
            "expired token",
            open_now(&k, "staging"),
            token::issue(
                &k.private,
                IssueOptions {
                    now: now - SignedDuration::from_hours(3),
                    ..opts("ci")
                },
            )
            .expect("t"),
            "28P01",
        ),
        (
            "unknown key",
            open_now(&k, "staging"),
            token::issue(&k.other_private, opts("ci")).expect("t"),
            "28P01",
        ),
        (
            "replica",
            open_now(&k, "replica"),
            token::issue(&k.private, opts("ci")).expect("t"),
            "57P03",
        ),
        (
            "prod without confirmation",
            open_now(&k, "prod"),
            token::issue(
                &k.private,
                IssueOptions {
                    env: Some("prod".into()),
                    ..opts("ci")
                },
            )
            .expect("t"),
            "28P01",
        ),
    ];
    for (what, section, jwt, code) in &refused {
        let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
        let e = connect_tls(&proxy.url("migrator", jwt, "require"))
            .await
            .map(|_| ())
            .expect_err(what);
        let (sev, c, msg) = db_error(&e);
        assert_eq!(
            (sev.as_str(), c.as_str()),
            ("FATAL", *code),
            "{what}: {msg}"
        );
        assert!(msg.starts_with("rolegate:"), "{what}: {msg}");
        assert_eq!(exists(h), "0", "{what}: the schema changed");
    }

    // Admitted: refinery applies both migrations.
    let proxy = h.start_proxy_with(|c| format!("{c}{}", open_now(&k, "staging")));
    let jwt = token::issue(&k.private, opts("refinery-ci")).expect("t");
    let mut client = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("migration login");
    let report = runner.run_async(&mut client).await.expect("refinery run");
    assert_eq!(report.applied_migrations().len(), 2);
    assert_eq!(exists(h), "1");
    let cols = h.psql_migrator(&format!("select string_agg(column_name, ',' order by ordinal_position) from information_schema.columns where table_name = '{table}'"));
    assert_eq!(cols, "id,amount,currency");
    // Idempotent second run.
    let report = runner.run_async(&mut client).await.expect("refinery rerun");
    assert!(report.applied_migrations().is_empty());
    // The runtime role can use what the migration created.
    let rt = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("runtime");
    rt.execute(&format!("insert into {table} (amount) values (10)"), &[])
        .await
        .expect("runtime insert");
    let logs = proxy.logs();
    assert!(
        logs.contains("\"subject\":\"refinery-ci\"") && logs.contains("add column currency"),
        "{logs}"
    );
}

/// A CI system's OIDC token: ES256 from a JWKS with issuer, audience and a
/// subject glob; and key rotation with two `[[migration.keys]]`.
#[tokio::test]
async fn jwks_es256_subject_glob_and_key_rotation() {
    use base64::Engine;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let h = harness();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("p256");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("pair");
    let point = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"ci-1","x":"{}","y":"{}"}}]}}"#,
        b64(&point[1..33]),
        b64(&point[33..65])
    );
    let dir = tempfile::tempdir().expect("dir");
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).expect("jwks");
    let now = Timestamp::now();
    let section = format!(
        "\n[migration]\nenvironment = \"staging\"\n[[migration.jwks]]\nfile = \"{}\"\nissuer = \"https://ci.example\"\naudience = \"rolegate\"\nsubject = \"repo:acme/app:environment:*\"\n[[migration.windows]]\nstart = \"{}\"\nend = \"{}\"\n",
        jwks_file.display(),
        now - SignedDuration::from_mins(5),
        now + SignedDuration::from_hours(1)
    );
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    let mint = |sub: &str, iss: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("ci-1".into());
        let claims = serde_json::json!({
            "iss": iss, "aud": "rolegate", "sub": sub,
            "iat": now.as_second(), "exp": now.as_second() + 600, "jti": "run-1"
        });
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
        .expect("sign")
    };
    let ok = mint("repo:acme/app:environment:production", "https://ci.example");
    let c = connect_tls(&proxy.url("migrator", &ok, "require"))
        .await
        .expect("OIDC token admitted");
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, h.model.migrator);
    for (what, jwt) in [
        (
            "subject outside the glob",
            mint("repo:evil/app:environment:production", "https://ci.example"),
        ),
        (
            "wrong issuer",
            mint(
                "repo:acme/app:environment:production",
                "https://other.example",
            ),
        ),
    ] {
        let e = connect_tls(&proxy.url("migrator", &jwt, "require"))
            .await
            .map(|_| ())
            .expect_err(what);
        assert_eq!(db_error(&e).1, "28P01", "{what}");
    }

    // Rotation: two Ed25519 keys with kids; a token from the new key works.
    let old = keys();
    let new = keys();
    let section = format!(
        "\n[migration]\nenvironment = \"staging\"\n[[migration.keys]]\nkid = \"2026-10\"\npublic_key_file = \"{}\"\n[[migration.keys]]\nkid = \"2026-11\"\npublic_key_file = \"{}\"\n[[migration.windows]]\nstart = \"{}\"\nend = \"{}\"\n",
        old.public.display(),
        new.public.display(),
        now - SignedDuration::from_mins(5),
        now + SignedDuration::from_hours(1)
    );
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    for (k, kid) in [(&old, "2026-10"), (&new, "2026-11")] {
        let jwt = token::issue(
            &k.private,
            IssueOptions {
                kid: Some(kid.into()),
                ..opts("rotation")
            },
        )
        .expect("t");
        let c = connect_tls(&proxy.url("migrator", &jwt, "require"))
            .await
            .expect("rotated key admitted");
        c.simple_query("select 1").await.expect("query");
    }
    // The old key's token claiming the new kid does not verify.
    let jwt = token::issue(
        &old.private,
        IssueOptions {
            kid: Some("2026-11".into()),
            ..opts("rotation")
        },
    )
    .expect("t");
    let e = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .map(|_| ())
        .expect_err("wrong kid");
    assert_eq!(db_error(&e).1, "28P01");
}

/// `token keygen` writes RFC 8410 keys that standard tools read: OpenSSL
/// parses the private key, and a token minted with PyJWT (as a CI job
/// would, without rolegate's binary) logs in through the proxy.
#[test]
fn keys_from_keygen_work_with_openssl_and_pyjwt() {
    let dir = cli_keygen();
    let bin = env!("CARGO_BIN_EXE_rolegate");
    let key = dir.path().join("migrator.key");
    let openssl = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        openssl.status.success(),
        "OpenSSL cannot read the private key: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let script = r#"
import sys, time, uuid
try:
    import jwt
except ImportError:
    sys.exit("PyJWT is missing: python3 -m pip install -r tests/compat/requirements.txt")
now = int(time.time())
claims = {"sub": "pyjwt-ci", "iat": now, "nbf": now, "exp": now + 600, "jti": uuid.uuid4().hex}
print(jwt.encode(claims, open(sys.argv[1]).read(), algorithm="EdDSA"))
"#;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&key)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}): apt-get install python3"));
    assert!(
        out.status.success(),
        "PyJWT could not mint a token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        admitted_as(dir.path(), "staging", &jwt),
        harness().model.migrator
    );
    // A replica never admits migrations: no token is minted for one.
    let out = std::process::Command::new(bin)
        .args(["token", "issue", "--key"])
        .arg(&key)
        .args(["--subject", "x", "--env", "replica"])
        .output()
        .expect("issue");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replica never admits migrations"), "{err}");
}
