//! The store's configuration, validated before use (ARCHITECTURE.md §11 defaults).

use crate::error::{Result, StoreError};

/// How a store behaves. Times are in ticks; the threaded runner ticks every
/// [`tick_interval_ms`](Self::tick_interval_ms).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Milliseconds per tick.
    pub tick_interval_ms: u64,
    /// Raft election timeout, in ticks (each replica draws from `[e, 2e)`).
    pub election_ticks: u32,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: u32,
    /// Ticks a leader lease lasts (below `election_ticks` by a margin for clock drift).
    pub lease_ticks: u32,
    /// Ticks a range must be idle before its leader tries to quiesce it (0: never).
    pub quiesce_after_ticks: u32,
    /// Ticks a read waits for its read index before it is answered `Timeout`.
    pub read_timeout_ticks: u32,
    /// Largest Raft command accepted, in bytes; bigger writes are refused with
    /// `RaftEntryTooLarge`.
    pub raft_entry_bytes_max: u64,
    /// Bytes of proposed but uncommitted entries per range before writes are refused with
    /// `ServerBusy`.
    pub uncommitted_bytes_max: u64,
    /// A scan returns at most this many bytes of keys and values (besides its own limit).
    pub scan_bytes_max: u64,
    /// Split a range once its approximate size passes this many bytes.
    pub split_size_bytes: u64,
    /// Split a range once its approximate key count passes this.
    pub split_keys: u64,
    /// Propose truncating a range's log once it holds more than this many applied entries.
    pub log_gc_count_limit: u64,
    /// Ticks between log-truncation checks (each also syncs the KV engine's WAL, which is
    /// what lets the durable apply index, and so truncation, advance).
    pub log_gc_ticks: u32,
    /// Where range snapshots are built and received (the store's data directory holds it
    /// in the product: `<data-dir>/snapshots`).
    pub snapshot_dir: std::path::PathBuf,
    /// Tombstone messages a leader sends to a replica it removed (every heartbeat, counted
    /// only while the replica's store is believed up).
    pub tombstone_sends: u32,
    /// Ticks without any message after which a replica asks the others whether it was
    /// removed (0: never).
    pub stale_replica_ticks: u32,
    /// Ticks between store heartbeats to the placement driver.
    pub store_heartbeat_ticks: u32,
    /// Ticks between range heartbeats from each leader to the placement driver (a range
    /// also reports at the next tick after it splits, changes membership or gets a leader).
    pub range_heartbeat_ticks: u32,
    /// Ticks between split checks (size, key count and load) of the ranges this store leads.
    pub split_check_ticks: u32,
    /// Requests per second (sampled at the leader) above which a range splits by load at
    /// the median sampled key (0: never).
    pub load_split_qps: u64,
    /// Where the store is (`region`, `zone`, `host`, …), from the highest level down.
    pub labels: Vec<tessera_wire::placement::StoreLabel>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            tick_interval_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            lease_ticks: 8,
            quiesce_after_ticks: 20,
            read_timeout_ticks: 20,
            raft_entry_bytes_max: 8 << 20,
            uncommitted_bytes_max: 64 << 20,
            scan_bytes_max: 4 << 20,
            split_size_bytes: 96 << 20,
            split_keys: 960_000,
            log_gc_count_limit: 10_000,
            log_gc_ticks: 100,
            snapshot_dir: std::env::temp_dir().join("tessera-snapshots"),
            tombstone_sends: 10,
            stale_replica_ticks: 3000,
            store_heartbeat_ticks: 100,
            range_heartbeat_ticks: 100,
            split_check_ticks: 100,
            load_split_qps: 3000,
            labels: Vec::new(),
        }
    }
}

impl StoreConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] naming the first wrong field.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| Err(StoreError::InvalidConfig(reason.to_owned()));
        if self.tick_interval_ms == 0 {
            return invalid("tick_interval_ms must be at least 1");
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return invalid("need 0 < heartbeat_ticks < election_ticks");
        }
        if self.lease_ticks == 0 || self.lease_ticks >= self.election_ticks {
            return invalid("lease_ticks must be between 1 and election_ticks - 1");
        }
        if self.read_timeout_ticks == 0 {
            return invalid("read_timeout_ticks must be at least 1");
        }
        if self.raft_entry_bytes_max == 0 || self.scan_bytes_max == 0 {
            return invalid("raft_entry_bytes_max and scan_bytes_max must be positive");
        }
        if self.split_size_bytes == 0 || self.split_keys < 2 {
            return invalid("split_size_bytes must be positive and split_keys at least 2");
        }
        if self.log_gc_count_limit == 0 || self.log_gc_ticks == 0 {
            return invalid("log_gc_count_limit and log_gc_ticks must be at least 1");
        }
        if self.store_heartbeat_ticks == 0
            || self.range_heartbeat_ticks == 0
            || self.split_check_ticks == 0
        {
            return invalid(
                "store_heartbeat_ticks, range_heartbeat_ticks and split_check_ticks must be at \
                 least 1",
            );
        }
        if self.snapshot_dir.as_os_str().is_empty() {
            return invalid("snapshot_dir must be set");
        }
        Ok(())
    }

    /// The Raft core's configuration for replica `id`, seeded with `seed`.
    #[must_use]
    pub fn raft_config(
        &self,
        id: tessera_raft::ReplicaId,
        applied: tessera_raft::LogIndex,
        seed: u64,
    ) -> tessera_raft::Config {
        let mut config = tessera_raft::Config::new(id);
        config.election_ticks = self.election_ticks;
        config.heartbeat_ticks = self.heartbeat_ticks;
        config.lease_ticks = self.lease_ticks;
        config.uncommitted_bytes_max = self.uncommitted_bytes_max;
        config.applied = applied;
        config.seed = seed;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        StoreConfig::default().validate().unwrap();
        let config = StoreConfig { lease_ticks: 10, ..StoreConfig::default() };
        assert!(config.validate().unwrap_err().to_string().contains("lease_ticks"));
        let config = StoreConfig { split_keys: 1, ..StoreConfig::default() };
        assert!(config.validate().unwrap_err().to_string().contains("split_keys"));
    }
}
