//! The session relay: once both sides are authenticated, bytes flow
//! client → upstream and upstream → client until either side leaves.
//!
//! Both directions forward in bulk: one read becomes (at most) one write,
//! with frame boundaries tracked by reading only 5-byte headers, so rows
//! and COPY data are never decoded and nothing is allocated per message.
//! The two directions run concurrently so a client that pipelines faster
//! than it reads cannot deadlock the proxy against the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::audit::StatementAudit;
use crate::enforce::{Action, Enforcer, PendingRefusals};
use crate::protocol::{self, FrameHeader, ProtocolError};

/// Read chunk size: large enough that a result set streams in few syscalls,
/// small enough that 1,000 idle sessions stay cheap (buffers grow on demand).
const READ_CHUNK: usize = 16 * 1024;

/// What one session shares between its two directions and its owner.
#[derive(Debug)]
pub struct SessionState {
    /// The transaction status byte of the last ReadyForQuery: `I`, `T` or `E`.
    pub tx_status: AtomicU8,
    /// Requests (`Query`, `Sync`, `FunctionCall`) sent upstream whose
    /// ReadyForQuery has not come back yet.
    pub in_flight: AtomicI64,
    pub bytes_to_upstream: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub statements: AtomicU64,
    /// Milliseconds since `created` of the last client message, for the
    /// idle timeout.
    pub last_activity_ms: AtomicU64,
    pub created: Instant,
    /// Woken when the session becomes idle outside a transaction (after
    /// the ReadyForQuery reached the client), for whoever waits to stop it.
    became_idle: tokio::sync::Notify,
}

impl Default for SessionState {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionState {
    pub fn new() -> Self {
        SessionState {
            tx_status: AtomicU8::new(b'I'),
            in_flight: AtomicI64::new(0),
            bytes_to_upstream: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            statements: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
            created: Instant::now(),
            became_idle: tokio::sync::Notify::new(),
        }
    }

    /// Idle outside a transaction: nothing in flight, status `I`.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) <= 0
            && self.tx_status.load(Ordering::Acquire) == b'I'
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.created.elapsed().saturating_sub(Duration::from_millis(
            self.last_activity_ms.load(Ordering::Relaxed),
        ))
    }
}

/// Wait until the session is idle outside a transaction, or `deadline`.
pub async fn until_idle_or(state: &SessionState, deadline: Instant) {
    let deadline = tokio::time::sleep_until(deadline.into());
    tokio::pin!(deadline);
    loop {
        // Registered before the check, so a wake-up in between is not lost.
        let woken = state.became_idle.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if state.is_idle() {
            return;
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = &mut deadline => return,
        }
    }
}

/// Why the owner asked a session to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    Shutdown,
    /// The migration window (or the token) ended.
    WindowClosed,
}

/// What looks at whole statements on their way upstream.
pub enum Inspector {
    /// Runtime sessions: the statement policy.
    Policy(Enforcer, Arc<PendingRefusals>),
    /// Migration sessions: every statement audited, nothing refused.
    Audit(StatementAudit),
}

/// Per-session limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message: usize,
    pub idle_timeout: Option<Duration>,
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client sent Terminate.
    Terminated,
    /// The client closed its connection (or it broke).
    ClientGone,
    /// The upstream connection ended; the client was told.
    UpstreamGone,
    /// The client broke the protocol; it was told with a FATAL.
    ClientProtocol(ProtocolError),
    /// A pinned setting changed under a runtime session; it was closed.
    PolicyViolation,
    /// The owner stopped it (shutdown, window end); the client was told.
    Stopped(StopCause),
    /// No client message for `idle_timeout`.
    IdleTimeout,
}

/// How a relay ended, and whether its upstream connection can serve
/// another client.
#[derive(Debug)]
pub struct RelayEnd {
    pub end: SessionEnd,
    /// Set when the upstream stream sits between messages in both
    /// directions, with no extended-protocol messages awaiting a Sync: the
    /// bytes the server sent that the client never got (whole frames), for
    /// whoever reads the connection next.
    pub reusable: Option<BytesMut>,
}

/// Where client → upstream traffic stopped, kept outside the relay future
/// so it survives the future being dropped.
#[derive(Debug, Default)]
struct ToUpstream {
    /// Bytes of a frame already partly forwarded.
    in_frame: usize,
    /// Parse/Bind/Describe/Execute/Close sent since the last Sync.
    unsynced: bool,
    /// A write to the upstream was under way.
    writing: bool,
}

/// Likewise for upstream → client.
#[derive(Debug, Default)]
struct ToClient {
    /// Read from the upstream, not yet delivered.
    buf: BytesMut,
    /// Bytes of a frame still to come from the upstream.
    in_frame: usize,
}

/// Relay until one side ends or `stop` resolves. `client_pending` holds
/// bytes the client sent during login that belong to the session;
/// `upstream_pending` likewise for the server. The upstream connection is
/// borrowed: the owner decides whether it is reused or closed.
#[allow(clippy::too_many_arguments)]
pub async fn relay<C, U, S>(
    client: C,
    client_pending: BytesMut,
    upstream: &mut U,
    upstream_pending: BytesMut,
    state: Arc<SessionState>,
    limits: Limits,
    inspector: Inspector,
    stop: S,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    S: std::future::Future<Output = StopCause>,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let mut up = ToUpstream::default();
    let mut down = ToClient {
        buf: upstream_pending,
        in_frame: 0,
    };
    let (check, pending) = match inspector {
        Inspector::Policy(e, p) => (Check::Enforce(e), Some(p)),
        Inspector::Audit(a) => (Check::Audit(a), None),
    };
    let c2s = client_to_upstream(
        &mut client_r,
        &mut upstream_w,
        client_pending,
        &mut up,
        &state,
        limits.max_message,
        check,
    );
    let s2c = upstream_to_client(
        &mut upstream_r,
        &mut client_w,
        &mut down,
        &state,
        pending.as_deref(),
    );
    let idle = idle_watch(&state, limits.idle_timeout);
    let end = tokio::select! {
        end = c2s => end,
        end = s2c => end,
        cause = stop => SessionEnd::Stopped(cause),
        _ = idle => SessionEnd::IdleTimeout,
    };
    let fatal = match &end {
        SessionEnd::ClientProtocol(e) => {
            Some(("08P01", format!("rolegate: invalid frontend message: {e}")))
        }
        SessionEnd::Stopped(StopCause::Shutdown) => Some((
            "57P01",
            "terminating connection due to administrator command (rolegate is shutting down)"
                .to_string(),
        )),
        SessionEnd::Stopped(StopCause::WindowClosed) => Some((
            "57P01",
            "rolegate: the migration window closed; terminating the migration session".to_string(),
        )),
        SessionEnd::IdleTimeout => Some((
            "57P01",
            "rolegate: terminating connection due to idle timeout (listen.idle_timeout)"
                .to_string(),
        )),
        _ => None,
    };
    if let Some((code, message)) = fatal {
        let mut out = BytesMut::new();
        protocol::error_response(&mut out, "FATAL", code, &message, None);
        let _ = client_w.write_all(&out).await;
    }
    let _ = client_w.shutdown().await;
    let clean = up.in_frame == 0 && !up.unsynced && !up.writing && down.in_frame == 0;
    RelayEnd {
        end,
        reusable: clean.then_some(down.buf),
    }
}

/// Resolves when the client has sent nothing for `timeout` while no query
/// of its is running (never if there is no timeout).
async fn idle_watch(state: &SessionState, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let idle = state.idle_for();
        if idle >= timeout && state.in_flight.load(Ordering::Acquire) <= 0 {
            return;
        }
        let wait = timeout.saturating_sub(idle).max(Duration::from_millis(100));
        tokio::time::sleep(wait).await;
    }
}

/// The client-to-upstream half of an [`Inspector`].
enum Check {
    Enforce(Enforcer),
    Audit(StatementAudit),
}

/// Client → upstream. Frames are forwarded as they arrive; on runtime
/// sessions `Query`, `Parse` and `FunctionCall` are first collected whole
/// (bounded by `max_message`) and shown to the [`Enforcer`]. `Terminate`
/// ends the session.
async fn client_to_upstream<R, W>(
    client: &mut R,
    upstream: &mut W,
    mut buf: BytesMut,
    track: &mut ToUpstream,
    state: &SessionState,
    max_message: usize,
    mut check: Check,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let relayed = metrics::counter!("rolegate_bytes_total", "direction" => "to_upstream");
    loop {
        let mut ready = 0usize;
        let mut terminated = false;
        // How many bytes the buffer must hold before scanning can go on.
        let mut need = 0usize;
        loop {
            if track.in_frame > 0 {
                let n = track.in_frame.min(buf.len() - ready);
                ready += n;
                track.in_frame -= n;
                if track.in_frame > 0 {
                    break;
                }
            }
            let header = match FrameHeader::parse(&buf[ready..], max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return SessionEnd::ClientProtocol(e),
            };
            match header.tag {
                b'X' => {
                    // Not forwarded: the owner closes the upstream, or
                    // keeps it for the next client.
                    terminated = true;
                    break;
                }
                b'S' => {
                    // Sync: one ReadyForQuery will answer it.
                    state.in_flight.fetch_add(1, Ordering::AcqRel);
                    track.unsynced = false;
                    track.in_frame = header.total();
                }
                b'Q' | b'P' | b'F' => {
                    let total = header.total();
                    if buf.len() - ready < total {
                        // Counted once whole: the header is parsed again
                        // after the next read.
                        need = ready + total;
                        break;
                    }
                    if matches!(header.tag, b'Q' | b'P') {
                        state.statements.fetch_add(1, Ordering::Relaxed);
                    }
                    // Earlier work the server may still be running: its
                    // effects could change how this message is read.
                    let pipelined = track.unsynced || state.in_flight.load(Ordering::Acquire) > 0;
                    if header.tag == b'P' {
                        track.unsynced = true;
                    } else {
                        state.in_flight.fetch_add(1, Ordering::AcqRel);
                    }
                    let action = match &mut check {
                        Check::Enforce(enf) => {
                            enf.inspect(header.tag, &buf[ready..ready + total], pipelined)
                        }
                        Check::Audit(audit) => {
                            audit.record(header.tag, &buf[ready..ready + total]);
                            Action::Forward
                        }
                    };
                    match action {
                        Action::Forward => ready += total,
                        Action::Substitute(sub) => {
                            // Flush what precedes, send the substitute, and
                            // drop the client's message.
                            track.writing = true;
                            if upstream.write_all(&buf[..ready]).await.is_err()
                                || upstream.write_all(&sub).await.is_err()
                            {
                                return SessionEnd::UpstreamGone;
                            }
                            track.writing = false;
                            state
                                .bytes_to_upstream
                                .fetch_add((ready + sub.len()) as u64, Ordering::Relaxed);
                            relayed.increment((ready + sub.len()) as u64);
                            buf.advance(ready + total);
                            ready = 0;
                        }
                    }
                }
                tag => {
                    if matches!(tag, b'B' | b'D' | b'E' | b'C') {
                        track.unsynced = true;
                    }
                    track.in_frame = header.total();
                }
            }
        }
        if ready > 0 {
            track.writing = true;
            if upstream.write_all(&buf[..ready]).await.is_err() {
                // The upstream side reports its own end.
                return SessionEnd::UpstreamGone;
            }
            track.writing = false;
            state
                .bytes_to_upstream
                .fetch_add(ready as u64, Ordering::Relaxed);
            relayed.increment(ready as u64);
            buf.advance(ready);
            need = need.saturating_sub(ready);
        }
        if terminated {
            return SessionEnd::Terminated;
        }
        if need > buf.len() {
            buf.reserve(need - buf.len());
        } else if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match client.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return SessionEnd::ClientGone,
            Ok(_) => state.touch(),
        }
    }
}

/// Upstream → client, in bulk. Only `ReadyForQuery` is looked into (for
/// the transaction status); everything else passes by header.
async fn upstream_to_client<R, W>(
    upstream: &mut R,
    client: &mut W,
    track: &mut ToClient,
    state: &SessionState,
    pending: Option<&PendingRefusals>,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ToClient { buf, in_frame } = track;
    let relayed = metrics::counter!("rolegate_bytes_total", "direction" => "to_client");
    // Whether the server already told the client why it is closing.
    let mut sent_fatal = false;
    loop {
        let mut ready = 0usize;
        let mut saw_ready_for_query = false;
        loop {
            if *in_frame > 0 {
                let n = (*in_frame).min(buf.len() - ready);
                ready += n;
                *in_frame -= n;
                if *in_frame > 0 {
                    break;
                }
            }
            // The server's frames are trusted to be well formed but not to
            // be small (a DataRow can be up to 1 GB), so no upper limit here:
            // large frames stream through without being buffered.
            let header = match FrameHeader::parse(&buf[ready..], u32::MAX as usize) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => {
                    // A corrupt stream cannot be resynchronised; end it.
                    return end_upstream(client, buf, ready, true).await;
                }
            };
            let watched =
                matches!(header.tag, b'Z' | b'E') || (header.tag == b'S' && pending.is_some());
            match header.tag {
                _ if watched => {
                    // Small frames whose body matters: wait for all of it.
                    let total = header.total();
                    if buf.len() - ready < total {
                        if total > 64 * 1024 {
                            // An error response is never this large; pass it
                            // through without looking.
                            *in_frame = total;
                            continue;
                        }
                        break;
                    }
                    let body = &buf[ready + FrameHeader::SIZE..ready + total];
                    if header.tag == b'Z' {
                        if let Some(s) = body.first() {
                            state.tx_status.store(*s, Ordering::Release);
                        }
                        state.in_flight.fetch_sub(1, Ordering::AcqRel);
                        saw_ready_for_query = true;
                    } else if header.tag == b'S' {
                        if let Some(problem) = unpinned_setting(body) {
                            // Defence in depth: the classifier refuses every
                            // way to change these, but if the server reports
                            // a change anyway the proxy's reading of the
                            // text can no longer be trusted.
                            let _ = client.write_all(&buf[..ready]).await;
                            let mut out = BytesMut::new();
                            protocol::error_response(
                                &mut out,
                                "FATAL",
                                "42501",
                                &format!(
                                    "rolegate: {problem} changed on a runtime session; closing it"
                                ),
                                None,
                            );
                            let _ = client.write_all(&out).await;
                            return SessionEnd::PolicyViolation;
                        }
                    } else if let Some(replacement) = pending
                        .filter(|p| !p.is_empty())
                        .and_then(|p| p.take_for(body))
                    {
                        // The server's answer to a refused statement's
                        // substitute: the client gets the proxy's error.
                        if client.write_all(&buf[..ready]).await.is_err()
                            || client.write_all(&replacement).await.is_err()
                        {
                            return SessionEnd::ClientGone;
                        }
                        buf.advance(ready + total);
                        ready = 0;
                        continue;
                    } else if is_fatal(body) {
                        sent_fatal = true;
                    }
                    ready += total;
                }
                _ => *in_frame = header.total(),
            }
        }
        if ready > 0 {
            if client.write_all(&buf[..ready]).await.is_err() {
                return SessionEnd::ClientGone;
            }
            state
                .bytes_to_client
                .fetch_add(ready as u64, Ordering::Relaxed);
            relayed.increment(ready as u64);
            buf.advance(ready);
        }
        if saw_ready_for_query && state.is_idle() {
            state.became_idle.notify_waiters();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match upstream.read_buf(buf).await {
            Ok(0) | Err(_) => {
                let at_boundary = *in_frame == 0;
                return end_upstream(client, buf, 0, at_boundary && !sent_fatal).await;
            }
            Ok(_) => {}
        }
    }
}

/// The upstream is gone: flush what is whole, then tell the client with
/// `FATAL 08006` unless the server already sent its own FATAL (or the
/// stream stopped mid-frame, where anything we add would be garbage).
async fn end_upstream<W: AsyncWrite + Unpin>(
    client: &mut W,
    buf: &mut BytesMut,
    ready: usize,
    tell: bool,
) -> SessionEnd {
    if ready > 0 {
        let _ = client.write_all(&buf[..ready]).await;
    }
    if tell {
        let mut out = BytesMut::new();
        protocol::error_response(
            &mut out,
            "FATAL",
            "08006",
            "rolegate: lost the connection to the upstream server",
            Some(
                "The upstream server closed the connection or became unreachable; reconnect to get a new session.",
            ),
        );
        let _ = client.write_all(&out).await;
    }
    SessionEnd::UpstreamGone
}

/// For a ParameterStatus body: the name of a pinned setting that no longer
/// has its pinned value (`client_encoding = UTF8`,
/// `standard_conforming_strings = on`).
fn unpinned_setting(body: &[u8]) -> Option<&'static str> {
    let mut b = body;
    let name = protocol::take_cstr(&mut b)?;
    let value = protocol::take_cstr(&mut b)?;
    crate::policy::unpinned_report(name, value)
}

/// Whether an ErrorResponse body has severity FATAL or PANIC.
fn is_fatal(body: &[u8]) -> bool {
    let mut b = body;
    while let Some((&field, rest)) = b.split_first() {
        if field == 0 {
            return false;
        }
        b = rest;
        let Some(v) = protocol::take_cstr(&mut b) else {
            return false;
        };
        if field == b'V' || field == b'S' {
            return v == b"FATAL" || v == b"PANIC";
        }
    }
    false
}
