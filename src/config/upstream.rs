//! `[upstream]`: where the PostgreSQL server is and how to reach it (TLS
//! mode, CA file — loaded here, so a bad one stops startup — `strict`,
//! connect timeout). Its `host`/`port`/`database` are the defaults of every
//! credential; the credentials themselves are `services.rs`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::services::RawCredentials;
use super::{ConfigError, by_name, invalid};
use crate::tls::{self, UpstreamTlsMode};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub host: String,
    pub port: u16,
    pub database: Option<String>,
    #[serde(deserialize_with = "by_name")]
    pub tls: UpstreamTlsMode,
    pub ca_file: Option<PathBuf>,
    pub strict: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub runtime: RawCredentials,
    pub migration: RawCredentials,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            host: "127.0.0.1".into(),
            port: 5432,
            database: None,
            tls: UpstreamTlsMode::Prefer,
            ca_file: None,
            strict: false,
            connect_timeout: Duration::from_secs(5),
            runtime: RawCredentials::default(),
            migration: RawCredentials::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub tls_mode: UpstreamTlsMode,
    pub ca_file: Option<PathBuf>,
    pub tls: Arc<tls::UpstreamTls>,
    pub strict: bool,
    pub connect_timeout: Duration,
}

impl TryFrom<&RawUpstream> for UpstreamConfig {
    type Error = ConfigError;

    fn try_from(up: &RawUpstream) -> Result<Self, ConfigError> {
        let tls_mode = up.tls;
        if matches!(
            tls_mode,
            UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull
        ) && up.ca_file.is_none()
        {
            return Err(invalid(format!(
                "upstream.tls = {:?} needs upstream.ca_file (the CA that signed the server's certificate)",
                tls_mode.as_str()
            )));
        }
        let tls = tls::UpstreamTls::new(tls_mode, up.ca_file.as_deref()).map_err(|e| {
            invalid(format!(
                "upstream.ca_file = {}: {e}",
                up.ca_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
        Ok(UpstreamConfig {
            tls_mode,
            ca_file: up.ca_file.clone(),
            tls: Arc::new(tls),
            strict: up.strict,
            connect_timeout: up.connect_timeout,
        })
    }
}
