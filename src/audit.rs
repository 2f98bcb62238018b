//! The audit trail of migration sessions, as their [`Inspector`]: every
//! statement a migration session sends is logged in full
//! (`migration_statement`), with the token subject and id that admitted it,
//! and forwarded; nothing is refused. Runtime refusals are logged where
//! they are decided (`enforce`); session and login events where they happen
//! (`session`, `login`).

use std::net::SocketAddr;

use crate::metrics::Outcome;
use crate::protocol::frontend::{Parse, Query};
use crate::relay::{Backend, BackendAction, Frontend, FrontendAction, Inspector, Wants};
use crate::role::Role;

/// Who a migration session is, for its statement events.
#[derive(Debug, Clone)]
pub struct StatementAudit {
    pub session_id: u64,
    pub identity: String,
    pub peer: SocketAddr,
    pub subject: String,
    pub jti: Option<String>,
    pub service: String,
}

impl StatementAudit {
    /// Log one whole `Query`, `Parse` or `FunctionCall` message (its text
    /// as far as a lenient reading finds it: the audit logs what the client
    /// sent, the server decides what it accepts).
    pub fn record(&self, msg: &Frontend<'_>) {
        let (kind, text) = match msg.tag {
            b'Q' => ("simple", Query::read(msg.body()).text),
            b'P' => ("parse", Parse::read(msg.body()).text),
            _ => ("function_call", &b""[..]),
        };
        crate::metrics::statements(Role::Migration, "migration", Outcome::Allowed, "audit")
            .increment(1);
        tracing::info!(
            event = "migration_statement",
            session_id = self.session_id,
            identity = %self.identity,
            role = Role::Migration.as_str(),
            peer = %self.peer,
            subject = %self.subject,
            jti = self.jti.as_deref().unwrap_or(""),
            service = %self.service,
            protocol = kind,
            statement = %String::from_utf8_lossy(text),
            "migration statement"
        );
    }
}

impl Inspector for StatementAudit {
    fn wants(&self) -> Wants {
        Wants::default()
    }

    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction {
        self.record(msg);
        FrontendAction::Forward
    }

    fn backend(&mut self, _msg: &Backend<'_>) -> BackendAction {
        BackendAction::Pass
    }
}
