//! The refusal round trip: how a refused statement is kept from running
//! while the protocol stays exactly in step.
//!
//! A refused message is never forwarded. In its place the server gets a
//! message whose text is a bare, per-process-random identifier
//! (`rolegate_refused_<random>_<seq>`), which it rejects with a syntax
//! error *before executing anything*. That gives PostgreSQL's own behaviour
//! on every path:
//!
//! * simple query: an ErrorResponse and a ReadyForQuery with the right
//!   transaction status; nothing in the string ran;
//! * extended query: the `Parse` fails, the server skips to `Sync`, and a
//!   later `Bind` to that statement name fails with `26000`;
//! * inside a transaction block: the server aborts the transaction, so a
//!   later `COMMIT` answers `ROLLBACK`.
//!
//! When the server's syntax error comes back (recognised by the identifier
//! and its sequence number), the client gets the proxy's `ERROR 42501`
//! instead, naming what was refused and the way out.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::policy::{Class, Verdict};
use crate::protocol::{self, backend::ServerError};

/// Substitutes whose error never came back (e.g. the server reported an
/// aborted transaction first) must not pile up.
const MAX_PENDING: usize = 64;

/// One session's refusals in flight.
#[derive(Debug)]
pub struct Refusals {
    /// `rolegate_refused_<random>_`: the prefix of every substitute.
    token: Arc<[u8]>,
    seq: u64,
    /// The proxy's ErrorResponse for each substitute, by sequence number.
    pending: VecDeque<(u64, BytesMut)>,
}

impl Refusals {
    pub fn new(token: Arc<[u8]>) -> Refusals {
        Refusals {
            token,
            seq: 0,
            pending: VecDeque::new(),
        }
    }

    /// Queue the client's error for a refused `tag` message (`name`: a
    /// Parse's statement name) and return what the server gets instead:
    /// one whole frame, a `Parse` of the same name for `Parse` (so a later
    /// Bind fails as on the server), a `Query` otherwise.
    pub fn substitute(&mut self, tag: u8, name: &[u8], verdict: &Verdict) -> BytesMut {
        let hint = if tag == b'F' {
            FASTPATH_HINT
        } else {
            hint(verdict.class)
        };
        let message = format!("rolegate: {}", verdict.reason);
        self.substitute_error(tag, name, "42501", &message, hint)
    }

    /// [`Refusals::substitute`] with the client's error given in full
    /// (refusals that are not the policy's, such as transaction pooling's
    /// `0A000`).
    pub fn substitute_error(
        &mut self,
        tag: u8,
        name: &[u8],
        code: &str,
        message: &str,
        hint: &str,
    ) -> BytesMut {
        self.seq += 1;
        let mut err = BytesMut::with_capacity(256);
        protocol::error_response(&mut err, "ERROR", code, message, Some(hint));
        while self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((self.seq, err));

        let mut text = Vec::with_capacity(self.token.len() + 20);
        text.extend_from_slice(&self.token);
        text.extend_from_slice(self.seq.to_string().as_bytes());
        let mut out = BytesMut::with_capacity(text.len() + name.len() + 16);
        if tag == b'P' {
            out.put_u8(b'P');
            out.put_i32((4 + name.len() + 1 + text.len() + 1 + 2) as i32);
            out.put_slice(name);
            out.put_u8(0);
            out.put_slice(&text);
            out.put_u8(0);
            out.put_i16(0);
        } else {
            out.put_u8(b'Q');
            out.put_i32((4 + text.len() + 1) as i32);
            out.put_slice(&text);
            out.put_u8(0);
        }
        out
    }

    /// If the server's error answers a substitute, the proxy's
    /// ErrorResponse (whole frame) to send the client instead.
    pub fn answer(&mut self, e: &ServerError) -> Option<BytesMut> {
        if self.pending.is_empty() {
            return None;
        }
        let msg = e.message.as_bytes();
        let at = find(msg, &self.token)?;
        let digits = &msg[at + self.token.len()..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        let seq: u64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        // Entries older than this one were answered some other way.
        while self.pending.front().is_some_and(|(s, _)| *s < seq) {
            self.pending.pop_front();
        }
        match self.pending.front() {
            Some((s, _)) if *s == seq => self.pending.pop_front().map(|(_, e)| e),
            _ => None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The way out for a refused FunctionCall message (whatever the function).
const FASTPATH_HINT: &str = "Call the function in SQL (SELECT f(...)) so rolegate can read the call; only the large-object functions may be called by OID.";

/// The way out, per class, for the error's HINT.
fn hint(class: Class) -> &'static str {
    match class {
        Class::Ddl => {
            "Schema changes run as a migration: log in as the migration user with a migrator token inside a window."
        }
        Class::RlsToggle => {
            "Row-level security cannot be switched off on a runtime session. For pg_dump, add --enable-row-security (it exports what the runtime role may see) or dump through the migration login; workers that must see all rows need their own service role."
        }
        Class::RoleChange => {
            "A runtime session cannot change role or privileges; grants belong in migrations."
        }
        Class::DangerousFunction => {
            "This function (or a view over one) reaches server files, other sessions, server configuration or runs SQL text; it is on rolegate's deny-list (docs/policy.md). Run it from a migration session if it is really needed."
        }
        Class::CopyFile => {
            "Use COPY ... FROM STDIN or COPY ... TO STDOUT instead of a server file or program."
        }
        Class::EncodingChange => {
            "rolegate pins client_encoding = UTF8 and standard_conforming_strings = on on runtime sessions."
        }
        Class::TempTable => {
            "Temporary tables are off; set [policy] allow_temp_tables = true to allow them."
        }
        Class::Truncate => "TRUNCATE is off; set [policy] allow_truncate = true to allow it.",
        Class::Maintenance => {
            "VACUUM/ANALYZE are off; set [policy] allow_maintenance = true to allow them."
        }
        Class::Call => "CALL is allowed only for procedures listed in [policy] allow_call.",
        Class::Unparseable => {
            "rolegate could not read this statement and refuses what it cannot read; if it is valid application SQL, report it."
        }
        Class::InvalidUtf8 => "Statement text must be valid UTF-8.",
        _ => "This statement is not allowed on a runtime session.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Path;

    fn verdict() -> Verdict {
        Verdict {
            allowed: false,
            class: Class::Ddl,
            reason: "DDL is not allowed on a runtime session (DROP TABLE)".into(),
            path: Path::Parser,
            statements: 1,
        }
    }

    fn syntax_error(text: &str) -> ServerError {
        ServerError {
            severity: "ERROR".into(),
            code: "42601".into(),
            message: format!("syntax error at or near \"{text}\""),
        }
    }

    #[test]
    fn the_server_error_for_a_substitute_is_swapped_once() {
        let mut r = Refusals::new(Arc::from(&b"rolegate_refused_00ff_"[..]));
        let q = r.substitute(b'Q', b"", &verdict());
        assert_eq!(&q[..], b"Q\0\0\0\x1crolegate_refused_00ff_1\0");
        let p = r.substitute(b'P', b"s1", &verdict());
        assert_eq!(&p[..], b"P\0\0\0\x21s1\0rolegate_refused_00ff_2\0\0\0");
        // Not an answer: another error. The second answered first: the
        // first was answered some other way (an aborted transaction).
        assert!(r.answer(&syntax_error("something else")).is_none());
        let second = r.answer(&syntax_error("rolegate_refused_00ff_2"));
        assert!(second.is_some_and(|e| e.starts_with(b"E")));
        assert!(r.answer(&syntax_error("rolegate_refused_00ff_1")).is_none());
        assert!(r.answer(&syntax_error("rolegate_refused_00ff_2")).is_none());
        r.substitute(b'Q', b"", &verdict());
        // A number beyond the queue clears it.
        assert!(r.answer(&syntax_error("rolegate_refused_00ff_9")).is_none());
        assert!(r.answer(&syntax_error("rolegate_refused_00ff_3")).is_none());
    }

    #[test]
    fn unanswered_substitutes_are_bounded() {
        let mut r = Refusals::new(Arc::from(&b"t_"[..]));
        for _ in 0..200 {
            r.substitute(b'Q', b"", &verdict());
        }
        assert_eq!(r.pending.len(), MAX_PENDING);
        assert!(r.answer(&syntax_error("t_200")).is_some());
    }
}
