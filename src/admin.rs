//! The admin port: `/metrics` (Prometheus text, rendered by
//! `metrics-exporter-prometheus`), `/healthz` (the process is alive) and
//! `/readyz` (the config is loaded and the runtime upstream answers).
//! Every metric is named and described in [`crate::metrics`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::server::Proxy;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// Install the global Prometheus recorder and describe every metric.
pub fn install_recorder() -> Result<PrometheusHandle, AdminError> {
    let mut builder = PrometheusBuilder::new();
    for f in crate::metrics::FAMILIES
        .iter()
        .filter(|f| !f.buckets.is_empty())
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(f.name.into()), f.buckets)
            .map_err(|e| AdminError::Recorder(e.to_string()))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    crate::metrics::describe();
    metrics_process::Collector::default().describe();
    crate::metrics::present_from_startup(&crate::policy::Class::REFUSED.map(|c| c.as_str()));
    Ok(handle)
}

/// Whether the runtime upstream answers, checked at most once a second.
pub struct Readiness {
    proxy: Arc<Proxy>,
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    /// Probes the runtime endpoint of the proxy's *current* config, so a
    /// reload that moves the upstream moves the probe too.
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Readiness {
            proxy,
            last: Mutex::new(None),
        }
    }

    /// A postmaster that answers an SSLRequest is up; opening a full
    /// session per probe would cost a backend each time.
    pub async fn ready(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < Duration::from_secs(1)
        {
            return ok;
        }
        let ok = match self.proxy.default_endpoint() {
            Some(endpoint) => tokio::time::timeout(Duration::from_secs(2), endpoint.probe())
                .await
                .unwrap_or(false),
            None => false,
        };
        *last = Some((Instant::now(), ok));
        ok
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
    process: metrics_process::Collector,
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Serve the admin endpoints until the listener fails, and keep the
/// recorder's memory bounded meanwhile.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let upkeep = upkeep(metrics.clone());
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            metrics,
            readiness,
            process: metrics_process::Collector::default(),
        });
    tokio::select! {
        served = axum::serve(listener, app) => served,
        never = upkeep => match never {},
    }
}

/// The recorder keeps every histogram sample (one per classified
/// statement) until it folds them into buckets, which it does only when
/// asked: at a scrape, or here. Without this, a proxy nobody scrapes grows
/// by every statement it sees (the literal-heavy soak found ~130 KiB/s).
/// This is the library's own upkeep cadence (`PrometheusBuilder::install`
/// runs the same), not a poll for a condition.
async fn upkeep(metrics: PrometheusHandle) -> std::convert::Infallible {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        metrics.run_upkeep();
    }
}

async fn render_metrics(
    State(s): State<AdminState>,
) -> ([(&'static str, &'static str); 1], String) {
    // Process metrics and key ages are sampled when scraped, not on a timer.
    s.process.collect();
    crate::migration::jwks::sample_metrics();
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.readiness.ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
    }
}

/// `rolegate healthcheck`: GET a URL on the admin port with hyper and
/// report whether it answered 200 (for container HEALTHCHECKs, where the
/// image has no curl).
pub async fn healthcheck(url: &str) -> Result<(), String> {
    use http_body_util::Empty;
    use hyper::body::Bytes;

    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("connecting to {host}:{port} timed out"))?
    .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(3), sender.send_request(request))
        .await
        .map_err(|_| "the admin port did not answer in time".to_string())?
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status() == hyper::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}
