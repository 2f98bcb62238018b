//! One logged-in session, from `session_start` to `session_end`: the
//! inspector for its kind (the runtime policy or the migration audit), its
//! stop conditions (shutdown; for migration sessions the end of the window
//! or token; the idle timeout), the relay, and where its upstream session
//! goes afterwards — back to the pool when a runtime client left it clean,
//! closed otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{Instrument, info};

use crate::audit::StatementAudit;
use crate::config::Config;
use crate::enforce::{RuntimePolicy, SessionInfo};
use crate::login::LoggedIn;
use crate::migration::Admission;
use crate::policy::{Switches, VerdictCache};
use crate::pool::{Pool, PoolKey};
use crate::relay::{Event, Inspector, Limits, Relay, RelayEnd, SessionEnd, StopCause, Stops};
use crate::role::Role;
use crate::upstream::{Endpoint, UpstreamConn};

/// What a session needs from the proxy: the configuration it logged in
/// with and the process-wide state it shares.
pub struct Setup<'a> {
    pub config: &'a Config,
    pub switches: &'a Arc<Switches>,
    pub verdicts: &'a Arc<VerdictCache>,
    /// Prefix of the substitute text sent in place of refused statements.
    pub refusal_token: &'a Arc<[u8]>,
    pub pool: &'a Arc<Pool>,
    /// `Some(deadline)` once shutdown has begun.
    pub shutdown: watch::Receiver<Option<Instant>>,
}

/// Who the session is, for its events.
struct Who<'a> {
    session_id: u64,
    identity: &'a str,
    role: Role,
    peer: SocketAddr,
}

/// Run one logged-in session to its end, inside a `session` span that
/// carries who it is. `started` is when the connection was accepted (for
/// `duration_ms`).
pub async fn run(
    setup: Setup<'_>,
    session: LoggedIn,
    session_id: u64,
    peer: SocketAddr,
    started: Instant,
) {
    let span = tracing::info_span!(
        "session",
        session_id,
        identity = %session.identity,
        role = %session.role,
        peer = %peer
    );
    run_logged_in(setup, session, session_id, peer, started)
        .instrument(span)
        .await
}

async fn run_logged_in(
    setup: Setup<'_>,
    session: LoggedIn,
    session_id: u64,
    peer: SocketAddr,
    started: Instant,
) {
    let LoggedIn {
        client,
        client_pending,
        upstream,
        identity,
        role,
        service,
        admission,
        endpoint,
        pool_key,
        reused,
        // Maps the client's cancel key to this upstream until the end (in
        // transaction mode, to the current lease's).
        cancel,
        pooled,
    } = session;
    let who = Who {
        session_id,
        identity: &identity,
        role,
        peer,
    };
    log_start(&who, &service, reused, admission.as_ref());
    let inspector = inspector(&setup, &who, &service, admission.as_ref(), pooled.as_ref());
    let stops = stops(&setup, admission.as_ref());
    let limits = Limits {
        max_message: setup.config.listen.max_message_size,
    };
    let mut relay = Relay::new(client, client_pending, inspector, limits, stops);
    let _ = relay.lend(upstream);
    let active = crate::metrics::ActiveSession::new(role);
    let (mut done, pooled) = match pooled {
        Some(mut pooled) => {
            // Transaction mode: the relay pauses between transactions and
            // asks for an upstream when the client sends something.
            let end = pooled.run(&mut relay, &cancel).await;
            cancel.retarget(None);
            let mut done = relay.finish(end).await;
            pooled.finish(&mut done).await;
            (done, true)
        }
        None => {
            // Session mode: the upstream is lent for the whole session, so
            // the relay never pauses or asks for one.
            let end = match relay.run().await {
                Event::Ended(end) => end,
                Event::BetweenTransactions | Event::NeedsUpstream => SessionEnd::UpstreamGone,
            };
            (relay.finish(end).await, false)
        }
    };
    drop(active);
    if !pooled {
        let upstream = done.upstream.take();
        release(&setup, upstream, pool_key, endpoint, done.reusable).await;
    }
    let RelayEnd { end, stats, .. } = done;
    info!(
        event = "session_end",
        session_id,
        identity = %identity,
        role = %who.role,
        peer = %peer,
        end = ?end,
        duration_ms = started.elapsed().as_millis() as u64,
        statements = stats.statements,
        bytes_to_upstream = stats.bytes_to_upstream,
        bytes_to_client = stats.bytes_to_client,
        "session ended"
    );
}

/// A runtime client that left cleanly leaves an idle upstream session
/// behind: reset it and keep it for the next client (off this task). Any
/// other upstream session is closed.
async fn release(
    setup: &Setup<'_>,
    upstream: Option<UpstreamConn>,
    pool_key: Option<PoolKey>,
    endpoint: Arc<Endpoint>,
    reusable: bool,
) {
    match (upstream, pool_key) {
        (Some(conn), Some(key)) if reusable => {
            let pool = setup.pool.clone();
            let cfg = setup.config.pool;
            tokio::spawn(async move { pool.give_back(key, conn, endpoint, cfg).await });
        }
        (Some(conn), _) => crate::pool::close(conn.stream).await,
        (None, _) => {}
    }
}

fn log_start(who: &Who<'_>, service: &str, reused: bool, admission: Option<&Admission>) {
    info!(
        event = "session_start",
        session_id = who.session_id,
        identity = %who.identity,
        role = %who.role,
        peer = %who.peer,
        service = %service,
        upstream = if reused { "pooled" } else { "new" },
        jti = admission.and_then(|a| a.jti.as_deref()).unwrap_or(""),
        until = %admission.map(|a| a.until.to_string()).unwrap_or_default(),
        "session started"
    );
}

/// Migration sessions are audited, not filtered; runtime sessions get the
/// statement policy.
fn inspector(
    setup: &Setup<'_>,
    who: &Who<'_>,
    service: &str,
    admission: Option<&Admission>,
    pooled: Option<&crate::txpool::session::Pooled>,
) -> Box<dyn Inspector> {
    match admission {
        Some(a) => Box::new(StatementAudit {
            session_id: who.session_id,
            identity: who.identity.to_string(),
            peer: who.peer,
            subject: a.subject.clone(),
            jti: a.jti.clone(),
            service: service.to_string(),
        }),
        None => {
            let policy = RuntimePolicy::new(
                setup.verdicts.clone(),
                setup.switches.clone(),
                setup.config.policy.mode,
                setup.refusal_token.clone(),
                SessionInfo {
                    session_id: who.session_id,
                    identity: who.identity.to_string(),
                    role: who.role,
                    peer: who.peer,
                },
            );
            match pooled {
                // Transaction mode: the policy refuses what needs one
                // backend, and the watch notes possible settings changes.
                Some(p) => Box::new(crate::txpool::prepared::Prepared::new(
                    crate::txpool::watch::Watch::new(
                        policy.transaction_pooled(),
                        p.touched.clone(),
                    ),
                    p.statements.clone(),
                )),
                None => Box::new(policy),
            }
        }
    }
}

/// Shutdown closes every session once idle outside a transaction, or at
/// the drain deadline. Migration sessions also end with their window or
/// token (`until`): at once if idle, a busy one at `hard_end` at the latest
/// (window grace, never past the token's exp + leeway).
fn stops(setup: &Setup<'_>, admission: Option<&Admission>) -> Stops {
    let stops = Stops::new(setup.config.listen.idle_timeout)
        .drain_on(StopCause::Shutdown, on_shutdown(setup.shutdown.clone()));
    match admission {
        Some(a) => stops.drain_on(StopCause::WindowClosed, at_window_end(a.until, a.hard_end)),
        None => stops,
    }
}

/// Resolves with the drain deadline once shutdown begins (never, if the
/// proxy is gone).
async fn on_shutdown(mut rx: watch::Receiver<Option<Instant>>) -> Instant {
    let deadline = rx
        .wait_for(|s| s.is_some())
        .await
        .map(|d| d.unwrap_or_else(Instant::now));
    match deadline {
        Ok(deadline) => deadline,
        Err(_) => std::future::pending().await,
    }
}

/// Resolves at `until` with `hard_end`.
async fn at_window_end(until: jiff::Timestamp, hard_end: jiff::Timestamp) -> Instant {
    tokio::time::sleep_until(instant_at(until).into()).await;
    instant_at(hard_end)
}

/// The monotonic instant of wall-clock `t` (now, if `t` is past; about a
/// century ahead if `t` is further than `Instant` can count).
pub(crate) fn instant_at(t: jiff::Timestamp) -> Instant {
    let left = t.duration_since(jiff::Timestamp::now());
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    let now = Instant::now();
    now.checked_add(left)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}
