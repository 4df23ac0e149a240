//! The mailboxes of a running store: one per range it serves requests for, and the
//! store's own.
//!
//! A data request for a range with a mailbox goes into that mailbox; the first one since
//! the raft worker last looked puts the range on the worker's ready queue, so the worker
//! takes only the mailboxes that hold something. Each mailbox is bounded on its own: a
//! range flooded with requests answers `ServerBusy` while the store's other ranges go on
//! being served, and the Raft messages in the store's mailbox are not crowded out by it.
//!
//! Everything else goes to the store's mailbox: Raft messages (they arrive in batches
//! coalesced per node and go on as one message per batch; routing each to its range cost
//! about a microsecond per message, see docs/store.md), administrative requests, inspection, and requests for a range without a
//! mailbox — one the store does not hold (the store answers) or one first asked for since
//! the worker's last loop. The worker opens a range's mailbox once the range is on the
//! store and a request reached it through the store's mailbox, and closes mailboxes of
//! ranges that left.
//!
//! Whichever mailbox a request takes, the store handles it the same way: a mailbox is a
//! queue in front of the store, not a gate. What a closed mailbox still held is handed to
//! the store, so a request is never lost on the way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::{Receiver, Sender, unbounded};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::kv::KvRequest;

use crate::fsm::system::StoreMsg;
use crate::peer::KvResponder;

/// What waits in a range's mailbox: a data request.
pub(crate) struct RangeMsg(pub(crate) KvRequest, pub(crate) KvResponder);

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
pub(crate) enum Routed {
    /// Queued in the range's mailbox.
    Queued,
    /// The range's mailbox is full; the request is handed back.
    Full(RangeMsg),
    /// The range has no mailbox; the request is handed back for the store's mailbox.
    NoMailbox(RangeMsg),
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

    /// Queues a data request in its range's mailbox.
    pub(crate) fn send_kv(&self, message: RangeMsg) -> Routed {
        let range = message.0.context.range;
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        match ranges.get(&range) {
            None => Routed::NoMailbox(message),
            Some(mailbox) if self.is_full(mailbox) => Routed::Full(message),
            Some(mailbox) => {
                self.push(range, mailbox, message);
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
