//! # tessera-transport
//!
//! The QUIC (quinn + rustls) mesh between nodes: one connection per node pair, Raft traffic
//! batched per destination, heartbeats of many ranges coalesced into one message per node
//! pair per tick, snapshot streams and RPC streams, TLS (mTLS in production, rcgen-made
//! certificates in dev mode), and fault hooks for tests.
//!
//! Belongs here: connections, streams, framing on the wire, batching and coalescing (as a
//! pure state machine driven by a thin quinn adapter), send-queue bounds. Does not belong
//! here: what the messages mean (Raft, KV, placement) or any storage.
//!
//! # Shape
//!
//! - [`batcher`]: the pure state machine (events in, batches out; no I/O, no clocks).
//! - [`Transport`] (the quinn adapter): [`Transport::start`] binds one UDP socket that both
//!   listens and dials, with [`tls::NodeTls`]'s server and client configurations. Received
//!   traffic goes to a [`Handler`]: `on_raft` (coalesced heartbeats already fanned out into
//!   one envelope per range), `on_rpc`, `on_snapshot`.
//! - Peers: [`Transport::set_peer`] gives a node's address. The first send dials (lazily);
//!   one connection per node pair, whichever side dialled (crossing dials keep the one
//!   dialled by the lower node id); a [`Hello`](tessera_wire::transport::Hello) exchange on
//!   a control stream checks cluster, node id and negotiates the frame version first. A
//!   failed dial backs off exponentially with jitter (`reconnect_backoff_min..max`), during
//!   which RPCs fail fast and queued Raft messages are dropped. [`Transport::liveness`] is
//!   the node-liveness signal: QUIC keep-alives hold a healthy connection open and a silent
//!   peer's closes after the idle timeout.
//! - Raft: [`Transport::send_raft`] pushes into the batcher (one short mutex section) and
//!   wakes the destination's sender task, which drains every ready batch and writes them in
//!   one go on the connection's one long-lived unidirectional stream (order per destination
//!   is kept). [`Transport::tick`] seals coalesced heartbeats. A full queue drops the
//!   message (`Dropped::QueueFull`; Raft retries).
//! - RPC: [`Transport::rpc`] queues the call on one of a few long-lived bidirectional
//!   streams per connection (lanes), whose writer batches the requests that queued up; the
//!   deadline is
//!   enforced by the caller and sent to the server, which answers `RpcError::Timeout` when it
//!   expires. Both sides are bounded (`rpc_inflight_max` per destination,
//!   `rpc_serve_inflight_max` served) and answer `RpcError::ServerBusy` when full.
//! - Snapshots: [`Transport::send_snapshot`] streams checksummed chunks on their own
//!   bidirectional stream, token-bucket rate limited on both sides; the receiver verifies
//!   every chunk and answers one `SnapshotAck`.
//! - Every stream is read through a bounded `FrameDecoder`; a bad frame stops that stream
//!   (counted, logged) and nothing else. Nothing read from the network can panic the process.
//! - [`Faults`]: per-destination delay, loss and blocking, off unless set.
//! - [`metrics`]: `tessera_transport_*` series, and [`Transport::stats`] for tests and
//!   benchmarks.
//!
//! `docs/transport.md` gives the reasons.

pub mod batcher;
pub mod config;
mod connection;
pub mod error;
pub mod faults;
pub mod handler;
pub mod metrics;
mod peer;
mod rpc;
mod snapshot;
pub mod tls;
mod transport;

pub use batcher::{BatcherConfig, BulkPush, Dropped, Pushed};
pub use config::TransportConfig;
pub use error::TransportError;
pub use faults::{FaultConfig, FaultRule, Faults};
pub use handler::{BoxFuture, Handler, SnapshotReceiver, SnapshotStreamError};
pub use metrics::{MessageClass, TrafficStats, TransportStats};
pub use transport::{Liveness, Transport};
