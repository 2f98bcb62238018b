//! rolegate: a PostgreSQL wire-protocol proxy that enforces role separation.
//!
//! The modules follow one connection's path; ARCHITECTURE.md walks it.

pub mod admin;
pub mod audit;
pub mod cancel;
pub mod check;
pub mod client_auth;
pub mod config;
pub mod demo;
pub mod enforce;
pub mod login;
pub mod migration;
pub mod policy;
pub mod pool;
pub mod protocol;
pub mod relay;
pub mod reload;
pub mod report;
pub mod server;
pub mod session;
pub mod tls;
pub mod upstream;
