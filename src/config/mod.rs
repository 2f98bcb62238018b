//! Configuration: loading (defaults < TOML file < environment), secrets
//! (inline, `*_env`, `*_file`), the `PG_*` environment contract, and the
//! startup invariants that make the proxy refuse to start.
//!
//! [`Config::load`] is the only entry point. It returns a fully resolved,
//! validated [`Config`]: every secret read, every duration parsed, every TLS
//! file loaded. Anything wrong is one [`ConfigError`] whose message names the
//! keys involved, so an operator can fix it from one log line.
//!
//! Each section's file owns its raw (deserialised) shape, its keys'
//! defaults, and its conversion into the resolved type:
//! * `mod.rs` (this file): [`Config`], [`Sources`], [`ConfigError`], the
//!   order of the layers, the list of files a reload watches, and relative
//!   paths resolving from the config file's directory.
//! * `env.rs`: the environment layers: the `PG_*` contract,
//!   `ROLEGATE_RUNTIME_URL` / `ROLEGATE_MIGRATION_URL`, `ROLEGATE__…`.
//! * `secret.rs`: [`Secret`], resolving inline / `*_env` / `*_file`, and
//!   which layer's secret source wins.
//! * `listen.rs`: `[listen]`, `[listen.tls]` and `[admin]`.
//! * `upstream.rs`: `[upstream]`'s connection settings (TLS, CA, timeout).
//! * `services.rs`: the upstream role credentials (`[upstream.runtime]`,
//!   `[upstream.migration]`, `[[services]]`) and the role invariants.
//! * `clients.rs`: `[[clients]]`.
//! * `migration.rs`: `[migration]`, converted into
//!   [`crate::migration::MigrationConfig`].
//! * `policy.rs`: `[policy]`; `pool.rs`: `[pool]`.
//! * `cluster.rs`: `[cluster]` (peer id and peers for cancel forwarding).

mod clients;
mod cluster;
mod env;
mod listen;
mod migration;
mod policy;
mod pool;
mod secret;
mod services;
mod upstream;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::migration::{Access, MigrationConfig};

pub use clients::ClientEntry;
pub use cluster::{ClusterConfig, MAX_PEER_ID};
pub use listen::{ListenConfig, ListenTlsMode};
pub use policy::{PolicyConfig, PolicyMode, load_policy};
pub use pool::{PoolConfig, PoolMode};
pub use secret::Secret;
pub use services::{Credentials, ServiceCredentials};
pub use upstream::UpstreamConfig;

/// Where `serve` looks for its config when neither `--config` nor
/// `ROLEGATE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/rolegate.toml";

/// The service every client and credential pair belongs to unless
/// `[[services]]` says otherwise.
pub const DEFAULT_SERVICE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    File {
        path: PathBuf,
        source: ::config::ConfigError,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The raw (deserialised) shape. Unknown keys are errors: a typo in a
/// security proxy's config must not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    listen: listen::RawListen,
    admin: listen::RawAdmin,
    upstream: upstream::RawUpstream,
    clients: Vec<clients::RawClient>,
    migration: migration::RawMigration,
    policy: policy::RawPolicy,
    pool: pool::RawPool,
    services: Vec<services::RawService>,
    cluster: cluster::RawCluster,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub admin_address: String,
    pub upstream: UpstreamConfig,
    pub clients: HashMap<String, ClientEntry>,
    pub migration: MigrationConfig,
    pub policy: PolicyConfig,
    pub pool: PoolConfig,
    /// `[cluster]`: `None` on a lone instance.
    pub cluster: Option<ClusterConfig>,
    /// Credential pairs by service name; always contains at least the
    /// service of every client.
    pub services: BTreeMap<String, ServiceCredentials>,
    /// The parsed migration-access policy (keys, JWKS, windows).
    pub access: Arc<Access>,
    /// Every file this config was read from (the config file, `*_file`
    /// secrets, keys, TLS material): what a reload watches.
    pub files: Vec<PathBuf>,
}

/// Where the configuration comes from. Tests and `demo` pass their own
/// environment instead of the process's.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An explicit config file (`--config` / `ROLEGATE_CONFIG`): must exist.
    pub file: Option<PathBuf>,
    /// The environment to read (`ROLEGATE__…`, `PG_*`, `*_env` secrets).
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The process's own environment and the given (or default) file.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
        }
    }
}

impl Config {
    /// Load, resolve and validate. The order of precedence, lowest first:
    /// built-in defaults, the TOML file, `PG_*` fallbacks, `PG_RUNTIME_*` /
    /// `PG_MIGRATION_*`, `ROLEGATE_RUNTIME_URL` / `ROLEGATE_MIGRATION_URL`,
    /// then `ROLEGATE__SECTION__KEY`.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let file = config_file(sources)?;
        let mut raw = load_raw(file.as_deref(), &sources.env)?;
        let mut files: Vec<PathBuf> = file_paths(&mut raw)
            .into_iter()
            .map(|p| p.clone())
            .collect();
        files.extend(file);
        let mut config = resolve(raw, &sources.env)?;
        config.files = files;
        Ok(config)
    }
}

/// The explicit file, which must exist, or the default one if it exists.
fn config_file(sources: &Sources) -> Result<Option<PathBuf>, ConfigError> {
    match &sources.file {
        Some(path) if !path.exists() => Err(invalid(format!(
            "config file {} does not exist (from --config or ROLEGATE_CONFIG)",
            path.display()
        ))),
        Some(path) => Ok(Some(path.clone())),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            Ok(default.exists().then_some(default))
        }
    }
}

/// Layer defaults, the file and the environment, deserialise, then settle
/// which secret sources count and where relative paths point.
fn load_raw(file: Option<&Path>, env: &HashMap<String, String>) -> Result<RawConfig, ConfigError> {
    let layers = env::EnvLayers::new(env)?;
    let mut builder = ::config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(
            ::config::File::from(path)
                .format(::config::FileFormat::Toml)
                .required(true),
        );
    }
    let mut raw = layers
        .add_to(builder)
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map_err(|e| wrap_config_error(file, e))?;
    raw.upstream
        .apply_secret_precedence(&layers.highest_first());
    if let Some(dir) = file.and_then(Path::parent) {
        relative_to(&mut raw, dir);
    }
    Ok(raw)
}

/// Every file path the raw config names (TLS material, the upstream CA,
/// secret files, keys, JWKS files and their CAs): what a reload watches, and what resolves
/// relative to the config file's directory.
fn file_paths(raw: &mut RawConfig) -> Vec<&mut PathBuf> {
    let mut paths = Vec::new();
    if let Some(t) = &mut raw.listen.tls {
        paths.extend(t.cert_file.iter_mut());
        paths.extend(t.key_file.iter_mut());
    }
    paths.extend(raw.upstream.ca_file.iter_mut());
    let creds = [&mut raw.upstream.runtime, &mut raw.upstream.migration]
        .into_iter()
        .chain(
            raw.services
                .iter_mut()
                .flat_map(|s| [&mut s.runtime, &mut s.migration]),
        );
    for c in creds {
        paths.extend(c.password_file.iter_mut());
    }
    for c in &mut raw.clients {
        paths.extend(c.password_file.iter_mut());
    }
    for k in &mut raw.migration.keys {
        paths.extend(k.public_key_file.iter_mut());
    }
    for j in &mut raw.migration.jwks {
        paths.extend(j.file.iter_mut());
        paths.extend(j.ca_file.iter_mut());
    }
    paths
}

/// Relative paths in the config file are relative to the file's directory,
/// not the working directory (systemd starts services in `/`).
fn relative_to(raw: &mut RawConfig, dir: &Path) {
    for p in file_paths(raw) {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
}

fn wrap_config_error(file: Option<&Path>, e: ::config::ConfigError) -> ConfigError {
    match file {
        Some(path) => ConfigError::File {
            path: path.to_path_buf(),
            source: e,
        },
        None => invalid(format!("configuration: {e}")),
    }
}

/// Every section in turn; the order matters only where one section's
/// invariants name another's keys (clients need the migration login and
/// the services).
fn resolve(raw: RawConfig, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let listen = ListenConfig::try_from(&raw.listen)?;
    let upstream = UpstreamConfig::try_from(&raw.upstream)?;
    let services = services::resolve(&raw.upstream, &raw.services, env)?;
    let migration = MigrationConfig::try_from(&raw.migration)?;
    let clients = clients::resolve(&raw.clients, &migration.user, &services, env)?;
    let policy = PolicyConfig::from(&raw.policy);
    let pool = PoolConfig::try_from(&raw.pool)?;
    let cluster = cluster::resolve(&raw.cluster)?;
    let access = Access::new(&migration).map_err(|e| invalid(e.0))?;
    Ok(Config {
        listen,
        admin_address: raw.admin.address,
        upstream,
        clients,
        policy,
        pool,
        cluster,
        access: Arc::new(access),
        migration,
        services,
        files: Vec::new(),
    })
}

/// `deserialize_with` for a mode enum given by name (`tls = "verify-ca"`).
/// The config crate's own enum support reports a bad value as "enum X does
/// not have variant constructor y"; reading a string first lets serde say
/// "unknown variant `y`, expected one of `a`, `b`", and the config crate
/// appends "for key `section.key`".
fn by_name<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::IntoDeserializer;
    let name = String::deserialize(d)?;
    T::deserialize(name.as_str().into_deserializer())
}
