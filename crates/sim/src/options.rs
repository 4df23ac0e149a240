//! What one seed simulates: the cluster's shape, the Raft configuration and the fault rates,
//! all drawn from the seed (stream 0, so options stay stable when the world's draws change).

use std::fmt;

use tessera_raft::{Config, ReplicaId};

use crate::rng::Rng;

/// Virtual time units per tick. Message, fsync and client delays are in these units.
pub const TICK: u64 = 1_000;

/// The replica ids a group may ever use: the initial voters and those added later. Ids are
/// never reused once removed (`ReplicaId`'s contract).
pub const ID_POOL: u64 = 7;

/// How often each kind of client or fault action is chosen (relative weights).
#[derive(Debug, Clone, Copy, Default)]
pub struct Weights {
    /// Write a key.
    pub propose: u32,
    /// Ask for a read index.
    pub read: u32,
    /// Change the membership.
    pub conf_change: u32,
    /// Hand leadership to another voter.
    pub transfer: u32,
    /// Put the group to sleep.
    pub quiesce: u32,
    /// Crash a node (it restarts later).
    pub crash: u32,
    /// Cut, clog or heal the network.
    pub partition: u32,
    /// Compact a node's log into a snapshot.
    pub compact: u32,
    /// Force a node to campaign.
    pub campaign: u32,
}

/// Everything drawn for one seed.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed.
    pub seed: u64,
    /// The initial voters.
    pub voters: Vec<ReplicaId>,
    /// Bootstrap from a snapshot at index 5 (new replicas start empty and need a snapshot),
    /// rather than from an empty log whose membership every replica is created with.
    pub genesis_snapshot: bool,
    /// Raft: minimum election timeout in ticks.
    pub election_ticks: u32,
    /// Raft: heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Raft: appends in flight per follower.
    pub inflight_msgs_max: usize,
    /// Raft: bytes in flight per follower (0: unbounded).
    pub inflight_bytes_max: u64,
    /// Raft: bytes per append message.
    pub append_bytes_max: u64,
    /// Raft: bytes of committed entries per Ready.
    pub apply_bytes_max: u64,
    /// Raft: uncommitted bytes before proposals are refused (0: unbounded).
    pub uncommitted_bytes_max: u64,
    /// Raft: pre-vote.
    pub pre_vote: bool,
    /// Raft: check-quorum.
    pub check_quorum: bool,
    /// Raft: lease reads.
    pub lease_read: bool,
    /// Raft: lease length in ticks.
    pub lease_ticks: u32,
    /// Network: messages lost, per mille.
    pub drop_per_mille: u32,
    /// Network: messages delivered twice, per mille.
    pub dup_per_mille: u32,
    /// Network: delay range of one message.
    pub delay: (u64, u64),
    /// Network: messages held back for up to `long_delay_max`, per mille.
    pub long_delay_per_mille: u32,
    /// Network: the longest delay of a held-back message.
    pub long_delay_max: u64,
    /// Disk: fsync latency range.
    pub fsync: (u64, u64),
    /// Disk: an fsync covers only some of the queued Readys, per mille.
    pub partial_fsync_per_mille: u32,
    /// Disk: a crash keeps a random prefix of the unsynced writes, per mille.
    pub torn_crash_per_mille: u32,
    /// Apply: committed entries and snapshots go to an apply worker that runs after a delay
    /// (otherwise they are applied while the Ready is handled).
    pub async_apply: bool,
    /// Apply: the worker's delay range.
    pub apply_delay: (u64, u64),
    /// Crash: how long a node stays down.
    pub downtime: (u64, u64),
    /// Client: the gap between two client or fault actions.
    pub action_gap: (u64, u64),
    /// Client: what the actions are.
    pub weights: Weights,
    /// Compact a node's log once it holds this many entries past its snapshot.
    pub compact_threshold: u64,
    /// Events in the safety phase.
    pub events: u64,
}

impl Options {
    /// The options of `seed`, with `events` events in the safety phase.
    #[must_use]
    pub fn draw(seed: u64, events: u64) -> Self {
        let mut rng = Rng::new(seed, 0);
        let voter_count = [1, 2, 3, 3, 3, 4, 5, 5, 5, 6, 7, 7][rng.index(12)];
        let mut pool: Vec<ReplicaId> = (1..=ID_POOL).map(ReplicaId).collect();
        rng.shuffle(&mut pool);
        let mut voters = pool[..voter_count].to_vec();
        voters.sort_unstable();
        let election_ticks = u32::try_from(rng.between(5, 20)).expect("at most 20");
        let heartbeat_ticks =
            u32::try_from(rng.between(1, u64::from(election_ticks / 2))).expect("at most 10");
        let inflight_msgs_max = *rng.pick(&[1, 2, 3, 8, 32, 256]);
        let inflight_bytes_max = *rng.pick(&[0, 0, 200, 4096]);
        let append_bytes_max = *rng.pick(&[1, 60, 200, 1 << 20]);
        let apply_bytes_max = *rng.pick(&[1, 100, 4 << 20]);
        let uncommitted_bytes_max = *rng.pick(&[0, 400, 64 << 20]);
        let pre_vote = rng.coin();
        let check_quorum = rng.coin();
        let lease_read = check_quorum && rng.coin();
        let lease_ticks = u32::try_from(rng.between(1, u64::from(election_ticks - 1)))
            .expect("below election_ticks");
        let calm = rng.chance(150);
        let drop_per_mille = if calm { 0 } else { *rng.pick(&[0, 10, 50, 150]) };
        let dup_per_mille = if calm { 0 } else { *rng.pick(&[0, 10, 50]) };
        let delay_min = rng.between(0, TICK / 2);
        let delay = (delay_min, delay_min + rng.between(0, 2 * TICK));
        let long_delay_per_mille = if calm { 0 } else { *rng.pick(&[0, 0, 2, 10]) };
        let long_delay_max = u64::from(election_ticks) * TICK * rng.between(1, 4);
        let fsync_min = rng.between(0, TICK / 2);
        let fsync = (fsync_min, fsync_min + rng.between(0, TICK * 3 / 2));
        let partial_fsync_per_mille = *rng.pick(&[0, 200, 600]);
        let torn_crash_per_mille = *rng.pick(&[0, 300, 800]);
        // Chaos: crashes and partitions every few ticks, nodes back within an election
        // timeout; the schedules that depose leaders mid-replication (Raft's Figure 8) and
        // leave stale leaders holding leases.
        let chaos = !calm && rng.chance(250);
        let downtime_max =
            if chaos { 1 + u64::from(election_ticks) } else { 4 * u64::from(election_ticks) };
        let downtime = (TICK, TICK * rng.between(2, downtime_max));
        let gap_max = rng.between(TICK / 5, 2 * TICK);
        let fault_scale = match (calm, chaos) {
            (true, _) => 0,
            (false, true) => u32::try_from(rng.between(6, 12)).expect("small"),
            (false, false) => u32::try_from(rng.between(1, 4)).expect("small"),
        };
        let weights = Weights {
            propose: u32::try_from(rng.between(20, 60)).expect("small"),
            read: u32::try_from(rng.between(0, 30)).expect("small"),
            conf_change: u32::try_from(rng.between(0, 8)).expect("small"),
            transfer: u32::try_from(rng.between(0, 4)).expect("small"),
            quiesce: u32::try_from(rng.between(0, 6)).expect("small"),
            crash: fault_scale * u32::try_from(rng.between(u64::from(chaos), 2)).expect("small"),
            partition: fault_scale
                * u32::try_from(rng.between(u64::from(chaos), 3)).expect("small"),
            compact: u32::try_from(rng.between(0, 6)).expect("small"),
            campaign: u32::try_from(rng.between(0, 2)).expect("small"),
        };
        let compact_threshold = *rng.pick(&[20, 100, 400]);
        let async_apply = rng.coin();
        let apply_delay = (0, rng.between(0, 2 * TICK));
        Self {
            seed,
            voters,
            genesis_snapshot: rng.coin(),
            election_ticks,
            heartbeat_ticks,
            inflight_msgs_max,
            inflight_bytes_max,
            append_bytes_max,
            apply_bytes_max,
            uncommitted_bytes_max,
            pre_vote,
            check_quorum,
            lease_read,
            lease_ticks,
            drop_per_mille,
            dup_per_mille,
            delay,
            long_delay_per_mille,
            long_delay_max,
            fsync,
            partial_fsync_per_mille,
            torn_crash_per_mille,
            async_apply,
            apply_delay,
            downtime,
            action_gap: (0, gap_max),
            weights,
            compact_threshold,
            events,
        }
    }

    /// The Raft configuration of replica `id` with election seed `seed`.
    #[must_use]
    pub fn raft_config(&self, id: ReplicaId, seed: u64) -> Config {
        let mut config = Config::new(id);
        config.election_ticks = self.election_ticks;
        config.heartbeat_ticks = self.heartbeat_ticks;
        config.inflight_msgs_max = self.inflight_msgs_max;
        config.inflight_bytes_max = self.inflight_bytes_max;
        config.append_bytes_max = self.append_bytes_max;
        config.apply_bytes_max = self.apply_bytes_max;
        config.uncommitted_bytes_max = self.uncommitted_bytes_max;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.lease_read = self.lease_read;
        config.lease_ticks = self.lease_ticks;
        config.seed = seed;
        config
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.weights;
        write!(
            f,
            "seed={} voters={:?} genesis_snapshot={} election={} heartbeat={} inflight={}/{}B \
             append={}B apply={}B uncommitted={}B pre_vote={} check_quorum={} lease_read={} \
             lease={} drop={}‰ dup={}‰ delay={}..{} long_delay={}‰≤{} fsync={}..{} \
             partial_fsync={}‰ torn_crash={}‰ async_apply={} apply_delay≤{} downtime={}..{} \
             gap≤{} weights=[propose {} \
             read {} conf {} transfer {} quiesce {} crash {} partition {} compact {} \
             campaign {}] compact_at={} events={}",
            self.seed,
            self.voters,
            self.genesis_snapshot,
            self.election_ticks,
            self.heartbeat_ticks,
            self.inflight_msgs_max,
            self.inflight_bytes_max,
            self.append_bytes_max,
            self.apply_bytes_max,
            self.uncommitted_bytes_max,
            self.pre_vote,
            self.check_quorum,
            self.lease_read,
            self.lease_ticks,
            self.drop_per_mille,
            self.dup_per_mille,
            self.delay.0,
            self.delay.1,
            self.long_delay_per_mille,
            self.long_delay_max,
            self.fsync.0,
            self.fsync.1,
            self.partial_fsync_per_mille,
            self.torn_crash_per_mille,
            self.async_apply,
            self.apply_delay.1,
            self.downtime.0,
            self.downtime.1,
            self.action_gap.1,
            w.propose,
            w.read,
            w.conf_change,
            w.transfer,
            w.quiesce,
            w.crash,
            w.partition,
            w.compact,
            w.campaign,
            self.compact_threshold,
            self.events,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drawn_config_is_valid() {
        for seed in 0..2000 {
            let options = Options::draw(seed, 100);
            assert!((1..=7).contains(&options.voters.len()));
            for &id in &options.voters {
                options.raft_config(id, seed).validate().expect("drawn config is valid");
            }
        }
    }
}
