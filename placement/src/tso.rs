//! The timestamp oracle: `physical_ms << 18 | logical`, handed out by the placement leader
//! only, strictly increasing across leader changes and restarts.
//!
//! The leader hands out timestamps only below a bound committed through Raft beforehand
//! (`now + SAVE_AHEAD_MS`). A new leader starts above the last committed bound, so it never
//! repeats what an earlier leader may have handed out, whatever the clocks say; it asks for
//! a new bound before serving. Pure logic: the node supplies the clock and commits bounds.

use tessera_wire::timestamp::Timestamp;

/// How far ahead of the clock a bound is committed.
pub const SAVE_AHEAD_MS: u64 = 3_000;
/// A new bound is asked for when the clock comes this close to the current one.
pub const REFRESH_MARGIN_MS: u64 = 1_000;

/// Why no timestamps can be handed out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsoWait {
    /// Wait for a higher bound to be committed.
    Bound,
    /// The count is zero or larger than one millisecond holds.
    BadCount,
}

/// The leader's oracle.
#[derive(Debug, Clone)]
pub struct Tso {
    /// The last timestamp handed out (or the floor below which a new leader must not go).
    last: Timestamp,
    /// Timestamps up to the end of this millisecond may be handed out.
    bound_ms: u64,
    /// A bound was asked for and is not committed yet.
    raising: bool,
}

impl Tso {
    /// The oracle of a new leader, given the last committed bound: everything it hands out
    /// lies above that bound, and nothing is handed out before a bound of its own commits.
    #[must_use]
    pub fn start(committed_bound_ms: u64) -> Self {
        Self {
            last: Timestamp::from_parts(committed_bound_ms.saturating_add(1), 0).prev(),
            bound_ms: committed_bound_ms,
            raising: false,
        }
    }

    /// The bound to commit now, if one is needed (none is asked while one is in flight).
    pub fn wanted_bound(&mut self, now_ms: u64) -> Option<u64> {
        if self.raising {
            return None;
        }
        let base = now_ms.max(self.last.physical_ms());
        if self.bound_ms < base + REFRESH_MARGIN_MS {
            self.raising = true;
            return Some(base + SAVE_AHEAD_MS);
        }
        None
    }

    /// A bound committed (or its proposal failed, with `None`).
    pub fn bound_committed(&mut self, bound_ms: Option<u64>) {
        self.raising = false;
        if let Some(bound) = bound_ms {
            self.bound_ms = self.bound_ms.max(bound);
        }
    }

    /// Hands out `count` consecutive timestamps within one millisecond; returns the first.
    ///
    /// # Errors
    /// [`TsoWait::Bound`] when they would pass the committed bound; [`TsoWait::BadCount`].
    pub fn allocate(&mut self, now_ms: u64, count: u32) -> Result<Timestamp, TsoWait> {
        if count == 0 || count > Timestamp::LOGICAL_MAX + 1 {
            return Err(TsoWait::BadCount);
        }
        let mut physical = now_ms.max(self.last.physical_ms());
        let mut logical = if physical == self.last.physical_ms() {
            u64::from(self.last.logical()) + 1
        } else {
            0
        };
        if logical + u64::from(count) - 1 > u64::from(Timestamp::LOGICAL_MAX) {
            physical += 1;
            logical = 0;
        }
        if physical > self.bound_ms {
            return Err(TsoWait::Bound);
        }
        let logical = u32::try_from(logical).map_err(|_| TsoWait::BadCount)?;
        let first = Timestamp::from_parts(physical, logical);
        self.last = Timestamp::from_parts(physical, logical + count - 1);
        Ok(first)
    }

    /// The last timestamp handed out.
    #[must_use]
    pub fn last(&self) -> Timestamp {
        self.last
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_handed_out_before_a_bound_commits() {
        let mut tso = Tso::start(0);
        assert_eq!(tso.allocate(1_000, 1), Err(TsoWait::Bound));
        assert_eq!(tso.wanted_bound(1_000), Some(4_000));
        assert_eq!(tso.wanted_bound(1_000), None, "one bound in flight at a time");
        tso.bound_committed(Some(4_000));
        let first = tso.allocate(1_000, 10).unwrap();
        assert_eq!(first, Timestamp::from_parts(1_000, 0));
        assert_eq!(tso.allocate(1_000, 1).unwrap(), Timestamp::from_parts(1_000, 10));
    }

    #[test]
    fn a_new_leader_starts_above_the_old_bound_even_with_a_clock_behind() {
        let mut old = Tso::start(0);
        old.wanted_bound(10_000);
        old.bound_committed(Some(13_000));
        let handed = old.allocate(12_999, 5).unwrap();
        // The new leader's clock is 5 s behind.
        let mut new = Tso::start(13_000);
        assert_eq!(new.allocate(8_000, 1), Err(TsoWait::Bound));
        let bound = new.wanted_bound(8_000).unwrap();
        assert!(bound > 13_000);
        new.bound_committed(Some(bound));
        let next = new.allocate(8_000, 1).unwrap();
        assert!(next > handed);
        assert_eq!(next.physical_ms(), 13_001);
    }

    #[test]
    fn a_full_millisecond_moves_to_the_next() {
        let mut tso = Tso::start(0);
        tso.wanted_bound(100);
        tso.bound_committed(Some(3_100));
        let a = tso.allocate(100, Timestamp::LOGICAL_MAX).unwrap();
        let b = tso.allocate(100, 2).unwrap();
        assert!(b > Timestamp::from_parts(100, Timestamp::LOGICAL_MAX - 1));
        assert_eq!(b.physical_ms(), 101);
        assert!(b > a);
        assert_eq!(tso.allocate(100, 0), Err(TsoWait::BadCount));
        assert_eq!(tso.allocate(100, Timestamp::LOGICAL_MAX + 2), Err(TsoWait::BadCount));
    }

    #[test]
    fn timestamps_only_grow_across_many_calls_and_clock_jumps() {
        let mut tso = Tso::start(0);
        let mut clock = 1_700_000_000_000u64;
        let mut served = 0;
        let mut previous = Timestamp::ZERO;
        let mut rng = tessera_raft::SplitMix64::new(7);
        for _ in 0..20_000 {
            // The clock mostly advances, sometimes jumps back.
            clock = if rng.range(0, 10) == 0 {
                clock.saturating_sub(rng.range(0, 2_000))
            } else {
                clock + rng.range(0, 3)
            };
            if let Some(bound) = tso.wanted_bound(clock) {
                tso.bound_committed(Some(bound));
            }
            let count = u32::try_from(rng.range(1, 100)).unwrap();
            match tso.allocate(clock, count) {
                Ok(first) => {
                    assert!(first > previous);
                    served += 1;
                    previous = Timestamp(first.0 + u64::from(count) - 1);
                }
                Err(wait) => assert_eq!(wait, TsoWait::Bound),
            }
        }
        assert!(served > 19_000, "only {served} of 20,000 calls served");
    }
}
