//! Turning wall-clock time into ticks for a thread that drives Raft groups.
//!
//! Leases and election timeouts are counted in ticks, so ticks must keep pace with real
//! time even when the driving thread does not run for a while (a process paused with
//! SIGSTOP, a stalled VM, a starved thread). A leader that slept through its lease and
//! then answered a read before ticking would serve from a lease that ended long ago,
//! while a newer leader may already have accepted writes. A [`Ticker`] therefore reports
//! every tick that fell due — up to a cap larger than any lease, which is enough to end
//! every lease and election timer — and the driver makes them up *before* it handles
//! the messages that waited meanwhile.

use std::time::{Duration, Instant};

/// Ticks due at a steady interval, with missed ticks made up (at most `catch_up_max`).
#[derive(Debug, Clone)]
pub struct Ticker {
    interval: Duration,
    next: Instant,
    catch_up_max: u32,
}

impl Ticker {
    /// A ticker whose first tick is due one `interval` after `now`; at most
    /// `catch_up_max` (at least 1) ticks are reported at once however long the gap.
    #[must_use]
    pub fn new(interval: Duration, catch_up_max: u32, now: Instant) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        Self { interval, next: now + interval, catch_up_max: catch_up_max.max(1) }
    }

    /// When the next tick falls due.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// The number of ticks due at `now` (0 if none), and moves on past them.
    pub fn due(&mut self, now: Instant) -> u32 {
        if now < self.next {
            return 0;
        }
        let behind = now.duration_since(self.next).as_nanos() / self.interval.as_nanos();
        let due = u32::try_from(behind.saturating_add(1)).unwrap_or(u32::MAX);
        if due > self.catch_up_max {
            // Far behind: the cap already ends every lease and timer; start afresh.
            self.next = now + self.interval;
            return self.catch_up_max;
        }
        self.next += self.interval * due;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Any instant will do as the origin: the ticker itself reads no clock.
    #[allow(clippy::disallowed_methods, reason = "an arbitrary origin for the tests")]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn nothing_is_due_before_the_interval() {
        let start = origin();
        let mut ticker = Ticker::new(100 * MS, 20, start);
        assert_eq!(ticker.due(start), 0);
        assert_eq!(ticker.due(start + 99 * MS), 0);
        assert_eq!(ticker.deadline(), start + 100 * MS);
    }

    #[test]
    fn one_tick_per_interval_keeps_its_phase() {
        let start = origin();
        let mut ticker = Ticker::new(100 * MS, 20, start);
        assert_eq!(ticker.due(start + 130 * MS), 1);
        assert_eq!(ticker.deadline(), start + 200 * MS);
        assert_eq!(ticker.due(start + 200 * MS), 1);
        assert_eq!(ticker.deadline(), start + 300 * MS);
    }

    #[test]
    fn missed_ticks_are_made_up() {
        let start = origin();
        let mut ticker = Ticker::new(100 * MS, 20, start);
        // Paused for 750 ms: the ticks at 100, 200, ..., 700 all fell due.
        assert_eq!(ticker.due(start + 750 * MS), 7);
        assert_eq!(ticker.deadline(), start + 800 * MS);
        assert_eq!(ticker.due(start + 750 * MS), 0);
    }

    #[test]
    fn a_long_pause_reports_the_cap_and_starts_afresh() {
        let start = origin();
        let mut ticker = Ticker::new(100 * MS, 20, start);
        let woke = start + Duration::from_secs(60);
        assert_eq!(ticker.due(woke), 20);
        assert_eq!(ticker.deadline(), woke + 100 * MS);
    }
}
