//! The login sequence of one connection: TLS negotiation (`SSLRequest`,
//! direct TLS, `GSSENCRequest` refused), the StartupMessage, cancel
//! requests, client authentication (SCRAM for runtime identities), startup
//! parameter filtering, and the upstream connection for the client's role.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pgwire::messages::startup::{Authentication, NegotiateProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::cancel::UpstreamKey;
use crate::client_auth::{AuthError, SCRAM_SHA_256, ScramServer, ScramVerifier};
use crate::config::ListenTlsMode;
use crate::protocol::{self, MAX_AUTH_MESSAGE, MaybeTls, ProtocolError, StartupPacket};
use crate::server::{ClientStream, Proxy, Runtime};
use crate::session::SessionState;
use crate::upstream::{self, UpstreamError};

/// Negotiate, authenticate and connect upstream. Returns `None` when the
/// connection was a cancel request or was refused (the client has
/// already been told why).
pub(crate) async fn login(
    proxy: &Proxy,
    rt: &Runtime,
    tcp: TcpStream,
    peer: SocketAddr,
    session_id: u64,
) -> Option<LoggedIn> {
    let mut client: ClientStream = MaybeTls::Plain(tcp);
    let tls_config = rt.config.listen.tls.clone();
    let mut negotiations = 0;
    // Direct TLS (libpq 17 `sslnegotiation=direct`): a TLS ClientHello
    // instead of an SSLRequest.
    if let (MaybeTls::Plain(tcp), Some(cfg)) = (&client, &tls_config) {
        let mut first = [0u8; 1];
        if matches!(tcp.peek(&mut first).await, Ok(1)) && first[0] == 0x16 {
            let MaybeTls::Plain(tcp) = client else {
                return None;
            };
            client = accept_tls(tcp, cfg.clone(), peer).await?;
        }
    }
    let startup = loop {
        let packet = match protocol::read_startup_packet(&mut client).await {
            Ok(p) => p,
            Err(ProtocolError::Closed) => return None,
            Err(e) => {
                info!(event = "auth_failed", session_id, peer = %peer, reason = %e, "invalid startup packet");
                fatal(&mut client, "08P01", &format!("rolegate: {e}"), None).await;
                return None;
            }
        };
        negotiations += 1;
        if negotiations > 3 {
            fatal(
                &mut client,
                "08P01",
                "rolegate: too many negotiation requests",
                None,
            )
            .await;
            return None;
        }
        match packet {
            StartupPacket::SslRequest if !client.is_tls() => match (&tls_config, client) {
                (Some(cfg), MaybeTls::Plain(mut tcp)) => {
                    if tcp.write_all(b"S").await.is_err() {
                        return None;
                    }
                    client = accept_tls(tcp, cfg.clone(), peer).await?;
                }
                (_, mut other) => {
                    if other.write_all(b"N").await.is_err() {
                        return None;
                    }
                    client = other;
                }
            },
            StartupPacket::GssEncRequest if !client.is_tls() => {
                if client.write_all(b"N").await.is_err() {
                    return None;
                }
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                fatal(
                    &mut client,
                    "08P01",
                    "rolegate: encryption requested twice",
                    None,
                )
                .await;
                return None;
            }
            StartupPacket::Cancel { pid, secret } => {
                proxy.cancels.cancel(pid, secret).await;
                close(&mut client).await;
                return None;
            }
            StartupPacket::Startup(s) => break s,
        }
    };

    let user = startup.parameters.get("user").cloned().unwrap_or_default();
    let identity = user.clone();
    // Metric labels must stay bounded: names nobody configured (probes,
    // typos, attackers) all count as "unknown".
    let label = if rt.config.clients.contains_key(&user) || user == rt.config.migration.user {
        user.clone()
    } else {
        "unknown".to_string()
    };
    if rt.config.listen.tls_mode == ListenTlsMode::Require && !client.is_tls() {
        let role = if user == rt.config.migration.user {
            "migration"
        } else {
            "runtime"
        };
        info!(event = "auth_failed", session_id, identity = %identity, role, peer = %peer, reason = "plaintext refused", "TLS is required");
        metrics::counter!("rolegate_connections_total", "identity" => label.clone(), "role" => role, "outcome" => "tls_required").increment(1);
        fatal(
            &mut client,
            "28000",
            "rolegate: TLS is required for this connection",
            Some("Connect with sslmode=require (or stricter)."),
        )
        .await;
        return None;
    }
    if user.is_empty() {
        fatal(
            &mut client,
            "28000",
            "no PostgreSQL user name specified in startup packet",
            None,
        )
        .await;
        return None;
    }

    // Newer minor versions and `_pq_.` extensions: answer with what we
    // speak (3.0, no extensions), as PostgreSQL does.
    let unsupported: Vec<String> = startup
        .parameters
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    let mut out = BytesMut::with_capacity(512);
    if startup.protocol_number_minor > 0 || !unsupported.is_empty() {
        protocol::put(&mut out, &NegotiateProtocolVersion::new(0, unsupported));
    }

    let mut pending = BytesMut::with_capacity(1024);
    let migration = user == rt.config.migration.user;
    let role: &'static str = if migration { "migration" } else { "runtime" };
    let refuse = |reason: &str, outcome: &'static str| {
        info!(event = "auth_failed", session_id, identity = %identity, role, peer = %peer, reason = %reason, "login refused");
        metrics::counter!("rolegate_connections_total", "identity" => label.clone(), "role" => role, "outcome" => outcome).increment(1);
    };

    // Authenticate: a migrator token (cleartext, TLS or loopback only) for
    // the migration login; SCRAM against the stored verifier otherwise, or
    // an indistinguishable exchange that fails for unknown users.
    let (service_name, admission) = if migration {
        if rt.config.migration.keys.is_empty() && rt.config.migration.jwks.is_empty() {
            refuse("migration access is not configured", "not_configured");
            let _ = client.write_all(&out).await;
            fatal(
                &mut client,
                "57P03",
                "rolegate: migration access is not configured",
                Some("Add [[migration.keys]] or [[migration.jwks]] and a [[migration.windows]] entry to admit migration logins."),
            )
            .await;
            return None;
        }
        if !client.is_tls() && !peer.ip().is_loopback() {
            refuse(
                "token over plaintext from a non-loopback peer",
                "tls_required",
            );
            fatal(
                &mut client,
                "28000",
                "rolegate: migration logins need TLS or a loopback connection",
                Some("Connect with sslmode=require: the token is sent as a password."),
            )
            .await;
            return None;
        }
        protocol::put(&mut out, &Authentication::CleartextPassword);
        if client.write_all(&out).await.is_err() {
            return None;
        }
        out.clear();
        let token = match protocol::read_message(&mut client, &mut pending, MAX_AUTH_MESSAGE).await
        {
            Ok((b'p', body)) => {
                let mut b: &[u8] = &body;
                protocol::take_cstr(&mut b)
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .map(str::to_string)
                    .unwrap_or_default()
            }
            Ok(_) | Err(ProtocolError::BadLength { .. }) => {
                fatal(
                    &mut client,
                    "08P01",
                    "rolegate: expected a password message",
                    None,
                )
                .await;
                return None;
            }
            Err(_) => return None,
        };
        let admission = match rt.config.access.admit(&token, jiff::Timestamp::now()) {
            Ok(a) => a,
            Err(r) => {
                refuse(&r.message, r.kind);
                fatal(&mut client, r.sqlstate, &r.message, None).await;
                return None;
            }
        };
        (admission.service.clone(), Some(admission))
    } else {
        let entry = rt.config.clients.get(&user);
        let verifier = match entry {
            Some(e) => e.verifier.clone(),
            None => ScramVerifier::mock(&user, &proxy.mock_secret),
        };
        match scram_exchange(&mut client, &mut pending, &mut out, verifier).await {
            Ok(()) if entry.is_some() => {}
            Ok(()) | Err(AuthError::BadProof) => {
                refuse("password authentication failed", "auth_failed");
                fatal(
                    &mut client,
                    "28P01",
                    &format!("password authentication failed for user \"{user}\""),
                    None,
                )
                .await;
                return None;
            }
            Err(AuthError::Io(_)) => return None,
            Err(e) => {
                refuse(&e.to_string(), "protocol_error");
                fatal(
                    &mut client,
                    "08P01",
                    &format!("rolegate: authentication failed: {e}"),
                    None,
                )
                .await;
                return None;
            }
        }
        (entry?.service.clone(), None)
    };

    let service = rt.config.services.get(&service_name);
    let creds = match (service, migration) {
        (Some(s), false) => s.runtime.clone(),
        (Some(s), true) if s.migration.is_some() => s.migration.clone()?,
        _ => {
            let reason = format!(
                "the token names service \"{service_name}\", which has no migration role here"
            );
            refuse(&reason, "unknown_service");
            fatal(&mut client, "28P01", &format!("rolegate: {reason}"), None).await;
            return None;
        }
    };

    if let Some(db) = startup.parameters.get("database")
        && !db.is_empty()
        && db != &creds.database
    {
        refuse("wrong database", "wrong_database");
        fatal(
            &mut client,
            "3D000",
            &format!("rolegate: database \"{db}\" is not served here"),
            Some(&format!("Connect to database \"{}\".", creds.database)),
        )
        .await;
        return None;
    }

    let mut params: Vec<(String, String)> = startup
        .parameters
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database") && !k.starts_with("_pq_."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !migration {
        if let Err(reason) = crate::policy::check_startup(&params) {
            let report = rt.config.policy.mode == crate::config::PolicyMode::Report;
            tracing::warn!(event = "statement_refused", session_id, identity = %identity, role, peer = %peer, class = "startup", reason = %reason, enforced = !report, "startup parameters refused");
            metrics::counter!("rolegate_refusals_total", "reason" => "startup").increment(1);
            if !report {
                fatal(
                    &mut client,
                    "42501",
                    &format!("rolegate: {reason}"),
                    Some("Runtime sessions cannot set row_security, role, session_authorization, replication, or change client_encoding/standard_conforming_strings."),
                )
                .await;
                return None;
            }
        }
        // Pin the settings that make the proxy's reading of statement text
        // the server's own (a client that set them already set these values).
        for (name, value) in [
            ("client_encoding", "UTF8"),
            ("standard_conforming_strings", "on"),
        ] {
            if !params.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                params.push((name.to_string(), value.to_string()));
            }
        }
    }
    // The upstream StartupMessage carries the proxy's role, database and
    // pinned settings too; PostgreSQL would drop one over its limit without
    // a useful error, so say so here.
    let upstream_len = 9
        + "user".len()
        + creds.user.len()
        + "database".len()
        + creds.database.len()
        + 4
        + params
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if upstream_len > protocol::MAX_STARTUP_PACKET {
        refuse("startup packet too long", "protocol_error");
        fatal(
            &mut client,
            "08P01",
            "rolegate: the startup packet is too long once the proxy adds its own parameters",
            Some("Send fewer or shorter startup parameters."),
        )
        .await;
        return None;
    }
    // Runtime sessions first try an idle upstream session left by an
    // earlier client with the same service and startup parameters.
    let pool_key =
        (!migration && rt.config.pool.enabled).then(|| proxy.pool.key(&service_name, &params));
    let reused = pool_key
        .as_ref()
        .and_then(|k| proxy.pool.take(k, &rt.config.pool));
    let (conn, endpoint, reused) = match reused {
        Some(r) => {
            let mut conn = r.conn;
            conn.reuse_greeting();
            (conn, r.endpoint, true)
        }
        None => {
            let endpoint = match rt.endpoints.get(&service_name) {
                Some(e) if !migration => e.clone(),
                _ => Arc::new(upstream::Endpoint::new(&creds, &rt.config.upstream)),
            };
            let t0 = Instant::now();
            let conn = match upstream::connect(&endpoint, &creds, &params).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(event = "upstream_error", session_id, identity = %identity, role, peer = %peer, error = %e, "upstream connection failed");
                    metrics::counter!("rolegate_upstream_errors_total", "role" => role)
                        .increment(1);
                    metrics::counter!("rolegate_connections_total", "identity" => label.clone(), "role" => role, "outcome" => "upstream_error").increment(1);
                    let (code, message) = upstream_failure(&e, role);
                    fatal(&mut client, &code, &message, None).await;
                    return None;
                }
            };
            metrics::histogram!("rolegate_upstream_connect_seconds", "role" => role)
                .record(t0.elapsed().as_secs_f64());
            (conn, endpoint, false)
        }
    };
    metrics::counter!("rolegate_upstream_sessions_total", "role" => role, "source" => if reused { "pool" } else { "new" }).increment(1);
    metrics::counter!("rolegate_connections_total", "identity" => label.clone(), "role" => role, "outcome" => "ok").increment(1);

    let cancel = proxy.cancels.register(UpstreamKey {
        endpoint: endpoint.clone(),
        pid: conn.pid,
        secret: conn.secret,
    });
    protocol::auth_ok(&mut out);
    out.put_slice(&conn.greeting);
    protocol::backend_key_data(&mut out, cancel.pid, cancel.secret);
    protocol::ready_for_query(&mut out, b'I');
    if client.write_all(&out).await.is_err() {
        return None;
    }
    let state = Arc::new(SessionState::new());
    Some(LoggedIn {
        client,
        client_pending: pending,
        upstream: conn,
        identity: admission
            .as_ref()
            .map(|a| a.subject.clone())
            .unwrap_or(identity),
        role,
        state,
        service: service_name,
        admission,
        endpoint,
        pool_key,
        reused,
        _cancel: cancel,
    })
}

/// A client that passed login, with its upstream session open.
pub(crate) struct LoggedIn {
    pub client: ClientStream,
    pub client_pending: BytesMut,
    pub upstream: upstream::UpstreamConn,
    pub identity: String,
    pub role: &'static str,
    pub state: Arc<SessionState>,
    pub service: String,
    /// Set for migration sessions: who was admitted and until when.
    pub admission: Option<crate::migration::Admission>,
    /// Where the upstream session lives (for cancel and reuse).
    pub endpoint: Arc<upstream::Endpoint>,
    /// Set for runtime sessions that may go back to the pool.
    pub pool_key: Option<crate::pool::PoolKey>,
    /// The upstream session was reused from the pool.
    pub reused: bool,
    pub _cancel: crate::cancel::Registration,
}

async fn accept_tls(
    tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    peer: SocketAddr,
) -> Option<ClientStream> {
    match tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
        Ok(tls) => Some(MaybeTls::Tls(Box::new(tls))),
        Err(e) => {
            info!(event = "auth_failed", peer = %peer, reason = %e, "TLS handshake failed");
            None
        }
    }
}

/// What the client hears when the upstream login fails. Credential
/// problems are the proxy's configuration, not the client's password, so
/// they are not reported with the server's 28xxx codes.
fn upstream_failure(e: &UpstreamError, role: &str) -> (String, String) {
    match e {
        UpstreamError::Server { code, message, .. } if code.starts_with("28") => (
            "08004".into(),
            format!(
                "rolegate: the upstream server rejected the proxy's {role} credentials: {message}"
            ),
        ),
        UpstreamError::Server { code, message, .. } => (code.clone(), message.clone()),
        other => (
            "08006".into(),
            format!("rolegate: cannot connect to the upstream server: {other}"),
        ),
    }
}

/// Write a FATAL ErrorResponse and flush; errors are ignored because the
/// connection is being dropped anyway.
async fn fatal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let mut out = BytesMut::new();
    protocol::error_response(&mut out, "FATAL", code, message, hint);
    let _ = stream.write_all(&out).await;
    close(stream).await;
}

/// End a connection the way PostgreSQL does: flush, then (over TLS) a
/// close_notify before the TCP FIN, so libpq reports the error or the
/// cancel's success instead of "unexpected eof". Bounded: a peer that
/// reads nothing cannot hold the task.
async fn close<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Run the server side of SCRAM-SHA-256. `out` carries messages queued
/// before authentication (NegotiateProtocolVersion) and is cleared of them
/// here; on success it is left empty for the caller to fill.
async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    pending: &mut BytesMut,
    out: &mut BytesMut,
    verifier: ScramVerifier,
) -> Result<(), AuthError> {
    let mut server = ScramServer::new(verifier);
    protocol::put(out, &Authentication::SASL(vec![SCRAM_SHA_256.to_string()]));
    client.write_all(out).await?;
    out.clear();

    let body = read_password_message(client, pending).await?;
    let (mechanism, data) = parse_sasl_initial(&body)?;
    let server_first = server.client_first(mechanism, data)?;
    protocol::put(out, &Authentication::SASLContinue(server_first.into()));
    client.write_all(out).await?;
    out.clear();

    let body = read_password_message(client, pending).await?;
    let server_final = server.client_final(&body)?;
    protocol::put(out, &Authentication::SASLFinal(server_final.into()));
    client.write_all(out).await?;
    out.clear();
    Ok(())
}

async fn read_password_message<S: AsyncRead + Unpin>(
    client: &mut S,
    pending: &mut BytesMut,
) -> Result<BytesMut, AuthError> {
    match protocol::read_message(client, pending, MAX_AUTH_MESSAGE).await {
        Ok((b'p', body)) => Ok(body),
        Ok(_) => Err(AuthError::Malformed("expected a password message")),
        Err(ProtocolError::Io(e)) => Err(AuthError::Io(e)),
        Err(ProtocolError::Closed) => Err(AuthError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Err(_) => Err(AuthError::Malformed("invalid message length")),
    }
}

/// SASLInitialResponse: mechanism name, then an Int32 length (-1 = none)
/// and that many bytes.
fn parse_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), AuthError> {
    let mut b = body;
    let mech = protocol::take_cstr(&mut b).ok_or(AuthError::Malformed("SASL mechanism"))?;
    let mech = std::str::from_utf8(mech).map_err(|_| AuthError::Malformed("SASL mechanism"))?;
    let len_bytes: [u8; 4] = b
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(AuthError::Malformed("SASL initial response length"))?;
    let len = i32::from_be_bytes(len_bytes);
    let data = &b[4..];
    if len < 0 || len as usize != data.len() {
        return Err(AuthError::Malformed("SASL initial response length"));
    }
    Ok((mech, data))
}
