//! The simulated network: per-message delay (hence reordering), loss and duplication, and
//! the partitions in force. A cut link drops what reaches it; a clogged node holds its
//! traffic back (in both directions) until it is unclogged, as a stalled TCP connection would.

use std::collections::BTreeSet;

use tessera_raft::ReplicaId;

use crate::options::Options;
use crate::rng::Rng;

/// Links, clogs and message fates.
#[derive(Debug, Clone)]
pub struct Network {
    /// Directed links that drop every message: (from, to).
    blocked: BTreeSet<(ReplicaId, ReplicaId)>,
    clogged: BTreeSet<ReplicaId>,
    drop_per_mille: u32,
    dup_per_mille: u32,
    delay: (u64, u64),
    long_delay_per_mille: u32,
    long_delay_max: u64,
}

impl Network {
    /// A healed network with the fault rates of `options`.
    #[must_use]
    pub fn new(options: &Options) -> Self {
        Self {
            blocked: BTreeSet::new(),
            clogged: BTreeSet::new(),
            drop_per_mille: options.drop_per_mille,
            dup_per_mille: options.dup_per_mille,
            delay: options.delay,
            long_delay_per_mille: options.long_delay_per_mille,
            long_delay_max: options.long_delay_max,
        }
    }

    /// The delays after which copies of a message just sent arrive: none (lost), one, or two
    /// (duplicated).
    pub fn fate(&self, rng: &mut Rng) -> Vec<u64> {
        if rng.chance(self.drop_per_mille) {
            return Vec::new();
        }
        let copies = if rng.chance(self.dup_per_mille) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                if rng.chance(self.long_delay_per_mille) {
                    rng.between(self.delay.1, self.long_delay_max.max(self.delay.1))
                } else {
                    rng.between(self.delay.0, self.delay.1)
                }
            })
            .collect()
    }

    /// Whether the link `from -> to` is cut.
    #[must_use]
    pub fn is_cut(&self, from: ReplicaId, to: ReplicaId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Whether `node` is clogged.
    #[must_use]
    pub fn is_clogged(&self, node: ReplicaId) -> bool {
        self.clogged.contains(&node)
    }

    /// Whether a message from `from` to `to` would get through now.
    #[must_use]
    pub fn reachable(&self, from: ReplicaId, to: ReplicaId) -> bool {
        !self.is_cut(from, to) && !self.is_clogged(from) && !self.is_clogged(to)
    }

    /// Cuts the link `from -> to` only.
    pub fn cut(&mut self, from: ReplicaId, to: ReplicaId) {
        if from != to {
            self.blocked.insert((from, to));
        }
    }

    /// Cuts every link between `side` and the rest of `all`, both ways.
    pub fn split(&mut self, side: &[ReplicaId], all: &[ReplicaId]) {
        for &a in side {
            for &b in all {
                if !side.contains(&b) {
                    self.cut(a, b);
                    self.cut(b, a);
                }
            }
        }
    }

    /// Clogs `node`.
    pub fn clog(&mut self, node: ReplicaId) {
        self.clogged.insert(node);
    }

    /// Unclogs `node`.
    pub fn unclog(&mut self, node: ReplicaId) {
        self.clogged.remove(&node);
    }

    /// Restores every cut link (clogs stay).
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Removes every cut and clog and stops loss, duplication and long delays; delays are
    /// capped at `delay_cap` (the liveness phase).
    pub fn calm(&mut self, delay_cap: u64) {
        self.blocked.clear();
        self.clogged.clear();
        self.drop_per_mille = 0;
        self.dup_per_mille = 0;
        self.long_delay_per_mille = 0;
        self.delay.1 = self.delay.1.min(delay_cap.max(self.delay.0));
    }

    /// A short description of the cuts and clogs, for traces.
    #[must_use]
    pub fn describe(&self) -> String {
        let cuts: Vec<String> = self.blocked.iter().map(|(a, b)| format!("{a}->{b}")).collect();
        format!("cut [{}] clogged {:?}", cuts.join(" "), self.clogged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_both_ways_and_heal_restores() {
        let options = Options::draw(1, 10);
        let mut net = Network::new(&options);
        let all = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
        net.split(&[ReplicaId(1)], &all);
        assert!(!net.reachable(ReplicaId(1), ReplicaId(2)));
        assert!(!net.reachable(ReplicaId(3), ReplicaId(1)));
        assert!(net.reachable(ReplicaId(2), ReplicaId(3)));
        net.heal();
        assert!(net.reachable(ReplicaId(1), ReplicaId(2)));
        net.cut(ReplicaId(1), ReplicaId(2));
        assert!(!net.reachable(ReplicaId(1), ReplicaId(2)));
        assert!(net.reachable(ReplicaId(2), ReplicaId(1)));
        net.clog(ReplicaId(3));
        assert!(!net.reachable(ReplicaId(2), ReplicaId(3)));
        net.calm(10);
        assert!(net.reachable(ReplicaId(1), ReplicaId(2)));
        assert!(net.reachable(ReplicaId(2), ReplicaId(3)));
    }
}
