//! `[policy]`: the runtime policy's switches (all off by default) and its
//! mode (`enforce`, or `report` for rollout); also readable on its own for
//! `rolegate explain`, which needs no secrets or upstream.

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, by_name, wrap_config_error};
use crate::policy::Switches;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(deserialize_with = "by_name")]
    pub mode: PolicyMode,
    pub allow_temp_tables: bool,
    pub allow_truncate: bool,
    pub allow_maintenance: bool,
    pub allow_call: Vec<String>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            mode: PolicyMode::Enforce,
            allow_temp_tables: false,
            allow_truncate: false,
            allow_maintenance: false,
            allow_call: Vec::new(),
        }
    }
}

/// `policy.mode`: `report` refuses nothing but logs and counts every
/// would-be refusal, for rolling rolegate out beside a live application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl From<&RawPolicy> for PolicyConfig {
    fn from(p: &RawPolicy) -> Self {
        PolicyConfig {
            mode: p.mode,
            allow_temp_tables: p.allow_temp_tables,
            allow_truncate: p.allow_truncate,
            allow_maintenance: p.allow_maintenance,
            allow_call: p.allow_call.clone(),
        }
    }
}

/// Only the `[policy]` table of a config file (for `rolegate explain`,
/// which needs no secrets or upstream): the rest of the file is not read.
pub fn load_policy(path: &Path) -> Result<PolicyConfig, ConfigError> {
    #[derive(Deserialize)]
    struct OnlyPolicy {
        #[serde(default)]
        policy: RawPolicy,
    }
    let only: OnlyPolicy = ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| wrap_config_error(Some(path), e))?;
    Ok(PolicyConfig::from(&only.policy))
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
