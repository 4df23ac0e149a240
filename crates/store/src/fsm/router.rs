//! The mailboxes of a running store: one per range it holds, and the store's own.
//!
//! A message for a range with a mailbox goes into that mailbox; the first one since the
//! raft worker last looked puts the range on the worker's ready queue, so the worker takes
//! only the mailboxes that hold something. Each mailbox is bounded on its own: a range
//! flooded with requests answers `ServerBusy` while the store's other ranges go on being
//! served, and their Raft messages are not dropped for it.
//!
//! Everything else goes to the store's mailbox: administrative requests, inspection, and
//! messages for a range without a mailbox — one the store does not hold (the store answers
//! or creates it) or holds since its last loop (a split's right half, a new replica). The
//! worker opens a range's mailbox once the range is on the store and something reached it
//! through the store's mailbox, and closes mailboxes of ranges that left.
//!
//! Whichever mailbox a message takes, the store handles it the same way: a mailbox is a
//! queue in front of the store, not a gate. What a closed mailbox still held is handed to
//! the store, so a request is never lost on the way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::{Receiver, Sender, unbounded};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::kv::KvRequest;
use tessera_wire::transport::RaftEnvelope;

use crate::fsm::system::StoreMsg;
use crate::peer::KvResponder;

/// What waits in a range's mailbox.
pub(crate) enum RangeMsg {
    Raft(RaftEnvelope),
    Kv(KvRequest, KvResponder),
}

/// One range's mailbox.
struct Mailbox {
    sender: Sender<RangeMsg>,
    receiver: Receiver<RangeMsg>,
    /// The range is on the ready queue (or being drained): senders need not put it there
    /// again.
    notified: AtomicBool,
}

/// Sizes of a running store's mailboxes, in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxCapacity {
    /// The store's own mailbox.
    pub store: usize,
    /// Each range's mailbox.
    pub range: usize,
}

impl MailboxCapacity {
    /// The same size for every mailbox.
    #[must_use]
    pub const fn uniform(messages: usize) -> Self {
        Self { store: messages, range: messages }
    }
}

/// Where messages for a running store go; shared by its handles and its raft worker.
pub(crate) struct Router {
    /// Every mailbox is pushed to under the read lock and removed under the write lock, so
    /// nothing is pushed into a mailbox after it is closed.
    ranges: RwLock<HashMap<RangeId, Arc<Mailbox>>>,
    store: Sender<StoreMsg>,
    ready: Sender<RangeId>,
    range_capacity: usize,
}

/// What a send to a range's mailbox did.
pub(crate) enum Routed<T> {
    /// Queued in the range's mailbox.
    Queued,
    /// The range's mailbox is full; the request is handed back.
    Full(T),
    /// The range has no mailbox; the request is handed back for the store's mailbox.
    NoMailbox(T),
}

impl Router {
    /// A router, with the receiving ends of the store's mailbox and of the ready queue.
    pub(crate) fn new(capacity: MailboxCapacity) -> (Self, Receiver<StoreMsg>, Receiver<RangeId>) {
        let (store, store_receiver) = crossbeam_channel::bounded(capacity.store.max(1));
        let (ready, ready_receiver) = unbounded();
        let router = Self {
            ranges: RwLock::new(HashMap::new()),
            store,
            ready,
            range_capacity: capacity.range.max(1),
        };
        (router, store_receiver, ready_receiver)
    }

    /// The store's own mailbox.
    pub(crate) fn store_mailbox(&self) -> &Sender<StoreMsg> {
        &self.store
    }

    /// Sends to the store's mailbox, waiting for room.
    pub(crate) fn send_store_blocking(&self, message: StoreMsg) {
        let _ = self.store.send(message);
    }

    /// Queues Raft messages in their ranges' mailboxes; returns the ones for ranges without
    /// a mailbox (for the store's mailbox) and how many were dropped because their range's
    /// mailbox was full.
    pub(crate) fn send_raft(&self, envelopes: Vec<RaftEnvelope>) -> (Vec<RaftEnvelope>, usize) {
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        let mut rest = Vec::new();
        let mut dropped = 0;
        for envelope in envelopes {
            match ranges.get(&envelope.range) {
                Some(mailbox) if self.is_full(mailbox) => dropped += 1,
                Some(mailbox) => self.push(envelope.range, mailbox, RangeMsg::Raft(envelope)),
                None => rest.push(envelope),
            }
        }
        (rest, dropped)
    }

    /// Queues a data request in its range's mailbox.
    pub(crate) fn send_kv(
        &self,
        request: KvRequest,
        respond: KvResponder,
    ) -> Routed<(KvRequest, KvResponder)> {
        let range = request.context.range;
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        match ranges.get(&range) {
            None => Routed::NoMailbox((request, respond)),
            Some(mailbox) if self.is_full(mailbox) => Routed::Full((request, respond)),
            Some(mailbox) => {
                self.push(range, mailbox, RangeMsg::Kv(request, respond));
                Routed::Queued
            }
        }
    }

    /// Checked before sending: with several senders at once a mailbox may hold a few more
    /// than its capacity, at most one per sending thread.
    fn is_full(&self, mailbox: &Mailbox) -> bool {
        mailbox.sender.len() >= self.range_capacity
    }

    /// Queues `message`; called under the read lock, so the mailbox is open.
    fn push(&self, range: RangeId, mailbox: &Mailbox, message: RangeMsg) {
        mailbox
            .sender
            .send(message)
            .expect("an unbounded channel whose receiver this mailbox holds accepts every send");
        if !mailbox.notified.swap(true, Ordering::AcqRel) {
            // The worker holds the queue's receiver until it stops; after that nothing waits
            // for the notice.
            let _ = self.ready.send(range);
        }
    }

    /// Whether `range` has a mailbox.
    pub(crate) fn has_mailbox(&self, range: RangeId) -> bool {
        self.ranges.read().unwrap_or_else(PoisonError::into_inner).contains_key(&range)
    }

    /// Opens a mailbox for `range` (kept if it has one).
    pub(crate) fn open(&self, range: RangeId) {
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        ranges.entry(range).or_insert_with(|| {
            let (sender, receiver) = unbounded();
            Arc::new(Mailbox { sender, receiver, notified: AtomicBool::new(false) })
        });
    }

    /// Closes the mailboxes of the ranges `keep` refuses; returns what they still held.
    pub(crate) fn close_unless(&self, keep: impl Fn(RangeId) -> bool) -> Vec<RangeMsg> {
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        let mut left = Vec::new();
        ranges.retain(|range, mailbox| {
            if keep(*range) {
                return true;
            }
            left.extend(mailbox.receiver.try_iter());
            false
        });
        left
    }

    /// Takes up to `max` messages from `range`'s mailbox, the worker having taken the range
    /// off the ready queue. Returns whether more remain (the range then stays notified and
    /// the caller puts it back on the queue).
    pub(crate) fn drain(&self, range: RangeId, max: usize, into: &mut Vec<RangeMsg>) -> bool {
        let Some(mailbox) =
            self.ranges.read().unwrap_or_else(PoisonError::into_inner).get(&range).cloned()
        else {
            // Closed since it was queued: what it held went to the store then.
            return false;
        };
        // Cleared before taking: a message sent from here on queues the range again (at
        // worst once too often, which finds the mailbox empty).
        mailbox.notified.store(false, Ordering::Release);
        into.extend(mailbox.receiver.try_iter().take(max));
        if mailbox.receiver.is_empty() {
            false
        } else {
            mailbox.notified.store(true, Ordering::Release);
            true
        }
    }

    /// Puts `range` back on the ready queue (its mailbox had more than one loop takes).
    pub(crate) fn requeue(&self, range: RangeId) {
        let _ = self.ready.send(range);
    }

    /// Takes everything from every mailbox (the store stopped).
    pub(crate) fn take_all(&self) -> Vec<RangeMsg> {
        self.close_unless(|_| false)
    }
}

/// `ServerBusy` for a full mailbox.
pub(crate) fn busy(which: &str) -> RpcError {
    RpcError::ServerBusy { reason: format!("{which} mailbox full"), retry_after_ms: 10 }
}
