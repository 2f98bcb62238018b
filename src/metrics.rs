//! Every metric rolegate exports, defined once: each family's name, type,
//! unit and HELP text ([`FAMILIES`]), the series that exist from startup,
//! and one typed helper per event, so call sites never spell a metric name
//! or a label and cannot drift from the HELP text or from each other.
//! Gauges that count live things are RAII guards ([`ActiveSession`],
//! [`PooledSession`]): a cancelled task or a dropped entry cannot leave
//! them wrong.
//!
//! (This module shadows the `metrics` crate inside itself; the crate is
//! reached as `::metrics`.)

use ::metrics::{Counter, Histogram, Unit, counter, gauge, histogram};

use crate::role::Role;

const CONNECTIONS: &str = "rolegate_connections_total";
const ACTIVE_SESSIONS: &str = "rolegate_active_sessions";
const STATEMENTS: &str = "rolegate_statements_total";
const REFUSALS: &str = "rolegate_refusals_total";
const CLASSIFICATION_SECONDS: &str = "rolegate_classification_seconds";
const UPSTREAM_CONNECT_SECONDS: &str = "rolegate_upstream_connect_seconds";
const UPSTREAM_ERRORS: &str = "rolegate_upstream_errors_total";
const WINDOW_OPEN: &str = "rolegate_migration_window_open";
const BYTES: &str = "rolegate_bytes_total";
const CONFIG_RELOADS: &str = "rolegate_config_reloads_total";
const UPSTREAM_SESSIONS: &str = "rolegate_upstream_sessions_total";
const POOL_IDLE: &str = "rolegate_pool_idle_connections";
const POOL_RESETS: &str = "rolegate_pool_resets_total";
const POOL_DISCARDED: &str = "rolegate_pool_discarded_total";
const TXPOOL_SIZE: &str = "rolegate_pool_size";
const TXPOOL_ACTIVE: &str = "rolegate_pool_active_connections";
const TXPOOL_OPEN: &str = "rolegate_pool_open_connections";
const TXPOOL_WAITING: &str = "rolegate_pool_waiting_clients";
const TXPOOL_WAIT_SECONDS: &str = "rolegate_pool_wait_seconds";
const TXPOOL_LEASES: &str = "rolegate_pool_leases_total";
const TXPOOL_WAIT_TIMEOUTS: &str = "rolegate_pool_wait_timeouts_total";
const TXPOOL_REPARSES: &str = "rolegate_pool_reparses_total";
const SCRAM_DERIVATIONS: &str = "rolegate_upstream_scram_derivations_total";
const JWKS_FETCHES: &str = "rolegate_migration_jwks_fetches_total";
const JWKS_KEYS: &str = "rolegate_migration_jwks_keys";
const JWKS_AGE: &str = "rolegate_migration_jwks_age_seconds";
const JWKS_STALE_USES: &str = "rolegate_migration_jwks_stale_uses_total";
const BUILD_INFO: &str = "rolegate_build_info";
const CANCEL_REQUESTS: &str = "rolegate_cancel_requests_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: what `/metrics` says in its HELP and TYPE lines.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// Histogram bucket bounds (seconds).
    pub buckets: &'static [f64],
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family {
        name,
        kind,
        unit: None,
        help,
        buckets: &[],
    }
}

/// Every family rolegate exports (process metrics come from
/// `metrics-process`).
pub const FAMILIES: &[Family] = &[
    family(
        CONNECTIONS,
        Kind::Counter,
        "Client logins by identity (configured name or \"unknown\"), role and outcome",
    ),
    family(
        ACTIVE_SESSIONS,
        Kind::Gauge,
        "Relayed sessions open now, by role",
    ),
    family(
        STATEMENTS,
        Kind::Counter,
        "Statements seen on runtime sessions by role, class, verdict (allowed/refused/reported) and deciding path (parser/lexer/fastpath)",
    ),
    family(
        REFUSALS,
        Kind::Counter,
        "Refusals by reason (statement class, or startup)",
    ),
    Family {
        name: CLASSIFICATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to classify one statement (cache hits included)",
        buckets: &[1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2],
    },
    Family {
        name: UPSTREAM_CONNECT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Upstream connect + TLS + authentication time, by role",
        buckets: &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ],
    },
    family(
        UPSTREAM_ERRORS,
        Kind::Counter,
        "Failed upstream logins, by role",
    ),
    family(
        WINDOW_OPEN,
        Kind::Gauge,
        "1 while a migration window is open",
    ),
    Family {
        name: BYTES,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes relayed, by direction (to_upstream/to_client)",
        buckets: &[],
    },
    family(
        CONFIG_RELOADS,
        Kind::Counter,
        "Config reloads by outcome (ok/rejected)",
    ),
    family(
        UPSTREAM_SESSIONS,
        Kind::Counter,
        "Upstream sessions given to logins, by role and source (new/pool)",
    ),
    family(
        POOL_IDLE,
        Kind::Gauge,
        "Idle runtime upstream sessions kept for reuse",
    ),
    family(
        POOL_RESETS,
        Kind::Counter,
        "Resets (DISCARD ALL) of returned upstream sessions, by outcome (ok/failed/timeout)",
    ),
    family(
        POOL_DISCARDED,
        Kind::Counter,
        "Idle upstream sessions closed instead of reused, by reason",
    ),
    family(
        TXPOOL_SIZE,
        Kind::Gauge,
        "Transaction mode: the most upstream connections a service may open (pool.size), by service",
    ),
    family(
        TXPOOL_ACTIVE,
        Kind::Gauge,
        "Transaction mode: upstream connections leased to a client now, by service",
    ),
    family(
        TXPOOL_OPEN,
        Kind::Gauge,
        "Transaction mode: upstream connections open (leased or idle), by service; idle = open - active",
    ),
    family(
        TXPOOL_WAITING,
        Kind::Gauge,
        "Transaction mode: clients waiting for a free upstream connection now, by service",
    ),
    Family {
        name: TXPOOL_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Transaction mode: how long a client waited for its lease, by service",
        buckets: &[
            1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
        ],
    },
    family(
        TXPOOL_LEASES,
        Kind::Counter,
        "Transaction mode: upstream connections leased to clients, by service and upstream (same: last served this client; reset: changed hands; new: opened for it)",
    ),
    family(
        TXPOOL_WAIT_TIMEOUTS,
        Kind::Counter,
        "Transaction mode: clients that waited pool.wait_timeout for a lease and got 53300, by service",
    ),
    family(
        TXPOOL_REPARSES,
        Kind::Counter,
        "Transaction mode: named prepared statements re-parsed on a connection the client's Bind landed on, by service",
    ),
    family(
        SCRAM_DERIVATIONS,
        Kind::Counter,
        "Upstream SCRAM key derivations, by cache (hit/miss)",
    ),
    family(
        JWKS_FETCHES,
        Kind::Counter,
        "Fetches of an OIDC issuer's migration token keys ([[migration.jwks]] by url or discovery), by issuer and outcome (ok/timeout/unreachable/http_status/invalid)",
    ),
    family(
        JWKS_KEYS,
        Kind::Gauge,
        "Usable migration token keys cached per OIDC issuer (0 until the first fetch succeeds)",
    ),
    Family {
        name: JWKS_AGE,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Age of an OIDC issuer's cached migration token keys (since rolegate began trying, while it has none)",
        buckets: &[],
    },
    family(
        JWKS_STALE_USES,
        Kind::Counter,
        "Migration tokens verified with an issuer's keys past their refresh time (the issuer has not answered), by issuer",
    ),
    family(
        CANCEL_REQUESTS,
        Kind::Counter,
        "CancelRequests received, by outcome (local/forwarded/unknown/rate_limited/forward_failed)",
    ),
    family(
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; the version and git commit of this build as labels",
    ),
];

/// Give every family its HELP text (and unit) in the installed recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    for f in FAMILIES {
        match (f.kind, f.unit) {
            (Kind::Counter, Some(u)) => describe_counter!(f.name, u, f.help),
            (Kind::Counter, None) => describe_counter!(f.name, f.help),
            (Kind::Gauge, Some(u)) => describe_gauge!(f.name, u, f.help),
            (Kind::Gauge, None) => describe_gauge!(f.name, f.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(f.name, u, f.help),
            (Kind::Histogram, None) => describe_histogram!(f.name, f.help),
        }
    }
}

/// Series with bounded label sets, at zero before their first event, so
/// dashboards and `absent()` alerts work from the start; and the build.
pub fn present_from_startup(refusal_reasons: &[&'static str]) {
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("ROLEGATE_GIT_COMMIT")
    )
    .set(1.0);
    for outcome in crate::cancel::CancelOutcome::ALL {
        counter!(CANCEL_REQUESTS, "outcome" => outcome.as_str()).increment(0);
    }
    for &reason in refusal_reasons
        .iter()
        .chain(&[STARTUP_REFUSAL, POOLING_REFUSAL])
    {
        counter!(REFUSALS, "reason" => reason).increment(0);
    }
    for role in Role::ALL.map(Role::as_str) {
        gauge!(ACTIVE_SESSIONS, "role" => role).increment(0.0);
        counter!(UPSTREAM_ERRORS, "role" => role).increment(0);
        for source in ["new", "pool"] {
            counter!(UPSTREAM_SESSIONS, "role" => role, "source" => source).increment(0);
        }
    }
    for direction in ["to_upstream", "to_client"] {
        counter!(BYTES, "direction" => direction).increment(0);
    }
    for outcome in ["ok", "rejected"] {
        counter!(CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
    for outcome in PoolReset::ALL.map(PoolReset::as_str) {
        counter!(POOL_RESETS, "outcome" => outcome).increment(0);
    }
    counter!(POOL_DISCARDED, "reason" => "dead").increment(0);
    for cache in ["hit", "miss"] {
        counter!(SCRAM_DERIVATIONS, "cache" => cache).increment(0);
    }
    gauge!(POOL_IDLE).increment(0.0);
    gauge!(WINDOW_OPEN).increment(0.0);
}

// ---------------------------------------------------------------- logins --

/// A finished login attempt. `identity` is a configured name or
/// "unknown" (labels stay bounded whatever names clients send); `role` is
/// `None` before the login got that far.
pub fn login(identity: &str, role: Option<Role>, outcome: &'static str) {
    counter!(
        CONNECTIONS,
        "identity" => identity.to_string(),
        "role" => role.map_or("none", Role::as_str),
        "outcome" => outcome
    )
    .increment(1);
}

/// The refusal reason of a StartupMessage the policy refused.
pub const STARTUP_REFUSAL: &str = "startup";

/// The refusal reason of a statement transaction pooling cannot serve
/// (LISTEN, session advisory locks, named prepared statements, …).
pub const POOLING_REFUSAL: &str = "needs_one_backend";

/// A refusal, by reason (a statement class, or [`STARTUP_REFUSAL`]).
pub fn refusal(reason: &'static str) {
    counter!(REFUSALS, "reason" => reason).increment(1);
}

/// A failed upstream login.
pub fn upstream_error(role: Option<Role>) {
    counter!(UPSTREAM_ERRORS, "role" => role.map_or("", Role::as_str)).increment(1);
}

/// An upstream session handed to a login, new or from the pool.
pub fn upstream_session(role: Role, reused: bool) {
    let source = if reused { "pool" } else { "new" };
    counter!(UPSTREAM_SESSIONS, "role" => role.as_str(), "source" => source).increment(1);
}

/// How long opening a new upstream session took.
pub fn upstream_connect(role: Role, seconds: f64) {
    histogram!(UPSTREAM_CONNECT_SECONDS, "role" => role.as_str()).record(seconds);
}

/// An upstream SCRAM key derivation, served by the cache or computed.
pub fn scram_derivation(cache_hit: bool) {
    counter!(SCRAM_DERIVATIONS, "cache" => if cache_hit { "hit" } else { "miss" }).increment(1);
}

// -------------------------------------------------------------- sessions --

/// Counts one relayed session in `rolegate_active_sessions` for as long as
/// it lives.
#[derive(Debug)]
pub struct ActiveSession(Role);

impl ActiveSession {
    pub fn new(role: Role) -> Self {
        gauge!(ACTIVE_SESSIONS, "role" => role.as_str()).increment(1.0);
        ActiveSession(role)
    }
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        gauge!(ACTIVE_SESSIONS, "role" => self.0.as_str()).decrement(1.0);
    }
}

/// The byte counters of the relay, resolved once per session.
pub struct Relayed {
    pub to_upstream: Counter,
    pub to_client: Counter,
}

impl Relayed {
    pub fn new() -> Self {
        Relayed {
            to_upstream: counter!(BYTES, "direction" => "to_upstream"),
            to_client: counter!(BYTES, "direction" => "to_client"),
        }
    }
}

impl Default for Relayed {
    fn default() -> Self {
        Self::new()
    }
}

/// What became of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Refused,
    /// Would have been refused; `policy.mode = "report"` let it run.
    Reported,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Reported => "reported",
        }
    }
}

/// The counter of statements of one (role, class, outcome, path): a
/// handle, so the hot path can keep it and skip the registry lookup.
pub fn statements(
    role: Role,
    class: &'static str,
    outcome: Outcome,
    path: &'static str,
) -> Counter {
    counter!(
        STATEMENTS,
        "role" => role.as_str(),
        "class" => class,
        "verdict" => outcome.as_str(),
        "path" => path
    )
}

/// The classification-time histogram (a handle, kept per session).
pub fn classification_seconds() -> Histogram {
    histogram!(CLASSIFICATION_SECONDS)
}

// ------------------------------------------------------------- operations --

/// Whether a migration window is open now.
pub fn window_open(open: bool) {
    gauge!(WINDOW_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// One CancelRequest handled (`outcome`: a [`crate::cancel::CancelOutcome`]).
pub fn cancel_request(outcome: &'static str) {
    counter!(CANCEL_REQUESTS, "outcome" => outcome).increment(1);
}

/// A configuration reload, applied or refused.
pub fn config_reload(applied: bool) {
    counter!(CONFIG_RELOADS, "outcome" => if applied { "ok" } else { "rejected" }).increment(1);
}

// ------------------------------------------------------------------ pool --

/// Counts one idle upstream session in `rolegate_pool_idle_connections`
/// for as long as the pool holds it.
#[derive(Debug)]
pub struct PooledSession(());

impl PooledSession {
    pub fn new() -> Self {
        gauge!(POOL_IDLE).increment(1.0);
        PooledSession(())
    }
}

impl Default for PooledSession {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        gauge!(POOL_IDLE).decrement(1.0);
    }
}

/// How resetting a returned upstream session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolReset {
    Ok,
    Failed,
    Timeout,
}

impl PoolReset {
    const ALL: [PoolReset; 3] = [PoolReset::Ok, PoolReset::Failed, PoolReset::Timeout];

    fn as_str(self) -> &'static str {
        match self {
            PoolReset::Ok => "ok",
            PoolReset::Failed => "failed",
            PoolReset::Timeout => "timeout",
        }
    }
}

pub fn pool_reset(outcome: PoolReset) {
    counter!(POOL_RESETS, "outcome" => outcome.as_str()).increment(1);
}

/// An idle upstream session found dead at checkout.
pub fn pool_discarded_dead() {
    counter!(POOL_DISCARDED, "reason" => "dead").increment(1);
}

// ------------------------------------------------------ transaction pool --

/// How a lease's upstream connection came to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseSource {
    /// It last served this client: nothing to reset or re-apply.
    Same,
    /// It served another client: reset, and this client's settings applied.
    Reset,
    /// Opened for this lease.
    New,
}

impl LeaseSource {
    const ALL: [LeaseSource; 3] = [LeaseSource::Same, LeaseSource::Reset, LeaseSource::New];

    fn as_str(self) -> &'static str {
        match self {
            LeaseSource::Same => "same",
            LeaseSource::Reset => "reset",
            LeaseSource::New => "new",
        }
    }
}

/// One service's transaction-pool series (the service name comes from the
/// config, so label sets stay bounded). Present from its creation.
#[derive(Debug, Clone)]
pub struct TxPoolMetrics {
    service: String,
}

impl TxPoolMetrics {
    pub fn new(service: &str, size: usize) -> Self {
        let service = service.to_string();
        gauge!(TXPOOL_SIZE, "service" => service.clone()).set(size as f64);
        gauge!(TXPOOL_ACTIVE, "service" => service.clone()).increment(0.0);
        gauge!(TXPOOL_OPEN, "service" => service.clone()).increment(0.0);
        gauge!(TXPOOL_WAITING, "service" => service.clone()).increment(0.0);
        counter!(TXPOOL_WAIT_TIMEOUTS, "service" => service.clone()).increment(0);
        counter!(TXPOOL_REPARSES, "service" => service.clone()).increment(0);
        for source in LeaseSource::ALL.map(LeaseSource::as_str) {
            counter!(TXPOOL_LEASES, "service" => service.clone(), "source" => source).increment(0);
        }
        TxPoolMetrics { service }
    }

    /// A lease handed out after waiting `waited` seconds.
    pub fn leased(&self, source: LeaseSource, waited: f64) {
        let service = self.service.clone();
        histogram!(TXPOOL_WAIT_SECONDS, "service" => service.clone()).record(waited);
        counter!(TXPOOL_LEASES, "service" => service, "source" => source.as_str()).increment(1);
    }

    pub fn reparsed(&self, n: u64) {
        if n > 0 {
            counter!(TXPOOL_REPARSES, "service" => self.service.clone()).increment(n);
        }
    }

    pub fn wait_timed_out(&self) {
        counter!(TXPOOL_WAIT_TIMEOUTS, "service" => self.service.clone()).increment(1);
    }

    /// Counts a waiting client until dropped.
    pub fn waiting(&self) -> Gauged {
        Gauged::new(gauge!(TXPOOL_WAITING, "service" => self.service.clone()))
    }

    /// Counts an active lease until dropped.
    pub fn active(&self) -> Gauged {
        Gauged::new(gauge!(TXPOOL_ACTIVE, "service" => self.service.clone()))
    }

    /// Counts an open upstream connection until dropped.
    pub fn open(&self) -> Gauged {
        Gauged::new(gauge!(TXPOOL_OPEN, "service" => self.service.clone()))
    }
}

/// One unit of a gauge for as long as it lives.
#[derive(Debug)]
pub struct Gauged(::metrics::Gauge);

impl Gauged {
    fn new(g: ::metrics::Gauge) -> Self {
        g.increment(1.0);
        Gauged(g)
    }
}

impl Drop for Gauged {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

// --------------------------------------------------- migration token keys --

/// One issuer's key-fetch series (`issuer` is from the config, so the
/// label set stays bounded).
#[derive(Debug)]
pub struct Issuer(String);

impl Issuer {
    pub fn new(issuer: &str) -> Self {
        Issuer(issuer.to_string())
    }

    /// The counters at zero (`outcomes`: the fetch outcomes it can report).
    pub fn present(&self, outcomes: &[&'static str]) {
        for &outcome in outcomes {
            self.fetches(outcome).increment(0);
        }
        counter!(JWKS_STALE_USES, "issuer" => self.0.clone()).increment(0);
    }

    fn fetches(&self, outcome: &'static str) -> Counter {
        counter!(JWKS_FETCHES, "issuer" => self.0.clone(), "outcome" => outcome)
    }

    pub fn fetched(&self, outcome: &'static str) {
        self.fetches(outcome).increment(1);
    }

    pub fn stale_use(&self) {
        counter!(JWKS_STALE_USES, "issuer" => self.0.clone()).increment(1);
    }

    /// The cached keys now: how many, and how old.
    pub fn keys(&self, count: usize, age_seconds: i64) {
        gauge!(JWKS_KEYS, "issuer" => self.0.clone()).set(count as f64);
        gauge!(JWKS_AGE, "issuer" => self.0.clone()).set(age_seconds as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_once_with_help() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        assert!(
            FAMILIES
                .iter()
                .all(|f| f.name.starts_with("rolegate_") && !f.help.is_empty())
        );
        assert!(
            FAMILIES
                .iter()
                .all(|f| (f.kind == Kind::Histogram) != f.buckets.is_empty())
        );
    }
}
