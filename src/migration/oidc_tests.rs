//! Unit tests of OIDC issuers' tokens: claim rules on GitHub-, GitLab- and
//! Kubernetes-shaped claims (nested, dotted keys, booleans), the
//! environment / service / confirmation mapping, and fetched keys (which
//! fetcher a token asks, stale and expired key sets) with injected time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::jwks::KeySet;
use super::settings::{ClaimRule, KeysFrom, RemoteJwks, RemoteLocation};
use super::*;

const NOW: &str = "2026-11-29T02:30:00Z";
const GITHUB: &str = "https://token.actions.githubusercontent.com";
const K8S: &str = "https://kubernetes.default.svc.cluster.local";

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn now() -> Timestamp {
    ts(NOW)
}

fn es256() -> (EncodingKey, Value) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("p256");
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk"))
        .expect("json");
    (key, jwk)
}

fn jwk_with_kid(jwk: &Value, kid: &str) -> Value {
    let mut j = jwk.clone();
    j["kid"] = json!(kid);
    j
}

fn sign(kid: &str, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).expect("sign")
}

fn source(issuer: &str, keys_from: KeysFrom) -> JwksSource {
    JwksSource {
        issuer: issuer.into(),
        keys_from,
        audience: Some("rolegate".into()),
        subject: None,
        claims: Vec::new(),
        environment_claim: "env".into(),
        service_claim: "service".into(),
        service: None,
        confirms_prod: false,
        confirm_claims: Vec::new(),
    }
}

fn file(jwks: &[Value]) -> KeysFrom {
    KeysFrom::File {
        path: PathBuf::from("/etc/rolegate/jwks.json"),
        json: json!({ "keys": jwks }).to_string(),
    }
}

fn rule(path: &str, pattern: &str) -> ClaimRule {
    ClaimRule {
        path: path.into(),
        pattern: pattern.into(),
    }
}

fn config(env: Environment, sources: Vec<JwksSource>) -> MigrationConfig {
    MigrationConfig {
        environment: env,
        user: "migrator".into(),
        grace: Duration::from_secs(300),
        leeway: Duration::from_secs(30),
        keys: Vec::new(),
        jwks: sources,
        windows: vec![Window::Absolute {
            start: ts("2026-11-29T02:00:00Z"),
            end: ts("2026-11-29T04:00:00Z"),
        }],
    }
}

/// The claims of a GitHub Actions OIDC token for a deploy job.
fn github_claims(git_ref: &str) -> Value {
    let t = now().as_second();
    json!({
        "iss": GITHUB,
        "aud": "rolegate",
        "sub": "repo:acme/app:environment:production",
        "repository": "acme/app",
        "repository_owner": "acme",
        "ref": git_ref,
        "ref_type": "branch",
        "environment": "production",
        "job_workflow_ref": format!("acme/app/.github/workflows/deploy.yml@{git_ref}"),
        "run_id": "6047327181",
        "run_attempt": "1",
        "iat": t, "nbf": t, "exp": t + 600, "jti": "5f2c…"
    })
}

/// The claims of a Kubernetes projected service-account token.
fn k8s_claims(namespace: &str, account: &str) -> Value {
    let t = now().as_second();
    json!({
        "iss": K8S,
        "aud": ["rolegate"],
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": { "name": "migrate-x7k2p", "uid": "0c6e…" },
            "serviceaccount": { "name": account, "uid": "8d2a…" }
        },
        "iat": t, "nbf": t, "exp": t + 600
    })
}

fn refused(r: Result<Admission, Refusal>) -> Refusal {
    match r {
        Ok(a) => panic!("expected a refusal, got {a:?}"),
        Err(r) => r,
    }
}

#[test]
fn github_claim_rules_admit_main_and_refuse_another_ref() {
    let (key, jwk) = es256();
    let mut s = source(GITHUB, file(&[jwk_with_kid(&jwk, "gh-1")]));
    s.subject = Some("repo:acme/app:environment:production".into());
    s.claims = vec![
        rule("repository", "acme/app"),
        rule("ref", "refs/heads/main"),
        rule("environment", "production"),
        rule(
            "job_workflow_ref",
            "acme/app/.github/workflows/deploy.yml@*",
        ),
    ];
    let access = Access::new(&config(Environment::Staging, vec![s])).expect("access");
    let ok = sign("gh-1", &github_claims("refs/heads/main"), &key);
    let a = access.admit(&ok, now()).expect("main is admitted");
    assert_eq!(a.issuer.as_deref(), Some(GITHUB));
    assert_eq!(a.source, "migration.jwks[0]");
    assert_eq!(a.kid.as_deref(), Some("gh-1"));

    let feature = sign("gh-1", &github_claims("refs/heads/feature"), &key);
    let r = refused(access.admit(&feature, now()));
    assert_eq!((r.kind, r.sqlstate), ("wrong_claim", "28P01"), "{r:?}");
    assert!(
        r.message.contains(r#"claim "ref" ("refs/heads/feature") does not match "refs/heads/main" (migration.jwks[0].claims)"#),
        "{r:?}"
    );
    assert!(REFUSAL_KINDS.contains(&r.kind));

    let mut missing = github_claims("refs/heads/main");
    missing
        .as_object_mut()
        .expect("object")
        .remove("environment");
    let r = refused(access.admit(&sign("gh-1", &missing, &key), now()));
    assert!(r.message.contains(r#"has no claim "environment""#), "{r:?}");
}

#[test]
fn kubernetes_nested_claims_resolve_through_the_dotted_key() {
    let (key, jwk) = es256();
    let mut s = source(K8S, file(&[jwk_with_kid(&jwk, "sa-1")]));
    s.claims = vec![
        rule("kubernetes.io.namespace", "migrations"),
        rule("kubernetes.io.serviceaccount.name", "app-migrate"),
    ];
    let access = Access::new(&config(Environment::Staging, vec![s])).expect("access");
    let ok = sign("sa-1", &k8s_claims("migrations", "app-migrate"), &key);
    access.admit(&ok, now()).expect("admitted");
    for (ns, sa) in [("default", "app-migrate"), ("migrations", "web")] {
        let r = refused(access.admit(&sign("sa-1", &k8s_claims(ns, sa), &key), now()));
        assert_eq!(r.kind, "wrong_claim", "{r:?}");
    }
    // The JSON Pointer spelling names the same claim.
    let mut s = source(K8S, file(&[jwk_with_kid(&jwk, "sa-1")]));
    s.claims = vec![rule("/kubernetes.io/serviceaccount/name", "app-*")];
    let access = Access::new(&config(Environment::Staging, vec![s])).expect("access");
    access.admit(&ok, now()).expect("pointer admitted");
}

#[test]
fn booleans_and_numbers_match_by_their_json_text() {
    let (key, jwk) = es256();
    let mut s = source(GITHUB, file(&[jwk_with_kid(&jwk, "k")]));
    s.claims = vec![rule("ref_protected", "true"), rule("run_number", "4?")];
    let access = Access::new(&config(Environment::Staging, vec![s])).expect("access");
    let mut claims = github_claims("refs/heads/main");
    // GitLab sends "true" as a string; other issuers a boolean: both match.
    for protected in [json!("true"), json!(true)] {
        claims["ref_protected"] = protected;
        claims["run_number"] = json!(42);
        access
            .admit(&sign("k", &claims, &key), now())
            .expect("admitted");
    }
    for (protected, number) in [
        (json!(false), json!(42)),
        (json!("true"), json!(7)),
        (json!(["true"]), json!(42)),
    ] {
        claims["ref_protected"] = protected;
        claims["run_number"] = number;
        let r = refused(access.admit(&sign("k", &claims, &key), now()));
        assert_eq!(r.kind, "wrong_claim", "{r:?}");
    }
}

#[test]
fn environment_service_and_confirmation_follow_the_mapping() {
    let (key, jwk) = es256();
    let keys = file(&[jwk_with_kid(&jwk, "k")]);
    // The issuer names the environment in "deploy_env" and the service in
    // the service account's name.
    let mut s = source(K8S, keys.clone());
    s.environment_claim = "deploy_env".into();
    s.service_claim = "kubernetes.io.serviceaccount.name".into();
    let access = Access::new(&config(Environment::Staging, vec![s])).expect("access");
    let mut claims = k8s_claims("migrations", "billing");
    claims["deploy_env"] = json!("staging");
    let a = access
        .admit(&sign("k", &claims, &key), now())
        .expect("admitted");
    assert_eq!(a.service, "billing");
    claims["deploy_env"] = json!("prod");
    let r = refused(access.admit(&sign("k", &claims, &key), now()));
    assert_eq!(r.kind, "wrong_environment", "{r:?}");

    // A fixed service wins over any claim.
    let mut s = source(K8S, keys.clone());
    s.service = Some("reporting".into());
    let access = Access::new(&config(Environment::Staging, vec![s])).expect("access");
    let mut claims = k8s_claims("migrations", "billing");
    claims["service"] = json!("billing");
    let a = access
        .admit(&sign("k", &claims, &key), now())
        .expect("admitted");
    assert_eq!(a.service, "reporting");

    // Prod: confirmed only by the GitHub environment "production".
    let mut s = source(GITHUB, keys);
    s.confirm_claims = vec![rule("environment", "production")];
    let access = Access::new(&config(Environment::Prod, vec![s])).expect("access");
    let claims = github_claims("refs/heads/main");
    access
        .admit(&sign("k", &claims, &key), now())
        .expect("production confirms");
    let mut staging = claims.clone();
    staging["environment"] = json!("staging");
    let r = refused(access.admit(&sign("k", &staging, &key), now()));
    assert_eq!(r.kind, "prod_unconfirmed", "{r:?}");
}

// ---------------------------------------------------------------------------
// Fetched keys
// ---------------------------------------------------------------------------

/// A remote source with a URL no other test uses (fetchers are shared
/// process-wide by issuer and settings).
fn remote() -> KeysFrom {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    KeysFrom::Remote(RemoteJwks {
        location: RemoteLocation::Url(format!("https://issuer.test/keys/{n}")),
        ca: None,
        refresh: Duration::from_secs(3600),
        max_stale: Duration::from_secs(24 * 3600),
        min_refresh_interval: Duration::from_secs(5),
        fetch_timeout: Duration::from_secs(5),
    })
}

fn key_set(jwks: &[Value], fetched_at: Timestamp) -> KeySet {
    let json = json!({ "keys": jwks }).to_string();
    let candidates = super::token::jwks_keys("test", &json, &mut Vec::new()).expect("keys");
    let hour = jiff::SignedDuration::from_hours(1);
    KeySet {
        candidates,
        url: "https://issuer.test/keys".into(),
        fetched_at,
        fresh_until: fetched_at + hour,
        usable_until: fetched_at + hour * 24,
    }
}

#[test]
fn a_token_with_an_unknown_kid_asks_its_issuers_fetcher_only() {
    let (key, jwk) = es256();
    let from = remote();
    let other_from = remote();
    let c = config(
        Environment::Staging,
        vec![source(GITHUB, from), source(K8S, other_from)],
    );
    let access = Access::new(&c).expect("access");
    let fetchers = access.fetchers();
    assert_eq!(fetchers.len(), 2);
    let tok = sign("new", &github_claims("refs/heads/main"), &key);
    // No keys yet: GitHub's fetcher is wanted; the token is refused 28P01
    // with the reason.
    let wanting = access.keyring.wanting_keys(&tok, now());
    assert_eq!(wanting.len(), 1);
    assert_eq!(wanting[0].issuer(), GITHUB);
    let r = refused(access.admit(&tok, now()));
    assert_eq!((r.kind, r.sqlstate), ("bad_signature", "28P01"));
    assert!(
        r.message.contains("migration.jwks[0] are not available"),
        "{r:?}"
    );

    // Keys arrive without the token's kid: still wanted, still refused.
    fetchers[0].install(key_set(&[jwk_with_kid(&jwk, "old")], now()));
    assert_eq!(access.keyring.wanting_keys(&tok, now()).len(), 1);
    assert_eq!(refused(access.admit(&tok, now())).kind, "bad_signature");

    // With the kid: admitted, nothing wanted.
    fetchers[0].install(key_set(
        &[jwk_with_kid(&jwk, "old"), jwk_with_kid(&jwk, "new")],
        now(),
    ));
    assert!(access.keyring.wanting_keys(&tok, now()).is_empty());
    let a = access.admit(&tok, now()).expect("admitted");
    assert_eq!((a.kid.as_deref(), a.stale_keys), (Some("new"), false));

    // Garbage and tokens of unconfigured issuers want nothing.
    assert!(access.keyring.wanting_keys("not-a-jwt", now()).is_empty());
    let mut foreign = github_claims("refs/heads/main");
    foreign["iss"] = json!("https://elsewhere.example");
    let foreign = sign("zzz", &foreign, &key);
    assert!(access.keyring.wanting_keys(&foreign, now()).is_empty());
}

#[test]
fn stale_keys_work_until_max_stale_then_fail_closed() {
    let (key, jwk) = es256();
    let from = remote();
    let access =
        Access::new(&config(Environment::Staging, vec![source(GITHUB, from)])).expect("access");
    let fetched = now() - jiff::SignedDuration::from_hours(3);
    access.fetchers()[0].install(key_set(&[jwk_with_kid(&jwk, "k")], fetched));
    let tok = sign("k", &github_claims("refs/heads/main"), &key);
    // Three hours old, fresh for one: used, and marked stale.
    let a = access.admit(&tok, now()).expect("stale keys still work");
    assert!(a.stale_keys);
    // Past max_stale (24 h): not used; the fetcher is wanted again.
    let later = fetched + jiff::SignedDuration::from_hours(25);
    let mut claims = github_claims("refs/heads/main");
    claims["iat"] = json!(later.as_second());
    claims["nbf"] = json!(later.as_second());
    claims["exp"] = json!(later.as_second() + 600);
    let tok = sign("k", &claims, &key);
    let r = refused(access.admit(&tok, later));
    assert_eq!((r.kind, r.sqlstate), ("bad_signature", "28P01"), "{r:?}");
    assert_eq!(access.keyring.wanting_keys(&tok, later).len(), 1);
}

#[test]
fn entries_with_equal_settings_share_one_fetcher() {
    let from = remote();
    let mut billing = source(GITHUB, from.clone());
    billing.service = Some("billing".into());
    let c = config(Environment::Staging, vec![source(GITHUB, from), billing]);
    let a = Access::new(&c).expect("access");
    let b = Access::new(&c).expect("a reload");
    assert_eq!(a.fetchers().len(), 1);
    assert!(std::sync::Arc::ptr_eq(&a.fetchers()[0], &b.fetchers()[0]));
}
