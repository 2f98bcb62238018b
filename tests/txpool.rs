//! Transaction pooling (`[pool] mode = "transaction"`) through the proxy
//! against a real cluster: many clients over a few upstream connections
//! with exact totals and a bounded backend count, session settings that
//! follow their client and no other, the wait timeout, cancel under
//! pooling, migration sessions keeping one backend, and pgbench.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use rolegate::migration::token::{self, IssueOptions};

fn transaction_mode(size: usize, wait: &str) -> impl Fn(String) -> String {
    let wait = wait.to_string();
    move |c| {
        format!("{c}\n[pool]\nmode = \"transaction\"\nsize = {size}\nwait_timeout = \"{wait}\"\n")
    }
}

/// The text of the first column of the first row of a simple query.
async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// A superuser connection straight to the cluster (for pg_stat_activity).
async fn direct_super() -> tokio_postgres::Client {
    let h = harness();
    connect_plain(&h.direct_url("postgres", &h.superuser_password))
        .await
        .expect("direct superuser connection")
}

/// Client backends of the runtime role that last served one of this
/// test's clients (their `application_name` follows the client; other
/// tests' proxies share the cluster).
async fn runtime_backends(su: &tokio_postgres::Client) -> i64 {
    let sql = format!(
        "select count(*) from pg_stat_activity where usename = '{}' and backend_type = 'client backend' and application_name like 'txpool-many-%'",
        harness().model.runtime
    );
    one(su, &sql).await.parse().expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_three_upstream_connections_with_exact_totals() {
    const CLIENTS: i64 = 24;
    const TXNS: i64 = 25;
    let h = harness();
    h.psql_migrator(
        "create table public.txpool_counter (id int primary key, n bigint not null default 0);
         create table public.txpool_log (client int not null, i int not null);",
    );
    let proxy = h.start_proxy_with(transaction_mode(3, "30s"));
    let url = proxy.url("web", WEB_PASSWORD, "require");

    let su = direct_super().await;
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, most) = (done.clone(), most.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let n = runtime_backends(&su).await;
                most.fetch_max(n, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect_tls(&format!("{url}&application_name=txpool-many-{id}"))
                .await
                .expect("client connects");
            c.batch_execute(&format!(
                "insert into public.txpool_counter (id) values ({id})"
            ))
            .await
            .expect("insert");
            for i in 0..TXNS {
                c.batch_execute(&format!(
                    "BEGIN;
                     UPDATE public.txpool_counter SET n = n + 1 WHERE id = {id};
                     INSERT INTO public.txpool_log VALUES ({id}, {i});
                     COMMIT;"
                ))
                .await
                .unwrap_or_else(|e| panic!("client {id} transaction {i}: {e}"));
                // A statement outside a transaction, too.
                let n: i64 = one(
                    &c,
                    &format!("select n from public.txpool_counter where id = {id}"),
                )
                .await
                .parse()
                .expect("n");
                assert_eq!(n, i + 1, "client {id} sees its own committed count");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    done.store(true, Ordering::Release);
    sampler.await.expect("sampler");

    let su = direct_super().await;
    let total: i64 = one(&su, "select sum(n) from public.txpool_counter")
        .await
        .parse()
        .expect("sum");
    assert_eq!(total, CLIENTS * TXNS);
    let logged: i64 = one(&su, "select count(*) from public.txpool_log")
        .await
        .parse()
        .expect("count");
    assert_eq!(logged, CLIENTS * TXNS);
    let most = most.load(Ordering::Acquire);
    assert!(most >= 1, "the sampler saw the runtime backends");
    assert!(
        most <= 3,
        "{most} upstream backends at once over size = 3\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn a_session_setting_follows_its_client_and_no_other() {
    let h = harness();
    // One upstream connection: every lease changes hands.
    let proxy = h.start_proxy_with(transaction_mode(1, "30s"));
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&url).await.expect("a");
    let b = connect_tls(&url).await.expect("b");
    a.batch_execute("SET work_mem = '7MB'; SELECT set_config('app.tenant', 'tenant-a', false)")
        .await
        .expect("a sets");
    let mut pids = HashSet::new();
    for _ in 0..5 {
        assert_ne!(one(&b, "show work_mem").await, "7MB", "a SET leaked to b");
        assert_eq!(
            one(
                &b,
                "select coalesce(current_setting('app.tenant', true), '')"
            )
            .await,
            "",
            "a custom setting leaked to b"
        );
        assert_eq!(one(&a, "show work_mem").await, "7MB", "a lost its SET");
        assert_eq!(
            one(&a, "select current_setting('app.tenant')").await,
            "tenant-a"
        );
        pids.insert(one(&a, "select pg_backend_pid()").await);
    }
    // Inside a transaction, too, and after RESET it is gone for good.
    a.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(one(&a, "show work_mem").await, "7MB");
    a.batch_execute("COMMIT; RESET work_mem")
        .await
        .expect("reset");
    one(&b, "select 1").await;
    assert_ne!(one(&a, "show work_mem").await, "7MB", "RESET was forgotten");
    // A startup setting follows its client the same way.
    let c = connect_tls(&format!("{url}&application_name=client-c"))
        .await
        .expect("c");
    one(&b, "select 1").await;
    assert_eq!(one(&c, "show application_name").await, "client-c");
    assert_ne!(one(&b, "show application_name").await, "client-c");
    assert_eq!(pids.len(), 1, "size = 1 means one upstream backend");
}

#[tokio::test]
async fn a_client_waiting_past_wait_timeout_gets_53300_and_the_holder_is_unaffected() {
    let h = harness();
    let proxy = h.start_proxy_with(transaction_mode(1, "1s"));
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let holder = connect_tls(&url).await.expect("holder");
    let waiter = connect_tls(&url)
        .await
        .expect("waiter logs in while it is free");
    holder.batch_execute("BEGIN").await.expect("begin");
    one(&holder, "select 1").await;

    let t0 = std::time::Instant::now();
    let e = waiter
        .simple_query("select 1")
        .await
        .expect_err("no upstream connection is free");
    assert!(t0.elapsed() >= Duration::from_millis(900), "it waited");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {e}"));
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().starts_with("rolegate: "), "{}", db.message());
    assert!(db.message().contains("wait_timeout"), "{}", db.message());
    assert!(db.hint().is_some_and(|h| h.contains("size")));

    // The holder's transaction goes on and commits.
    assert_eq!(one(&holder, "select 41 + 1").await, "42");
    holder.batch_execute("COMMIT").await.expect("commit");
    // And a new client gets the connection once it is free.
    let next = connect_tls(&url).await.expect("next");
    assert_eq!(one(&next, "select 1").await, "1");
    let (_, metrics) = http_get(proxy.admin_port, "/metrics");
    assert!(
        metrics.contains("rolegate_pool_wait_timeouts_total{service=\"default\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cancel_reaches_only_the_query_of_its_client() {
    let h = harness();
    let proxy = h.start_proxy_with(transaction_mode(3, "30s"));
    let url = proxy.url("web", WEB_PASSWORD, "disable");
    let a = connect_plain(&url).await.expect("a");
    let b = connect_plain(&url).await.expect("b");
    let b_run = tokio::spawn(async move {
        let t0 = std::time::Instant::now();
        let r = b.simple_query("select pg_sleep(3)").await;
        (r.map(|_| ()), t0.elapsed())
    });
    let token = a.cancel_token();
    let a_run = tokio::spawn(async move { a.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let a_result = tokio::time::timeout(Duration::from_secs(10), a_run)
        .await
        .expect("a's query ends soon after the cancel")
        .expect("task");
    let e = a_result.expect_err("a's query was cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    let (b_result, took) = b_run.await.expect("task");
    b_result.expect("b's query was not cancelled");
    assert!(took >= Duration::from_millis(2900));
}

#[tokio::test]
async fn a_cancel_between_transactions_reaches_nothing() {
    let h = harness();
    let proxy = h.start_proxy_with(transaction_mode(1, "30s"));
    let url = proxy.url("web", WEB_PASSWORD, "disable");
    let a = connect_plain(&url).await.expect("a");
    let b = connect_plain(&url).await.expect("b");
    one(&a, "select 1").await;
    // a holds no upstream now; b's query runs on the one connection a used.
    let token = a.cancel_token();
    let b_run = tokio::spawn(async move { b.simple_query("select pg_sleep(2)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    b_run
        .await
        .expect("task")
        .expect("b's query is not a's to cancel");
}

#[tokio::test]
async fn migration_sessions_keep_one_backend() {
    let h = harness();
    let dir = tempfile::tempdir().expect("dir");
    let (private, public) = token::keygen(dir.path()).expect("keygen");
    let private = std::fs::read_to_string(private).expect("key");
    let now = jiff::Timestamp::now();
    let migration = format!(
        "\n[migration]\nenvironment = \"staging\"\n[[migration.keys]]\npublic_key_file = \"{}\"\n[[migration.windows]]\nstart = \"{}\"\nend = \"{}\"\n",
        public.display(),
        now - jiff::SignedDuration::from_mins(5),
        now + jiff::SignedDuration::from_hours(2),
    );
    let pooled = transaction_mode(1, "1s");
    let proxy = h.start_proxy_with(move |c| pooled(c) + &migration);
    let jwt = token::issue(
        &private,
        IssueOptions {
            subject: "ci".into(),
            ttl: Duration::from_secs(600),
            env: None,
            confirm: false,
            service: None,
            kid: None,
            now: jiff::Timestamp::now(),
        },
    )
    .expect("token");
    let m = connect_tls(&proxy.url("migrator", &jwt, "require"))
        .await
        .expect("migrator");
    let web = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("web");
    let pid = one(&m, "select pg_backend_pid()").await;
    m.batch_execute("SET work_mem = '9MB'").await.expect("set");
    for _ in 0..5 {
        // The runtime pool (size 1) is busy with web's statements; the
        // migration session is not part of it.
        assert_eq!(one(&web, "select 1").await, "1");
        assert_eq!(one(&m, "select pg_backend_pid()").await, pid);
        assert_eq!(one(&m, "show work_mem").await, "9MB");
    }
}

#[test]
fn pgbench_simple_extended_and_prepared_over_three_connections_have_zero_failures() {
    let h = harness();
    h.pgbench_init();
    let proxy = h.start_proxy_with(transaction_mode(3, "30s"));
    // -M prepared prepares each statement synchronously (PQprepare) on
    // its first use, blocking the pgbench thread: with several clients per
    // thread, one waiting for a connection would stall the one holding it.
    // So that mode runs a thread per client.
    for (mode, threads) in [("simple", "2"), ("extended", "2"), ("prepared", "16")] {
        let out = std::process::Command::new(pgbench_bin())
            .args(["-n", "-c", "16", "-j", threads, "-T", "5", "-M", mode])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &proxy.port.to_string(),
                "-U",
                "web",
            ])
            .arg(&h.model.database)
            .env("PGPASSWORD", WEB_PASSWORD)
            .env("PGSSLMODE", "require")
            .output()
            .expect("pgbench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgbench -M {mode}:\n{stdout}\n{stderr}\n{}",
            proxy.logs()
        );
        assert!(
            stdout.contains("number of failed transactions: 0")
                || !stdout.contains("failed transactions"),
            "{stdout}"
        );
        assert!(!stderr.contains("error"), "pgbench -M {mode}:\n{stderr}");
        assert!(stdout.contains("number of clients: 16"), "{stdout}");
    }
}

#[tokio::test]
async fn what_needs_one_backend_is_refused_with_0a000_and_the_session_goes_on() {
    let h = harness();
    let pooled = transaction_mode(2, "30s");
    // Temporary tables allowed by the policy are still refused here.
    let proxy = h.start_proxy_with(move |c| pooled(c) + "\n[policy]\nallow_temp_tables = true\n");
    let c = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("client");
    for sql in [
        "LISTEN jobs",
        "SELECT pg_advisory_lock(7)",
        "select 1; select pg_try_advisory_lock(7)",
        "PREPARE p AS SELECT 1",
        "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT",
        "CREATE TEMP TABLE t (i int)",
    ] {
        let e = c
            .batch_execute(sql)
            .await
            .expect_err(&format!("{sql} is refused"));
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
        assert!(
            db.message().starts_with("rolegate: ") && db.message().contains("transaction pooling"),
            "{}",
            db.message()
        );
        assert!(
            db.hint()
                .is_some_and(|h| h.contains("[pool] mode = \"session\""))
        );
        // Nothing is left open: the session is usable.
        c.batch_execute("ROLLBACK").await.ok();
        assert_eq!(one(&c, "select 1").await, "1", "after {sql}");
    }
    // What lives only as long as the transaction is fine; so are NOTIFY
    // and unnamed extended-protocol statements.
    c.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7); COMMIT; NOTIFY jobs")
        .await
        .expect("transaction-scoped features work");
    let rows = c
        .query_typed(
            "select $1::int + 1",
            &[(&41i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .expect("an unnamed statement");
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    let (_, metrics) = http_get(proxy.admin_port, "/metrics");
    assert!(
        metrics.contains("rolegate_refusals_total{reason=\"needs_one_backend\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_server_killed_is_never_handed_out() {
    let h = harness();
    let proxy = h.start_proxy_with(transaction_mode(1, "30s"));
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let c = connect_tls(&format!("{url}&application_name=txpool-killed"))
        .await
        .expect("client");
    let pid = one(&c, "select pg_backend_pid()").await;
    // The one pooled connection dies between the client's transactions.
    let su = direct_super().await;
    one(&su, &format!("select pg_terminate_backend({pid})")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = connect_tls(&url).await.expect("another client logs in");
    assert_eq!(one(&other, "select 1").await, "1");
    // The first client goes on, on a new backend, with its settings.
    assert_ne!(one(&c, "select pg_backend_pid()").await, pid);
    assert_eq!(one(&c, "show application_name").await, "txpool-killed");
}

#[tokio::test]
async fn named_prepared_statements_follow_their_client_to_any_connection() {
    let h = harness();
    // One connection: every lease changes hands, and is reset.
    let proxy = h.start_proxy_with(transaction_mode(1, "30s"));
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let mut a = connect_tls(&url).await.expect("a");
    let b = connect_tls(&url).await.expect("b");
    // tokio-postgres names every statement it prepares.
    let add = a.prepare("select $1::int + 1").await.expect("prepare");
    let twice = a.prepare("select $1::int * 2").await.expect("prepare");
    for i in 0..5i32 {
        // b's statements reset the connection between a's transactions.
        let n: i32 = b
            .query_one("select $1::int - 1", &[&i])
            .await
            .expect("b")
            .get(0);
        assert_eq!(n, i - 1);
        let n: i32 = a
            .query_one(&add, &[&i])
            .await
            .expect("a's statement")
            .get(0);
        assert_eq!(n, i + 1);
        let n: i32 = a.query_one(&twice, &[&i]).await.expect("a's other").get(0);
        assert_eq!(n, i * 2);
    }
    // Inside a transaction, too.
    let tx = a.transaction().await.expect("begin");
    let n: i32 = tx.query_one(&add, &[&41i32]).await.expect("in tx").get(0);
    assert_eq!(n, 42);
    tx.commit().await.expect("commit");
    // DEALLOCATE is honoured: the statement is gone on every connection.
    a.batch_execute("DEALLOCATE ALL").await.expect("deallocate");
    one(&b, "select 1").await;
    let e = a
        .query_one(&add, &[&1i32])
        .await
        .expect_err("a deallocated statement");
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"), "{e}");
    let (_, metrics) = http_get(proxy.admin_port, "/metrics");
    let reparses: f64 = metrics
        .lines()
        .find(|l| l.starts_with("rolegate_pool_reparses_total{service=\"default\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(reparses >= 10.0, "re-parses counted: {reparses}\n{metrics}");
}
