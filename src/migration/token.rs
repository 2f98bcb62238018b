//! Migrator tokens: verifying them, and minting them for `rolegate token`.
//!
//! This file owns everything about the JWT itself:
//!
//! * [`Keyring`]: the accepted verification keys, parsed once from
//!   `[[migration.keys]]` (Ed25519 public keys) and `[[migration.jwks]]`
//!   (RS256 / ES256 / EdDSA keys of an OIDC issuer), and
//!   [`Keyring::verify`], which checks a token's signature and claims and
//!   returns what the token says ([`Verified`]) or why it is refused.
//! * [`keygen`] and [`issue`]: the `rolegate token keygen` / `issue` CLI
//!   pieces, producing keys and EdDSA tokens the keyring accepts.
//!
//! Signature checking and JWT decoding are done by the `jsonwebtoken` crate
//! (RustCrypto backend); keys are parsed and generated with `ed25519-dalek`
//! and `ring`. Nothing here implements cryptography. What this file does
//! decide is *policy*: which key may verify which token, and what the claims
//! must say.
//!
//! Algorithm confusion is impossible by construction: every key carries the
//! one algorithm it was configured for (EdDSA for `[[migration.keys]]`, the
//! JWK's `alg` or its key type for JWKS keys), only keys whose algorithm
//! equals the token header's `alg` are tried, and `jsonwebtoken` is told to
//! accept exactly that algorithm. `none`, `HS*` (shared secrets), `PS*`,
//! `ES384` are never accepted; symmetric (`oct`) JWKs are ignored.
//!
//! Time claims are checked here, not by `jsonwebtoken`, because `now` is
//! injected (the library would read the system clock).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::settings::{JwksSource, KeySource, MigrationConfig};
use super::{AccessError, Refusal};

/// The service a token reaches when it names none.
pub const DEFAULT_SERVICE: &str = "default";

/// File names written by [`keygen`].
pub const PRIVATE_KEY_FILE: &str = "migrator.key";
pub const PUBLIC_KEY_FILE: &str = "migrator.pub";

/// RSA moduli accepted in a JWKS, in bits: below 2048 is too weak; above
/// 4096 the RustCrypto backend refuses to verify.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;

/// Select jsonwebtoken's RustCrypto backend explicitly. The crate picks it
/// from its features on its own, but if another crate in the build ever
/// enabled a second backend, it would pick none and panic on first use;
/// installing ours first avoids that. Installing twice is harmless (the
/// first wins).
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// What a verified token says, before environment and window checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    pub jti: Option<String>,
    pub issuer: Option<String>,
    pub service: String,
    /// The `env` claim, if the token carries one.
    pub env: Option<String>,
    /// `confirm: true` in the token, or the token came from a JWKS source
    /// with `confirms_prod = true`.
    pub confirmed: bool,
    pub exp: Timestamp,
}

/// Extra requirements on tokens verified by one `[[migration.jwks]]` entry.
#[derive(Debug)]
struct JwksPolicy {
    /// `migration.jwks[i]`, for messages.
    name: String,
    issuer: String,
    audience: Option<String>,
    subject: Option<String>,
    confirms_prod: bool,
}

#[derive(Debug)]
struct Candidate {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    /// `None` for `[[migration.keys]]`, the JWKS entry's policy otherwise.
    jwks: Option<usize>,
}

/// Every accepted verification key, in config order.
#[derive(Debug)]
pub struct Keyring {
    candidates: Vec<Candidate>,
    policies: Vec<JwksPolicy>,
}

impl Keyring {
    /// Parse every configured key. Unusable JWKS entries (other algorithms,
    /// encryption keys, symmetric keys, short RSA keys) are skipped and
    /// described in the returned notes; a JWKS with no usable key at all, or
    /// any bad `[[migration.keys]]` entry, is an error naming the config key.
    pub fn new(cfg: &MigrationConfig) -> Result<(Keyring, Vec<String>), AccessError> {
        install_crypto_provider();
        let mut candidates = Vec::new();
        let mut policies = Vec::new();
        let mut notes = Vec::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            candidates.push(ed25519_key(i, k)?);
        }
        for (i, source) in cfg.jwks.iter().enumerate() {
            let name = format!("migration.jwks[{i}]");
            let found = jwks_keys(&name, source, policies.len(), &mut notes)?;
            if found.is_empty() {
                return Err(AccessError(format!(
                    "{name}.file ({}): no usable RS256, ES256 or EdDSA signing key in the JWKS",
                    source.file.display()
                )));
            }
            candidates.extend(found);
            policies.push(JwksPolicy {
                name,
                issuer: source.issuer.clone(),
                audience: source.audience.clone(),
                subject: source.subject.clone(),
                confirms_prod: source.confirms_prod,
            });
        }
        if candidates.is_empty() {
            notes.push(
                "migration: no [[migration.keys]] or [[migration.jwks]] configured; every migration login will be refused"
                    .into(),
            );
        }
        Ok((
            Keyring {
                candidates,
                policies,
            },
            notes,
        ))
    }

    /// Check the token's signature against every key that may have signed
    /// it, then its claims. `leeway` applies to `exp`, `nbf` and `iat`.
    ///
    /// A token is accepted if any key verifies it *and* that key's source
    /// accepts its claims. When a key verifies it but the claims fail, that
    /// claim failure is reported (it is more useful than "bad signature");
    /// if another source with the same key accepts it, it is admitted.
    pub fn verify(
        &self,
        token: &str,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<Verified, Refusal> {
        let token = token.trim();
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Refusal::malformed(
                "the migration token is not a well-formed JWT (header.payload.signature)",
            )
        })?;
        if !matches!(
            header.alg,
            Algorithm::EdDSA | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(Refusal::bad_signature(format!(
                "migration tokens signed with {:?} are never accepted (only EdDSA, RS256, ES256 with a configured key)",
                header.alg
            )));
        }
        let mut claim_failure: Option<Refusal> = None;
        let mut tried = 0;
        for c in &self.candidates {
            if c.alg != header.alg {
                continue;
            }
            if let (Some(want), Some(have)) = (&header.kid, &c.kid)
                && want != have
            {
                continue;
            }
            tried += 1;
            let mut validation = Validation::new(c.alg);
            // Claims are checked below against the injected clock and the
            // source's policy; the library only checks signature and alg.
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.leeway = 0;
            match jsonwebtoken::decode::<Claims>(token, &c.key, &validation) {
                Ok(data) => {
                    let policy = c.jwks.and_then(|i| self.policies.get(i));
                    match check_claims(data.claims, policy, now, leeway) {
                        Ok(v) => return Ok(v),
                        Err(r) => {
                            claim_failure.get_or_insert(r);
                        }
                    }
                }
                Err(e) => match e.kind() {
                    // The token's parts don't decode: no key will do better.
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_) => {
                        return Err(Refusal::malformed(
                            "the migration token is not a well-formed JWT (its parts do not decode)",
                        ));
                    }
                    // Anything else: this key did not verify it; try the next.
                    _ => {}
                },
            }
        }
        if let Some(r) = claim_failure {
            return Err(r);
        }
        if tried == 0 {
            let kid = header
                .kid
                .as_deref()
                .map(|k| format!(" and kid {:?}", truncate(k, 64)))
                .unwrap_or_default();
            return Err(Refusal::bad_signature(format!(
                "no configured key matches the migration token (alg {:?}{kid})",
                header.alg
            )));
        }
        Err(Refusal::bad_signature(
            "the migration token's signature does not verify against any configured key",
        ))
    }
}

/// The payload, read leniently so that a wrongly typed claim is reported
/// as such rather than as an undecodable token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    env: Option<Value>,
    confirm: Option<Value>,
    service: Option<Value>,
}

fn check_claims(
    c: Claims,
    policy: Option<&JwksPolicy>,
    now: Timestamp,
    leeway: Duration,
) -> Result<Verified, Refusal> {
    let subject = opt_string("sub", c.sub)?
        .ok_or_else(|| Refusal::malformed("the migration token has no sub claim"))?;
    let exp = opt_time("exp", c.exp)?
        .ok_or_else(|| Refusal::malformed("the migration token has no exp claim"))?;
    let nbf = opt_time("nbf", c.nbf)?;
    let iat = opt_time("iat", c.iat)?;
    let jti = opt_string("jti", c.jti)?;
    let issuer = opt_string("iss", c.iss)?;
    let env = opt_string("env", c.env)?;
    let service = opt_string("service", c.service)?;
    if service.as_deref() == Some("") {
        return Err(Refusal::malformed(
            "the migration token's service claim is empty",
        ));
    }

    if let Some(p) = policy {
        if issuer.as_deref() != Some(p.issuer.as_str()) {
            return Err(Refusal::new(
                "wrong_issuer",
                "28P01",
                format!(
                    "migration token issuer {} is not accepted by {}",
                    issuer
                        .as_deref()
                        .map(|i| format!("{:?}", truncate(i, 200)))
                        .unwrap_or_else(|| "(none)".into()),
                    p.name
                ),
            ));
        }
        if let Some(want) = &p.audience
            && !audience_contains(c.aud.as_ref(), want)
        {
            return Err(Refusal::new(
                "wrong_audience",
                "28P01",
                format!("migration token audience does not include {want:?}"),
            ));
        }
        if let Some(pattern) = &p.subject
            && !glob_match(pattern, &subject)
        {
            return Err(Refusal::new(
                "wrong_subject",
                "28P01",
                format!(
                    "migration token subject {:?} does not match {pattern:?} ({}.subject)",
                    truncate(&subject, 200),
                    p.name
                ),
            ));
        }
    }

    let leeway = jiff::SignedDuration::try_from(leeway).unwrap_or(jiff::SignedDuration::MAX);
    let late = now.checked_sub(leeway).unwrap_or(Timestamp::MIN);
    let early = now.checked_add(leeway).unwrap_or(Timestamp::MAX);
    if exp < late {
        return Err(Refusal::new(
            "expired",
            "28P01",
            format!("migration token expired at {}", rfc3339(exp)),
        ));
    }
    if let Some(nbf) = nbf
        && nbf > early
    {
        return Err(Refusal::new(
            "not_yet_valid",
            "28P01",
            format!("migration token is not valid before {}", rfc3339(nbf)),
        ));
    }
    // `iat` carries no authority; a token claiming to be issued in the
    // future means a broken issuer clock, so it is not trusted yet.
    if let Some(iat) = iat
        && iat > early
    {
        return Err(Refusal::new(
            "not_yet_valid",
            "28P01",
            format!("migration token is issued in the future ({})", rfc3339(iat)),
        ));
    }

    let confirmed =
        matches!(c.confirm, Some(Value::Bool(true))) || policy.is_some_and(|p| p.confirms_prod);
    Ok(Verified {
        subject,
        jti,
        issuer,
        service: service.unwrap_or_else(|| DEFAULT_SERVICE.into()),
        env,
        confirmed,
        exp,
    })
}

fn opt_string(name: &str, v: Option<Value>) -> Result<Option<String>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::malformed(format!(
            "the migration token's {name} claim is not a string"
        ))),
    }
}

/// A NumericDate (seconds since the epoch, possibly fractional).
fn opt_time(name: &str, v: Option<Value>) -> Result<Option<Timestamp>, Refusal> {
    let bad = || Refusal::malformed(format!("the migration token's {name} claim is not a time"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = match n.as_i64() {
                Some(i) => i,
                // Fractional: whole seconds are plenty; floor is the
                // conservative choice for `exp`.
                None => n
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
                    .ok_or_else(bad)?,
            };
            Timestamp::from_second(secs).map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

fn audience_contains(aud: Option<&Value>, want: &str) -> bool {
    match aud {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(want)),
        _ => false,
    }
}

/// `*` matches any run of characters (including none), `?` exactly one;
/// everything else matches itself. The whole subject must match.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                // Let the last `*` swallow one more character and retry.
                Some((bp, bt)) => {
                    backtrack = Some((bp, bt + 1));
                    pi = bp;
                    ti = bt + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------
// Key parsing
// ---------------------------------------------------------------------------

/// `[[migration.keys]]`: an Ed25519 public key as PEM (SPKI), or base64 of
/// the raw 32 bytes (or of the SPKI DER).
fn ed25519_key(i: usize, k: &KeySource) -> Result<Candidate, AccessError> {
    let name = format!("migration.keys[{i}]");
    let vk = parse_ed25519_public(&k.material).map_err(|why| {
        AccessError(format!(
            "{name} (public_key / public_key_file): not an Ed25519 public key: {why}"
        ))
    })?;
    Ok(Candidate {
        kid: k.kid.clone(),
        alg: Algorithm::EdDSA,
        key: DecodingKey::from_ed_der(vk.as_bytes()),
        jwks: None,
    })
}

fn parse_ed25519_public(material: &str) -> Result<VerifyingKey, String> {
    let text = material.trim();
    if text.is_empty() {
        return Err("the key is empty".into());
    }
    let vk = if text.starts_with("-----BEGIN") {
        if text.contains("PRIVATE KEY") {
            return Err(
                "this is a private key; configure the public key (migrator.pub), keep migrator.key with the token issuer"
                    .into(),
            );
        }
        VerifyingKey::from_public_key_pem(text)
            .map_err(|e| format!("expected a PEM \"PUBLIC KEY\" (SPKI) block ({e})"))?
    } else {
        let bytes = decode_base64(text).ok_or_else(|| {
            "expected a PEM \"PUBLIC KEY\" block or base64 of the 32-byte key".to_string()
        })?;
        match bytes.len() {
            32 => {
                let raw: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| "expected 32 bytes".to_string())?;
                VerifyingKey::from_bytes(&raw)
                    .map_err(|_| "the 32 bytes are not a valid Ed25519 point".to_string())?
            }
            _ => VerifyingKey::from_public_key_der(&bytes).map_err(|_| {
                format!(
                    "base64 decodes to {} bytes; expected the raw 32-byte key or its SPKI DER",
                    bytes.len()
                )
            })?,
        }
    };
    // A small-order key makes signatures verify for messages nobody signed.
    if vk.is_weak() {
        return Err("the key is a weak (small-order) point".into());
    }
    Ok(vk)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&compact).ok())
}

/// The usable keys of one JWKS document.
fn jwks_keys(
    name: &str,
    source: &JwksSource,
    policy: usize,
    notes: &mut Vec<String>,
) -> Result<Vec<Candidate>, AccessError> {
    let file = source.file.display();
    let doc: Value = serde_json::from_str(&source.json)
        .map_err(|e| AccessError(format!("{name}.file ({file}): not JSON: {e}")))?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| {
        AccessError(format!(
            "{name}.file ({file}): not a JWKS (expected an object with a \"keys\" array)"
        ))
    })?;
    let mut out = Vec::new();
    for (j, raw) in keys.iter().enumerate() {
        // Each key is judged on its own: one exotic key in an issuer's set
        // must not make the whole set unusable.
        let label = match raw.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("{name}.file ({file}) key {j} (kid {kid:?})"),
            None => format!("{name}.file ({file}) key {j}"),
        };
        match jwk_candidate(raw, policy) {
            Ok(c) => out.push(c),
            Err(Skip::Ignore(why)) => notes.push(format!("{label}: skipped: {why}")),
            Err(Skip::Broken(why)) => return Err(AccessError(format!("{label}: {why}"))),
        }
    }
    Ok(out)
}

enum Skip {
    /// A well-formed key rolegate deliberately does not use.
    Ignore(String),
    /// A key that claims to be usable but is not: a config error.
    Broken(String),
}

fn jwk_candidate(raw: &Value, policy: usize) -> Result<Candidate, Skip> {
    let jwk: Jwk = serde_json::from_value(raw.clone())
        .map_err(|e| Skip::Ignore(format!("not a JWK this version understands ({e})")))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(Skip::Ignore("an encryption key (use = enc)".into()));
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::OctetKey(_), _) => {
            // Never: a shared secret in a JWKS would let anyone holding the
            // file mint tokens.
            return Err(Skip::Ignore("a symmetric (oct) key; never used".into()));
        }
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        (_, Some(a @ (KeyAlgorithm::RS256 | KeyAlgorithm::ES256 | KeyAlgorithm::EdDSA))) => {
            return Err(Skip::Broken(format!(
                "alg {a:?} does not fit the key type/curve"
            )));
        }
        (_, Some(a)) => {
            return Err(Skip::Ignore(format!(
                "algorithm {a:?} is not accepted (RS256, ES256, EdDSA only)"
            )));
        }
        (_, None) => {
            return Err(Skip::Ignore(
                "key type/curve is not RSA, EC P-256 or OKP Ed25519".into(),
            ));
        }
    };
    let broken = |what: &str| Skip::Broken(format!("invalid {what} key"));
    let key = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD
                .decode(p.n.trim_end_matches('='))
                .map_err(|_| broken("RSA"))?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(Skip::Ignore(format!(
                    "RSA key of about {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} supported"
                )));
            }
            DecodingKey::from_jwk(&jwk).map_err(|_| broken("RSA"))?
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            // Validate here: the verifier would index past a short key.
            let raw = URL_SAFE_NO_PAD
                .decode(p.x.trim_end_matches('='))
                .map_err(|_| broken("Ed25519"))?;
            let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| broken("Ed25519"))?;
            let vk = VerifyingKey::from_bytes(&raw).map_err(|_| broken("Ed25519"))?;
            if vk.is_weak() {
                return Err(broken("(weak) Ed25519"));
            }
            DecodingKey::from_ed_der(vk.as_bytes())
        }
        _ => {
            let key = DecodingKey::from_jwk(&jwk).map_err(|_| broken("EC"))?;
            // Building a verifier parses the point; a dummy signature then
            // merely fails to verify, while a bad point is an error.
            jsonwebtoken::crypto::verify("AAAA", b"probe", &key, alg)
                .map_err(|_| broken("EC P-256"))?;
            key
        }
    };
    Ok(Candidate {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
        jwks: Some(policy),
    })
}

// ---------------------------------------------------------------------------
// Minting (`rolegate token keygen` / `rolegate token issue`)
// ---------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; move it away or choose another --out directory")]
    Exists(PathBuf),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Options(String),
}

/// Write a fresh Ed25519 key pair into `out_dir` (created if missing):
/// `migrator.key` (PKCS#8 PEM, mode 0600) and `migrator.pub` (SPKI PEM).
/// Existing files are never overwritten. Returns (private, public) paths.
pub fn keygen(out_dir: &Path) -> Result<(PathBuf, PathBuf), TokenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TokenError::Io { path, source }
    };
    fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let private_path = out_dir.join(PRIVATE_KEY_FILE);
    let public_path = out_dir.join(PUBLIC_KEY_FILE);
    for p in [&private_path, &public_path] {
        if p.exists() {
            return Err(TokenError::Exists(p.clone()));
        }
    }

    // ring draws from the OS generator; dalek re-encodes to standard PEM.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| TokenError::Key("could not generate an Ed25519 key".into()))?;
    let signing = SigningKey::from_pkcs8_der(pkcs8.as_ref())
        .map_err(|e| TokenError::Key(format!("generated key does not re-encode: {e}")))?;
    // RFC 8410's form (PKCS#8 v1, the private key only): what OpenSSL 3.0,
    // Python's cryptography and PyJWT read. (ed25519-dalek's own encoding is
    // v2 with the public key attached, which they reject; reading accepts
    // both.)
    let private_pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| TokenError::Key(format!("cannot encode the private key: {e}")))?;
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| TokenError::Key(format!("cannot encode the public key: {e}")))?;

    write_new(&private_path, private_pem.as_bytes(), 0o600).map_err(io(&private_path))?;
    write_new(&public_path, public_pem.as_bytes(), 0o644).map_err(io(&public_path))?;
    Ok((private_path, public_path))
}

/// Create `path` (failing if it exists) with `mode` from the start, so the
/// private key is never readable by others, not even briefly.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// What `rolegate token issue` puts in a token.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    pub subject: String,
    pub ttl: Duration,
    /// `staging` or `prod` (a replica admits no migrations); omitted from
    /// the token when `None`.
    pub env: Option<String>,
    pub confirm: bool,
    pub service: Option<String>,
    /// Put in the header, to select the key under rotation.
    pub kid: Option<String>,
    pub now: Timestamp,
}

#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    confirm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
}

/// Sign a migrator token (EdDSA) with the PKCS#8 PEM private key `key_pem`.
pub fn issue(key_pem: &str, opts: IssueOptions) -> Result<String, TokenError> {
    install_crypto_provider();
    if opts.subject.is_empty() {
        return Err(TokenError::Options("--subject must not be empty".into()));
    }
    match opts.env.as_deref() {
        None | Some("staging" | "prod") => {}
        Some("replica") => {
            return Err(TokenError::Options(
                "--env replica: a replica never admits migrations (it is read-only), so no token is minted for it; use --env staging or --env prod for the primary".into(),
            ));
        }
        Some(env) => {
            return Err(TokenError::Options(format!(
                "--env {env:?}: expected staging or prod"
            )));
        }
    }
    if opts.service.as_deref() == Some("") {
        return Err(TokenError::Options("--service must not be empty".into()));
    }
    let ttl = i64::try_from(opts.ttl.as_secs())
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| TokenError::Options("--ttl must be at least 1s".into()))?;
    let iat = opts.now.as_second();
    let exp = iat
        .checked_add(ttl)
        .filter(|e| Timestamp::from_second(*e).is_ok())
        .ok_or_else(|| TokenError::Options("--ttl is too long".into()))?;

    let signing = SigningKey::from_pkcs8_pem(key_pem.trim()).map_err(|_| {
        TokenError::Key(
            "not an Ed25519 private key (PKCS#8 PEM, as written by `rolegate token keygen`)".into(),
        )
    })?;
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| TokenError::Key(format!("cannot encode the private key: {e}")))?;
    let key = EncodingKey::from_ed_der(der.as_bytes());

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = opts.kid.clone();
    let claims = IssuedClaims {
        sub: &opts.subject,
        iat,
        nbf: iat,
        exp,
        jti: format!("{:032x}", rand::random::<u128>()),
        env: opts.env.as_deref(),
        confirm: opts.confirm,
        service: opts.service.as_deref(),
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| TokenError::Key(format!("cannot sign the token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys written by earlier versions (PKCS#8 v2, public key attached)
    /// still sign; new ones are RFC 8410's v1 form.
    #[test]
    fn both_private_key_forms_are_read() {
        let dir = tempfile::tempdir().expect("dir");
        let (private, _) = keygen(dir.path()).expect("keygen");
        let v1 = fs::read_to_string(private).expect("key");
        let signing = SigningKey::from_pkcs8_pem(&v1).expect("v1 reads");
        let v2 = signing.to_pkcs8_pem(LineEnding::LF).expect("v2");
        assert_ne!(v1.as_str(), v2.as_str());
        for pem in [v1.as_str(), v2.as_str()] {
            let opts = IssueOptions {
                subject: "t".into(),
                ttl: Duration::from_secs(60),
                env: None,
                confirm: false,
                service: None,
                kid: None,
                now: Timestamp::now(),
            };
            assert!(issue(pem, opts).is_ok());
        }
    }
}
