//! The store on threads: bounded crossbeam mailboxes — one per range for its requests, and
//! the store's own ([`router`](crate::fsm::router)) — in front of one [`Store`], the raft worker, ticked by
//! the wall clock, and its apply worker ([`apply_worker`](crate::fsm::apply_worker)). Each
//! loop takes what waits in the store's mailbox and in the mailboxes of the ranges on the
//! ready queue (up to a bound), ticks when a tick is due, and runs rounds until no range
//! has a Ready — so requests that arrive together share one fsync — while the apply worker
//! writes and answers the rounds before.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::Ticker;
use tessera_wire::errors::RpcError;
use tessera_wire::kv::KvRequest;
use tessera_wire::transport::RaftEnvelope;

use crate::env::Network;
use crate::fsm::Store;
use crate::fsm::apply_worker::ApplyMode;
use crate::fsm::router::{MailboxCapacity, RangeMsg, Routed, Router, busy};
use crate::operation::inspect::StoreInspection;
use crate::peer::KvResponder;
use tessera_wire::ids::RangeId;
use tessera_wire::rpc::{StoreAdminRequest, StoreAdminResponse};

/// What reaches a running store through its own mailbox.
pub enum StoreMsg {
    /// A batch of Raft messages from other stores.
    Raft(Vec<RaftEnvelope>),
    /// A data request for a range without a mailbox.
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

/// Messages taken per loop (from all mailboxes) before the store runs a round.
const DRAIN_MAX: usize = 4096;
/// Messages taken from one range's mailbox at a time: a range with more goes to the back of
/// the ready queue, behind the other ranges with work.
const RANGE_DRAIN_MAX: usize = 1024;

/// A handle on a store running on its own thread.
#[derive(Clone)]
pub struct StoreHandle {
    router: Arc<Router>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Delivers a batch of Raft messages to the store's mailbox; dropped when it is full
    /// (Raft retries).
    pub fn send_raft(&self, envelopes: Vec<RaftEnvelope>) {
        if let Err(TrySendError::Full(_)) =
            self.router.store_mailbox().try_send(StoreMsg::Raft(envelopes))
        {
            metrics::counter!("tessera_store_mailbox_full_total").increment(1);
        }
    }

    /// Submits an administrative request; answered `ServerBusy` at once when the mailbox is
    /// full.
    pub fn admin(&self, request: StoreAdminRequest, respond: AdminResponder) {
        match self.router.store_mailbox().try_send(StoreMsg::Admin(request, respond)) {
            Ok(()) => {}
            Err(TrySendError::Full(StoreMsg::Admin(_, respond))) => respond(Err(busy("store"))),
            Err(TrySendError::Disconnected(StoreMsg::Admin(_, respond))) => {
                respond(Err(RpcError::Internal { message: "store stopped".to_owned() }));
            }
            Err(_) => {}
        }
    }

    /// Asks for the store as it is now; `false` (and `respond` is dropped) when the store
    /// has stopped or its mailbox is full.
    pub fn inspect(&self, respond: Box<dyn FnOnce(StoreInspection) + Send>) -> bool {
        self.router.store_mailbox().try_send(StoreMsg::Inspect(respond)).is_ok()
    }

    /// Asks the store to hand its leaders to other stores (see
    /// [`Store::transfer_leaders_away`]); `false` (and `respond` is dropped) when the store
    /// has stopped or its mailbox is full.
    pub fn transfer_leaders_away(&self, respond: Box<dyn FnOnce(usize) + Send>) -> bool {
        self.router.store_mailbox().try_send(StoreMsg::TransferLeadersAway(respond)).is_ok()
    }

    /// Submits a data request to its range's mailbox (the store's for a range without
    /// one); answered `ServerBusy` at once when that mailbox is full.
    pub fn kv(&self, request: KvRequest, respond: KvResponder) {
        let (request, respond) = match self.router.send_kv(RangeMsg(request, respond)) {
            Routed::Queued => return,
            Routed::Full(RangeMsg(_, respond)) => {
                metrics::counter!("tessera_store_requests_refused_busy_total").increment(1);
                return respond(Err(busy("range")));
            }
            Routed::NoMailbox(RangeMsg(request, respond)) => (request, respond),
        };
        match self.router.store_mailbox().try_send(StoreMsg::Kv(request, respond)) {
            Ok(()) => {}
            Err(TrySendError::Full(StoreMsg::Kv(_, respond))) => {
                metrics::counter!("tessera_store_requests_refused_busy_total").increment(1);
                respond(Err(busy("store")));
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
    /// Starts `store` on a thread, with mailboxes of `capacity`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start<R, K, N>(
        mut store: Store<R, K, N>,
        capacity: MailboxCapacity,
    ) -> std::io::Result<Self>
    where
        R: RaftLogEngine,
        K: KvEngine,
        N: Network + Send + 'static,
    {
        store.set_apply_mode(ApplyMode::Thread).map_err(std::io::Error::other)?;
        store.build_snapshots_on_a_thread()?;
        let (router, mailbox, ready) = Router::new(capacity);
        let router = Arc::new(router);
        for peer in store.peers() {
            router.open(peer.range());
        }
        let (backlog, ready_backlog) = (mailbox.clone(), ready.clone());
        store.set_apply_backlog(Box::new(move || !backlog.is_empty() || !ready_backlog.is_empty()));
        let name = format!("store-{}", store.store_id());
        let worker = Worker { router: router.clone(), mailbox, ready };
        let thread = std::thread::Builder::new().name(name).spawn(move || worker.run(store))?;
        Ok(Self { handle: StoreHandle { router }, thread: Some(thread) })
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
        self.handle.router.send_store_blocking(StoreMsg::Stop);
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

/// The raft worker's side of the mailboxes.
struct Worker {
    router: Arc<Router>,
    mailbox: Receiver<StoreMsg>,
    ready: Receiver<RangeId>,
}

impl Worker {
    fn run<R: RaftLogEngine, K: KvEngine, N: Network>(self, mut store: Store<R, K, N>) {
        let tick = Duration::from_millis(store.config.tick_interval_ms);
        // Twice the election timeout: enough to end every lease and timer after a pause.
        let mut ticker =
            Ticker::new(tick, store.config.election_ticks.saturating_mul(2), Instant::now());
        let sweep_every = u64::from(store.config.election_ticks.max(1));
        let mut ticks = 0_u64;
        let mut taken = Vec::new();
        let mut reached = Vec::new();
        loop {
            let wait = ticker.deadline().saturating_duration_since(Instant::now());
            // What woke the loop: a message for the store, or a range with mail.
            let (first_store, mut first_range) = crossbeam_channel::select! {
                recv(self.mailbox) -> message => match message {
                    Ok(message) => (Some(message), None),
                    Err(_) => return,
                },
                recv(self.ready) -> range => match range {
                    Ok(range) => (None, Some(range)),
                    Err(_) => return,
                },
                default(wait) => (None, None),
            };
            // Ticks first, made up if this thread did not run for a while: a leader must not
            // serve a read from a lease that ended while it slept (see `Ticker`).
            for _ in 0..ticker.due(Instant::now()) {
                store.tick();
                ticks += 1;
                if ticks.is_multiple_of(sweep_every) {
                    self.close_departed(&mut store);
                }
            }
            let mut stop = false;
            let mut budget = DRAIN_MAX;
            // At most half the loop for the store's mailbox: a flood there does not starve
            // the ranges' mailboxes.
            let store_max = (DRAIN_MAX / 2).saturating_sub(usize::from(first_store.is_some()));
            let mut failed = Ok(());
            for message in first_store.into_iter().chain(self.mailbox.try_iter().take(store_max)) {
                budget = budget.saturating_sub(1);
                match handle_store_message(&mut store, message, &mut reached) {
                    Ok(stops) => stop |= stops,
                    Err(error) => {
                        failed = Err(error);
                        break;
                    }
                }
            }
            while budget > 0 {
                let Some(range) = first_range.take().or_else(|| self.ready.try_recv().ok()) else {
                    break;
                };
                let more = self.router.drain(range, budget.min(RANGE_DRAIN_MAX), &mut taken);
                budget = budget.saturating_sub(taken.len());
                for RangeMsg(request, respond) in taken.drain(..) {
                    store.on_kv_request(request, respond);
                }
                if more {
                    self.router.requeue(range);
                }
            }
            // A range a request reached through the store's mailbox, and held here, now gets
            // its own.
            for range in reached.drain(..) {
                if store.peer(range).is_some() && !self.router.has_mailbox(range) {
                    self.router.open(range);
                }
            }
            if let Err(error) = failed.and_then(|()| store.poll_until_idle(64).map(drop)) {
                // The engines are poisoned or corrupt: stop serving; a restart recovers from
                // what is durable.
                tracing::error!(store = %store.store_id(), %error, "store stopped");
                self.refuse_waiting();
                return;
            }
            if stop {
                self.refuse_waiting();
                return;
            }
        }
    }

    /// Closes the mailboxes of ranges no longer here (removed, or never created); what they
    /// held goes to the store, which answers it as for any range it does not hold.
    fn close_departed<R: RaftLogEngine, K: KvEngine, N: Network>(
        &self,
        store: &mut Store<R, K, N>,
    ) {
        for message in self.router.close_unless(|range| store.peer(range).is_some()) {
            handle_range_message(store, message);
        }
    }

    /// Answers what waits in the mailboxes of a store that stopped: a crossbeam channel keeps
    /// its messages until every handle is gone, so they would otherwise wait for their
    /// callers' timeouts.
    fn refuse_waiting(&self) {
        let stopped = || RpcError::Internal { message: "store stopped".to_owned() };
        for message in self.mailbox.try_iter() {
            match message {
                StoreMsg::Kv(_, respond) => respond(Err(stopped())),
                StoreMsg::Admin(_, respond) => respond(Err(stopped())),
                StoreMsg::Raft(_)
                | StoreMsg::Inspect(_)
                | StoreMsg::TransferLeadersAway(_)
                | StoreMsg::Stop => {}
            }
        }
        for message in self.router.take_all() {
            let RangeMsg(_, respond) = message;
            respond(Err(stopped()));
        }
    }
}

/// Hands a message from the store's mailbox to the store (a batch of Raft messages is
/// stepped together: with a pool, in parallel), noting the ranges requests reached; returns
/// whether the store is to stop.
///
/// # Errors
/// A pool helper failed: the store must stop.
fn handle_store_message<R: RaftLogEngine, K: KvEngine, N: Network>(
    store: &mut Store<R, K, N>,
    message: StoreMsg,
    reached: &mut Vec<RangeId>,
) -> crate::error::Result<bool> {
    match message {
        StoreMsg::Raft(envelopes) => store.on_raft_messages(envelopes)?,
        StoreMsg::Kv(request, respond) => {
            reached.push(request.context.range);
            store.on_kv_request(request, respond);
        }
        StoreMsg::Admin(request, respond) => admin(store, request, respond),
        StoreMsg::Inspect(respond) => respond(store.inspect()),
        StoreMsg::TransferLeadersAway(respond) => respond(store.transfer_leaders_away()),
        StoreMsg::Stop => return Ok(true),
    }
    Ok(false)
}

/// Hands a message from a range's mailbox to the store.
fn handle_range_message<R: RaftLogEngine, K: KvEngine, N: Network>(
    store: &mut Store<R, K, N>,
    message: RangeMsg,
) {
    let RangeMsg(request, respond) = message;
    store.on_kv_request(request, respond);
}
