//! rolegate: a PostgreSQL wire-protocol proxy that enforces role separation.
//!
//! The modules follow one connection's path (ARCHITECTURE.md walks it):
//! the listener accepts it, the login authenticates it and opens its
//! upstream session, the relay carries it, an inspector judges or audits
//! every statement on the way.

// One connection's path.
/// The migration sessions' inspector: every statement audited.
pub mod audit;
/// Proxy-issued cancel keys and forwarding CancelRequests.
pub mod cancel;
/// The runtime policy's inspector: where a statement is refused on the wire.
pub mod enforce;
/// Login in phases: handshake, auth, connect; one `LoginError`.
pub mod login;
/// Idle runtime upstream sessions kept for the next client.
pub mod pool;
/// Both directions of a session, frame by frame, with an inspector seam.
pub mod relay;
/// Accept loop, connection limit, reload swap, drain: the lifecycle.
pub mod server;
/// One logged-in session from `session_start` to `session_end`.
pub mod session;
/// Transaction pooling: an upstream connection leased per transaction.
pub mod txpool;
/// The upstream login (TLS, SCRAM/md5/cleartext) and the readiness probe.
pub mod upstream;

// What the path consults.
/// The server side of client SCRAM authentication, and `scram-hash`.
pub mod client_auth;
/// The configuration, by section.
pub mod config;
/// Migration access: tokens, windows, governance.
pub mod migration;
/// The classifier: is this statement allowed on a runtime session?
pub mod policy;
/// The wire format: framing and typed message bodies.
pub mod protocol;
/// Runtime or migration: the two kinds of session.
pub mod role;
/// rustls configurations for the listener and the upstream.
pub mod tls;

// Operating it.
/// The admin port: `/metrics`, `/healthz`, `/readyz`.
pub mod admin;
/// `rolegate check`: the upstream privilege model.
pub mod check;
/// Every metric, named and described once, with typed helpers.
pub mod metrics;
/// CPU-heavy work kept off the async workers.
pub mod offload;
/// SIGHUP and file watching.
pub mod reload;
/// `rolegate report`: what enforcing would refuse, from the logs.
pub mod report;

// Not part of the proxy: `rolegate demo` and its throwaway clusters
// (also the test harness's).
pub mod demo;
