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
//!
//! Several instances (`[cluster]`): the proxy pid carries the instance's
//! `peer_id` in bits 23..=30 (bit 31 stays 0 so pids stay positive) and a
//! per-instance counter in bits 0..=22; the secret stays 32 random bits. A
//! CancelRequest whose pid names another instance is forwarded, as the
//! same 16 bytes, in plaintext to that peer's address (the peer handles
//! its own keys locally, so a forward is never forwarded again unless two
//! instances are misconfigured with each other's ids). Forwards are bounded
//! by a timeout and a token bucket, so a flood of forged keys cannot be
//! amplified; a key for an unknown peer or an unknown local key is ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::upstream::Endpoint;

/// Where to send a cancel for one client session.
#[derive(Debug, Clone)]
pub struct UpstreamKey {
    pub endpoint: Arc<Endpoint>,
    pub pid: i32,
    pub secret: i32,
}

/// Bits of a proxy pid below the instance's `peer_id`.
const PEER_SHIFT: u32 = 23;
/// The per-instance counter part of a pid under `[cluster]`.
const COUNTER_MASK: i32 = (1 << PEER_SHIFT) - 1;
/// How long one forward to a peer may take (connect and write).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwards allowed per second, and in one burst: far more than real
/// users press Ctrl-C, few enough that forged keys cannot flood a peer.
const FORWARD_RATE: f64 = 50.0;
const FORWARD_BURST: f64 = 100.0;

#[derive(Default)]
pub struct CancelRegistry {
    inner: Mutex<Inner>,
    /// `[cluster] peer_id`, fixed for the process (keys already handed out
    /// carry it).
    peer_id: Option<u8>,
    bucket: Mutex<Bucket>,
}

/// What became of one CancelRequest (the `outcome` label of
/// `rolegate_cancel_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Sent to the upstream backend of a session of this instance.
    Local,
    /// Sent on to the peer instance named in the key.
    Forwarded,
    /// No live session here, or a peer id nobody configured: ignored.
    Unknown,
    /// Dropped: forwards over the rate limit.
    RateLimited,
    /// The peer or the upstream could not be reached in time.
    Failed,
}

impl CancelOutcome {
    pub const ALL: [CancelOutcome; 5] = [
        CancelOutcome::Local,
        CancelOutcome::Forwarded,
        CancelOutcome::Unknown,
        CancelOutcome::RateLimited,
        CancelOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Local => "local",
            CancelOutcome::Forwarded => "forwarded",
            CancelOutcome::Unknown => "unknown",
            CancelOutcome::RateLimited => "rate_limited",
            CancelOutcome::Failed => "forward_failed",
        }
    }
}

/// A token bucket refilled on use (no timer): `tokens` as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            tokens: FORWARD_BURST,
            at: Instant::now(),
        }
    }
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * FORWARD_RATE;
        self.tokens = (self.tokens + refill).min(FORWARD_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The instance a proxy pid names (0: a pid of a lone instance).
pub fn owner_of(pid: i32) -> u8 {
    // Bits 23..=30 of a positive pid; masking keeps it 8 bits.
    ((pid >> PEER_SHIFT) & 0xff) as u8
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
    /// A registry whose keys carry `peer_id` (`None`: a lone instance,
    /// pids as before).
    pub fn new(peer_id: Option<u8>) -> Self {
        CancelRegistry {
            peer_id,
            ..Default::default()
        }
    }

    /// The next pid candidate after `prev`: any positive i32 on a lone
    /// instance, the counter under this instance's id in a cluster.
    fn next_after(&self, prev: i32) -> i32 {
        match self.peer_id {
            None => prev.checked_add(1).filter(|p| *p > 0).unwrap_or(1),
            Some(id) => {
                let counter = match (prev & COUNTER_MASK) + 1 {
                    c if c > COUNTER_MASK => 1,
                    c => c,
                };
                (i32::from(id) << PEER_SHIFT) | counter
            }
        }
    }

    /// Allocate a client-facing key for an upstream backend.
    pub fn register(self: &Arc<Self>, upstream: UpstreamKey) -> Registration {
        let secret: i32 = rand::random();
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Proxy pids are positive and unique among live sessions.
        let pid = loop {
            inner.next_pid = self.next_after(inner.next_pid);
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

    /// Handle a client's CancelRequest: a key naming another instance goes
    /// to that peer (`peers`: the current `[[cluster.peers]]`), a key of
    /// this instance to the upstream backend of its session. Neither is
    /// answered, as PostgreSQL answers none, so the client learns nothing.
    pub async fn handle(
        &self,
        pid: i32,
        secret: i32,
        peers: Option<&BTreeMap<u8, String>>,
    ) -> CancelOutcome {
        let outcome = match self.peer_id {
            Some(own) if owner_of(pid) != own => self.forward(pid, secret, peers).await,
            _ => self.cancel(pid, secret).await,
        };
        crate::metrics::cancel_request(outcome.as_str());
        outcome
    }

    /// Send the client's exact CancelRequest to the peer its key names.
    async fn forward(
        &self,
        pid: i32,
        secret: i32,
        peers: Option<&BTreeMap<u8, String>>,
    ) -> CancelOutcome {
        let peer = owner_of(pid);
        let Some(address) = peers.and_then(|p| p.get(&peer)) else {
            tracing::debug!(pid, peer, "cancel request for an unknown peer ignored");
            return CancelOutcome::Unknown;
        };
        let allowed = match self.bucket.lock() {
            Ok(mut b) => b.take(Instant::now()),
            Err(p) => p.into_inner().take(Instant::now()),
        };
        if !allowed {
            tracing::debug!(peer, "cancel forward over the rate limit dropped");
            return CancelOutcome::RateLimited;
        }
        let mut packet = BytesMut::with_capacity(16);
        postgres_protocol::message::frontend::cancel_request(pid, secret, &mut packet);
        match tokio::time::timeout(FORWARD_TIMEOUT, send_to(address, &packet)).await {
            Ok(Ok(())) => CancelOutcome::Forwarded,
            Ok(Err(e)) => {
                tracing::warn!(peer, %address, error = %e, "forwarding a cancel request to a peer failed");
                CancelOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(peer, %address, "forwarding a cancel request to a peer timed out");
                CancelOutcome::Failed
            }
        }
    }

    /// Cancel a session of this instance.
    async fn cancel(&self, pid: i32, secret: i32) -> CancelOutcome {
        let Some(key) = self.lookup(pid, secret) else {
            tracing::debug!(pid, "cancel request with an unknown key ignored");
            return CancelOutcome::Unknown;
        };
        let mut packet = BytesMut::with_capacity(16);
        postgres_protocol::message::frontend::cancel_request(key.pid, key.secret, &mut packet);
        match key.endpoint.open().await {
            Ok(mut stream) => {
                if let Err(e) = stream.write_all(&packet).await {
                    tracing::warn!(error = %e, "forwarding a cancel request failed");
                    return CancelOutcome::Failed;
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
                CancelOutcome::Local
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach upstream to forward a cancel request");
                CancelOutcome::Failed
            }
        }
    }
}

/// Connect, write the CancelRequest and close: the peer answers nothing.
async fn send_to(address: &str, packet: &[u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(packet).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_pids_carry_the_peer_id_and_stay_positive() {
        let r = CancelRegistry::new(Some(255));
        let mut pid = 0;
        for _ in 0..3 {
            pid = r.next_after(pid);
            assert!(pid > 0);
            assert_eq!(owner_of(pid), 255);
        }
        let wrapped = r.next_after((255 << PEER_SHIFT) | COUNTER_MASK);
        assert_eq!(wrapped & COUNTER_MASK, 1);
        assert_eq!(owner_of(wrapped), 255);
    }

    #[test]
    fn lone_instance_pids_are_unchanged() {
        let r = CancelRegistry::new(None);
        assert_eq!(r.next_after(0), 1);
        assert_eq!(r.next_after(i32::MAX), 1);
    }

    #[test]
    fn the_bucket_refills_with_time() {
        let mut b = Bucket::default();
        let now = b.at;
        for _ in 0..FORWARD_BURST as usize {
            assert!(b.take(now));
        }
        assert!(!b.take(now));
        assert!(b.take(now + Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_key_for_an_unknown_peer_is_ignored() {
        let r = CancelRegistry::new(Some(1));
        let pid = (2 << PEER_SHIFT) | 5;
        assert_eq!(r.handle(pid, 7, None).await, CancelOutcome::Unknown);
        assert_eq!(
            r.handle(r.next_after(0), 7, None).await,
            CancelOutcome::Unknown
        );
    }
}
