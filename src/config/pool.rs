//! `[pool]`: how runtime sessions share upstream connections — reuse
//! between logins (`mode = "session"`, the default) or a lease per
//! transaction (`mode = "transaction"`, bounded by `size` per service).
//! Migration sessions are never pooled.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, by_name, invalid};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPool {
    #[serde(deserialize_with = "by_name")]
    pub mode: PoolMode,
    pub size: usize,
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    pub enabled: bool,
    pub max_idle: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            mode: PoolMode::Session,
            size: 20,
            wait_timeout: Duration::from_secs(5),
            enabled: true,
            max_idle: 100,
            idle_timeout: Duration::from_secs(5 * 60),
            max_lifetime: Duration::from_secs(60 * 60),
        }
    }
}

/// How runtime sessions hold their upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// One upstream session per client session, reused between logins.
    #[default]
    Session,
    /// An upstream connection leased per transaction (or per statement
    /// outside one) from at most `size` per service.
    Transaction,
}

impl PoolMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `[pool]`: reuse of runtime upstream sessions after their client leaves,
/// or transaction pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Transaction mode: upstream connections per service.
    pub size: usize,
    /// Transaction mode: how long a client waits for a free upstream
    /// connection before it gets an error.
    pub wait_timeout: Duration,
    pub enabled: bool,
    /// Idle upstream connections kept per service.
    pub max_idle: usize,
    /// An idle upstream connection unused this long is closed.
    pub idle_timeout: Duration,
    /// An upstream connection this old is closed instead of reused.
    pub max_lifetime: Duration,
}

impl TryFrom<&RawPool> for PoolConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawPool) -> Result<Self, Self::Error> {
        if raw.size == 0 {
            return Err(invalid("pool.size must be at least 1"));
        }
        if raw.wait_timeout.is_zero() {
            return Err(invalid("pool.wait_timeout must be more than 0s"));
        }
        Ok(PoolConfig {
            mode: raw.mode,
            size: raw.size,
            wait_timeout: raw.wait_timeout,
            // Keeping no idle connection is no pool at all.
            enabled: raw.enabled && raw.max_idle > 0,
            max_idle: raw.max_idle,
            idle_timeout: raw.idle_timeout,
            max_lifetime: raw.max_lifetime,
        })
    }
}
