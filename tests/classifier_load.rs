//! The classifier under load: several clients each send a multi-megabyte
//! text of distinct statements whose last one is refused, at the same time.
//! Every one of them is refused whole, a bystander session keeps getting
//! answers promptly while they are read, and the proxy's memory grows by no
//! more than a small multiple of the texts themselves.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Raw, Recv};
use common::*;

const CLIENTS: usize = 4;
const STATEMENTS: usize = 200_000;

/// A bystander's round trip may wait for a scheduler slot, never for a
/// classification.
const BYSTANDER_MAX: Duration = Duration::from_millis(100);

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

/// ~2 MB of distinct harmless statements, then one that creates a table.
fn large_text(client: usize, table: &str) -> String {
    let mut text = String::with_capacity(STATEMENTS * 12);
    for i in 0..STATEMENTS {
        text.push_str(&format!("SELECT {};", i * CLIENTS + client));
    }
    text.push_str(&format!("SELECT 1 INTO {table}_{client}"));
    text
}

/// The messages up to ReadyForQuery; reading megabytes of statements in a
/// debug build takes a while, so wait longer than `Raw::recv` does.
async fn answer(raw: &mut Raw) -> Vec<raw::Msg> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.recv_within(left).await {
            Recv::Msg(m) => {
                let done = m.tag == b'Z';
                out.push(m);
                if done {
                    return out;
                }
            }
            Recv::Closed => panic!("the proxy closed the connection: {}", raw::tags(&out)),
            Recv::Quiet => panic!("no answer within 600 s: {}", raw::tags(&out)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_texts_from_many_clients_are_refused_without_stalling_others() {
    let h = harness();
    let proxy = h.start_proxy();
    let table = format!("load_{}", std::process::id());
    let texts: Vec<String> = (0..CLIENTS).map(|c| large_text(c, &table)).collect();
    let message = texts[0].len() as u64;

    let bystander = connect_tls(&proxy.url("worker", WORKER_PASSWORD, "require"))
        .await
        .expect("bystander connects");
    bystander.simple_query("select 1").await.expect("warm up");
    let mut senders = Vec::new();
    for _ in 0..CLIENTS {
        let db = h.model.database.clone();
        let raw = match Raw::login(
            proxy.port,
            &[("user", "web"), ("database", &db)],
            WEB_PASSWORD,
        )
        .await
        {
            Ok((r, _)) => r,
            Err(m) => panic!("login failed: {:?}", m.field(b'M')),
        };
        senders.push(raw);
    }
    let rss_before = status_kib(proxy.pid(), "VmRSS:");

    let mut tasks = Vec::new();
    for (mut raw, text) in senders.into_iter().zip(texts) {
        tasks.push(tokio::spawn(async move {
            raw.send(&raw::query(&text)).await;
            let msgs = answer(&mut raw).await;
            let error = msgs.iter().find(|m| m.tag == b'E').map(|m| {
                (
                    m.sqlstate().unwrap_or_default(),
                    m.field(b'M').unwrap_or_default(),
                )
            });
            let rows = msgs.iter().filter(|m| m.tag == b'D').count();
            (error, rows)
        }));
    }

    let mut worst = Duration::ZERO;
    let mut round_trips = 0u32;
    while tasks.iter().any(|t| !t.is_finished()) {
        let started = Instant::now();
        bystander
            .simple_query("select 1")
            .await
            .expect("the bystander is answered");
        worst = worst.max(started.elapsed());
        round_trips += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for task in tasks {
        let (error, rows) = task.await.expect("client task");
        let (code, text) = error.expect("the large text is refused");
        assert_eq!(code, "42501", "{text}");
        assert!(text.starts_with("rolegate:"), "{text}");
        assert_eq!(rows, 0, "a refused message runs none of its statements");
    }
    let peak = status_kib(proxy.pid(), "VmHWM:");
    let created = h.psql_super(&format!(
        "select count(*) from pg_class where relname like '{table}%'"
    ));
    assert_eq!(created.trim(), "0", "a table was created");

    assert!(
        round_trips > 0,
        "the bystander never ran while the texts were read"
    );
    assert!(
        worst < BYSTANDER_MAX,
        "a bystander's round trip took {worst:?} while large texts were classified \
         ({round_trips} round trips)"
    );
    let growth_bytes = peak.saturating_sub(rss_before) * 1024;
    let bound = 3 * message * CLIENTS as u64;
    eprintln!(
        "{CLIENTS} texts of {message} bytes: proxy grew {growth_bytes} bytes (bound {bound}); \
         bystander worst {worst:?} over {round_trips} round trips"
    );
    assert!(
        growth_bytes <= bound,
        "the proxy grew by {growth_bytes} bytes reading {CLIENTS} texts of {message} bytes \
         (bound {bound})"
    );
}
