//! CPU-heavy work (a large text's classification, PBKDF2) kept off the
//! async workers, so one session's expensive step cannot stall the others
//! sharing its worker thread.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `f` where it cannot stall other tasks: on a multi-threaded runtime
/// the worker hands its other tasks to a fresh thread while `f` runs
/// (`block_in_place`); elsewhere (start-up, tests, a current-thread
/// runtime) `f` simply runs.
pub fn cpu_heavy<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
