//! The upstream going away and coming back: `/readyz` follows it and new
//! logins work again. This binary stops its own cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;

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
