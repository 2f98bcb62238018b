//! Cancel across instances (`[cluster]`): two rolegate instances in front
//! of one cluster, each listing the other; a cancel sent to the instance
//! the client is not logged in at still cancels its query, and a forged
//! key cancels nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

/// Two instances, peer ids 1 and 2, each listing the other.
fn start_pair(h: &Harness) -> (ProxyProcess, ProxyProcess) {
    let port = || rolegate::demo::cluster::free_port().expect("free port");
    let (p1, a1, p2, a2) = (port(), port(), port(), port());
    let cluster = |own: u32, peer: u32, peer_port: u16| {
        format!(
            "\n[cluster]\npeer_id = {own}\n[[cluster.peers]]\nid = {peer}\naddress = \"127.0.0.1:{peer_port}\"\n"
        )
    };
    let c1 = h.base_config(p1, a1) + &cluster(1, 2, p2);
    let c2 = h.base_config(p2, a2) + &cluster(2, 1, p1);
    let mut one = ProxyProcess::start(&c1, p1, &[]).expect("instance 1 starts");
    let mut two = ProxyProcess::start(&c2, p2, &[]).expect("instance 2 starts");
    one.admin_port = a1;
    two.admin_port = a2;
    (one, two)
}

/// A raw CancelRequest (plaintext, as libpq sends one without TLS).
async fn send_cancel(port: u16, pid: i32, secret: i32) {
    let mut packet = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, secret, &mut packet);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect for cancel");
    s.write_all(&packet).await.expect("send cancel");
    let _ = s.shutdown().await;
}

#[tokio::test]
async fn a_cancel_sent_to_the_peer_instance_cancels_the_query() {
    let h = harness();
    let (one, two) = start_pair(h);
    let client = connect_plain(&one.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("connect at instance 1");
    let token = client.cancel_token();
    let slow = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    // The token names instance 1's address; send it over a stream to 2.
    let to_two = tokio::net::TcpStream::connect(("127.0.0.1", two.port))
        .await
        .expect("connect to instance 2");
    token
        .cancel_query_raw(to_two, tokio_postgres::NoTls)
        .await
        .expect("send cancel to instance 2");
    let err = slow
        .await
        .expect("join")
        .expect_err("query must be cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        sent.elapsed()
    );
    let (_, metrics) = http_get(two.admin_port, "/metrics");
    assert!(
        metrics.contains(r#"rolegate_cancel_requests_total{outcome="forwarded"} 1"#),
        "{metrics}"
    );
    let (_, metrics) = http_get(one.admin_port, "/metrics");
    assert!(
        metrics.contains(r#"rolegate_cancel_requests_total{outcome="local"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forged_key_sent_to_the_peer_cancels_nothing() {
    let h = harness();
    let (one, two) = start_pair(h);
    let bystander = connect_plain(&one.url("worker", WORKER_PASSWORD, "disable"))
        .await
        .expect("connect bystander at instance 1");
    let sleep = tokio::spawn(async move { bystander.simple_query("select pg_sleep(2)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Instance 1's first pids (peer id 1 in bits 23..), a guessed secret;
    // and a key naming a peer nobody configured.
    for counter in 1..=8 {
        send_cancel(two.port, (1 << 23) | counter, 0x5eed_1234).await;
    }
    send_cancel(two.port, (9 << 23) | 1, 1).await;
    sleep
        .await
        .expect("join")
        .expect("the bystander's query completes");
    let (_, metrics) = http_get(two.admin_port, "/metrics");
    assert!(
        metrics.contains(r#"rolegate_cancel_requests_total{outcome="unknown"} 1"#),
        "{metrics}"
    );
}
