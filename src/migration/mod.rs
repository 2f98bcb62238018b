//! Migration access: who may log in as the migration user, and until when.
//!
//! [`Access`] is built once per (re)loaded config from a [`MigrationConfig`]
//! and answers one question per migration login, [`Access::admit`]: given
//! the token presented as the password and the current instant, is this
//! login admitted, for whom, for which service, and until when — or which
//! [`Refusal`] (SQLSTATE, reason) does the client get. [`Access::admit`]
//! does no I/O and reads no clock (`now` is injected): fetched issuer keys
//! are read from their cache.
//!
//! Files:
//! * `mod.rs` (this file): the decision — order of checks, environment
//!   governance (`staging` / `prod` / `replica`), refusal kinds and messages,
//!   and how the token narrows the window.
//! * [`token`]: the JWT: `token/verify.rs` checks one at login
//!   ([`token::Keyring`]), `token/claims.rs` says what its claims must be,
//!   `token/keys.rs` parses the configured keys and JWKS, and
//!   `token/mint.rs` holds the `rolegate token keygen` / `issue` pieces.
//! * [`settings`]: the resolved `[migration]` settings ([`MigrationConfig`],
//!   [`Environment`], keys, windows) that the configuration produces.
//! * [`window`]: window arithmetic (weekly windows in their time zone, DST,
//!   chained windows, next opening).
//! * [`jwks`]: keys fetched from OIDC issuers (discovery or URL), cached,
//!   refreshed and rate-limited in the background; [`Access::admit`] only
//!   reads the cache, [`Access::admit_fetching`] may first wait (bounded)
//!   for a refresh the token needs.
//!
//! Order of checks (each refusal names the first failing one):
//! 1. `environment = "replica"`: refused without looking at the token.
//! 2. The token: signature against any configured key, then `iss`/`aud`/`sub`
//!    and the claim rules for JWKS sources, then `exp`/`nbf` with the leeway.
//! 3. Environment: an `env` claim must name this environment; `prod` needs
//!    the confirmation claim (or a JWKS source with `confirms_prod = true`).
//! 4. A window must be open now.
//!
//! A token narrows but never widens: the admission lasts until the earlier of
//! the end of the current open period and the token's `exp` ([`Admission::until`]).
//!
//! Two deadlines, both fixed at login:
//! * `until = min(window_end, exp)`: a session idle outside a transaction
//!   is closed here;
//! * `hard_end = min(window_end + grace, exp + leeway)`: a session still in
//!   a transaction (or running a statement) is closed here, whatever it is
//!   doing. `grace` belongs to the *window* ending only; a token's own `exp`
//!   is a hard end that the `leeway` may stretch but never past
//!   `exp + leeway`. So a token admitted inside the leeway (already expired
//!   by less than `leeway`) gets no grace: at most `exp + leeway`, i.e. no
//!   more than the leeway it was forgiven.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

pub mod jwks;
pub mod settings;
pub mod token;
pub mod window;

#[cfg(test)]
mod oidc_tests;
#[cfg(test)]
mod tests;

pub use settings::{
    ClaimRule, Environment, JwksSource, KeySource, KeysFrom, MigrationConfig, RemoteJwks,
    RemoteLocation, Window,
};
pub use window::WindowState;

/// SQLSTATE `invalid_password`: the token is bad, expired, or not good
/// enough for this environment.
pub const SQLSTATE_BAD_TOKEN: &str = "28P01";
/// SQLSTATE `cannot_connect_now`: closed window, or a replica.
pub const SQLSTATE_CANNOT_CONNECT_NOW: &str = "57P03";

/// A configured key or JWKS that cannot be used; the message names the
/// config key (`migration.keys[1] …`, `migration.jwks[0].file …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccessError(pub String);

/// The migration-access policy of one loaded config.
#[derive(Debug)]
pub struct Access {
    environment: Environment,
    leeway: Duration,
    grace: Duration,
    keyring: token::Keyring,
    schedule: window::Schedule,
    notes: Vec<String>,
}

/// An admitted migration login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The token's `sub`: who is migrating (audit identity).
    pub subject: String,
    /// The token's `jti`, for the audit trail.
    pub jti: Option<String>,
    /// The token's `iss`, when it has one.
    pub issuer: Option<String>,
    /// The config entry whose key admitted it (`migration.keys[0]`,
    /// `migration.jwks[1]`): the matched rule, for the audit log.
    pub source: String,
    /// The `kid` of that key, if it has one.
    pub kid: Option<String>,
    /// Verified with fetched keys past their refresh time.
    pub stale_keys: bool,
    /// Which `[[services]]` entry the token is for (claim `service`,
    /// default `"default"`). The caller must check it exists and has a
    /// migration role.
    pub service: String,
    /// End of the current open period (chained windows included).
    pub window_end: Timestamp,
    /// The token's `exp`.
    pub token_exp: Timestamp,
    /// `min(window_end, token_exp)`: when the session's authority ends; a
    /// session idle outside a transaction is closed here. May be slightly
    /// in the past when the token was admitted within the `exp` leeway.
    pub until: Timestamp,
    /// `min(window_end + grace, token_exp + leeway)`: the latest the session
    /// may live. A session still busy at `until` is closed here, mid
    /// transaction or not. Never before `until`.
    pub hard_end: Timestamp,
}

/// Why a migration login is refused: sent as `FATAL` with this SQLSTATE and
/// message. `kind` is a stable label for metrics and logs. Messages start
/// with `rolegate: ` and never contain the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: &'static str,
    pub kind: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(kind: &'static str, sqlstate: &'static str, reason: impl fmt::Display) -> Refusal {
        Refusal {
            sqlstate,
            kind,
            message: format!("rolegate: {reason}"),
        }
    }

    fn malformed(reason: impl fmt::Display) -> Refusal {
        Refusal::new("malformed", SQLSTATE_BAD_TOKEN, reason)
    }

    fn bad_signature(reason: impl fmt::Display) -> Refusal {
        Refusal::new("bad_signature", SQLSTATE_BAD_TOKEN, reason)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// Every refusal `kind`, for pre-registering metric labels.
pub const REFUSAL_KINDS: &[&str] = &[
    "malformed",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "wrong_subject",
    "wrong_claim",
    "expired",
    "not_yet_valid",
    "wrong_environment",
    "prod_unconfirmed",
    "no_window",
    "replica",
];

impl Access {
    /// Parse every key (Ed25519 public keys as PEM (SPKI) or base64 of the
    /// raw 32 bytes; JWKS documents with RS256, ES256 and EdDSA keys).
    /// Errors name the config key, e.g. `migration.keys[1] …: not an Ed25519
    /// public key: …`.
    pub fn new(cfg: &MigrationConfig) -> Result<Access, AccessError> {
        let (keyring, notes) = token::Keyring::new(cfg)?;
        Ok(Access {
            environment: cfg.environment,
            leeway: cfg.leeway,
            grace: cfg.grace,
            keyring,
            schedule: window::Schedule::new(&cfg.windows),
            notes,
        })
    }

    /// Things worth a warning at load/reload that are not errors: JWKS keys
    /// skipped (unsupported algorithm, encryption or symmetric keys), no keys
    /// configured at all.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// Decide a migration login with `token` (the cleartext password) at
    /// `now`.
    ///
    /// A `prod` login without confirmation is refused with `28P01`, not
    /// `57P03`: the missing confirmation is a property of the token (mint it
    /// with `--confirm`), and retrying later will not help.
    pub fn admit(&self, token: &str, now: Timestamp) -> Result<Admission, Refusal> {
        if self.environment == Environment::Replica {
            return Err(Refusal::new(
                "replica",
                SQLSTATE_CANNOT_CONNECT_NOW,
                "this is a replica; migrations are never accepted here",
            ));
        }

        let v = self.keyring.verify(token, now, self.leeway)?;

        let here = environment_name(self.environment);
        if let Some(env) = &v.env
            && env != here
        {
            return Err(Refusal::new(
                "wrong_environment",
                SQLSTATE_BAD_TOKEN,
                format!(
                    "this token was minted for environment {:?}; this is {here}",
                    env.chars().take(32).collect::<String>()
                ),
            ));
        }
        if self.environment == Environment::Prod && !v.confirmed {
            return Err(Refusal::new(
                "prod_unconfirmed",
                SQLSTATE_BAD_TOKEN,
                "this is prod; the token must carry the confirmation claim (rolegate token issue --env prod --confirm)",
            ));
        }

        if self.schedule.is_empty() {
            return Err(Refusal::new(
                "no_window",
                SQLSTATE_CANNOT_CONNECT_NOW,
                "no migration window is configured",
            ));
        }
        match self.schedule.state(now) {
            WindowState::Open { until: window_end } => Ok(Admission {
                subject: v.subject,
                jti: v.jti,
                issuer: v.issuer,
                source: v.source,
                kid: v.kid,
                stale_keys: v.stale,
                service: v.service,
                window_end,
                token_exp: v.exp,
                until: window_end.min(v.exp),
                hard_end: hard_end(window_end, self.grace, v.exp, self.leeway),
            }),
            WindowState::Closed { next } => Err(Refusal::new(
                "no_window",
                SQLSTATE_CANNOT_CONNECT_NOW,
                match next {
                    Some(t) => format!(
                        "no migration window is open; next opens {}",
                        t.strftime("%Y-%m-%dT%H:%M:%SZ")
                    ),
                    None => "no migration window is open; no window is scheduled".into(),
                },
            )),
        }
    }

    /// For gauges and `window_open`/`window_close` events: is a window open
    /// at `now`, until when (chained windows included), or when does the
    /// next one open.
    pub fn window_state(&self, now: Timestamp) -> WindowState {
        self.schedule.state(now)
    }

    /// [`Access::admit`] at the current time, after asking the issuer for
    /// fresh keys when the token names a key its cache lacks (key rotation,
    /// or no keys yet). The wait is bounded by `budget` and by the
    /// fetchers' rate limit and timeout; when no key turns up the token is
    /// refused as usual (`28P01`). Never waits for a replica.
    pub async fn admit_fetching(
        &self,
        token: &str,
        budget: Duration,
    ) -> Result<Admission, Refusal> {
        if self.environment != Environment::Replica {
            // A token has one issuer: this is almost always one fetcher.
            for f in self.keyring.wanting_keys(token, Timestamp::now()) {
                f.refresh_now(f.wait_bound().min(budget)).await;
            }
        }
        self.admit(token, Timestamp::now())
    }

    /// Start fetching the keys of every `[[migration.jwks]]` entry with a
    /// `url` or discovery (a no-op for running fetchers, and outside a
    /// tokio runtime). Never waits for a fetch.
    pub fn start_fetchers(&self) {
        for f in self.keyring.fetchers() {
            f.start();
        }
    }

    /// The fetchers of this config's fetched JWKS, each once.
    pub fn fetchers(&self) -> Vec<std::sync::Arc<jwks::Fetcher>> {
        self.keyring.fetchers()
    }
}

/// The latest a session may live: `grace` past the window's end, but never
/// past the token's `exp` plus `leeway` (see the module docs).
pub fn hard_end(
    window_end: Timestamp,
    grace: Duration,
    token_exp: Timestamp,
    leeway: Duration,
) -> Timestamp {
    plus(window_end, grace).min(plus(token_exp, leeway))
}

/// `t + d`, saturating at [`Timestamp::MAX`].
pub(crate) fn plus(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The config spelling of an environment, as carried in the `env` claim.
pub fn environment_name(e: Environment) -> &'static str {
    e.as_str()
}
