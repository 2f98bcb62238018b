//! The first phase of a login: encryption (SSLRequest, direct TLS as
//! libpq 17's `sslnegotiation=direct` sends it, GSSENCRequest declined)
//! and the first real packet — a StartupMessage or a CancelRequest.
//!
//! Generic over the [`Transport`] so the phase runs in-process over
//! `tokio::io::duplex` in tests, as it runs over TCP in the proxy.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use pgwire::messages::startup::Startup;

use crate::protocol::{self, MaybeTls, ProtocolError, StartupPacket};

use super::LoginError;

/// A client connection before its login: a byte stream whose first byte
/// can be looked at without taking it (a direct TLS ClientHello starts
/// with 0x16).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The first byte the client sent, left in the stream; `None` when the
    /// client closed or the read failed.
    fn peek_first(&mut self) -> impl Future<Output = Option<u8>> + Send;
}

impl Transport for TcpStream {
    async fn peek_first(&mut self) -> Option<u8> {
        let mut first = [0u8; 1];
        matches!(self.peek(&mut first).await, Ok(1)).then_some(first[0])
    }
}

/// A client stream over transport `S`, plaintext or TLS.
pub type Stream<S> = MaybeTls<S, tokio_rustls::server::TlsStream<S>>;

/// More encryption requests than this on one connection is hostile.
const MAX_NEGOTIATIONS: usize = 3;

/// What the client opened the connection for.
pub enum Hello<S> {
    Startup(Stream<S>, Startup),
    Cancel(Stream<S>, i32, i32),
}

/// A handshake that failed, with the stream if there is one to answer on.
pub struct Failed<S>(pub Option<Stream<S>>, pub LoginError);

/// Negotiate encryption and read the StartupMessage or CancelRequest.
pub async fn negotiate<S: Transport>(
    io: S,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Hello<S>, Failed<S>> {
    let mut client = direct_tls(io, tls.as_ref()).await?;
    for _ in 0..MAX_NEGOTIATIONS {
        let packet = match protocol::read_startup_packet(&mut client).await {
            Ok(p) => p,
            Err(ProtocolError::Closed) => return Err(Failed(None, LoginError::Gone)),
            Err(e) => return Err(Failed(Some(client), LoginError::InvalidStartup(e))),
        };
        client = match packet {
            StartupPacket::SslRequest if !client.is_tls() => {
                answer_ssl(client, tls.as_ref()).await?
            }
            StartupPacket::GssEncRequest if !client.is_tls() => answer(client, b"N").await?,
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return Err(Failed(Some(client), LoginError::EncryptionTwice));
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Hello::Cancel(client, pid, secret)),
            StartupPacket::Startup(s) => return Ok(Hello::Startup(client, s)),
        };
    }
    // A fourth packet is read only to refuse it, as before.
    match protocol::read_startup_packet(&mut client).await {
        Err(ProtocolError::Closed) => Err(Failed(None, LoginError::Gone)),
        Err(e) => Err(Failed(Some(client), LoginError::InvalidStartup(e))),
        Ok(_) => Err(Failed(Some(client), LoginError::TooManyNegotiations)),
    }
}

/// Direct TLS: a TLS ClientHello (0x16) instead of an SSLRequest.
async fn direct_tls<S: Transport>(
    mut io: S,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Stream<S>, Failed<S>> {
    let Some(cfg) = tls else {
        return Ok(MaybeTls::Plain(io));
    };
    if io.peek_first().await == Some(0x16) {
        return accept_tls(io, cfg.clone()).await;
    }
    Ok(MaybeTls::Plain(io))
}

/// Answer an SSLRequest: `S` and a TLS handshake when TLS is configured,
/// `N` otherwise.
async fn answer_ssl<S: Transport>(
    client: Stream<S>,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Stream<S>, Failed<S>> {
    match (tls, client) {
        (Some(cfg), MaybeTls::Plain(mut io)) => {
            io.write_all(b"S")
                .await
                .map_err(|_| Failed(None, LoginError::Gone))?;
            accept_tls(io, cfg.clone()).await
        }
        (_, other) => answer(other, b"N").await,
    }
}

async fn answer<S: Transport>(mut client: Stream<S>, byte: &[u8]) -> Result<Stream<S>, Failed<S>> {
    match client.write_all(byte).await {
        Ok(()) => Ok(client),
        Err(_) => Err(Failed(None, LoginError::Gone)),
    }
}

async fn accept_tls<S: Transport>(
    io: S,
    cfg: Arc<rustls::ServerConfig>,
) -> Result<Stream<S>, Failed<S>> {
    match tokio_rustls::TlsAcceptor::from(cfg).accept(io).await {
        Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
        Err(e) => Err(Failed(None, LoginError::TlsHandshake(e.to_string()))),
    }
}
