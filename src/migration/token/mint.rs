//! Minting for the command line: `rolegate token keygen` writes an Ed25519
//! key pair, `rolegate token issue` signs an EdDSA migrator token with it
//! (claims the keyring in `verify.rs` accepts). The proxy itself never
//! mints; `demo` and the tests do.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::install_crypto_provider;

/// File names written by [`keygen`].
pub const PRIVATE_KEY_FILE: &str = "migrator.key";
pub const PUBLIC_KEY_FILE: &str = "migrator.pub";

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
    let (iat, exp) = check_options(&opts)?;
    let key = encoding_key(key_pem)?;
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

/// Refuse options that would mint a token no proxy admits; on success the
/// token's `iat` and `exp` (seconds).
fn check_options(opts: &IssueOptions) -> Result<(i64, i64), TokenError> {
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
    Ok((iat, exp))
}

/// The signing key from `keygen`'s PEM (either PKCS#8 form).
fn encoding_key(key_pem: &str) -> Result<EncodingKey, TokenError> {
    let signing = SigningKey::from_pkcs8_pem(key_pem.trim()).map_err(|_| {
        TokenError::Key(
            "not an Ed25519 private key (PKCS#8 PEM, as written by `rolegate token keygen`)".into(),
        )
    })?;
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| TokenError::Key(format!("cannot encode the private key: {e}")))?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
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
