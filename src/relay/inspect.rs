//! The inspector seam: what the relay shows the session's policy, and what
//! the policy may answer. The relay knows which frames to collect whole and
//! how to splice bytes into a stream in step; an [`Inspector`] decides what
//! the bytes mean (the runtime policy in `enforce`, the migration audit in
//! `audit`).

use bytes::BytesMut;
use pgwire::messages::response::TransactionStatus;

use crate::protocol::FrameHeader;
use crate::protocol::backend::{ParameterStatus, ServerError};

/// A whole frontend statement message on its way upstream: `Query`,
/// `Parse` or `FunctionCall`, collected whole (bounded by `max_message`).
#[derive(Debug, Clone, Copy)]
pub struct Frontend<'a> {
    pub tag: u8,
    /// The frame as the client sent it, header included.
    pub frame: &'a [u8],
    /// Earlier messages of the session are still being executed by the
    /// server (no ReadyForQuery for them yet, or extended-protocol messages
    /// not yet followed by Sync): their effects could change how this one
    /// is read.
    pub pipelined: bool,
}

impl<'a> Frontend<'a> {
    pub fn body(&self) -> &'a [u8] {
        &self.frame[FrameHeader::SIZE..]
    }
}

/// What happens to an inspected frontend message.
#[derive(Debug)]
pub enum FrontendAction {
    /// Forward it as the client sent it.
    Forward,
    /// Send these bytes (whole frames) upstream instead, and drop the
    /// client's message. The request cycle counts them as the client's
    /// message, so they must draw the same kind of answer (a `Query` a
    /// ReadyForQuery; a `Parse` nothing until Sync).
    Substitute(BytesMut),
}

/// A backend message an inspector asked to see, read into its typed body.
#[derive(Debug, Clone, Copy)]
pub enum Backend<'a> {
    Error(&'a ServerError),
    /// `None`: the frame could not be read (malformed, or not UTF-8).
    ParameterStatus(Option<&'a ParameterStatus>),
    /// `None`: not a status byte PostgreSQL sends.
    ReadyForQuery(Option<TransactionStatus>),
    /// A `Parse` succeeded.
    ParseComplete,
}

/// What happens to an inspected backend message.
#[derive(Debug)]
pub enum BackendAction {
    /// Pass it to the client.
    Pass,
    /// Send these bytes (whole frames) to the client instead.
    Replace(BytesMut),
    /// Drop it, send the client `FATAL` with this SQLSTATE and message, and
    /// end the session ([`SessionEnd::PolicyViolation`](super::SessionEnd)).
    Close { code: &'static str, message: String },
}

/// Which backend messages an inspector wants to see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub errors: bool,
    pub parameter_status: bool,
    pub ready_for_query: bool,
    /// ParseComplete, as [`Backend::ParseComplete`].
    pub parse_complete: bool,
    /// Bind, Describe and Close shown whole to [`Inspector::frontend`]
    /// too (they name prepared statements).
    pub statement_refs: bool,
}

/// A session's policy, as the relay sees it. Called on the relay's own
/// task, between reads: it must not block.
pub trait Inspector: Send {
    /// Which backend messages [`Inspector::backend`] is shown. Asked once,
    /// when the relay is built.
    fn wants(&self) -> Wants;

    /// Every `Query`, `Parse` and `FunctionCall`, whole, before anything of
    /// it is forwarded.
    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction;

    /// A backend message of a kind [`Inspector::wants`] named, before
    /// anything of it reaches the client.
    fn backend(&mut self, msg: &Backend<'_>) -> BackendAction;
}

impl<T: Inspector + ?Sized> Inspector for Box<T> {
    fn wants(&self) -> Wants {
        (**self).wants()
    }

    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction {
        (**self).frontend(msg)
    }

    fn backend(&mut self, msg: &Backend<'_>) -> BackendAction {
        (**self).backend(msg)
    }
}
