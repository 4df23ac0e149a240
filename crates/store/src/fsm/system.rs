//! The store on threads: a bounded crossbeam mailbox in front of one [`Store`] — the raft
//! worker — ticked by the wall clock, and its apply worker
//! ([`apply_worker`](crate::fsm::apply_worker)). Each loop takes everything waiting (up to
//! a bound), ticks when a tick is due, and runs rounds until no range has a Ready — so
//! requests that arrive together share one fsync — while the apply worker writes and
//! answers the rounds before.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::Ticker;
use tessera_wire::errors::RpcError;
use tessera_wire::kv::KvRequest;
use tessera_wire::transport::RaftEnvelope;

use crate::env::Network;
use crate::fsm::Store;
use crate::fsm::apply_worker::ApplyMode;
use crate::operation::inspect::StoreInspection;
use crate::peer::KvResponder;
use tessera_wire::rpc::{StoreAdminRequest, StoreAdminResponse};

/// What reaches a running store.
pub enum StoreMsg {
    /// Raft messages from other stores.
    Raft(Vec<RaftEnvelope>),
    /// A data request.
    Kv(KvRequest, KvResponder),
    /// An administrative request (split, leader transfer), as the placement driver or an
    /// operator sends it.
    Admin(StoreAdminRequest, AdminResponder),
    /// Report the store as it is now.
    Inspect(Box<dyn FnOnce(StoreInspection) + Send>),
    /// Hand the leadership of every range led here to another store; answers how many
    /// transfers started.
    TransferLeadersAway(Box<dyn FnOnce(usize) + Send>),
    /// Stop after this message.
    Stop,
}

impl std::fmt::Debug for StoreMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Raft(envelopes) => write!(f, "Raft({} envelopes)", envelopes.len()),
            Self::Kv(request, _) => write!(f, "Kv({:?})", request.context.range),
            Self::Admin(request, _) => write!(f, "Admin({request:?})"),
            Self::Inspect(_) => f.write_str("Inspect"),
            Self::TransferLeadersAway(_) => f.write_str("TransferLeadersAway"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

/// Answers an administrative request.
pub type AdminResponder = Box<dyn FnOnce(Result<StoreAdminResponse, RpcError>) + Send>;

fn busy() -> RpcError {
    RpcError::ServerBusy { reason: "store mailbox full".to_owned(), retry_after_ms: 10 }
}

/// Runs an administrative request on the store.
fn admin<R: RaftLogEngine, K: KvEngine, N: Network>(
    store: &mut Store<R, K, N>,
    request: StoreAdminRequest,
    respond: AdminResponder,
) {
    match request {
        StoreAdminRequest::Split { range, epoch, split_key, new_range, new_replicas } => {
            let respond = Box::new(move |result: Result<_, RpcError>| {
                respond(result.map(|(left, right)| StoreAdminResponse::Split { left, right }));
            });
            store.split(range, epoch, split_key, new_range, new_replicas, respond);
        }
        StoreAdminRequest::TransferLeader { range, to } => {
            respond(store.transfer_leader(range, to).map(|()| StoreAdminResponse::TransferLeader));
        }
        StoreAdminRequest::ChangeReplicas { range, epoch, changes } => {
            let respond = Box::new(move |result: Result<_, RpcError>| {
                respond(result.map(|descriptor| StoreAdminResponse::ChangeReplicas { descriptor }));
            });
            store.change_replicas(range, epoch, &changes, respond);
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

    /// Submits an administrative request; answered `ServerBusy` at once when the mailbox is
    /// full.
    pub fn admin(&self, request: StoreAdminRequest, respond: AdminResponder) {
        match self.mailbox.try_send(StoreMsg::Admin(request, respond)) {
            Ok(()) => {}
            Err(TrySendError::Full(StoreMsg::Admin(_, respond))) => respond(Err(busy())),
            Err(TrySendError::Disconnected(StoreMsg::Admin(_, respond))) => {
                respond(Err(RpcError::Internal { message: "store stopped".to_owned() }));
            }
            Err(_) => {}
        }
    }

    /// Asks for the store as it is now; `false` (and `respond` is dropped) when the store
    /// has stopped or its mailbox is full.
    pub fn inspect(&self, respond: Box<dyn FnOnce(StoreInspection) + Send>) -> bool {
        self.mailbox.try_send(StoreMsg::Inspect(respond)).is_ok()
    }

    /// Asks the store to hand its leaders to other stores (see
    /// [`Store::transfer_leaders_away`]); `false` (and `respond` is dropped) when the store
    /// has stopped or its mailbox is full.
    pub fn transfer_leaders_away(&self, respond: Box<dyn FnOnce(usize) + Send>) -> bool {
        self.mailbox.try_send(StoreMsg::TransferLeadersAway(respond)).is_ok()
    }

    /// Submits a data request; answered `ServerBusy` at once when the mailbox is full.
    pub fn kv(&self, request: KvRequest, respond: KvResponder) {
        match self.mailbox.try_send(StoreMsg::Kv(request, respond)) {
            Ok(()) => {}
            Err(TrySendError::Full(StoreMsg::Kv(_, respond))) => respond(Err(busy())),
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
    pub fn start<R, K, N>(mut store: Store<R, K, N>, capacity: usize) -> std::io::Result<Self>
    where
        R: RaftLogEngine,
        K: KvEngine,
        N: Network + Send + 'static,
    {
        store.set_apply_mode(ApplyMode::Thread).map_err(std::io::Error::other)?;
        let (sender, receiver) = bounded(capacity);
        let backlog = receiver.clone();
        store.set_apply_backlog(Box::new(move || !backlog.is_empty()));
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
    // Twice the election timeout: enough to end every lease and timer after a pause.
    let mut ticker =
        Ticker::new(tick, store.config.election_ticks.saturating_mul(2), Instant::now());
    loop {
        let wait = ticker.deadline().saturating_duration_since(Instant::now());
        let first = match mailbox.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Ticks first, made up if this thread did not run for a while: a leader must not
        // serve a read from a lease that ended while it slept (see `Ticker`).
        for _ in 0..ticker.due(Instant::now()) {
            store.tick();
        }
        let mut stop = false;
        for message in first.into_iter().chain(mailbox.try_iter().take(DRAIN_MAX)) {
            match message {
                StoreMsg::Raft(envelopes) => {
                    for envelope in envelopes {
                        store.on_raft_message(envelope);
                    }
                }
                StoreMsg::Kv(request, respond) => store.on_kv_request(request, respond),
                StoreMsg::Admin(request, respond) => admin(&mut store, request, respond),
                StoreMsg::Inspect(respond) => respond(store.inspect()),
                StoreMsg::TransferLeadersAway(respond) => respond(store.transfer_leaders_away()),
                StoreMsg::Stop => stop = true,
            }
        }
        if let Err(error) = store.poll_until_idle(64) {
            // The engines are poisoned or corrupt: stop serving; a restart recovers from
            // what is durable.
            tracing::error!(store = %store.store_id(), %error, "store stopped");
            refuse_waiting(mailbox);
            return;
        }
        if stop {
            return;
        }
    }
}

/// Answers what waits in the mailbox of a store that stopped on a failure: a crossbeam
/// channel keeps its messages until every handle is gone, so they would otherwise wait
/// for their callers' timeouts.
fn refuse_waiting(mailbox: &Receiver<StoreMsg>) {
    let stopped = || RpcError::Internal { message: "store stopped".to_owned() };
    for message in mailbox.try_iter() {
        match message {
            StoreMsg::Kv(_, respond) => respond(Err(stopped())),
            StoreMsg::Admin(_, respond) => respond(Err(stopped())),
            StoreMsg::Raft(_)
            | StoreMsg::Inspect(_)
            | StoreMsg::TransferLeadersAway(_)
            | StoreMsg::Stop => {}
        }
    }
}
