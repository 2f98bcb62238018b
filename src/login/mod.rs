//! The login of one connection, in three phases — [`handshake`]
//! (encryption, StartupMessage or CancelRequest), [`auth`] (who the client
//! is) and [`connect`] (an upstream session and the greeting) — and the one
//! place a failed login is told to the client, the log and the metrics
//! ([`LoginError`]).
//!
//! The login sees the proxy only through [`Context`], so it does not depend
//! on the listener that calls it.

mod auth;
mod connect;
mod error;
mod handshake;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::startup::NegotiateProtocolVersion;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::pool::Pool;
use crate::protocol::{self, ClientStream};
use crate::upstream::{Endpoint, UpstreamConn};

pub use crate::role::Role;
pub use error::{LoginError, Who};

/// What a login needs from the proxy.
pub struct Context<'a> {
    pub config: &'a Config,
    /// Runtime endpoints by service (TLS configs shared between sessions).
    pub endpoints: &'a HashMap<String, Arc<Endpoint>>,
    pub pool: &'a Pool,
    /// Transaction mode's pools (empty in session mode).
    pub txpools: &'a crate::txpool::TxPools,
    pub cancels: &'a Arc<CancelRegistry>,
    /// Keys the fake SCRAM exchange for unknown users.
    pub mock_secret: &'a [u8; 32],
}

/// A client that passed login, with its upstream session open.
pub struct LoggedIn {
    pub client: ClientStream,
    /// What the client sent past its last login message.
    pub client_pending: BytesMut,
    pub upstream: UpstreamConn,
    /// The name the audit log uses (a token's subject for migration).
    pub identity: String,
    pub role: Role,
    pub service: String,
    /// Set for migration sessions: who was admitted and until when.
    pub admission: Option<crate::migration::Admission>,
    /// Where the upstream session lives (for cancel and reuse).
    pub endpoint: Arc<Endpoint>,
    /// Set for runtime sessions that may go back to the pool.
    pub pool_key: Option<crate::pool::PoolKey>,
    /// The upstream session was reused from the pool.
    pub reused: bool,
    pub cancel: crate::cancel::Registration,
    /// Transaction mode: the client's side of the pool.
    pub pooled: Option<crate::txpool::session::Pooled>,
}

/// Negotiate, authenticate and connect upstream. `None` when the
/// connection was a cancel request or the login failed (the client, the
/// log and the metrics have been told).
pub async fn login(
    ctx: &Context<'_>,
    tcp: TcpStream,
    peer: SocketAddr,
    session_id: u64,
) -> Option<LoggedIn> {
    let (mut client, startup) = match handshake::negotiate(tcp, ctx.config.listen.tls.clone()).await
    {
        Ok(handshake::Hello::Startup(client, startup)) => (client, startup),
        Ok(handshake::Hello::Cancel(mut client, pid, secret)) => {
            let peers = ctx.config.cluster.as_ref().map(|c| &c.peers);
            ctx.cancels.handle(pid, secret, peers).await;
            close(&mut client).await;
            return None;
        }
        Err(handshake::Failed(mut client, e)) => {
            fail_early(client.as_mut(), &e, session_id, peer).await;
            return None;
        }
    };
    let user = startup.parameters.get("user").cloned().unwrap_or_default();
    let who = auth::claimed(ctx.config, &user);
    let mut out = negotiate_version(&startup);
    let mut pending = BytesMut::with_capacity(1024);
    let result = async {
        auth::check_transport(ctx.config, &who, client.is_tls(), peer)?;
        let id = auth::authenticate(
            ctx.config,
            ctx.mock_secret,
            &mut client,
            &mut pending,
            &mut out,
            &who,
        )
        .await?;
        if let Some(a) = &id.admission {
            admitted(a, session_id, peer);
        }
        let trace = connect::Trace {
            who: &who,
            session_id,
            peer,
        };
        let up = connect::connect(ctx, &id, &startup.parameters, &trace).await?;
        Ok::<_, LoginError>((id, up))
    }
    .await;
    let (id, up) = match result {
        Ok(r) => r,
        Err(e) => {
            fail(Some(&mut client), &out, &e, &who, session_id, peer).await;
            return None;
        }
    };
    connect::greeting(&mut out, &up);
    // Written once; a reuse rebuilds it from the parameters.
    let mut up = up;
    up.conn.greeting = bytes::BytesMut::new();
    if client.write_all(&out).await.is_err() {
        return None;
    }
    crate::metrics::login(&who.label, Some(id.role), "ok");
    Some(LoggedIn {
        client,
        client_pending: pending,
        identity: id.name(),
        role: id.role,
        service: id.service,
        admission: id.admission,
        upstream: up.conn,
        endpoint: up.endpoint,
        pool_key: up.pool_key,
        reused: up.reused,
        cancel: up.cancel,
        pooled: up.pooled,
    })
}

/// The audit line of an admitted migration token: who, by which issuer
/// and which configured key (the matched rule), until when. Logged before
/// the upstream connection is opened; `session_start` follows.
fn admitted(a: &crate::migration::Admission, session_id: u64, peer: SocketAddr) {
    tracing::info!(
        event = "migration_admitted",
        session_id,
        identity = %a.subject,
        role = "migration",
        peer = %peer,
        issuer = a.issuer.as_deref().unwrap_or(""),
        rule = %a.source,
        kid = a.kid.as_deref().unwrap_or(""),
        stale_keys = a.stale_keys,
        service = %a.service,
        jti = a.jti.as_deref().unwrap_or(""),
        until = %a.until,
        "migration token admitted"
    );
}

/// Newer minor versions and `_pq_.` extensions: answer with what we speak
/// (3.0, no extensions), as PostgreSQL does, ahead of the first
/// authentication request.
fn negotiate_version(startup: &pgwire::messages::startup::Startup) -> BytesMut {
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
    out
}

/// Tell everyone a login failed: log and count it, and send the client
/// whatever is queued (`out`) and a FATAL ErrorResponse, then close.
pub async fn fail<S: AsyncWrite + Unpin>(
    client: Option<&mut S>,
    out: &BytesMut,
    e: &LoginError,
    who: &Who,
    session_id: u64,
    peer: SocketAddr,
) {
    e.record(who, session_id, peer);
    let (Some(client), Some(text)) = (client, e.client_text(who.role)) else {
        return;
    };
    let mut buf = out.clone();
    protocol::error_response(
        &mut buf,
        "FATAL",
        &text.code,
        &text.message,
        text.hint.as_deref(),
    );
    let _ = client.write_all(&buf).await;
    close(client).await;
}

/// [`fail`] before the StartupMessage: nothing queued, nobody named.
pub async fn fail_early<S: AsyncWrite + Unpin>(
    client: Option<&mut S>,
    e: &LoginError,
    session_id: u64,
    peer: SocketAddr,
) {
    fail(
        client,
        &BytesMut::new(),
        e,
        &Who::default(),
        session_id,
        peer,
    )
    .await;
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
