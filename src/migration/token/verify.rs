//! Checking a migrator token at login: [`Keyring`] holds every accepted
//! verification key, parsed once per loaded config, and
//! [`Keyring::verify`] checks a token's signature against the keys that may
//! have signed it, then its claims, and returns what the token says
//! ([`Verified`]) or why it is refused.

use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};

use super::claims::{self, Claims, JwksPolicy, truncate};
use super::install_crypto_provider;
use super::keys::{self, Candidate};
use crate::migration::settings::MigrationConfig;
use crate::migration::{AccessError, Refusal};

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

/// Every accepted verification key, in config order.
#[derive(Debug)]
pub struct Keyring {
    candidates: Vec<Candidate>,
    /// One per `[[migration.jwks]]` entry; [`Candidate::jwks`] indexes it.
    policies: Vec<JwksPolicy>,
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
            candidates.push(keys::ed25519_key(i, k)?);
        }
        for (i, source) in cfg.jwks.iter().enumerate() {
            let name = format!("migration.jwks[{i}]");
            candidates.extend(keys::jwks_keys(&name, source, policies.len(), &mut notes)?);
            policies.push(JwksPolicy::new(name, source));
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
        let header = decode_header(token)?;
        let mut claim_failure: Option<Refusal> = None;
        let mut tried = 0;
        for c in self
            .candidates
            .iter()
            .filter(|c| may_have_signed(c, &header))
        {
            tried += 1;
            match self.attempt(c, token, now, leeway)? {
                Attempt::Accepted(v) => return Ok(v),
                Attempt::ClaimsRefused(r) => {
                    claim_failure.get_or_insert(r);
                }
                Attempt::NotThisKey => {}
            }
        }
        Err(claim_failure.unwrap_or_else(|| no_key_verified(&header, tried)))
    }

    /// Verify the signature with one key, then the claims against that
    /// key's source. `Err` when the token cannot be decoded at all.
    fn attempt(
        &self,
        c: &Candidate,
        token: &str,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<Attempt, Refusal> {
        let mut validation = Validation::new(c.alg);
        // Claims are checked by `claims::check` against the injected clock
        // and the source's policy; the library only checks signature and alg.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        match jsonwebtoken::decode::<Claims>(token, &c.key, &validation) {
            Ok(data) => {
                let policy = c.jwks.and_then(|i| self.policies.get(i));
                Ok(match claims::check(data.claims, policy, now, leeway) {
                    Ok(v) => Attempt::Accepted(v),
                    Err(r) => Attempt::ClaimsRefused(r),
                })
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

/// The refusal when no key verified the token.
fn no_key_verified(header: &Header, tried: usize) -> Refusal {
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
    Refusal::bad_signature(format!(
        "no configured key matches the migration token (alg {:?}{kid})",
        header.alg
    ))
}
