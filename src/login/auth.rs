//! The second phase: who the client is. A migrator token (sent as a
//! cleartext password, over TLS or from loopback only) for the migration
//! login; SCRAM-SHA-256 against the stored verifier for runtime identities,
//! or an indistinguishable exchange that fails for names nobody configured.

use std::net::SocketAddr;

use bytes::BytesMut;
use pgwire::messages::startup::Authentication;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::client_auth::{AuthError, SCRAM_SHA_256, ScramServer, ScramVerifier};
use crate::config::{Config, ListenTlsMode};
use crate::migration::Admission;
use crate::protocol::frontend::{PasswordMessage, SaslInitialResponse};
use crate::protocol::{self, MAX_AUTH_MESSAGE, ProtocolError};

use super::{LoginError, Role, Who};

/// An authenticated client.
pub struct Identity {
    /// The StartupMessage's user name.
    pub user: String,
    pub role: Role,
    /// The upstream service whose credentials the session uses.
    pub service: String,
    /// Set for migration sessions: who was admitted and until when.
    pub admission: Option<Admission>,
}

impl Identity {
    /// The name the audit log uses: the token's subject for migration
    /// sessions, the login name otherwise.
    pub fn name(&self) -> String {
        self.admission
            .as_ref()
            .map(|a| a.subject.clone())
            .unwrap_or_else(|| self.user.clone())
    }
}

/// Who the StartupMessage says the client is, before any proof.
pub fn claimed(config: &Config, user: &str) -> Who {
    let migration = user == config.migration.user;
    // Metric labels must stay bounded: names nobody configured (probes,
    // typos, attackers) all count as "unknown".
    let label = if config.clients.contains_key(user) || migration {
        user.to_string()
    } else {
        "unknown".to_string()
    };
    Who {
        user: user.to_string(),
        label,
        role: Some(if migration {
            Role::Migration
        } else {
            Role::Runtime
        }),
    }
}

/// Whether this connection may try to log in at all.
pub fn check_transport(
    config: &Config,
    who: &Who,
    tls: bool,
    peer: SocketAddr,
) -> Result<(), LoginError> {
    if config.listen.tls_mode == ListenTlsMode::Require && !tls {
        return Err(LoginError::TlsRequired);
    }
    if who.user.is_empty() {
        return Err(LoginError::NoUser);
    }
    if who.role == Some(Role::Migration) {
        if config.migration.keys.is_empty() && config.migration.jwks.is_empty() {
            return Err(LoginError::MigrationNotConfigured);
        }
        if !tls && !peer.ip().is_loopback() {
            return Err(LoginError::MigrationNeedsTls);
        }
    }
    Ok(())
}

/// Authenticate `who`. `out` carries messages queued before authentication
/// (NegotiateProtocolVersion), sent with the first request; it is left
/// empty. `pending` keeps what the client sent past its last message.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    config: &Config,
    mock_secret: &[u8; 32],
    client: &mut S,
    pending: &mut BytesMut,
    out: &mut BytesMut,
    who: &Who,
) -> Result<Identity, LoginError> {
    if who.role == Some(Role::Migration) {
        let admission = migration_token(config, client, pending, out).await?;
        return Ok(Identity {
            user: who.user.clone(),
            role: Role::Migration,
            service: admission.service.clone(),
            admission: Some(admission),
        });
    }
    let entry = config.clients.get(&who.user);
    let verifier = match entry {
        Some(e) => e.verifier.clone(),
        None => ScramVerifier::mock(&who.user, mock_secret),
    };
    let bad_password = || LoginError::BadPassword {
        user: who.user.clone(),
    };
    match scram_exchange(client, pending, out, verifier).await {
        Ok(()) => {}
        Err(AuthError::BadProof) => return Err(bad_password()),
        Err(AuthError::Io(_)) => return Err(LoginError::Gone),
        Err(e) => return Err(LoginError::AuthProtocol(e)),
    }
    let entry = entry.ok_or_else(bad_password)?;
    Ok(Identity {
        user: who.user.clone(),
        role: Role::Runtime,
        service: entry.service.clone(),
        admission: None,
    })
}

/// Ask for the token as a cleartext password and admit it.
async fn migration_token<S: AsyncRead + AsyncWrite + Unpin>(
    config: &Config,
    client: &mut S,
    pending: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<Admission, LoginError> {
    protocol::put(out, &Authentication::CleartextPassword);
    client.write_all(out).await.map_err(|_| LoginError::Gone)?;
    out.clear();
    let token = match protocol::read_message(client, pending, MAX_AUTH_MESSAGE).await {
        Ok((b'p', body)) => PasswordMessage::read(&body)
            .password
            .unwrap_or_default()
            .to_string(),
        Ok(_) | Err(ProtocolError::BadLength { .. }) => return Err(LoginError::ExpectedPassword),
        Err(_) => return Err(LoginError::Gone),
    };
    // A token naming a key the issuer cache lacks may wait for a refresh,
    // but well inside the startup timeout, so the client still hears why
    // it was refused.
    let budget = config.listen.startup_timeout / 2;
    config
        .access
        .admit_fetching(&token, budget)
        .await
        .map_err(LoginError::Token)
}

/// Run the server side of SCRAM-SHA-256.
async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    pending: &mut BytesMut,
    out: &mut BytesMut,
    verifier: ScramVerifier,
) -> Result<(), AuthError> {
    let mut server = ScramServer::new(verifier);
    protocol::put(out, &Authentication::SASL(vec![SCRAM_SHA_256.to_string()]));
    send(client, out).await?;

    let body = read_password_message(client, pending).await?;
    let initial =
        SaslInitialResponse::read(&body).ok_or(AuthError::Malformed("SASL initial response"))?;
    let server_first = server.client_first(initial.mechanism, initial.data)?;
    protocol::put(out, &Authentication::SASLContinue(server_first.into()));
    send(client, out).await?;

    let body = read_password_message(client, pending).await?;
    let server_final = server.client_final(&body)?;
    protocol::put(out, &Authentication::SASLFinal(server_final.into()));
    send(client, out).await
}

async fn send<S: AsyncWrite + Unpin>(client: &mut S, out: &mut BytesMut) -> Result<(), AuthError> {
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
