//! The two kinds of session rolegate serves, as one type for the login,
//! the session, the metrics and the log.

/// Which upstream role a session gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Rows only, under the runtime policy.
    Runtime,
    /// DDL, inside an authorised window, audited.
    Migration,
}

impl Role {
    /// Both roles, for series that exist from startup.
    pub const ALL: [Role; 2] = [Role::Runtime, Role::Migration];

    /// The `role` label of metrics and the `role` field of log events.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Runtime => "runtime",
            Role::Migration => "migration",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
