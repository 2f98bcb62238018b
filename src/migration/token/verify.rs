//! Checking a migrator token at login: [`Keyring`] holds every accepted
//! verification key — parsed once per loaded config, or read from a
//! fetcher's current key set — and [`Keyring::verify`] checks a token's
//! signature against the keys that may have signed it, then its claims,
//! and returns what the token says ([`Verified`]) or why it is refused.
//! [`Keyring::wanting_keys`] says which fetchers lack a key the token may
//! need, so that the login can have them refreshed first.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::Value;

use super::claims::{self, JwksPolicy, Origin, truncate};
use super::install_crypto_provider;
use super::keys::{self, Candidate};
use crate::migration::jwks::{Fetcher, KeySet};
use crate::migration::settings::{KeysFrom, MigrationConfig};
use crate::migration::{AccessError, Refusal};

/// What a verified token says, before environment and window checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    pub jti: Option<String>,
    pub issuer: Option<String>,
    pub service: String,
    /// The environment claim, if the token carries one.
    pub env: Option<String>,
    /// `confirm: true` in the token, or the token came from a JWKS source
    /// with `confirms_prod = true` or matching `confirm_claims`.
    pub confirmed: bool,
    pub exp: Timestamp,
    /// The config entry whose key verified it: `migration.keys[0]`,
    /// `migration.jwks[1]`.
    pub source: String,
    /// The `kid` of that key, if it has one.
    pub kid: Option<String>,
    /// Verified with fetched keys past their refresh time (the issuer has
    /// not answered since).
    pub stale: bool,
}

/// Every accepted verification key: the fixed ones (`[[migration.keys]]`
/// and JWKS files), parsed once per loaded config, and the fetched ones,
/// read from their fetcher at each login.
#[derive(Debug)]
pub struct Keyring {
    fixed: Vec<Fixed>,
    remote: Vec<Remote>,
    /// One per `[[migration.jwks]]` entry, in config order.
    policies: Vec<JwksPolicy>,
}

/// A parsed key and the config entry it came from.
#[derive(Debug)]
struct Fixed {
    key: Candidate,
    /// `migration.keys[i]` or `migration.jwks[i]`.
    source: String,
    /// For a JWKS file's key, its entry's policy.
    policy: Option<usize>,
}

/// A `[[migration.jwks]]` entry whose keys are fetched.
#[derive(Debug)]
struct Remote {
    policy: usize,
    fetcher: Arc<Fetcher>,
}

/// One key's attempt at a token.
enum Attempt {
    Accepted(Verified),
    /// The signature verified, but the claims did not satisfy this key's
    /// source.
    ClaimsRefused(Refusal),
    /// This key did not sign the token.
    NotThisKey,
}

/// A key that may verify a token, borrowed for one verification.
struct Try<'a> {
    key: &'a Candidate,
    source: &'a str,
    policy: Option<usize>,
    /// Set for fetched keys: their set (for staleness) and fetcher.
    fetched: Option<(&'a KeySet, &'a Fetcher)>,
}

impl Keyring {
    /// Parse every configured key; set up (but do not start) a fetcher
    /// for every fetched JWKS. Unusable JWKS entries (other algorithms,
    /// encryption keys, symmetric keys, short RSA keys) are skipped and
    /// described in the returned notes; a JWKS file with no usable key at
    /// all, or any bad `[[migration.keys]]` entry, is an error naming the
    /// config key.
    pub fn new(cfg: &MigrationConfig) -> Result<(Keyring, Vec<String>), AccessError> {
        install_crypto_provider();
        let mut ring = Keyring {
            fixed: Vec::new(),
            remote: Vec::new(),
            policies: Vec::new(),
        };
        let mut notes = Vec::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            ring.fixed.push(Fixed {
                key: keys::ed25519_key(i, k)?,
                source: format!("migration.keys[{i}]"),
                policy: None,
            });
        }
        for (i, source) in cfg.jwks.iter().enumerate() {
            let name = format!("migration.jwks[{i}]");
            let policy = ring.policies.len();
            match &source.keys_from {
                KeysFrom::File { path, json } => {
                    let label = format!("{name}.file ({})", path.display());
                    for key in keys::jwks_keys(&label, json, &mut notes)? {
                        ring.fixed.push(Fixed {
                            key,
                            source: name.clone(),
                            policy: Some(policy),
                        });
                    }
                }
                KeysFrom::Remote(settings) => ring.remote.push(Remote {
                    policy,
                    fetcher: Fetcher::shared(&name, &source.issuer, settings)?,
                }),
            }
            ring.policies.push(JwksPolicy::new(name, source));
        }
        if cfg.keys.is_empty() && cfg.jwks.is_empty() {
            notes.push(
                "migration: no [[migration.keys]] or [[migration.jwks]] configured; every migration login will be refused"
                    .into(),
            );
        }
        Ok((ring, notes))
    }

    /// The fetchers of every fetched JWKS (each once).
    pub fn fetchers(&self) -> Vec<Arc<Fetcher>> {
        let mut out: Vec<Arc<Fetcher>> = Vec::new();
        for r in &self.remote {
            if !out.iter().any(|f| Arc::ptr_eq(f, &r.fetcher)) {
                out.push(r.fetcher.clone());
            }
        }
        out
    }

    /// The fetchers worth asking for fresh keys before `token` is
    /// verified: those of entries whose issuer is the token's (unverified)
    /// `iss` and whose usable keys include none the token may be signed
    /// with (by `alg` and `kid`). Empty for tokens that cannot be decoded.
    pub fn wanting_keys(&self, token: &str, now: Timestamp) -> Vec<Arc<Fetcher>> {
        let token = token.trim();
        let Ok(header) = decode_header(token) else {
            return Vec::new();
        };
        let Some(iss) = unverified_issuer(token) else {
            return Vec::new();
        };
        let mut out: Vec<Arc<Fetcher>> = Vec::new();
        for r in &self.remote {
            let same_issuer = self.policies.get(r.policy).is_some_and(|p| p.issuer == iss);
            let has_key = r.fetcher.keys().is_some_and(|set| {
                set.is_usable(now) && set.candidates.iter().any(|c| may_have_signed(c, &header))
            });
            if same_issuer && !has_key && !out.iter().any(|f| Arc::ptr_eq(f, &r.fetcher)) {
                out.push(r.fetcher.clone());
            }
        }
        out
    }

    /// Check the token's signature against every key that may have signed
    /// it, then its claims. `leeway` applies to `exp`, `nbf` and `iat`.
    ///
    /// A token is accepted if any key verifies it *and* that key's source
    /// accepts its claims. When a key verifies it but the claims fail, that
    /// claim failure is reported (it is more useful than "bad signature");
    /// if another source with the same key accepts it, it is admitted.
    /// Fetched keys older than `max_stale` are not used.
    pub fn verify(
        &self,
        token: &str,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<Verified, Refusal> {
        let token = token.trim();
        let header = decode_header(token)?;
        let sets: Vec<(&Remote, Option<Arc<KeySet>>)> = self
            .remote
            .iter()
            .map(|r| (r, r.fetcher.keys().filter(|s| s.is_usable(now))))
            .collect();
        let mut claim_failure: Option<Refusal> = None;
        let mut tried = 0;
        for t in self
            .tries(&sets)
            .filter(|t| may_have_signed(t.key, &header))
        {
            tried += 1;
            match self.attempt(&t, token, now, leeway)? {
                Attempt::Accepted(mut v) => {
                    if let Some((set, fetcher)) = t.fetched
                        && set.is_stale(now)
                    {
                        v.stale = true;
                        fetcher.record_stale_use(set, now);
                    }
                    return Ok(v);
                }
                Attempt::ClaimsRefused(r) => {
                    claim_failure.get_or_insert(r);
                }
                Attempt::NotThisKey => {}
            }
        }
        Err(claim_failure.unwrap_or_else(|| {
            let iss = unverified_issuer(token);
            no_key_verified(&header, tried, &self.missing(&sets, iss.as_deref()))
        }))
    }

    /// Every key in order: fixed ones, then each fetched entry's current
    /// usable keys.
    fn tries<'a>(
        &'a self,
        sets: &'a [(&'a Remote, Option<Arc<KeySet>>)],
    ) -> impl Iterator<Item = Try<'a>> {
        let fixed = self.fixed.iter().map(|f| Try {
            key: &f.key,
            source: &f.source,
            policy: f.policy,
            fetched: None,
        });
        let fetched = sets.iter().flat_map(|(r, set)| {
            let source = self.policies.get(r.policy).map_or("", |p| p.name.as_str());
            set.iter().flat_map(move |set| {
                set.candidates.iter().map(move |key| Try {
                    key,
                    source,
                    policy: Some(r.policy),
                    fetched: Some((set.as_ref(), r.fetcher.as_ref())),
                })
            })
        });
        fixed.chain(fetched)
    }

    /// Fetched entries of the token's issuer without usable keys, for
    /// the refusal message.
    fn missing(&self, sets: &[(&Remote, Option<Arc<KeySet>>)], iss: Option<&str>) -> Vec<String> {
        sets.iter()
            .filter(|(_, set)| set.is_none())
            .filter_map(|(r, _)| self.policies.get(r.policy))
            .filter(|p| Some(p.issuer.as_str()) == iss)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Verify the signature with one key, then the claims against that
    /// key's source. `Err` when the token cannot be decoded at all.
    fn attempt(
        &self,
        t: &Try<'_>,
        token: &str,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<Attempt, Refusal> {
        let mut validation = Validation::new(t.key.alg);
        // Claims are checked by `claims::check` against the injected clock
        // and the source's policy; the library only checks signature and alg.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        match jsonwebtoken::decode::<Value>(token, &t.key.key, &validation) {
            Ok(data) => {
                let policy = t.policy.and_then(|i| self.policies.get(i));
                let origin = Origin {
                    source: t.source,
                    kid: t.key.kid.as_deref(),
                };
                Ok(
                    match claims::check(data.claims, policy, origin, now, leeway) {
                        Ok(v) => Attempt::Accepted(v),
                        Err(r) => Attempt::ClaimsRefused(r),
                    },
                )
            }
            Err(e) => match e.kind() {
                // The token's parts don't decode: no key will do better.
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => Err(Refusal::malformed(
                    "the migration token is not a well-formed JWT (its parts do not decode)",
                )),
                // Anything else: this key did not verify it; try the next.
                _ => Ok(Attempt::NotThisKey),
            },
        }
    }
}

/// The `iss` of a token's payload, read *without* verifying anything:
/// only to pick which issuer to ask for fresh keys.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// The token's header, refusing algorithms no key is ever configured for.
fn decode_header(token: &str) -> Result<Header, Refusal> {
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
    Ok(header)
}

/// Only a key of the header's algorithm is tried (no algorithm
/// confusion), and when both name a `kid`, only the matching one.
fn may_have_signed(c: &Candidate, header: &Header) -> bool {
    if c.alg != header.alg {
        return false;
    }
    match (&header.kid, &c.kid) {
        (Some(want), Some(have)) => want == have,
        _ => true,
    }
}

/// The refusal when no key verified the token; `missing` names fetched
/// entries that have no usable keys (not fetched yet, or too stale).
fn no_key_verified(header: &Header, tried: usize, missing: &[String]) -> Refusal {
    if tried > 0 {
        return Refusal::bad_signature(
            "the migration token's signature does not verify against any configured key",
        );
    }
    let kid = header
        .kid
        .as_deref()
        .map(|k| format!(" and kid {:?}", truncate(k, 64)))
        .unwrap_or_default();
    let unavailable = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "; the issuer keys of {} are not available (not fetched yet, or older than max_stale)",
            missing.join(", ")
        )
    };
    Refusal::bad_signature(format!(
        "no configured key matches the migration token (alg {:?}{kid}){unavailable}",
        header.alg
    ))
}
