//! Upstream session reuse: a runtime client that leaves cleanly hands its
//! upstream session (reset with `DISCARD ALL`) to the next client, and
//! nothing the first client did — settings, prepared statements, temporary
//! tables, cursors, advisory locks, LISTEN — is visible to the second.
//! Sessions left mid-transaction are not reused; the pool is bounded; a
//! pooled session killed by the server is never handed out; upstream SCRAM
//! keys are derived once.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The value of one metric sample line (`name{labels} value`), 0 if absent.
fn metric(port: u16, name: &str, label: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && (label.is_empty() || l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait until the pool holds `n` idle upstream sessions (the reset runs
/// after the client is gone).
async fn pool_holds(proxy: &ProxyProcess, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let idle = metric(proxy.admin_port, "rolegate_pool_idle_connections", "");
        if idle == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pool holds {idle} idle sessions, expected {n}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

fn with_temp_tables(c: String) -> String {
    c + "\n[policy]\nallow_temp_tables = true\n"
}

#[tokio::test]
async fn no_session_state_leaks_to_the_next_client() {
    let h = harness();
    h.psql_super(&format!(
        "grant temporary on database {} to {}",
        h.model.database, h.model.runtime
    ));
    let proxy = h.start_proxy_with(with_temp_tables);
    let url = proxy.url("web", WEB_PASSWORD, "require");

    let a = connect_tls(&url).await.expect("client A");
    let pid = backend_pid(&a).await;
    a.batch_execute(
        "SET work_mem = '7MB';
         SET search_path = pg_catalog;
         SELECT set_config('app.tenant', 'tenant-a', false);
         PREPARE leaked_stmt AS SELECT 42;
         CREATE TEMP TABLE leaked_temp (i int);
         BEGIN; DECLARE leaked_cursor CURSOR WITH HOLD FOR SELECT 1; COMMIT;
         SELECT pg_advisory_lock(424242);
         LISTEN leaked_channel;",
    )
    .await
    .expect("client A sets up session state");
    // A protocol-level named statement too (tokio-postgres prepares one).
    let stmt = a.prepare("select $1::int + 1").await.expect("prepare");
    a.query_one(&stmt, &[&1i32]).await.expect("run prepared");
    drop(a);
    pool_holds(&proxy, 1.0).await;

    let b = connect_tls(&url).await.expect("client B");
    assert_eq!(
        backend_pid(&b).await,
        pid,
        "client B must get client A's upstream session, or this test proves nothing"
    );
    let one = |sql: &'static str| {
        let b = &b;
        async move {
            b.query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }
    };
    let work_mem: String = one("show work_mem").await.get(0);
    assert_ne!(work_mem, "7MB", "a SET leaked");
    let path: String = one("show search_path").await.get(0);
    assert!(path.contains("$user"), "search_path leaked: {path}");
    let tenant: Option<String> = one("select current_setting('app.tenant', true)")
        .await
        .get(0);
    assert_ne!(
        tenant.as_deref(),
        Some("tenant-a"),
        "a custom setting leaked"
    );
    // RLS treats the reset placeholder ('') like "no tenant": no rows.
    let visible: i64 = one("select count(*) from public.notes").await.get(0);
    assert_eq!(visible, 0, "a reused session without a tenant sees rows");
    let prepared: i64 = one(
        // B's own statements (tokio-postgres prepares each query) excluded.
        "select count(*) from pg_prepared_statements where name = 'leaked_stmt' or statement = 'select $1::int + 1'",
    )
    .await
    .get(0);
    assert_eq!(prepared, 0, "prepared statements leaked");
    let temp: Option<String> = one("select to_regclass('pg_temp.leaked_temp')::text")
        .await
        .get(0);
    assert_eq!(temp, None, "a temporary table leaked");
    let cursors: i64 = one("select count(*) from pg_cursors where name = 'leaked_cursor'")
        .await
        .get(0);
    assert_eq!(cursors, 0, "a cursor leaked");
    let locks: i64 =
        one("select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()")
            .await
            .get(0);
    assert_eq!(locks, 0, "a session advisory lock leaked");
    let channels: i64 = one("select count(*) from pg_listening_channels()")
        .await
        .get(0);
    assert_eq!(channels, 0, "a LISTEN leaked");

    // The lock is really free: another session can take it.
    let c = connect_tls(&url).await.expect("client C");
    let got: bool = c
        .query_one("select pg_try_advisory_lock(424242)", &[])
        .await
        .expect("try lock")
        .get(0);
    assert!(got, "client A's advisory lock is still held");
}

#[tokio::test]
async fn reused_sessions_greet_with_current_parameters_and_log_it() {
    let h = harness();
    let proxy = h.start_proxy();
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&url).await.expect("client A");
    let pid = backend_pid(&a).await;
    a.batch_execute("SET application_name = 'changed-by-a'; SET TimeZone = 'Asia/Tokyo'")
        .await
        .expect("set");
    drop(a);
    pool_holds(&proxy, 1.0).await;
    let b = connect_tls(&url).await.expect("client B");
    assert_eq!(backend_pid(&b).await, pid);
    let app: String = b
        .query_one("show application_name", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(app, "changed-by-a");
    let tz: String = b.query_one("show timezone", &[]).await.expect("tz").get(0);
    assert_ne!(tz, "Asia/Tokyo");
    let logs = proxy.logs();
    assert!(
        logs.contains("\"upstream\":\"pooled\"") && logs.contains("\"upstream\":\"new\""),
        "session_start events say whether the upstream session was reused:\n{logs}"
    );
    assert!(
        metric(
            proxy.admin_port,
            "rolegate_upstream_sessions_total",
            "source=\"pool\""
        ) >= 1.0
    );
    assert!(
        metric(
            proxy.admin_port,
            "rolegate_pool_resets_total",
            "outcome=\"ok\""
        ) >= 1.0
    );
}

#[tokio::test]
async fn different_startup_parameters_get_different_sessions() {
    let h = harness();
    let proxy = h.start_proxy();
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&format!("{url}&application_name=first"))
        .await
        .expect("client A");
    let pid = backend_pid(&a).await;
    drop(a);
    pool_holds(&proxy, 1.0).await;
    let b = connect_tls(&format!("{url}&application_name=second"))
        .await
        .expect("client B");
    assert_ne!(backend_pid(&b).await, pid);
    let app: String = b
        .query_one("show application_name", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(app, "second");
}

#[tokio::test]
async fn a_session_left_mid_transaction_is_not_reused() {
    let h = harness();
    h.psql_super(
        "create table if not exists pool_tx (i int); grant select, insert on pool_tx to public;",
    );
    let proxy = h.start_proxy();
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&url).await.expect("client A");
    let pid = backend_pid(&a).await;
    a.batch_execute("BEGIN; INSERT INTO public.pool_tx VALUES (1)")
        .await
        .expect("begin + insert");
    drop(a);
    // The upstream session is closed, so its transaction rolls back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while h
        .psql_super(&format!(
            "select count(*) from pg_stat_activity where pid = {pid}"
        ))
        .trim()
        != "0"
    {
        assert!(Instant::now() < deadline, "client A's backend lingers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.psql_super("select count(*) from pool_tx").trim(), "0");
    assert_eq!(
        metric(proxy.admin_port, "rolegate_pool_idle_connections", ""),
        0.0
    );
    let b = connect_tls(&url).await.expect("client B");
    assert_ne!(backend_pid(&b).await, pid);
}

#[tokio::test]
async fn unsynced_extended_messages_are_not_reused() {
    use common::raw::*;
    let h = harness();
    h.psql_super("create table if not exists pool_unsynced (i int); grant select, insert on pool_unsynced to public;");
    let proxy = h.start_proxy();
    let (mut raw, _) = Raw::login(proxy.port, &[("user", "web")], WEB_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("login: {:?}", e.field(b'M')));
    // Parse/Bind/Execute of an INSERT, then leave without Sync: the server
    // must see the client go, which rolls the implicit transaction back.
    let mut batch = parse("", "insert into public.pool_unsynced values (1)");
    batch.extend(bind("", ""));
    batch.extend(execute(""));
    batch.extend(msg(b'H', b""));
    raw.send(&batch).await;
    let _ = raw.recv().await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(proxy.admin_port, "rolegate_pool_idle_connections", ""),
        0.0
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while h
        .psql_super("select count(*) from pg_stat_activity where query like 'insert into public.pool_unsynced%'")
        .trim()
        != "0"
    {
        assert!(Instant::now() < deadline, "the unsynced backend lingers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.psql_super("select count(*) from pool_unsynced").trim(),
        "0"
    );
}

#[tokio::test]
async fn the_pool_is_bounded_and_can_be_disabled() {
    let h = harness();
    let proxy = h.start_proxy_with(|c| c + "\n[pool]\nmax_idle = 2\n");
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect_tls(&url).await.expect("client"));
    }
    drop(clients);
    pool_holds(&proxy, 2.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(proxy.admin_port, "rolegate_pool_idle_connections", ""),
        2.0
    );

    let off = h.start_proxy_with(|c| c + "\n[pool]\nenabled = false\n");
    let url = off.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&url).await.expect("client A");
    let pid = backend_pid(&a).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = connect_tls(&url).await.expect("client B");
    assert_ne!(backend_pid(&b).await, pid);
    assert_eq!(
        metric(off.admin_port, "rolegate_pool_idle_connections", ""),
        0.0
    );
}

#[tokio::test]
async fn a_pooled_session_the_server_killed_is_not_handed_out() {
    let h = harness();
    let proxy = h.start_proxy();
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&url).await.expect("client A");
    let pid = backend_pid(&a).await;
    drop(a);
    pool_holds(&proxy, 1.0).await;
    h.psql_super(&format!("select pg_terminate_backend({pid})"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while h
        .psql_super(&format!(
            "select count(*) from pg_stat_activity where pid = {pid}"
        ))
        .trim()
        != "0"
    {
        assert!(Instant::now() < deadline, "backend not terminated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = connect_tls(&url).await.expect("client B");
    assert_ne!(backend_pid(&b).await, pid);
    b.simple_query("select 1").await.expect("works");
}

#[tokio::test]
async fn idle_pooled_sessions_expire() {
    let h = harness();
    let proxy = h.start_proxy_with(|c| c + "\n[pool]\nidle_timeout = \"1s\"\n");
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let a = connect_tls(&url).await.expect("client A");
    let pid = backend_pid(&a).await;
    drop(a);
    pool_holds(&proxy, 1.0).await;
    pool_holds(&proxy, 0.0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while h
        .psql_super(&format!(
            "select count(*) from pg_stat_activity where pid = {pid}"
        ))
        .trim()
        != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the expired upstream session was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn upstream_scram_keys_are_derived_once() {
    let h = harness();
    // No pooling, so every login authenticates upstream.
    let proxy = h.start_proxy_with(|c| c + "\n[pool]\nenabled = false\n");
    let url = proxy.url("web", WEB_PASSWORD, "require");
    for _ in 0..4 {
        let c = connect_tls(&url).await.expect("login");
        c.simple_query("select 1").await.expect("query");
    }
    let port = proxy.admin_port;
    let misses = metric(
        port,
        "rolegate_upstream_scram_derivations_total",
        "cache=\"miss\"",
    );
    let hits = metric(
        port,
        "rolegate_upstream_scram_derivations_total",
        "cache=\"hit\"",
    );
    assert_eq!(misses, 1.0, "PBKDF2 ran more than once for one role");
    assert!(
        hits >= 3.0,
        "later logins must use the cached keys (hits = {hits})"
    );
}
