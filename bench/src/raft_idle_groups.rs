//! The cost of many idle Raft groups: thousands of three-replica groups in one process, all
//! elected and idle, ticked at 10 ticks per virtual second (a 100 ms tick), first all awake
//! (leaders heartbeat every 2 ticks, followers answer), then after every leader quiesced its
//! group (`quiesce(&[])`; followers sleep on the quiesce heartbeat) and the store stops
//! ticking quiesced replicas. See bench/README.md for the method and the results.

use std::time::{Duration, Instant};

use tessera_raft::{Config, RawNode, ReplicaId, Role};

use crate::cpu;
use crate::raft_group::{Activity, Group, Network};

/// Replicas per group.
const REPLICAS: u64 = 3;

/// Ticks per virtual second: the store's default tick is 100 ms.
pub const TICKS_PER_SECOND: u64 = 10;

/// Upper bound on rounds for one group to settle after a tick.
const MAX_ROUNDS: usize = 1_000;

/// Upper bound on ticks for every group to elect a leader.
const MAX_ELECTION_TICKS: u64 = 500;

/// How the groups are driven during a measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every replica is ticked every tick; leaders heartbeat, followers answer.
    Active,
    /// Every group is quiesced; quiesced replicas are not ticked (nor is anything else done
    /// for a group none of whose replicas was ticked).
    Quiesced,
}

impl Mode {
    /// The name in the output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Quiesced => "quiesced",
        }
    }
}

/// The configuration of replica `id` of group `group`: `Config::new` (ARCHITECTURE.md §11:
/// heartbeat every 2 ticks, election after 10–20, pre-vote, check-quorum, lease reads), with
/// a seed of its own for the election timeout.
#[must_use]
pub fn config(group: u64, id: ReplicaId) -> Config {
    let mut config = Config::new(id);
    config.seed = group * REPLICAS + id.0;
    config
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// How the groups were driven.
    pub mode: Mode,
    /// Groups in the process.
    pub groups: u64,
    /// Ticks in the window.
    pub ticks: u64,
    /// CPU time (user + system) of the window.
    pub cpu: Duration,
    /// Wall-clock time of the window.
    pub wall: Duration,
    /// Readys handled and messages routed in the window.
    pub activity: Activity,
    /// Replica ticks performed (ticks of quiesced replicas skipped are not counted).
    pub replica_ticks: u64,
}

impl Window {
    /// Virtual seconds in the window.
    #[must_use]
    pub fn virtual_seconds(&self) -> f64 {
        self.ticks as f64 / TICKS_PER_SECOND as f64
    }

    /// CPU milliseconds spent per virtual second.
    #[must_use]
    pub fn cpu_ms_per_virtual_sec(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3 / self.virtual_seconds()
    }

    /// Messages routed per virtual second.
    #[must_use]
    pub fn messages_per_virtual_sec(&self) -> f64 {
        self.activity.messages as f64 / self.virtual_seconds()
    }

    /// Readys handled per virtual second.
    #[must_use]
    pub fn readys_per_virtual_sec(&self) -> f64 {
        self.activity.readys as f64 / self.virtual_seconds()
    }

    /// One JSON object for this window. `rss` is the process's resident set, in bytes.
    #[must_use]
    pub fn to_json(&self, rss: u64) -> String {
        format!(
            "{{\"impl\":\"tessera-raft\",\"version\":\"{}\",\"bench\":\"idle-groups\",\
             \"mode\":\"{}\",\"groups\":{},\"replicas\":{},\"virtual_seconds\":{:.1},\
             \"cpu_ms_per_virtual_sec\":{:.3},\"messages_per_virtual_sec\":{:.0},\
             \"readys_per_virtual_sec\":{:.0},\"rss_mib\":{:.0}}}",
            env!("CARGO_PKG_VERSION"),
            self.mode.name(),
            self.groups,
            self.groups * REPLICAS,
            self.virtual_seconds(),
            self.cpu_ms_per_virtual_sec(),
            self.messages_per_virtual_sec(),
            self.readys_per_virtual_sec(),
            rss as f64 / f64::from(1u32 << 20),
        )
    }
}

/// Every group of the process, and which replica leads each.
#[derive(Debug)]
pub struct Groups {
    groups: Vec<Group>,
    leaders: Vec<ReplicaId>,
    /// Shared by all groups: each is settled before the next is driven.
    network: Network,
}

impl Groups {
    /// `count` new three-replica groups, none elected yet.
    #[must_use]
    pub fn new(count: u64) -> Self {
        let groups: Vec<Group> =
            (0..count).map(|group| Group::new(REPLICAS, |id| config(group, id))).collect();
        Self {
            leaders: vec![ReplicaId::NONE; groups.len()],
            groups,
            network: Network::new(REPLICAS),
        }
    }

    /// Elects a leader in every group and lets every group settle. Replicas are ticked
    /// together; after one election timeout's worth of ticks, replica 1 of every group that
    /// has no candidate yet campaigns, so most groups elect it at once. Groups where another
    /// replica's timeout fired first elect whoever wins. Returns the ticks it took.
    ///
    /// # Panics
    /// If some group has no single leader after `MAX_ELECTION_TICKS` ticks.
    pub fn elect(&mut self) -> u64 {
        let nudge_at = u64::from(config(0, ReplicaId(1)).election_ticks);
        for tick in 1..=MAX_ELECTION_TICKS {
            let mut pending = 0;
            for group in &mut self.groups {
                if group.leaders().len() == 1 && !group.is_busy(&self.network) {
                    // Elected: keep ticking so that the followers hear heartbeats.
                    group.tick(false);
                    group.settle(&mut self.network, ReplicaId::NONE, MAX_ROUNDS);
                    continue;
                }
                pending += 1;
                group.tick(false);
                if tick == nudge_at
                    && group.nodes().iter().all(|node| node.raft().role() == Role::Follower)
                {
                    group.node_mut(ReplicaId(1)).campaign();
                }
                group.settle(&mut self.network, ReplicaId::NONE, MAX_ROUNDS);
            }
            if pending == 0 {
                for (group, leader) in self.groups.iter().zip(&mut self.leaders) {
                    *leader = group.leaders()[0];
                }
                return tick;
            }
        }
        panic!("every group must elect one leader within {MAX_ELECTION_TICKS} ticks");
    }

    /// How many groups replica 1 leads.
    #[must_use]
    pub fn led_by_replica_one(&self) -> usize {
        self.leaders.iter().filter(|&&leader| leader == ReplicaId(1)).count()
    }

    /// Ticks every group `ticks` times in `mode` and measures it.
    ///
    /// # Panics
    /// If leadership changes in any group.
    pub fn measure(&mut self, mode: Mode, ticks: u64) -> Window {
        let wall_start = Instant::now();
        let cpu_start = cpu::cpu_time().expect("the benchmark reads CPU time from Linux /proc");
        let (activity, replica_ticks) = self.run_ticks(mode, ticks);
        let cpu_end = cpu::cpu_time().expect("the benchmark reads CPU time from Linux /proc");
        let wall = wall_start.elapsed();
        self.check_leaders();
        Window {
            mode,
            groups: self.groups.len() as u64,
            ticks,
            cpu: cpu_end.saturating_sub(cpu_start),
            wall,
            activity,
            replica_ticks,
        }
    }

    /// Ticks every group `ticks` times in `mode` (unmeasured: for warming up).
    pub fn run_ticks(&mut self, mode: Mode, ticks: u64) -> (Activity, u64) {
        let skip_quiesced = mode == Mode::Quiesced;
        let mut activity = Activity::default();
        let mut replica_ticks = 0;
        for _ in 0..ticks {
            for group in &mut self.groups {
                let ticked = group.tick(skip_quiesced);
                if ticked == 0 {
                    continue; // a fully quiesced group: the store does nothing for it
                }
                replica_ticks += ticked as u64;
                activity += group.settle(&mut self.network, ReplicaId::NONE, MAX_ROUNDS);
            }
        }
        (activity, replica_ticks)
    }

    /// Every leader quiesces its group; the quiesce heartbeats are delivered. Returns the
    /// work that took.
    ///
    /// # Panics
    /// If a leader refuses to quiesce or a replica stays awake.
    pub fn quiesce(&mut self) -> Activity {
        let mut activity = Activity::default();
        for (group, &leader) in self.groups.iter_mut().zip(&self.leaders) {
            assert!(
                group.node_mut(leader).quiesce(&[]),
                "an idle leader whose followers have the whole log can quiesce"
            );
            activity += group.settle(&mut self.network, ReplicaId::NONE, MAX_ROUNDS);
            assert!(
                group.nodes().iter().all(RawNode::is_quiesced),
                "caught-up followers sleep on the quiesce heartbeat"
            );
        }
        activity
    }

    fn check_leaders(&self) {
        for (group, &leader) in self.groups.iter().zip(&self.leaders) {
            assert_eq!(group.leaders(), [leader], "leadership must not move in an idle group");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_groups_heartbeat_when_awake_and_go_silent_when_quiesced() {
        let mut groups = Groups::new(20);
        groups.elect();
        let active = groups.measure(Mode::Active, 20);
        // Every 2 ticks each leader sends 2 heartbeats and gets 2 answers.
        assert_eq!(active.activity.messages, 20 * 10 * 4);
        assert_eq!(active.replica_ticks, 20 * 3 * 20);
        let quiesce = groups.quiesce();
        assert_eq!(quiesce.messages, 20 * 2, "one quiesce heartbeat per follower");
        let quiesced = groups.measure(Mode::Quiesced, 20);
        assert_eq!(quiesced.activity, Activity::default());
        assert_eq!(quiesced.replica_ticks, 0);
    }
}
