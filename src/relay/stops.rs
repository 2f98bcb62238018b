//! When a session must stop, checked on the relay's own task: drain
//! requests (shutdown, the end of a migration window) that end the session
//! as soon as it is idle outside a transaction, or at their deadline
//! whatever it is doing; and the idle timeout.
//!
//! Nothing here polls on an interval. A drain request is a future the
//! owner supplies; the idle timeout is one timer whose deadline moves with
//! client activity (re-armed only when it fires early, so a busy session
//! costs one timer wake-up per timeout period, not one per message).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::{SessionEnd, StopCause};

/// Resolves when a drain begins, with the latest instant the session may
/// run to.
pub type DrainSignal = Pin<Box<dyn Future<Output = Instant> + Send>>;

/// What the relay knows when it checks the stop conditions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Activity {
    /// Idle outside a transaction, the last ReadyForQuery delivered.
    pub idle: bool,
    /// Nothing the client sent is being executed.
    pub quiet: bool,
    /// When the client's last bytes arrived.
    pub last_client: tokio::time::Instant,
}

/// A session's stop conditions.
pub struct Stops {
    signals: Vec<(StopCause, Option<DrainSignal>)>,
    /// The drain under way: its cause and the timer of its deadline.
    draining: Option<(StopCause, Pin<Box<Sleep>>)>,
    idle_timeout: Option<Duration>,
    idle_timer: Option<Pin<Box<Sleep>>>,
}

impl Stops {
    /// No drain requests yet; `idle_timeout` closes a session whose client
    /// sent nothing for that long while nothing of its was in flight.
    pub fn new(idle_timeout: Option<Duration>) -> Stops {
        Stops {
            signals: Vec::new(),
            draining: None,
            idle_timeout,
            idle_timer: None,
        }
    }

    /// End the session for `cause` once `signal` resolves: at once if it is
    /// idle outside a transaction, else when it becomes so, or at the
    /// instant the signal resolved with.
    pub fn drain_on<F>(mut self, cause: StopCause, signal: F) -> Stops
    where
        F: Future<Output = Instant> + Send + 'static,
    {
        self.signals.push((cause, Some(Box::pin(signal))));
        self
    }

    /// Check the stop conditions; with `signals`, also poll the drain
    /// requests and the drain deadline (their wake-ups stay registered
    /// until the next such poll).
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        now: &Activity,
        signals: bool,
    ) -> Poll<SessionEnd> {
        if signals {
            self.poll_signals(cx);
        }
        if let Some((cause, deadline)) = &mut self.draining
            && (now.idle || (signals && deadline.as_mut().poll(cx).is_ready()))
        {
            return Poll::Ready(SessionEnd::Stopped(cause.clone()));
        }
        self.poll_idle(cx, now)
    }

    fn poll_signals(&mut self, cx: &mut Context<'_>) {
        for i in 0..self.signals.len() {
            let (cause, signal) = &mut self.signals[i];
            let Some(f) = signal else { continue };
            if let Poll::Ready(deadline) = f.as_mut().poll(cx) {
                *signal = None;
                let cause = cause.clone();
                self.begin_drain(cause, deadline);
            }
        }
    }

    /// Of two drains, the earlier deadline wins.
    fn begin_drain(&mut self, cause: StopCause, deadline: Instant) {
        let deadline = tokio::time::Instant::from_std(deadline);
        match &self.draining {
            Some((_, timer)) if timer.deadline() <= deadline => {}
            _ => self.draining = Some((cause, Box::pin(tokio::time::sleep_until(deadline)))),
        }
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>, now: &Activity) -> Poll<SessionEnd> {
        let Some(timeout) = self.idle_timeout else {
            return Poll::Pending;
        };
        // While a request runs the client is not idle; the timer is looked
        // at again when the relay next wakes with nothing in flight.
        if !now.quiet {
            return Poll::Pending;
        }
        let due = now.last_client + timeout;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        while timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= due {
                return Poll::Ready(SessionEnd::IdleTimeout);
            }
            // The client was active since the timer was set.
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}
