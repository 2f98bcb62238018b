//! Accepted verification keys: `[[migration.keys]]` entries (Ed25519
//! public keys, PEM or base64) and the keys of `[[migration.jwks]]`
//! documents (RS256, ES256, EdDSA), each bound to the one algorithm it may
//! verify. A broken configured key is an error naming its config key; a
//! JWK that rolegate deliberately does not use is skipped with a note.
//! The same parsing serves JWKS files and fetched documents.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, OctetKeyPairParameters, PublicKeyUse,
    RSAKeyParameters,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::migration::AccessError;
use crate::migration::settings::KeySource;

/// RSA moduli accepted in a JWKS, in bits: below 2048 is too weak; above
/// 4096 the RustCrypto backend refuses to verify.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;

/// One verification key and the only algorithm it verifies.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// `[[migration.keys]]`: an Ed25519 public key as PEM (SPKI), or base64 of
/// the raw 32 bytes (or of the SPKI DER).
pub(super) fn ed25519_key(i: usize, k: &KeySource) -> Result<Candidate, AccessError> {
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
    })
}

fn parse_ed25519_public(material: &str) -> Result<VerifyingKey, String> {
    let text = material.trim();
    if text.is_empty() {
        return Err("the key is empty".into());
    }
    let vk = if text.starts_with("-----BEGIN") {
        ed25519_from_pem(text)?
    } else {
        ed25519_from_base64(text)?
    };
    // A small-order key makes signatures verify for messages nobody signed.
    if vk.is_weak() {
        return Err("the key is a weak (small-order) point".into());
    }
    Ok(vk)
}

fn ed25519_from_pem(text: &str) -> Result<VerifyingKey, String> {
    if text.contains("PRIVATE KEY") {
        return Err(
            "this is a private key; configure the public key (migrator.pub), keep migrator.key with the token issuer"
                .into(),
        );
    }
    VerifyingKey::from_public_key_pem(text)
        .map_err(|e| format!("expected a PEM \"PUBLIC KEY\" (SPKI) block ({e})"))
}

fn ed25519_from_base64(text: &str) -> Result<VerifyingKey, String> {
    let bytes = decode_base64(text).ok_or_else(|| {
        "expected a PEM \"PUBLIC KEY\" block or base64 of the 32-byte key".to_string()
    })?;
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(raw) => VerifyingKey::from_bytes(&raw)
            .map_err(|_| "the 32 bytes are not a valid Ed25519 point".to_string()),
        Err(_) => VerifyingKey::from_public_key_der(&bytes).map_err(|_| {
            format!(
                "base64 decodes to {} bytes; expected the raw 32-byte key or its SPKI DER",
                bytes.len()
            )
        }),
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&compact).ok())
}

/// The usable keys of one JWKS document; at least one, or an error.
/// `label` names the document in messages (`migration.jwks[0].file (…)`,
/// or the URL it was fetched from).
pub(crate) fn jwks_keys(
    label: &str,
    json: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<Candidate>, AccessError> {
    let doc: Value =
        serde_json::from_str(json).map_err(|e| AccessError(format!("{label}: not JSON: {e}")))?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| {
        AccessError(format!(
            "{label}: not a JWKS (expected an object with a \"keys\" array)"
        ))
    })?;
    let mut out = Vec::new();
    for (j, raw) in keys.iter().enumerate() {
        // Each key is judged on its own: one exotic key in an issuer's set
        // must not make the whole set unusable.
        let key_label = match raw.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("{label} key {j} (kid {kid:?})"),
            None => format!("{label} key {j}"),
        };
        match jwk_candidate(raw) {
            Ok(c) => out.push(c),
            Err(Skip::Ignore(why)) => notes.push(format!("{key_label}: skipped: {why}")),
            Err(Skip::Broken(why)) => return Err(AccessError(format!("{key_label}: {why}"))),
        }
    }
    if out.is_empty() {
        return Err(AccessError(format!(
            "{label}: no usable RS256, ES256 or EdDSA signing key in the JWKS"
        )));
    }
    Ok(out)
}

enum Skip {
    /// A well-formed key rolegate deliberately does not use.
    Ignore(String),
    /// A key that claims to be usable but is not: a config error.
    Broken(String),
}

fn jwk_candidate(raw: &Value) -> Result<Candidate, Skip> {
    let jwk: Jwk = serde_json::from_value(raw.clone())
        .map_err(|e| Skip::Ignore(format!("not a JWK this version understands ({e})")))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(Skip::Ignore("an encryption key (use = enc)".into()));
    }
    let alg = jwk_algorithm(&jwk)?;
    let key = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => rsa_key(&jwk, p)?,
        AlgorithmParameters::OctetKeyPair(p) => ed25519_jwk(p)?,
        _ => ec_key(&jwk, alg)?,
    };
    Ok(Candidate {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// The one algorithm a JWK may verify: its `alg` if given (and fitting its
/// key type), else the one its key type implies.
fn jwk_algorithm(jwk: &Jwk) -> Result<Algorithm, Skip> {
    match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::OctetKey(_), _) => {
            // Never: a shared secret in a JWKS would let anyone holding the
            // file mint tokens.
            Err(Skip::Ignore("a symmetric (oct) key; never used".into()))
        }
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Ok(Algorithm::RS256),
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Ok(Algorithm::ES256)
        }
        (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Ok(Algorithm::EdDSA)
        }
        (_, Some(a @ (KeyAlgorithm::RS256 | KeyAlgorithm::ES256 | KeyAlgorithm::EdDSA))) => Err(
            Skip::Broken(format!("alg {a:?} does not fit the key type/curve")),
        ),
        (_, Some(a)) => Err(Skip::Ignore(format!(
            "algorithm {a:?} is not accepted (RS256, ES256, EdDSA only)"
        ))),
        (_, None) => Err(Skip::Ignore(
            "key type/curve is not RSA, EC P-256 or OKP Ed25519".into(),
        )),
    }
}

fn broken(what: &str) -> Skip {
    Skip::Broken(format!("invalid {what} key"))
}

fn rsa_key(jwk: &Jwk, p: &RSAKeyParameters) -> Result<DecodingKey, Skip> {
    let n = URL_SAFE_NO_PAD
        .decode(p.n.trim_end_matches('='))
        .map_err(|_| broken("RSA"))?;
    let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(Skip::Ignore(format!(
            "RSA key of about {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} supported"
        )));
    }
    DecodingKey::from_jwk(jwk).map_err(|_| broken("RSA"))
}

fn ed25519_jwk(p: &OctetKeyPairParameters) -> Result<DecodingKey, Skip> {
    // Validate here: the verifier would index past a short key.
    let raw = URL_SAFE_NO_PAD
        .decode(p.x.trim_end_matches('='))
        .map_err(|_| broken("Ed25519"))?;
    let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| broken("Ed25519"))?;
    let vk = VerifyingKey::from_bytes(&raw).map_err(|_| broken("Ed25519"))?;
    if vk.is_weak() {
        return Err(broken("(weak) Ed25519"));
    }
    Ok(DecodingKey::from_ed_der(vk.as_bytes()))
}

fn ec_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, Skip> {
    let key = DecodingKey::from_jwk(jwk).map_err(|_| broken("EC"))?;
    // Building a verifier parses the point; a dummy signature then merely
    // fails to verify, while a bad point is an error.
    jsonwebtoken::crypto::verify("AAAA", b"probe", &key, alg).map_err(|_| broken("EC P-256"))?;
    Ok(key)
}
