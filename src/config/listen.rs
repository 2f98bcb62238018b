//! `[listen]` (the client-facing listener: address, limits, timeouts),
//! `[listen.tls]` (its TLS mode and certificate, loaded here so a bad file
//! stops startup), and `[admin]` (the admin port's address).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{ConfigError, by_name, invalid};
use crate::tls::{self, TlsError};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawListen {
    pub address: String,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// 0 means never.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub max_message_size: ByteSize,
    pub tls: Option<RawListenTls>,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            address: "127.0.0.1:6432".into(),
            max_connections: 10_000,
            startup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            max_message_size: ByteSize::mib(64),
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenTls {
    /// `allow` when the table is there; no table is `disable`.
    #[serde(default = "default_listen_tls_mode", deserialize_with = "by_name")]
    pub mode: ListenTlsMode,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

fn default_listen_tls_mode() -> ListenTlsMode {
    ListenTlsMode::Allow
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub address: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: "127.0.0.1:9187".into(),
        }
    }
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

/// `listen.tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenTlsMode {
    Disable,
    Allow,
    Require,
}

impl TryFrom<&RawListen> for ListenConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawListen) -> Result<Self, ConfigError> {
        let tls_mode = raw.tls.as_ref().map_or(ListenTlsMode::Disable, |t| t.mode);
        let tls = server_tls(tls_mode, raw.tls.as_ref())?;
        if raw.max_connections == 0 {
            return Err(invalid("listen.max_connections must be at least 1"));
        }
        Ok(ListenConfig {
            address: raw.address.clone(),
            max_connections: raw.max_connections,
            startup_timeout: raw.startup_timeout,
            idle_timeout: (!raw.idle_timeout.is_zero()).then_some(raw.idle_timeout),
            shutdown_timeout: raw.shutdown_timeout,
            max_message_size: message_size(raw.max_message_size)?,
            tls_mode,
            tls,
        })
    }
}

/// The listener's rustls config, loaded now so that a bad certificate or
/// key stops startup instead of failing the first TLS client.
fn server_tls(
    mode: ListenTlsMode,
    raw: Option<&RawListenTls>,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let Some(t) = raw.filter(|_| mode != ListenTlsMode::Disable) else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        return Err(invalid(
            "listen.tls.cert_file and listen.tls.key_file are required when listen.tls.mode is \"allow\" or \"require\"",
        ));
    };
    let config = tls::server_config(cert, key).map_err(|e: TlsError| {
        invalid(format!(
            "listen.tls.cert_file / listen.tls.key_file ({}, {}): {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Some(config))
}

/// `listen.max_message_size`: at least 1KiB (a StartupMessage must fit),
/// below 1GiB (PostgreSQL's own limit for one message).
pub(super) fn message_size(size: ByteSize) -> Result<usize, ConfigError> {
    usize::try_from(size.as_u64())
        .ok()
        .filter(|n| (1 << 10..1 << 30).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "listen.max_message_size = \"{size}\" must be a size between 1KiB and 1GiB, like \"64MiB\""
            ))
        })
}
