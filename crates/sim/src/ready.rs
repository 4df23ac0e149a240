//! Each node's side of the Ready contract (crates/raft/src/lib.rs), with a disk that makes
//! writes durable only when a simulated fsync completes, and crashes that lose the rest.

use tessera_raft::{
    Entry, EntryKind, MessageKind, RawNode, ReplicaId, Role, Snapshot, Storage, decode_conf_change,
};

use crate::checker::Property;
use crate::kv::Kv;
use crate::node::{Applying, PendingWrite};
use crate::world::{Event, World, ensure, trace};

impl World {
    /// Handles every Ready of every running node until none has one.
    pub(crate) fn drain_readies(&mut self) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes[&id].raw.as_ref().is_some_and(RawNode::has_ready) {
                self.handle_ready(id);
            }
        }
    }

    fn handle_ready(&mut self, id: ReplicaId) {
        let node = self.nodes.get_mut(&id).expect("drained nodes exist");
        let raw = node.raw_mut();
        let ready = raw.ready();
        let must_sync = ready.must_sync();
        let role = raw.raft().role();
        let term = raw.raft().term();
        let store_last = raw.store().last_index();
        if self.trace.enabled() {
            let soft = ready.soft_state.map(|s| format!(" soft={s:?}")).unwrap_or_default();
            let hard = ready.hard_state.map(|h| format!(" hard={h:?}")).unwrap_or_default();
            let snap = ready
                .snapshot
                .as_ref()
                .map(|s| format!(" snapshot={}/{}", s.metadata.term, s.metadata.index));
            trace!(
                self,
                "ready {id}#{}{soft}{hard}{} entries={:?} committed={:?} reads={:?}",
                ready.number,
                snap.unwrap_or_default(),
                ready.entries,
                ready.committed_entries,
                ready.read_states,
            );
        }
        if role == Role::Leader {
            let first = ready.entries.first().map(|e| e.index);
            let has_snapshot = ready.snapshot.is_some();
            ensure!(self, self.checker.on_leader_write(id, term, store_last, first, has_snapshot));
        }

        // 1. The snapshot: persist it (live store now, durable at the fsync) and apply it
        // (now, or through the apply queue behind the entries handed out before it).
        if let Some(snapshot) = &ready.snapshot {
            let node = self.nodes.get_mut(&id).expect("drained nodes exist");
            node.raw_mut().store_mut().apply_snapshot(snapshot.clone());
            self.stats.snapshots += 1;
            if self.opts.async_apply {
                self.enqueue_apply(id, Applying::Snapshot(snapshot.clone()));
            } else {
                self.apply_snapshot(id, snapshot);
            }
        }

        // 2. Entries and hard state into the live store.
        if let Some(first) = ready.entries.first() {
            let node = &self.nodes[&id];
            let prev_index = first.index.prev();
            let prev_term = match node.raw().store().term(prev_index) {
                Ok(term) => term,
                Err(error) => self.fail_with(
                    Property::ReadyContract,
                    format!("{id} must append {first:?} after {prev_index}, which its store cannot give: {error}"),
                ),
            };
            ensure!(self, self.checker.on_append(id, (prev_index, prev_term), &ready.entries));
        }
        let node = self.nodes.get_mut(&id).expect("drained nodes exist");
        let raw = node.raw_mut();
        raw.store_mut().append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            raw.store_mut().set_hard_state(hard_state);
        }

        // 3. Messages leave at once (none may vouch for what is not yet durable).
        for message in ready.messages {
            self.vouch(id, &message);
            trace!(self, "send {message:?}");
            self.send(&message);
        }

        // 4. Persistence: queued behind earlier Readys; persisted messages wait for it.
        let write = PendingWrite {
            number: ready.number,
            snapshot: ready.snapshot,
            entries: ready.entries,
            hard_state: ready.hard_state,
            messages: ready.persisted_messages,
        };
        let node = self.nodes.get_mut(&id).expect("drained nodes exist");
        if node.disk.is_empty() && !must_sync {
            // Nothing to write and everything before is durable: vouch at once.
            for message in write.messages {
                self.vouch(id, &message);
                trace!(self, "send {message:?} (persisted)");
                self.send(&message);
            }
            self.nodes.get_mut(&id).expect("exists").raw_mut().on_persist_ready(write.number);
        } else {
            node.disk.push_back(write);
            if !node.fsync_scheduled {
                node.fsync_scheduled = true;
                let incarnation = node.incarnation;
                let delay = self.rng.between(self.opts.fsync.0, self.opts.fsync.1);
                self.schedule(delay, Event::Fsync { node: id, incarnation });
            }
        }

        // 5. Apply what is committed (and durable here: checked now), then serve reads.
        for entry in &ready.committed_entries {
            let node = &self.nodes[&id];
            let durable_term = node.durable.term(entry.index).ok();
            let durable_snapshot = node.durable_snapshot().0;
            ensure!(self, self.checker.on_handed_out(id, entry, durable_term, durable_snapshot));
        }
        if !ready.committed_entries.is_empty() {
            if self.opts.async_apply {
                self.enqueue_apply(id, Applying::Entries(ready.committed_entries));
            } else {
                self.apply_entries(id, &ready.committed_entries);
            }
        }
        for read in ready.read_states {
            ensure!(self, self.checker.on_read_state(id, &read.context, read.index));
            self.leader_reads.remove(&read.context);
            self.nodes.get_mut(&id).expect("exists").reads.push(read);
        }
        self.serve_reads(id);
        let node = &self.nodes[&id];
        if node.raw().store().stored_entries().len() as u64 > self.opts.compact_threshold {
            self.compact(id);
        }
    }

    /// Queues work for the apply worker, which runs after a delay.
    fn enqueue_apply(&mut self, id: ReplicaId, work: Applying) {
        let node = self.nodes.get_mut(&id).expect("exists");
        node.apply_queue.push_back(work);
        if !node.apply_scheduled {
            node.apply_scheduled = true;
            let incarnation = node.incarnation;
            let delay = self.rng.between(self.opts.apply_delay.0, self.opts.apply_delay.1);
            self.schedule(delay, Event::Apply { node: id, incarnation });
        }
    }

    /// The apply worker of `id` runs: it applies some of its queue, in order.
    pub(crate) fn run_apply_worker(&mut self, id: ReplicaId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.incarnation != incarnation || !node.running() {
            return;
        }
        node.apply_scheduled = false;
        let queued = node.apply_queue.len() as u64;
        let count = if self.rng.coin() { self.rng.between(1, queued.max(1)) } else { queued };
        for _ in 0..count {
            let Some(work) = self.nodes.get_mut(&id).and_then(|n| n.apply_queue.pop_front()) else {
                break;
            };
            match work {
                Applying::Snapshot(snapshot) => self.apply_snapshot(id, &snapshot),
                Applying::Entries(entries) => self.apply_entries(id, &entries),
            }
        }
        self.serve_reads(id);
        let node = self.nodes.get_mut(&id).expect("exists");
        if !node.apply_queue.is_empty() {
            node.apply_scheduled = true;
            let delay = self.rng.between(self.opts.apply_delay.0, self.opts.apply_delay.1);
            self.schedule(delay, Event::Apply { node: id, incarnation });
        }
    }

    /// Restores the state machine of `id` from `snapshot`.
    fn apply_snapshot(&mut self, id: ReplicaId, snapshot: &Snapshot) {
        let meta = &snapshot.metadata;
        let kv = match Kv::decode(&snapshot.data) {
            Ok(kv) => kv,
            Err(error) => self.fail_with(Property::StateMachineSafety, format!("{id}: {error}")),
        };
        ensure!(self, self.checker.on_snapshot_applied(id, meta.index, meta.term, &kv));
        trace!(self, "{id} restored its state machine from the snapshot at {}", meta.index);
        let node = self.nodes.get_mut(&id).expect("exists");
        node.kv = kv;
        node.kv_applied = meta.index;
    }

    /// Applies committed entries on `id`, then tells its core.
    fn apply_entries(&mut self, id: ReplicaId, entries: &[Entry]) {
        for entry in entries {
            self.apply(id, entry);
        }
        if let Some(last) = entries.last() {
            self.nodes.get_mut(&id).expect("exists").raw_mut().advance_apply_to(last.index);
        }
    }

    fn apply(&mut self, id: ReplicaId, entry: &Entry) {
        let node = &self.nodes[&id];
        ensure!(self, self.checker.on_apply(id, node.kv_applied, entry));
        match entry.kind {
            EntryKind::Normal if entry.data.is_empty() => {}
            EntryKind::Normal => {
                let node = self.nodes.get_mut(&id).expect("exists");
                if let Err(error) = node.kv.apply(entry.index, &entry.data) {
                    self.fail_with(Property::StateMachineSafety, format!("{id}: {error}"));
                }
            }
            EntryKind::ConfChange => {
                let change = match decode_conf_change(&entry.data) {
                    Ok(change) => change,
                    Err(error) => self.fail_with(
                        Property::StateMachineSafety,
                        format!("{id} applied {entry:?}, which does not decode: {error}"),
                    ),
                };
                let node = self.nodes.get_mut(&id).expect("exists");
                match node.raw_mut().apply_conf_change(&change) {
                    Ok(conf) => {
                        trace!(self, "{id} applied {change:?} at {}: {conf:?}", entry.index);
                        if entry.index > self.config.0 {
                            self.config = (entry.index, conf);
                        }
                    }
                    // Every change in the log was validated by its leader against the
                    // membership of the log before it, and every node applies the same log:
                    // the core has no legitimate reason to refuse one.
                    Err(error) => self.fail_with(
                        Property::StateMachineSafety,
                        format!(
                            "{id} cannot apply the committed {change:?} at {}: {error}",
                            entry.index
                        ),
                    ),
                }
            }
        }
        let node = self.nodes.get_mut(&id).expect("exists");
        node.kv_applied = entry.index;
        node.applied_durable = node.applied_durable.max(entry.index);
    }

    /// Serves the read states of `id` whose index its state machine has reached.
    fn serve_reads(&mut self, id: ReplicaId) {
        let node = self.nodes.get_mut(&id).expect("exists");
        let applied = node.kv_applied;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut node.reads).into_iter().partition(|r| r.index <= applied);
        node.reads = waiting;
        for read in ready {
            let node = &self.nodes[&id];
            ensure!(self, self.checker.on_read_served(id, &read.context, applied, &node.kv));
            trace!(self, "{id} served read {:?} at {applied}", read.context);
        }
    }

    /// Checks that a persisted message vouches only for durable state.
    fn vouch(&mut self, id: ReplicaId, message: &tessera_raft::Message) {
        let node = &self.nodes[&id];
        let durable = node.durable_hard_state;
        match message.kind {
            MessageKind::RequestVoteResponse if !message.reject => {
                ensure!(self, self.checker.on_vote_granted(id, message.term, message.to, durable));
            }
            MessageKind::RequestVote => {
                ensure!(self, self.checker.on_vote_granted(id, message.term, id, durable));
            }
            MessageKind::AppendResponse if !message.reject => {
                let durable_last = node.durable.last_index();
                ensure!(self, self.checker.on_append_ack(id, message.index, durable_last));
            }
            _ => {}
        }
    }

    /// An fsync of `id` completed: the Readys it covers are durable.
    pub(crate) fn fsync(&mut self, id: ReplicaId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.incarnation != incarnation || !node.running() {
            return;
        }
        node.fsync_scheduled = false;
        let queued = node.disk.len() as u64;
        if queued == 0 {
            return;
        }
        let count = if self.rng.chance(self.opts.partial_fsync_per_mille) {
            self.rng.between(1, queued)
        } else {
            queued
        };
        self.stats.fsyncs += 1;
        let node = self.nodes.get_mut(&id).expect("exists");
        let count = usize::try_from(count).expect("at most the queue length");
        let writes: Vec<PendingWrite> = node.disk.drain(..count).collect();
        let last = writes.last().expect("count >= 1").number;
        trace!(self, "fsync {id} Readys {}..={last}", writes[0].number);
        // Each Ready's messages vouch for the state as of that Ready: check them against it
        // (a later Ready of the batch may already truncate what an earlier one acknowledged,
        // which is harmless: only a leader of a higher term truncates).
        let mut outbox = Vec::new();
        for write in writes {
            self.make_durable(id, &write);
            for message in write.messages {
                self.vouch(id, &message);
                outbox.push(message);
            }
        }
        for message in outbox {
            trace!(self, "send {message:?} (persisted)");
            self.send(&message);
        }
        let node = self.nodes.get_mut(&id).expect("exists");
        node.raw_mut().on_persist_ready(last);
        if !node.disk.is_empty() {
            node.fsync_scheduled = true;
            let delay = self.rng.between(self.opts.fsync.0, self.opts.fsync.1);
            self.schedule(delay, Event::Fsync { node: id, incarnation });
        }
    }

    fn make_durable(&mut self, id: ReplicaId, write: &PendingWrite) {
        let node = self.nodes.get_mut(&id).expect("exists");
        let (before, after) = node.make_durable(write);
        ensure!(self, self.checker.on_durable_hard_state(id, before, after));
    }

    /// Crashes `id`: everything not durable is lost (a crash may happen to keep a prefix of
    /// the unsynced writes, as a disk that wrote some pages before the fsync would).
    pub(crate) fn crash(&mut self, id: ReplicaId) {
        let torn = self.rng.chance(self.opts.torn_crash_per_mille);
        let node = self.nodes.get_mut(&id).expect("crashed nodes exist");
        let keep = if torn { self.rng.below(node.disk.len() as u64 + 1) } else { 0 };
        let node = self.nodes.get_mut(&id).expect("exists");
        let writes: Vec<PendingWrite> = node.disk.drain(..).collect();
        let keep = usize::try_from(keep).expect("at most the queue length");
        for write in &writes[..keep] {
            self.make_durable(id, write);
        }
        let node = self.nodes.get_mut(&id).expect("exists");
        node.raw = None;
        node.fsync_scheduled = false;
        node.apply_queue.clear();
        node.apply_scheduled = false;
        node.incarnation += 1;
        node.kv = Kv::default();
        node.reads.clear();
        node.leading = None;
        self.stats.crashes += 1;
        trace!(self, "crash {id} (kept {keep} of {} unsynced writes)", writes.len());
    }

    /// Compacts the log of `id` into a snapshot at its applied index, on the live store and
    /// the durable copy alike.
    pub(crate) fn compact(&mut self, id: ReplicaId) {
        let node = &self.nodes[&id];
        let Some(raw) = &node.raw else { return };
        let index = raw.applied();
        if node.kv_applied != index
            || index <= raw.store().first_index().prev()
            || index <= node.durable.first_index().prev()
            || index > node.durable.last_index()
        {
            return;
        }
        for write in &node.disk {
            let rewrites = write.entries.first().is_some_and(|e| e.index <= index)
                || write.snapshot.as_ref().is_some_and(|s| s.metadata.index <= index);
            if rewrites {
                self.fail_with(
                    Property::ReadyContract,
                    format!(
                        "{id} applied up to {index} but Ready {} rewrites below it",
                        write.number
                    ),
                );
            }
        }
        let (live, durable) = (raw.store().term(index), node.durable.term(index));
        if live != durable {
            self.fail_with(
                Property::CommittedDurable,
                format!("{id} applied {index}: live term {live:?}, durable term {durable:?}"),
            );
        }
        let conf = raw.conf_state();
        let data = node.kv.encode();
        let node = self.nodes.get_mut(&id).expect("exists");
        let live =
            node.raw_mut().store_mut().compact_to_snapshot(index, conf.clone(), data.clone());
        let durable = node.durable.compact_to_snapshot(index, conf, data);
        if let (Err(error), _) | (_, Err(error)) = (live, durable) {
            self.fail_with(
                Property::ReadyContract,
                format!("{id} cannot compact to {index}: {error}"),
            );
        }
        self.stats.compactions += 1;
        trace!(self, "compact {id} to {index}");
    }
}
