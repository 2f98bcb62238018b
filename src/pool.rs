//! Upstream session reuse for runtime sessions (what PgBouncer calls
//! session pooling).
//!
//! When a runtime client leaves while its upstream session is idle — no
//! request in flight, outside a transaction, no half-sent message, no
//! unsynced extended-protocol messages — the session is reset with
//! `DISCARD ALL` and kept for the next runtime login of the same service
//! with the same startup parameters. `DISCARD ALL` closes portals and
//! cursors, drops prepared statements and temporary objects, resets every
//! `SET`, releases session advisory locks and unlistens all channels, so
//! nothing one client did is visible to the next. Because the pool is keyed
//! by the exact startup parameters, `RESET ALL` returns a session to the
//! very settings the next client asked for.
//!
//! Migration sessions are never pooled. The pool is bounded per service
//! (`pool.max_idle`), idle sessions are closed after `pool.idle_timeout`,
//! sessions older than `pool.max_lifetime` are not reused, and a session is
//! checked for liveness (no EOF, no unsolicited FATAL) before reuse. A
//! configuration reload empties the pool: its sessions were opened with
//! the old credentials and TLS settings.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::config::PoolConfig;
use crate::metrics::PoolReset;
use crate::protocol::backend;
use crate::protocol::{self, ProtocolError};
use crate::upstream::{Endpoint, UpstreamConn, UpstreamStream};

/// `Query("DISCARD ALL")`.
pub(crate) const DISCARD_ALL: &[u8] = b"Q\0\0\0\x10DISCARD ALL\0";
/// A reset that takes longer than this means a sick server: drop it.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Which idle sessions a login may take: the service and the startup
/// parameters (sorted) the session was opened with, under the
/// configuration generation it was opened in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub service: String,
    pub params: Vec<(String, String)>,
    generation: u64,
}

/// An upstream session waiting for its next client.
struct Idle {
    /// Counts it in `rolegate_pool_idle_connections` while it is here.
    _counted: crate::metrics::PooledSession,
    key: PoolKey,
    conn: UpstreamConn,
    endpoint: Arc<Endpoint>,
    since: Instant,
}

/// What a login takes out of the pool.
pub struct Reused {
    pub conn: UpstreamConn,
    pub endpoint: Arc<Endpoint>,
}

/// Idle upstream sessions by service.
#[derive(Default)]
pub struct Pool {
    services: Mutex<HashMap<String, Vec<Idle>>>,
    /// Bumped by [`Pool::clear`]: sessions checked out before it are not
    /// taken back.
    generation: AtomicU64,
    /// Woken when a session is added, so the reaper can sleep until the
    /// next expiry instead of polling.
    added: tokio::sync::Notify,
}

impl Pool {
    /// The key for a login of `service` with these startup parameters.
    pub fn key(&self, service: &str, params: &[(String, String)]) -> PoolKey {
        let mut params = params.to_vec();
        params.sort();
        PoolKey {
            service: service.to_string(),
            params,
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// Take a live idle session for `key`, if there is one. Sessions found
    /// dead or too old on the way are closed.
    pub fn take(&self, key: &PoolKey, cfg: &PoolConfig) -> Option<Reused> {
        if !cfg.enabled {
            return None;
        }
        loop {
            let idle = {
                let mut services = self.services.lock().ok()?;
                let list = services.get_mut(&key.service)?;
                // Most recently used first: its TCP and TLS state is warmest.
                let i = list.iter().rposition(|c| &c.key == key)?;
                list.remove(i)
            };
            let mut idle = idle;
            if idle.conn.born.elapsed() >= cfg.max_lifetime {
                close_later(idle.conn.stream);
                continue;
            }
            if !still_open(&mut idle.conn.stream) {
                crate::metrics::pool_discarded_dead();
                continue;
            }
            return Some(Reused {
                conn: idle.conn,
                endpoint: idle.endpoint,
            });
        }
    }

    /// Reset `conn` and keep it for the next client, or close it if the
    /// reset fails or the pool is full. Runs off the client's path.
    pub async fn give_back(
        &self,
        key: PoolKey,
        mut conn: UpstreamConn,
        endpoint: Arc<Endpoint>,
        cfg: PoolConfig,
    ) {
        if !cfg.enabled || conn.born.elapsed() >= cfg.max_lifetime {
            close(conn.stream).await;
            return;
        }
        match tokio::time::timeout(RESET_TIMEOUT, reset(&mut conn)).await {
            Ok(Ok(())) => {
                crate::metrics::pool_reset(PoolReset::Ok);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream session reset failed; closing it");
                crate::metrics::pool_reset(PoolReset::Failed);
                close(conn.stream).await;
                return;
            }
            Err(_) => {
                crate::metrics::pool_reset(PoolReset::Timeout);
                close(conn.stream).await;
                return;
            }
        }
        let kept: Result<Vec<Idle>, UpstreamConn> = match self.services.lock() {
            // Reloaded or shutting down since this session began.
            _ if key.generation != self.generation.load(Ordering::Acquire) => Err(conn),
            Err(_) => Err(conn),
            Ok(mut services) => {
                let list = services.entry(key.service.clone()).or_default();
                list.push(Idle {
                    _counted: crate::metrics::PooledSession::new(),
                    key,
                    conn,
                    endpoint,
                    since: Instant::now(),
                });
                self.added.notify_waiters();
                // Over the bound: the least recently used go.
                let excess = list.len().saturating_sub(cfg.max_idle);
                Ok(list.drain(..excess).collect())
            }
        };
        let evicted = match kept {
            Ok(evicted) => evicted,
            Err(conn) => {
                close(conn.stream).await;
                return;
            }
        };
        for idle in evicted {
            close(idle.conn.stream).await;
        }
    }

    /// Close idle sessions unused for `idle_timeout` or older than
    /// `max_lifetime`; returns when the next of the others expires.
    pub fn expire(&self, cfg: &PoolConfig) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let expired: Vec<Idle> = {
            let Ok(mut services) = self.services.lock() else {
                return None;
            };
            let now = Instant::now();
            let mut out = Vec::new();
            for list in services.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    let c = &list[i];
                    let at = (c.since + cfg.idle_timeout).min(c.conn.born + cfg.max_lifetime);
                    if !cfg.enabled || at <= now {
                        out.push(list.remove(i));
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        i += 1;
                    }
                }
            }
            out
        };
        for idle in expired {
            close_later(idle.conn.stream);
        }
        next
    }

    /// Expire idle sessions as they come due (`cfg` gives the current
    /// limits). Sleeps until the next expiry or a new idle session.
    pub async fn reap(&self, cfg: impl Fn() -> PoolConfig) {
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            match self.expire(&cfg()) {
                Some(at) => {
                    tokio::select! {
                        _ = added => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => added.await,
            }
        }
    }

    /// Close every idle session (reload, shutdown).
    pub fn clear(&self) {
        let all: Vec<Idle> = match self.services.lock() {
            Ok(mut s) => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                s.drain().flat_map(|(_, v)| v).collect()
            }
            Err(_) => return,
        };
        for idle in all {
            close_later(idle.conn.stream);
        }
    }

    /// Idle sessions held now.
    pub fn idle(&self) -> usize {
        self.services
            .lock()
            .map(|s| s.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// `DISCARD ALL`, then wait for its ReadyForQuery with status `I`.
/// Frames left over from the previous client (whole frames the relay read
/// but never delivered, notifications) come first and are skipped; the
/// ParameterStatus messages the reset produces update the values the next
/// client will be greeted with.
pub(crate) async fn reset(conn: &mut UpstreamConn) -> Result<(), ResetError> {
    conn.stream
        .write_all(DISCARD_ALL)
        .await
        .map_err(ProtocolError::Io)?;
    read_reset(conn, false).await
}

/// The reply to a [`DISCARD_ALL`] already sent (see [`reset`]). With
/// `more_sent`, messages were written after it and their replies stay in
/// the connection's read-ahead, unread; without, nothing may follow.
pub(crate) async fn read_reset(conn: &mut UpstreamConn, more_sent: bool) -> Result<(), ResetError> {
    let mut buf = std::mem::take(&mut conn.read_ahead);
    let mut discarded = false;
    loop {
        let mut frame = protocol::read_frame(&mut conn.stream, &mut buf, 1 << 20).await?;
        // The tail of the previous client's traffic, notices and
        // notifications: nothing to keep, nothing to read.
        if !matches!(frame[0], b'C' | b'S' | b'E' | b'Z') {
            continue;
        }
        match backend::decode(&mut frame)? {
            Message::CommandComplete(c) if c.tag().is_ok_and(|t| t == "DISCARD ALL") => {
                discarded = true;
            }
            Message::ParameterStatus(p) => {
                if let (Ok(name), Ok(value)) = (p.name(), p.value()) {
                    conn.set_parameter(name, value);
                }
            }
            Message::ErrorResponse(_) if discarded => return Err(ResetError::Refused),
            Message::ReadyForQuery(z) if discarded => {
                let clean = z.status() == b'I' && (more_sent || buf.is_empty());
                conn.read_ahead = buf;
                return if clean {
                    Ok(())
                } else {
                    Err(ResetError::Refused)
                };
            }
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ResetError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("the server did not accept DISCARD ALL")]
    Refused,
}

/// Whether an idle session is still usable: nothing to read (a server that
/// closed it, or sent a FATAL before closing, makes it readable).
pub(crate) fn still_open(stream: &mut UpstreamStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut rb = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut rb), Poll::Pending)
}

/// Say goodbye to the server (Terminate, TLS close_notify) so it does not
/// log a lost connection.
pub async fn close(mut stream: UpstreamStream) {
    let bye = async {
        stream.write_all(&protocol::TERMINATE).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}

pub(crate) fn close_later(stream: UpstreamStream) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(close(stream));
    }
}
