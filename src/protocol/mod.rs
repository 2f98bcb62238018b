//! Protocol framing: the PostgreSQL v3 wire format as the proxy needs it.
//!
//! Startup-phase packets and the messages the proxy itself writes are
//! decoded and encoded with `pgwire`'s codecs; the few messages it reads
//! after that have typed bodies in [`backend`] and [`frontend`]. Relayed
//! traffic is never decoded into structs: [`FrameHeader`] reads just the
//! 5-byte header so the relay can track boundaries and forward bytes in bulk.
//!
//! Every length that comes off the network is checked before it is used, so
//! a malformed or hostile packet is an error for that connection, never a
//! panic or an unbounded allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use pgwire::error::ErrorInfo;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, ParameterStatus, SecretKey, Startup,
};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub mod backend;
pub mod frontend;

/// Codes in the "protocol version" slot of an untyped startup packet.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
pub const PROTOCOL_3_0: u32 = 196_608;

/// The whole SSLRequest packet: length 8, then the request code.
pub const SSL_REQUEST: [u8; 8] = {
    let code = SSL_REQUEST_CODE.to_be_bytes();
    [0, 0, 0, 8, code[0], code[1], code[2], code[3]]
};

/// `Terminate`.
pub const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// PostgreSQL's own limit for startup packets (pqcomm.h MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// Authentication-phase messages are small; anything larger is hostile.
pub const MAX_AUTH_MESSAGE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet: {0}")]
    BadStartup(String),
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("unexpected message type {0:?}")]
    Unexpected(char),
    #[error("truncated message of type {0:?}")]
    Truncated(char),
    #[error("malformed message of type {tag:?}: {source}")]
    Malformed { tag: char, source: std::io::Error },
}

/// The first packet of a connection.
#[derive(Debug)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(Startup),
}

/// Whether a StartupMessage body is exactly name NUL value NUL pairs
/// followed by one terminating NUL.
fn startup_layout_ok(mut body: &[u8]) -> bool {
    loop {
        match take_cstr(&mut body) {
            Some([]) => return body.is_empty(),
            Some(_) => {
                if take_cstr(&mut body).is_none() {
                    return false;
                }
            }
            None => return false,
        }
    }
}

/// Read one untyped startup-phase packet (length + code + body).
pub async fn read_startup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<StartupPacket, ProtocolError> {
    let mut len_buf = [0u8; 4];
    match stream.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len_buf) as i64;
    if !(8..=MAX_STARTUP_PACKET as i64).contains(&len) {
        return Err(ProtocolError::BadStartupLength(len));
    }
    let mut buf = BytesMut::with_capacity(len as usize);
    buf.put_slice(&len_buf);
    buf.resize(len as usize, 0);
    stream.read_exact(&mut buf[4..]).await?;
    let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    match code {
        SSL_REQUEST_CODE if len == 8 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if len == 8 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE if len == 16 => {
            // Exactly 16 bytes: protocol 3.0's Int32 key, never the longer
            // keys of 3.2.
            let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
            match CancelRequest::decode(&mut buf, &ctx) {
                Ok(Some(c)) => match c.secret_key.as_i32() {
                    Some(secret) => Ok(StartupPacket::Cancel { pid: c.pid, secret }),
                    None => Err(ProtocolError::BadStartupLength(len)),
                },
                _ => Err(ProtocolError::BadStartupLength(len)),
            }
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            Err(ProtocolError::BadStartupLength(len))
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            // pgwire decodes keys and values lossily; the proxy must not
            // "repair" what the server would reject, so check first.
            let body = &buf[8..];
            if std::str::from_utf8(body).is_err() {
                return Err(ProtocolError::BadStartup(
                    "parameters are not valid UTF-8".into(),
                ));
            }
            // The list ends with an empty name: a value's NUL followed by
            // the terminator NUL (or the terminator alone for no
            // parameters), exactly as PostgreSQL requires.
            let terminated = startup_layout_ok(body);
            if !terminated {
                return Err(ProtocolError::BadStartup(
                    "parameter list is not terminated".into(),
                ));
            }
            let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
            match Startup::decode(&mut buf, &ctx) {
                Ok(Some(s)) => Ok(StartupPacket::Startup(s)),
                Ok(None) => Err(ProtocolError::BadStartup("truncated".into())),
                Err(e) => Err(ProtocolError::BadStartup(e.to_string())),
            }
        }
    }
}

/// The header of a typed message: tag and the length field (which counts
/// itself but not the tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tag: u8,
    pub len: u32,
}

impl FrameHeader {
    pub const SIZE: usize = 5;

    /// Parse a header from the first five bytes of `buf`, if present.
    /// Lengths below 4 or above `max` are errors.
    #[inline]
    pub fn parse(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, ProtocolError> {
        if buf.len() < Self::SIZE {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
        if len < 4 || len as u64 > max as u64 {
            return Err(ProtocolError::BadLength {
                tag: buf[0] as char,
                len,
            });
        }
        Ok(Some(FrameHeader {
            tag: buf[0],
            len: len as u32,
        }))
    }

    /// Total bytes of the frame on the wire.
    #[inline]
    pub fn total(&self) -> usize {
        1 + self.len as usize
    }
}

/// Read one whole typed message (for the authentication phases, where the
/// proxy needs each message in full). `buf` keeps read-ahead bytes between
/// calls. Returns the tag and the body.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(u8, BytesMut), ProtocolError> {
    let mut frame = read_frame(stream, buf, max).await?;
    let tag = frame[0];
    frame.advance(FrameHeader::SIZE);
    Ok((tag, frame))
}

/// Like [`read_message`], but the whole frame, header included (what
/// [`backend::decode`] takes).
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<BytesMut, ProtocolError> {
    loop {
        if let Some(h) = FrameHeader::parse(buf, max)? {
            if buf.len() >= h.total() {
                return Ok(buf.split_to(h.total()));
            }
            buf.reserve(h.total() - buf.len());
        } else {
            buf.reserve(64);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ProtocolError::Closed);
        }
    }
}

/// Append a pgwire message to `buf`. Encoding the proxy's own small messages
/// cannot exceed pgwire's limits, so a failure here is a bug, logged and
/// otherwise ignored rather than a panic.
pub fn put<M: Message>(buf: &mut BytesMut, msg: &M) {
    if let Err(e) = msg.encode(buf) {
        tracing::error!(error = %e, "failed to encode a protocol message");
    }
}

/// An `ErrorResponse` as PostgreSQL writes it.
pub fn error_response(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let mut info = ErrorInfo::new(severity.to_string(), code.to_string(), message.to_string());
    info.severity_nonlocalized = Some(severity.to_string());
    info.hint = hint.map(str::to_string);
    put(buf, &ErrorResponse::from(info));
}

/// A `NoticeResponse`.
pub fn notice_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let mut info = ErrorInfo::new(severity.to_string(), code.to_string(), message.to_string());
    info.severity_nonlocalized = Some(severity.to_string());
    put(buf, &NoticeResponse::from(info));
}

pub fn auth_ok(buf: &mut BytesMut) {
    put(buf, &Authentication::Ok);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put(
        buf,
        &ParameterStatus::new(name.to_string(), value.to_string()),
    );
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(buf, &BackendKeyData::new(pid, SecretKey::I32(secret)));
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    put(buf, &ReadyForQuery::new(status));
}

/// Read a NUL-terminated string from the front of `buf`.
pub fn take_cstr<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = buf.iter().position(|b| *b == 0)?;
    let (s, rest) = buf.split_at(end);
    *buf = &rest[1..];
    Some(s)
}

/// A client connection, plaintext or TLS.
pub type ClientStream = MaybeTls<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// A connection (`P`) that may have been upgraded to TLS (`T`).
pub enum MaybeTls<P, T> {
    Plain(P),
    Tls(Box<T>),
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for MaybeTls<P, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<P, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl<P, T> MaybeTls<P, T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_layout_is_exact() {
        assert!(startup_layout_ok(b"\0"));
        assert!(startup_layout_ok(b"user\0web\0\0"));
        assert!(startup_layout_ok(b"user\0\0\0"));
        assert!(!startup_layout_ok(b""));
        assert!(!startup_layout_ok(b"user\0web\0database\0"));
        assert!(!startup_layout_ok(b"user\0\0"));
        assert!(!startup_layout_ok(b"user\0web\0\0x"));
    }

    #[test]
    fn header_rejects_bad_lengths() {
        assert!(FrameHeader::parse(&[b'Q', 0, 0, 0, 3], 100).is_err());
        assert!(FrameHeader::parse(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100).is_err());
        assert!(FrameHeader::parse(&[b'Q', 0, 0, 1, 0], 100).is_err());
        assert_eq!(FrameHeader::parse(&[b'Q', 0, 0], 100).ok(), Some(None));
        let h = FrameHeader::parse(&[b'Q', 0, 0, 0, 9], 100).ok().flatten();
        assert_eq!(h.map(|h| h.total()), Some(10));
    }

    #[tokio::test]
    async fn startup_packet_limits() {
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_startup_packet(&mut huge).await,
            Err(ProtocolError::BadStartupLength(_))
        ));
        let mut neg: &[u8] = &[0xff, 0xff, 0xff, 0xf0];
        assert!(read_startup_packet(&mut neg).await.is_err());
        let mut ssl: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(matches!(
            read_startup_packet(&mut ssl).await,
            Ok(StartupPacket::SslRequest)
        ));
        // Unterminated parameter list.
        let mut p = vec![0, 0, 0, 0, 0, 3, 0, 0];
        p.extend_from_slice(b"user\0web");
        let n = p.len() as u32;
        p[..4].copy_from_slice(&n.to_be_bytes());
        let mut s: &[u8] = &p;
        assert!(read_startup_packet(&mut s).await.is_err());
    }
}
