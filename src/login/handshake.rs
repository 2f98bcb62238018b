//! The first phase of a login: encryption (SSLRequest, direct TLS as
//! libpq 17's `sslnegotiation=direct` sends it, GSSENCRequest declined)
//! and the first real packet — a StartupMessage or a CancelRequest.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use pgwire::messages::startup::Startup;

use crate::protocol::{self, ClientStream, MaybeTls, ProtocolError, StartupPacket};

use super::LoginError;

/// More encryption requests than this on one connection is hostile.
const MAX_NEGOTIATIONS: usize = 3;

/// What the client opened the connection for.
pub enum Hello {
    Startup(ClientStream, Startup),
    Cancel(ClientStream, i32, i32),
}

/// A handshake that failed, with the stream if there is one to answer on.
pub struct Failed(pub Option<ClientStream>, pub LoginError);

/// Negotiate encryption and read the StartupMessage or CancelRequest.
pub async fn negotiate(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Hello, Failed> {
    let mut client = direct_tls(tcp, tls.as_ref()).await?;
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
async fn direct_tls(
    tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<ClientStream, Failed> {
    let Some(cfg) = tls else {
        return Ok(MaybeTls::Plain(tcp));
    };
    let mut first = [0u8; 1];
    if matches!(tcp.peek(&mut first).await, Ok(1)) && first[0] == 0x16 {
        return accept_tls(tcp, cfg.clone()).await;
    }
    Ok(MaybeTls::Plain(tcp))
}

/// Answer an SSLRequest: `S` and a TLS handshake when TLS is configured,
/// `N` otherwise.
async fn answer_ssl(
    client: ClientStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<ClientStream, Failed> {
    match (tls, client) {
        (Some(cfg), MaybeTls::Plain(mut tcp)) => {
            tcp.write_all(b"S")
                .await
                .map_err(|_| Failed(None, LoginError::Gone))?;
            accept_tls(tcp, cfg.clone()).await
        }
        (_, other) => answer(other, b"N").await,
    }
}

async fn answer(mut client: ClientStream, byte: &[u8]) -> Result<ClientStream, Failed> {
    match client.write_all(byte).await {
        Ok(()) => Ok(client),
        Err(_) => Err(Failed(None, LoginError::Gone)),
    }
}

async fn accept_tls(
    tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
) -> Result<ClientStream, Failed> {
    match tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
        Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
        Err(e) => Err(Failed(None, LoginError::TlsHandshake(e.to_string()))),
    }
}
