//! The transport's typed errors (STYLE.md item 8): each says which peer and what the caller can
//! do about it (retry later, re-route, give up).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tessera_wire::ids::NodeId;

use crate::tls::TlsError;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The configuration breaks one of its documented rules.
    #[error("invalid transport configuration: {reason}")]
    InvalidConfig {
        /// The broken rule.
        reason: String,
    },
    /// The TLS material could not be turned into QUIC configurations.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind the QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No address is known for the node ([`crate::Transport::set_peer`] was never called and
    /// the node never connected to us).
    #[error("no address known for node {node}")]
    UnknownPeer {
        /// The node.
        node: NodeId,
    },
    /// The node could not be reached: the last dial failed and the reconnect backoff has not
    /// expired yet, or the handshake was refused. Retry later.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// The last dial or handshake error.
        reason: String,
    },
    /// A fault hook blocks traffic to the node (tests and demos only).
    #[error("traffic to node {node} is blocked by a fault hook")]
    Blocked {
        /// The node.
        node: NodeId,
    },
    /// The operation did not finish within its deadline; its effect on the peer is unknown.
    #[error("request to node {node} timed out after {after:?}")]
    Timeout {
        /// The node.
        node: NodeId,
        /// The deadline that expired.
        after: Duration,
    },
    /// The connection or stream broke during the operation; its effect is unknown.
    #[error("connection to node {node} lost: {reason}")]
    ConnectionLost {
        /// The node.
        node: NodeId,
        /// What quinn reported.
        reason: String,
    },
    /// The peer sent something that breaks the protocol (a bad frame, a wrong answer).
    #[error("protocol violation by node {node}: {reason}")]
    Protocol {
        /// The node.
        node: NodeId,
        /// What was wrong.
        reason: String,
    },
    /// A message could not be encoded (it exceeds the frame format's limits).
    #[error("cannot encode: {0}")]
    Encode(#[from] tessera_wire::frame::FrameError),
    /// The transport is shutting down.
    #[error("transport shut down")]
    Shutdown,
}
