//! The upstream going away and coming back: `/readyz` follows it and new
//! logins work again. This binary stops its own cluster.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// GET a path on the admin port: (status, body). Test-side only.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test]
async fn readyz_follows_the_upstream() {
    let h = harness();
    let proxy = h.start_proxy();
    assert_eq!(http_get(proxy.admin_port, "/readyz").0, 200);
    h.with_cluster(|c| c.stop()).expect("stop cluster");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(http_get(proxy.admin_port, "/readyz").0, 503);
    assert_eq!(http_get(proxy.admin_port, "/healthz").0, 200);
    h.with_cluster(|c| c.restart()).expect("restart cluster");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(proxy.admin_port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "readyz did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = connect_plain(&proxy.url("web", WEB_PASSWORD, "disable"))
        .await
        .expect("login after restart");
    c.simple_query("select 1").await.expect("query");
}
