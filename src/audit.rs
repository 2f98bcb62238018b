//! The audit trail of migration sessions: every statement a migration
//! session sends is logged in full (`migration_statement`), with the token
//! subject and id that admitted it. Runtime refusals are logged where they
//! are decided (`enforce`); session and login events where they happen
//! (`server`, `login`).

use std::net::SocketAddr;

use crate::protocol::{self, FrameHeader};

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
    /// Log one whole `Query`, `Parse` or `FunctionCall` message.
    pub fn record(&self, tag: u8, frame: &[u8]) {
        let mut body = &frame[FrameHeader::SIZE..];
        let (kind, text) = match tag {
            b'Q' => ("simple", protocol::take_cstr(&mut body).unwrap_or_default()),
            b'P' => {
                let _name = protocol::take_cstr(&mut body);
                ("parse", protocol::take_cstr(&mut body).unwrap_or_default())
            }
            _ => ("function_call", &b""[..]),
        };
        metrics::counter!("rolegate_statements_total", "role" => "migration", "class" => "migration", "verdict" => "allowed", "path" => "audit").increment(1);
        tracing::info!(
            event = "migration_statement",
            session_id = self.session_id,
            identity = %self.identity,
            role = "migration",
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
