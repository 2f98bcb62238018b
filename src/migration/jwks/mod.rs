//! Keys fetched from an OIDC issuer (`[[migration.jwks]]` with `url`, or
//! `issuer` alone for discovery): one [`Fetcher`] per issuer and settings,
//! its cached [`KeySet`], and the background task that keeps it current.
//!
//! * The key set is swapped atomically (`arc-swap`); a login reads it
//!   without a lock and never waits for the network unless its token names
//!   a key the set lacks.
//! * Refresh is event-driven: the task sleeps until the next fetch is due
//!   (the response's `max-age`, else `refresh`; backoff after a failure)
//!   or until a login demands one ([`Fetcher::refresh_now`]); the rate
//!   limit and sharing of demands live in [`schedule`].
//! * While the issuer is unreachable the last good keys keep working until
//!   they are `max_stale` old (each use is logged and counted); then, and
//!   before the first fetch succeeds, tokens of that issuer are refused.
//! * Fetchers are shared process-wide by issuer and settings, so a config
//!   reload keeps the keys (and the rate limit) of every unchanged entry;
//!   a fetcher nobody uses any more stops its task.
//!
//! Nothing here runs at config load: `rolegate check --offline` and a
//! startup with the issuer down never wait for a fetch.

mod fetch;
mod schedule;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jiff::Timestamp;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

pub use fetch::{FetchError, OUTCOMES, discovery_url};
pub use schedule::{MAX_TTL, MIN_TTL};

use super::settings::{RemoteJwks, RemoteLocation};
use super::token::{Candidate, jwks_keys};
use super::{AccessError, plus};
use schedule::Schedule;

/// The keys of one successful fetch.
#[derive(Debug)]
pub struct KeySet {
    pub(crate) candidates: Vec<Candidate>,
    /// Where the JWKS was fetched from.
    pub url: String,
    pub fetched_at: Timestamp,
    /// After this a use counts as stale (the refresh is overdue).
    pub fresh_until: Timestamp,
    /// After this the keys are not used at all (`max_stale`).
    pub usable_until: Timestamp,
}

impl KeySet {
    pub fn is_usable(&self, now: Timestamp) -> bool {
        now <= self.usable_until
    }

    pub fn is_stale(&self, now: Timestamp) -> bool {
        now > self.fresh_until
    }
}

/// A handle on one issuer's fetched keys. Dropping the last handle stops
/// the background task.
#[derive(Debug)]
pub struct Fetcher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The configured issuer.
    issuer: String,
    /// Its series (`issuer` label).
    metrics: crate::metrics::Issuer,
    settings: RemoteJwks,
    http: fetch::Http,
    keys: ArcSwapOption<KeySet>,
    schedule: Mutex<Schedule>,
    /// Wakes the task: a demand, or the last handle dropped.
    wake: Notify,
    /// The number of the last finished fetch.
    done: watch::Sender<u64>,
    closed: AtomicBool,
    started: AtomicBool,
    /// When this fetcher was made: the age of "no keys yet".
    created: Timestamp,
}

type Registry = Vec<((String, RemoteJwks), Weak<Fetcher>)>;

/// Every live fetcher, by issuer and settings.
static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fetcher {
    /// The fetcher for `issuer` with these settings: the live one if a
    /// loaded config already has it (keeping its keys), else a new one
    /// that fetches nothing until [`Fetcher::start`].
    pub fn shared(
        name: &str,
        issuer: &str,
        settings: &RemoteJwks,
    ) -> Result<Arc<Fetcher>, AccessError> {
        let key = (issuer.to_string(), settings.clone());
        let mut all = registry();
        all.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(live) = all
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(live);
        }
        let http = fetch::Http::new(settings.ca.as_ref())
            .map_err(|e| AccessError(format!("{name}.ca_file: {e}")))?;
        let fetcher = Arc::new(Fetcher {
            shared: Arc::new(Shared {
                issuer: issuer.to_string(),
                metrics: crate::metrics::Issuer::new(issuer),
                schedule: Mutex::new(Schedule::new(
                    settings.min_refresh_interval,
                    settings.refresh,
                )),
                settings: settings.clone(),
                http,
                keys: ArcSwapOption::empty(),
                wake: Notify::new(),
                done: watch::Sender::new(0),
                closed: AtomicBool::new(false),
                started: AtomicBool::new(false),
                created: Timestamp::now(),
            }),
        });
        all.push((key, Arc::downgrade(&fetcher)));
        Ok(fetcher)
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The current keys, if a fetch ever succeeded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.shared.keys.load_full()
    }

    /// Start the background task (once; a no-op outside a tokio runtime,
    /// e.g. in `rolegate check --offline`). Its metric series appear now.
    pub fn start(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.zero_series();
        runtime.spawn(run(self.shared.clone()));
    }

    /// A login's token names a key the cache lacks: have the keys fetched
    /// (now, or when the rate limit allows) and wait at most `budget` for
    /// that fetch. Concurrent callers share one fetch.
    pub async fn refresh_now(&self, budget: Duration) {
        self.start();
        let want = self.shared.schedule().demand();
        self.shared.wake.notify_one();
        let mut done = self.shared.done.subscribe();
        let _ = tokio::time::timeout(budget, done.wait_for(|n| *n >= want)).await;
    }

    /// The longest a login should wait for [`Fetcher::refresh_now`]: the
    /// rate limit's interval and one fetch.
    pub fn wait_bound(&self) -> Duration {
        self.shared.settings.min_refresh_interval + self.shared.settings.fetch_timeout
    }

    /// A token verified with keys past their refresh time.
    pub fn record_stale_use(&self, set: &KeySet, now: Timestamp) {
        let issuer = self.shared.issuer.clone();
        self.shared.metrics.stale_use();
        warn!(
            event = "migration_jwks_stale",
            issuer = %issuer,
            fetched_at = %set.fetched_at,
            age_seconds = age(set.fetched_at, now),
            usable_until = %set.usable_until,
            "migration token verified with stale issuer keys (the issuer has not answered a refresh)"
        );
    }

    /// One fetch outside the schedule, for `rolegate check`: the number of
    /// usable keys, or why there are none.
    pub async fn probe(&self) -> Result<usize, FetchError> {
        self.shared
            .fetch_keys()
            .await
            .map(|(set, _)| set.candidates.len())
    }

    /// Where the keys come from, for messages.
    pub fn location(&self) -> String {
        match &self.shared.settings.location {
            RemoteLocation::Url(url) => url.clone(),
            RemoteLocation::Discovery { issuer } => discovery_url(issuer),
        }
    }
}

#[cfg(test)]
impl Fetcher {
    /// Put a key set in place as if it had been fetched.
    pub(crate) fn install(&self, set: KeySet) {
        self.shared.keys.store(Some(Arc::new(set)));
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

/// The background task of one fetcher: sleep until the next fetch may
/// start (woken early by a demand), fetch, repeat; end when the last
/// handle is gone.
async fn run(shared: Arc<Shared>) {
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let next = shared.schedule().next_start();
        if let Some(at) = next
            && at > Instant::now()
        {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                // A demand or a close: look at the schedule again.
                _ = shared.wake.notified() => continue,
            }
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        shared.fetch_once().await;
    }
}

impl Shared {
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One scheduled fetch: swap in the new keys, or keep the old ones.
    async fn fetch_once(&self) {
        let number = self.schedule().begin();
        match self.fetch_keys().await {
            Ok((set, ttl)) => {
                self.fetched(&set, ttl);
                self.keys.store(Some(Arc::new(set)));
                self.schedule().succeeded(Instant::now(), ttl);
            }
            Err(e) => {
                self.schedule().failed(Instant::now());
                self.failed(&e);
            }
        }
        self.done.send_replace(number);
    }

    /// Fetch and parse within `fetch_timeout`; the key set and its TTL.
    async fn fetch_keys(&self) -> Result<(KeySet, Duration), FetchError> {
        let timeout = self.settings.fetch_timeout;
        let doc = tokio::time::timeout(timeout, fetch::fetch(&self.http, &self.settings.location))
            .await
            .map_err(|_| FetchError::Timeout(timeout))??;
        let text = std::str::from_utf8(&doc.body)
            .map_err(|_| FetchError::invalid(&doc.url, "the body is not UTF-8"))?;
        let mut notes = Vec::new();
        let candidates = jwks_keys(&format!("JWKS {}", doc.url), text, &mut notes)
            .map_err(|e| FetchError::invalid(&doc.url, e.0))?;
        for note in notes {
            debug!(event = "migration_jwks_key_skipped", issuer = %self.issuer, note = %note);
        }
        let ttl = schedule::ttl(doc.max_age, self.settings.refresh, self.settings.max_stale);
        let now = Timestamp::now();
        Ok((
            KeySet {
                candidates,
                url: doc.url,
                fetched_at: now,
                fresh_until: plus(now, ttl + timeout),
                usable_until: plus(now, self.settings.max_stale),
            },
            ttl,
        ))
    }

    fn fetched(&self, set: &KeySet, ttl: Duration) {
        let issuer = self.issuer.clone();
        self.metrics.fetched("ok");
        self.metrics.keys(set.candidates.len(), 0);
        let kids: Vec<&str> = set
            .candidates
            .iter()
            .filter_map(|c| c.kid.as_deref())
            .collect();
        info!(
            event = "migration_jwks_fetched",
            issuer = %issuer,
            url = %set.url,
            keys = set.candidates.len(),
            kids = %kids.join(","),
            fresh_for_seconds = ttl.as_secs(),
            "migration token keys fetched"
        );
    }

    fn failed(&self, e: &FetchError) {
        let issuer = self.issuer.clone();
        self.metrics.fetched(e.outcome());
        let current = self.keys.load_full();
        let now = Timestamp::now();
        let kept = match &current {
            Some(set) if set.is_usable(now) => format!(
                "keeping the keys fetched at {} (usable until {})",
                set.fetched_at, set.usable_until
            ),
            Some(_) => {
                "the last keys are older than max_stale: tokens of this issuer are refused".into()
            }
            None => "no keys yet: tokens of this issuer are refused".into(),
        };
        warn!(
            event = "migration_jwks_fetch_failed",
            issuer = %issuer,
            outcome = e.outcome(),
            error = %e,
            failures = self.schedule().failures(),
            "fetching migration token keys failed; {kept}"
        );
    }

    /// Every series of this issuer, at zero or its current value.
    fn zero_series(&self) {
        self.metrics.present(OUTCOMES);
        self.sample(Timestamp::now());
    }

    /// The gauges: how many keys, and how old (since this fetcher was made
    /// when no fetch has succeeded yet, so an age alert fires either way).
    fn sample(&self, now: Timestamp) {
        let (count, since) = match self.keys.load_full() {
            Some(set) => (set.candidates.len(), set.fetched_at),
            None => (0, self.created),
        };
        self.metrics.keys(count, age(since, now));
    }
}

fn age(since: Timestamp, now: Timestamp) -> i64 {
    (now.as_second() - since.as_second()).max(0)
}

/// Refresh the key-count and age gauges of every running fetcher (called
/// when `/metrics` is scraped, so the age is current).
pub fn sample_metrics() {
    let live: Vec<Arc<Fetcher>> = registry()
        .iter()
        .filter_map(|(_, weak)| weak.upgrade())
        .collect();
    let now = Timestamp::now();
    for f in live {
        if f.shared.started.load(Ordering::SeqCst) {
            f.shared.sample(now);
        }
    }
}
