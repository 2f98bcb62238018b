//! Proxy core, end to end: real clients through `rolegate serve` to a real
//! PostgreSQL cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt, TryStreamExt, pin_mut};
use tokio_postgres::SimpleQueryMessage;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

/// A table owned by the migrator (so default privileges grant it to the
/// runtime role), without RLS.
fn make_table(cols: &str) -> String {
    let h = harness();
    let name = unique("t");
    h.psql_migrator(&format!("create table {name} ({cols})"));
    name
}

#[tokio::test]
async fn crud_over_tls_and_plaintext_as_the_runtime_role() {
    let h = harness();
    let proxy = h.start_proxy();
    let table = make_table("id int primary key, v text");
    // tokio-postgres has no `verify-full` sslmode, but `connect_tls`
    // verifies the proxy's certificate chain and name against the harness CA
    // (psql covers `sslmode=verify-full` below).
    for sslmode in ["require", "disable"] {
        let url = proxy.url("web", WEB_PASSWORD, sslmode);
        let client = if sslmode == "disable" {
            connect_plain(&url).await
        } else {
            connect_tls(&url).await
        }
        .unwrap_or_else(|e| panic!("connect with sslmode={sslmode}: {e}"));
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .expect("current_user")
            .get(0);
        assert_eq!(
            who, h.model.runtime,
            "upstream role must be the runtime role"
        );
        let base = match sslmode {
            "require" => 0,
            _ => 200,
        };
        client
            .execute(
                &format!("insert into {table} values ($1, $2), ($3, $4)"),
                &[&base, &"a", &(base + 1), &"b"],
            )
            .await
            .expect("insert");
        let n = client
            .execute(
                &format!("update {table} set v = 'c' where id = $1"),
                &[&base],
            )
            .await
            .expect("update");
        assert_eq!(n, 1);
        let rows = client
            .query(
                &format!("select v from {table} where id >= $1 and id < $2 order by id"),
                &[&base, &(base + 100)],
            )
            .await
            .expect("select");
        let vals: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(vals, ["c", "b"]);
        let n = client
            .execute(
                &format!("delete from {table} where id = $1"),
                &[&(base + 1)],
            )
            .await
            .expect("delete");
        assert_eq!(n, 1);
    }
    // Checked directly, as the migrator: the writes landed.
    let count = h.psql_migrator(&format!("select count(*) from {table}"));
    assert_eq!(count, "2");
}

#[tokio::test]
async fn rls_shows_only_the_policys_rows() {
    let h = harness();
    let proxy = h.start_proxy();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    client
        .batch_execute("set app.tenant = 'acme'")
        .await
        .expect("set tenant");
    let rows = client
        .query("select distinct tenant from notes", &[])
        .await
        .expect("select notes");
    let tenants: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(tenants, ["acme"]);
    let total: i64 = client
        .query_one("select count(*) from notes", &[])
        .await
        .expect("count")
        .get(0);
    let direct_total = h.psql_migrator("select count(*) from notes where tenant = 'acme'");
    assert_eq!(total.to_string(), direct_total);
    // Without a tenant the policy shows nothing.
    let other = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    let n: i64 = other
        .query_one("select count(*) from notes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn simple_multi_statement_prepared_pipelined_and_savepoints() {
    let h = harness();
    let proxy = h.start_proxy();
    let table = make_table("id int primary key, v text");
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");

    // Multi-statement simple query.
    let msgs = client
        .simple_query(&format!(
            "insert into {table} values (1, 'one'); insert into {table} values (2, 'two'); select v from {table} order by id"
        ))
        .await
        .expect("multi-statement");
    let vals: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(vals, ["one", "two"]);

    // Named prepared statement, executed many times, pipelined.
    let stmt = client
        .prepare(&format!("insert into {table} values ($1, $2)"))
        .await
        .expect("prepare");
    let futs = (10..60).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move { client.execute(stmt, &[&i, &format!("v{i}")]).await }
    });
    let results = futures_util::future::join_all(futs).await;
    assert!(results.iter().all(|r| matches!(r, Ok(1))), "{results:?}");
    // Unnamed statements (query with params uses the unnamed statement), pipelined.
    let q = format!("select v from {table} where id = $1");
    let (a, b, c) = tokio::join!(
        client.query_one(&q, &[&10i32]),
        client.query_one(&q, &[&11i32]),
        client.query_one(&q, &[&12i32]),
    );
    assert_eq!(a.expect("a").get::<_, String>(0), "v10");
    assert_eq!(b.expect("b").get::<_, String>(0), "v11");
    assert_eq!(c.expect("c").get::<_, String>(0), "v12");

    // Transaction with savepoints.
    client.batch_execute("begin").await.expect("begin");
    client
        .execute(&format!("insert into {table} values (100, 'kept')"), &[])
        .await
        .expect("insert kept");
    client
        .batch_execute("savepoint s1")
        .await
        .expect("savepoint");
    client
        .execute(&format!("insert into {table} values (101, 'dropped')"), &[])
        .await
        .expect("insert dropped");
    client
        .batch_execute("rollback to savepoint s1")
        .await
        .expect("rollback to");
    // An error inside the transaction, recovered by a savepoint.
    client
        .batch_execute("savepoint s2")
        .await
        .expect("savepoint 2");
    let dup = client
        .execute(&format!("insert into {table} values (100, 'dup')"), &[])
        .await
        .expect_err("duplicate key");
    assert_eq!(sqlstate(&dup).as_deref(), Some("23505"));
    client
        .batch_execute("rollback to savepoint s2; release savepoint s1")
        .await
        .expect("recover");
    client.batch_execute("commit").await.expect("commit");
    let got = h.psql_migrator(&format!(
        "select string_agg(v, ',' order by id) from {table} where id >= 100"
    ));
    assert_eq!(got, "kept");
}

#[tokio::test]
async fn copy_in_and_out_of_100k_rows() {
    let h = harness();
    let proxy = h.start_proxy();
    let table = make_table("id int, payload text");
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    const N: i32 = 100_000;
    let mut data = String::with_capacity(N as usize * 40);
    for i in 0..N {
        data.push_str(&format!("{i}\trow {i} with some text \\t and tabs\n"));
    }
    let sink = client
        .copy_in(&format!("copy {table} from stdin"))
        .await
        .expect("copy in");
    pin_mut!(sink);
    // Send in uneven chunks so CopyData frames straddle reads.
    for chunk in data.as_bytes().chunks(7_777) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .expect("send chunk");
    }
    let n = sink.finish().await.expect("finish copy");
    assert_eq!(n, N as u64);
    let direct = h.psql_migrator(&format!(
        "select count(*) || ':' || md5(string_agg(id || payload, ',' order by id)) from {table}"
    ));
    let through = client
        .query_one(
            &format!("select count(*) || ':' || md5(string_agg(id || payload, ',' order by id)) from {table}"),
            &[],
        )
        .await
        .expect("checksum")
        .get::<_, String>(0);
    assert_eq!(direct, through);

    let stream = client
        .copy_out(&format!(
            "copy (select * from {table} order by id) to stdout"
        ))
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
    let out: Vec<u8> = chunks.concat();
    assert_eq!(
        out,
        data.as_bytes(),
        "COPY TO STDOUT must return the data intact"
    );
}

#[tokio::test]
async fn listen_notify_between_two_proxied_sessions() {
    let h = harness();
    let proxy = h.start_proxy();
    let url = proxy.url("web", WEB_PASSWORD, "require");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&h.pki.ca_file));
    let (listener, mut conn) = tokio_postgres::connect(&url, tls)
        .await
        .expect("connect listener");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        let mut stream = stream;
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("listen jobs").await.expect("listen");
    let sender = connect_plain(&proxy.url("worker", WORKER_PASSWORD, "disable"))
        .await
        .expect("connect sender");
    sender
        .batch_execute("notify jobs, 'hello through rolegate'")
        .await
        .expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification in time")
        .expect("notification");
    assert_eq!(
        got,
        ("jobs".to_string(), "hello through rolegate".to_string())
    );
}

#[tokio::test]
async fn cancel_reaches_the_right_backend_quickly() {
    let h = harness();
    let proxy = h.start_proxy();
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    let bystander = connect_tls(&proxy.url("worker", WORKER_PASSWORD, "require"))
        .await
        .expect("connect bystander");
    let token = client.cancel_token();
    let slow = tokio::spawn(async move {
        let t = Instant::now();
        let r = client.simple_query("select pg_sleep(30)").await;
        (r, t.elapsed())
    });
    let other_sleep =
        tokio::spawn(async move { bystander.simple_query("select pg_sleep(2)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&h.pki.ca_file));
    token.cancel_query(tls).await.expect("send cancel");
    let (r, _) = slow.await.expect("join");
    let err = r.expect_err("query must be cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        sent.elapsed()
    );
    // The other session's query was not cancelled.
    other_sleep
        .await
        .expect("join")
        .expect("bystander's query completes");
}

#[tokio::test]
async fn psql_works_and_ctrl_c_cancels() {
    let h = harness();
    let proxy = h.start_proxy();
    let table = make_table("id int, v text");
    let url = proxy.url("web", WEB_PASSWORD, "verify-full");
    let (ok, out, err) = psql_url(
        &url,
        &["-A", "-t"],
        &format!(
            "select current_user;\n\
             insert into {table} values (1, 'x'), (2, 'y');\n\
             \\copy {table} from stdin\n3\tz\n\\.\n\
             select count(*) from {table};\n\
             begin; update {table} set v = 'w' where id = 1; savepoint a; delete from {table}; rollback to a; commit;\n\
             select string_agg(v, ',' order by id) from {table};\n"
        ),
    );
    assert!(ok, "psql failed: {err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.contains(&h.model.runtime.as_str()), "{out}");
    assert!(lines.contains(&"3"), "{out}");
    assert!(lines.contains(&"w,y,z"), "{out}");

    // Ctrl-C: psql sends a CancelRequest through the proxy.
    let mut child = std::process::Command::new(psql_bin())
        .arg(proxy.url("web", WEB_PASSWORD, "require"))
        .args(["-X", "-c", "select pg_sleep(30)"])
        .env("PGSSLROOTCERT", &h.pki.ca_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn psql");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = Instant::now();
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait psql") {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "psql did not return after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = sent.elapsed();
    let out = child.wait_with_output().expect("psql output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "psql Ctrl-C took {elapsed:?}"
    );
}

#[tokio::test]
async fn refused_logins_get_the_documented_fatals_and_the_proxy_carries_on() {
    let h = harness();
    let proxy = h.start_proxy_with(|c| c.replace("mode = \"allow\"", "mode = \"require\""));
    // Wrong password and unknown user: the same 28P01, same message shape.
    let wrong = connect_tls(&proxy.url("web", "not-the-password", "require"))
        .await
        .map(|_| ())
        .expect_err("wrong password refused");
    let unknown = connect_tls(&proxy.url("nobody_here", "whatever", "require"))
        .await
        .map(|_| ())
        .expect_err("unknown user refused");
    for (e, user) in [(&wrong, "web"), (&unknown, "nobody_here")] {
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "28P01", "{e}");
        assert_eq!(db.severity(), "FATAL");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    // Plaintext when TLS is required.
    let plain = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .map(|_| ())
        .expect_err("plaintext refused");
    assert_eq!(sqlstate(&plain).as_deref(), Some("28000"), "{plain}");
    // The migration user, while no token key is configured.
    let mig = connect_tls(&proxy.url("migrator", "some-token", "require"))
        .await
        .map(|_| ())
        .expect_err("migration login refused");
    assert_eq!(sqlstate(&mig).as_deref(), Some("57P03"), "{mig}");
    let msg = mig
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("migration access is not configured"), "{mig}");
    // Still serving.
    let ok = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("a good login still works");
    ok.simple_query("select 1").await.expect("query");
}

#[tokio::test]
async fn wrong_upstream_ca_fails_with_a_clear_error() {
    let h = harness();
    let wrong = h.pki.wrong_ca_file.display().to_string();
    let right = h.pki.ca_file.display().to_string();
    let proxy = h.start_proxy_with(|c| {
        c.replace(
            &format!("ca_file = \"{right}\""),
            &format!("ca_file = \"{wrong}\""),
        )
    });
    let e = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .map(|_| ())
        .expect_err("must fail against the wrong CA");
    let db = e.as_db_error().expect("a FATAL from the proxy");
    assert_eq!(db.code().code(), "08006", "{e}");
    assert!(db.message().contains("TLS handshake"), "{}", db.message());
    assert!(
        db.message().to_lowercase().contains("certificate"),
        "{}",
        db.message()
    );
    assert!(proxy.logs().contains("upstream_error"), "{}", proxy.logs());
}

#[tokio::test]
async fn terminated_backend_gives_fatal_and_others_carry_on() {
    let h = harness();
    let proxy = h.start_proxy();
    let victim = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("victim");
    let other = connect_tls(&proxy.url("worker", WORKER_PASSWORD, "require"))
        .await
        .expect("other");
    victim
        .batch_execute("set application_name = 'rolegate_victim'")
        .await
        .expect("tag victim");
    h.psql_super("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'rolegate_victim'");
    let e = victim
        .simple_query("select 1")
        .await
        .expect_err("victim's session is gone");
    // The server's own FATAL (57P01) reaches the client, or, if it raced
    // with the close, the connection is reported closed.
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.severity(), "FATAL", "{e}");
    } else {
        assert!(victim.is_closed(), "{e}");
    }
    other
        .simple_query("select 1")
        .await
        .expect("other session unaffected");
    let again = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("new login works");
    again.simple_query("select 1").await.expect("query");
}

/// A TCP forwarder between the proxy and PostgreSQL that the test can cut,
/// so the upstream vanishes without a word (as when a network dies).
async fn cuttable_forwarder(target_port: u16) -> (u16, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let mut cut = cut_rx.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.wait_for(|c| *c) => {}
                }
            });
        }
    });
    (port, cut_tx)
}

#[tokio::test]
async fn vanished_upstream_gives_08006_and_the_proxy_keeps_serving() {
    let h = harness();
    let (fwd_port, cut) = cuttable_forwarder(h.port).await;
    let proxy = h.start_proxy_with(|c| {
        c.replace(&format!("port = {}", h.port), &format!("port = {fwd_port}"))
            .replace("tls = \"verify-full\"", "tls = \"disable\"")
    });
    let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    client
        .simple_query("select 1")
        .await
        .expect("works before the cut");
    cut.send(true).expect("cut");
    let e = client
        .simple_query("select 1")
        .await
        .expect_err("upstream is gone");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a FATAL from the proxy, got {e}"));
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.code().code(), "08006");
    // The proxy is alive: a login through a direct upstream path works.
    let direct_proxy = h.start_proxy();
    let c2 = connect_tls(&direct_proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect");
    c2.simple_query("select 1").await.expect("query");
    drop(proxy);
}

#[tokio::test]
async fn client_vanishing_rolls_back_its_transaction() {
    let h = harness();
    let proxy = h.start_proxy();
    let table = make_table("id int");
    {
        let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
            .await
            .expect("connect");
        client
            .batch_execute(&format!(
                "begin; insert into {table} values (1); set application_name = 'vanishing'"
            ))
            .await
            .expect("open transaction");
        // Dropping the client closes its socket without a Terminate... or
        // with one; either way the upstream must be closed.
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = h.psql_super(
            "select count(*) from pg_stat_activity where application_name = 'vanishing'",
        );
        if n == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "upstream session still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.psql_migrator(&format!("select count(*) from {table}")),
        "0"
    );
}

#[tokio::test]
async fn startup_parameters_pass_through_and_parameter_status_reaches_the_client() {
    let h = harness();
    let proxy = h.start_proxy();
    let url = format!(
        "{}&application_name=rg_app&options=-c%20search_path%3Dpg_catalog,public%20-c%20DateStyle%3DSQL,DMY",
        proxy.url("web", WEB_PASSWORD, "require")
    );
    let client = connect_tls(&url).await.expect("connect");
    let row = client
        .query_one(
            "select current_setting('application_name'), current_setting('search_path'), current_setting('DateStyle')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(row.get::<_, String>(0), "rg_app");
    assert_eq!(row.get::<_, String>(1), "pg_catalog,public");
    assert_eq!(row.get::<_, String>(2), "SQL, DMY");
    // A server notice (COMMIT outside a transaction warns) reaches psql.
    let (ok, _out, err) = psql_url(&proxy.url("web", WEB_PASSWORD, "require"), &[], "commit;\n");
    assert!(ok, "{err}");
    assert!(err.contains("there is no transaction in progress"), "{err}");
    // psql shows server_version from ParameterStatus.
    let (ok, out, err) = psql_url(
        &proxy.url("web", WEB_PASSWORD, "require"),
        &["-A", "-t"],
        "\\echo :SERVER_VERSION_NAME\n",
    );
    assert!(ok, "{err}");
    let direct = h.psql_super("show server_version");
    assert_eq!(out.trim(), direct);
}

#[test]
fn pgbench_through_the_proxy_has_zero_errors() {
    let h = harness();
    let pgbench = pgbench_bin();
    h.pgbench_init();
    let proxy = h.start_proxy();
    for args in [
        &["-S", "-M", "simple"][..],
        &["-S", "-M", "prepared"][..],
        &[][..],
    ] {
        let out = std::process::Command::new(&pgbench)
            .args([
                "-n",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                "10",
                "-h",
                "127.0.0.1",
                "-p",
                &proxy.port.to_string(),
                "-U",
                "web",
            ])
            .args(args)
            .arg(&h.model.database)
            .env("PGPASSWORD", WEB_PASSWORD)
            .env("PGSSLMODE", "require")
            .output()
            .expect("pgbench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgbench {args:?} failed:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0")
                || !stdout.contains("failed transactions"),
            "{stdout}"
        );
        assert!(
            !stderr.contains("error"),
            "pgbench {args:?} reported errors:\n{stderr}"
        );
        let processed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(processed > 0, "{stdout}");
    }
}
