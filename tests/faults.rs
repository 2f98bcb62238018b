//! Faults, end to end through `rolegate serve` with tokio-postgres TLS
//! clients: the upstream cluster stopped (new logins get `FATAL 08006`,
//! the proxy stays up, logins work again after the restart); the cluster
//! restarted under open sessions; a backend terminated
//! (`pg_terminate_backend`) mid-query, mid-COPY and mid-transaction; a
//! backend `kill -9`ed (PostgreSQL then restarts every backend); and the
//! client vanishing mid-COPY and mid-transaction, by a graceful drop and by
//! a TCP reset. Each case checks that the affected client gets an error
//! (a FATAL with the expected SQLSTATE where the protocol lets the client
//! see one), that nothing half-done is committed, that a bystander session
//! opened before the fault carries on when the fault is not cluster-wide,
//! and that new logins work afterwards.
//!
//! The tests hold no assumption about upstream session reuse: backends are
//! found by `application_name` (which the proxy forwards, checked here) and
//! state, never by "a new login gets a new backend", and "the client's
//! upstream work is over" means no backend of that name is busy or inside a
//! transaction (a reused, idle one may remain).
//!
//! This binary owns its cluster: the tests that stop, restart or crash it
//! take [`CLUSTER`] exclusively, every other test takes it shared.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, pin_mut};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tokio_postgres::tls::MakeTlsConnect;

/// Shared by tests that only need the cluster up; exclusive for tests that
/// stop, restart or crash it.
static CLUSTER: RwLock<()> = RwLock::const_new(());

/// Generous bound for anything that should happen "soon" on a loaded
/// 2-core machine; only hit when something is actually broken.
const PATIENCE: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

/// `h.psql_super` off the async workers (it blocks on a child process).
async fn psql_super(sql: impl Into<String>) -> String {
    let sql = sql.into();
    tokio::task::spawn_blocking(move || harness().psql_super(&sql))
        .await
        .expect("psql task")
}

/// A table owned by the migrator; default privileges grant DML on it to
/// the runtime role, as for any table a migration creates.
async fn make_table(cols: &str) -> String {
    let name = unique("fault");
    let sql = format!("create table {name} ({cols})");
    tokio::task::spawn_blocking(move || harness().psql_migrator(&sql))
        .await
        .expect("psql task");
    name
}

async fn count_rows(table: &str) -> i64 {
    psql_super(format!("select count(*) from {table}"))
        .await
        .parse()
        .expect("count")
}

/// Poll `cond` until it holds, failing with `what` after [`PATIENCE`].
async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `fut`, failing the test if it takes longer than [`PATIENCE`].
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A client session through the proxy whose connection task is kept, so
/// the test can see an error the server sent outside any query (the
/// connection's own result) and can cut the TCP connection.
struct Session {
    client: Arc<tokio_postgres::Client>,
    conn: JoinHandle<Result<(), tokio_postgres::Error>>,
    app: String,
}

/// Log in over TLS (verifying the proxy's certificate) with
/// `application_name = app`. With `reset_on_abort`, the socket has a zero
/// linger, so aborting the connection task sends a TCP RST.
async fn try_open(
    proxy: &ProxyProcess,
    identity: &str,
    password: &str,
    app: &str,
    reset_on_abort: bool,
) -> Result<Session, tokio_postgres::Error> {
    let url = format!(
        "{}&application_name={app}",
        proxy.url(identity, password, "require")
    );
    let config: tokio_postgres::Config = url.parse().expect("connection string");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp connect to the proxy");
    if reset_on_abort {
        tcp.set_zero_linger().expect("SO_LINGER");
    }
    let mut make =
        tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&harness().pki.ca_file));
    let tls = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<
        tokio::net::TcpStream,
    >>::make_tls_connect(&mut make, "localhost")
    .expect("tls connector");
    let (client, connection) = bounded("login", config.connect_raw(tcp, tls)).await?;
    Ok(Session {
        client: Arc::new(client),
        conn: tokio::spawn(connection),
        app: app.to_string(),
    })
}

async fn open(proxy: &ProxyProcess, identity: &str, app: &str) -> Session {
    let password = if identity == "worker" {
        WORKER_PASSWORD
    } else {
        WEB_PASSWORD
    };
    let s = try_open(proxy, identity, password, app, false)
        .await
        .unwrap_or_else(|e| panic!("login as {identity} ({app}): {e}"));
    // Backends are found by this name below, so the proxy must forward it.
    // A simple query: a prepared one would leave tokio-postgres closing its
    // statement in the background, and a fault landing on that Close would
    // be reported to nobody.
    let rows = s
        .client
        .simple_query("select current_setting('application_name')")
        .await
        .expect("application_name");
    let seen = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row");
    assert_eq!(seen, app, "the proxy must forward application_name");
    s
}

/// Poll `sql` (run as the superuser) until `done` holds for its output;
/// returns that output.
async fn poll_psql(what: &str, sql: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = psql_super(sql).await;
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last answer {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the runtime-role backend named `app` that matches `state` (a
/// SQL condition on `pg_stat_activity`), once there is exactly one.
async fn backend_pid(app: &str, state: &str) -> i32 {
    let runtime = &harness().model.runtime;
    let sql = format!(
        "select pid from pg_stat_activity where usename = '{runtime}' \
         and application_name = '{app}' and {state}"
    );
    poll_psql(
        &format!("one backend for {app} with {state}"),
        &sql,
        |out| out.lines().count() == 1,
    )
    .await
    .trim()
    .parse()
    .expect("pid")
}

/// Wait until the backend `pid` has exited.
async fn wait_backend_gone(pid: i32) {
    poll_psql(
        &format!("backend {pid} has exited"),
        &format!("select count(*) from pg_stat_activity where pid = {pid}"),
        |n| n == "0",
    )
    .await;
}

/// Wait until no backend named `app` is running a statement, in COPY or
/// inside a transaction: either the upstream connection was closed (no
/// session reuse) or it was rolled back and parked idle (reuse).
async fn wait_upstream_work_over(app: &str) {
    let sql = format!(
        "select count(*) from pg_stat_activity where application_name = '{app}' \
         and (state is distinct from 'idle' or xact_start is not null)"
    );
    poll_psql(&format!("{app}'s upstream work is over"), &sql, |n| {
        n == "0"
    })
    .await;
}

/// Wait until the server's COPY on backend `pid` has taken in some rows,
/// so a fault then really lands mid-COPY.
async fn wait_copy_progress(pid: i32) {
    poll_psql(
        "the server has read some COPY rows",
        &format!(
            "select coalesce(max(tuples_processed), 0) from pg_stat_progress_copy where pid = {pid}"
        ),
        |n| n.parse::<i64>().unwrap_or(0) > 0,
    )
    .await;
}

/// Run `select pg_sleep(30)` on a task; returns once its backend is busy
/// in it, with the backend's pid.
async fn start_long_query(s: &Session) -> (JoinHandle<Result<(), tokio_postgres::Error>>, i32) {
    let client = s.client.clone();
    let task =
        tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await.map(|_| ()) });
    let pid = backend_pid(&s.app, "state = 'active' and query like '%pg_sleep%'").await;
    (task, pid)
}

/// The session's connection task result, once it has ended.
async fn connection_end(s: Session) -> Result<(), tokio_postgres::Error> {
    bounded(&format!("{}'s connection to end", s.app), s.conn)
        .await
        .expect("connection task")
}

/// The error the client was told, from the failed request or, when the
/// server spoke outside any request, from the connection's result.
fn told(
    request: &tokio_postgres::Error,
    connection: &Result<(), tokio_postgres::Error>,
) -> Option<(String, String)> {
    request
        .as_db_error()
        .or_else(|| connection.as_ref().err().and_then(|e| e.as_db_error()))
        .map(|d| (d.severity().to_string(), d.code().code().to_string()))
}

/// The client must have been told `FATAL` with one of `codes`.
fn assert_fatal(
    who: &str,
    request: &tokio_postgres::Error,
    connection: &Result<(), tokio_postgres::Error>,
    codes: &[&str],
) {
    match told(request, connection) {
        Some((severity, code)) => {
            assert_eq!(severity, "FATAL", "{who}: {request} / {connection:?}");
            assert!(
                codes.contains(&code.as_str()),
                "{who}: expected FATAL {codes:?}, got {code}: {request} / {connection:?}"
            );
        }
        None => panic!(
            "{who}: the connection ended without an ErrorResponse \
             (expected FATAL {codes:?}): {request} / {connection:?}"
        ),
    }
}

/// A bystander's check that its session still works: a committed write in
/// a transaction, visible to the superuser.
async fn bystander_writes(s: &Session, table: &str, id: i32) {
    s.client
        .batch_execute(&format!(
            "begin; insert into {table} values ({id}, 'bystander'); commit"
        ))
        .await
        .unwrap_or_else(|e| panic!("bystander {} must carry on: {e}", s.app));
    let got = psql_super(format!("select count(*) from {table} where id = {id}")).await;
    assert_eq!(got, "1", "bystander's committed row");
}

/// A new login works straight away and can write.
async fn new_login_works(proxy: &ProxyProcess, table: &str, id: i32) {
    let s = open(proxy, "web", &unique("after")).await;
    s.client
        .execute(&format!("insert into {table} values ({id}, 'after')"), &[])
        .await
        .expect("a new session after the fault can write");
}

fn assert_proxy_up(proxy: &mut ProxyProcess) {
    assert!(proxy.is_running(), "rolegate exited: {}", proxy.logs());
    assert_eq!(
        http_get(proxy.admin_port, "/healthz").0,
        200,
        "/healthz after the fault"
    );
}

/// Restarts the cluster if a test that stopped or crashed it panics, so the
/// other tests of this binary still have one.
struct RestartIfPanicking;

impl Drop for RestartIfPanicking {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Caught: a poisoned harness lock must not turn one failure
            // into an abort of the whole binary.
            let _ = std::panic::catch_unwind(|| harness().with_cluster(|c| c.restart()));
        }
    }
}

/// Wait until the cluster accepts a superuser login and a query again
/// (after crash recovery), without going through the proxy.
async fn wait_cluster_accepts_logins() {
    let h = harness();
    let url = h.direct_url(&h.model.migrator, &h.model.migrator_password);
    wait_until("the cluster accepts logins again", || {
        let url = url.clone();
        async move {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    let task = tokio::spawn(conn);
                    let ok = client.simple_query("select 1").await.is_ok();
                    drop(client);
                    let _ = task.await;
                    ok
                }
                Err(_) => false,
            }
        }
    })
    .await;
}

/// The value of a Prometheus counter line that starts with `series`.
fn metric(proxy: &ProxyProcess, series: &str) -> f64 {
    let (_, body) = http_get(proxy.admin_port, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_upstream_refuses_logins_with_08006_and_logins_work_after_restart() {
    let _exclusive = CLUSTER.write().await;
    let h = harness();
    let _restart = RestartIfPanicking;
    let mut proxy = h.start_proxy();
    let table = make_table("id int primary key, v text").await;
    // A session that has come and gone: with upstream reuse its connection
    // may be parked idle, and must not be handed out once the server is gone.
    {
        let s = open(&proxy, "web", &unique("before")).await;
        s.client.simple_query("select 1").await.expect("query");
    }
    let open_session = open(&proxy, "web", &unique("open")).await;

    tokio::task::spawn_blocking(|| harness().with_cluster(|c| c.stop()))
        .await
        .expect("stop task")
        .expect("stop the cluster");

    // The open session hears about it (fast shutdown: the server's 57P01).
    let conn = connection_end(open_session).await;
    let e = conn
        .as_ref()
        .expect_err("the open session must end with an error");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a FATAL, got {e}"));
    assert_eq!(db.severity(), "FATAL", "{e}");
    assert!(
        ["57P01", "08006"].contains(&db.code().code()),
        "open session: {e}"
    );

    let errors_before = metric(&proxy, "rolegate_upstream_errors_total{role=\"runtime\"}");
    for attempt in 1..=3 {
        let e = match try_open(&proxy, "web", WEB_PASSWORD, &unique("refused"), false).await {
            Ok(_) => panic!("login {attempt} succeeded while the upstream is down"),
            Err(e) => e,
        };
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("login {attempt}: expected a FATAL ErrorResponse, got {e}"));
        assert_eq!(db.severity(), "FATAL", "{e}");
        assert_eq!(db.code().code(), "08006", "login {attempt}: {e}");
        assert!(
            db.message()
                .contains("cannot connect to the upstream server"),
            "{e}"
        );
    }
    assert!(
        metric(&proxy, "rolegate_upstream_errors_total{role=\"runtime\"}") >= errors_before + 3.0,
        "failed upstream logins are counted"
    );
    assert_proxy_up(&mut proxy);

    tokio::task::spawn_blocking(|| harness().with_cluster(|c| c.restart()))
        .await
        .expect("restart task")
        .expect("restart the cluster");
    // The server accepts connections once restart() returns: every login
    // from now on must work at the first try.
    for i in 0..3 {
        new_login_works(&proxy, &table, i).await;
    }
    assert_eq!(count_rows(&table).await, 3);
    assert_proxy_up(&mut proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_open_sessions_ends_them_with_a_fatal_and_rolls_back() {
    let _exclusive = CLUSTER.write().await;
    let h = harness();
    let _restart = RestartIfPanicking;
    let mut proxy = h.start_proxy();
    let table = make_table("id int primary key, v text").await;
    {
        let s = open(&proxy, "web", &unique("before")).await;
        s.client.simple_query("select 1").await.expect("query");
    }
    let idle = open(&proxy, "web", &unique("idle")).await;
    let busy = open(&proxy, "worker", &unique("busy")).await;
    let in_tx = open(&proxy, "web", &unique("in_tx")).await;
    in_tx
        .client
        .batch_execute(&format!(
            "begin; insert into {table} values (100, 'uncommitted')"
        ))
        .await
        .expect("open a transaction");
    let (sleeping, _) = start_long_query(&busy).await;

    tokio::task::spawn_blocking(|| harness().with_cluster(|c| c.restart()))
        .await
        .expect("restart task")
        .expect("restart the cluster");

    let allowed = ["57P01", "08006"];
    let e = bounded("the long query to fail", sleeping)
        .await
        .expect("query task")
        .expect_err("the running query must fail");
    let conn = connection_end(busy).await;
    assert_fatal("busy session", &e, &conn, &allowed);

    let e = in_tx
        .client
        .batch_execute("commit")
        .await
        .expect_err("commit after the restart must fail");
    let conn = connection_end(in_tx).await;
    assert_fatal("session in a transaction", &e, &conn, &allowed);

    let e = idle
        .client
        .simple_query("select 1")
        .await
        .expect_err("the idle session is gone");
    let conn = connection_end(idle).await;
    assert_fatal("idle session", &e, &conn, &allowed);

    assert_proxy_up(&mut proxy);
    assert_eq!(count_rows(&table).await, 0, "nothing half-done committed");
    for i in 0..3 {
        new_login_works(&proxy, &table, i).await;
    }
    assert_eq!(count_rows(&table).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_backend_restarts_the_cluster_and_the_proxy_recovers() {
    let _exclusive = CLUSTER.write().await;
    let h = harness();
    let _restart = RestartIfPanicking;
    let mut proxy = h.start_proxy();
    let table = make_table("id int primary key, v text").await;
    let bystander = open(&proxy, "worker", &unique("bystander")).await;
    bystander
        .client
        .simple_query("select 1")
        .await
        .expect("bystander works before");
    let victim = open(&proxy, "web", &unique("victim")).await;
    let (sleeping, pid) = start_long_query(&victim).await;

    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a
    // backend of our own throwaway cluster, seen busy a moment ago.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());

    // The killed backend says nothing, so this is the proxy's own FATAL.
    let e = bounded("the long query to fail", sleeping)
        .await
        .expect("query task")
        .expect_err("the killed backend's query must fail");
    let conn = connection_end(victim).await;
    assert_fatal("killed backend's client", &e, &conn, &["08006"]);

    // The postmaster ends every other backend too (with a WARNING 57P02
    // and no FATAL): the bystander's connection ends with a proper error.
    bounded("the bystander's connection to end", async {
        while !bystander.conn.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let e = bystander
        .client
        .simple_query("select 1")
        .await
        .expect_err("the bystander's backend was restarted");
    let conn = connection_end(bystander).await;
    assert_fatal("bystander", &e, &conn, &["57P02", "08006"]);

    assert_proxy_up(&mut proxy);
    wait_cluster_accepts_logins().await;
    for i in 0..3 {
        new_login_works(&proxy, &table, i).await;
    }
    assert_eq!(count_rows(&table).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_mid_query_gets_57p01_and_the_bystander_carries_on() {
    let _shared = CLUSTER.read().await;
    let mut proxy = harness().start_proxy();
    let table = make_table("id int primary key, v text").await;
    let bystander = open(&proxy, "worker", &unique("bystander")).await;
    bystander
        .client
        .batch_execute(&format!(
            "begin; insert into {table} values (1, 'bystander')"
        ))
        .await
        .expect("bystander's transaction");
    let victim = open(&proxy, "web", &unique("victim")).await;
    let (sleeping, pid) = start_long_query(&victim).await;

    psql_super(format!("select pg_terminate_backend({pid})")).await;
    let e = bounded("the long query to fail", sleeping)
        .await
        .expect("query task")
        .expect_err("the terminated backend's query must fail");
    let conn = connection_end(victim).await;
    assert_fatal("terminated backend's client", &e, &conn, &["57P01"]);

    // The bystander's open transaction is untouched.
    bystander
        .client
        .batch_execute(&format!(
            "insert into {table} values (2, 'bystander'); commit"
        ))
        .await
        .expect("bystander carries on");
    assert_eq!(count_rows(&table).await, 2);
    assert_proxy_up(&mut proxy);
    new_login_works(&proxy, &table, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_mid_copy_commits_nothing() {
    let _shared = CLUSTER.read().await;
    let mut proxy = harness().start_proxy();
    let table = make_table("id int primary key, v text").await;
    let bystander_table = make_table("id int primary key, v text").await;
    let bystander = open(&proxy, "worker", &unique("bystander")).await;
    let victim = open(&proxy, "web", &unique("victim")).await;

    let sink = victim
        .client
        .copy_in::<_, bytes::Bytes>(&format!("copy {table} from stdin"))
        .await
        .expect("start COPY");
    pin_mut!(sink);
    let rows: String = (0..5_000).map(|i| format!("{i}\trow {i}\n")).collect();
    sink.send(bytes::Bytes::from(rows))
        .await
        .expect("send rows");
    let pid = backend_pid(&victim.app, "state = 'active'").await;
    // Rows have reached the server's COPY: the fault really is mid-COPY.
    wait_copy_progress(pid).await;

    psql_super(format!("select pg_terminate_backend({pid})")).await;
    wait_backend_gone(pid).await;
    // More data and the end of the COPY: the client must get an error
    // (a FATAL 57P01 when tokio-postgres surfaces the server's message).
    let more: String = (5_000..6_000).map(|i| format!("{i}\trow {i}\n")).collect();
    let result = bounded("the COPY to fail", async {
        sink.send(bytes::Bytes::from(more)).await?;
        sink.as_mut().finish().await
    })
    .await;
    let e = result.expect_err("COPY on a terminated backend must fail");
    let conn = connection_end(victim).await;
    if let Some((severity, code)) = told(&e, &conn) {
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", "57P01"),
            "{e}"
        );
    }

    // tokio-postgres drops the server's message when the connection closes
    // under a COPY sink, so the FATAL itself is checked on the wire.
    let app = unique("raw_victim");
    let db = &harness().model.database;
    let (mut raw, _) = raw::Raw::login(
        proxy.port,
        &[
            ("user", "web"),
            ("database", db),
            ("application_name", &app),
        ],
        WEB_PASSWORD,
    )
    .await
    .unwrap_or_else(|e| panic!("raw login: {:?}", e.sqlstate()));
    raw.send(&raw::query(&format!("copy {table} from stdin")))
        .await;
    let m = raw.recv().await.expect("CopyInResponse");
    assert_eq!(m.tag, b'G', "expected CopyInResponse, got {m:?}");
    let rows: String = (0..5_000).map(|i| format!("{i}\trow {i}\n")).collect();
    raw.send(&raw::msg(b'd', rows.as_bytes())).await;
    let pid = backend_pid(&app, "state = 'active'").await;
    wait_copy_progress(pid).await;
    psql_super(format!("select pg_terminate_backend({pid})")).await;
    let m = raw.recv().await.expect("an ErrorResponse before the close");
    assert_eq!(m.tag, b'E', "expected ErrorResponse, got {m:?}");
    assert_eq!(m.field(b'V').as_deref(), Some("FATAL"));
    assert_eq!(m.sqlstate().as_deref(), Some("57P01"));
    assert!(
        raw.recv().await.is_none(),
        "the proxy closes the connection"
    );

    assert_eq!(count_rows(&table).await, 0, "no COPY rows committed");
    bystander_writes(&bystander, &bystander_table, 1).await;
    assert_proxy_up(&mut proxy);
    new_login_works(&proxy, &bystander_table, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_mid_transaction_commits_nothing() {
    let _shared = CLUSTER.read().await;
    let mut proxy = harness().start_proxy();
    let table = make_table("id int primary key, v text").await;
    let bystander_table = make_table("id int primary key, v text").await;
    let bystander = open(&proxy, "worker", &unique("bystander")).await;
    let victim = open(&proxy, "web", &unique("victim")).await;
    victim
        .client
        .batch_execute(&format!(
            "begin; insert into {table} select g, 'half' from generate_series(1, 100) g"
        ))
        .await
        .expect("open a transaction");
    let pid = backend_pid(&victim.app, "state = 'idle in transaction'").await;

    psql_super(format!("select pg_terminate_backend({pid})")).await;
    wait_backend_gone(pid).await;
    let e = victim
        .client
        .batch_execute(&format!(
            "insert into {table} values (1000, 'late'); commit"
        ))
        .await
        .expect_err("the transaction's backend is gone");
    let conn = connection_end(victim).await;
    assert_fatal("terminated transaction's client", &e, &conn, &["57P01"]);

    assert_eq!(count_rows(&table).await, 0, "nothing committed");
    bystander_writes(&bystander, &bystander_table, 1).await;
    assert_proxy_up(&mut proxy);
    new_login_works(&proxy, &bystander_table, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_copy_commits_nothing() {
    let _shared = CLUSTER.read().await;
    let mut proxy = harness().start_proxy();
    let table = make_table("id int, v text").await;
    let bystander_table = make_table("id int primary key, v text").await;
    let bystander = open(&proxy, "worker", &unique("bystander")).await;

    // Two ways to vanish: a TCP reset with no Terminate, and dropping the
    // tokio-postgres client and its COPY sink (CopyFail, then Terminate).
    for reset in [true, false] {
        let app = unique(if reset { "reset" } else { "dropped" });
        let victim = try_open(&proxy, "web", WEB_PASSWORD, &app, reset)
            .await
            .expect("victim login");
        let sink = victim
            .client
            .copy_in::<_, bytes::Bytes>(&format!("copy {table} from stdin"))
            .await
            .expect("start COPY");
        let mut sink = Box::pin(sink);
        let rows: String = (0..5_000).map(|i| format!("{i}\trow {i}\n")).collect();
        sink.send(bytes::Bytes::from(rows))
            .await
            .expect("send rows");
        let pid = backend_pid(&app, "state = 'active'").await;
        wait_copy_progress(pid).await;
        if reset {
            // Drops the socket, zero linger: RST, mid-stream, no goodbye.
            victim.conn.abort();
            drop(sink);
            drop(victim.client);
        } else {
            drop(sink);
            drop(victim.client);
            let _ = bounded("the dropped client's connection to end", victim.conn).await;
        }
        wait_upstream_work_over(&app).await;
        assert_eq!(
            count_rows(&table).await,
            0,
            "a vanished client's COPY must commit nothing (reset: {reset})"
        );
    }
    bystander_writes(&bystander, &bystander_table, 1).await;
    assert_proxy_up(&mut proxy);
    new_login_works(&proxy, &bystander_table, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_commits_nothing() {
    let _shared = CLUSTER.read().await;
    let mut proxy = harness().start_proxy();
    let table = make_table("id int, v text").await;
    let bystander_table = make_table("id int primary key, v text").await;
    let bystander = open(&proxy, "worker", &unique("bystander")).await;
    bystander
        .client
        .batch_execute(&format!(
            "begin; insert into {bystander_table} values (1, 'bystander')"
        ))
        .await
        .expect("bystander's transaction");

    for reset in [true, false] {
        let app = unique(if reset { "reset" } else { "dropped" });
        let victim = try_open(&proxy, "web", WEB_PASSWORD, &app, reset)
            .await
            .expect("victim login");
        victim
            .client
            .batch_execute(&format!(
                "begin; insert into {table} select g, 'half' from generate_series(1, 100) g"
            ))
            .await
            .expect("open a transaction");
        backend_pid(&app, "state = 'idle in transaction'").await;
        if reset {
            victim.conn.abort();
            drop(victim.client);
        } else {
            drop(victim.client);
            let _ = bounded("the dropped client's connection to end", victim.conn).await;
        }
        wait_upstream_work_over(&app).await;
        assert_eq!(
            count_rows(&table).await,
            0,
            "a vanished client's transaction must commit nothing (reset: {reset})"
        );
    }
    // The bystander's transaction, open throughout, still commits.
    bystander
        .client
        .batch_execute(&format!(
            "insert into {bystander_table} values (2, 'bystander'); commit"
        ))
        .await
        .expect("bystander carries on");
    assert_eq!(count_rows(&bystander_table).await, 2);
    assert_proxy_up(&mut proxy);
    new_login_works(&proxy, &bystander_table, 3).await;
}
