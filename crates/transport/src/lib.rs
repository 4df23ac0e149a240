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
