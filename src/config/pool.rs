//! `[pool]`: reuse of runtime upstream sessions after their client leaves
//! (migration sessions are never pooled).

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPool {
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
            enabled: true,
            max_idle: 100,
            idle_timeout: Duration::from_secs(5 * 60),
            max_lifetime: Duration::from_secs(60 * 60),
        }
    }
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

impl From<&RawPool> for PoolConfig {
    fn from(raw: &RawPool) -> Self {
        PoolConfig {
            // Keeping no idle connection is no pool at all.
            enabled: raw.enabled && raw.max_idle > 0,
            max_idle: raw.max_idle,
            idle_timeout: raw.idle_timeout,
            max_lifetime: raw.max_lifetime,
        }
    }
}
