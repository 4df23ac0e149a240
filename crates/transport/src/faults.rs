//! Fault hooks for tests and demos: added delay, loss and blocking per destination node.
//!
//! Off unless configured: with no rule set, the transport checks one atomic flag per batch.
//! Rules change at runtime through [`Faults`] ([`crate::Transport::faults`]). They act on
//! this node's *outgoing* traffic only; block both sides to partition a pair.
//!
//! - `delay`: every Raft batch and RPC request to the node waits this long before it is
//!   written. Only that destination's sender waits; other destinations are unaffected.
//! - `loss`: each Raft frame (a batch, or one coalesced heartbeat message), RPC request and
//!   snapshot chunk to the node is dropped with this probability, drawn from a seeded
//!   xorshift generator. A lost RPC request is never answered (the caller's deadline gives
//!   `Timeout`); a lost snapshot chunk breaks the transfer (`ConnectionLost`).
//! - `blocked`: everything to the node is dropped; RPCs and snapshots fail at once with
//!   [`crate::TransportError::Blocked`], and no connection is dialled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tessera_wire::ids::NodeId;

/// The faults applied to traffic towards one node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRule {
    /// Added before each Raft batch and RPC request is written.
    pub delay: Duration,
    /// Probability in `[0, 1]` that a Raft frame is dropped.
    pub loss: f64,
    /// Drop everything; RPCs and snapshots fail fast.
    pub blocked: bool,
}

impl FaultRule {
    /// Whether the rule does nothing.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        self.delay.is_zero() && self.loss <= 0.0 && !self.blocked
    }
}

/// Initial fault rules and the seed of the loss generator. The default: no faults.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Seed of the loss generator (0 is replaced by a fixed non-zero constant).
    pub seed: u64,
    /// Rules per destination node.
    pub rules: HashMap<NodeId, FaultRule>,
}

/// A tiny xorshift64* generator: deterministic for a seed, no dependency.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (0 is mapped to a fixed non-zero state).
    pub(crate) fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform float in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // 53 random bits: exactly representable.
        #[allow(clippy::cast_precision_loss)]
        let value = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        value
    }
}

/// The live fault rules of one transport, changeable at runtime.
#[derive(Debug)]
pub struct Faults {
    /// Whether any rule is set: the fast path checks only this.
    any: AtomicBool,
    state: Mutex<FaultState>,
}

#[derive(Debug)]
struct FaultState {
    rules: HashMap<NodeId, FaultRule>,
    rng: XorShift,
}

impl Faults {
    /// Faults starting from `config`.
    #[must_use]
    pub fn new(config: &FaultConfig) -> Self {
        let rules: HashMap<NodeId, FaultRule> = config
            .rules
            .iter()
            .filter(|(_, rule)| !rule.is_noop())
            .map(|(k, v)| (*k, *v))
            .collect();
        Self {
            any: AtomicBool::new(!rules.is_empty()),
            state: Mutex::new(FaultState { rules, rng: XorShift::new(config.seed) }),
        }
    }

    /// Sets the rule for traffic to `node` (a no-op rule clears it).
    pub fn set(&self, node: NodeId, rule: FaultRule) {
        let mut state = self.state.lock();
        if rule.is_noop() {
            state.rules.remove(&node);
        } else {
            state.rules.insert(node, rule);
        }
        self.any.store(!state.rules.is_empty(), Ordering::Release);
    }

    /// Blocks (or unblocks) all traffic to `node`, keeping its other settings.
    pub fn set_blocked(&self, node: NodeId, blocked: bool) {
        let rule = FaultRule { blocked, ..self.rule(node) };
        self.set(node, rule);
    }

    /// Sets the added delay towards `node`, keeping its other settings.
    pub fn set_delay(&self, node: NodeId, delay: Duration) {
        let rule = FaultRule { delay, ..self.rule(node) };
        self.set(node, rule);
    }

    /// Sets the Raft frame loss probability towards `node`, keeping its other settings.
    pub fn set_loss(&self, node: NodeId, loss: f64) {
        let rule = FaultRule { loss, ..self.rule(node) };
        self.set(node, rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.state.lock().rules.clear();
        self.any.store(false, Ordering::Release);
    }

    /// The rule in force for `node` (the no-op rule if none).
    #[must_use]
    pub fn rule(&self, node: NodeId) -> FaultRule {
        if !self.any.load(Ordering::Acquire) {
            return FaultRule::default();
        }
        self.state.lock().rules.get(&node).copied().unwrap_or_default()
    }

    /// Whether traffic to `node` is blocked.
    #[must_use]
    pub fn blocked(&self, node: NodeId) -> bool {
        self.rule(node).blocked
    }

    /// Draws whether one Raft frame to `node` is lost.
    pub(crate) fn lose_frame(&self, node: NodeId) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut state = self.state.lock();
        let loss = state.rules.get(&node).map_or(0.0, |rule| rule.loss);
        loss > 0.0 && state.rng.next_f64() < loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rules_means_no_faults() {
        let faults = Faults::new(&FaultConfig::default());
        assert!(!faults.blocked(NodeId(2)));
        assert!(!faults.lose_frame(NodeId(2)));
        assert_eq!(faults.rule(NodeId(2)), FaultRule::default());
    }

    #[test]
    fn loss_rate_is_roughly_honoured_and_seeded() {
        let faults = Faults::new(&FaultConfig { seed: 7, rules: HashMap::new() });
        faults.set_loss(NodeId(2), 0.25);
        let lost = (0..10_000).filter(|_| faults.lose_frame(NodeId(2))).count();
        assert!((2_000..3_000).contains(&lost), "lost {lost}");
        assert!(!faults.lose_frame(NodeId(3)));
        faults.set_blocked(NodeId(2), true);
        assert!(faults.blocked(NodeId(2)));
        assert!((faults.rule(NodeId(2)).loss - 0.25).abs() < f64::EPSILON);
        faults.clear();
        assert!(!faults.blocked(NodeId(2)));
    }
}
