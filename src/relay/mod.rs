//! The session relay: once both sides are authenticated, bytes flow
//! client → upstream and upstream → client until either side leaves or the
//! owner's stop conditions end the session.
//!
//! One future drives both directions on the session's task: each poll
//! moves whatever can move — write what is decided, scan what arrived, read
//! more while the direction's buffer has room — in each direction
//! independently, so a client that pipelines faster than it reads never
//! blocks the server's replies (nor they its requests) beyond what
//! PostgreSQL itself would. Forwarding is in bulk: a read becomes at most
//! one write, frame boundaries come from 5-byte headers ([`FrameCursor`]),
//! rows and COPY data are never decoded and nothing is allocated per
//! message. `Query`, `Parse` and `FunctionCall` (and Bind, Describe and
//! Close for an inspector that follows statement names) are collected
//! whole (bounded by `max_message`) and shown to the session's [`Inspector`],
//! which also sees the backend messages it asks for; the relay itself
//! reads only ReadyForQuery (the request cycle) and ErrorResponse severity
//! (whether the server said goodbye itself).
//!
//! The upstream connection is a lease ([`Upstream`]): lent to the relay,
//! handed back when the session ends, and — for a later transaction mode —
//! [`Relay::hand_back`] between transactions and [`Relay::lend`] again.

mod cursor;
mod inspect;
mod pipe;
mod stops;
#[cfg(test)]
mod tests;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::response::TransactionStatus;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::protocol::backend::{self, ParameterStatus, ServerError};
use crate::protocol::{self, ProtocolError};

pub use cursor::{FrameCursor, SERVER_WHOLE_LIMIT, Step, Tags};
pub use inspect::{Backend, BackendAction, Frontend, FrontendAction, Inspector, Wants};
pub use stops::{DrainSignal, Stops};

use pipe::{Fill, Pipe};

/// How long the relay tries to deliver its last words (pending output, a
/// closing FATAL, TLS close_notify) to a client that may not be reading.
const FINAL_WRITE: Duration = Duration::from_secs(1);

/// Frontend frames collected whole: the statements, and Terminate (not
/// forwarded: the owner closes the upstream or keeps it for another client).
const FRONTEND_WHOLE: Tags = Tags::of(b"QPFX");
/// Frontend frames that move the request cycle: Sync, and the
/// extended-protocol messages that need one.
const FRONTEND_MARKED: Tags = Tags::of(b"SBDEC");
/// Bind, Describe, Close: whole for inspectors that follow statement names.
const STATEMENT_REFS: Tags = Tags::of(b"BDC");

/// Why the owner asked a session to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    Shutdown,
    /// The migration window (or the token) ended.
    WindowClosed,
}

/// Per-session limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message: usize,
}

/// Why a session ended (the `end` of `session_end`).
#[derive(Debug)]
pub enum SessionEnd {
    /// The client sent Terminate.
    Terminated,
    /// The client closed its connection (or it broke).
    ClientGone,
    /// The upstream connection ended; the client was told.
    UpstreamGone,
    /// The client broke the protocol; it was told with a FATAL.
    ClientProtocol(ProtocolError),
    /// The inspector closed it (on runtime sessions: a pinned setting
    /// changed); the client was told with a FATAL.
    PolicyViolation,
    /// The owner stopped it (shutdown, window end); the client was told.
    Stopped(StopCause),
    /// No client message for `idle_timeout`.
    IdleTimeout,
    /// The owner had no upstream to lend for the client's next request
    /// (transaction pooling); the client is told with this FATAL.
    Unserved {
        code: &'static str,
        message: String,
        hint: &'static str,
    },
}

/// An upstream connection as the relay holds it: a byte stream, and a
/// place for bytes read from it that no client has been given.
pub trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {
    fn read_ahead(&mut self) -> &mut BytesMut;
}

/// Why [`Relay::run`] returned.
#[derive(Debug)]
pub enum Event {
    Ended(SessionEnd),
    /// Asked for with [`Relay::pause_between_transactions`]: the upstream
    /// can be handed back now.
    BetweenTransactions,
    /// No upstream is lent and the client sent something for one.
    NeedsUpstream,
}

/// What a session moved, for `session_end`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// `Query` and `Parse` messages.
    pub statements: u64,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
}

/// How a relay ended, with its upstream handed back.
#[derive(Debug)]
pub struct RelayEnd<U> {
    pub end: SessionEnd,
    pub upstream: Option<U>,
    /// The client left (Terminate or EOF) with the upstream idle outside a
    /// transaction, between messages in both directions and with no
    /// extended-protocol messages awaiting a Sync: it can serve another
    /// client. Its read-ahead then holds the whole frames the server sent
    /// that the client never got, for whoever reads it next.
    pub reusable: bool,
    pub stats: Stats,
}

/// The request cycle as the relay sees it.
#[derive(Debug, Clone, Copy)]
struct Cycle {
    /// Of the last ReadyForQuery (`None` before one, or if unreadable).
    status: Option<TransactionStatus>,
    /// Requests (`Query`, `Sync`, `FunctionCall`) sent upstream whose
    /// ReadyForQuery has not come back yet.
    in_flight: i64,
    /// Parse/Bind/Describe/Execute/Close sent since the last Sync.
    unsynced: bool,
}

impl Cycle {
    fn pipelined(&self) -> bool {
        self.unsynced || self.in_flight > 0
    }

    fn is_idle(&self) -> bool {
        self.in_flight <= 0 && self.status == Some(TransactionStatus::Idle)
    }

    /// A frontend frame passes (marked tags only).
    fn passing(&mut self, tag: u8) {
        match tag {
            // Sync: one ReadyForQuery will answer it.
            b'S' => {
                self.in_flight += 1;
                self.unsynced = false;
            }
            _ => self.unsynced = true,
        }
    }

    /// A whole frame goes upstream (as sent or substituted).
    fn request(&mut self, tag: u8) {
        match tag {
            // Parse, and Bind/Describe/Close when shown whole: answered
            // at the next Sync.
            b'P' | b'B' | b'D' | b'C' => self.unsynced = true,
            _ => self.in_flight += 1,
        }
    }
}

/// One session's relay. `C` is the client stream, `U` the upstream lease,
/// `I` the session's inspector.
pub struct Relay<C, U, I> {
    client: C,
    upstream: Option<U>,
    inspector: I,
    wants: Wants,
    /// Client → upstream.
    up: Pipe,
    /// Upstream → client.
    down: Pipe,
    cycle: Cycle,
    stats: Stats,
    stops: Stops,
    /// Why client → upstream stopped reading (Terminate, EOF): the session
    /// ends once what was decided before is out.
    up_closing: Option<SessionEnd>,
    /// The server or the inspector already sent the client a FATAL.
    told_fatal: bool,
    pause: bool,
    last_client: tokio::time::Instant,
    relayed: crate::metrics::Relayed,
}

impl<C, U, I> Relay<C, U, I>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: Upstream,
    I: Inspector,
{
    /// A relay for `client`; `client_pending` holds bytes the client sent
    /// during login that belong to the session. It has no upstream until
    /// one is [lent](Relay::lend).
    pub fn new(
        client: C,
        client_pending: BytesMut,
        inspector: I,
        limits: Limits,
        stops: Stops,
    ) -> Self {
        let wants = inspector.wants();
        let mut whole = FRONTEND_WHOLE;
        if wants.statement_refs {
            whole = whole.union(STATEMENT_REFS);
        }
        let up = FrameCursor::client(limits.max_message)
            .whole(whole)
            .mark(FRONTEND_MARKED);
        Relay {
            client,
            upstream: None,
            inspector,
            wants,
            up: Pipe::new(client_pending, up),
            down: Pipe::new(BytesMut::new(), server_cursor(wants)),
            cycle: Cycle {
                status: Some(TransactionStatus::Idle),
                in_flight: 0,
                unsynced: false,
            },
            stats: Stats::default(),
            stops,
            up_closing: None,
            told_fatal: false,
            pause: false,
            last_client: tokio::time::Instant::now(),
            relayed: crate::metrics::Relayed::new(),
        }
    }

    /// Give the session an upstream connection, positioned between
    /// messages (its read-ahead is relayed first). Refused (returned) while
    /// the relay holds one.
    pub fn lend(&mut self, mut upstream: U) -> Result<(), U> {
        if self.upstream.is_some() {
            return Err(upstream);
        }
        let ahead = std::mem::take(upstream.read_ahead());
        self.down = Pipe::new(ahead, server_cursor(self.wants));
        self.upstream = Some(upstream);
        Ok(())
    }

    /// Make [`Relay::run`] return [`Event::BetweenTransactions`] whenever
    /// [`Relay::can_hand_back`] holds.
    pub fn pause_between_transactions(&mut self, on: bool) {
        self.pause = on;
    }

    /// Whether the upstream could serve someone else now: idle outside a
    /// transaction, nothing in flight or unsynced, and both directions
    /// between frames with everything decided written.
    pub fn can_hand_back(&self) -> bool {
        self.upstream.is_some()
            && self.up_closing.is_none()
            && self.cycle.is_idle()
            && !self.cycle.unsynced
            && self.up.at_boundary()
            && self.down.at_boundary()
    }

    /// Take the upstream back between transactions (`None` if not
    /// [`Relay::can_hand_back`]). The session keeps its client, and may be
    /// lent another upstream.
    pub fn hand_back(&mut self) -> Option<U> {
        if !self.can_hand_back() {
            return None;
        }
        let mut upstream = self.upstream.take()?;
        // Server messages not yet scanned (notifications, notices) start
        // at a frame boundary; they stay with the connection.
        *upstream.read_ahead() = self.down.take_unwritten();
        self.down = Pipe::new(BytesMut::new(), server_cursor(self.wants));
        Some(upstream)
    }

    /// Relay until the session ends (or pauses, see [`Event`]).
    pub async fn run(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_run(cx)).await
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        // The stop conditions first, with the task's fresh coop budget: a
        // session that always has bytes to move must not starve its timers.
        if let Poll::Ready(end) = self.stops.poll(cx, &self.activity(), true) {
            return Poll::Ready(Event::Ended(end));
        }
        loop {
            let up = match self.pump_up(cx) {
                Ok(p) => p,
                Err(event) => return Poll::Ready(event),
            };
            let down = match self.pump_down(cx) {
                Ok(p) => p,
                Err(event) => return Poll::Ready(event),
            };
            if self.pause && self.can_hand_back() {
                return Poll::Ready(Event::BetweenTransactions);
            }
            if !(up || down) {
                break;
            }
        }
        // Nothing more moves until a wake-up: hold no empty read buffers
        // while waiting (most sessions are idle most of the time).
        self.up.release_if_empty();
        self.down.release_if_empty();
        // What moved may have made the session idle (a drain ends it now)
        // or quiet (the idle timeout runs from the client's last message).
        self.stops
            .poll(cx, &self.activity(), false)
            .map(Event::Ended)
    }

    fn activity(&self) -> stops::Activity {
        stops::Activity {
            idle: self.cycle.is_idle() && self.down.is_drained(),
            quiet: self.cycle.in_flight <= 0,
            last_client: self.last_client,
        }
    }

    /// Client → upstream: write, scan, read. `Ok(true)` if anything moved.
    fn pump_up(&mut self, cx: &mut Context<'_>) -> Result<bool, Event> {
        let mut progress = false;
        match self.upstream.as_mut() {
            Some(u) => {
                let before = self.up.is_drained();
                let n = self
                    .up
                    .poll_drain(cx, u)
                    .map_err(|_| Event::Ended(SessionEnd::UpstreamGone))?;
                if n > 0 {
                    self.stats.bytes_to_upstream += n as u64;
                    self.relayed.to_upstream.increment(n as u64);
                }
                progress |= n > 0 || before != self.up.is_drained();
            }
            None if !self.up.is_drained() => return Err(Event::NeedsUpstream),
            // Between transactions, a message is inspected only once an
            // upstream is lent: what the inspector decides may depend on
            // the connection it goes to (a statement it has not seen).
            // Terminate needs none.
            None if self.pause && self.up.next_tag().is_some_and(|t| t != b'X') => {
                return Err(Event::NeedsUpstream);
            }
            None => {}
        }
        if self.up_closing.is_some() {
            // Terminate or EOF: what came before still goes upstream.
            if self.up.is_drained() {
                let end = self.up_closing.take().unwrap_or(SessionEnd::ClientGone);
                return Err(Event::Ended(end));
            }
            return Ok(progress);
        }
        progress |= self.scan_up()?;
        if self.up_closing.is_none() {
            match self.up.poll_fill(cx, &mut self.client) {
                Ok(Fill::Read(_)) => {
                    self.last_client = tokio::time::Instant::now();
                    progress = true;
                }
                Ok(Fill::Eof) | Err(_) => {
                    self.up_closing = Some(SessionEnd::ClientGone);
                    progress = true;
                }
                Ok(Fill::Blocked) => {}
            }
        }
        Ok(progress)
    }

    fn scan_up(&mut self) -> Result<bool, Event> {
        let mut progress = false;
        while let Some(step) = self.up.next_step() {
            match step.map_err(|e| Event::Ended(SessionEnd::ClientProtocol(e)))? {
                Step::Forward(n) => self.up.forward(n),
                Step::Marked { tag, n } => {
                    self.cycle.passing(tag);
                    self.up.forward(n);
                }
                Step::Whole { tag: b'X', .. } => {
                    self.up_closing = Some(SessionEnd::Terminated);
                    return Ok(true);
                }
                Step::Whole { tag, len } => self.inspect_frontend(tag, len),
                Step::Need(_) => break,
            }
            progress = true;
        }
        Ok(progress)
    }

    fn inspect_frontend(&mut self, tag: u8, len: usize) {
        if matches!(tag, b'Q' | b'P') {
            self.stats.statements += 1;
        }
        let pipelined = self.cycle.pipelined();
        self.cycle.request(tag);
        let msg = Frontend {
            tag,
            frame: self.up.frame(len),
            pipelined,
        };
        match self.inspector.frontend(&msg) {
            FrontendAction::Forward => self.up.forward(len),
            FrontendAction::Substitute(bytes) => self.up.splice(len, bytes),
        }
    }

    /// Upstream → client: write, scan, read. `Ok(true)` if anything moved.
    fn pump_down(&mut self, cx: &mut Context<'_>) -> Result<bool, Event> {
        let mut progress = self
            .drain_down(cx)
            .map_err(|_| Event::Ended(SessionEnd::ClientGone))?;
        if self.upstream.is_none() {
            return Ok(progress);
        }
        progress |= self.scan_down().map_err(Event::Ended)?;
        if let Some(upstream) = self.upstream.as_mut() {
            match self.down.poll_fill(cx, upstream) {
                Ok(Fill::Read(_)) => progress = true,
                Ok(Fill::Eof) | Err(_) => return Err(Event::Ended(SessionEnd::UpstreamGone)),
                Ok(Fill::Blocked) => {}
            }
        }
        Ok(progress)
    }

    /// Write (and flush) what is decided for the client; whether anything
    /// moved.
    fn drain_down(&mut self, cx: &mut Context<'_>) -> std::io::Result<bool> {
        let before = self.down.is_drained();
        let n = self.down.poll_drain(cx, &mut self.client)?;
        if n > 0 {
            self.stats.bytes_to_client += n as u64;
            self.relayed.to_client.increment(n as u64);
        }
        Ok(n > 0 || before != self.down.is_drained())
    }

    fn scan_down(&mut self) -> Result<bool, SessionEnd> {
        let mut progress = false;
        while let Some(step) = self.down.next_step() {
            // A corrupt server stream cannot be resynchronised: end it
            // (the cursor stopped at the bad header, so the client's
            // stream is between frames for the 08006).
            match step.map_err(|_| SessionEnd::UpstreamGone)? {
                Step::Forward(n) | Step::Marked { n, .. } => self.down.forward(n),
                Step::Whole { tag, len } => self.inspect_backend(tag, len)?,
                Step::Need(_) => break,
            }
            progress = true;
        }
        Ok(progress)
    }

    fn inspect_backend(&mut self, tag: u8, len: usize) -> Result<(), SessionEnd> {
        let frame = self.down.frame(len);
        let action = match tag {
            b'Z' => {
                let status = backend::ready_for_query(frame);
                self.cycle.status = status;
                self.cycle.in_flight -= 1;
                self.ask(self.wants.ready_for_query, Backend::ReadyForQuery(status))
            }
            b'E' => match ServerError::from_frame(frame) {
                Some(e) => {
                    self.told_fatal |= e.is_fatal();
                    let wanted = self.wants.errors;
                    self.ask(wanted, Backend::Error(&e))
                }
                None => BackendAction::Pass,
            },
            b'S' => {
                let p = ParameterStatus::from_frame(frame);
                let wanted = self.wants.parameter_status;
                self.ask(wanted, Backend::ParameterStatus(p.as_ref()))
            }
            b'1' => self.ask(self.wants.parse_complete, Backend::ParseComplete),
            _ => BackendAction::Pass,
        };
        match action {
            BackendAction::Pass => self.down.forward(len),
            BackendAction::Replace(bytes) => self.down.splice(len, bytes),
            BackendAction::Close { code, message } => {
                let mut fatal = BytesMut::new();
                protocol::error_response(&mut fatal, "FATAL", code, &message, None);
                self.down.splice(len, fatal);
                self.told_fatal = true;
                return Err(SessionEnd::PolicyViolation);
            }
        }
        Ok(())
    }

    fn ask(&mut self, wanted: bool, msg: Backend<'_>) -> BackendAction {
        if wanted {
            self.inspector.backend(&msg)
        } else {
            BackendAction::Pass
        }
    }
}

impl<C, U, I> Relay<C, U, I>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: Upstream,
    I: Inspector,
{
    /// End the session: tell the client what `end` calls for (bounded by
    /// [`FINAL_WRITE`]), close the client stream, and hand the upstream
    /// back.
    pub async fn finish(mut self, end: SessionEnd) -> RelayEnd<U> {
        let reusable = matches!(end, SessionEnd::Terminated | SessionEnd::ClientGone)
            && self.upstream.is_some()
            && self.cycle.is_idle()
            && !self.cycle.unsynced
            && self.up.at_boundary()
            && self.down.at_boundary();
        let _ = tokio::time::timeout(FINAL_WRITE, self.last_words(&end)).await;
        let mut upstream = self.upstream.take();
        if let Some(u) = upstream.as_mut() {
            // Drained and between frames when reusable: whole frames only.
            *u.read_ahead() = self.down.take_unwritten();
        }
        RelayEnd {
            end,
            upstream,
            reusable,
            stats: self.stats,
        }
    }

    /// What was decided for the client goes out first, then the closing
    /// FATAL if the client's stream is between frames (never inside a
    /// half-sent one), then TLS close_notify and FIN.
    async fn last_words(&mut self, end: &SessionEnd) {
        if !matches!(end, SessionEnd::Terminated | SessionEnd::ClientGone) {
            // After the upstream left, the whole frames it sent before still
            // reach the client.
            let mut rescan = matches!(end, SessionEnd::UpstreamGone);
            if std::future::poll_fn(|cx| self.poll_deliver(cx, &mut rescan))
                .await
                .is_err()
            {
                return;
            }
            let fatal = closing_fatal(end).filter(|_| !self.told_fatal);
            if let Some((code, message, hint)) = fatal
                && self.down.at_boundary()
            {
                let mut out = BytesMut::new();
                protocol::error_response(&mut out, "FATAL", code, &message, hint);
                let _ = self.client.write_all(&out).await;
            }
        }
        let _ = self.client.shutdown().await;
    }

    fn poll_deliver(
        &mut self,
        cx: &mut Context<'_>,
        rescan: &mut bool,
    ) -> Poll<std::io::Result<()>> {
        loop {
            self.drain_down(cx)?;
            if !self.down.is_drained() {
                return Poll::Pending;
            }
            if !*rescan {
                return Poll::Ready(Ok(()));
            }
            match self.scan_down() {
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Ok(())),
                // A corrupt tail, or an inspector's own FATAL: deliver
                // what is decided and stop there.
                Err(_) => *rescan = false,
            }
        }
    }
}

/// The server cursor for an inspector: ReadyForQuery and ErrorResponse
/// whole, and ParameterStatus if the inspector watches settings.
fn server_cursor(wants: Wants) -> FrameCursor {
    let mut whole = Tags::of(b"ZE");
    if wants.parameter_status {
        whole = whole.union(Tags::of(b"S"));
    }
    if wants.parse_complete {
        whole = whole.union(Tags::of(b"1"));
    }
    FrameCursor::server().whole(whole)
}

/// The FATAL a session ending this way closes with (SQLSTATE, message,
/// hint); `None` when the client left or was already told.
fn closing_fatal(end: &SessionEnd) -> Option<(&'static str, String, Option<&'static str>)> {
    let (code, message, hint) = match end {
        SessionEnd::Terminated | SessionEnd::ClientGone | SessionEnd::PolicyViolation => {
            return None;
        }
        SessionEnd::UpstreamGone => (
            "08006",
            "rolegate: lost the connection to the upstream server".to_string(),
            Some(
                "The upstream server closed the connection or became unreachable; reconnect to get a new session.",
            ),
        ),
        SessionEnd::ClientProtocol(e) => (
            "08P01",
            format!("rolegate: invalid frontend message: {e}"),
            None,
        ),
        SessionEnd::Stopped(StopCause::Shutdown) => (
            "57P01",
            "terminating connection due to administrator command (rolegate is shutting down)"
                .to_string(),
            None,
        ),
        SessionEnd::Stopped(StopCause::WindowClosed) => (
            "57P01",
            "rolegate: the migration window closed; terminating the migration session".to_string(),
            None,
        ),
        SessionEnd::IdleTimeout => (
            "57P01",
            "rolegate: terminating connection due to idle timeout (listen.idle_timeout)"
                .to_string(),
            None,
        ),
        SessionEnd::Unserved {
            code,
            message,
            hint,
        } => (*code, message.clone(), Some(*hint)),
    };
    Some((code, message, hint))
}
