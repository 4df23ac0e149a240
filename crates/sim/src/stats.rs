//! Counters of what a run did, summed over seeds for the summary.

use std::fmt;

/// What one seed (or many, summed) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Seeds run.
    pub seeds: u64,
    /// Events processed (ticks, deliveries, fsyncs, client and fault actions, …).
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages lost (dropped, cut off, or sent to a node that was down).
    pub dropped: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Terms that had a leader.
    pub elections: u64,
    /// Log entries committed (applied somewhere).
    pub commits: u64,
    /// Client writes accepted by a leader.
    pub proposals: u64,
    /// Membership changes accepted by a leader.
    pub conf_changes: u64,
    /// Read states whose result was checked.
    pub reads_checked: u64,
    /// Snapshots installed from a leader.
    pub snapshots: u64,
    /// Log compactions.
    pub compactions: u64,
    /// Fsyncs.
    pub fsyncs: u64,
    /// Virtual time, in ticks.
    pub ticks: u64,
    /// Ticks the liveness phase took to converge (the maximum over seeds).
    pub liveness_ticks_max: u64,
}

impl Stats {
    /// Adds `other` (a seed's counters) to these.
    pub fn add(&mut self, other: &Self) {
        self.seeds += other.seeds;
        self.events += other.events;
        self.messages += other.messages;
        self.dropped += other.dropped;
        self.crashes += other.crashes;
        self.elections += other.elections;
        self.commits += other.commits;
        self.proposals += other.proposals;
        self.conf_changes += other.conf_changes;
        self.reads_checked += other.reads_checked;
        self.snapshots += other.snapshots;
        self.compactions += other.compactions;
        self.fsyncs += other.fsyncs;
        self.ticks += other.ticks;
        self.liveness_ticks_max = self.liveness_ticks_max.max(other.liveness_ticks_max);
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seeds={} events={} messages={} dropped={} crashes={} elections={} commits={} \
             proposals={} conf_changes={} reads_checked={} snapshots={} compactions={} \
             fsyncs={} virtual_ticks={} liveness_ticks_max={}",
            self.seeds,
            self.events,
            self.messages,
            self.dropped,
            self.crashes,
            self.elections,
            self.commits,
            self.proposals,
            self.conf_changes,
            self.reads_checked,
            self.snapshots,
            self.compactions,
            self.fsyncs,
            self.ticks,
            self.liveness_ticks_max,
        )
    }
}
