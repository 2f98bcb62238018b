//! The admin port: `/metrics` (Prometheus text, rendered by
//! `metrics-exporter-prometheus`), `/healthz` (the process is alive) and
//! `/readyz` (the config is loaded and the runtime upstream answers).
//! Also the one place every metric is named and described.

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
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("rolegate_classification_seconds".into()),
            &[1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("rolegate_upstream_connect_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ],
            )
        })
        .map_err(|e| AdminError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    describe();
    metrics_process::Collector::default().describe();
    present_from_startup();
    Ok(handle)
}

/// Series with bounded label sets, at zero before their first event, so
/// dashboards and `absent()` alerts work from the start; and the build.
fn present_from_startup() {
    use metrics::{counter, gauge};
    gauge!(
        "rolegate_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("ROLEGATE_GIT_COMMIT")
    )
    .set(1.0);
    let refused = crate::policy::Class::REFUSED.map(|c| c.as_str());
    for reason in refused.into_iter().chain(["startup"]) {
        counter!("rolegate_refusals_total", "reason" => reason).increment(0);
    }
    for role in ["runtime", "migration"] {
        gauge!("rolegate_active_sessions", "role" => role).increment(0.0);
        counter!("rolegate_upstream_errors_total", "role" => role).increment(0);
        for source in ["new", "pool"] {
            counter!("rolegate_upstream_sessions_total", "role" => role, "source" => source)
                .increment(0);
        }
    }
    for direction in ["to_upstream", "to_client"] {
        counter!("rolegate_bytes_total", "direction" => direction).increment(0);
    }
    for outcome in ["ok", "rejected"] {
        counter!("rolegate_config_reloads_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["ok", "failed", "timeout"] {
        counter!("rolegate_pool_resets_total", "outcome" => outcome).increment(0);
    }
    counter!("rolegate_pool_discarded_total", "reason" => "dead").increment(0);
    for cache in ["hit", "miss"] {
        counter!("rolegate_upstream_scram_derivations_total", "cache" => cache).increment(0);
    }
    gauge!("rolegate_pool_idle_connections").increment(0.0);
    gauge!("rolegate_migration_window_open").increment(0.0);
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "rolegate_connections_total",
        "Client logins by identity (configured name or \"unknown\"), role and outcome"
    );
    describe_gauge!(
        "rolegate_active_sessions",
        "Relayed sessions open now, by role"
    );
    describe_counter!(
        "rolegate_statements_total",
        "Statements seen on runtime sessions by role, class, verdict (allowed/refused/reported) and deciding path (parser/lexer/fastpath)"
    );
    describe_counter!(
        "rolegate_refusals_total",
        "Refusals by reason (statement class, or startup)"
    );
    describe_histogram!(
        "rolegate_classification_seconds",
        Unit::Seconds,
        "Time to classify one statement (cache hits included)"
    );
    describe_histogram!(
        "rolegate_upstream_connect_seconds",
        Unit::Seconds,
        "Upstream connect + TLS + authentication time, by role"
    );
    describe_counter!(
        "rolegate_upstream_errors_total",
        "Failed upstream logins, by role"
    );
    describe_gauge!(
        "rolegate_migration_window_open",
        "1 while a migration window is open"
    );
    describe_counter!(
        "rolegate_bytes_total",
        Unit::Bytes,
        "Bytes relayed, by direction (to_upstream/to_client)"
    );
    describe_counter!(
        "rolegate_config_reloads_total",
        "Config reloads by outcome (ok/rejected)"
    );
    describe_counter!(
        "rolegate_upstream_sessions_total",
        "Upstream sessions given to logins, by role and source (new/pool)"
    );
    describe_gauge!(
        "rolegate_pool_idle_connections",
        "Idle runtime upstream sessions kept for reuse"
    );
    describe_counter!(
        "rolegate_pool_resets_total",
        "Resets (DISCARD ALL) of returned upstream sessions, by outcome (ok/failed/timeout)"
    );
    describe_counter!(
        "rolegate_pool_discarded_total",
        "Idle upstream sessions closed instead of reused, by reason"
    );
    describe_counter!(
        "rolegate_upstream_scram_derivations_total",
        "Upstream SCRAM key derivations, by cache (hit/miss)"
    );
    describe_migration_jwks();
    describe_gauge!(
        "rolegate_build_info",
        "Always 1; the version and git commit of this build as labels"
    );
}

/// The families of fetched issuer keys (`migration::jwks`).
fn describe_migration_jwks() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        "rolegate_migration_jwks_fetches_total",
        "Fetches of an OIDC issuer's migration token keys ([[migration.jwks]] by url or discovery), by issuer and outcome (ok/timeout/unreachable/http_status/invalid)"
    );
    describe_gauge!(
        "rolegate_migration_jwks_keys",
        "Usable migration token keys cached per OIDC issuer (0 until the first fetch succeeds)"
    );
    describe_gauge!(
        "rolegate_migration_jwks_age_seconds",
        Unit::Seconds,
        "Age of an OIDC issuer's cached migration token keys (since rolegate began trying, while it has none)"
    );
    describe_counter!(
        "rolegate_migration_jwks_stale_uses_total",
        "Migration tokens verified with an issuer's keys past their refresh time (the issuer has not answered), by issuer"
    );
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

/// Serve the admin endpoints until the listener fails.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            metrics,
            readiness,
            process: metrics_process::Collector::default(),
        });
    axum::serve(listener, app).await
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
