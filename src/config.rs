//! Configuration: loading (defaults < TOML file < environment), secrets
//! (inline, `*_env`, `*_file`), the `PG_*` environment contract, and the
//! startup invariants that make the proxy refuse to start.
//!
//! [`Config::load`] is the only entry point. It returns a fully resolved,
//! validated [`Config`]: every secret read, every duration parsed, every TLS
//! file loaded. Anything wrong is one [`ConfigError`] whose message names the
//! keys involved, so an operator can fix it from one log line.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::client_auth::ScramVerifier;
use crate::migration::{Environment, JwksSource, KeySource, MigrationConfig, Window};
use crate::policy::Switches;
use crate::tls::{self, TlsError, UpstreamTlsMode};

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
        source: config::ConfigError,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// A secret value. Its `Debug` never shows the value, so a config dump in a
/// log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

// ---------------------------------------------------------------------------
// Raw (deserialised) shape. Unknown keys are errors: a typo in a security
// proxy's config must not silently fall back to a default.
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    listen: RawListen,
    admin: RawAdmin,
    upstream: RawUpstream,
    clients: Vec<RawClient>,
    migration: RawMigration,
    policy: RawPolicy,
    pool: RawPool,
    services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPool {
    enabled: bool,
    max_idle: usize,
    idle_timeout: String,
    max_lifetime: String,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            enabled: true,
            max_idle: 100,
            idle_timeout: "5m".into(),
            max_lifetime: "1h".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawListen {
    address: String,
    max_connections: usize,
    startup_timeout: String,
    idle_timeout: String,
    shutdown_timeout: String,
    max_message_size: String,
    tls: Option<RawListenTls>,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            address: "127.0.0.1:6432".into(),
            max_connections: 10_000,
            startup_timeout: "10s".into(),
            idle_timeout: "0s".into(),
            shutdown_timeout: "30s".into(),
            max_message_size: "64MiB".into(),
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenTls {
    #[serde(default = "default_listen_tls_mode")]
    mode: String,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

fn default_listen_tls_mode() -> String {
    "allow".into()
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAdmin {
    address: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: "127.0.0.1:9187".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawUpstream {
    host: String,
    port: u16,
    database: Option<String>,
    tls: String,
    ca_file: Option<PathBuf>,
    strict: bool,
    connect_timeout: String,
    runtime: RawCredentials,
    migration: RawCredentials,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            host: "127.0.0.1".into(),
            port: 5432,
            database: None,
            tls: "prefer".into(),
            ca_file: None,
            strict: false,
            connect_timeout: "5s".into(),
            runtime: RawCredentials::default(),
            migration: RawCredentials::default(),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCredentials {
    user: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// Per-credential endpoint overrides (the `PG_RUNTIME_HOST` contract lets
    /// the two roles live behind different endpoints).
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    password_scram: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    service: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMigration {
    environment: String,
    user: String,
    grace: String,
    leeway: String,
    keys: Vec<RawKey>,
    jwks: Vec<RawJwks>,
    windows: Vec<RawWindow>,
}

impl Default for RawMigration {
    fn default() -> Self {
        RawMigration {
            environment: "staging".into(),
            user: "migrator".into(),
            grace: "5m".into(),
            leeway: "30s".into(),
            keys: Vec::new(),
            jwks: Vec::new(),
            windows: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    kid: Option<String>,
    public_key: Option<String>,
    public_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwks {
    file: PathBuf,
    issuer: String,
    audience: Option<String>,
    subject: Option<String>,
    #[serde(default)]
    confirms_prod: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: Option<String>,
    end: Option<String>,
    days: Option<Vec<String>>,
    from: Option<String>,
    to: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPolicy {
    mode: String,
    allow_temp_tables: bool,
    allow_truncate: bool,
    allow_maintenance: bool,
    allow_call: Vec<String>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            mode: "enforce".into(),
            allow_temp_tables: false,
            allow_truncate: false,
            allow_maintenance: false,
            allow_call: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    runtime: RawCredentials,
    #[serde(default)]
    migration: RawCredentials,
}

// ---------------------------------------------------------------------------
// Resolved configuration.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub admin_address: String,
    pub upstream: UpstreamConfig,
    pub clients: HashMap<String, ClientEntry>,
    pub migration: MigrationConfig,
    pub policy: PolicyConfig,
    pub pool: PoolConfig,
    /// Credential pairs by service name; always contains at least the
    /// service of every client.
    pub services: BTreeMap<String, ServiceCredentials>,
    /// The parsed migration-access policy (keys, JWKS, windows).
    pub access: Arc<crate::migration::Access>,
    /// Every file this config was read from (the config file, `*_file`
    /// secrets, keys, TLS material): what a reload watches.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub address: String,
    pub max_connections: usize,
    pub startup_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    /// Largest single frontend message the proxy will buffer for inspection.
    pub max_message_size: usize,
    pub tls_mode: ListenTlsMode,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// `[pool]`: reuse of runtime upstream sessions after their client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub enabled: bool,
    /// Idle upstream connections kept per service.
    pub max_idle: usize,
    /// An idle upstream connection unused this long is closed.
    pub idle_timeout: Duration,
    /// An upstream connection this old is closed instead of reused.
    pub max_lifetime: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTlsMode {
    Disable,
    Allow,
    Require,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub tls_mode: UpstreamTlsMode,
    pub ca_file: Option<PathBuf>,
    pub tls: Arc<tls::UpstreamTls>,
    pub strict: bool,
    pub connect_timeout: Duration,
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

#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub name: String,
    pub verifier: ScramVerifier,
    pub service: String,
    /// A digest of the configured secret (verifier or password), so a
    /// reload can tell whether it changed without keeping the secret.
    pub secret_digest: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    #[default]
    Enforce,
    Report,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    pub allow_temp_tables: bool,
    pub allow_truncate: bool,
    pub allow_maintenance: bool,
    pub allow_call: Vec<String>,
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
        let (mut raw, file) = load_raw(sources)?;
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

/// Every file path the raw config names (TLS material, the upstream CA,
/// secret files, keys, JWKS): what a reload watches, and what resolves
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
        paths.push(&mut j.file);
    }
    paths
}

fn load_raw(sources: &Sources) -> Result<(RawConfig, Option<PathBuf>), ConfigError> {
    let mut builder = config::Config::builder();
    let file = match &sources.file {
        Some(path) => {
            if !path.exists() {
                return Err(invalid(format!(
                    "config file {} does not exist (from --config or ROLEGATE_CONFIG)",
                    path.display()
                )));
            }
            Some(path.clone())
        }
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            default.exists().then_some(default)
        }
    };
    if let Some(path) = &file {
        builder = builder.add_source(
            config::File::from(path.as_path())
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let pg_layer = pg_env_layer(&sources.env)?;
    builder = builder.add_source(
        config::Environment::default()
            .separator("__")
            .source(Some(pg_layer.clone())),
    );
    let rolegate_env: config::Map<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("ROLEGATE__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("ROLEGATE")
            .prefix_separator("__")
            .separator("__")
            .source(Some(rolegate_env.clone())),
    );
    let built = builder.build().map_err(|e| wrap_config_error(&file, e))?;
    let mut raw = built
        .try_deserialize::<RawConfig>()
        .map_err(|e| wrap_config_error(&file, e))?;
    secret_precedence(&mut raw, &[&rolegate_env, &pg_layer]);
    if let Some(dir) = file.as_deref().and_then(Path::parent) {
        relative_to(&mut raw, dir);
    }
    Ok((raw, file))
}

/// A higher layer's secret replaces a lower layer's *source* for the same
/// upstream credential: `PG_RUNTIME_PASSWORD` in the environment wins over
/// `password_file` in the file, rather than being "two sources". Two
/// sources within one layer stay an error (see `secret`). `layers` are the
/// environment layers, highest first.
fn secret_precedence(raw: &mut RawConfig, layers: &[&config::Map<String, String>]) {
    const FIELDS: [&str; 3] = ["PASSWORD", "PASSWORD_ENV", "PASSWORD_FILE"];
    let creds = [
        ("RUNTIME", &mut raw.upstream.runtime),
        ("MIGRATION", &mut raw.upstream.migration),
    ];
    for (role, c) in creds {
        let set_in = |layer: &config::Map<String, String>| -> Vec<&str> {
            FIELDS
                .into_iter()
                .filter(|f| {
                    let key = format!("UPSTREAM__{role}__{f}");
                    layer.keys().any(|k| {
                        let k = k.strip_prefix("ROLEGATE__").unwrap_or(k);
                        k.eq_ignore_ascii_case(&key)
                    })
                })
                .collect()
        };
        let Some(top) = layers.iter().map(|l| set_in(l)).find(|s| !s.is_empty()) else {
            continue;
        };
        if !top.contains(&"PASSWORD") {
            c.password = None;
        }
        if !top.contains(&"PASSWORD_ENV") {
            c.password_env = None;
        }
        if !top.contains(&"PASSWORD_FILE") {
            c.password_file = None;
        }
    }
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

fn wrap_config_error(file: &Option<PathBuf>, e: config::ConfigError) -> ConfigError {
    match file {
        Some(path) => ConfigError::File {
            path: path.clone(),
            source: e,
        },
        None => invalid(format!("configuration: {e}")),
    }
}

/// Translate the widespread `PG_*` env contract and the URL variables into
/// config keys (as `SECTION__KEY` names), most specific last so it wins.
fn pg_env_layer(env: &HashMap<String, String>) -> Result<config::Map<String, String>, ConfigError> {
    let mut out = config::Map::new();
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    for role in ["runtime", "migration"] {
        let upper = role.to_ascii_uppercase();
        for (suffixes, key) in [
            (&["HOST"][..], "host"),
            (&["PORT"][..], "port"),
            (&["USER"][..], "user"),
            (&["PASSWORD"][..], "password"),
            (&["NAME", "DB_NAME"][..], "database"),
        ] {
            let specific = suffixes
                .iter()
                .find_map(|s| get(&format!("PG_{upper}_{s}")));
            let generic = suffixes.iter().find_map(|s| get(&format!("PG_{s}")));
            if let Some(v) = specific.or(generic) {
                out.insert(format!("UPSTREAM__{upper}__{}", key.to_uppercase()), v);
            }
        }
        if let Some(url) = get(&format!("ROLEGATE_{upper}_URL")) {
            let parsed = url::Url::parse(&url).map_err(|e| {
                invalid(format!(
                    "ROLEGATE_{upper}_URL is not a valid postgres:// URL: {e}"
                ))
            })?;
            if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                return Err(invalid(format!(
                    "ROLEGATE_{upper}_URL must start with postgres:// or postgresql://"
                )));
            }
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            if let Some(host) = parsed.host_str() {
                out.insert(format!("UPSTREAM__{upper}__HOST"), host.to_string());
            }
            if let Some(port) = parsed.port() {
                out.insert(format!("UPSTREAM__{upper}__PORT"), port.to_string());
            }
            if !parsed.username().is_empty() {
                out.insert(
                    format!("UPSTREAM__{upper}__USER"),
                    decode(parsed.username()),
                );
            }
            if let Some(pw) = parsed.password() {
                out.insert(format!("UPSTREAM__{upper}__PASSWORD"), decode(pw));
            }
            let db = parsed.path().trim_start_matches('/');
            if !db.is_empty() {
                out.insert(format!("UPSTREAM__{upper}__DATABASE"), decode(db));
            }
        }
    }
    Ok(out)
}

/// `[policy]`, validated.
fn policy_config(p: &RawPolicy) -> Result<PolicyConfig, ConfigError> {
    Ok(PolicyConfig {
        mode: match p.mode.as_str() {
            "enforce" => PolicyMode::Enforce,
            "report" => PolicyMode::Report,
            other => {
                return Err(invalid(format!(
                    "policy.mode = {other:?}: expected \"enforce\" or \"report\""
                )));
            }
        },
        allow_temp_tables: p.allow_temp_tables,
        allow_truncate: p.allow_truncate,
        allow_maintenance: p.allow_maintenance,
        allow_call: p.allow_call.clone(),
    })
}

/// Only the `[policy]` table of a config file (for `rolegate explain`,
/// which needs no secrets or upstream): the rest of the file is not read.
pub fn load_policy(path: &Path) -> Result<PolicyConfig, ConfigError> {
    #[derive(Deserialize)]
    struct OnlyPolicy {
        #[serde(default)]
        policy: RawPolicy,
    }
    let only: OnlyPolicy = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| wrap_config_error(&Some(path.to_path_buf()), e))?;
    policy_config(&only.policy)
}

impl From<&PolicyConfig> for Switches {
    fn from(p: &PolicyConfig) -> Self {
        Switches {
            allow_temp_tables: p.allow_temp_tables,
            allow_truncate: p.allow_truncate,
            allow_maintenance: p.allow_maintenance,
            allow_call: p.allow_call.clone(),
        }
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(format!(
            "{key} = {value:?} is not a duration like \"30s\": {e}"
        ))
    })
}

fn byte_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("GiB") {
        (n, 1usize << 30)
    } else if let Some(n) = v.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = v.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (v, 1)
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 1024 && *n < (1 << 30))
        .ok_or_else(|| {
            invalid(format!(
                "{key} = {value:?} must be a size between 1KiB and 1GiB, like \"64MiB\""
            ))
        })
}

/// Resolve a secret given inline, by env var name or by file path. Exactly
/// one of the three may be set.
fn secret(
    key: &str,
    inline: &Option<String>,
    env_name: &Option<String>,
    file: &Option<PathBuf>,
    env: &HashMap<String, String>,
) -> Result<Option<Secret>, ConfigError> {
    let set = [inline.is_some(), env_name.is_some(), file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        return Err(invalid(format!(
            "{key}: set only one of password, password_env, password_file"
        )));
    }
    if let Some(v) = inline {
        return Ok(Some(Secret::new(v.clone())));
    }
    if let Some(name) = env_name {
        return match env.get(name) {
            Some(v) => Ok(Some(Secret::new(v.clone()))),
            None => Err(invalid(format!(
                "{key}_env names the environment variable {name}, which is not set"
            ))),
        };
    }
    if let Some(path) = file {
        return read_secret_file(&format!("{key}_file"), path).map(Some);
    }
    Ok(None)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        // A trailing newline from `echo > file` or a k8s secret is not part
        // of the password.
        .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
        .map_err(|e| invalid(format!("{key} = {}: cannot read: {e}", path.display())))
}

fn read_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("{key} = {}: cannot read: {e}", path.display())))
}

fn credentials(
    key: &str,
    raw: &RawCredentials,
    upstream: &RawUpstream,
    env: &HashMap<String, String>,
) -> Result<Option<Credentials>, ConfigError> {
    let password = secret(
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

fn resolve(raw: RawConfig, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    // [listen]
    let tls_raw = raw.listen.tls.as_ref();
    let tls_mode = match tls_raw.map(|t| t.mode.as_str()) {
        None | Some("disable") => ListenTlsMode::Disable,
        Some("allow") => ListenTlsMode::Allow,
        Some("require") => ListenTlsMode::Require,
        Some(other) => {
            return Err(invalid(format!(
                "listen.tls.mode = {other:?}: expected \"disable\", \"allow\" or \"require\""
            )));
        }
    };
    let server_tls = match (tls_mode, tls_raw) {
        (ListenTlsMode::Disable, _) | (_, None) => None,
        (_, Some(t)) => {
            let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
                return Err(invalid(
                    "listen.tls.cert_file and listen.tls.key_file are required when listen.tls.mode is \"allow\" or \"require\"",
                ));
            };
            Some(tls::server_config(cert, key).map_err(|e: TlsError| {
                invalid(format!(
                    "listen.tls.cert_file / listen.tls.key_file ({}, {}): {e}",
                    cert.display(),
                    key.display()
                ))
            })?)
        }
    };
    if raw.listen.max_connections == 0 {
        return Err(invalid("listen.max_connections must be at least 1"));
    }
    let idle = duration("listen.idle_timeout", &raw.listen.idle_timeout)?;
    let listen = ListenConfig {
        address: raw.listen.address.clone(),
        max_connections: raw.listen.max_connections,
        startup_timeout: duration("listen.startup_timeout", &raw.listen.startup_timeout)?,
        idle_timeout: (!idle.is_zero()).then_some(idle),
        shutdown_timeout: duration("listen.shutdown_timeout", &raw.listen.shutdown_timeout)?,
        max_message_size: byte_size("listen.max_message_size", &raw.listen.max_message_size)?,
        tls_mode,
        tls: server_tls,
    };

    // [upstream]
    let up = &raw.upstream;
    let upstream_tls_mode: UpstreamTlsMode = up.tls.parse().map_err(|_| {
        invalid(format!(
            "upstream.tls = {:?}: expected disable, prefer, require, verify-ca or verify-full",
            up.tls
        ))
    })?;
    if matches!(
        upstream_tls_mode,
        UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull
    ) && up.ca_file.is_none()
    {
        return Err(invalid(format!(
            "upstream.tls = {:?} needs upstream.ca_file (the CA that signed the server's certificate)",
            up.tls
        )));
    }
    let upstream_tls =
        tls::UpstreamTls::new(upstream_tls_mode, up.ca_file.as_deref()).map_err(|e| {
            invalid(format!(
                "upstream.ca_file = {}: {e}",
                up.ca_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
    let upstream = UpstreamConfig {
        tls_mode: upstream_tls_mode,
        ca_file: up.ca_file.clone(),
        tls: Arc::new(upstream_tls),
        strict: up.strict,
        connect_timeout: duration("upstream.connect_timeout", &up.connect_timeout)?,
    };

    // Services: the implicit "default" from [upstream.runtime]/[upstream.migration],
    // plus every [[services]] entry.
    let mut services = BTreeMap::new();
    let default_runtime = credentials("upstream.runtime", &up.runtime, up, env)?;
    let default_migration = credentials("upstream.migration", &up.migration, up, env)?;
    if let Some(runtime) = default_runtime {
        services.insert(
            DEFAULT_SERVICE.to_string(),
            ServiceCredentials {
                runtime,
                migration: default_migration,
            },
        );
    } else if default_migration.is_some() {
        return Err(invalid(
            "upstream.runtime.user is missing (set it, PG_RUNTIME_USER or ROLEGATE_RUNTIME_URL) while upstream.migration is configured",
        ));
    }
    for (i, s) in raw.services.iter().enumerate() {
        let key = format!("services[{i}] ({})", s.name);
        if s.name.is_empty() {
            return Err(invalid(format!("services[{i}].name is empty")));
        }
        if services.contains_key(&s.name) {
            return Err(invalid(format!(
                "services[{i}].name = {:?} is defined twice (\"default\" is the [upstream.runtime] pair)",
                s.name
            )));
        }
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
    for (name, s) in &services {
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
    // A runtime role of one service must not be another service's migrator.
    for (a, sa) in &services {
        for (b, sb) in &services {
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

    // [migration]
    let m = &raw.migration;
    let environment = match m.environment.as_str() {
        "staging" => Environment::Staging,
        "prod" => Environment::Prod,
        "replica" => Environment::Replica,
        other => {
            return Err(invalid(format!(
                "migration.environment = {other:?}: expected \"staging\", \"prod\" or \"replica\""
            )));
        }
    };
    if m.user.is_empty() {
        return Err(invalid("migration.user is empty"));
    }
    let mut keys = Vec::new();
    for (i, k) in m.keys.iter().enumerate() {
        let material = match (&k.public_key, &k.public_key_file) {
            (Some(v), None) => v.clone(),
            (None, Some(path)) => read_file(&format!("migration.keys[{i}].public_key_file"), path)?,
            _ => {
                return Err(invalid(format!(
                    "migration.keys[{i}]: set exactly one of public_key, public_key_file"
                )));
            }
        };
        keys.push(KeySource {
            kid: k.kid.clone(),
            material,
        });
    }
    let mut jwks = Vec::new();
    for (i, j) in m.jwks.iter().enumerate() {
        jwks.push(JwksSource {
            file: j.file.clone(),
            json: read_file(&format!("migration.jwks[{i}].file"), &j.file)?,
            issuer: j.issuer.clone(),
            audience: j.audience.clone(),
            subject: j.subject.clone(),
            confirms_prod: j.confirms_prod,
        });
    }
    let windows = m
        .windows
        .iter()
        .enumerate()
        .map(|(i, w)| window(i, w))
        .collect::<Result<Vec<_>, _>>()?;
    let migration = MigrationConfig {
        environment,
        user: m.user.clone(),
        grace: duration("migration.grace", &m.grace)?,
        leeway: duration("migration.leeway", &m.leeway)?,
        keys,
        jwks,
        windows,
    };

    // [[clients]]
    let mut clients = HashMap::new();
    for (i, c) in raw.clients.iter().enumerate() {
        let key = format!("clients[{i}]");
        if c.name.is_empty() {
            return Err(invalid(format!("{key}.name is empty")));
        }
        if c.name == migration.user {
            return Err(invalid(format!(
                "{key}.name = {:?} is the migration login (migration.user): a runtime client may not share its name",
                c.name
            )));
        }
        let (verifier, secret_digest) = match (&c.password_scram, &c.password_env, &c.password_file) {
            (Some(v), None, None) => (
                ScramVerifier::parse(v).map_err(|e| {
                    invalid(format!(
                        "{key}.password_scram is not a SCRAM-SHA-256 verifier ({e}); make one with `rolegate scram-hash`"
                    ))
                })?,
                digest(v.as_bytes()),
            ),
            (None, Some(_), None) | (None, None, Some(_)) => {
                let pw = secret(&format!("{key}.password"), &None, &c.password_env, &c.password_file, env)?
                    .ok_or_else(|| invalid(format!("{key}: no password")))?;
                (ScramVerifier::from_password(pw.expose()), digest(pw.expose().as_bytes()))
            }
            _ => {
                return Err(invalid(format!(
                    "{key} ({}): set exactly one of password_scram, password_env, password_file",
                    c.name
                )));
            }
        };
        let service = c.service.clone().unwrap_or_else(|| DEFAULT_SERVICE.into());
        if !services.contains_key(&service) {
            return Err(invalid(format!(
                "{key}.service = {service:?} is not a configured service (known: {})",
                services.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if clients
            .insert(
                c.name.clone(),
                ClientEntry {
                    name: c.name.clone(),
                    verifier,
                    service,
                    secret_digest,
                },
            )
            .is_some()
        {
            return Err(invalid(format!(
                "{key}.name = {:?} is defined twice",
                c.name
            )));
        }
    }

    // [policy]
    let policy = policy_config(&raw.policy)?;

    let pool = PoolConfig {
        enabled: raw.pool.enabled && raw.pool.max_idle > 0,
        max_idle: raw.pool.max_idle,
        idle_timeout: duration("pool.idle_timeout", &raw.pool.idle_timeout)?,
        max_lifetime: duration("pool.max_lifetime", &raw.pool.max_lifetime)?,
    };
    Ok(Config {
        listen,
        pool,
        admin_address: raw.admin.address,
        upstream,
        clients,
        policy,
        access: Arc::new(crate::migration::Access::new(&migration).map_err(|e| invalid(e.0))?),
        migration,
        services,
        files: Vec::new(),
    })
}

fn window(i: usize, w: &RawWindow) -> Result<Window, ConfigError> {
    let key = format!("migration.windows[{i}]");
    let absolute = w.start.is_some() || w.end.is_some();
    let weekly = w.days.is_some() || w.from.is_some() || w.to.is_some() || w.timezone.is_some();
    match (absolute, weekly) {
        (true, true) => Err(invalid(format!(
            "{key} mixes an absolute window (start/end) with a weekly one (days/from/to/timezone); split it into two windows"
        ))),
        (false, false) => Err(invalid(format!(
            "{key} is empty: set start/end (RFC 3339) or days/from/to/timezone"
        ))),
        (true, false) => {
            let parse = |name: &str, v: &Option<String>| -> Result<jiff::Timestamp, ConfigError> {
                let v = v
                    .as_deref()
                    .ok_or_else(|| invalid(format!("{key}.{name} is missing")))?;
                v.parse::<jiff::Timestamp>().map_err(|e| {
                    invalid(format!(
                        "{key}.{name} = {v:?} is not an RFC 3339 time like \"2026-11-29T02:00:00Z\": {e}"
                    ))
                })
            };
            let start = parse("start", &w.start)?;
            let end = parse("end", &w.end)?;
            if end <= start {
                return Err(invalid(format!(
                    "{key}: end ({end}) is not after start ({start})"
                )));
            }
            Ok(Window::Absolute { start, end })
        }
        (false, true) => {
            let days_raw = w
                .days
                .as_ref()
                .filter(|d| !d.is_empty())
                .ok_or_else(|| invalid(format!("{key}.days is missing or empty")))?;
            let mut days = Vec::new();
            for d in days_raw {
                use jiff::civil::Weekday::*;
                let day = match d.to_ascii_lowercase().as_str() {
                    "mon" | "monday" => Monday,
                    "tue" | "tuesday" => Tuesday,
                    "wed" | "wednesday" => Wednesday,
                    "thu" | "thursday" => Thursday,
                    "fri" | "friday" => Friday,
                    "sat" | "saturday" => Saturday,
                    "sun" | "sunday" => Sunday,
                    _ => {
                        return Err(invalid(format!(
                            "{key}.days: {d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"
                        )));
                    }
                };
                if !days.contains(&day) {
                    days.push(day);
                }
            }
            let time = |name: &str, v: &Option<String>| -> Result<jiff::civil::Time, ConfigError> {
                let v = v
                    .as_deref()
                    .ok_or_else(|| invalid(format!("{key}.{name} is missing")))?;
                v.parse::<jiff::civil::Time>().map_err(|e| {
                    invalid(format!(
                        "{key}.{name} = {v:?} is not a time like \"02:00\": {e}"
                    ))
                })
            };
            let from = time("from", &w.from)?;
            let to = time("to", &w.to)?;
            if from == to {
                return Err(invalid(format!(
                    "{key}: from and to are both {from}; a window must have a length"
                )));
            }
            let tz_name = w.timezone.as_deref().ok_or_else(|| {
                invalid(format!(
                    "{key}.timezone is missing (e.g. \"UTC\" or \"Europe/Berlin\")"
                ))
            })?;
            let timezone = jiff::tz::TimeZone::get(tz_name).map_err(|e| {
                invalid(format!(
                    "{key}.timezone = {tz_name:?} is not an IANA time zone: {e}"
                ))
            })?;
            Ok(Window::Weekly {
                days,
                from,
                to,
                timezone,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            file: None,
            env: env(pairs),
        })
    }

    #[test]
    fn env_contract_alone_configures_a_sidecar() {
        let c = load_env(&[
            ("PG_HOST", "db.internal"),
            ("PG_PORT", "6543"),
            ("PG_NAME", "app"),
            ("PG_RUNTIME_USER", "app_user"),
            ("PG_RUNTIME_PASSWORD", "1e5"),
            ("PG_MIGRATION_USER", "app_migrator"),
            ("PG_MIGRATION_PASSWORD", "m"),
            ("PG_MIGRATION_HOST", "primary.internal"),
        ])
        .expect("loads");
        let s = &c.services[DEFAULT_SERVICE];
        assert_eq!(s.runtime.host, "db.internal");
        assert_eq!(s.runtime.port, 6543);
        assert_eq!(s.runtime.database, "app");
        // Numbers-looking passwords stay strings.
        assert_eq!(s.runtime.password.as_ref().map(Secret::expose), Some("1e5"));
        let m = s.migration.as_ref().expect("migration");
        assert_eq!(m.host, "primary.internal");
        assert_eq!(m.user, "app_migrator");
    }

    #[test]
    fn url_and_rolegate_keys_take_precedence() {
        let c = load_env(&[
            ("PG_RUNTIME_USER", "ignored"),
            (
                "ROLEGATE_RUNTIME_URL",
                "postgres://app%40user:p%2Fw@h1:5433/appdb",
            ),
            ("ROLEGATE__UPSTREAM__RUNTIME__HOST", "h2"),
        ])
        .expect("loads");
        let r = &c.services[DEFAULT_SERVICE].runtime;
        assert_eq!(r.user, "app@user");
        assert_eq!(r.password.as_ref().map(Secret::expose), Some("p/w"));
        assert_eq!(r.host, "h2");
        assert_eq!(r.port, 5433);
        assert_eq!(r.database, "appdb");
    }

    #[test]
    fn same_role_for_runtime_and_migration_is_refused() {
        let e = load_env(&[("PG_NAME", "app"), ("PG_USER", "app"), ("PG_PASSWORD", "x")])
            .expect_err("must refuse");
        let msg = e.to_string();
        assert!(msg.contains("upstream.runtime.user"), "{msg}");
        assert!(msg.contains("upstream.migration.user"), "{msg}");
    }

    #[test]
    fn missing_secret_env_is_named() {
        let e = load_env(&[
            ("PG_NAME", "app"),
            ("ROLEGATE__UPSTREAM__RUNTIME__USER", "u"),
            ("ROLEGATE__UPSTREAM__RUNTIME__PASSWORD_ENV", "NOPE_NOT_SET"),
        ])
        .expect_err("must refuse");
        assert!(e.to_string().contains("NOPE_NOT_SET"), "{e}");
    }

    #[test]
    fn windows_are_validated() {
        let ok = RawWindow {
            start: None,
            end: None,
            days: Some(vec!["sat".into(), "Sunday".into()]),
            from: Some("02:00".into()),
            to: Some("04:00".into()),
            timezone: Some("Europe/Berlin".into()),
        };
        assert!(window(0, &ok).is_ok());
        let mixed = RawWindow {
            start: Some("2026-11-29T02:00:00Z".into()),
            ..ok
        };
        assert!(window(0, &mixed).is_err());
        let backwards = RawWindow {
            start: Some("2026-11-29T04:00:00Z".into()),
            end: Some("2026-11-29T02:00:00Z".into()),
            days: None,
            from: None,
            to: None,
            timezone: None,
        };
        assert!(
            window(1, &backwards)
                .unwrap_err()
                .to_string()
                .contains("windows[1]")
        );
    }

    #[test]
    fn example_config_documents_only_real_keys() {
        // Every key in the reference file must be one the loader knows
        // (unknown keys are errors), and its values must resolve.
        let text = include_str!("../config/rolegate.example.toml");
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("example parses");
        assert_eq!(raw.clients.len(), 2);
        assert_eq!(raw.migration.windows.len(), 2);
        for (i, w) in raw.migration.windows.iter().enumerate() {
            window(i, w).expect("example window is valid");
        }
        assert!(
            ScramVerifier::parse(raw.clients[0].password_scram.as_deref().unwrap_or("")).is_ok()
        );
    }

    /// A config file in its own directory, loaded from elsewhere.
    fn load_file(
        text: &str,
        files: &[(&str, &str)],
        pairs: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("dir");
        for (name, body) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&path, body).expect("write");
        }
        let config = dir.path().join("rolegate.toml");
        std::fs::write(&config, text).expect("config");
        Config::load(&Sources {
            file: Some(config),
            env: env(pairs),
        })
    }

    const FILE_SECRETS: &str = r#"
[upstream]
database = "app"
[upstream.runtime]
user = "app_user"
password_file = "secrets/runtime"
[upstream.migration]
user = "app_migrator"
password_env = "MIGRATOR_PW"
"#;

    #[test]
    fn relative_paths_resolve_from_the_config_directory() {
        let c = load_file(
            FILE_SECRETS,
            &[("secrets/runtime", "from-file\n")],
            &[("MIGRATOR_PW", "m")],
        )
        .expect("a relative password_file next to the config loads");
        let s = &c.services[DEFAULT_SERVICE];
        assert_eq!(
            s.runtime.password.as_ref().map(Secret::expose),
            Some("from-file")
        );
    }

    #[test]
    fn a_higher_layer_secret_replaces_the_lower_source() {
        // The file says password_file / password_env; the environment's
        // PG_*_PASSWORD replaces them (no "set only one" error).
        let c = load_file(
            FILE_SECRETS,
            &[],
            &[
                ("PG_RUNTIME_PASSWORD", "from-env"),
                ("PG_MIGRATION_PASSWORD", "mig-env"),
            ],
        )
        .expect("env replaces the file's secret source");
        let s = &c.services[DEFAULT_SERVICE];
        assert_eq!(
            s.runtime.password.as_ref().map(Secret::expose),
            Some("from-env")
        );
        let m = s.migration.as_ref().expect("migration");
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("mig-env"));
        // ROLEGATE__ is higher still.
        let c = load_file(
            FILE_SECRETS,
            &[("other", "from-rolegate-file")],
            &[
                ("PG_RUNTIME_PASSWORD", "from-env"),
                ("MIGRATOR_PW", "m"),
                ("ROLEGATE__UPSTREAM__RUNTIME__PASSWORD_FILE", "other"),
            ],
        )
        .expect("ROLEGATE__ replaces PG_*");
        let s = &c.services[DEFAULT_SERVICE];
        assert_eq!(
            s.runtime.password.as_ref().map(Secret::expose),
            Some("from-rolegate-file")
        );
        // Two sources within one layer stay an error naming both.
        let e = load_file(
            "[upstream]\ndatabase = \"app\"\n[upstream.runtime]\nuser = \"u\"\npassword = \"a\"\npassword_file = \"b\"\n",
            &[],
            &[],
        )
        .expect_err("two sources in the file");
        let text = e.to_string();
        assert!(text.contains("upstream.runtime.password"), "{text}");
        assert!(text.contains("password_file"), "{text}");
    }

    #[test]
    fn client_secret_errors_name_the_key() {
        let text = format!(
            "{FILE_SECRETS}\n[[clients]]\nname = \"a\"\npassword_env = \"A\"\n[[clients]]\nname = \"b\"\npassword_file = \"missing\"\n"
        );
        let e = load_file(
            &text,
            &[("secrets/runtime", "x")],
            &[("MIGRATOR_PW", "m"), ("A", "a")],
        )
        .expect_err("missing client secret file");
        let text = e.to_string();
        assert!(text.contains("clients[1].password_file"), "{text}");
        assert!(!text.contains("]_file"), "{text}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(byte_size("k", "64MiB").ok(), Some(64 << 20));
        assert!(byte_size("k", "2GiB").is_err());
        assert!(byte_size("k", "lots").is_err());
    }
}
