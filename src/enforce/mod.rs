//! The runtime policy on the wire: the [`Inspector`] of runtime sessions.
//!
//! Every `Query`, `Parse` and `FunctionCall` is classified (through the
//! shared verdict cache), logged and counted here. An allowed message is
//! forwarded as the client sent it — the classifier read exactly those
//! bytes. A refused one never reaches the server: [`refusal`] keeps the
//! protocol in step with a harmless substitute and swaps the server's
//! answer to it for the proxy's `ERROR 42501`. In `report` mode refusals
//! are logged and counted but forwarded.
//!
//! The pinned settings are watched here too: if the server reports
//! `client_encoding` or `standard_conforming_strings` changed anyway (the
//! classifier refuses every way to change them), the proxy's reading of
//! statement text can no longer be trusted, and the session is closed.

pub mod refusal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::PolicyMode;
use crate::metrics::{self, Outcome};
use crate::policy::{self, Class, Switches, Verdict, VerdictCache};
use crate::protocol::frontend::{FunctionCall, Parse, Query};
use crate::relay::{Backend, BackendAction, Frontend, FrontendAction, Inspector, Wants};
use crate::role::Role;

use refusal::Refusals;

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
    pub role: Role,
    pub peer: SocketAddr,
}

/// One runtime session's policy.
pub struct RuntimePolicy {
    cache: Arc<VerdictCache>,
    switches: Arc<Switches>,
    mode: PolicyMode,
    refusals: Refusals,
    info: SessionInfo,
    /// Metric handles resolved once per session, so an allowed statement
    /// costs no registry lookup (the common case on the hot path).
    seconds: ::metrics::Histogram,
    allowed: Vec<(Class, policy::Path, ::metrics::Counter)>,
    /// Under transaction pooling: refuse what needs one server backend.
    pooled: bool,
}

/// The way out of a transaction pooling refusal.
const POOLING_HINT: &str = "This needs one server connection for the whole session. Connect this client through a rolegate with [pool] mode = \"session\" (the default), or avoid it: pg_advisory_xact_lock instead of pg_advisory_lock, your driver's protocol-level prepared statements instead of SQL PREPARE.";

impl RuntimePolicy {
    /// `refusal_token` is the process's random substitute prefix.
    pub fn new(
        cache: Arc<VerdictCache>,
        switches: Arc<Switches>,
        mode: PolicyMode,
        refusal_token: Arc<[u8]>,
        info: SessionInfo,
    ) -> Self {
        RuntimePolicy {
            cache,
            switches,
            mode,
            refusals: Refusals::new(refusal_token),
            info,
            seconds: metrics::classification_seconds(),
            allowed: Vec::new(),
            pooled: false,
        }
    }

    /// Under `[pool] mode = "transaction"`: also refuse (with `0A000`,
    /// in both policy modes — it is not the policy's call, the statement
    /// would break) what needs one server backend for the session.
    pub fn transaction_pooled(mut self) -> Self {
        self.pooled = true;
        self
    }

    /// The one-backend feature a message uses, with a Parse's name.
    fn needs_one_backend<'a>(&self, msg: &Frontend<'a>) -> Option<(&'static str, &'a [u8])> {
        if !self.pooled {
            return None;
        }
        let body = msg.body();
        match msg.tag {
            b'Q' => policy::needs_one_backend(Query::read(body).text).map(|w| (w, &b""[..])),
            // Named statements are fine: txpool::prepared re-parses them
            // on whichever connection the client's Bind lands on.
            b'P' => {
                let p = Parse::read(body);
                policy::needs_one_backend(p.text).map(|w| (w, p.name))
            }
            _ => None,
        }
    }

    /// `statement_refused` and the refusal counter for a pooling refusal.
    fn record_pooling_refusal(&self, what: &str, msg: &Frontend<'_>) {
        let sql = match msg.tag {
            b'Q' => Query::read(msg.body()).text,
            b'P' => Parse::read(msg.body()).text,
            _ => b"",
        };
        tracing::warn!(
            event = "statement_refused",
            session_id = self.info.session_id,
            identity = %self.info.identity,
            role = self.info.role.as_str(),
            peer = %self.info.peer,
            class = metrics::POOLING_REFUSAL,
            reason = %what,
            fingerprint = %policy::fingerprint(sql),
            enforced = true,
            "statement refused"
        );
        metrics::refusal(metrics::POOLING_REFUSAL);
    }

    /// The refusal for one statement message, if it is refused; logged and
    /// counted either way. Returns the Parse statement name with it.
    fn judge<'a>(&mut self, msg: &Frontend<'a>) -> Option<(Verdict, &'a [u8])> {
        let body = msg.body();
        match msg.tag {
            b'Q' => {
                let q = Query::read(body);
                if !q.exact {
                    return Some((self.malformed(), b""));
                }
                self.check(q.text, msg.pipelined).map(|v| (v, &b""[..]))
            }
            b'P' => {
                let p = Parse::read(body);
                if !p.exact {
                    return Some((self.malformed(), b""));
                }
                self.check(p.text, msg.pipelined).map(|v| (v, p.name))
            }
            b'F' => self
                .function_call(FunctionCall::read(body))
                .map(|v| (v, &b""[..])),
            _ => None,
        }
    }

    fn check(&mut self, sql: &[u8], pipelined: bool) -> Option<Verdict> {
        let t0 = Instant::now();
        let (mut verdict, _hit) = if policy::is_large(sql) {
            crate::offload::cpu_heavy(|| self.cache.classify(sql, &self.switches))
        } else {
            self.cache.classify(sql, &self.switches)
        };
        if verdict.allowed
            && pipelined
            && let Some(refusal) = policy::check_other_readings(sql)
        {
            verdict = Arc::new(refusal);
        }
        self.seconds.record(t0.elapsed().as_secs_f64());
        if !verdict.allowed {
            let verdict = Verdict::clone(&verdict);
            self.record_refusal(&verdict, sql);
            return Some(verdict);
        }
        let key = (verdict.class, verdict.path);
        match self.allowed.iter().find(|(c, p, _)| (*c, *p) == key) {
            Some((_, _, counter)) => counter.increment(1),
            None => {
                let counter = metrics::statements(
                    self.info.role,
                    verdict.class.as_str(),
                    Outcome::Allowed,
                    path_label(&verdict),
                );
                counter.increment(1);
                self.allowed.push((key.0, key.1, counter));
            }
        }
        None
    }

    fn function_call(&mut self, call: FunctionCall) -> Option<Verdict> {
        let oid = call.oid;
        if ALLOWED_FASTPATH_OIDS.contains(&oid) {
            metrics::statements(self.info.role, "read", Outcome::Allowed, "fastpath").increment(1);
            return None;
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
        self.record_refusal(&verdict, b"");
        Some(verdict)
    }

    /// A message whose text the server would read differently than a
    /// plain string (see `protocol::frontend`): refused, unread.
    fn malformed(&mut self) -> Verdict {
        let verdict = Verdict {
            allowed: false,
            class: Class::Unparseable,
            reason: "malformed message".into(),
            path: policy::Path::Lexer,
            statements: 0,
        };
        self.record_refusal(&verdict, b"");
        verdict
    }

    /// `statement_refused` and the refusal counters (in both modes).
    fn record_refusal(&self, verdict: &Verdict, sql: &[u8]) {
        let report = self.mode == PolicyMode::Report;
        let fingerprint = policy::fingerprint(sql);
        tracing::warn!(
            event = "statement_refused",
            session_id = self.info.session_id,
            identity = %self.info.identity,
            role = self.info.role.as_str(),
            peer = %self.info.peer,
            class = verdict.class.as_str(),
            reason = %verdict.reason,
            path = path_label(verdict),
            fingerprint = %fingerprint,
            mode = if report { "report" } else { "enforce" },
            enforced = !report,
            "statement refused"
        );
        let outcome = if report {
            Outcome::Reported
        } else {
            Outcome::Refused
        };
        metrics::statements(
            self.info.role,
            verdict.class.as_str(),
            outcome,
            path_label(verdict),
        )
        .increment(1);
        metrics::refusal(verdict.class.as_str());
    }
}

impl Inspector for RuntimePolicy {
    fn wants(&self) -> Wants {
        Wants {
            errors: true,
            parameter_status: true,
            ..Wants::default()
        }
    }

    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction {
        if let Some((verdict, name)) = self.judge(msg)
            && self.mode != PolicyMode::Report
        {
            return FrontendAction::Substitute(self.refusals.substitute(msg.tag, name, &verdict));
        }
        if let Some((what, name)) = self.needs_one_backend(msg) {
            self.record_pooling_refusal(what, msg);
            let message = format!(
                "rolegate: {what} is not supported with transaction pooling: the session's next transaction may run on another server connection"
            );
            return FrontendAction::Substitute(self.refusals.substitute_error(
                msg.tag,
                name,
                "0A000",
                &message,
                POOLING_HINT,
            ));
        }
        FrontendAction::Forward
    }

    fn backend(&mut self, msg: &Backend<'_>) -> BackendAction {
        match msg {
            // The server's answer to a refused statement's substitute.
            Backend::Error(e) => match self.refusals.answer(e) {
                Some(error) => BackendAction::Replace(error),
                None => BackendAction::Pass,
            },
            Backend::ParameterStatus(p) => {
                let problem = match p {
                    Some(p) => policy::unpinned_report(p.name.as_bytes(), p.value.as_bytes()),
                    // Unreadable: the proxy cannot tell, so it fails closed.
                    None => Some("a reported setting"),
                };
                match problem {
                    Some(problem) => BackendAction::Close {
                        code: "42501",
                        message: format!(
                            "rolegate: {problem} changed on a runtime session; closing it"
                        ),
                    },
                    None => BackendAction::Pass,
                }
            }
            Backend::ReadyForQuery(_) | Backend::ParseComplete => BackendAction::Pass,
        }
    }
}

fn path_label(v: &Verdict) -> &'static str {
    match v.path {
        policy::Path::Parser => "parser",
        policy::Path::Lexer => "lexer",
    }
}
