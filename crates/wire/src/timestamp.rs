//! Timestamps from the timestamp oracle (TSO) of the placement driver.
//!
//! A timestamp is `physical_ms << 18 | logical`: milliseconds since the Unix epoch in the
//! high 46 bits and a counter within that millisecond in the low 18 bits, so numeric order is
//! time order and one millisecond holds 262,144 distinct timestamps.

id_newtype!(
    /// A TSO timestamp: `physical_ms << 18 | logical`. Transactions read at their `start_ts`
    /// and become visible at their `commit_ts`.
    Timestamp
);

impl Timestamp {
    /// Bits of the logical counter.
    pub const LOGICAL_BITS: u32 = 18;
    /// The largest logical counter.
    pub const LOGICAL_MAX: u32 = (1 << Self::LOGICAL_BITS) - 1;
    /// The largest physical part, in milliseconds since the Unix epoch (about year 2200).
    pub const PHYSICAL_MS_MAX: u64 = u64::MAX >> Self::LOGICAL_BITS;
    /// The zero timestamp: before every transaction.
    pub const ZERO: Self = Self(0);
    /// The largest timestamp: after every transaction (a read of the latest versions).
    pub const MAX: Self = Self(u64::MAX);

    /// The timestamp for `logical` within millisecond `physical_ms`.
    ///
    /// # Panics
    ///
    /// If `logical > LOGICAL_MAX` or `physical_ms > PHYSICAL_MS_MAX`: the oracle must move to
    /// the next millisecond instead, and a clock that far out is a broken invariant.
    #[must_use]
    pub const fn from_parts(physical_ms: u64, logical: u32) -> Self {
        assert!(logical <= Self::LOGICAL_MAX, "logical part of a timestamp overflows");
        assert!(physical_ms <= Self::PHYSICAL_MS_MAX, "physical part of a timestamp overflows");
        Self(physical_ms << Self::LOGICAL_BITS | logical as u64)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn physical_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// The counter within the millisecond.
    #[must_use]
    pub const fn logical(self) -> u32 {
        // Lossless: the mask keeps 18 bits.
        (self.0 & Self::LOGICAL_MAX as u64) as u32
    }

    /// Whether this is [`Timestamp::ZERO`].
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The next timestamp (which may be in the next millisecond), or `None` at the maximum.
    #[must_use]
    pub const fn checked_next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(next) => Some(Self(next)),
            None => None,
        }
    }

    /// The previous timestamp, saturating at zero.
    #[must_use]
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}
