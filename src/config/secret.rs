//! Secrets: the [`Secret`] type, which never prints its value; resolving
//! one secret from its inline, `*_env` (a variable name) or `*_file` (a
//! path) source; and the precedence between layers: a higher layer's secret
//! replaces a lower layer's source, while two sources within one layer are
//! an error naming both.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ::config::Map;

use super::{ConfigError, invalid};

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

/// Resolve a secret given inline, by env var name or by file path. At most
/// one of the three may be set; none is `Ok(None)`. `key` is the inline
/// key's name (`upstream.runtime.password`); the others are named
/// `{key}_env` / `{key}_file` in messages.
pub(super) fn resolve(
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
        return read_file(&format!("{key}_file"), path).map(Some);
    }
    Ok(None)
}

/// A secret file's content. `key` names the `*_file` key for messages.
pub(super) fn read_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        // A trailing newline from `echo > file` or a k8s secret is not part
        // of the password.
        .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
        .map_err(|e| invalid(format!("{key} = {}: cannot read: {e}", path.display())))
}

/// One credential's three secret sources, as the merged layers left them.
pub(super) struct SecretSources<'a> {
    pub inline: &'a mut Option<String>,
    pub env: &'a mut Option<String>,
    pub file: &'a mut Option<PathBuf>,
}

/// A higher layer's secret replaces a lower layer's *source* for the same
/// credential: `PG_RUNTIME_PASSWORD` in the environment wins over
/// `password_file` in the file, rather than being "two sources". Only the
/// sources the highest setting layer gives are kept, so two sources within
/// one layer stay an error (see [`resolve`]). `prefix` is the credential's
/// env key (`UPSTREAM__RUNTIME`); `layers` are the environment layers,
/// highest first. The merged config cannot tell layers apart, hence the
/// second look at the environment.
pub(super) fn keep_highest_layer(
    sources: SecretSources<'_>,
    prefix: &str,
    layers: &[&Map<String, String>],
) {
    let set_in = |layer: &Map<String, String>| -> Vec<&str> {
        ["PASSWORD", "PASSWORD_ENV", "PASSWORD_FILE"]
            .into_iter()
            .filter(|f| {
                let key = format!("{prefix}__{f}");
                layer.keys().any(|k| {
                    let k = k.strip_prefix("ROLEGATE__").unwrap_or(k);
                    k.eq_ignore_ascii_case(&key)
                })
            })
            .collect()
    };
    let Some(top) = layers.iter().map(|l| set_in(l)).find(|s| !s.is_empty()) else {
        return;
    };
    if !top.contains(&"PASSWORD") {
        *sources.inline = None;
    }
    if !top.contains(&"PASSWORD_ENV") {
        *sources.env = None;
    }
    if !top.contains(&"PASSWORD_FILE") {
        *sources.file = None;
    }
}
