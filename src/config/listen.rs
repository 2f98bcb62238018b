//! `[listen]` (the client-facing listener: address, limits, timeouts),
//! `[listen.tls]` (its TLS mode and certificate, loaded here so a bad file
//! stops startup), and `[admin]` (the admin port's address).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, duration, invalid};
use crate::tls::{self, TlsError};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawListen {
    pub address: String,
    pub max_connections: usize,
    pub startup_timeout: String,
    pub idle_timeout: String,
    pub shutdown_timeout: String,
    pub max_message_size: String,
    pub tls: Option<RawListenTls>,
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
pub(super) struct RawListenTls {
    #[serde(default = "default_listen_tls_mode")]
    pub mode: String,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

fn default_listen_tls_mode() -> String {
    "allow".into()
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTlsMode {
    Disable,
    Allow,
    Require,
}

impl TryFrom<&RawListen> for ListenConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawListen) -> Result<Self, ConfigError> {
        let tls_mode = match raw.tls.as_ref().map(|t| t.mode.as_str()) {
            None | Some("disable") => ListenTlsMode::Disable,
            Some("allow") => ListenTlsMode::Allow,
            Some("require") => ListenTlsMode::Require,
            Some(other) => {
                return Err(invalid(format!(
                    "listen.tls.mode = {other:?}: expected \"disable\", \"allow\" or \"require\""
                )));
            }
        };
        let tls = server_tls(tls_mode, raw.tls.as_ref())?;
        if raw.max_connections == 0 {
            return Err(invalid("listen.max_connections must be at least 1"));
        }
        let idle = duration("listen.idle_timeout", &raw.idle_timeout)?;
        Ok(ListenConfig {
            address: raw.address.clone(),
            max_connections: raw.max_connections,
            startup_timeout: duration("listen.startup_timeout", &raw.startup_timeout)?,
            // 0 means never.
            idle_timeout: (!idle.is_zero()).then_some(idle),
            shutdown_timeout: duration("listen.shutdown_timeout", &raw.shutdown_timeout)?,
            max_message_size: byte_size("listen.max_message_size", &raw.max_message_size)?,
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

pub(super) fn byte_size(key: &str, value: &str) -> Result<usize, ConfigError> {
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
