//! The upstream connection: TCP, TLS negotiation per `upstream.tls`, the
//! StartupMessage, and authentication with the role's credentials
//! (SCRAM-SHA-256, md5 or cleartext, whichever the server asks for).
//!
//! The result is an [`UpstreamConn`] positioned just after the server's
//! first `ReadyForQuery`, with the `ParameterStatus` values and backend key
//! it announced, ready to be relayed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::fallible_iterator::FallibleIterator;

use crate::config::{Credentials, Secret};
use crate::protocol::backend::{self, ServerError};
use crate::protocol::{self, MAX_AUTH_MESSAGE, MaybeTls, ProtocolError};
use crate::tls::{UpstreamTls, UpstreamTlsMode};

pub mod scram;

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

pub type UpstreamStream = MaybeTls<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("the server at {0} does not support TLS, and upstream.tls requires it")]
    TlsRefused(String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    TlsConfig(String),
    #[error("upstream protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("upstream asked for a password but none is configured for role {0:?}")]
    NoPassword(String),
    #[error("upstream asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("upstream SCRAM exchange failed: {0}")]
    Scram(#[from] scram::ScramError),
    /// The server refused with an ErrorResponse.
    #[error("{message}")]
    Server {
        severity: String,
        code: String,
        message: String,
    },
}

/// Host, port and TLS settings: enough to open a connection (also used to
/// forward cancel requests).
#[derive(Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Arc<UpstreamTls>,
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// The endpoint for one credential set under the `[upstream]` TLS and
    /// timeout settings.
    pub fn new(creds: &Credentials, upstream: &crate::config::UpstreamConfig) -> Self {
        Endpoint {
            host: creds.host.clone(),
            port: creds.port,
            tls: upstream.tls.clone(),
            connect_timeout: upstream.connect_timeout,
        }
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether the server answers: a TCP connect and an SSLRequest, which a
    /// postmaster answers with `S` or `N` without starting a backend.
    pub async fn probe(&self) -> bool {
        let Ok(Ok(mut tcp)) =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr())).await
        else {
            return false;
        };
        let mut a = [0u8; 1];
        tcp.write_all(&protocol::SSL_REQUEST).await.is_ok()
            && tcp.read_exact(&mut a).await.is_ok()
            && matches!(a[0], b'S' | b'N')
    }

    /// Open a connection and negotiate TLS as configured.
    pub async fn open(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.addr();
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Err(_) => return Err(UpstreamError::Timeout(addr)),
        };
        let _ = tcp.set_nodelay(true);
        let Some(config) = self.tls.config.clone() else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let mut tcp = tcp;
        let answer = async {
            tcp.write_all(&protocol::SSL_REQUEST).await?;
            let mut a = [0u8; 1];
            tcp.read_exact(&mut a).await?;
            Ok::<u8, std::io::Error>(a[0])
        };
        let answer = match tokio::time::timeout(self.connect_timeout, answer).await {
            Ok(Ok(a)) => a,
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Err(_) => return Err(UpstreamError::Timeout(addr)),
        };
        match answer {
            b'S' => {}
            b'N' if self.tls.mode == UpstreamTlsMode::Prefer => return Ok(MaybeTls::Plain(tcp)),
            b'N' => return Err(UpstreamError::TlsRefused(addr)),
            other => {
                return Err(UpstreamError::Protocol(ProtocolError::Unexpected(
                    other as char,
                )));
            }
        }
        let name = UpstreamTls::server_name(&self.host)
            .map_err(|e| UpstreamError::TlsConfig(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls))),
            Ok(Err(source)) => Err(UpstreamError::Tls { addr, source }),
            Err(_) => Err(UpstreamError::Timeout(addr)),
        }
    }
}

/// An authenticated upstream session, just after its first ReadyForQuery.
pub struct UpstreamConn {
    pub stream: UpstreamStream,
    /// Bytes the server sent after ReadyForQuery (normally none).
    pub read_ahead: BytesMut,
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus messages and notices, raw, in the order received, to
    /// be replayed to the client (emptied once it has been).
    pub greeting: BytesMut,
    /// The `server_version` etc. the server announced, kept current
    /// across pooled reuse.
    pub parameters: Parameters,
    /// When the connection was opened (for `pool.max_lifetime`).
    pub born: std::time::Instant,
}

impl UpstreamConn {
    /// Record a reported setting's new value.
    pub fn set_parameter(&mut self, name: &str, value: &str) {
        self.parameters.set(name, value);
    }

    /// The ParameterStatus messages a client of a reused session is
    /// greeted with: the current values, not the first login's notices.
    pub fn reuse_greeting(&mut self) {
        self.greeting.clear();
        for (k, v) in self.parameters.iter() {
            protocol::parameter_status(&mut self.greeting, k, v);
        }
    }
}

/// Reported settings as `name NUL value NUL …` in one allocation: every
/// session keeps its server's dozen or so for its whole life, and a pair
/// of `String`s each would cost more than the rest of an idle session's
/// bookkeeping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parameters(String);

impl Parameters {
    /// Every (name, value), in the order first reported.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.split_terminator('\0');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// Set `name` to `value`, in place if it is known, else at the end.
    /// Names and values with a NUL cannot come from the protocol and are
    /// ignored.
    pub fn set(&mut self, name: &str, value: &str) {
        if name.contains('\0') || value.contains('\0') {
            return;
        }
        let mut next = String::with_capacity(self.0.len() + name.len() + value.len() + 2);
        let mut found = false;
        for (k, v) in self.iter() {
            let v = if k == name {
                found = true;
                value
            } else {
                v
            };
            push_pair(&mut next, k, v);
        }
        if !found {
            push_pair(&mut next, name, value);
        }
        next.shrink_to_fit();
        self.0 = next;
    }
}

fn push_pair(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push('\0');
    out.push_str(value);
    out.push('\0');
}

/// The relay holds an upstream session as a lease: the stream, and the
/// server's bytes no client has been given yet.
impl crate::relay::Upstream for UpstreamConn {
    fn read_ahead(&mut self) -> &mut BytesMut {
        &mut self.read_ahead
    }
}

impl AsyncRead for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Connect and authenticate as `creds`, passing `params` (the client's
/// startup parameters, already filtered) in the StartupMessage.
pub async fn connect(
    endpoint: &Endpoint,
    creds: &Credentials,
    params: &[(String, String)],
) -> Result<UpstreamConn, UpstreamError> {
    let mut stream = endpoint.open().await?;
    let fut = async {
        let mut out = BytesMut::with_capacity(256);
        let pairs = [
            ("user", creds.user.as_str()),
            ("database", creds.database.as_str()),
        ];
        let params = pairs
            .into_iter()
            .chain(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(params, &mut out).map_err(ProtocolError::Io)?;
        stream.write_all(&out).await.map_err(ProtocolError::Io)?;
        let mut buf = BytesMut::with_capacity(1024);
        authenticate(&mut stream, &mut buf, creds).await?;
        let mut conn = UpstreamConn {
            stream,
            read_ahead: BytesMut::new(),
            pid: 0,
            secret: 0,
            greeting: BytesMut::new(),
            parameters: Parameters::default(),
            born: std::time::Instant::now(),
        };
        greeted(&mut conn, &mut buf).await?;
        conn.read_ahead = buf;
        Ok(conn)
    };
    // The whole login is bounded: a server that accepts TCP and then stalls
    // must not hang a client's login forever.
    match tokio::time::timeout(endpoint.connect_timeout * 2, fut).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout(endpoint.addr())),
    }
}

/// After AuthenticationOk: the server's ParameterStatus messages and
/// notices (kept raw for the client's greeting), its BackendKeyData, up to
/// the first ReadyForQuery.
async fn greeted(conn: &mut UpstreamConn, buf: &mut BytesMut) -> Result<(), UpstreamError> {
    loop {
        // ParameterStatus values can be long (e.g. search_path), but the
        // server bounds them; the message cap only stops a hostile peer.
        let mut frame = protocol::read_frame(&mut conn.stream, buf, 1 << 20).await?;
        let tag = frame[0];
        if matches!(tag, b'S' | b'N') {
            conn.greeting.extend_from_slice(&frame);
        }
        // NegotiateProtocolVersion: we asked for 3.0 and send no _pq_
        // options, so a server has no reason to send one.
        match backend::decode(&mut frame)? {
            // A value that is not UTF-8 (a migration session's own
            // client_encoding) still reaches the client raw; only pooled
            // runtime sessions, pinned to UTF8, replay the recorded values.
            Message::ParameterStatus(p) => {
                if let (Ok(k), Ok(v)) = (p.name(), p.value()) {
                    conn.parameters.set(k, v);
                }
            }
            Message::NoticeResponse(_) => {}
            Message::BackendKeyData(k) => {
                conn.pid = k.process_id();
                conn.secret = k.secret_key();
            }
            Message::ErrorResponse(e) => return Err(server_error(e.fields())),
            Message::ReadyForQuery(_) => return Ok(()),
            _ => return Err(ProtocolError::Unexpected(tag as char).into()),
        }
    }
}

fn password(creds: &Credentials) -> Result<&Secret, UpstreamError> {
    creds
        .password
        .as_ref()
        .ok_or_else(|| UpstreamError::NoPassword(creds.user.clone()))
}

async fn send(stream: &mut UpstreamStream, out: &BytesMut) -> Result<(), UpstreamError> {
    stream.write_all(out).await.map_err(ProtocolError::Io)?;
    Ok(())
}

async fn authenticate(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    creds: &Credentials,
) -> Result<(), UpstreamError> {
    let mut scram: Option<scram::ScramClient> = None;
    let mut out = BytesMut::with_capacity(256);
    loop {
        let mut frame = protocol::read_frame(stream, buf, MAX_AUTH_MESSAGE).await?;
        let tag = frame[0];
        out.clear();
        match backend::decode(&mut frame)? {
            Message::ErrorResponse(e) => return Err(server_error(e.fields())),
            // A NoticeResponse before authentication is unusual but legal.
            Message::NoticeResponse(_) => continue,
            // A server that skips SASLFinal has not proved it knows the
            // password: refuse, as libpq does.
            Message::AuthenticationOk if scram.as_ref().is_some_and(|s| !s.finished()) => {
                return Err(scram::ScramError::Order.into());
            }
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let pw = password(creds)?;
                frontend::password_message(pw.expose().as_bytes(), &mut out)
                    .map_err(ProtocolError::Io)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let pw = password(creds)?;
                let hash = postgres_protocol::authentication::md5_hash(
                    creds.user.as_bytes(),
                    pw.expose().as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(ProtocolError::Io)?;
            }
            Message::AuthenticationSasl(body) => {
                let offered = body
                    .mechanisms()
                    .any(|m| Ok(m == SCRAM_SHA_256))
                    .map_err(|source| ProtocolError::Malformed { tag: 'R', source })?;
                if !offered {
                    return Err(UpstreamError::UnsupportedAuth(
                        "SASL without SCRAM-SHA-256".into(),
                    ));
                }
                let pw = password(creds)?;
                let mut s = scram::ScramClient::new(&creds.user, pw.expose(), scram::cache());
                frontend::sasl_initial_response(
                    SCRAM_SHA_256,
                    s.client_first().as_slice(),
                    &mut out,
                )
                .map_err(ProtocolError::Io)?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram.as_mut().ok_or(ProtocolError::Unexpected('R'))?;
                let reply = s.client_final(body.data())?;
                frontend::sasl_response(&reply, &mut out).map_err(ProtocolError::Io)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = scram.as_mut().ok_or(ProtocolError::Unexpected('R'))?;
                s.verify_server_final(body.data())?;
                continue;
            }
            Message::AuthenticationKerberosV5 => return Err(unsupported(2)),
            Message::AuthenticationScmCredential => return Err(unsupported(6)),
            Message::AuthenticationGss => return Err(unsupported(7)),
            Message::AuthenticationGssContinue(_) => return Err(unsupported(8)),
            Message::AuthenticationSspi => return Err(unsupported(9)),
            _ => return Err(ProtocolError::Unexpected(tag as char).into()),
        }
        send(stream, &out).await?;
    }
}

fn unsupported(code: i32) -> UpstreamError {
    UpstreamError::UnsupportedAuth(format!("code {code}"))
}

/// The server refused: its severity, SQLSTATE and message (a FATAL
/// connection failure where it left them out).
fn server_error(fields: postgres_protocol::message::backend::ErrorFields<'_>) -> UpstreamError {
    let e = ServerError::from_fields(fields).unwrap_or_default();
    let or = |v: String, default: &str| if v.is_empty() { default.to_string() } else { v };
    UpstreamError::Server {
        severity: or(e.severity, "FATAL"),
        code: or(e.code, "08006"),
        message: or(e.message, "upstream error"),
    }
}

#[cfg(test)]
mod tests {
    use super::Parameters;

    #[test]
    fn parameters_keep_their_order_and_latest_values() {
        let mut p = Parameters::default();
        p.set("server_version", "15.18");
        p.set("TimeZone", "UTC");
        p.set("application_name", "");
        p.set("TimeZone", "Europe/Berlin");
        p.set("bad\0name", "x");
        let got: Vec<(&str, &str)> = p.iter().collect();
        assert_eq!(
            got,
            [
                ("server_version", "15.18"),
                ("TimeZone", "Europe/Berlin"),
                ("application_name", ""),
            ]
        );
    }
}
