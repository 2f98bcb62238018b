//! The client side of SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL speaks
//! it: no channel binding, empty user name) for the proxy's own upstream
//! logins, with the expensive part cached.
//!
//! Deriving the salted password is PBKDF2 with the server's iteration count
//! (4,096 by default): milliseconds of CPU on every upstream login. The
//! result depends only on (password, salt, iterations), and a role's salt
//! only changes when its password does, so [`KeyCache`] keeps the derived
//! ClientKey/ServerKey per (role, salt, iterations), checked against a
//! digest of the password so a rotated secret is never paired with stale
//! keys. Primitives come from `pbkdf2`, `hmac`, `sha2` and `stringprep`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

const KEY_LEN: usize = 32;
/// Distinct (role, salt, iterations) entries kept; far more than the roles
/// a proxy logs in as, so the bound only matters against a hostile server
/// that changes salts on every login.
const CACHE_ENTRIES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("malformed server-first-message: {0}")]
    ServerFirst(&'static str),
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server reported an error: {0}")]
    Server(String),
    #[error("the server's signature is wrong: it does not know the password")]
    ServerSignature,
    #[error("malformed server-final-message")]
    ServerFinal,
    #[error("SCRAM messages out of order")]
    Order,
}

/// ClientKey and ServerKey for one (password, salt, iterations).
#[derive(Clone, Copy)]
struct Keys {
    password_digest: [u8; KEY_LEN],
    client_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

/// Derived keys by (role, salt, iterations). Process-wide: the same role
/// logs in over and over, from every session.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<CacheKey, Keys>>,
}

/// (role, salt, iterations).
type CacheKey = (String, Vec<u8>, u32);

impl KeyCache {
    /// The keys for `password`, derived at most once per (role, salt,
    /// iterations, password).
    fn keys(&self, role: &str, password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let digest: [u8; KEY_LEN] = Sha256::digest(password).into();
        let key = (role.to_string(), salt.to_vec(), iterations);
        if let Ok(map) = self.entries.lock()
            && let Some(k) = map.get(&key)
            && k.password_digest == digest
        {
            crate::metrics::scram_derivation(true);
            return *k;
        }
        // Derive outside the lock and off the async workers: PBKDF2 takes
        // milliseconds.
        let salted = crate::offload::cpu_heavy(|| {
            pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(password, salt, iterations)
        });
        let keys = Keys {
            password_digest: digest,
            client_key: hmac(&salted, b"Client Key"),
            server_key: hmac(&salted, b"Server Key"),
        };
        crate::metrics::scram_derivation(false);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
            map.insert(key, keys);
        }
        keys
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The process-wide cache every upstream login uses.
pub fn cache() -> &'static KeyCache {
    static CACHE: std::sync::OnceLock<KeyCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(KeyCache::default)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    // HMAC takes keys of any length; the error arm cannot happen and fails
    // closed (a zero key produces proofs no server accepts).
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0; KEY_LEN];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

enum State {
    Start,
    FirstSent,
    FinalSent {
        server_key: [u8; KEY_LEN],
        auth_message: String,
    },
    Done,
    Failed,
}

/// One client-side exchange.
pub struct ScramClient<'a> {
    role: &'a str,
    password: Vec<u8>,
    nonce: String,
    cache: &'a KeyCache,
    state: State,
}

impl<'a> ScramClient<'a> {
    pub fn new(role: &'a str, password: &str, cache: &'a KeyCache) -> Self {
        // SASLprep as libpq does it: a password it cannot normalise is used
        // as raw bytes, which is also what the server did when storing it.
        let password = match stringprep::saslprep(password) {
            Ok(p) => p.as_bytes().to_vec(),
            Err(_) => password.as_bytes().to_vec(),
        };
        let raw: [u8; 18] = rand::random();
        ScramClient {
            role,
            password,
            nonce: STANDARD.encode(raw),
            cache,
            state: State::Start,
        }
    }

    /// client-first-message (the SASLInitialResponse data).
    pub fn client_first(&mut self) -> Vec<u8> {
        self.state = State::FirstSent;
        format!("n,,n=,r={}", self.nonce).into_bytes()
    }

    /// Answer the server-first-message with the client-final-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::FirstSent) {
            return Err(ScramError::Order);
        }
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::ServerFirst("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(ScramError::ServerFirst("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::ServerFirst("no nonce"))?;
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD
            .decode(salt.ok_or(ScramError::ServerFirst("no salt"))?)
            .map_err(|_| ScramError::ServerFirst("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::ServerFirst("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::ServerFirst("bad iteration count"))?;
        if iterations == 0 {
            return Err(ScramError::ServerFirst("zero iterations"));
        }
        let keys = self
            .cache
            .keys(self.role, &self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n=,r={},{server_first},{without_proof}", self.nonce);
        let stored_key: [u8; KEY_LEN] = Sha256::digest(keys.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.state = State::FinalSent {
            server_key: keys.server_key,
            auth_message,
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Whether the server's signature was checked.
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Check the server-final-message: the server proves it knows the
    /// password too.
    pub fn verify_server_final(&mut self, server_final: &[u8]) -> Result<(), ScramError> {
        let State::FinalSent {
            server_key,
            auth_message,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(ScramError::Order);
        };
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::ServerFinal)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_string()));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(ScramError::ServerFinal)?;
        let v = STANDARD.decode(v).map_err(|_| ScramError::ServerFinal)?;
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&server_key) else {
            return Err(ScramError::ServerSignature);
        };
        mac.update(auth_message.as_bytes());
        mac.verify_slice(&v)
            .map_err(|_| ScramError::ServerSignature)?;
        self.state = State::Done;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_auth::{ScramServer, ScramVerifier};

    /// Our client against our server (itself checked against PostgreSQL's
    /// secrets and RFC 7677): a full exchange succeeds, twice with one
    /// derivation.
    #[test]
    fn exchange_with_the_server_side_and_cache() {
        let cache = KeyCache::default();
        let verifier = ScramVerifier::from_password("pencil");
        for _ in 0..2 {
            let mut server = ScramServer::new(verifier.clone());
            let mut client = ScramClient::new("app", "pencil", &cache);
            let first = client.client_first();
            let server_first = server.client_first("SCRAM-SHA-256", &first).unwrap();
            let fin = client.client_final(&server_first).unwrap();
            let server_final = server.client_final(&fin).unwrap();
            client.verify_server_final(&server_final).unwrap();
        }
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn wrong_password_fails_and_rotation_rederives() {
        let cache = KeyCache::default();
        let verifier = ScramVerifier::from_password("right");
        let mut server = ScramServer::new(verifier.clone());
        let mut client = ScramClient::new("app", "wrong", &cache);
        let first = client.client_first();
        let sf = server.client_first("SCRAM-SHA-256", &first).unwrap();
        let fin = client.client_final(&sf).unwrap();
        assert!(server.client_final(&fin).is_err());
        // Same role and salt, the right password now: the cached keys of
        // the wrong one must not be used.
        let mut server = ScramServer::new(verifier);
        let mut client = ScramClient::new("app", "right", &cache);
        let first = client.client_first();
        let sf = server.client_first("SCRAM-SHA-256", &first).unwrap();
        let fin = client.client_final(&sf).unwrap();
        let server_final = server.client_final(&fin).unwrap();
        client.verify_server_final(&server_final).unwrap();
    }

    #[test]
    fn hostile_server_messages_are_errors() {
        let cache = KeyCache::default();
        let mut c = ScramClient::new("app", "pw", &cache);
        assert!(matches!(c.client_final(b"r=x"), Err(ScramError::Order)));
        let first = String::from_utf8(c.client_first()).unwrap();
        let nonce = first.rsplit("r=").next().unwrap().to_string();
        for bad in [
            "".to_string(),
            "r=other,s=c2FsdA==,i=4096".into(),
            format!("r={nonce},s=c2FsdA==,i=4096"),
            format!("r={nonce}x,s=!!,i=4096"),
            format!("r={nonce}x,s=c2FsdA==,i=0"),
            format!("r={nonce}x,s=c2FsdA==,i=-1"),
            format!("m=ext,r={nonce}x,s=c2FsdA==,i=1"),
        ] {
            let mut c2 = ScramClient::new("app", "pw", &cache);
            c2.nonce = nonce.clone();
            c2.state = State::FirstSent;
            assert!(c2.client_final(bad.as_bytes()).is_err(), "{bad}");
        }
        let mut c3 = ScramClient::new("app", "pw", &cache);
        c3.nonce = nonce.clone();
        c3.state = State::FirstSent;
        c3.client_final(format!("r={nonce}x,s=c2FsdA==,i=1").as_bytes())
            .unwrap();
        assert!(c3.verify_server_final(b"v=AAAA").is_err());
        assert!(matches!(
            c3.verify_server_final(b"v=AAAA"),
            Err(ScramError::Order)
        ));
    }
}
