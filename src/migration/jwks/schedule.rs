//! When a fetcher fetches: the pure bookkeeping behind refresh, backoff,
//! on-demand refresh and the rate limit, with time injected so that it is
//! tested without waiting.
//!
//! * A successful fetch is due again after its TTL (`Cache-Control:
//!   max-age`, else `refresh`, within [`MIN_TTL`] .. [`MAX_TTL`] and never
//!   past `max_stale`).
//! * A failed one is retried with exponential backoff from
//!   `min_refresh_interval` up to [`MAX_BACKOFF`] (or `refresh`, if less).
//! * A login whose token names a key the cache lacks *demands* a fetch; it
//!   is done at once, unless a fetch ended less than
//!   `min_refresh_interval` ago: then at that interval's end. Counting
//!   from the end keeps the issuer's own view (request to request) at
//!   least an interval apart, however long a fetch takes. Any number of
//!   demands before it starts are answered by that one fetch, and a demand
//!   during a fetch is answered by the fetch in flight.

use std::time::{Duration, Instant};

/// The shortest and longest a fetched key set counts as fresh.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest wait between retries while an issuer is unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// A fetcher's timing state.
#[derive(Debug)]
pub struct Schedule {
    min_interval: Duration,
    max_backoff: Duration,
    last_end: Option<Instant>,
    /// When the keys are due for their regular refresh; `None` until the
    /// first fetch (due at once).
    next_due: Option<Instant>,
    failures: u32,
    demanded: bool,
    /// Fetches started so far; a fetch's number is the count at its start.
    started: u64,
    in_flight: bool,
}

impl Schedule {
    pub fn new(min_interval: Duration, refresh: Duration) -> Schedule {
        Schedule {
            min_interval,
            max_backoff: MAX_BACKOFF.min(refresh).max(min_interval),
            last_end: None,
            next_due: None,
            failures: 0,
            demanded: false,
            started: 0,
            in_flight: false,
        }
    }

    /// A login needs keys the cache lacks. Returns the number of the fetch
    /// whose completion answers it.
    pub fn demand(&mut self) -> u64 {
        if self.in_flight {
            self.started
        } else {
            self.demanded = true;
            self.started + 1
        }
    }

    /// When the next fetch may start (`None`: now): when it is due, or at
    /// once if demanded, but never sooner than `min_refresh_interval`
    /// after the last one ended.
    pub fn next_start(&self) -> Option<Instant> {
        let earliest = self.last_end.map(|t| t + self.min_interval);
        let due = if self.demanded { None } else { self.next_due };
        match (due, earliest) {
            (None, e) => e,
            (Some(d), None) => Some(d),
            (Some(d), Some(e)) => Some(d.max(e)),
        }
    }

    /// A fetch starts; returns its number.
    pub fn begin(&mut self) -> u64 {
        self.started += 1;
        self.in_flight = true;
        self.demanded = false;
        self.started
    }

    /// The fetch succeeded; the keys are fresh for `ttl`.
    pub fn succeeded(&mut self, now: Instant, ttl: Duration) {
        self.in_flight = false;
        self.last_end = Some(now);
        self.failures = 0;
        self.next_due = Some(now + ttl);
    }

    /// The fetch failed; retry after the backoff.
    pub fn failed(&mut self, now: Instant) {
        self.in_flight = false;
        self.last_end = Some(now);
        self.failures = self.failures.saturating_add(1);
        self.next_due = Some(now + self.backoff());
    }

    /// `min_refresh_interval`, doubled for each further failure in a row.
    fn backoff(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        self.min_interval
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Consecutive failed fetches (0 after a success).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// How long a fetched key set is fresh: the response's `max-age`, else
/// `refresh`, kept within [`MIN_TTL`] .. [`MAX_TTL`] and `max_stale`.
pub fn ttl(max_age: Option<Duration>, refresh: Duration, max_stale: Duration) -> Duration {
    let upper = MAX_TTL.min(max_stale).max(MIN_TTL);
    max_age.unwrap_or(refresh).clamp(MIN_TTL, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn schedule() -> (Schedule, Instant) {
        (Schedule::new(5 * S, 3600 * S), Instant::now())
    }

    #[test]
    fn the_first_fetch_is_due_at_once_then_after_its_ttl() {
        let (mut s, t0) = schedule();
        assert_eq!(s.next_start(), None);
        assert_eq!(s.begin(), 1);
        s.succeeded(t0, 600 * S);
        assert_eq!(s.next_start(), Some(t0 + 600 * S));
    }

    #[test]
    fn a_demand_is_served_at_once_but_never_twice_within_the_interval() {
        let (mut s, t0) = schedule();
        s.begin();
        s.succeeded(t0, 600 * S);
        // A burst of demands one second later: all answered by fetch 2,
        // which may start only 5 s after fetch 1 ended.
        for _ in 0..100 {
            assert_eq!(s.demand(), 2);
        }
        assert_eq!(s.next_start(), Some(t0 + 5 * S));
        assert_eq!(s.begin(), 2);
        // A demand while 2 is in flight is answered by 2.
        assert_eq!(s.demand(), 2);
        // A slow fetch: the interval counts from its end.
        s.succeeded(t0 + 9 * S, 600 * S);
        assert_eq!(s.next_start(), Some(t0 + 609 * S), "no demand left over");
        assert_eq!(s.demand(), 3);
        assert_eq!(s.next_start(), Some(t0 + 14 * S));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let (mut s, t0) = schedule();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            s.begin();
            s.failed(now);
            let next = s.next_start().expect("scheduled");
            waits.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
        assert_eq!(s.failures(), 10);
        // A demand is not held back by the backoff, only by the interval.
        s.demand();
        assert_eq!(s.next_start(), Some(now - 300 * S + 5 * S));
        s.begin();
        s.succeeded(now, 3600 * S);
        assert_eq!(s.failures(), 0);
        assert_eq!(s.next_start(), Some(now + 3600 * S));
    }

    #[test]
    fn backoff_never_exceeds_a_short_refresh() {
        let mut s = Schedule::new(S, 60 * S);
        let t0 = Instant::now();
        for _ in 0..20 {
            s.begin();
            s.failed(t0);
        }
        assert_eq!(s.next_start(), Some(t0 + 60 * S));
    }

    #[test]
    fn ttl_honours_max_age_within_bounds() {
        let (h, d) = (3600 * S, 86400 * S);
        assert_eq!(ttl(None, h, d), h);
        assert_eq!(ttl(Some(300 * S), h, d), 300 * S);
        assert_eq!(
            ttl(Some(Duration::ZERO), h, d),
            MIN_TTL,
            "no-cache: still 1 min"
        );
        assert_eq!(ttl(Some(10 * d), h, d), MAX_TTL);
        assert_eq!(ttl(Some(d), h, 2 * h), 2 * h, "never past max_stale");
    }
}
