//! Migration tokens straight from a CI system's or Kubernetes' identity
//! provider, end to end: a local HTTPS issuer (axum on rustls, with the
//! harness CA's certificate) serves OIDC discovery and JWKS documents with
//! switchable keys and an on/off switch; `rolegate serve` fetches them and
//! admits GitHub- and Kubernetes-shaped tokens through the real proxy into
//! the real PostgreSQL. Covers discovery and URL, rotation on demand, an
//! issuer that is down (known keys work, unknown kids are refused 28P01),
//! a start while the issuer is down, claim rules, the fetch metrics, and
//! the rate limit as the issuer sees it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use common::*;
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// The test issuer
// ---------------------------------------------------------------------------

/// What the issuer serves, and what it has seen.
#[derive(Default)]
struct IssuerState {
    base: String,
    /// The JWKS at `/keys` (found by discovery) and `/k8s/keys` (by URL).
    keys: Mutex<Vec<Value>>,
    k8s_keys: Mutex<Vec<Value>>,
    /// Off: connections are dropped before TLS (an unreachable issuer).
    up: AtomicBool,
    discovery_hits: AtomicUsize,
    /// When each JWKS request arrived, by path.
    key_hits: Mutex<Vec<(Instant, &'static str)>>,
}

struct Issuer {
    state: Arc<IssuerState>,
}

impl Issuer {
    /// Start on a free loopback port, up, with no keys.
    async fn start() -> Issuer {
        let h = harness();
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!(
            "https://127.0.0.1:{}",
            tcp.local_addr().expect("addr").port()
        );
        let state = Arc::new(IssuerState {
            base,
            up: AtomicBool::new(true),
            ..Default::default()
        });
        let listener = TlsListener {
            tcp,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(&h.pki))),
            state: state.clone(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(keys))
            .route("/k8s/keys", get(k8s_keys))
            .with_state(state.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        Issuer { state }
    }

    fn base(&self) -> &str {
        &self.state.base
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().expect("lock") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn set_k8s_keys(&self, keys: &[&TestKey]) {
        *self.state.k8s_keys.lock().expect("lock") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// JWKS requests so far, at `path`.
    fn hits(&self, path: &str) -> Vec<Instant> {
        self.state
            .key_hits
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, p)| *p == path)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Wait until `path` has been fetched `n` times.
    async fn wait_for_hits(&self, path: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.hits(path).len() < n {
            assert!(
                Instant::now() < deadline,
                "the issuer saw no fetch of {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn server_tls(pki: &Pki) -> rustls::ServerConfig {
    let chain = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// TLS in front of axum; while the issuer is down, connections are
/// dropped at once.
struct TlsListener {
    tcp: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<IssuerState>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if !self.state.up.load(Ordering::SeqCst) {
                drop(tcp);
                continue;
            }
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.tls.accept(tcp)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

type JsonResponse = ([(header::HeaderName, &'static str); 2], String);

fn json_response(body: Value) -> JsonResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body.to_string(),
    )
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> JsonResponse {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    json_response(json!({
        "issuer": s.base,
        "jwks_uri": format!("{}/keys", s.base),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn keys(State(s): State<Arc<IssuerState>>) -> JsonResponse {
    s.key_hits
        .lock()
        .expect("lock")
        .push((Instant::now(), "/keys"));
    let keys = s.keys.lock().expect("lock").clone();
    json_response(json!({ "keys": keys }))
}

async fn k8s_keys(State(s): State<Arc<IssuerState>>) -> JsonResponse {
    s.key_hits
        .lock()
        .expect("lock")
        .push((Instant::now(), "/k8s/keys"));
    let keys = s.k8s_keys.lock().expect("lock").clone();
    json_response(json!({ "keys": keys }))
}

// ---------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn test_key(kid: &str) -> TestKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("p256");
    let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).expect("jwk");
    jwk.common.key_id = Some(kid.into());
    TestKey {
        kid: kid.into(),
        encoding,
        jwk: serde_json::to_value(jwk).expect("json"),
    }
}

fn sign(key: &TestKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &key.encoding).expect("sign")
}

/// A GitHub Actions OIDC token's claims for the deploy job of acme/app.
fn github_claims(iss: &str, git_ref: &str) -> Value {
    let t = Timestamp::now().as_second();
    json!({
        "jti": format!("gh-{t}"),
        "sub": "repo:acme/app:environment:production",
        "aud": "rolegate",
        "ref": git_ref,
        "sha": "d3adb33f",
        "repository": "acme/app",
        "repository_owner": "acme",
        "run_id": "6047327181",
        "run_number": "42",
        "run_attempt": "1",
        "actor": "octocat",
        "workflow": "deploy",
        "event_name": "push",
        "ref_type": "branch",
        "environment": "production",
        "job_workflow_ref": format!("acme/app/.github/workflows/deploy.yml@{git_ref}"),
        "runner_environment": "github-hosted",
        "iss": iss,
        "nbf": t - 5,
        "iat": t - 5,
        "exp": t + 300,
    })
}

fn github_token(key: &TestKey, iss: &str, git_ref: &str) -> String {
    sign(key, &key.kid, &github_claims(iss, git_ref))
}

const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A projected service-account token (audience rolegate) of a migration
/// Job's pod.
fn k8s_token(key: &TestKey, namespace: &str, account: &str) -> String {
    let t = Timestamp::now().as_second();
    sign(
        key,
        &key.kid,
        &json!({
            "aud": ["rolegate"],
            "exp": t + 600,
            "iat": t,
            "iss": K8S_ISSUER,
            "jti": "6f0c4e1a-2b9d-4c55-9b7e-1f1f5d3c9a01",
            "kubernetes.io": {
                "namespace": namespace,
                "node": { "name": "node-1", "uid": "b1c2…" },
                "pod": { "name": "app-migrate-x7k2p", "uid": "0c6e…" },
                "serviceaccount": { "name": account, "uid": "8d2a…" }
            },
            "nbf": t,
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
        }),
    )
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// A `[migration]` section accepting the test issuer's GitHub-shaped tokens
/// by discovery (`main` only), and `extra` TOML at the end of the entry.
fn discovery_section(issuer: &Issuer, extra: &str) -> String {
    let now = Timestamp::now();
    format!(
        r#"
[migration]
environment = "staging"

[[migration.jwks]]
issuer = "{base}"
ca_file = "{ca}"
audience = "rolegate"
subject = "repo:acme/app:environment:*"
min_refresh_interval = "1s"
{extra}
[migration.jwks.claims]
repository = "acme/app"
ref = "refs/heads/main"
environment = "production"
job_workflow_ref = "acme/app/.github/workflows/deploy.yml@refs/heads/main"

[[migration.windows]]
start = "{start}"
end = "{end}"
"#,
        base = issuer.base(),
        ca = harness().pki.ca_file.display(),
        start = now - SignedDuration::from_mins(5),
        end = now + SignedDuration::from_hours(2),
    )
}

/// Log in as the migrator with `token`; the current role, or the error's
/// (SQLSTATE, message).
async fn migrate_as(proxy: &ProxyProcess, token: &str) -> Result<String, (String, String)> {
    match connect_tls(&proxy.url("migrator", token, "require")).await {
        Ok(client) => Ok(client
            .query_one("select current_user::text", &[])
            .await
            .expect("query")
            .get(0)),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("expected a server error, got {e}"));
            Err((db.code().code().to_string(), db.message().to_string()))
        }
    }
}

async fn metrics(proxy: &ProxyProcess) -> String {
    let port = proxy.admin_port;
    tokio::task::spawn_blocking(move || http_get(port, "/metrics").1)
        .await
        .expect("metrics")
}

/// The value of one series on /metrics (0 when absent).
fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_url_admit_github_and_kubernetes_tokens_with_metrics_and_audit() {
    let h = harness();
    let issuer = Issuer::start().await;
    let gh = test_key("gh-2026-11");
    let sa = test_key("sa-1");
    issuer.set_keys(&[&gh]);
    issuer.set_k8s_keys(&[&sa]);
    let k8s_entry = format!(
        r#"
[[migration.jwks]]
issuer = "{K8S_ISSUER}"
url = "{base}/k8s/keys"
ca_file = "{ca}"
audience = "rolegate"
[migration.jwks.claims]
"kubernetes.io.namespace" = "migrations"
"kubernetes.io.serviceaccount.name" = "app-migrate"
"#,
        base = issuer.base(),
        ca = h.pki.ca_file.display(),
    );
    let section = discovery_section(&issuer, "").replace(
        "\n[[migration.windows]]",
        &format!("{k8s_entry}\n[[migration.windows]]"),
    );
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));

    let token = github_token(&gh, issuer.base(), "refs/heads/main");
    assert_eq!(
        migrate_as(&proxy, &token).await.as_deref(),
        Ok(h.model.migrator.as_str()),
        "{}",
        proxy.logs()
    );
    assert!(issuer.state.discovery_hits.load(Ordering::SeqCst) >= 1);
    let k8s = k8s_token(&sa, "migrations", "app-migrate");
    assert_eq!(
        migrate_as(&proxy, &k8s).await.as_deref(),
        Ok(h.model.migrator.as_str())
    );
    let (code, message) = migrate_as(&proxy, &k8s_token(&sa, "default", "app-migrate"))
        .await
        .expect_err("another namespace");
    assert_eq!(code, "28P01");
    assert!(message.contains("kubernetes.io.namespace"), "{message}");

    // The audit line names the issuer and the matched rule.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = proxy.logs();
    let admitted: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"event\":\"migration_admitted\""))
        .collect();
    assert_eq!(admitted.len(), 2, "{logs}");
    assert!(
        admitted[0].contains(&format!("\"issuer\":\"{}\"", issuer.base()))
            && admitted[0].contains("\"rule\":\"migration.jwks[0]\"")
            && admitted[0].contains("\"kid\":\"gh-2026-11\""),
        "{}",
        admitted[0]
    );
    assert!(
        admitted[1].contains(K8S_ISSUER) && admitted[1].contains("\"rule\":\"migration.jwks[1]\""),
        "{}",
        admitted[1]
    );
    assert!(
        logs.contains("\"event\":\"migration_jwks_fetched\""),
        "{logs}"
    );
    for t in [&token, &k8s] {
        assert!(!logs.contains(t.as_str()), "a token reached the log");
    }

    assert_fetch_metrics(&metrics(&proxy).await, &[issuer.base(), K8S_ISSUER]);
}

/// The fetch metrics, described, by issuer: one key each, fetched, and
/// the other outcomes present at zero.
fn assert_fetch_metrics(m: &str, issuers: &[&str]) {
    for family in [
        "rolegate_migration_jwks_fetches_total",
        "rolegate_migration_jwks_keys",
        "rolegate_migration_jwks_age_seconds",
        "rolegate_migration_jwks_stale_uses_total",
    ] {
        assert!(m.contains(&format!("# HELP {family} ")), "{family}:\n{m}");
    }
    for iss in issuers {
        let fetched = series(
            m,
            &format!("rolegate_migration_jwks_fetches_total{{issuer=\"{iss}\",outcome=\"ok\"}}"),
        );
        assert!(fetched >= 1.0, "{iss}:\n{m}");
        assert_eq!(
            series(
                m,
                &format!("rolegate_migration_jwks_keys{{issuer=\"{iss}\"}}")
            ),
            1.0,
            "{m}"
        );
        assert!(
            m.contains(&format!(
                "rolegate_migration_jwks_fetches_total{{issuer=\"{iss}\",outcome=\"unreachable\"}} 0"
            )),
            "present at zero: {m}"
        );
        assert!(
            m.contains(&format!(
                "rolegate_migration_jwks_age_seconds{{issuer=\"{iss}\"}}"
            )),
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_picked_up_on_demand_and_old_keys_work_until_removed() {
    let h = harness();
    let issuer = Issuer::start().await;
    let old = test_key("2026-10");
    let new = test_key("2026-11");
    issuer.set_keys(&[&old]);
    let section = discovery_section(&issuer, "");
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    let iss = issuer.base().to_string();
    let ok = Ok(h.model.migrator.clone());
    assert_eq!(
        migrate_as(&proxy, &github_token(&old, &iss, "refs/heads/main")).await,
        ok
    );

    // The issuer publishes a new key and signs with it: the first token
    // with the new kid makes rolegate fetch (the cache is fresh for an
    // hour, so nothing else would).
    issuer.set_keys(&[&old, &new]);
    let before = issuer.hits("/keys").len();
    assert_eq!(
        migrate_as(&proxy, &github_token(&new, &iss, "refs/heads/main")).await,
        ok,
        "{}",
        proxy.logs()
    );
    assert_eq!(issuer.hits("/keys").len(), before + 1);
    // Tokens of the old key still work, without another fetch.
    assert_eq!(
        migrate_as(&proxy, &github_token(&old, &iss, "refs/heads/main")).await,
        ok
    );
    assert_eq!(issuer.hits("/keys").len(), before + 1);

    // The issuer retires the old key. The next fetch (here: forced by a
    // token with yet another kid) drops it; its tokens are refused.
    issuer.set_keys(&[&new]);
    let stranger = test_key("2027-01");
    let (code, _) = migrate_as(&proxy, &github_token(&stranger, &iss, "refs/heads/main"))
        .await
        .expect_err("unknown kid");
    assert_eq!(code, "28P01");
    let (code, message) = migrate_as(&proxy, &github_token(&old, &iss, "refs/heads/main"))
        .await
        .expect_err("retired key");
    assert_eq!(code, "28P01");
    assert!(message.contains("kid \"2026-10\""), "{message}");
    assert_eq!(
        migrate_as(&proxy, &github_token(&new, &iss, "refs/heads/main")).await,
        ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_issuer_down_known_keys_work_and_unknown_kids_are_refused() {
    let h = harness();
    let issuer = Issuer::start().await;
    let key = test_key("k1");
    issuer.set_keys(&[&key]);
    let section = discovery_section(&issuer, "");
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    let iss = issuer.base().to_string();
    issuer.wait_for_hits("/keys", 1).await;
    issuer.set_up(false);

    assert_eq!(
        migrate_as(&proxy, &github_token(&key, &iss, "refs/heads/main")).await,
        Ok(h.model.migrator.clone()),
        "cached keys keep working: {}",
        proxy.logs()
    );
    let rotated = test_key("k2");
    let (code, message) = migrate_as(&proxy, &github_token(&rotated, &iss, "refs/heads/main"))
        .await
        .expect_err("unknown kid, issuer down");
    assert_eq!(code, "28P01");
    assert!(
        message.starts_with("rolegate: no configured key matches"),
        "{message}"
    );

    let m = metrics(&proxy).await;
    let unreachable = series(
        &m,
        &format!(
            "rolegate_migration_jwks_fetches_total{{issuer=\"{iss}\",outcome=\"unreachable\"}}"
        ),
    );
    assert!(unreachable >= 1.0, "{m}");
    assert_eq!(
        series(
            &m,
            &format!("rolegate_migration_jwks_keys{{issuer=\"{iss}\"}}")
        ),
        1.0,
        "the last good keys are kept"
    );
    let logs = proxy.logs();
    assert!(
        logs.contains("\"event\":\"migration_jwks_fetch_failed\"")
            && logs.contains("keeping the keys"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_rules_admit_main_and_refuse_another_ref() {
    let h = harness();
    let issuer = Issuer::start().await;
    let key = test_key("k");
    issuer.set_keys(&[&key]);
    let section = discovery_section(&issuer, "");
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    let iss = issuer.base().to_string();
    assert_eq!(
        migrate_as(&proxy, &github_token(&key, &iss, "refs/heads/main")).await,
        Ok(h.model.migrator.clone())
    );
    for git_ref in [
        "refs/heads/feature/x",
        "refs/tags/v1.0",
        "refs/pull/7/merge",
    ] {
        let (code, message) = migrate_as(&proxy, &github_token(&key, &iss, git_ref))
            .await
            .expect_err(git_ref);
        assert_eq!(code, "28P01", "{git_ref}");
        assert!(
            message.contains("does not match") && message.contains("migration.jwks[0].claims"),
            "{message}"
        );
    }
    let mut other_repo = github_claims(&iss, "refs/heads/main");
    other_repo["repository"] = json!("acme/other");
    let (code, message) = migrate_as(&proxy, &sign(&key, "k", &other_repo))
        .await
        .expect_err("another repository");
    assert_eq!(code, "28P01");
    assert!(message.contains("\"repository\""), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_while_the_issuer_is_down_it_serves_and_admits_once_the_issuer_is_back() {
    let h = harness();
    let issuer = Issuer::start().await;
    let key = test_key("k");
    issuer.set_keys(&[&key]);
    issuer.set_up(false);
    let section = discovery_section(&issuer, "");
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    let iss = issuer.base().to_string();

    // Runtime traffic is served.
    let web = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("runtime login while the issuer is down");
    web.simple_query("select 1").await.expect("query");
    let token = github_token(&key, &iss, "refs/heads/main");
    let (code, message) = migrate_as(&proxy, &token).await.expect_err("no keys yet");
    assert_eq!(code, "28P01");
    assert!(message.contains("not available"), "{message}");

    issuer.set_up(true);
    assert_eq!(
        migrate_as(&proxy, &token).await,
        Ok(h.model.migrator.clone()),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unknown_kids_fetches_at_most_once_per_interval() {
    let h = harness();
    let issuer = Issuer::start().await;
    let key = test_key("k");
    issuer.set_keys(&[&key]);
    let interval = Duration::from_secs(2);
    let section = discovery_section(&issuer, "").replace(
        "min_refresh_interval = \"1s\"",
        "min_refresh_interval = \"2s\"",
    );
    let proxy = Arc::new(h.start_proxy_with(|c| format!("{c}{section}")));
    issuer.wait_for_hits("/keys", 1).await;
    let iss = issuer.base().to_string();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            let proxy = proxy.clone();
            let token = sign(
                &key,
                &format!("bogus-{round}-{i}"),
                &github_claims(&iss, "refs/heads/main"),
            );
            tasks.push(tokio::spawn(
                async move { migrate_as(&proxy, &token).await },
            ));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    for t in tasks {
        let (code, _) = t.await.expect("task").expect_err("bogus kid");
        assert_eq!(code, "28P01");
    }
    let elapsed = started.elapsed();
    let hits = issuer.hits("/keys");
    for pair in hits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap + Duration::from_millis(100) >= interval,
            "two fetches {gap:?} apart: {hits:?}"
        );
    }
    let during = hits.len() - 1;
    let allowed = (elapsed.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 1;
    assert!(
        (1..=allowed).contains(&during),
        "30 logins with unknown kids over {elapsed:?} caused {during} fetches (at most {allowed})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_fetched_keys_of_an_unchanged_issuer() {
    let h = harness();
    let issuer = Issuer::start().await;
    let key = test_key("k");
    issuer.set_keys(&[&key]);
    let section = discovery_section(&issuer, "");
    let proxy = h.start_proxy_with(|c| format!("{c}{section}"));
    let iss = issuer.base().to_string();
    issuer.wait_for_hits("/keys", 1).await;
    issuer.set_up(false);

    // A new claim rule (release branches): the fetcher and its keys stay.
    let config_path = proxy.dir.path().join("rolegate.toml");
    let text = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(
        &config_path,
        text.replace(
            "ref = \"refs/heads/main\"",
            "ref = \"refs/heads/release/*\"",
        )
        .replace(
            "deploy.yml@refs/heads/main",
            "deploy.yml@refs/heads/release/*",
        ),
    )
    .expect("rewrite");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.logs().contains("\"event\":\"config_reloaded\"") {
        assert!(Instant::now() < deadline, "no reload:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        migrate_as(
            &proxy,
            &github_token(&key, &iss, "refs/heads/release/2026.11")
        )
        .await,
        Ok(h.model.migrator.clone()),
        "the cached keys survive the reload while the issuer is down: {}",
        proxy.logs()
    );
    let (code, _) = migrate_as(&proxy, &github_token(&key, &iss, "refs/heads/main"))
        .await
        .expect_err("main is no longer allowed");
    assert_eq!(code, "28P01");
    assert_eq!(issuer.hits("/keys").len(), 1, "no fetch since the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_each_issuer_once_and_check_offline_never_does() {
    let h = harness();
    let issuer = Issuer::start().await;
    let key = test_key("k");
    issuer.set_keys(&[&key]);
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("rolegate.toml");
    let port = rolegate::demo::cluster::free_port().expect("port");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            h.base_config(port, 1),
            discovery_section(&issuer, "")
        ),
    )
    .expect("config");
    let run = |args: &'static [&'static str]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
                .args(args)
                .arg(&config)
                .env_remove("ROLEGATE_CONFIG")
                .output()
                .expect("check");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };
    let (code, out) = run(&["check", "--config"]).await.expect("run");
    let line = format!(
        "PASS migration token keys of {} fetched from {}/.well-known/openid-configuration (1 usable key(s))",
        issuer.base(),
        issuer.base()
    );
    assert!(out.contains(&line), "{out}");
    assert_eq!(code, Some(0), "{out}");

    issuer.set_up(false);
    let (code, out) = run(&["check", "--config"]).await.expect("run");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL migration token keys of") && l.contains("cannot reach")),
        "{out}"
    );
    let before = issuer.state.discovery_hits.load(Ordering::SeqCst);
    let started = Instant::now();
    let (code, out) = run(&["check", "--offline", "--config"]).await.expect("run");
    assert_eq!(code, Some(0), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(issuer.state.discovery_hits.load(Ordering::SeqCst), before);
}

/// The example configs in deploy/oidc/ pass `check --offline` once the
/// files they name exist (nothing is fetched).
#[test]
fn the_deploy_oidc_configs_pass_check_offline() {
    let h = harness();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/oidc");
    let dir = tempfile::tempdir().expect("dir");
    let etc = dir.path().join("etc");
    let pem = |name: &str, text: &str| {
        let p = etc.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    let ca = std::fs::read_to_string(&h.pki.ca_file).expect("ca");
    pem("tls/tls.crt", &h.pki.cert_pem);
    pem("tls/tls.key", &h.pki.key_pem);
    pem("upstream-ca.crt", &ca);
    pem("cluster-ca/ca.crt", &ca);
    pem("upstream/migration-password", "mg\n");
    for name in [
        "rolegate-github.toml",
        "rolegate-gitlab.toml",
        "rolegate-kubernetes-discovery.toml",
    ] {
        let text = std::fs::read_to_string(root.join(name)).expect("config");
        let config = dir.path().join(name);
        std::fs::write(
            &config,
            text.replace("/etc/rolegate/", &format!("{}/", etc.display())),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .args(["check", "--offline", "--config"])
            .arg(&config)
            .env_remove("ROLEGATE_CONFIG")
            .env("PG_MIGRATION_PASSWORD", "mg")
            // The Kubernetes config gets the database from upstream.env.
            .env("PG_NAME", "app")
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
