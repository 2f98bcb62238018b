//! The session relay: once both sides are authenticated, bytes flow
//! client → upstream and upstream → client until either side leaves.
//!
//! Both directions forward in bulk: one read becomes (at most) one write,
//! with frame boundaries tracked by reading only 5-byte headers, so rows
//! and COPY data are never decoded and nothing is allocated per message.
//! The two directions run concurrently so a client that pipelines faster
//! than it reads cannot deadlock the proxy against the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{self, FrameHeader, ProtocolError};

/// Read chunk size: large enough that a result set streams in few syscalls,
/// small enough that 1,000 idle sessions stay cheap (buffers grow on demand).
const READ_CHUNK: usize = 16 * 1024;

/// What one session shares between its two directions and its owner.
#[derive(Debug, Default)]
pub struct SessionState {
    /// The transaction status byte of the last ReadyForQuery: `I`, `T` or `E`.
    pub tx_status: AtomicU8,
    pub bytes_to_upstream: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub statements: AtomicU64,
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
}

/// Relay until one side ends. `client_pending` holds bytes the client sent
/// during login that belong to the session; `upstream_pending` likewise for
/// the server.
pub async fn relay<C, U>(
    client: C,
    client_pending: BytesMut,
    upstream: U,
    upstream_pending: BytesMut,
    state: Arc<SessionState>,
    max_message: usize,
) -> SessionEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let c2s = client_to_upstream(
        &mut client_r,
        &mut upstream_w,
        client_pending,
        &state,
        max_message,
    );
    let s2c = upstream_to_client(&mut upstream_r, &mut client_w, upstream_pending, &state);
    let end = tokio::select! {
        end = c2s => end,
        end = s2c => end,
    };
    if let SessionEnd::ClientProtocol(e) = &end {
        let mut out = BytesMut::new();
        protocol::error_response(
            &mut out,
            "FATAL",
            "08P01",
            &format!("rolegate: invalid frontend message: {e}"),
            None,
        );
        let _ = client_w.write_all(&out).await;
    }
    let _ = client_w.shutdown().await;
    let _ = upstream_w.shutdown().await;
    end
}

/// Client → upstream. Frames are forwarded as they arrive; `Terminate`
/// ends the session.
async fn client_to_upstream<R, W>(
    client: &mut R,
    upstream: &mut W,
    mut buf: BytesMut,
    state: &SessionState,
    max_message: usize,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Bytes still to pass of a frame whose header was already seen.
    let mut in_frame: usize = 0;
    loop {
        let mut ready = 0usize;
        let mut terminated = false;
        loop {
            if in_frame > 0 {
                let n = in_frame.min(buf.len() - ready);
                ready += n;
                in_frame -= n;
                if in_frame > 0 {
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
                    ready += header.total().min(buf.len() - ready);
                    terminated = true;
                    break;
                }
                b'Q' | b'P' => {
                    state.statements.fetch_add(1, Ordering::Relaxed);
                    in_frame = header.total();
                }
                _ => in_frame = header.total(),
            }
        }
        if ready > 0 {
            if upstream.write_all(&buf[..ready]).await.is_err() {
                // The upstream side reports its own end.
                return SessionEnd::UpstreamGone;
            }
            state
                .bytes_to_upstream
                .fetch_add(ready as u64, Ordering::Relaxed);
            buf.advance(ready);
        }
        if terminated {
            return SessionEnd::Terminated;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match client.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return SessionEnd::ClientGone,
            Ok(_) => {}
        }
    }
}

/// Upstream → client, in bulk. Only `ReadyForQuery` is looked into (for
/// the transaction status); everything else passes by header.
async fn upstream_to_client<R, W>(
    upstream: &mut R,
    client: &mut W,
    mut buf: BytesMut,
    state: &SessionState,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut in_frame: usize = 0;
    // Whether the server already told the client why it is closing.
    let mut sent_fatal = false;
    loop {
        let mut ready = 0usize;
        loop {
            if in_frame > 0 {
                let n = in_frame.min(buf.len() - ready);
                ready += n;
                in_frame -= n;
                if in_frame > 0 {
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
                    return end_upstream(client, &mut buf, ready, true).await;
                }
            };
            match header.tag {
                b'Z' | b'E' => {
                    // Small frames whose body matters: wait for all of it.
                    let total = header.total();
                    if buf.len() - ready < total {
                        if total > 64 * 1024 {
                            // An error response is never this large; pass it
                            // through without looking.
                            in_frame = total;
                            continue;
                        }
                        break;
                    }
                    let body = &buf[ready + FrameHeader::SIZE..ready + total];
                    if header.tag == b'Z' {
                        if let Some(s) = body.first() {
                            state.tx_status.store(*s, Ordering::Relaxed);
                        }
                    } else if is_fatal(body) {
                        sent_fatal = true;
                    }
                    ready += total;
                }
                _ => in_frame = header.total(),
            }
        }
        if ready > 0 {
            if client.write_all(&buf[..ready]).await.is_err() {
                return SessionEnd::ClientGone;
            }
            state
                .bytes_to_client
                .fetch_add(ready as u64, Ordering::Relaxed);
            buf.advance(ready);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match upstream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let at_boundary = in_frame == 0;
                return end_upstream(client, &mut buf, 0, at_boundary && !sent_fatal).await;
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
