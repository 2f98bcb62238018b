//! Transaction pooling (`[pool] mode = "transaction"`): runtime sessions
//! share at most `pool.size` upstream connections per service, each leased
//! for one transaction — or one statement, or one extended-protocol batch
//! up to `Sync`, outside a transaction — and handed back at ReadyForQuery
//! `I`.
//!
//! * [`ServicePool`] — one service's connections: a semaphore of `size`
//!   permits bounds them (a waiting client sleeps on it, up to
//!   `pool.wait_timeout`; nothing polls), idle connections wait in a list,
//!   and new ones are opened lazily with the runtime credentials and the
//!   pinned settings, exactly as a session-mode runtime upstream is.
//! * [`settings`] — the client's session settings follow it: a lease
//!   whose upstream last served another client is reset (`DISCARD ALL`)
//!   and gets this client's settings; one that last served this client is
//!   used as it is.
//! * [`watch`] — the inspector wrapper that notices possible setting
//!   changes; [`prepared`] — the one that re-parses named prepared
//!   statements on a new connection; [`session`] — the relay loop that
//!   leases and hands back.
//!
//! A connection is handed back only when the relay says it could serve
//! someone else (idle outside a transaction, nothing in flight or
//! unsynced, between frames). Anything else — a broken connection, a
//! session that ended mid-transaction, a failed reset — closes it, so no
//! state of one client ever reaches another. Migration sessions never come
//! here.

pub mod prepared;
pub mod session;
pub mod settings;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, Credentials, PoolMode};
use crate::metrics::{Gauged, LeaseSource, TxPoolMetrics};
use crate::upstream::{self, Endpoint, UpstreamConn, UpstreamError};

pub use settings::{ClientSettings, SettingsError};

/// The settings every runtime upstream is opened with (the policy's pinned
/// settings); a client's own come from [`ClientSettings`].
const PINNED: [(&str, &str); 2] = [
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
];

/// How long resetting a connection that changes hands may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// The transaction pools of one configuration, by service (empty in
/// session mode). Replaced with the configuration on reload; sessions keep
/// the pool they logged in with.
#[derive(Default)]
pub struct TxPools {
    services: HashMap<String, Arc<ServicePool>>,
}

impl TxPools {
    /// One pool per service, with its metric series present from now.
    pub fn new(config: &Config, endpoints: &HashMap<String, Arc<Endpoint>>) -> Self {
        if config.pool.mode != PoolMode::Transaction {
            return TxPools::default();
        }
        let services = config
            .services
            .iter()
            .filter_map(|(name, s)| {
                let endpoint = endpoints.get(name)?.clone();
                let pool = ServicePool {
                    permits: Arc::new(Semaphore::new(config.pool.size)),
                    idle: Mutex::new(Vec::new()),
                    endpoint,
                    creds: s.runtime.clone(),
                    wait_timeout: config.pool.wait_timeout,
                    max_lifetime: config.pool.max_lifetime,
                    metrics: TxPoolMetrics::new(name, config.pool.size),
                };
                Some((name.clone(), Arc::new(pool)))
            })
            .collect();
        TxPools { services }
    }

    /// Close every idle connection (reload, shutdown); leased ones go
    /// back and serve their sessions as before.
    pub fn close_idle(&self) {
        for pool in self.services.values() {
            pool.close_idle();
        }
    }

    /// The pool of `service`, in transaction mode.
    pub fn get(&self, service: &str) -> Option<Arc<ServicePool>> {
        self.services.get(service).cloned()
    }
}

/// One service's upstream connections in transaction mode.
pub struct ServicePool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    endpoint: Arc<Endpoint>,
    creds: Credentials,
    wait_timeout: Duration,
    max_lifetime: Duration,
    metrics: TxPoolMetrics,
}

/// An idle connection and the client it last served.
struct Idle {
    conn: UpstreamConn,
    owner: u64,
    open: Gauged,
}

/// The right to hold one of the service's connections: given back (or
/// dropped) with it. Counts the lease as active while it lives.
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    _active: Gauged,
    open: Gauged,
}

/// Why a client got no upstream connection.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("no upstream connection became free within pool.wait_timeout ({})", humantime::format_duration(*.0))]
    WaitTimeout(Duration),
    #[error("cannot open an upstream connection: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("an upstream connection could not be prepared for this session: {0}")]
    Prepare(#[from] SettingsError),
    #[error("resetting an upstream connection took longer than {}s", RESET_TIMEOUT.as_secs())]
    ResetTimeout,
    #[error("resetting an upstream connection failed: {0}")]
    Reset(String),
}

impl LeaseError {
    /// SQLSTATE, message and hint of the ErrorResponse the client gets.
    pub fn client_text(&self) -> (&'static str, String, &'static str) {
        let message = format!("rolegate: {self}");
        match self {
            LeaseError::WaitTimeout(_) => (
                "53300",
                message,
                "Every upstream connection of this service is busy. Raise [pool] size or wait_timeout, keep transactions short, or reconnect and retry.",
            ),
            LeaseError::Prepare(SettingsError::Option(_)) => (
                "0A000",
                message,
                "Pass settings as -c name=value in options, or use [pool] mode = \"session\".",
            ),
            LeaseError::Prepare(SettingsError::Refused(_)) => (
                "0A000",
                message,
                "A setting of this session cannot be re-applied on another upstream connection; use [pool] mode = \"session\" for it.",
            ),
            LeaseError::Upstream(_)
            | LeaseError::Prepare(_)
            | LeaseError::ResetTimeout
            | LeaseError::Reset(_) => (
                "08006",
                message,
                "The upstream server could not be reached or failed; reconnect to retry.",
            ),
        }
    }
}

/// A lease: the connection (lent to the relay) and its permit.
pub struct Lease {
    pub conn: UpstreamConn,
    pub permit: Permit,
    /// Whether the connection last served this client (and was not reset).
    pub kept: bool,
}

impl ServicePool {
    /// Lease a connection for `client` (a session id), waiting up to
    /// `pool.wait_timeout`, with `settings` in force on it.
    pub async fn acquire(
        &self,
        client: u64,
        settings: &ClientSettings,
    ) -> Result<Lease, LeaseError> {
        let t0 = Instant::now();
        let permit = {
            let _waiting = self.metrics.waiting();
            tokio::time::timeout(self.wait_timeout, self.permits.clone().acquire_owned()).await
        };
        let permit = match permit {
            Ok(Ok(p)) => p,
            // The semaphore is never closed; a closed one serves nobody.
            Ok(Err(_)) | Err(_) => {
                self.metrics.wait_timed_out();
                return Err(LeaseError::WaitTimeout(self.wait_timeout));
            }
        };
        let waited = t0.elapsed().as_secs_f64();
        let (conn, source, open) = self.ready_conn(client, settings).await?;
        self.metrics.leased(source, waited);
        Ok(Lease {
            conn,
            kept: source == LeaseSource::Same,
            permit: Permit {
                _permit: permit,
                _active: self.metrics.active(),
                open,
            },
        })
    }

    /// A connection ready for `client` (the permit is held): an idle one,
    /// reset if it served someone else, or a new one. An idle connection
    /// whose reset fails (the server went away under it) is closed and a
    /// new one opened instead; a new one that fails is the client's error.
    async fn ready_conn(
        &self,
        client: u64,
        settings: &ClientSettings,
    ) -> Result<(UpstreamConn, LeaseSource, Gauged), LeaseError> {
        if let Some(idle) = self.take_idle(client) {
            let source = if idle.owner == client {
                LeaseSource::Same
            } else {
                LeaseSource::Reset
            };
            let mut conn = idle.conn;
            match prepare(&mut conn, source, settings).await {
                Ok(()) => return Ok((conn, source, idle.open)),
                // A setting the server refuses fails on any connection.
                Err(e @ LeaseError::Prepare(SettingsError::Refused(_))) => {
                    crate::pool::close_later(conn.stream);
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a pooled connection failed its reset; opening a new one");
                    crate::pool::close_later(conn.stream);
                }
            }
        }
        let mut conn = self.open().await?;
        prepare(&mut conn, LeaseSource::New, settings).await?;
        Ok((conn, LeaseSource::New, self.metrics.open()))
    }

    /// Keep a connection the relay handed back (idle, between
    /// transactions) for the next lease; `client` is who it served. The
    /// permit goes only after the connection is back, so whoever it wakes
    /// finds it.
    pub fn give_back(&self, conn: UpstreamConn, permit: Permit, client: u64) {
        let Permit { _permit, open, .. } = permit;
        if conn.born.elapsed() >= self.max_lifetime {
            crate::pool::close_later(conn.stream);
            return;
        }
        match self.idle.lock() {
            Ok(mut idle) => idle.push(Idle {
                conn,
                owner: client,
                open,
            }),
            Err(_) => crate::pool::close_later(conn.stream),
        }
    }

    fn close_idle(&self) {
        let idle: Vec<Idle> = match self.idle.lock() {
            Ok(mut list) => list.drain(..).collect(),
            Err(_) => return,
        };
        for i in idle {
            crate::pool::close_later(i.conn.stream);
        }
    }

    /// An idle connection, preferring one that last served `client`;
    /// connections found closed by the server on the way are dropped.
    fn take_idle(&self, client: u64) -> Option<Idle> {
        loop {
            let mut idle = {
                let mut list = self.idle.lock().ok()?;
                let i = list
                    .iter()
                    .rposition(|c| c.owner == client)
                    .or_else(|| list.len().checked_sub(1))?;
                list.swap_remove(i)
            };
            if crate::pool::still_open(&mut idle.conn.stream) {
                return Some(idle);
            }
            crate::metrics::pool_discarded_dead();
        }
    }

    async fn open(&self) -> Result<UpstreamConn, LeaseError> {
        let params: Vec<(String, String)> = PINNED
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let t0 = Instant::now();
        let conn = upstream::connect(&self.endpoint, &self.creds, &params).await;
        match conn {
            Ok(conn) => {
                crate::metrics::upstream_connect(
                    crate::role::Role::Runtime,
                    t0.elapsed().as_secs_f64(),
                );
                Ok(conn)
            }
            Err(e) => {
                crate::metrics::upstream_error(Some(crate::role::Role::Runtime));
                Err(e.into())
            }
        }
    }

    /// Named statements re-parsed on a new connection.
    pub fn count_reparses(&self, n: u64) {
        self.metrics.reparsed(n);
    }

    /// Where a cancel for a query on `conn` goes.
    pub fn cancel_key(&self, conn: &UpstreamConn) -> crate::cancel::UpstreamKey {
        crate::cancel::UpstreamKey {
            endpoint: self.endpoint.clone(),
            pid: conn.pid,
            secret: conn.secret,
        }
    }
}

/// Make `conn` this client's: as it is if it last served the client; reset
/// first if it served someone else; then the client's settings. A reset
/// and the settings go out in one write (one round trip for both).
async fn prepare(
    conn: &mut UpstreamConn,
    source: LeaseSource,
    settings: &ClientSettings,
) -> Result<(), LeaseError> {
    match source {
        LeaseSource::Same => Ok(()),
        LeaseSource::New => Ok(settings.apply(conn).await?),
        LeaseSource::Reset => {
            match tokio::time::timeout(RESET_TIMEOUT, reset_and_apply(conn, settings)).await {
                Ok(Ok(())) => {
                    crate::metrics::pool_reset(crate::metrics::PoolReset::Ok);
                    Ok(())
                }
                Ok(Err(e)) => {
                    if matches!(e, LeaseError::Reset(_)) {
                        crate::metrics::pool_reset(crate::metrics::PoolReset::Failed);
                    }
                    Err(e)
                }
                Err(_) => {
                    crate::metrics::pool_reset(crate::metrics::PoolReset::Timeout);
                    Err(LeaseError::ResetTimeout)
                }
            }
        }
    }
}

async fn reset_and_apply(
    conn: &mut UpstreamConn,
    settings: &ClientSettings,
) -> Result<(), LeaseError> {
    use tokio::io::AsyncWriteExt;
    let apply = settings.message();
    let mut out = bytes::BytesMut::from(crate::pool::DISCARD_ALL);
    if let Some(m) = &apply {
        out.extend_from_slice(m);
    }
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| LeaseError::Reset(e.to_string()))?;
    crate::pool::read_reset(conn, apply.is_some())
        .await
        .map_err(|e| LeaseError::Reset(e.to_string()))?;
    if apply.is_some() {
        ClientSettings::read_applied(conn).await?;
    }
    Ok(())
}
