//! Enforcing the runtime policy on the wire: where a refused statement is
//! stopped, and how the client learns of it exactly as if the server itself
//! had refused.
//!
//! The relay hands every `Query`, `Parse` and `FunctionCall` of a runtime
//! session to [`Enforcer::inspect`]. An allowed message is forwarded as the
//! client sent it (the classifier read exactly those bytes). A refused one
//! is never forwarded: in its place the proxy sends the server a message
//! whose text is a bare, per-process-random identifier, which the server
//! rejects with a syntax error *before executing anything*. That one trick
//! gives exactly PostgreSQL's own behaviour on every path:
//!
//! * simple query: an ErrorResponse and a ReadyForQuery with the right
//!   transaction status; nothing in the string ran;
//! * extended query: the `Parse` fails, the server skips to `Sync`, and a
//!   later `Bind` to that statement name fails with `26000`;
//! * inside a transaction block: the server aborts the transaction, so a
//!   later `COMMIT` answers `ROLLBACK`.
//!
//! The upstream-to-client direction then swaps the server's syntax error
//! (recognised by the identifier) for the proxy's `ERROR 42501` naming what
//! was refused ([`PendingRefusals`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{BufMut, BytesMut};

use crate::config::PolicyMode;
use crate::policy::{self, Class, Switches, Verdict, VerdictCache};
use crate::protocol;

/// Large-object functions that libpq (and psql's `\lo_*`) call through the
/// fastpath FunctionCall message. Their OIDs are fixed in PostgreSQL's
/// catalog. Every other FunctionCall is refused: an OID cannot be
/// classified, and lo_import/lo_export (server-side files) are among them.
const ALLOWED_FASTPATH_OIDS: &[i32] = &[
    715,  // lo_create
    952,  // lo_open
    953,  // lo_close
    954,  // loread
    955,  // lowrite
    956,  // lo_lseek
    957,  // lo_creat
    958,  // lo_tell
    964,  // lo_unlink
    1004, // lo_truncate
    3170, // lo_lseek64
    3171, // lo_tell64
    3172, // lo_truncate64
];

/// Who a session is, for audit events.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: u64,
    pub identity: String,
    pub role: &'static str,
    pub peer: SocketAddr,
}

/// Refusals whose substitute is in flight, waiting for the server's syntax
/// error to come back so it can be replaced.
#[derive(Debug)]
pub struct PendingRefusals {
    /// `rolegate_refused_<random>_`: the prefix of every substitute.
    token: Arc<[u8]>,
    len: AtomicUsize,
    queue: Mutex<VecDeque<(u64, BytesMut)>>,
}

impl PendingRefusals {
    pub fn new(token: Arc<[u8]>) -> Self {
        PendingRefusals {
            token,
            len: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Cheap check for the relay's hot path.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    fn push(&self, seq: u64, error: BytesMut) {
        if let Ok(mut q) = self.queue.lock() {
            // A substitute whose error never came back (e.g. the server
            // reported an aborted transaction first) must not pile up.
            while q.len() >= 64 {
                q.pop_front();
            }
            q.push_back((seq, error));
            self.len.store(q.len(), Ordering::Release);
        }
    }

    /// If `error_body` (an ErrorResponse body) is the server's answer to a
    /// substitute, return the proxy's ErrorResponse (whole message) to send
    /// instead.
    pub fn take_for(&self, error_body: &[u8]) -> Option<BytesMut> {
        let at = find(error_body, &self.token)?;
        let digits = &error_body[at + self.token.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        let seq: u64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        let mut q = self.queue.lock().ok()?;
        // Entries older than this one were answered some other way.
        while let Some((s, _)) = q.front() {
            if *s < seq {
                q.pop_front();
            } else {
                break;
            }
        }
        let found = match q.front() {
            Some((s, _)) if *s == seq => q.pop_front().map(|(_, e)| e),
            _ => None,
        };
        self.len.store(q.len(), Ordering::Release);
        found
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the relay does with one inspected frontend message.
pub enum Action {
    Forward,
    /// Send these bytes upstream instead of the client's message.
    Substitute(BytesMut),
}

/// The per-session policy state.
pub struct Enforcer {
    cache: Arc<VerdictCache>,
    switches: Arc<Switches>,
    mode: PolicyMode,
    pending: Arc<PendingRefusals>,
    info: SessionInfo,
    seq: u64,
    /// Metric handles resolved once per session, so an allowed statement
    /// costs no registry lookup (the common case on the hot path).
    seconds: metrics::Histogram,
    allowed: Vec<(Class, policy::Path, metrics::Counter)>,
}

impl Enforcer {
    pub fn new(
        cache: Arc<VerdictCache>,
        switches: Arc<Switches>,
        mode: PolicyMode,
        pending: Arc<PendingRefusals>,
        info: SessionInfo,
    ) -> Self {
        Enforcer {
            cache,
            switches,
            mode,
            pending,
            info,
            seconds: metrics::histogram!("rolegate_classification_seconds"),
            allowed: Vec::new(),
            seq: 0,
        }
    }

    /// Inspect one whole frontend message (`frame` includes the 5-byte
    /// header). `pipelined`: earlier messages of this session are still
    /// being executed by the server (no ReadyForQuery for them yet).
    pub fn inspect(&mut self, tag: u8, frame: &[u8], pipelined: bool) -> Action {
        let body = &frame[protocol::FrameHeader::SIZE..];
        match tag {
            b'Q' => {
                let Some(sql) = query_text(body) else {
                    return self.refuse_malformed(tag);
                };
                self.check(tag, sql, &[], pipelined)
            }
            b'P' => {
                let Some((name, sql)) = parse_text(body) else {
                    return self.refuse_malformed(tag);
                };
                self.check(tag, sql, name, pipelined)
            }
            b'F' => {
                let oid = body
                    .get(..4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if ALLOWED_FASTPATH_OIDS.contains(&oid) {
                    record(self.info.role, "read", "allowed", "fastpath");
                    return Action::Forward;
                }
                let verdict = Verdict {
                    allowed: false,
                    class: Class::DangerousFunction,
                    reason: format!(
                        "a function call by OID ({oid}) is not allowed on a runtime session: rolegate does not map OIDs to function names, so it cannot tell what the call would run"
                    ),
                    path: policy::Path::Parser,
                    statements: 1,
                };
                self.refuse(tag, &verdict, b"", &[], 0.0)
            }
            _ => Action::Forward,
        }
    }

    fn check(&mut self, tag: u8, sql: &[u8], name: &[u8], pipelined: bool) -> Action {
        let t0 = Instant::now();
        let (mut verdict, _hit) = if policy::is_large(sql) {
            off_async_workers(|| self.cache.classify(sql, &self.switches))
        } else {
            self.cache.classify(sql, &self.switches)
        };
        if verdict.allowed
            && pipelined
            && let Some(refusal) = policy::check_other_readings(sql)
        {
            verdict = Arc::new(refusal);
        }
        let secs = t0.elapsed().as_secs_f64();
        self.seconds.record(secs);
        if verdict.allowed {
            let key = (verdict.class, verdict.path);
            match self.allowed.iter().find(|(c, p, _)| (*c, *p) == key) {
                Some((_, _, counter)) => counter.increment(1),
                None => {
                    let counter = metrics::counter!(
                        "rolegate_statements_total",
                        "role" => self.info.role,
                        "class" => verdict.class.as_str(),
                        "verdict" => "allowed",
                        "path" => path_label(&verdict)
                    );
                    counter.increment(1);
                    self.allowed.push((key.0, key.1, counter));
                }
            }
            return Action::Forward;
        }
        let verdict = verdict.clone();
        self.refuse(tag, &verdict, sql, name, secs)
    }

    fn refuse_malformed(&mut self, tag: u8) -> Action {
        let verdict = Verdict {
            allowed: false,
            class: Class::Unparseable,
            reason: "malformed message".into(),
            path: policy::Path::Lexer,
            statements: 0,
        };
        self.refuse(tag, &verdict, b"", &[], 0.0)
    }

    fn refuse(
        &mut self,
        tag: u8,
        verdict: &Verdict,
        sql: &[u8],
        name: &[u8],
        _secs: f64,
    ) -> Action {
        let report = self.mode == PolicyMode::Report;
        let fingerprint = policy::fingerprint(sql);
        tracing::warn!(
            event = "statement_refused",
            session_id = self.info.session_id,
            identity = %self.info.identity,
            role = self.info.role,
            peer = %self.info.peer,
            class = verdict.class.as_str(),
            reason = %verdict.reason,
            path = path_label(verdict),
            fingerprint = %fingerprint,
            mode = if report { "report" } else { "enforce" },
            enforced = !report,
            "statement refused"
        );
        record(
            self.info.role,
            verdict.class.as_str(),
            if report { "reported" } else { "refused" },
            path_label(verdict),
        );
        metrics::counter!("rolegate_refusals_total", "reason" => verdict.class.as_str())
            .increment(1);
        if report {
            return Action::Forward;
        }

        self.seq += 1;
        let mut err = BytesMut::with_capacity(256);
        protocol::error_response(
            &mut err,
            "ERROR",
            "42501",
            &format!("rolegate: {}", verdict.reason),
            Some(if tag == b'F' {
                FASTPATH_HINT
            } else {
                hint(verdict.class)
            }),
        );
        self.pending.push(self.seq, err);

        let mut token = Vec::with_capacity(self.pending.token.len() + 20);
        token.extend_from_slice(&self.pending.token);
        token.extend_from_slice(self.seq.to_string().as_bytes());
        let mut out = BytesMut::with_capacity(token.len() + name.len() + 16);
        if tag == b'P' {
            // Same statement name, so a later Bind fails as on the server.
            let len = 4 + name.len() + 1 + token.len() + 1 + 2;
            out.put_u8(b'P');
            out.put_i32(len as i32);
            out.put_slice(name);
            out.put_u8(0);
            out.put_slice(&token);
            out.put_u8(0);
            out.put_i16(0);
        } else {
            out.put_u8(b'Q');
            out.put_i32((4 + token.len() + 1) as i32);
            out.put_slice(&token);
            out.put_u8(0);
        }
        Action::Substitute(out)
    }
}

fn record(role: &'static str, class: &'static str, verdict: &'static str, path: &'static str) {
    metrics::counter!(
        "rolegate_statements_total",
        "role" => role,
        "class" => class,
        "verdict" => verdict,
        "path" => path
    )
    .increment(1);
}

fn path_label(v: &Verdict) -> &'static str {
    match v.path {
        policy::Path::Parser => "parser",
        policy::Path::Lexer => "lexer",
    }
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

/// The text of a Query body: one NUL-terminated string and nothing after
/// it. Bytes after an embedded NUL would be a text the classifier never
/// read, so such a message is malformed (and refused, never forwarded).
fn query_text(body: &[u8]) -> Option<&[u8]> {
    let (last, text) = body.split_last()?;
    (*last == 0 && !text.contains(&0)).then_some(text)
}

/// The statement name and text of a Parse body, which must be exactly
/// name, text, an Int16 count and that many Int32 type OIDs.
fn parse_text(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut b = body;
    let name = protocol::take_cstr(&mut b)?;
    let sql = protocol::take_cstr(&mut b)?;
    let count = b.get(..2).map(|n| i16::from_be_bytes([n[0], n[1]]))?;
    let count = usize::try_from(count).ok()?;
    (b.len() == 2 + 4 * count).then_some((name, sql))
}

/// Run a slow classification where it cannot stall other sessions: on a
/// multi-threaded runtime the current worker hands its other tasks to a
/// new one for the duration.
fn off_async_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_are_read_whole_or_not_at_all() {
        assert_eq!(query_text(b"SELECT 1\0"), Some(&b"SELECT 1"[..]));
        assert_eq!(query_text(b"SELECT 1\0DROP TABLE t\0"), None);
        assert_eq!(query_text(b"SELECT 1"), None);
        assert_eq!(query_text(b""), None);
        assert_eq!(
            parse_text(b"s\0SELECT $1\0\0\x01\0\0\0\x17"),
            Some((&b"s"[..], &b"SELECT $1"[..]))
        );
        assert_eq!(
            parse_text(b"\0SELECT 1\0\0\0"),
            Some((&b""[..], &b"SELECT 1"[..]))
        );
        assert_eq!(parse_text(b"\0SELECT 1\0DROP TABLE t\0\0\0"), None);
        assert_eq!(parse_text(b"\0SELECT 1\0\0\x01"), None);
        assert_eq!(parse_text(b"\0SELECT 1\0\xff\xff"), None);
    }
}
