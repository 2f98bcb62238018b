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

/// A `[[migration.jwks]]` entry with its document read at load time.
#[derive(Debug, Clone)]
pub struct JwksSource {
    /// Where the document came from, for messages.
    pub file: PathBuf,
    pub json: String,
    pub issuer: String,
    pub audience: Option<String>,
    pub subject: Option<String>,
    pub confirms_prod: bool,
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
