//! `[[clients]]`: the runtime identities applications log in as, each with
//! a SCRAM verifier (given, or derived from a password read from env or
//! file) and the service it reaches.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use super::services::ServiceCredentials;
use super::{ConfigError, DEFAULT_SERVICE, invalid, secret};
use crate::client_auth::ScramVerifier;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub name: String,
    pub password_scram: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub service: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub name: String,
    pub verifier: ScramVerifier,
    pub service: String,
    /// A digest of the configured secret (verifier or password), so a
    /// reload can tell whether it changed without keeping the secret.
    pub secret_digest: [u8; 32],
}

/// Every client by name. `migration_user` is the migration login, which no
/// client may be named like; every client's service must be configured.
pub(super) fn resolve(
    raw: &[RawClient],
    migration_user: &str,
    services: &BTreeMap<String, ServiceCredentials>,
    env: &HashMap<String, String>,
) -> Result<HashMap<String, ClientEntry>, ConfigError> {
    let mut clients = HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let entry = client(&format!("clients[{i}]"), c, migration_user, services, env)?;
        if clients.insert(c.name.clone(), entry).is_some() {
            return Err(invalid(format!(
                "clients[{i}].name = {:?} is defined twice",
                c.name
            )));
        }
    }
    Ok(clients)
}

fn client(
    key: &str,
    c: &RawClient,
    migration_user: &str,
    services: &BTreeMap<String, ServiceCredentials>,
    env: &HashMap<String, String>,
) -> Result<ClientEntry, ConfigError> {
    if c.name.is_empty() {
        return Err(invalid(format!("{key}.name is empty")));
    }
    if c.name == migration_user {
        return Err(invalid(format!(
            "{key}.name = {:?} is the migration login (migration.user): a runtime client may not share its name",
            c.name
        )));
    }
    let (verifier, secret_digest) = verifier(key, c, env)?;
    let service = c.service.clone().unwrap_or_else(|| DEFAULT_SERVICE.into());
    if !services.contains_key(&service) {
        return Err(invalid(format!(
            "{key}.service = {service:?} is not a configured service (known: {})",
            services.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(ClientEntry {
        name: c.name.clone(),
        verifier,
        service,
        secret_digest,
    })
}

/// The client's verifier and a digest of what was configured.
fn verifier(
    key: &str,
    c: &RawClient,
    env: &HashMap<String, String>,
) -> Result<(ScramVerifier, [u8; 32]), ConfigError> {
    match (&c.password_scram, &c.password_env, &c.password_file) {
        (Some(v), None, None) => {
            let verifier = ScramVerifier::parse(v).map_err(|e| {
                invalid(format!(
                    "{key}.password_scram is not a SCRAM-SHA-256 verifier ({e}); make one with `rolegate scram-hash`"
                ))
            })?;
            Ok((verifier, digest(v.as_bytes())))
        }
        (None, Some(_), None) | (None, None, Some(_)) => {
            let pw = secret::resolve(
                &format!("{key}.password"),
                &None,
                &c.password_env,
                &c.password_file,
                env,
            )?
            .ok_or_else(|| invalid(format!("{key}: no password")))?;
            let verifier = crate::offload::cpu_heavy(|| ScramVerifier::from_password(pw.expose()));
            Ok((verifier, digest(pw.expose().as_bytes())))
        }
        _ => Err(invalid(format!(
            "{key} ({}): set exactly one of password_scram, password_env, password_file",
            c.name
        ))),
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
