//! The upstream connection: TCP, TLS negotiation per `upstream.tls`, the
//! StartupMessage, and authentication with the role's credentials
//! (SCRAM-SHA-256, md5 or cleartext, whichever the server asks for).
//!
//! The result is an [`UpstreamConn`] positioned just after the server's
//! first `ReadyForQuery`, with the `ParameterStatus` values and backend key
//! it announced, ready to be relayed.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Credentials, Secret};
use crate::protocol::{self, MAX_AUTH_MESSAGE, MaybeTls, ProtocolError};
use crate::tls::{UpstreamTls, UpstreamTlsMode};

pub mod scram;

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

pub type UpstreamStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

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
    /// be replayed to the client.
    pub greeting: BytesMut,
    /// The `server_version` etc. the server announced, kept current
    /// across pooled reuse.
    pub parameters: Vec<(String, String)>,
    /// When the connection was opened (for `pool.max_lifetime`).
    pub born: std::time::Instant,
}

impl UpstreamConn {
    /// Record a ParameterStatus body (name, value).
    pub fn set_parameter(&mut self, body: &[u8]) {
        let mut b = body;
        let (Some(k), Some(v)) = (protocol::take_cstr(&mut b), protocol::take_cstr(&mut b)) else {
            return;
        };
        let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v));
        match self.parameters.iter_mut().find(|(name, _)| *name == k) {
            Some(entry) => entry.1 = v.into_owned(),
            None => self.parameters.push((k.into_owned(), v.into_owned())),
        }
    }

    /// The ParameterStatus messages a client of a reused session is
    /// greeted with: the current values, not the first login's notices.
    pub fn reuse_greeting(&mut self) {
        self.greeting.clear();
        for (k, v) in &self.parameters {
            let mut body = Vec::with_capacity(k.len() + v.len() + 2);
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
            push_raw(&mut self.greeting, b'S', &body);
        }
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
        out.put_i32(0);
        out.put_u32(protocol::PROTOCOL_3_0);
        for (k, v) in [
            ("user", creds.user.as_str()),
            ("database", creds.database.as_str()),
        ]
        .into_iter()
        .chain(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            out.put_slice(k.as_bytes());
            out.put_u8(0);
            out.put_slice(v.as_bytes());
            out.put_u8(0);
        }
        out.put_u8(0);
        let len = out.len() as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&out).await.map_err(ProtocolError::Io)?;
        let mut buf = BytesMut::with_capacity(1024);
        authenticate(&mut stream, &mut buf, creds).await?;
        let mut conn = UpstreamConn {
            stream,
            read_ahead: BytesMut::new(),
            pid: 0,
            secret: 0,
            greeting: BytesMut::new(),
            parameters: Vec::new(),
            born: std::time::Instant::now(),
        };
        loop {
            // ParameterStatus values can be long (e.g. search_path), but the
            // server bounds them; the message cap only stops a hostile peer.
            let (tag, body) = protocol::read_message(&mut conn.stream, &mut buf, 1 << 20).await?;
            match tag {
                b'S' => {
                    let mut b: &[u8] = &body;
                    if let (Some(k), Some(v)) =
                        (protocol::take_cstr(&mut b), protocol::take_cstr(&mut b))
                    {
                        conn.parameters.push((
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        ));
                    }
                    push_raw(&mut conn.greeting, tag, &body);
                }
                b'N' => push_raw(&mut conn.greeting, tag, &body),
                b'K' => {
                    if body.len() < 8 {
                        return Err(ProtocolError::BadLength {
                            tag: 'K',
                            len: body.len() as i64 + 4,
                        }
                        .into());
                    }
                    conn.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    conn.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'E' => return Err(server_error(&body)),
                b'Z' => {
                    conn.read_ahead = buf;
                    return Ok(conn);
                }
                // NegotiateProtocolVersion: we asked for 3.0 and send no
                // _pq_ options, so a server has no reason to send one.
                other => return Err(ProtocolError::Unexpected(other as char).into()),
            }
        }
    };
    // The whole login is bounded: a server that accepts TCP and then stalls
    // must not hang a client's login forever.
    match tokio::time::timeout(endpoint.connect_timeout * 2, fut).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout(endpoint.addr())),
    }
}

fn push_raw(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn password(creds: &Credentials) -> Result<&Secret, UpstreamError> {
    creds
        .password
        .as_ref()
        .ok_or_else(|| UpstreamError::NoPassword(creds.user.clone()))
}

async fn send_password_message(
    stream: &mut UpstreamStream,
    body: &[u8],
) -> Result<(), UpstreamError> {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b'p');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    stream.write_all(&out).await.map_err(ProtocolError::Io)?;
    Ok(())
}

async fn authenticate(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    creds: &Credentials,
) -> Result<(), UpstreamError> {
    let mut scram: Option<scram::ScramClient> = None;
    loop {
        let (tag, body) = protocol::read_message(stream, buf, MAX_AUTH_MESSAGE).await?;
        match tag {
            b'E' => return Err(server_error(&body)),
            b'R' => {}
            // A NoticeResponse before authentication is unusual but legal.
            b'N' => continue,
            other => return Err(ProtocolError::Unexpected(other as char).into()),
        }
        if body.len() < 4 {
            return Err(ProtocolError::BadLength {
                tag: 'R',
                len: body.len() as i64 + 4,
            }
            .into());
        }
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let rest = &body[4..];
        match code {
            // A server that skips SASLFinal has not proved it knows the
            // password: refuse, as libpq does.
            0 if scram.as_ref().is_some_and(|s| !s.finished()) => {
                return Err(scram::ScramError::Order.into());
            }
            0 => return Ok(()),
            3 => {
                let pw = password(creds)?;
                let mut msg = Vec::with_capacity(pw.expose().len() + 1);
                msg.extend_from_slice(pw.expose().as_bytes());
                msg.push(0);
                send_password_message(stream, &msg).await?;
            }
            5 => {
                let salt: [u8; 4] = rest.get(..4).and_then(|s| s.try_into().ok()).ok_or(
                    ProtocolError::BadLength {
                        tag: 'R',
                        len: body.len() as i64 + 4,
                    },
                )?;
                let pw = password(creds)?;
                let hash = postgres_protocol::authentication::md5_hash(
                    creds.user.as_bytes(),
                    pw.expose().as_bytes(),
                    salt,
                );
                let mut msg = hash.into_bytes();
                msg.push(0);
                send_password_message(stream, &msg).await?;
            }
            10 => {
                let mut mechs: &[u8] = rest;
                let mut offered = false;
                while let Some(m) = protocol::take_cstr(&mut mechs) {
                    if m.is_empty() {
                        break;
                    }
                    offered |= m == SCRAM_SHA_256.as_bytes();
                }
                if !offered {
                    return Err(UpstreamError::UnsupportedAuth(
                        "SASL without SCRAM-SHA-256".into(),
                    ));
                }
                let pw = password(creds)?;
                let mut s = scram::ScramClient::new(&creds.user, pw.expose(), scram::cache());
                let first = s.client_first();
                let first = first.as_slice();
                let mut msg = Vec::with_capacity(first.len() + 32);
                msg.extend_from_slice(SCRAM_SHA_256.as_bytes());
                msg.push(0);
                msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
                msg.extend_from_slice(first);
                send_password_message(stream, &msg).await?;
                scram = Some(s);
            }
            11 => {
                let s = scram.as_mut().ok_or(ProtocolError::Unexpected('R'))?;
                let reply = s.client_final(rest)?;
                send_password_message(stream, &reply).await?;
            }
            12 => {
                let s = scram.as_mut().ok_or(ProtocolError::Unexpected('R'))?;
                s.verify_server_final(rest)?;
            }
            other => return Err(UpstreamError::UnsupportedAuth(format!("code {other}"))),
        }
    }
}

/// Pull severity, SQLSTATE and message out of an ErrorResponse body.
pub fn server_error(body: &[u8]) -> UpstreamError {
    let mut severity = String::from("FATAL");
    let mut code = String::from("08006");
    let mut message = String::from("upstream error");
    let mut b: &[u8] = body;
    while let Some((&field, rest)) = b.split_first() {
        if field == 0 {
            break;
        }
        b = rest;
        let Some(v) = protocol::take_cstr(&mut b) else {
            break;
        };
        let v = String::from_utf8_lossy(v).into_owned();
        match field {
            b'V' => severity = v,
            b'C' => code = v,
            b'M' => message = v,
            _ => {}
        }
    }
    UpstreamError::Server {
        severity,
        code,
        message,
    }
}
