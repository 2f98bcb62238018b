//! Unit tests of migration access: keys, tokens, refusals, windows.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::settings::{Environment, JwksSource, KeySource, KeysFrom, MigrationConfig, Window};
use super::token::{self, IssueOptions};
use super::*;

/// A throwaway 2048-bit RSA key, used only to sign RS256 test tokens
/// (ring cannot generate RSA keys).
const TEST_RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAqeue4MF1i7D0VuG6drhyUQ2G/MvHnS/9Fy+dq+1caYyGzGYY\n\
Cz/gx0y0NCNH6s4rJrEeaP+hEbMuNJz2UUSSFCpMd0Pr0O/XB9CAUPtTx9WHmyKi\n\
7Z83DZky053tzh3M8AlkE742w2K+1bZVr+zeKveOeGAp1z+1ztSTdaDUZzwIoLAh\n\
ACbYPd1C58JsYQoiH71QdMHP+HYOJZGRfRWhXkj/HL95+uAhurZ6Ni2bfgUfKGje\n\
L/5g8t4qUMJzeo3alL9HJzsBexq8q7uOiWhnFQdOqpcZB7Plc1dnnq2osO/Kxtyw\n\
5T5qdXQCwV5fEU1RrZahXj22eTh+jNuhcsHOmwIDAQABAoIBADwgfr9sZaJRMxz9\n\
UkSJXxZUUZRprZBvN0E5nbMFUoKc8eQpKk/swibz+v5KD7xESRuvaCHidwXy4CJI\n\
+pZmS8Sr9RPs6misPexreMRvMsXPRuV7+6hXAx2iPMyKIWiive6gfBPKZsl7yyiH\n\
lUmj6TfOEtGAwb2Ds1tleGqSxyZiELhWPKzk9uIVHHESx9xTzQBCsxDrqJqT16w4\n\
zxngzZOXEKQ3RmrtGYH5GepbQjSeFBuru1DKt8eJrZT0Vwr6kew7nenqdHtYkNXK\n\
lgK1TIRa9nULRUS725GQKW7qWGfwH6mGjZwGq+YeJ0Gflrz728yH84dsnFw88VGN\n\
Q9YaEoECgYEA69wPh57DWkwYMDEtThsyIhkZR2vF/Hah3R0uGPGkSkDii71l5IJZ\n\
zHzVZvCWwG+95Ty35NMutvsJXIoy/SINcURqnfnwCn1JhLDFCSl77fOroR8AIiKZ\n\
cnpeYLsUB8u43iyII5+RI/uKi0vmfQM5niyGpoGQTo8wtfprhewmPoECgYEAuG4d\n\
ekx1B6ZicHiQG3ZTRN64tS520o+KN2bMwd/uSSbU2s4Ijl1vUUAUjSdoHxLu/S/U\n\
0V+dXpR1aLCksLjSOPcTDIWmhJXfnI2AR2YDis1S7RGzNbTxu+LTcz8/lG3giCmv\n\
mDMtizfqK0O9Qljv1+gPH62wNOj+sqBlVESLtxsCgYEA5StXM5FBgzU4s2q0+JVY\n\
KuV0OH8xSlMCh1PY/Ied+D//X4PRwywckKIiv/i4oZZxTpGmpIHFfCmDORVW4bn6\n\
kbnGVmUJpUeC7ZjMelCCh/whIVZ7zK8Npbvcg+SCW+jIYaenR+W9ItdAEITZGVLO\n\
4y+kTZjKXGqpC8icPO3tYwECgYB8sQ5DAnBZVLfXXNvphU11EbQF4z04zQ1guaMU\n\
LSc41AUzTftg7XD2mQGMEamG4NEt4unbCO8n4+2hc1RVmw+ergV2AOJ9X6sIeG7T\n\
VvhsHrfDSqVEWWraYdgeYhPFcahNxwlOOMPBDXPH/ot10RWPfvjCrTal/yU8dc8s\n\
cw+XIwKBgEzfcU6YRL0HnZgZTH+aTUVh+hHes9eSxeBjUbFNB4n75vEaE2XLJAjm\n\
NENgC+5qwNUu5wL+dbeC+J8yhO3l5uqVegcQUCU8DXXRpU+PQTDHT0KnXjoKH8WT\n\
u7UxPRp95pAkrhMewYCIW6el2pyumtyag1a3w0+Px5n/c/wtiLJk\n\
-----END RSA PRIVATE KEY-----";

/// Its public half (SPKI PEM).
const TEST_RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqeue4MF1i7D0VuG6drhy\n\
UQ2G/MvHnS/9Fy+dq+1caYyGzGYYCz/gx0y0NCNH6s4rJrEeaP+hEbMuNJz2UUSS\n\
FCpMd0Pr0O/XB9CAUPtTx9WHmyKi7Z83DZky053tzh3M8AlkE742w2K+1bZVr+ze\n\
KveOeGAp1z+1ztSTdaDUZzwIoLAhACbYPd1C58JsYQoiH71QdMHP+HYOJZGRfRWh\n\
Xkj/HL95+uAhurZ6Ni2bfgUfKGjeL/5g8t4qUMJzeo3alL9HJzsBexq8q7uOiWhn\n\
FQdOqpcZB7Plc1dnnq2osO/Kxtyw5T5qdXQCwV5fEU1RrZahXj22eTh+jNuhcsHO\n\
mwIDAQAB\n\
-----END PUBLIC KEY-----";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// 2026-11-29 is a Sunday; the default test window is 02:00–04:00Z.
const NOW: &str = "2026-11-29T02:30:00Z";

fn window() -> Window {
    Window::Absolute {
        start: ts("2026-11-29T02:00:00Z"),
        end: ts("2026-11-29T04:00:00Z"),
    }
}

fn cfg(env: Environment) -> MigrationConfig {
    MigrationConfig {
        environment: env,
        user: "migrator".into(),
        grace: Duration::from_secs(300),
        leeway: Duration::from_secs(30),
        keys: Vec::new(),
        jwks: Vec::new(),
        windows: vec![window()],
    }
}

struct KeyPair {
    _dir: tempfile::TempDir,
    private_pem: String,
    public_pem: String,
}

fn keypair() -> KeyPair {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = token::keygen(dir.path()).unwrap();
    KeyPair {
        private_pem: std::fs::read_to_string(private).unwrap(),
        public_pem: std::fs::read_to_string(public).unwrap(),
        _dir: dir,
    }
}

fn key_source(kid: Option<&str>, kp: &KeyPair) -> KeySource {
    KeySource {
        kid: kid.map(Into::into),
        material: kp.public_pem.clone(),
    }
}

fn opts(now: &str) -> IssueOptions {
    IssueOptions {
        subject: "ci:deploy".into(),
        ttl: Duration::from_secs(30 * 60),
        env: None,
        confirm: false,
        service: None,
        kid: None,
        now: ts(now),
    }
}

fn staging_with(kp: &KeyPair) -> Access {
    let mut c = cfg(Environment::Staging);
    c.keys.push(key_source(None, kp));
    Access::new(&c).unwrap()
}

fn refusal(r: Result<Admission, Refusal>) -> Refusal {
    match r {
        Ok(a) => panic!("expected a refusal, got {a:?}"),
        Err(r) => r,
    }
}

fn assert_refused(r: Result<Admission, Refusal>, kind: &str, sqlstate: &str) -> Refusal {
    let r = refusal(r);
    assert_eq!(r.kind, kind, "{r:?}");
    assert_eq!(r.sqlstate, sqlstate, "{r:?}");
    assert!(r.message.starts_with("rolegate: "), "{r:?}");
    assert!(REFUSAL_KINDS.contains(&r.kind));
    r
}

/// Sign arbitrary claims with an encoding key (for tokens `issue` would
/// never make).
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(Into::into);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn ed_encoding_key(kp: &KeyPair) -> EncodingKey {
    EncodingKey::from_ed_pem(kp.private_pem.as_bytes()).unwrap()
}

fn claims_at(now: &str) -> Value {
    let t = ts(now).as_second();
    json!({ "sub": "ci:deploy", "iat": t, "nbf": t, "exp": t + 1800 })
}

// ---------------------------------------------------------------------------
// keygen / issue / admit
// ---------------------------------------------------------------------------

#[test]
fn keygen_issue_admit_round_trip() {
    let kp = keypair();
    assert!(kp.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(kp.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let access = staging_with(&kp);
    let mut o = opts(NOW);
    o.service = Some("billing".into());
    let tok = token::issue(&kp.private_pem, o).unwrap();
    let a = access.admit(&tok, ts(NOW)).unwrap();
    assert_eq!(a.subject, "ci:deploy");
    assert_eq!(a.service, "billing");
    assert_eq!(a.issuer, None);
    assert_eq!(a.jti.as_deref().map(str::len), Some(32));
    assert_eq!(a.window_end, ts("2026-11-29T04:00:00Z"));
    assert_eq!(a.token_exp, ts("2026-11-29T03:00:00Z"));
    // The token narrows the window: exp (03:00) is before the end (04:00).
    assert_eq!(a.until, ts("2026-11-29T03:00:00Z"));
}

#[test]
fn window_end_narrows_a_long_token() {
    let kp = keypair();
    let mut o = opts(NOW);
    o.ttl = Duration::from_secs(24 * 3600);
    let tok = token::issue(&kp.private_pem, o).unwrap();
    let a = staging_with(&kp).admit(&tok, ts(NOW)).unwrap();
    assert_eq!(a.service, "default");
    assert_eq!(a.until, ts("2026-11-29T04:00:00Z"));
    assert_eq!(a.until, a.window_end);
}

#[test]
fn deadlines_give_grace_to_the_window_only() {
    let kp = keypair();
    let access = staging_with(&kp); // grace 5m, leeway 30s, window ends 04:00
    let issue = |now: &str, ttl_secs: u64| {
        let mut o = opts(now);
        o.ttl = Duration::from_secs(ttl_secs);
        token::issue(&kp.private_pem, o).unwrap()
    };

    // The window ends first and the token outlives its grace: full grace.
    let a = access.admit(&issue(NOW, 24 * 3600), ts(NOW)).unwrap();
    assert_eq!(a.until, ts("2026-11-29T04:00:00Z"));
    assert_eq!(a.hard_end, ts("2026-11-29T04:05:00Z"));

    // The token ends first (exp 03:00): exp is a hard end, leeway only.
    let a = access.admit(&issue(NOW, 1800), ts(NOW)).unwrap();
    assert_eq!(a.until, ts("2026-11-29T03:00:00Z"));
    assert_eq!(a.hard_end, ts("2026-11-29T03:00:30Z"));

    // The window ends first but exp (04:02) falls inside the grace: the
    // grace is cut at exp + leeway.
    let a = access.admit(&issue(NOW, 5520), ts(NOW)).unwrap();
    assert_eq!(a.token_exp, ts("2026-11-29T04:02:00Z"));
    assert_eq!(a.until, ts("2026-11-29T04:00:00Z"));
    assert_eq!(a.hard_end, ts("2026-11-29T04:02:30Z"));

    // Admitted inside the leeway (exp 02:29:50, now 02:30:00): `until` is
    // already past and the session gets no grace, only what is left of the
    // leeway.
    let tok = issue("2026-11-29T01:59:50Z", 1800);
    let a = access.admit(&tok, ts(NOW)).unwrap();
    assert_eq!(a.token_exp, ts("2026-11-29T02:29:50Z"));
    assert_eq!(a.until, ts("2026-11-29T02:29:50Z"));
    assert!(a.until < ts(NOW));
    assert_eq!(a.hard_end, ts("2026-11-29T02:30:20Z"));
    // Just past the leeway: refused, as before.
    assert_refused(
        access.admit(&tok, ts("2026-11-29T02:30:21Z")),
        "expired",
        SQLSTATE_BAD_TOKEN,
    );
}

#[test]
fn hard_end_never_precedes_until_and_saturates() {
    let w = ts("2026-11-29T04:00:00Z");
    let e = ts("2026-11-29T03:00:00Z");
    let zero = Duration::ZERO;
    assert_eq!(hard_end(w, zero, e, zero), e);
    assert_eq!(hard_end(e, zero, w, zero), e);
    let huge = Duration::from_secs(u64::MAX);
    assert_eq!(hard_end(w, huge, e, huge), Timestamp::MAX);
    assert_eq!(
        hard_end(w, huge, e, Duration::from_secs(1)),
        ts("2026-11-29T03:00:01Z")
    );
}

#[test]
fn keygen_files_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let (private, public) = token::keygen(&out).unwrap();
    assert_eq!(private, out.join("migrator.key"));
    assert_eq!(public, out.join("migrator.pub"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwrites an existing key.
    assert!(matches!(
        token::keygen(&out),
        Err(token::TokenError::Exists(_))
    ));
    // The raw-base64 form of the public key is accepted too.
    let pem = std::fs::read_to_string(&public).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD.encode(&der[der.len() - 32..]);
    let mut c = cfg(Environment::Staging);
    c.keys.push(KeySource {
        kid: None,
        material: raw,
    });
    let access = Access::new(&c).unwrap();
    let key = std::fs::read_to_string(&private).unwrap();
    let tok = token::issue(&key, opts(NOW)).unwrap();
    assert!(access.admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn issue_rejects_bad_options() {
    let kp = keypair();
    let mut o = opts(NOW);
    o.env = Some("production".into());
    assert!(token::issue(&kp.private_pem, o).is_err());
    let mut o = opts(NOW);
    o.ttl = Duration::ZERO;
    assert!(token::issue(&kp.private_pem, o).is_err());
    let mut o = opts(NOW);
    o.subject = String::new();
    assert!(token::issue(&kp.private_pem, o).is_err());
    // A public key is not a signing key.
    assert!(token::issue(&kp.public_pem, opts(NOW)).is_err());
}

#[test]
fn bad_key_material_names_the_config_key() {
    let kp = keypair();
    let mut c = cfg(Environment::Staging);
    c.keys.push(key_source(None, &kp));
    c.keys.push(KeySource {
        kid: None,
        material: "not a key".into(),
    });
    let e = Access::new(&c).unwrap_err().to_string();
    assert!(e.starts_with("migration.keys[1]"), "{e}");
    assert!(e.contains("not an Ed25519 public key"), "{e}");

    c.keys[1].material = kp.private_pem.clone();
    let e = Access::new(&c).unwrap_err().to_string();
    assert!(e.contains("private key"), "{e}");

    // An RSA public key is not an Ed25519 key.
    c.keys[1].material = TEST_RSA_PUBLIC_KEY.into();
    let e = Access::new(&c).unwrap_err().to_string();
    assert!(e.contains("not an Ed25519 public key"), "{e}");

    c.keys[1].material = String::new();
    let e = Access::new(&c).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");

    c.keys[1].material = URL_SAFE_NO_PAD.encode([7u8; 16]);
    let e = Access::new(&c).unwrap_err().to_string();
    assert!(e.contains("16 bytes"), "{e}");
}

#[test]
fn access_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Access>();
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

#[test]
fn replica_refuses_before_reading_the_token() {
    let access = Access::new(&cfg(Environment::Replica)).unwrap();
    let r = assert_refused(access.admit("garbage", ts(NOW)), "replica", "57P03");
    assert_eq!(
        r.message,
        "rolegate: this is a replica; migrations are never accepted here"
    );
}

#[test]
fn malformed_tokens() {
    let kp = keypair();
    let access = staging_with(&kp);
    for bad in ["", "secret-password", "a.b", "a.b.c", "x.y.z.w"] {
        assert_refused(access.admit(bad, ts(NOW)), "malformed", "28P01");
    }
    // Signed, but without sub / exp, or with a wrongly typed claim.
    let key = ed_encoding_key(&kp);
    let t = ts(NOW).as_second();
    for claims in [
        json!({ "exp": t + 60 }),
        json!({ "sub": "x" }),
        json!({ "sub": "x", "exp": "tomorrow" }),
        json!({ "sub": 7, "exp": t + 60 }),
    ] {
        let tok = sign(Algorithm::EdDSA, None, &claims, &key);
        assert_refused(access.admit(&tok, ts(NOW)), "malformed", "28P01");
    }
}

#[test]
fn refusal_messages_never_contain_the_token() {
    let kp = keypair();
    let other = keypair();
    let access = staging_with(&kp);
    let tok = token::issue(&other.private_pem, opts(NOW)).unwrap();
    let r = assert_refused(access.admit(&tok, ts(NOW)), "bad_signature", "28P01");
    for part in tok.split('.') {
        assert!(!r.message.contains(part), "{r:?}");
    }
}

#[test]
fn unknown_key_is_bad_signature() {
    let kp = keypair();
    let stranger = keypair();
    let tok = token::issue(&stranger.private_pem, opts(NOW)).unwrap();
    let r = assert_refused(
        staging_with(&kp).admit(&tok, ts(NOW)),
        "bad_signature",
        "28P01",
    );
    assert!(r.message.contains("does not verify"), "{r:?}");
}

#[test]
fn tampered_payload_is_bad_signature() {
    let kp = keypair();
    let tok = token::issue(&kp.private_pem, opts(NOW)).unwrap();
    let parts: Vec<&str> = tok.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_refused(
        staging_with(&kp).admit(&forged, ts(NOW)),
        "bad_signature",
        "28P01",
    );
}

#[test]
fn expired_and_not_yet_valid_with_leeway() {
    let kp = keypair();
    let access = staging_with(&kp);
    // Issued at 01:00 for 30 min: expired at 01:30, long before NOW.
    let old = token::issue(&kp.private_pem, opts("2026-11-29T01:00:00Z")).unwrap();
    let r = assert_refused(access.admit(&old, ts(NOW)), "expired", "28P01");
    assert_eq!(
        r.message,
        "rolegate: migration token expired at 2026-11-29T01:30:00Z"
    );
    // Expired 20 s ago: inside the 30 s leeway.
    let mut o = opts("2026-11-29T02:00:00Z");
    o.ttl = Duration::from_secs(30 * 60 - 20);
    let just = token::issue(&kp.private_pem, o).unwrap();
    assert!(access.admit(&just, ts(NOW)).is_ok());
    // Expired 40 s ago: outside.
    let mut o = opts("2026-11-29T02:00:00Z");
    o.ttl = Duration::from_secs(30 * 60 - 40);
    let late = token::issue(&kp.private_pem, o).unwrap();
    assert_refused(access.admit(&late, ts(NOW)), "expired", "28P01");

    // nbf 10 min ahead: not yet valid; 20 s ahead: within leeway.
    let future = token::issue(&kp.private_pem, opts("2026-11-29T02:40:00Z")).unwrap();
    assert_refused(access.admit(&future, ts(NOW)), "not_yet_valid", "28P01");
    let skewed = token::issue(&kp.private_pem, opts("2026-11-29T02:30:20Z")).unwrap();
    assert!(access.admit(&skewed, ts(NOW)).is_ok());
}

#[test]
fn environment_claim_must_match() {
    let kp = keypair();
    let access = staging_with(&kp);
    let mut o = opts(NOW);
    o.env = Some("prod".into());
    o.confirm = true;
    let tok = token::issue(&kp.private_pem, o).unwrap();
    let r = assert_refused(access.admit(&tok, ts(NOW)), "wrong_environment", "28P01");
    assert!(r.message.contains("staging"), "{r:?}");
    let mut o = opts(NOW);
    o.env = Some("staging".into());
    let tok = token::issue(&kp.private_pem, o).unwrap();
    assert!(access.admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn prod_requires_confirmation() {
    let kp = keypair();
    let mut c = cfg(Environment::Prod);
    c.keys.push(key_source(None, &kp));
    let access = Access::new(&c).unwrap();
    let mut o = opts(NOW);
    o.env = Some("prod".into());
    let unconfirmed = token::issue(&kp.private_pem, o.clone()).unwrap();
    assert_refused(
        access.admit(&unconfirmed, ts(NOW)),
        "prod_unconfirmed",
        "28P01",
    );
    o.confirm = true;
    let confirmed = token::issue(&kp.private_pem, o).unwrap();
    assert!(access.admit(&confirmed, ts(NOW)).is_ok());
    // `confirm` must be the JSON boolean true.
    let t = ts(NOW).as_second();
    let stringly = sign(
        Algorithm::EdDSA,
        None,
        &json!({ "sub": "x", "exp": t + 60, "confirm": "true" }),
        &ed_encoding_key(&kp),
    );
    assert_refused(
        access.admit(&stringly, ts(NOW)),
        "prod_unconfirmed",
        "28P01",
    );
}

#[test]
fn closed_window_names_the_next_opening() {
    let kp = keypair();
    let access = staging_with(&kp);
    let early = "2026-11-28T12:00:00Z";
    let tok = token::issue(&kp.private_pem, opts(early)).unwrap();
    let r = assert_refused(access.admit(&tok, ts(early)), "no_window", "57P03");
    assert_eq!(
        r.message,
        "rolegate: no migration window is open; next opens 2026-11-29T02:00:00Z"
    );
    let late = "2026-11-30T12:00:00Z";
    let tok = token::issue(&kp.private_pem, opts(late)).unwrap();
    let r = assert_refused(access.admit(&tok, ts(late)), "no_window", "57P03");
    assert_eq!(
        r.message,
        "rolegate: no migration window is open; no window is scheduled"
    );
}

#[test]
fn no_window_configured_refuses() {
    let kp = keypair();
    let mut c = cfg(Environment::Staging);
    c.keys.push(key_source(None, &kp));
    c.windows.clear();
    let access = Access::new(&c).unwrap();
    let tok = token::issue(&kp.private_pem, opts(NOW)).unwrap();
    let r = assert_refused(access.admit(&tok, ts(NOW)), "no_window", "57P03");
    assert_eq!(r.message, "rolegate: no migration window is configured");
}

#[test]
fn token_is_checked_before_the_window() {
    // An expired token outside a window is refused for the token (28P01),
    // not the window: the order of checks is part of the contract.
    let kp = keypair();
    let t = "2026-11-28T12:00:00Z";
    let tok = token::issue(&kp.private_pem, opts("2026-11-28T10:00:00Z")).unwrap();
    assert_refused(staging_with(&kp).admit(&tok, ts(t)), "expired", "28P01");
}

// ---------------------------------------------------------------------------
// Keys: rotation, algorithm confusion
// ---------------------------------------------------------------------------

#[test]
fn kid_rotation_two_keys() {
    let old = keypair();
    let new = keypair();
    let mut c = cfg(Environment::Staging);
    c.keys.push(key_source(Some("2026-10"), &old));
    c.keys.push(key_source(Some("2026-11"), &new));
    let access = Access::new(&c).unwrap();

    let mut o = opts(NOW);
    o.kid = Some("2026-11".into());
    let tok = token::issue(&new.private_pem, o).unwrap();
    assert!(access.admit(&tok, ts(NOW)).is_ok());

    // Without a kid, every key is tried.
    let tok = token::issue(&new.private_pem, opts(NOW)).unwrap();
    assert!(access.admit(&tok, ts(NOW)).is_ok());
    let tok = token::issue(&old.private_pem, opts(NOW)).unwrap();
    assert!(access.admit(&tok, ts(NOW)).is_ok());

    // A kid selects: signed by the new key but labelled with the old kid.
    let mut o = opts(NOW);
    o.kid = Some("2026-10".into());
    let tok = token::issue(&new.private_pem, o).unwrap();
    assert_refused(access.admit(&tok, ts(NOW)), "bad_signature", "28P01");

    // An unknown kid with no kid-less key to fall back on.
    let mut o = opts(NOW);
    o.kid = Some("2025-01".into());
    let tok = token::issue(&new.private_pem, o).unwrap();
    let r = assert_refused(access.admit(&tok, ts(NOW)), "bad_signature", "28P01");
    assert!(r.message.contains("2025-01"), "{r:?}");

    // A key configured without kid is tried for any kid.
    let mut c = cfg(Environment::Staging);
    c.keys.push(key_source(Some("2026-10"), &old));
    c.keys.push(key_source(None, &new));
    let access = Access::new(&c).unwrap();
    let mut o = opts(NOW);
    o.kid = Some("whatever".into());
    let tok = token::issue(&new.private_pem, o).unwrap();
    assert!(access.admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // The classic algorithm-confusion forgery: an HMAC token whose secret
    // is the (public!) verification key, in every encoding an attacker
    // might guess.
    let kp = keypair();
    let access = staging_with(&kp);
    let claims = claims_at(NOW);
    let pem_body: String = kp
        .public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&pem_body)
        .unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        kp.public_pem.as_bytes().to_vec(),
        der.clone(),
        der[der.len() - 32..].to_vec(),
    ];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let tok = sign(alg, None, &claims, &EncodingKey::from_secret(&secret));
            assert_refused(access.admit(&tok, ts(NOW)), "bad_signature", "28P01");
        }
    }
}

#[test]
fn alg_none_is_refused() {
    let kp = keypair();
    let access = staging_with(&kp);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_at(NOW)).unwrap());
    for tok in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let r = refusal(access.admit(&tok, ts(NOW)));
        assert_eq!(r.sqlstate, "28P01", "{r:?}");
    }
}

#[test]
fn rsa_key_never_verifies_an_eddsa_or_hs_token() {
    // A JWKS with only an RSA key: EdDSA or HS256 tokens are not even tried
    // against it.
    let (jwks, _) = rsa_jwks("rsa-1");
    let mut c = cfg(Environment::Staging);
    c.jwks.push(jwks);
    let access = Access::new(&c).unwrap();
    let kp = keypair();
    let tok = token::issue(&kp.private_pem, opts(NOW)).unwrap();
    assert_refused(access.admit(&tok, ts(NOW)), "bad_signature", "28P01");
    let n = json_of(&c.jwks[0]).to_string();
    let hs = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims_at(NOW),
        &EncodingKey::from_secret(n.as_bytes()),
    );
    assert_refused(access.admit(&hs, ts(NOW)), "bad_signature", "28P01");
}

// ---------------------------------------------------------------------------
// JWKS (OIDC issuers)
// ---------------------------------------------------------------------------

const ISSUER: &str = "https://token.actions.example";

fn jwks_source(keys: Vec<Value>) -> JwksSource {
    JwksSource {
        issuer: ISSUER.into(),
        keys_from: KeysFrom::File {
            path: PathBuf::from("/etc/rolegate/ci-jwks.json"),
            json: json!({ "keys": keys }).to_string(),
        },
        audience: Some("rolegate".into()),
        subject: Some("repo:acme/app:environment:*".into()),
        claims: Vec::new(),
        environment_claim: "env".into(),
        service_claim: "service".into(),
        service: None,
        confirms_prod: false,
        confirm_claims: Vec::new(),
    }
}

/// The JWKS text of a file source.
fn json_of(s: &JwksSource) -> &str {
    match &s.keys_from {
        KeysFrom::File { json, .. } => json,
        KeysFrom::Remote(_) => panic!("not a file source"),
    }
}

/// Replace a file source's JWKS text.
fn set_json(s: &mut JwksSource, text: impl Into<String>) {
    if let KeysFrom::File { json, .. } = &mut s.keys_from {
        *json = text.into();
    }
}

fn jwk_json(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn rsa_jwks(kid: &str) -> (JwksSource, EncodingKey) {
    let key = EncodingKey::from_rsa_pem(TEST_RSA_KEY.as_bytes()).unwrap();
    (
        jwks_source(vec![jwk_json(&key, Algorithm::RS256, kid)]),
        key,
    )
}

fn es256_key() -> EncodingKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    EncodingKey::from_ec_der(pkcs8.as_ref())
}

fn ci_claims(sub: &str) -> Value {
    let t = ts(NOW).as_second();
    json!({
        "iss": ISSUER,
        "aud": ["rolegate", "other"],
        "sub": sub,
        "iat": t,
        "nbf": t,
        "exp": t + 600,
        "jti": "run-42",
    })
}

const CI_SUB: &str = "repo:acme/app:environment:production";

#[test]
fn jwks_rs256_token_is_admitted() {
    let (source, key) = rsa_jwks("rsa-1");
    let mut c = cfg(Environment::Staging);
    c.jwks.push(source);
    let access = Access::new(&c).unwrap();
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &ci_claims(CI_SUB), &key);
    let a = access.admit(&tok, ts(NOW)).unwrap();
    assert_eq!(a.subject, CI_SUB);
    assert_eq!(a.issuer.as_deref(), Some(ISSUER));
    assert_eq!(a.jti.as_deref(), Some("run-42"));
    assert_eq!(a.until, ts("2026-11-29T02:40:00Z"));
    // No kid in the token: the key is still found by algorithm.
    let tok = sign(Algorithm::RS256, None, &ci_claims(CI_SUB), &key);
    assert!(access.admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn jwks_es256_and_eddsa_tokens_are_admitted() {
    let es = es256_key();
    let kp = keypair();
    let ed_pub = {
        let body: String = kp
            .public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        URL_SAFE_NO_PAD.encode(&der[der.len() - 32..])
    };
    let mut c = cfg(Environment::Staging);
    c.jwks.push(jwks_source(vec![
        jwk_json(&es, Algorithm::ES256, "ec-1"),
        json!({ "kty": "OKP", "crv": "Ed25519", "x": ed_pub, "kid": "ed-1", "use": "sig" }),
    ]));
    let access = Access::new(&c).unwrap();
    assert!(access.notes().is_empty(), "{:?}", access.notes());
    let tok = sign(Algorithm::ES256, Some("ec-1"), &ci_claims(CI_SUB), &es);
    assert!(access.admit(&tok, ts(NOW)).is_ok());
    let tok = sign(
        Algorithm::EdDSA,
        Some("ed-1"),
        &ci_claims(CI_SUB),
        &ed_encoding_key(&kp),
    );
    assert!(access.admit(&tok, ts(NOW)).is_ok());
    // ES256 token labelled with the Ed25519 key's kid: refused.
    let tok = sign(Algorithm::ES256, Some("ed-1"), &ci_claims(CI_SUB), &es);
    assert_refused(access.admit(&tok, ts(NOW)), "bad_signature", "28P01");
}

#[test]
fn jwks_subject_audience_issuer_are_enforced() {
    let (source, key) = rsa_jwks("rsa-1");
    let mut c = cfg(Environment::Staging);
    c.jwks.push(source);
    let access = Access::new(&c).unwrap();

    let tok = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &ci_claims("repo:acme/app:ref:refs/heads/main"),
        &key,
    );
    let r = assert_refused(access.admit(&tok, ts(NOW)), "wrong_subject", "28P01");
    assert!(
        r.message.contains("repo:acme/app:ref:refs/heads/main"),
        "{r:?}"
    );
    let tok = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &ci_claims("repo:acme/other:environment:production"),
        &key,
    );
    assert_refused(access.admit(&tok, ts(NOW)), "wrong_subject", "28P01");

    let mut claims = ci_claims(CI_SUB);
    claims["aud"] = json!("somebody-else");
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &claims, &key);
    assert_refused(access.admit(&tok, ts(NOW)), "wrong_audience", "28P01");
    claims.as_object_mut().unwrap().remove("aud");
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &claims, &key);
    assert_refused(access.admit(&tok, ts(NOW)), "wrong_audience", "28P01");
    claims["aud"] = json!("rolegate");
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &claims, &key);
    assert!(access.admit(&tok, ts(NOW)).is_ok());

    let mut claims = ci_claims(CI_SUB);
    claims["iss"] = json!("https://evil.example");
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &claims, &key);
    assert_refused(access.admit(&tok, ts(NOW)), "wrong_issuer", "28P01");
    claims.as_object_mut().unwrap().remove("iss");
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &claims, &key);
    assert_refused(access.admit(&tok, ts(NOW)), "wrong_issuer", "28P01");
}

#[test]
fn jwks_without_subject_or_audience_accepts_any() {
    let (mut source, key) = rsa_jwks("rsa-1");
    source.subject = None;
    source.audience = None;
    let mut c = cfg(Environment::Staging);
    c.jwks.push(source);
    let access = Access::new(&c).unwrap();
    let mut claims = ci_claims("anything at all");
    claims.as_object_mut().unwrap().remove("aud");
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &claims, &key);
    assert!(access.admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn jwks_confirms_prod() {
    let (mut source, key) = rsa_jwks("rsa-1");
    let mut c = cfg(Environment::Prod);
    c.jwks.push(source.clone());
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &ci_claims(CI_SUB), &key);
    assert_refused(
        Access::new(&c).unwrap().admit(&tok, ts(NOW)),
        "prod_unconfirmed",
        "28P01",
    );
    source.confirms_prod = true;
    c.jwks = vec![source];
    assert!(Access::new(&c).unwrap().admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn same_key_in_two_jwks_sources_either_may_accept() {
    // One issuer key set, two policies (e.g. two subject patterns).
    let (mut first, key) = rsa_jwks("rsa-1");
    first.subject = Some("repo:acme/other:*".into());
    let (second, _) = rsa_jwks("rsa-1");
    let mut c = cfg(Environment::Staging);
    c.jwks.push(first);
    c.jwks.push(second);
    let access = Access::new(&c).unwrap();
    let tok = sign(Algorithm::RS256, Some("rsa-1"), &ci_claims(CI_SUB), &key);
    assert!(access.admit(&tok, ts(NOW)).is_ok());
}

#[test]
fn jwks_skips_unusable_keys_and_rejects_useless_sets() {
    let (source, _) = rsa_jwks("rsa-1");
    let mut doc: Value = serde_json::from_str(json_of(&source)).unwrap();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(json!({ "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" }));
    let mut enc = keys[0].clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc-1");
    keys.push(enc);
    let mut rs384 = keys[0].clone();
    rs384["alg"] = json!("RS384");
    rs384["kid"] = json!("rs384");
    keys.push(rs384);
    let mut c = cfg(Environment::Staging);
    let mut with_extras = source.clone();
    set_json(&mut with_extras, doc.to_string());
    c.jwks.push(with_extras);
    let access = Access::new(&c).unwrap();
    assert_eq!(access.notes().len(), 3, "{:?}", access.notes());
    assert!(access.notes()[0].contains("symmetric"));

    // Only unusable keys: an error naming the file.
    set_json(
        &mut c.jwks[0],
        json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] }).to_string(),
    );
    let e = Access::new(&c).unwrap_err().to_string();
    assert!(
        e.starts_with("migration.jwks[0].file (/etc/rolegate/ci-jwks.json)"),
        "{e}"
    );
    set_json(&mut c.jwks[0], "{");
    assert!(Access::new(&c).is_err());
    set_json(&mut c.jwks[0], "[]");
    assert!(Access::new(&c).is_err());
    // A key whose alg contradicts its type is a config error.
    set_json(
        &mut c.jwks[0],
        json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "alg": "RS256" }] })
            .to_string(),
    );
    assert!(Access::new(&c).is_err());
    // A short Ed25519 key is caught at load (not at verify time).
    set_json(
        &mut c.jwks[0],
        json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": "AAAA" }] }).to_string(),
    );
    assert!(Access::new(&c).is_err());
}

#[test]
fn glob_patterns() {
    use super::token::glob_match;
    assert!(glob_match("repo:acme/app:environment:*", CI_SUB));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(glob_match("a*b*c", "abc"));
    assert!(!glob_match("a*b*c", "abcd"));
    assert!(glob_match("v?", "v1"));
    assert!(!glob_match("v?", "v"));
    assert!(!glob_match("v?", "v12"));
    assert!(glob_match("*:main", "repo:x:main"));
    assert!(!glob_match("repo:acme/app", "repo:acme/app2"));
    assert!(glob_match("é*", "été"));
}

// ---------------------------------------------------------------------------
// Windows through `Access`
// ---------------------------------------------------------------------------

#[test]
fn weekly_berlin_window_through_access() {
    let kp = keypair();
    let mut c = cfg(Environment::Staging);
    c.keys.push(key_source(None, &kp));
    c.windows = vec![Window::Weekly {
        days: vec![jiff::civil::Weekday::Sunday],
        from: "02:00".parse().unwrap(),
        to: "04:00".parse().unwrap(),
        timezone: TimeZone::get("Europe/Berlin").unwrap(),
    }];
    let access = Access::new(&c).unwrap();
    // Spring forward: open 01:00Z–02:00Z only.
    let now = "2026-03-29T01:30:00Z";
    let mut o = opts(now);
    o.ttl = Duration::from_secs(4 * 3600);
    let tok = token::issue(&kp.private_pem, o).unwrap();
    let a = access.admit(&tok, ts(now)).unwrap();
    assert_eq!(a.until, ts("2026-03-29T02:00:00Z"));
    assert_eq!(
        access.window_state(ts("2026-03-29T00:30:00Z")),
        WindowState::Closed {
            next: Some(ts("2026-03-29T01:00:00Z"))
        }
    );
    // Fall back: open 00:00Z–03:00Z.
    let now = "2026-10-25T02:30:00Z";
    let mut o = opts(now);
    o.ttl = Duration::from_secs(4 * 3600);
    let tok = token::issue(&kp.private_pem, o).unwrap();
    assert_eq!(
        access.admit(&tok, ts(now)).unwrap().until,
        ts("2026-10-25T03:00:00Z")
    );
}
