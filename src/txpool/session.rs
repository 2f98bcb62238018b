//! The relay loop of a transaction-mode runtime session: run the relay
//! with no upstream until the client sends something, lease one for it,
//! and hand it back as soon as the relay reports the upstream idle outside
//! a transaction (ReadyForQuery `I`, nothing in flight or unsynced). The
//! client's cancel key follows the lease. Waiting past `pool.wait_timeout`
//! ends the session with `FATAL 53300` (the client holds nothing then: it
//! is between transactions by construction).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use crate::cancel::Registration;
use crate::relay::{Event, Inspector, Relay, RelayEnd, SessionEnd};
use crate::upstream::UpstreamConn;

use super::watch::SettingsTouched;
use super::{ClientSettings, Lease, Permit, ServicePool};

/// One client's side of the pool.
pub struct Pooled {
    pub pool: Arc<ServicePool>,
    /// The session id: who a connection last served.
    pub client: u64,
    pub settings: ClientSettings,
    pub touched: SettingsTouched,
    /// Its named prepared statements.
    pub statements: super::prepared::Statements,
    /// The permit of the connection the relay holds now, if any.
    pub permit: Option<Permit>,
}

impl Pooled {
    /// Relay until the session ends, leasing and handing back.
    pub async fn run<C, I>(
        &mut self,
        relay: &mut Relay<C, UpstreamConn, I>,
        cancel: &Registration,
    ) -> SessionEnd
    where
        C: AsyncRead + AsyncWrite + Unpin,
        I: Inspector,
    {
        relay.pause_between_transactions(true);
        loop {
            match relay.run().await {
                Event::Ended(end) => return end,
                Event::BetweenTransactions => {
                    cancel.retarget(None);
                    // The relay pauses exactly when it can hand back.
                    if let Some(conn) = relay.hand_back() {
                        self.give_back(conn).await;
                    }
                }
                Event::NeedsUpstream => {
                    let lease = self.pool.acquire(self.client, &self.settings).await;
                    match lease {
                        Ok(lease) => self.lend(relay, cancel, lease),
                        Err(e) => {
                            debug!(error = %e, "no upstream lease");
                            let (code, message, hint) = e.client_text();
                            return SessionEnd::Unserved {
                                code,
                                message,
                                hint,
                            };
                        }
                    }
                }
            }
        }
    }

    fn lend<C, I>(
        &mut self,
        relay: &mut Relay<C, UpstreamConn, I>,
        cancel: &Registration,
        lease: Lease,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
        I: Inspector,
    {
        cancel.retarget(Some(self.pool.cancel_key(&lease.conn)));
        self.statements.on_lease(lease.conn.pid, lease.kept);
        // The relay asked because it holds none: lending cannot be refused.
        if relay.lend(lease.conn).is_ok() {
            self.permit = Some(lease.permit);
        }
    }

    /// A connection back between transactions: if the client may have
    /// changed a setting, remember what its session holds now; then keep
    /// it for the next lease.
    async fn give_back(&mut self, mut conn: UpstreamConn) {
        self.pool.count_reparses(self.statements.take_reparsed());
        let Some(permit) = self.permit.take() else {
            crate::pool::close_later(conn.stream);
            return;
        };
        let touched = self.touched.take();
        if touched.any {
            match self.settings.snapshot(&mut conn, touched.names).await {
                Ok(settings) => self.settings = settings,
                Err(e) => {
                    // Unknown state: never hand it to anyone.
                    warn!(error = %e, "reading a pooled connection's settings failed; closing it");
                    crate::pool::close_later(conn.stream);
                    return;
                }
            }
        }
        self.pool.give_back(conn, permit, self.client);
    }

    /// Where the session's upstream goes when it ends: back to the pool if
    /// the relay left it clean, closed otherwise.
    pub async fn finish(&mut self, done: &mut RelayEnd<UpstreamConn>) {
        let Some(conn) = done.upstream.take() else {
            self.permit = None;
            return;
        };
        if done.reusable {
            self.give_back(conn).await;
        } else {
            self.permit = None;
            crate::pool::close(conn.stream).await;
        }
    }
}
