//! The environment layers above the config file, lowest first: the
//! widespread `PG_*` contract (`PG_HOST`… as fallbacks for both roles, then
//! `PG_RUNTIME_*` / `PG_MIGRATION_*`), the whole-URL variables
//! `ROLEGATE_RUNTIME_URL` / `ROLEGATE_MIGRATION_URL`, and finally
//! `ROLEGATE__SECTION__KEY` for any key.
//!
//! The contract and the URLs are translated into the config crate's
//! `SECTION__KEY` names, so both layers go through the same deserialiser as
//! the file and are validated the same way.

use std::collections::HashMap;

use ::config::Map;
use ::config::builder::{ConfigBuilder, DefaultState};

use super::{ConfigError, invalid};

/// The two environment layers, as sources for the config crate.
pub(super) struct EnvLayers {
    /// `PG_*` and the URL variables, as `UPSTREAM__ROLE__KEY` names.
    contract: Map<String, String>,
    /// Every `ROLEGATE__…` variable, as given.
    overrides: Map<String, String>,
}

/// `PG_{ROLE}_{suffix}` / `PG_{suffix}` → `upstream.{role}.{key}`. The first
/// suffix that is set wins.
const CONTRACT_KEYS: [(&[&str], &str); 5] = [
    (&["HOST"], "HOST"),
    (&["PORT"], "PORT"),
    (&["USER"], "USER"),
    (&["PASSWORD"], "PASSWORD"),
    (&["NAME", "DB_NAME"], "DATABASE"),
];

impl EnvLayers {
    pub(super) fn new(env: &HashMap<String, String>) -> Result<EnvLayers, ConfigError> {
        let mut contract = Map::new();
        for role in ["RUNTIME", "MIGRATION"] {
            pg_vars(env, role, &mut contract);
            // Most specific last, so the URL wins over `PG_*`.
            if let Some(url) = non_empty(env, &format!("ROLEGATE_{role}_URL")) {
                url_vars(&url, role, &mut contract)?;
            }
        }
        let overrides = env
            .iter()
            .filter(|(k, _)| k.starts_with("ROLEGATE__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(EnvLayers {
            contract,
            overrides,
        })
    }

    /// Add both layers above whatever `builder` already has.
    pub(super) fn add_to(
        &self,
        builder: ConfigBuilder<DefaultState>,
    ) -> ConfigBuilder<DefaultState> {
        builder
            .add_source(
                ::config::Environment::default()
                    .separator("__")
                    .source(Some(self.contract.clone())),
            )
            .add_source(
                ::config::Environment::with_prefix("ROLEGATE")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(self.overrides.clone())),
            )
    }

    /// The layers, highest first (for secret precedence).
    pub(super) fn highest_first(&self) -> [&Map<String, String>; 2] {
        [&self.overrides, &self.contract]
    }
}

fn non_empty(env: &HashMap<String, String>, name: &str) -> Option<String> {
    env.get(name).filter(|v| !v.is_empty()).cloned()
}

/// `PG_{role}_*`, else `PG_*`, for each contract key.
fn pg_vars(env: &HashMap<String, String>, role: &str, out: &mut Map<String, String>) {
    for (suffixes, key) in CONTRACT_KEYS {
        let specific = suffixes
            .iter()
            .find_map(|s| non_empty(env, &format!("PG_{role}_{s}")));
        let generic = suffixes
            .iter()
            .find_map(|s| non_empty(env, &format!("PG_{s}")));
        if let Some(v) = specific.or(generic) {
            out.insert(format!("UPSTREAM__{role}__{key}"), v);
        }
    }
}

/// `ROLEGATE_{role}_URL`: `postgres://user:pass@host:port/db`, each part
/// percent-decoded, each only when present.
fn url_vars(url: &str, role: &str, out: &mut Map<String, String>) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        invalid(format!(
            "ROLEGATE_{role}_URL is not a valid postgres:// URL: {e}"
        ))
    })?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(invalid(format!(
            "ROLEGATE_{role}_URL must start with postgres:// or postgresql://"
        )));
    }
    let mut set = |key: &str, value: String| {
        out.insert(format!("UPSTREAM__{role}__{key}"), value);
    };
    if let Some(host) = parsed.host_str() {
        set("HOST", host.to_string());
    }
    if let Some(port) = parsed.port() {
        set("PORT", port.to_string());
    }
    if !parsed.username().is_empty() {
        set("USER", percent_decode(parsed.username()));
    }
    if let Some(pw) = parsed.password() {
        set("PASSWORD", percent_decode(pw));
    }
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() {
        set("DATABASE", percent_decode(db));
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
