//! The store on a thread: a bounded crossbeam mailbox in front of one [`Store`], ticked by
//! the wall clock. Each loop takes everything waiting (up to a bound), ticks when a tick is
//! due, and runs rounds until no range has a Ready — so requests that arrive together share
//! one fsync.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_wire::errors::RpcError;
use tessera_wire::kv::KvRequest;
use tessera_wire::transport::RaftEnvelope;

use crate::env::Network;
use crate::fsm::Store;
use crate::peer::{KvResponder, SplitResponder};
use tessera_raft::ReplicaId;
use tessera_wire::ids::RangeId;
use tessera_wire::range::RangeEpoch;

/// What reaches a running store.
pub enum StoreMsg {
    /// Raft messages from other stores.
    Raft(Vec<RaftEnvelope>),
    /// A data request.
    Kv(KvRequest, KvResponder),
    /// Split a range (ids from the placement driver): see [`Store::split`].
    Split {
        /// The range.
        range: RangeId,
        /// Its epoch as the caller knows it.
        epoch: RangeEpoch,
        /// The first key of the right-hand range.
        split_key: Bytes,
        /// The right-hand range's id.
        new_range: RangeId,
        /// Its replica ids, one per current replica in descriptor order.
        new_replicas: Vec<ReplicaId>,
        /// Answered with both descriptors once applied.
        respond: SplitResponder,
    },
    /// Hand leadership of a range to one of its voters: see [`Store::transfer_leader`].
    TransferLeader {
        /// The range.
        range: RangeId,
        /// The replica to lead.
        to: ReplicaId,
        /// Answered once the transfer has started (or was refused).
        respond: Box<dyn FnOnce(Result<(), RpcError>) + Send>,
    },
    /// Stop after this message.
    Stop,
}

impl std::fmt::Debug for StoreMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Raft(envelopes) => write!(f, "Raft({} envelopes)", envelopes.len()),
            Self::Kv(request, _) => write!(f, "Kv({:?})", request.context.range),
            Self::Split { range, .. } => write!(f, "Split({range})"),
            Self::TransferLeader { range, to, .. } => write!(f, "TransferLeader({range} to {to})"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

/// Messages taken per loop before the store runs a round.
const DRAIN_MAX: usize = 4096;

/// A handle on a store running on its own thread.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    mailbox: Sender<StoreMsg>,
}

impl StoreHandle {
    /// Delivers Raft messages; dropped when the mailbox is full (Raft retries).
    pub fn send_raft(&self, envelopes: Vec<RaftEnvelope>) {
        if let Err(TrySendError::Full(_)) = self.mailbox.try_send(StoreMsg::Raft(envelopes)) {
            metrics::counter!("tessera_store_mailbox_full_total").increment(1);
        }
    }

    /// Submits an administrative request (split, leader transfer); refused with
    /// `ServerBusy` when the mailbox is full.
    pub fn admin(&self, message: StoreMsg) {
        match self.mailbox.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                let error = RpcError::ServerBusy {
                    reason: "store mailbox full or store stopped".to_owned(),
                    retry_after_ms: 10,
                };
                match message {
                    StoreMsg::Split { respond, .. } => respond(Err(error)),
                    StoreMsg::TransferLeader { respond, .. } => respond(Err(error)),
                    StoreMsg::Kv(_, respond) => respond(Err(error)),
                    StoreMsg::Raft(_) | StoreMsg::Stop => {}
                }
            }
        }
    }

    /// Submits a data request; answered `ServerBusy` at once when the mailbox is full.
    pub fn kv(&self, request: KvRequest, respond: KvResponder) {
        match self.mailbox.try_send(StoreMsg::Kv(request, respond)) {
            Ok(()) => {}
            Err(TrySendError::Full(StoreMsg::Kv(_, respond))) => {
                respond(Err(RpcError::ServerBusy {
                    reason: "store mailbox full".to_owned(),
                    retry_after_ms: 10,
                }));
            }
            Err(TrySendError::Disconnected(StoreMsg::Kv(_, respond))) => {
                respond(Err(RpcError::Internal { message: "store stopped".to_owned() }));
            }
            Err(_) => {}
        }
    }
}

/// A store running on its own thread.
#[derive(Debug)]
pub struct StoreSystem {
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
}

impl StoreSystem {
    /// Starts `store` on a thread with a mailbox of `capacity` messages.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start<R, K, N>(store: Store<R, K, N>, capacity: usize) -> std::io::Result<Self>
    where
        R: RaftLogEngine,
        K: KvEngine,
        N: Network + Send + 'static,
    {
        let (sender, receiver) = bounded(capacity);
        let name = format!("store-{}", store.store_id());
        let thread = std::thread::Builder::new().name(name).spawn(move || run(store, &receiver))?;
        Ok(Self { handle: StoreHandle { mailbox: sender }, thread: Some(thread) })
    }

    /// A handle to send to the store.
    #[must_use]
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Stops the store and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.handle.mailbox.send(StoreMsg::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("store thread panicked");
        }
    }
}

impl Drop for StoreSystem {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<R: RaftLogEngine, K: KvEngine, N: Network>(
    mut store: Store<R, K, N>,
    mailbox: &Receiver<StoreMsg>,
) {
    let tick = Duration::from_millis(store.config.tick_interval_ms);
    let mut next_tick = Instant::now() + tick;
    loop {
        let first = match mailbox.recv_timeout(next_tick.saturating_duration_since(Instant::now()))
        {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut stop = false;
        for message in first.into_iter().chain(mailbox.try_iter().take(DRAIN_MAX)) {
            match message {
                StoreMsg::Raft(envelopes) => {
                    for envelope in envelopes {
                        store.on_raft_message(envelope);
                    }
                }
                StoreMsg::Kv(request, respond) => store.on_kv_request(request, respond),
                StoreMsg::Split { range, epoch, split_key, new_range, new_replicas, respond } => {
                    store.split(range, epoch, split_key, new_range, new_replicas, respond);
                }
                StoreMsg::TransferLeader { range, to, respond } => {
                    respond(store.transfer_leader(range, to));
                }
                StoreMsg::Stop => stop = true,
            }
        }
        if Instant::now() >= next_tick {
            store.tick();
            next_tick += tick;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick;
            }
        }
        if let Err(error) = store.poll_until_idle(64) {
            // The engines are poisoned or corrupt: stop serving; a restart recovers from
            // what is durable.
            tracing::error!(store = %store.store_id(), %error, "store stopped");
            return;
        }
        if stop {
            return;
        }
    }
}
