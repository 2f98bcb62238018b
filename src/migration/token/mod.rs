//! Migrator tokens (JWTs): checking them at login, and minting them for
//! `rolegate token`.
//!
//! Where things are:
//! * `verify.rs`: [`Keyring`] and [`Keyring::verify`], what the proxy runs
//!   for every migration login: which configured keys may have signed a
//!   token (algorithm, `kid`), the signature check, and the outcome
//!   ([`Verified`] or a refusal).
//! * `claims.rs`: what a token's claims must say: `sub`, `exp` / `nbf` /
//!   `iat` against the injected clock and leeway, and for JWKS sources
//!   `iss`, `aud`, the glob `subject` pattern ([`glob_match`]), the claim
//!   rules (dotted paths into nested claims) and which claims carry the
//!   environment, service and prod confirmation.
//! * `keys.rs`: turning `[[migration.keys]]` (Ed25519 public keys) and
//!   JWKS documents (RS256 / ES256 / EdDSA keys of an OIDC issuer, from a
//!   file or fetched by [`crate::migration::jwks`]) into verification keys.
//! * `mint.rs`: `rolegate token keygen` / `issue` ([`keygen`], [`issue`]):
//!   key pairs and EdDSA tokens the keyring accepts. The proxy never mints.
//!
//! Signature checking and JWT decoding are done by the `jsonwebtoken` crate
//! (RustCrypto backend); keys are parsed and generated with `ed25519-dalek`
//! and `ring`. Nothing here implements cryptography. What these files do
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

mod claims;
mod keys;
mod mint;
mod verify;

pub use claims::glob_match;
pub(crate) use keys::{Candidate, jwks_keys};
pub(crate) use mint::write_new;
pub use mint::{IssueOptions, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, TokenError, issue, keygen};
pub use verify::{Keyring, Verified};

/// The service a token reaches when it names none.
pub const DEFAULT_SERVICE: &str = "default";

/// Select jsonwebtoken's RustCrypto backend explicitly. The crate picks it
/// from its features on its own, but if another crate in the build ever
/// enabled a second backend, it would pick none and panic on first use;
/// installing ours first avoids that. Installing twice is harmless (the
/// first wins).
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
