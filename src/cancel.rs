//! Query cancellation: the proxy hands each client its own BackendKeyData
//! and maps a `CancelRequest` carrying it to the upstream backend that
//! serves that client.
//!
//! Under transaction pooling the key follows the client's lease: it points
//! at the backend running the client's transaction while one is leased
//! ([`Registration::retarget`]) and nowhere while the client is between
//! transactions, so a cancel reaches only the client's own query.
//!
//! Clients never see upstream pids or secrets, so a client cannot cancel a
//! backend it does not own, and a guessed key has a 1 in 2^32 chance per
//! try of hitting a live session (the same odds PostgreSQL itself gives).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::upstream::Endpoint;

/// Where to send a cancel for one client session.
#[derive(Debug, Clone)]
pub struct UpstreamKey {
    pub endpoint: Arc<Endpoint>,
    pub pid: i32,
    pub secret: i32,
}

#[derive(Default)]
pub struct CancelRegistry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_pid: i32,
    sessions: HashMap<i32, (i32, Option<UpstreamKey>)>,
}

/// Removes the session's key when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.registry.inner.lock() {
            inner.sessions.remove(&self.pid);
        }
    }
}

impl Registration {
    /// Point the client's key at another upstream backend, or at none
    /// (`None`: between transactions under pooling, a cancel has nothing
    /// of the client's to stop).
    pub fn retarget(&self, upstream: Option<UpstreamKey>) {
        let mut inner = match self.registry.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(entry) = inner.sessions.get_mut(&self.pid) {
            entry.1 = upstream;
        }
    }
}

impl CancelRegistry {
    /// Allocate a client-facing key for an upstream backend.
    pub fn register(self: &Arc<Self>, upstream: UpstreamKey) -> Registration {
        let secret: i32 = rand::random();
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Proxy pids are positive and unique among live sessions.
        let pid = loop {
            inner.next_pid = inner
                .next_pid
                .checked_add(1)
                .filter(|p| *p > 0)
                .unwrap_or(1);
            if !inner.sessions.contains_key(&inner.next_pid) {
                break inner.next_pid;
            }
        };
        inner.sessions.insert(pid, (secret, Some(upstream)));
        Registration {
            registry: self.clone(),
            pid,
            secret,
        }
    }

    fn lookup(&self, pid: i32, secret: i32) -> Option<UpstreamKey> {
        let inner = self.inner.lock().ok()?;
        let (s, key) = inner.sessions.get(&pid)?;
        if *s != secret {
            return None;
        }
        key.clone()
    }

    /// Handle a client's CancelRequest: forward it upstream when the key
    /// matches a live session, otherwise ignore it (PostgreSQL answers
    /// neither case, so the client learns nothing).
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let Some(key) = self.lookup(pid, secret) else {
            tracing::debug!(pid, "cancel request with an unknown key ignored");
            return false;
        };
        let mut packet = BytesMut::with_capacity(16);
        postgres_protocol::message::frontend::cancel_request(key.pid, key.secret, &mut packet);
        match key.endpoint.open().await {
            Ok(mut stream) => {
                if let Err(e) = stream.write_all(&packet).await {
                    tracing::warn!(error = %e, "forwarding a cancel request failed");
                    return false;
                }
                let _ = stream.flush().await;
                // The server closes the connection when done; wait briefly so
                // TLS close_notify and the request are not cut short.
                let mut sink = [0u8; 1];
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    tokio::io::AsyncReadExt::read(&mut stream, &mut sink),
                )
                .await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach upstream to forward a cancel request");
                false
            }
        }
    }
}
