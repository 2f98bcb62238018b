//! Window arithmetic: turning `[[migration.windows]]` into concrete instants.
//!
//! This file owns the answer to "is a migration window open at instant T,
//! until when, and if not, when does the next one open". It knows nothing of
//! tokens. Everything is computed from the configured windows and an
//! injected `now`, so it is a pure function of its inputs and testable with
//! a fixed clock.
//!
//! # Semantics
//!
//! * Every window is a half-open interval `[start, end)`: at `end` exactly it
//!   is closed.
//! * Absolute windows are taken as given (RFC 3339 instants).
//! * A weekly window has one occurrence per listed day, starting on that
//!   local day at `from`. If `from < to` it ends the same local day at `to`;
//!   if `from > to` it spans midnight and ends the next local day at `to`
//!   (the day list names the day the window *starts*).
//! * Weekly windows are evaluated in their own IANA time zone, so DST is
//!   honoured. Local times are turned into instants deliberately:
//!   - a **start** uses jiff's [`Disambiguation::Compatible`]: a local time
//!     that does not exist (spring forward) is moved forward by the length of
//!     the gap (02:30 in a 02:00→03:00 gap becomes 03:30), as RFC 5545 and
//!     JavaScript's Temporal do; a local time that occurs twice (fall back)
//!     opens at its *first* occurrence;
//!   - an **end** uses [`Disambiguation::Later`]: a missing time moves
//!     forward the same way; a time that occurs twice closes at its *second*
//!     occurrence.
//!
//!   So a 02:00–04:00 window in Europe/Berlin is 1 h long on the
//!   spring-forward day and 3 h long on the fall-back day: it always covers
//!   every instant whose wall-clock reading lies in the window.
//! * The *open period* at `now` is the union of all windows containing `now`
//!   plus every window chained to it (starting at or before the running end).
//!   A-ends-04:00 + B-03:30-to-06:00 is one period ending at 06:00; a window
//!   ending at 24:00 and one starting at 00:00 the next day chain too.
//!   Periods are followed at most [`MAX_LOOKAHEAD_DAYS`] ahead; a schedule
//!   open for longer than that (e.g. windows covering the whole week) reports
//!   the horizon as its end, which only makes sessions end earlier.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{Disambiguation, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::settings::Window;

/// How far ahead an open period is followed through chained windows.
pub const MAX_LOOKAHEAD_DAYS: i64 = 400;

/// Whether migrations may start now, and the relevant boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// A window is open; the open period (chained windows included) ends at
    /// `until`.
    Open { until: Timestamp },
    /// No window is open. `next` is when one opens next, `None` if no window
    /// is scheduled in the future (or none is configured).
    Closed { next: Option<Timestamp> },
}

/// One concrete occurrence of a window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Interval {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// The configured windows, ready to be asked about instants.
#[derive(Debug, Clone)]
pub struct Schedule {
    windows: Vec<Window>,
}

impl Schedule {
    pub fn new(windows: &[Window]) -> Schedule {
        Schedule {
            windows: windows.to_vec(),
        }
    }

    /// No window configured at all: migrations can never be admitted.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Is a window open at `now`; until when, or when does the next open.
    pub fn state(&self, now: Timestamp) -> WindowState {
        // A weekly occurrence starts within any 7 days, so 8 days covers the
        // next opening of every weekly window; absolute windows beyond that
        // are looked up directly below.
        let near = self.occurrences(now, add_days(now, 8));
        if near.iter().any(|iv| iv.contains(now)) {
            return WindowState::Open {
                until: self.open_period_end(now),
            };
        }
        let next = near
            .iter()
            .map(|iv| iv.start)
            .filter(|s| *s > now)
            .chain(self.windows.iter().filter_map(|w| match w {
                Window::Absolute { start, .. } if *start > now => Some(*start),
                _ => None,
            }))
            .min();
        WindowState::Closed { next }
    }

    /// The end of the open period containing `now` (`now` itself if closed).
    fn open_period_end(&self, now: Timestamp) -> Timestamp {
        let mut end = now;
        let mut horizon = now;
        // Grow the horizon only when the chain reaches it: the common case
        // (a window of a few hours) is answered from the first 8 days.
        for days in [8, 64, MAX_LOOKAHEAD_DAYS] {
            horizon = add_days(now, days);
            end = now;
            for iv in self.occurrences(now, horizon) {
                if iv.start > end {
                    break; // sorted by start: a gap, the period is over
                }
                end = end.max(iv.end);
            }
            if end < horizon {
                return end;
            }
        }
        end.min(horizon)
    }

    /// Every occurrence overlapping `[lo, hi)`, sorted by start.
    pub fn occurrences(&self, lo: Timestamp, hi: Timestamp) -> Vec<Interval> {
        let mut out = Vec::new();
        for w in &self.windows {
            match w {
                Window::Absolute { start, end } => {
                    let iv = Interval {
                        start: *start,
                        end: *end,
                    };
                    if iv.end > lo && iv.start < hi {
                        out.push(iv);
                    }
                }
                Window::Weekly {
                    days,
                    from,
                    to,
                    timezone,
                } => weekly_occurrences(days, *from, *to, timezone, lo, hi, &mut out),
            }
        }
        out.sort();
        out
    }
}

fn weekly_occurrences(
    days: &[Weekday],
    from: Time,
    to: Time,
    tz: &TimeZone,
    lo: Timestamp,
    hi: Timestamp,
    out: &mut Vec<Interval>,
) {
    // An occurrence that started yesterday (local) may span midnight into
    // `lo`'s day; none can reach back further (a window is shorter than a
    // day plus a DST hour).
    let Ok(mut date) = tz.to_datetime(lo).date().yesterday() else {
        return;
    };
    let last = tz.to_datetime(hi).date();
    while date <= last {
        if days.contains(&date.weekday())
            && let Some(iv) = occurrence(date, from, to, tz)
            && iv.end > lo
            && iv.start < hi
        {
            out.push(iv);
        }
        match date.tomorrow() {
            Ok(d) => date = d,
            Err(_) => break, // end of jiff's supported range
        }
    }
}

/// The occurrence of a weekly window starting on local `date`.
fn occurrence(date: Date, from: Time, to: Time, tz: &TimeZone) -> Option<Interval> {
    let end_date = if from < to {
        date
    } else {
        date.tomorrow().ok()?
    };
    let start = tz
        .to_ambiguous_timestamp(date.to_datetime(from))
        .disambiguate(Disambiguation::Compatible)
        .ok()?;
    let end = tz
        .to_ambiguous_timestamp(end_date.to_datetime(to))
        .disambiguate(Disambiguation::Later)
        .ok()?;
    (end > start).then_some(Interval { start, end })
}

fn add_days(t: Timestamp, days: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_hours(days * 24))
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::Weekday::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn t(s: &str) -> Time {
        s.parse().unwrap()
    }

    fn weekly(days: &[Weekday], from: &str, to: &str, tz: &str) -> Window {
        Window::Weekly {
            days: days.to_vec(),
            from: t(from),
            to: t(to),
            timezone: TimeZone::get(tz).unwrap(),
        }
    }

    fn absolute(start: &str, end: &str) -> Window {
        Window::Absolute {
            start: ts(start),
            end: ts(end),
        }
    }

    fn open(until: &str) -> WindowState {
        WindowState::Open { until: ts(until) }
    }

    fn closed(next: &str) -> WindowState {
        WindowState::Closed {
            next: Some(ts(next)),
        }
    }

    #[test]
    fn absolute_window_is_half_open() {
        let s = Schedule::new(&[absolute("2026-11-29T02:00:00Z", "2026-11-29T04:00:00Z")]);
        assert_eq!(
            s.state(ts("2026-11-29T01:59:59Z")),
            closed("2026-11-29T02:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-11-29T02:00:00Z")),
            open("2026-11-29T04:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-11-29T03:59:59Z")),
            open("2026-11-29T04:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-11-29T04:00:00Z")),
            WindowState::Closed { next: None }
        );
    }

    #[test]
    fn far_future_absolute_window_is_the_next_opening() {
        let s = Schedule::new(&[absolute("2027-06-01T00:00:00Z", "2027-06-01T01:00:00Z")]);
        assert_eq!(
            s.state(ts("2026-01-01T00:00:00Z")),
            closed("2027-06-01T00:00:00Z")
        );
    }

    #[test]
    fn no_windows_is_closed_forever() {
        let s = Schedule::new(&[]);
        assert!(s.is_empty());
        assert_eq!(
            s.state(ts("2026-01-01T00:00:00Z")),
            WindowState::Closed { next: None }
        );
    }

    #[test]
    fn weekly_window_across_midnight() {
        // Saturday 22:00 → Sunday 02:00 UTC. 2026-11-28 is a Saturday.
        let s = Schedule::new(&[weekly(&[Saturday], "22:00", "02:00", "UTC")]);
        assert_eq!(
            s.state(ts("2026-11-28T21:00:00Z")),
            closed("2026-11-28T22:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-11-28T23:30:00Z")),
            open("2026-11-29T02:00:00Z")
        );
        // After midnight, on Sunday (not itself a listed day), still open.
        assert_eq!(
            s.state(ts("2026-11-29T01:00:00Z")),
            open("2026-11-29T02:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-11-29T02:00:00Z")),
            closed("2026-12-05T22:00:00Z")
        );
    }

    #[test]
    fn weekly_window_next_opening_skips_unlisted_days() {
        // Tue and Thu 10:00–11:00 in New York (EST, UTC-5, in December).
        let s = Schedule::new(&[weekly(
            &[Tuesday, Thursday],
            "10:00",
            "11:00",
            "America/New_York",
        )]);
        // Wednesday 2026-12-02 noon UTC → Thursday 2026-12-03 10:00 EST.
        assert_eq!(
            s.state(ts("2026-12-02T12:00:00Z")),
            closed("2026-12-03T15:00:00Z")
        );
        // Thursday after the window → next Tuesday.
        assert_eq!(
            s.state(ts("2026-12-03T16:00:00Z")),
            closed("2026-12-08T15:00:00Z")
        );
    }

    #[test]
    fn berlin_spring_forward_day_is_shorter() {
        // 2026-03-29 (Sunday): clocks jump 02:00 CET → 03:00 CEST (01:00Z).
        // 02:00 local does not exist: the window opens at 03:00 CEST and
        // closes at 04:00 CEST — one hour instead of two.
        let s = Schedule::new(&[weekly(&[Sunday], "02:00", "04:00", "Europe/Berlin")]);
        assert_eq!(
            s.state(ts("2026-03-29T00:30:00Z")),
            closed("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-03-29T01:00:00Z")),
            open("2026-03-29T02:00:00Z")
        );
        let iv = s.occurrences(ts("2026-03-29T00:00:00Z"), ts("2026-03-29T12:00:00Z"));
        assert_eq!(iv.len(), 1);
        assert_eq!(iv[0].end.duration_since(iv[0].start).as_hours(), 1);
        // The Sunday before, in winter time: 02:00 CET = 01:00Z, two hours.
        assert_eq!(
            s.state(ts("2026-03-22T01:30:00Z")),
            open("2026-03-22T03:00:00Z")
        );
    }

    #[test]
    fn berlin_spring_forward_missing_start_moves_forward() {
        // 02:30 does not exist on 2026-03-29; it resolves 30 min past the
        // transition, 03:30 CEST = 01:30Z (RFC 5545 / Temporal behaviour).
        let s = Schedule::new(&[weekly(&[Sunday], "02:30", "05:00", "Europe/Berlin")]);
        assert_eq!(
            s.state(ts("2026-03-29T01:00:00Z")),
            closed("2026-03-29T01:30:00Z")
        );
    }

    #[test]
    fn berlin_spring_forward_missing_end_moves_forward() {
        // 01:00–02:30 on 2026-03-29: 02:30 does not exist and resolves to
        // 03:30 CEST (01:30Z), keeping the window's nominal 1.5 h.
        let s = Schedule::new(&[weekly(&[Sunday], "01:00", "02:30", "Europe/Berlin")]);
        assert_eq!(
            s.state(ts("2026-03-29T00:00:00Z")),
            open("2026-03-29T01:30:00Z")
        );
    }

    #[test]
    fn berlin_fall_back_day_is_longer() {
        // 2026-10-25 (Sunday): clocks fall 03:00 CEST → 02:00 CET (01:00Z).
        // The window opens at the first 02:00 (CEST, 00:00Z) and closes at
        // 04:00 CET (03:00Z): three hours.
        let s = Schedule::new(&[weekly(&[Sunday], "02:00", "04:00", "Europe/Berlin")]);
        assert_eq!(
            s.state(ts("2026-10-24T23:59:59Z")),
            closed("2026-10-25T00:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-10-25T00:00:00Z")),
            open("2026-10-25T03:00:00Z")
        );
        // During the repeated hour (second 02:30, CET) it is still open.
        assert_eq!(
            s.state(ts("2026-10-25T01:30:00Z")),
            open("2026-10-25T03:00:00Z")
        );
        let iv = s.occurrences(ts("2026-10-24T22:00:00Z"), ts("2026-10-25T12:00:00Z"));
        assert_eq!(iv[0].end.duration_since(iv[0].start).as_hours(), 3);
        // The Sunday after, in winter time: 02:00 CET = 01:00Z, two hours.
        assert_eq!(
            s.state(ts("2026-11-01T01:00:00Z")),
            open("2026-11-01T03:00:00Z")
        );
    }

    #[test]
    fn berlin_fall_back_end_in_repeated_hour_closes_at_second_occurrence() {
        // 01:00–02:30 on the fall-back day: 02:30 happens twice; the window
        // closes at the second one (02:30 CET = 01:30Z).
        let s = Schedule::new(&[weekly(&[Sunday], "01:00", "02:30", "Europe/Berlin")]);
        assert_eq!(
            s.state(ts("2026-10-25T00:45:00Z")),
            open("2026-10-25T01:30:00Z")
        );
    }

    #[test]
    fn chained_and_overlapping_windows_form_one_period() {
        let s = Schedule::new(&[
            absolute("2026-11-29T02:00:00Z", "2026-11-29T04:00:00Z"),
            absolute("2026-11-29T03:30:00Z", "2026-11-29T06:00:00Z"),
            // Touches the previous one exactly: still one period.
            absolute("2026-11-29T06:00:00Z", "2026-11-29T07:00:00Z"),
            // After a gap: a separate period.
            absolute("2026-11-29T08:00:00Z", "2026-11-29T09:00:00Z"),
        ]);
        assert_eq!(
            s.state(ts("2026-11-29T02:30:00Z")),
            open("2026-11-29T07:00:00Z")
        );
        assert_eq!(
            s.state(ts("2026-11-29T07:30:00Z")),
            closed("2026-11-29T08:00:00Z")
        );
    }

    #[test]
    fn weekly_windows_chain_across_midnight_and_kinds() {
        // Sat 20:00–24:00 and Sun 00:00–03:00 UTC, plus an absolute window
        // extending Sunday to 05:00.
        let s = Schedule::new(&[
            weekly(&[Saturday], "20:00", "00:00", "UTC"),
            weekly(&[Sunday], "00:00", "03:00", "UTC"),
            absolute("2026-11-29T02:00:00Z", "2026-11-29T05:00:00Z"),
        ]);
        assert_eq!(
            s.state(ts("2026-11-28T21:00:00Z")),
            open("2026-11-29T05:00:00Z")
        );
    }

    #[test]
    fn always_open_schedule_is_capped_at_the_horizon() {
        let all = [
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ];
        // Two daily windows that hand over to each other: never closed.
        let s = Schedule::new(&[
            weekly(&all, "12:00", "18:00", "UTC"),
            weekly(&all, "18:00", "12:00", "UTC"),
        ]);
        let now = ts("2026-01-01T13:00:00Z");
        assert_eq!(
            s.state(now),
            WindowState::Open {
                until: add_days(now, MAX_LOOKAHEAD_DAYS)
            }
        );
    }
}
