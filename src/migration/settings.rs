//! The migration-access settings: what `[migration]` says once it is read
//! and validated (environment, login name, grace, leeway, accepted keys,
//! windows).
//!
//! These types live here, not in the configuration module, so that
//! migration access depends on nothing but its own inputs: the
//! configuration converts its raw TOML into them, and [`Access`] is built
//! from them.
//!
//! [`Access`]: super::Access

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `migration.environment`: which governance applies to migration logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Staging,
    Prod,
    Replica,
}

impl Environment {
    /// The config spelling, as carried in a token's `env` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Staging => "staging",
            Environment::Prod => "prod",
            Environment::Replica => "replica",
        }
    }
}

/// `[migration]`, resolved: every key file read, every window parsed.
#[derive(Debug, Clone)]
pub struct MigrationConfig {
    pub environment: Environment,
    /// The login name migration jobs use (`migration.user`).
    pub user: String,
    pub grace: Duration,
    pub leeway: Duration,
    pub keys: Vec<KeySource>,
    pub jwks: Vec<JwksSource>,
    pub windows: Vec<Window>,
}

/// An accepted token-signing key, read at load time (parsed by
/// [`Keyring`](super::token::Keyring)).
#[derive(Debug, Clone)]
pub struct KeySource {
    pub kid: Option<String>,
    /// The key as configured: PEM or base64, not yet parsed.
    pub material: String,
}

/// A `[[migration.jwks]]` entry: where its keys come from, and what the
/// tokens they verify must say.
#[derive(Debug, Clone)]
pub struct JwksSource {
    /// Must equal the token's `iss`.
    pub issuer: String,
    pub keys_from: KeysFrom,
    /// Must be in the token's `aud`.
    pub audience: Option<String>,
    /// A glob on `sub`.
    pub subject: Option<String>,
    /// `[migration.jwks.claims]`: every rule must match.
    pub claims: Vec<ClaimRule>,
    /// The claim naming the environment the token was minted for
    /// (`environment_claim`, default `env`).
    pub environment_claim: String,
    /// The claim naming the `[[services]]` entry (`service_claim`, default
    /// `service`); ignored when `service` is set.
    pub service_claim: String,
    /// Every token of this source reaches this service (`service`).
    pub service: Option<String>,
    /// Every token of this source counts as prod confirmation.
    pub confirms_prod: bool,
    /// `[migration.jwks.confirm_claims]`: a token matching all of these
    /// (and at least one) counts as prod confirmation.
    pub confirm_claims: Vec<ClaimRule>,
}

/// Where a `[[migration.jwks]]` entry's keys come from.
#[derive(Debug, Clone)]
pub enum KeysFrom {
    /// `file`: read at load time (and on reload).
    File { path: PathBuf, json: String },
    /// `url`, or `issuer` alone (OIDC discovery): fetched at run time.
    Remote(RemoteJwks),
}

/// A JWKS fetched over HTTPS, and how its cache behaves. Entries with
/// equal settings share one fetcher, its keys and its rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteJwks {
    pub location: RemoteLocation,
    /// `ca_file`, read at load time: the only trusted roots when set;
    /// otherwise the compiled-in Mozilla roots.
    pub ca: Option<CaFile>,
    /// How long fetched keys are fresh when the response has no
    /// `Cache-Control: max-age` (`refresh`).
    pub refresh: Duration,
    /// The oldest keys still used while the issuer is unreachable
    /// (`max_stale`).
    pub max_stale: Duration,
    /// At most one fetch per this interval (`min_refresh_interval`).
    pub min_refresh_interval: Duration,
    /// One whole fetch (discovery and JWKS) must finish within this
    /// (`fetch_timeout`).
    pub fetch_timeout: Duration,
}

/// Which document is fetched first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteLocation {
    /// `issuer` alone: `<issuer>/.well-known/openid-configuration`, then
    /// its `jwks_uri`.
    Discovery { issuer: String },
    /// `url`: the JWKS itself.
    Url(String),
}

/// A `ca_file` and its PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// One claim rule: the claim at `path` must match `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// A dotted path (`kubernetes.io.namespace`) or a JSON Pointer
    /// (`/kubernetes.io/namespace`); see `token/claims.rs`.
    pub path: String,
    /// Exact text, or a glob with `*` and `?`.
    pub pattern: String,
}

/// An authorised migration window.
#[derive(Debug, Clone)]
pub enum Window {
    Absolute {
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    },
    Weekly {
        days: Vec<jiff::civil::Weekday>,
        from: jiff::civil::Time,
        to: jiff::civil::Time,
        timezone: jiff::tz::TimeZone,
    },
}
