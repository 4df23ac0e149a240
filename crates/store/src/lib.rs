//! # tessera-store
//!
//! The multi-raft store: one process hosts thousands of range replicas, each a Raft group,
//! on a few threads, with one fsync per round for all of them.
//!
//! Layout (kept apart on purpose): [`fsm`] schedules (the round that persists every touched
//! range's Ready with one sync, batched sends, one apply batch; the threaded runner behind a
//! bounded mailbox), [`peer`] holds state (the Raft group and range metadata, proposals and
//! reads waiting), `operation/` holds behaviour (write, read, apply, split, ticks and
//! quiescence, replica lifecycle, membership changes, snapshots). Storage reaches the store through the engine traits and
//! the network through [`Network`], so the simulator drives whole stores on one thread.
//!
//! Does not belong here: consensus rules (`tessera-raft`), engine internals
//! (`tessera-engine*`), sockets (`tessera-transport`), transactions (`tessera-txn`).

mod codec;
pub mod command;
pub mod config;
pub mod env;
pub mod error;
pub mod fsm;
mod operation;
pub mod peer;
pub mod placement;
pub mod snapshot;
pub mod state;
pub mod transport_net;

pub use config::StoreConfig;
pub use env::{Network, SnapshotReport};
pub use error::{Result, StoreError};
pub use fsm::apply_worker::ApplyMode;
pub use fsm::pool::RaftPool;
pub use fsm::router::MailboxCapacity;
pub use fsm::system::{AdminResponder, StoreHandle, StoreMsg, StoreSystem};
pub use fsm::{Store, StoreStats};
pub use operation::inspect::{ReplicaInfo, StoreInspection};
pub use operation::lifecycle::{bootstrap, bootstrap_store};
pub use operation::split::SplitWanted;
pub use peer::{ChangeResponder, KvResponder, Peer, SplitResponder};
pub use placement::PlacementClient;
pub use transport_net::{StoreRpcHandler, TransportNetwork};
