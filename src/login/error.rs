//! Everything a login can end with short of a session, and how each ending
//! is told: the client's ErrorResponse (SQLSTATE, message, hint), the log
//! event and the `rolegate_connections_total` outcome, all rendered here so
//! they cannot drift apart.

use std::net::SocketAddr;

use tracing::{info, warn};

use crate::client_auth::AuthError;
use crate::protocol::ProtocolError;
use crate::upstream::UpstreamError;

use crate::metrics;
use crate::role::Role;

/// Why a login ended without a session.
#[derive(Debug)]
pub enum LoginError {
    /// The client went away (or its socket broke): nobody to tell.
    Gone,
    /// Over `listen.max_connections`.
    TooManyClients,
    /// Login did not finish within `listen.startup_timeout`.
    StartupTimeout,
    /// A TLS handshake with the client failed.
    TlsHandshake(String),
    InvalidStartup(ProtocolError),
    TooManyNegotiations,
    EncryptionTwice,
    /// `listen.tls.mode = "require"` and the client came in plaintext.
    TlsRequired,
    NoUser,
    MigrationNotConfigured,
    /// A token over plaintext from a peer that is not on loopback.
    MigrationNeedsTls,
    ExpectedPassword,
    /// The migrator token was refused (bad, expired, outside a window…).
    Token(crate::migration::Refusal),
    BadPassword {
        user: String,
    },
    AuthProtocol(AuthError),
    UnknownService {
        service: String,
    },
    WrongDatabase {
        asked: String,
        served: String,
    },
    /// Runtime startup parameters the policy refuses (enforce mode).
    StartupRefused {
        reason: String,
    },
    StartupTooLong,
    Upstream(UpstreamError),
    /// Transaction mode: no upstream lease for the login.
    Lease(crate::txpool::LeaseError),
}

/// Who tried to log in, as far as the login got: what the log and the
/// metric labels say about them.
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// The user name of the StartupMessage (empty before it).
    pub user: String,
    /// The metric label: a configured name, or "unknown" (labels stay
    /// bounded whatever names clients send).
    pub label: String,
    /// The role the name logs in as, once known.
    pub role: Option<Role>,
}

impl Who {
    fn role_str(&self) -> &'static str {
        self.role.map(Role::as_str).unwrap_or("")
    }

    fn identity_label(&self) -> &str {
        if self.label.is_empty() {
            "unknown"
        } else {
            &self.label
        }
    }
}

/// What the client is told: SQLSTATE, message, hint.
pub struct ClientText {
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl LoginError {
    /// The `outcome` label of `rolegate_connections_total`.
    pub fn outcome(&self) -> &'static str {
        use LoginError::*;
        match self {
            Gone => "client_gone",
            TooManyClients => "too_many",
            StartupTimeout => "startup_timeout",
            TlsHandshake(_) => "tls_failed",
            TlsRequired | MigrationNeedsTls => "tls_required",
            MigrationNotConfigured => "not_configured",
            Token(r) => r.kind,
            BadPassword { .. } => "auth_failed",
            UnknownService { .. } => "unknown_service",
            WrongDatabase { .. } => "wrong_database",
            StartupRefused { .. } => "startup_refused",
            Upstream(_) => "upstream_error",
            Lease(crate::txpool::LeaseError::WaitTimeout(_)) => "pool_timeout",
            Lease(_) => "upstream_error",
            InvalidStartup(_) | TooManyNegotiations | EncryptionTwice | NoUser
            | ExpectedPassword | AuthProtocol(_) | StartupTooLong => "protocol_error",
        }
    }

    /// The ErrorResponse the client gets, if anyone is there to get one.
    pub fn client_text(&self, role: Option<Role>) -> Option<ClientText> {
        use LoginError::*;
        let text = |code: &str, message: String, hint: Option<&str>| {
            Some(ClientText {
                code: code.to_string(),
                message,
                hint: hint.map(str::to_string),
            })
        };
        match self {
            Gone | StartupTimeout | TlsHandshake(_) => None,
            TooManyClients => text(
                "53300",
                "rolegate: sorry, too many clients already".into(),
                Some("Raise listen.max_connections or reduce the number of client connections."),
            ),
            InvalidStartup(e) => text("08P01", format!("rolegate: {e}"), None),
            TooManyNegotiations => text(
                "08P01",
                "rolegate: too many negotiation requests".into(),
                None,
            ),
            EncryptionTwice => text("08P01", "rolegate: encryption requested twice".into(), None),
            TlsRequired => text(
                "28000",
                "rolegate: TLS is required for this connection".into(),
                Some("Connect with sslmode=require (or stricter)."),
            ),
            NoUser => text(
                "28000",
                "no PostgreSQL user name specified in startup packet".into(),
                None,
            ),
            MigrationNotConfigured => text(
                "57P03",
                "rolegate: migration access is not configured".into(),
                Some(
                    "Add [[migration.keys]] or [[migration.jwks]] and a [[migration.windows]] entry to admit migration logins.",
                ),
            ),
            MigrationNeedsTls => text(
                "28000",
                "rolegate: migration logins need TLS or a loopback connection".into(),
                Some("Connect with sslmode=require: the token is sent as a password."),
            ),
            ExpectedPassword => text(
                "08P01",
                "rolegate: expected a password message".into(),
                None,
            ),
            Token(r) => text(r.sqlstate, r.message.clone(), None),
            BadPassword { user } => text(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
                None,
            ),
            AuthProtocol(e) => text(
                "08P01",
                format!("rolegate: authentication failed: {e}"),
                None,
            ),
            UnknownService { .. } => text("28P01", format!("rolegate: {}", self.reason()), None),
            WrongDatabase { asked, served } => text(
                "3D000",
                format!("rolegate: database \"{asked}\" is not served here"),
                Some(&format!("Connect to database \"{served}\".")),
            ),
            StartupRefused { reason } => text(
                "42501",
                format!("rolegate: {reason}"),
                Some(
                    "Runtime sessions cannot set row_security, role, session_authorization, replication, or change client_encoding/standard_conforming_strings.",
                ),
            ),
            StartupTooLong => text(
                "08P01",
                "rolegate: the startup packet is too long once the proxy adds its own parameters"
                    .into(),
                Some("Send fewer or shorter startup parameters."),
            ),
            Lease(e) => {
                let (code, message, hint) = e.client_text();
                text(code, message, Some(hint))
            }
            Upstream(e) => {
                let (code, message) = upstream_failure(e, role.map(Role::as_str).unwrap_or(""));
                Some(ClientText {
                    code,
                    message,
                    hint: None,
                })
            }
        }
    }

    /// The log's `reason` field.
    fn reason(&self) -> String {
        use LoginError::*;
        match self {
            Gone => "client gone".into(),
            TooManyClients => "too many clients".into(),
            StartupTimeout => "startup timeout".into(),
            TlsHandshake(e) => e.clone(),
            InvalidStartup(e) => e.to_string(),
            TooManyNegotiations => "too many negotiation requests".into(),
            EncryptionTwice => "encryption requested twice".into(),
            TlsRequired => "plaintext refused".into(),
            NoUser => "no user name".into(),
            MigrationNotConfigured => "migration access is not configured".into(),
            MigrationNeedsTls => "token over plaintext from a non-loopback peer".into(),
            ExpectedPassword => "expected a password message".into(),
            Token(r) => r.message.clone(),
            BadPassword { .. } => "password authentication failed".into(),
            AuthProtocol(e) => e.to_string(),
            UnknownService { service } => {
                format!("the token names service \"{service}\", which has no migration role here")
            }
            WrongDatabase { .. } => "wrong database".into(),
            StartupRefused { reason } => reason.clone(),
            StartupTooLong => "startup packet too long".into(),
            Upstream(e) => e.to_string(),
            Lease(e) => e.to_string(),
        }
    }

    /// Log the ending and count it. A client that simply left is neither.
    pub fn record(&self, who: &Who, session_id: u64, peer: SocketAddr) {
        if matches!(self, LoginError::Gone) {
            return;
        }
        let reason = self.reason();
        let (identity, role) = (who.user.as_str(), who.role_str());
        match self {
            LoginError::Upstream(_) => {
                warn!(event = "upstream_error", session_id, identity, role, peer = %peer, error = %reason, "upstream connection failed");
                metrics::upstream_error(who.role);
            }
            LoginError::StartupRefused { reason } => {
                startup_refused(who, session_id, peer, reason, true);
            }
            _ => {
                info!(event = "auth_failed", session_id, identity, role, peer = %peer, reason = %reason, "login refused");
            }
        }
        metrics::login(who.identity_label(), who.role, self.outcome());
    }
}

/// Log and count runtime startup parameters the policy refuses; in report
/// mode (`enforced = false`) the login goes on.
pub fn startup_refused(who: &Who, session_id: u64, peer: SocketAddr, reason: &str, enforced: bool) {
    warn!(event = "statement_refused", session_id, identity = %who.user, role = who.role_str(), peer = %peer, class = "startup", reason = %reason, enforced, "startup parameters refused");
    metrics::refusal(metrics::STARTUP_REFUSAL);
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
