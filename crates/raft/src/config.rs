//! Configuration of one Raft node, validated before use.

use tessera_wire::raft::{LogIndex, ReplicaId};

use crate::RaftError;

/// How one node of a group behaves. Times are in ticks: the caller decides how long a tick
/// is (the store's default is 100 ms).
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica.
    pub id: ReplicaId,
    /// The minimum election timeout; each node draws its timeout from
    /// `[election_ticks, 2 * election_ticks)` with its seeded generator.
    pub election_ticks: u32,
    /// Ticks between leader heartbeats. Must be below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Appends in flight to one follower while pipelining.
    pub inflight_msgs_max: usize,
    /// Bytes of entries in flight to one follower (0: no byte bound).
    pub inflight_bytes_max: u64,
    /// Bytes of entries in one append message (at least one entry is always sent).
    pub append_bytes_max: u64,
    /// Bytes of committed entries handed out for apply in one Ready.
    pub apply_bytes_max: u64,
    /// Bytes of proposed but uncommitted entries the leader accepts before refusing new
    /// proposals (backpressure; 0: no bound).
    pub uncommitted_bytes_max: u64,
    /// Run a pre-vote round before an election, so a partitioned node rejoining cannot
    /// disrupt a healthy leader (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down without recent contact from a quorum, and followers ignore vote
    /// requests while they hear from a leader (thesis §6.2, §9.6).
    pub check_quorum: bool,
    /// Serve read-index requests from the leader's lease when it holds. Needs `check_quorum`.
    pub lease_read: bool,
    /// How long a lease lasts after the quorum contact that grants it. Must be below
    /// `election_ticks` by a margin for clock drift between nodes.
    pub lease_ticks: u32,
    /// The last index the application has applied (on restart).
    pub applied: LogIndex,
    /// Seed of the election-timeout generator. Give every node its own.
    pub seed: u64,
    /// The group was just created on this node with its initial state (for instance the
    /// right half of a split): it has never voted nor answered a leader in this group, so it
    /// need not refuse votes for an election timeout as a restarted node must (it cannot
    /// have granted anyone a lease). Set only when that is certain.
    pub new_group: bool,
}

impl Config {
    /// The defaults of ARCHITECTURE.md §11 for replica `id`: heartbeat every 2 ticks,
    /// election after 10–20 ticks, pre-vote, check-quorum and lease reads on.
    #[must_use]
    pub fn new(id: ReplicaId) -> Self {
        Self {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            inflight_msgs_max: 256,
            inflight_bytes_max: 32 << 20,
            append_bytes_max: 1 << 20,
            apply_bytes_max: 4 << 20,
            uncommitted_bytes_max: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            lease_read: true,
            lease_ticks: 8,
            applied: LogIndex(0),
            seed: id.0,
            new_group: false,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), RaftError> {
        let invalid = |reason: &str| Err(RaftError::InvalidConfig(reason.to_owned()));
        if !self.id.is_some() {
            return invalid("id must not be 0");
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid("election_ticks must be greater than heartbeat_ticks");
        }
        if self.inflight_msgs_max == 0 {
            return invalid("inflight_msgs_max must be at least 1");
        }
        if self.lease_read && !self.check_quorum {
            return invalid("lease_read needs check_quorum");
        }
        if self.lease_read && (self.lease_ticks == 0 || self.lease_ticks >= self.election_ticks) {
            return invalid("lease_ticks must be between 1 and election_ticks - 1");
        }
        Ok(())
    }
}

/// SplitMix64: a tiny, fast, seedable generator. Election jitter needs no more, and the
/// simulator needs every draw to be reproducible from the seed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[low, high)`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high, "empty range {low}..{high}");
        low + self.next_u64() % (high - low)
    }
}
