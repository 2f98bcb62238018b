//! The upstream role credentials: `[upstream.runtime]` and
//! `[upstream.migration]` (the implicit service `"default"`) and every
//! `[[services]]` entry, each resolved to where and as whom to connect,
//! plus the invariants between roles (a service's runtime and migration
//! users differ; no runtime role is another service's migrator).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use ::config::Map;
use serde::Deserialize;

use super::secret::{self, Secret};
use super::upstream::RawUpstream;
use super::{ConfigError, DEFAULT_SERVICE, invalid};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Per-credential endpoint overrides (the `PG_RUNTIME_HOST` contract lets
    /// the two roles live behind different endpoints).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: String,
    #[serde(default)]
    pub runtime: RawCredentials,
    #[serde(default)]
    pub migration: RawCredentials,
}

/// Where and as whom to connect upstream for one role.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ServiceCredentials {
    pub runtime: Credentials,
    /// Absent when the service has no migration role configured; migration
    /// logins for it are then refused.
    pub migration: Option<Credentials>,
}

impl RawUpstream {
    /// See [`secret::keep_highest_layer`]; only `[upstream.runtime]` and
    /// `[upstream.migration]` can be set from the environment.
    pub(super) fn apply_secret_precedence(&mut self, layers: &[&Map<String, String>]) {
        for (prefix, c) in [
            ("UPSTREAM__RUNTIME", &mut self.runtime),
            ("UPSTREAM__MIGRATION", &mut self.migration),
        ] {
            let sources = secret::SecretSources {
                inline: &mut c.password,
                env: &mut c.password_env,
                file: &mut c.password_file,
            };
            secret::keep_highest_layer(sources, prefix, layers);
        }
    }
}

/// Every service's credentials: the implicit `"default"` from
/// `[upstream.runtime]`/`[upstream.migration]`, plus every `[[services]]`
/// entry.
pub(super) fn resolve(
    up: &RawUpstream,
    raw: &[RawService],
    env: &HashMap<String, String>,
) -> Result<BTreeMap<String, ServiceCredentials>, ConfigError> {
    let mut services = BTreeMap::new();
    if let Some(default) = default_service(up, env)? {
        services.insert(DEFAULT_SERVICE.to_string(), default);
    }
    for (i, s) in raw.iter().enumerate() {
        if s.name.is_empty() {
            return Err(invalid(format!("services[{i}].name is empty")));
        }
        if services.contains_key(&s.name) {
            return Err(invalid(format!(
                "services[{i}].name = {:?} is defined twice (\"default\" is the [upstream.runtime] pair)",
                s.name
            )));
        }
        let key = format!("services[{i}] ({})", s.name);
        let runtime = credentials(&format!("{key}.runtime"), &s.runtime, up, env)?
            .ok_or_else(|| invalid(format!("{key}.runtime.user is missing")))?;
        let migration = credentials(&format!("{key}.migration"), &s.migration, up, env)?;
        services.insert(s.name.clone(), ServiceCredentials { runtime, migration });
    }
    if services.is_empty() {
        return Err(invalid(
            "no upstream runtime credentials: set upstream.runtime.user and a password (or PG_RUNTIME_USER/PG_RUNTIME_PASSWORD, or ROLEGATE_RUNTIME_URL)",
        ));
    }
    distinct_roles(&services)?;
    Ok(services)
}

/// The `"default"` service, if `[upstream.runtime]` names a user.
fn default_service(
    up: &RawUpstream,
    env: &HashMap<String, String>,
) -> Result<Option<ServiceCredentials>, ConfigError> {
    let runtime = credentials("upstream.runtime", &up.runtime, up, env)?;
    let migration = credentials("upstream.migration", &up.migration, up, env)?;
    match runtime {
        Some(runtime) => Ok(Some(ServiceCredentials { runtime, migration })),
        None if migration.is_some() => Err(invalid(
            "upstream.runtime.user is missing (set it, PG_RUNTIME_USER or ROLEGATE_RUNTIME_URL) while upstream.migration is configured",
        )),
        None => Ok(None),
    }
}

/// One role's credentials; `None` when no user is set (and no password).
fn credentials(
    key: &str,
    raw: &RawCredentials,
    upstream: &RawUpstream,
    env: &HashMap<String, String>,
) -> Result<Option<Credentials>, ConfigError> {
    let password = secret::resolve(
        &format!("{key}.password"),
        &raw.password,
        &raw.password_env,
        &raw.password_file,
        env,
    )?;
    let Some(user) = raw.user.clone().filter(|u| !u.is_empty()) else {
        if password.is_some() {
            return Err(invalid(format!(
                "{key}.user is missing but a password is set"
            )));
        }
        return Ok(None);
    };
    let database = raw
        .database
        .clone()
        .or_else(|| upstream.database.clone())
        .ok_or_else(|| {
            invalid(format!(
                "{key}: no database; set upstream.database (or PG_NAME / PG_{}_NAME)",
                key.rsplit('.').next().unwrap_or("").to_ascii_uppercase()
            ))
        })?;
    Ok(Some(Credentials {
        host: raw.host.clone().unwrap_or_else(|| upstream.host.clone()),
        port: raw.port.unwrap_or(upstream.port),
        database,
        user,
        password,
    }))
}

/// A migration role must never be usable from a runtime session: not the
/// same service's runtime role, nor another service's.
fn distinct_roles(services: &BTreeMap<String, ServiceCredentials>) -> Result<(), ConfigError> {
    for (name, s) in services {
        let prefix = if name == DEFAULT_SERVICE {
            "upstream".to_string()
        } else {
            format!("services.{name}")
        };
        if let Some(m) = &s.migration
            && m.user == s.runtime.user
        {
            return Err(invalid(format!(
                "{prefix}.runtime.user and {prefix}.migration.user are both {:?}: the runtime and migration roles must be different roles",
                m.user
            )));
        }
    }
    for (a, sa) in services {
        for (b, sb) in services {
            if let Some(m) = &sb.migration
                && a != b
                && m.user == sa.runtime.user
            {
                return Err(invalid(format!(
                    "the runtime role {:?} of service {a:?} is the migration role of service {b:?}",
                    m.user
                )));
            }
        }
    }
    Ok(())
}
