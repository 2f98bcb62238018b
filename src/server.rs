//! The proxy's lifecycle: the listener and connection limit, the login
//! timeout, the live configuration (swapped atomically on reload; sessions
//! keep the snapshot they logged in with), graceful shutdown (stop
//! accepting, let sessions finish, then close the rest with `FATAL 57P01`),
//! and the migration window watcher. What happens inside one logged-in
//! session is `session`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::login::{self, LoggedIn, LoginError};
use crate::policy::{Switches, VerdictCache};
use crate::pool::Pool;
use crate::session::{self, instant_at};
use crate::upstream::Endpoint;

/// Distinct statement texts whose verdicts are kept.
const VERDICT_CACHE_ENTRIES: usize = 50_000;

/// One loaded configuration and everything derived from it. Replaced as a
/// whole on reload.
pub struct Runtime {
    pub config: Arc<Config>,
    /// Runtime endpoints by service, built once so TLS configs are shared.
    pub(crate) endpoints: HashMap<String, Arc<Endpoint>>,
    pub(crate) switches: Arc<Switches>,
    /// Transaction mode's pools, one per service (empty in session mode).
    pub(crate) txpools: crate::txpool::TxPools,
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let endpoints = config
            .services
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    Arc::new(Endpoint::new(&s.runtime, &config.upstream)),
                )
            })
            .collect();
        let switches = Arc::new(Switches::from(&config.policy));
        let txpools = crate::txpool::TxPools::new(&config, &endpoints);
        Runtime {
            config: Arc::new(config),
            endpoints,
            switches,
            txpools,
        }
    }
}

/// Shared by every connection.
pub struct Proxy {
    runtime: ArcSwap<Runtime>,
    pub cancels: Arc<CancelRegistry>,
    /// Keys the fake SCRAM exchange for unknown users.
    pub(crate) mock_secret: [u8; 32],
    next_session: AtomicU64,
    /// Connections being served (logging in or relaying).
    active: AtomicUsize,
    /// The runtime policy's verdicts, shared by every session.
    verdicts: Arc<VerdictCache>,
    /// Prefix of the substitute text sent in place of refused statements;
    /// random per process so a client cannot guess it.
    refusal_token: Arc<[u8]>,
    /// `true` once shutdown has begun.
    shutdown: watch::Sender<Option<Instant>>,
    /// Idle runtime upstream sessions waiting for their next client.
    pub pool: Arc<Pool>,
    /// Woken when the last connection ends (the shutdown drain waits on it).
    drained: Arc<tokio::sync::Notify>,
    /// Woken when a new configuration is swapped in.
    reloaded: tokio::sync::Notify,
}

impl Proxy {
    pub fn new(config: Config) -> Arc<Proxy> {
        // The peer id is fixed for the process: keys handed out carry it.
        let peer_id = config.cluster.as_ref().map(|c| c.peer_id);
        Arc::new(Proxy {
            runtime: ArcSwap::from_pointee(Runtime::new(config)),
            cancels: Arc::new(CancelRegistry::new(peer_id)),
            mock_secret: rand::random(),
            next_session: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            verdicts: Arc::new(VerdictCache::new(VERDICT_CACHE_ENTRIES)),
            refusal_token: format!("rolegate_refused_{:016x}_", rand::random::<u64>())
                .into_bytes()
                .into(),
            shutdown: watch::channel(None).0,
            pool: Arc::new(Pool::default()),
            drained: Arc::new(tokio::sync::Notify::new()),
            reloaded: tokio::sync::Notify::new(),
        })
    }

    /// The configuration new logins use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swap in a new configuration; sessions already open keep theirs.
    pub fn replace_config(&self, config: Config) {
        let old = self.runtime.swap(Arc::new(Runtime::new(config)));
        // Pooled sessions were opened with the old credentials and TLS
        // settings; new logins must get sessions made under the new ones.
        self.pool.clear();
        // The old transaction pools serve their sessions until they end;
        // their idle connections go now.
        old.txpools.close_idle();
        self.reloaded.notify_waiters();
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The runtime endpoint of the default (or first) service, for readiness.
    pub fn default_endpoint(&self) -> Option<Arc<Endpoint>> {
        let rt = self.runtime();
        rt.endpoints
            .get(crate::config::DEFAULT_SERVICE)
            .or_else(|| rt.endpoints.values().next())
            .cloned()
    }

    /// Accept connections until shutdown begins (or the listener fails).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let mut shutdown = self.shutdown.subscribe();
        let proxy = self.clone();
        let reaper = tokio::spawn(async move {
            proxy.pool.reap(|| proxy.runtime().config.pool).await;
        });
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| s.is_some()) => {
                    reaper.abort();
                    return Ok(());
                }
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move { proxy.handle(tcp, peer).await });
        }
    }

    /// Begin shutdown: stop accepting, let sessions finish (idle ones are
    /// closed at once), and close the rest at `shutdown_timeout`. Returns
    /// when every session is gone.
    pub async fn shutdown(&self) {
        let timeout = self.runtime().config.listen.shutdown_timeout;
        let deadline = Instant::now() + timeout;
        self.shutdown.send_replace(Some(deadline));
        // Idle upstream sessions close now; sessions ending during the
        // drain close theirs instead of pooling them.
        self.pool.clear();
        self.runtime().txpools.close_idle();
        // Sessions close themselves at the deadline; allow a moment for
        // their final writes.
        let hard = tokio::time::sleep_until((deadline + Duration::from_secs(2)).into());
        tokio::pin!(hard);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            tokio::select! {
                _ = drained => {}
                _ = &mut hard => return,
            }
        }
    }

    /// Log `window_open` / `window_close` as migration windows open and
    /// close, and keep the `rolegate_migration_window_open` gauge current.
    /// Sleeps until the next opening or closing, or a reload.
    pub async fn watch_windows(self: Arc<Self>) {
        let mut was_open: Option<bool> = None;
        loop {
            let reloaded = self.reloaded.notified();
            tokio::pin!(reloaded);
            reloaded.as_mut().enable();
            let state = self
                .runtime()
                .config
                .access
                .window_state(jiff::Timestamp::now());
            let (open, detail, next) = match state {
                crate::migration::WindowState::Open { until } => {
                    (true, until.to_string(), Some(until))
                }
                crate::migration::WindowState::Closed { next } => (
                    false,
                    next.map(|n| n.to_string())
                        .unwrap_or_else(|| "none scheduled".into()),
                    next,
                ),
            };
            if was_open != Some(open) {
                log_window(open, &detail);
                was_open = Some(open);
            }
            // Wall-clock times through the monotonic clock: re-read at least
            // every few minutes in case the system clock is stepped.
            let cap = Instant::now() + WALL_CLOCK_RECHECK;
            let at = next.map_or(cap, |t| instant_at(t).min(cap));
            tokio::select! {
                _ = reloaded => {}
                _ = tokio::time::sleep_until(at.into()) => {}
            }
        }
    }

    /// One connection: the connection limit, the login (bounded by
    /// `startup_timeout`), then the session.
    async fn handle(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let rt = self.runtime();
        let _active = ActiveGuard::new(&self.active, &self.drained);
        if self.active() > rt.config.listen.max_connections {
            // Over the limit: answer like PostgreSQL does, without reading
            // anything the client sends.
            let mut tcp = tcp;
            login::fail_early(
                Some(&mut tcp),
                &LoginError::TooManyClients,
                session_id,
                peer,
            )
            .await;
            return;
        }
        let started = Instant::now();
        let Some(ready) = self.login(&rt, tcp, peer, session_id).await else {
            return;
        };
        let setup = session::Setup {
            config: &rt.config,
            switches: &rt.switches,
            verdicts: &self.verdicts,
            refusal_token: &self.refusal_token,
            pool: &self.pool,
            shutdown: self.shutdown.subscribe(),
        };
        session::run(setup, ready, session_id, peer, started).await;
    }

    /// Log in within `startup_timeout`; `None` when there is no session
    /// (the client, the log and the metrics have been told).
    async fn login(
        &self,
        rt: &Runtime,
        tcp: TcpStream,
        peer: SocketAddr,
        session_id: u64,
    ) -> Option<LoggedIn> {
        let ctx = login::Context {
            config: &rt.config,
            endpoints: &rt.endpoints,
            pool: &self.pool,
            txpools: &rt.txpools,
            cancels: &self.cancels,
            mock_secret: &self.mock_secret,
        };
        let login = tokio::time::timeout(
            rt.config.listen.startup_timeout,
            login::login(&ctx, tcp, peer, session_id),
        )
        .await;
        match login {
            Ok(ready) => ready,
            Err(_) => {
                let e = LoginError::StartupTimeout;
                login::fail_early::<TcpStream>(None, &e, session_id, peer).await;
                None
            }
        }
    }
}

/// How long the window watch trusts a wall-clock deadline it converted to
/// the monotonic clock.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(300);

fn log_window(open: bool, detail: &str) {
    crate::metrics::window_open(open);
    if open {
        info!(event = "window_open", session_id = 0u64, identity = "", role = "migration", peer = "", until = %detail, "migration window open");
    } else {
        info!(event = "window_close", session_id = 0u64, identity = "", role = "migration", peer = "", next = %detail, "migration window closed");
    }
}

/// Counts a connection as active for as long as it lives (RAII, so a
/// cancelled task cannot leave the count wrong); the last one out wakes
/// the shutdown drain.
struct ActiveGuard<'a>(&'a AtomicUsize, &'a tokio::sync::Notify);

impl<'a> ActiveGuard<'a> {
    fn new(n: &'a AtomicUsize, drained: &'a tokio::sync::Notify) -> Self {
        n.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(n, drained)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.1.notify_waiters();
        }
    }
}
