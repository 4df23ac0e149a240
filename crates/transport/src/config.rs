//! [`TransportConfig`]: identity, listen address, TLS, and every bound of the transport.

use std::net::SocketAddr;
use std::time::Duration;

use tessera_wire::frame::MAX_FRAME_BYTES;
use tessera_wire::ids::{NodeId, StoreId};

use crate::batcher::BatcherConfig;
use crate::error::TransportError;
use crate::faults::FaultConfig;
use crate::tls::NodeTls;

/// Everything [`crate::Transport::start`] needs. Build it with [`TransportConfig::new`] and
/// change the fields that differ from the defaults.
#[derive(Debug)]
pub struct TransportConfig {
    /// This node.
    pub node_id: NodeId,
    /// This node's store (the `from_store` of coalesced heartbeat batches).
    pub store_id: StoreId,
    /// The cluster; a peer of another cluster is refused at the handshake.
    pub cluster_id: u64,
    /// The UDP address to listen on (port 0: any free port, see
    /// [`crate::Transport::local_addr`]). Outgoing connections use the same socket.
    pub listen: SocketAddr,
    /// Certificates, keys and QUIC timers (keep-alive and idle timeout: the liveness signal).
    pub tls: NodeTls,
    /// Batching and coalescing of Raft traffic, and the per-destination queue bounds.
    pub batcher: BatcherConfig,
    /// RPCs in flight per destination from this node; one more is answered
    /// `ServerBusy` locally, without being sent.
    pub rpc_inflight_max: usize,
    /// RPCs served concurrently by this node, from all peers; one more is answered
    /// `ServerBusy`.
    pub rpc_serve_inflight_max: usize,
    /// The server-side deadline of a request that names none (`timeout_ms == 0`), and the
    /// longest a stream may take to deliver its first frame.
    pub rpc_timeout_default: Duration,
    /// The `retry_after_ms` of `ServerBusy` answers.
    pub rpc_busy_retry_after: Duration,
    /// Snapshot bytes sent per second, all streams together (0: unlimited).
    pub snapshot_send_bytes_per_sec: u64,
    /// Snapshot bytes received per second, all streams together (0: unlimited).
    pub snapshot_recv_bytes_per_sec: u64,
    /// Snapshots received concurrently; one more is rejected.
    pub snapshot_recv_max: usize,
    /// Verified chunks buffered between the stream and the handler of one snapshot.
    pub snapshot_chunks_buffered_max: usize,
    /// First reconnect delay after a failed dial; doubles per failure.
    pub reconnect_backoff_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// Longest a dial (QUIC + TLS handshake) may take.
    pub connect_timeout: Duration,
    /// Longest the Hello exchange may take once QUIC is up.
    pub handshake_timeout: Duration,
    /// Largest frame payload accepted from a peer.
    pub frame_bytes_max: usize,
    /// Seed of the reconnect jitter.
    pub jitter_seed: u64,
    /// Fault hooks; none by default.
    pub faults: FaultConfig,
}

impl TransportConfig {
    /// A configuration with the defaults for everything but identity, address and TLS.
    #[must_use]
    pub fn new(
        node_id: NodeId,
        store_id: StoreId,
        cluster_id: u64,
        listen: SocketAddr,
        tls: NodeTls,
    ) -> Self {
        Self {
            node_id,
            store_id,
            cluster_id,
            listen,
            tls,
            batcher: BatcherConfig::default(),
            rpc_inflight_max: 1024,
            rpc_serve_inflight_max: 4096,
            rpc_timeout_default: Duration::from_secs(10),
            rpc_busy_retry_after: Duration::from_millis(10),
            snapshot_send_bytes_per_sec: 100 << 20,
            snapshot_recv_bytes_per_sec: 100 << 20,
            snapshot_recv_max: 4,
            snapshot_chunks_buffered_max: 4,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            frame_bytes_max: MAX_FRAME_BYTES,
            jitter_seed: node_id.get(),
            faults: FaultConfig::default(),
        }
    }

    /// Checks the rules on the fields.
    ///
    /// # Errors
    /// [`TransportError::InvalidConfig`] naming the broken rule.
    pub fn validate(&self) -> Result<(), TransportError> {
        let invalid =
            |reason: &str| Err(TransportError::InvalidConfig { reason: reason.to_owned() });
        if let Err(error) = self.batcher.validate() {
            return Err(TransportError::InvalidConfig { reason: error.to_string() });
        }
        if self.node_id.get() == 0 {
            return invalid("node_id must be non-zero");
        }
        if self.rpc_inflight_max == 0 || self.rpc_serve_inflight_max == 0 {
            return invalid("rpc_inflight_max and rpc_serve_inflight_max must be non-zero");
        }
        if self.snapshot_recv_max == 0 || self.snapshot_chunks_buffered_max == 0 {
            return invalid("snapshot_recv_max and snapshot_chunks_buffered_max must be non-zero");
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return invalid("need 0 < reconnect_backoff_min <= reconnect_backoff_max");
        }
        if self.connect_timeout.is_zero()
            || self.handshake_timeout.is_zero()
            || self.rpc_timeout_default.is_zero()
        {
            return invalid("timeouts must be non-zero");
        }
        if self.frame_bytes_max == 0 || self.frame_bytes_max > u32::MAX as usize {
            return invalid("frame_bytes_max must be in 1..=u32::MAX");
        }
        Ok(())
    }

    /// The delay before reconnect attempt `failures` (≥ 1): exponential from
    /// `reconnect_backoff_min`, capped at `reconnect_backoff_max`, then scaled by a jitter
    /// factor in `[0.5, 1)` drawn from `unit` (uniform in `[0, 1)`).
    #[must_use]
    pub fn reconnect_delay(&self, failures: u32, unit: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let base = self
            .reconnect_backoff_min
            .saturating_mul(1 << exponent)
            .min(self.reconnect_backoff_max);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}
