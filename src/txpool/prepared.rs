//! Named prepared statements under transaction pooling. A client's named
//! `Parse` is remembered (its exact bytes, as the policy classified and
//! forwarded them); when a later `Bind` or `Describe` names a statement
//! the current upstream connection has not seen — the client's
//! transactions moved to another connection, or it was reset — the same
//! `Parse` is sent there first, and the server's `ParseComplete` for it is
//! kept from the client, which never asked. `Close` and `DEALLOCATE`
//! forget statements. Nothing is re-encoded: the re-sent bytes are the
//! client's own.
//!
//! At most [`MAX_STATEMENTS`] statements are remembered per client (so at
//! most that many are prepared on a connection on its behalf); past it the
//! least recently used is forgotten, and using it again on another
//! connection fails as PostgreSQL does for an unknown statement (`26000`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};

use crate::protocol::frontend::{Parse, Query};
use crate::protocol::take_cstr;
use crate::relay::{Backend, BackendAction, Frontend, FrontendAction, Inspector, Wants};

/// Named statements remembered per client.
pub const MAX_STATEMENTS: usize = 1000;

/// One client's statements, shared by its inspector and its pool loop.
#[derive(Debug, Clone, Default)]
pub struct Statements(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// The client's `Parse` frames by statement name, and when each was
    /// last used (for eviction).
    parsed: HashMap<Vec<u8>, (BytesMut, u64)>,
    clock: u64,
    /// The upstream backend (pid) `here` describes.
    upstream: Option<i32>,
    /// Statements prepared on that backend.
    here: HashSet<Vec<u8>>,
    /// One entry per `Parse` sent since the last ReadyForQuery, in order:
    /// whether the proxy sent it (its ParseComplete is not the client's),
    /// and the statement name.
    parses: VecDeque<(bool, Vec<u8>)>,
    /// Re-parses done (for the metric).
    reparsed: u64,
}

impl Statements {
    /// A new lease on backend `pid`; `kept` when the connection last served
    /// this client and was not reset (its statements are still there).
    pub fn on_lease(&self, pid: i32, kept: bool) {
        if let Ok(mut s) = self.0.lock() {
            if !kept || s.upstream != Some(pid) {
                s.here.clear();
            }
            s.upstream = Some(pid);
            s.parses.clear();
        }
    }

    /// Re-parses since the last call.
    pub fn take_reparsed(&self) -> u64 {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut s.reparsed))
            .unwrap_or(0)
    }
}

impl State {
    fn remember(&mut self, name: &[u8], frame: &[u8]) {
        self.clock += 1;
        if !self.parsed.contains_key(name) && self.parsed.len() >= MAX_STATEMENTS {
            let oldest = self
                .parsed
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                self.parsed.remove(&n);
            }
        }
        self.parsed
            .insert(name.to_vec(), (BytesMut::from(frame), self.clock));
        self.here.insert(name.to_vec());
    }

    /// An error: every Parse not yet answered was skipped.
    fn skipped(&mut self) {
        while let Some((_, name)) = self.parses.pop_front() {
            if !name.is_empty() {
                self.here.remove(&name);
            }
        }
    }

    fn forget(&mut self, name: &[u8]) {
        self.parsed.remove(name);
        self.here.remove(name);
    }

    /// The `Parse` to send before a message naming `name`, if this
    /// backend has not seen it.
    fn missing(&mut self, name: &[u8]) -> Option<BytesMut> {
        if name.is_empty() || self.here.contains(name) {
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        let (frame, used) = self.parsed.get_mut(name)?;
        *used = clock;
        let frame = frame.clone();
        self.here.insert(name.to_vec());
        self.parses.push_back((true, name.to_vec()));
        self.reparsed += 1;
        Some(frame)
    }
}

/// The inspector wrapper that does it.
pub struct Prepared<I> {
    inner: I,
    statements: Statements,
}

impl<I> Prepared<I> {
    pub fn new(inner: I, statements: Statements) -> Self {
        Prepared { inner, statements }
    }
}

impl<I: Inspector> Inspector for Prepared<I> {
    fn wants(&self) -> Wants {
        Wants {
            ready_for_query: true,
            parse_complete: true,
            statement_refs: true,
            ..self.inner.wants()
        }
    }

    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction {
        let action = self.inner.frontend(msg);
        let Ok(mut s) = self.statements.0.lock() else {
            return action;
        };
        match (msg.tag, action) {
            (b'P', FrontendAction::Forward) => {
                let name = Parse::read(msg.body()).name;
                if !name.is_empty() {
                    s.remember(name, msg.frame);
                }
                s.parses.push_back((false, name.to_vec()));
                FrontendAction::Forward
            }
            (b'B' | b'D', FrontendAction::Forward) => {
                match referenced(msg.tag, msg.body()).and_then(|name| s.missing(name)) {
                    Some(mut parse) => {
                        parse.put_slice(msg.frame);
                        FrontendAction::Substitute(parse)
                    }
                    None => FrontendAction::Forward,
                }
            }
            (b'C', FrontendAction::Forward) => {
                if let Some(name) = referenced(b'C', msg.body()) {
                    s.forget(name);
                }
                FrontendAction::Forward
            }
            (b'Q', FrontendAction::Forward) => {
                for d in crate::policy::deallocated(Query::read(msg.body()).text) {
                    match d {
                        None => {
                            s.parsed.clear();
                            s.here.clear();
                        }
                        Some(name) => s.forget(name.as_bytes()),
                    }
                }
                FrontendAction::Forward
            }
            (b'P', action) => {
                s.parses.push_back((false, Vec::new()));
                action
            }
            (_, action) => action,
        }
    }

    fn backend(&mut self, msg: &Backend<'_>) -> BackendAction {
        match msg {
            Backend::ParseComplete => {
                let ours = self
                    .statements
                    .0
                    .lock()
                    .ok()
                    .and_then(|mut s| s.parses.pop_front())
                    .is_some_and(|(ours, _)| ours);
                if ours {
                    BackendAction::Replace(BytesMut::new())
                } else {
                    BackendAction::Pass
                }
            }
            Backend::ReadyForQuery(_) => {
                // Every Parse before the Sync is answered or skipped.
                if let Ok(mut s) = self.statements.0.lock() {
                    s.parses.clear();
                }
                self.inner.backend(msg)
            }
            Backend::Error(_) => {
                // The server skips to Sync: Parses not yet answered never
                // ran, so their statements are not on this connection.
                if let Ok(mut s) = self.statements.0.lock() {
                    s.skipped();
                }
                self.inner.backend(msg)
            }
            _ => self.inner.backend(msg),
        }
    }
}

/// The prepared statement a `Bind` uses, or a `Describe`/`Close` of a
/// statement (`S`) names; `None` for portals and unreadable bodies.
fn referenced(tag: u8, body: &[u8]) -> Option<&[u8]> {
    let mut b = body;
    match tag {
        b'B' => {
            take_cstr(&mut b)?;
            take_cstr(&mut b)
        }
        _ => {
            let (&kind, mut rest) = b.split_first()?;
            (kind == b'S').then(|| take_cstr(&mut rest)).flatten()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{State, referenced};

    #[test]
    fn a_statement_is_reparsed_once_per_connection_and_skipped_ones_again() {
        let mut s = State::default();
        s.remember(b"s1", b"P-frame");
        s.parses.push_back((false, b"s1".to_vec()));
        assert_eq!(s.missing(b"s1"), None, "prepared here");
        s.parses.clear();
        s.here.clear(); // a new connection
        assert_eq!(s.missing(b"s1").as_deref(), Some(&b"P-frame"[..]));
        assert_eq!(s.missing(b"s1"), None, "once per connection");
        // The batch failed before the re-parse ran.
        s.skipped();
        assert!(s.missing(b"s1").is_some(), "sent again");
        assert_eq!(s.missing(b"unknown"), None);
        s.forget(b"s1");
        s.here.clear();
        assert_eq!(s.missing(b"s1"), None, "closed");
    }

    #[test]
    fn statement_names_are_read_from_bind_describe_and_close() {
        assert_eq!(referenced(b'B', b"portal\0s1\0\0\0"), Some(&b"s1"[..]));
        assert_eq!(referenced(b'D', b"Ss2\0"), Some(&b"s2"[..]));
        assert_eq!(referenced(b'C', b"Ss3\0"), Some(&b"s3"[..]));
        assert_eq!(referenced(b'D', b"Pportal\0"), None);
        assert_eq!(referenced(b'B', b"no terminator"), None);
    }
}
