//! The caller side of the placement driver: [`PlacementRpc`] sends a [`PlacementRequest`] to
//! the placement leader over the QUIC transport, following redirects and moving on from
//! members that are down, until an overall deadline. Used by stores, the CLI and the client
//! library.
//!
//! # Retry rules
//!
//! - The first attempt goes to the remembered leader (initially the first member).
//! - `NotPlacementLeader { leader: Some(n) }` with `n` a member: retried at `n` at once
//!   (at most one immediate redirect per member in a row, so two nodes pointing at each
//!   other cannot spin; after that the backoff applies). A leader that is not among the
//!   configured members (it joined since) is redirected to the same way once the transport
//!   has an address for it — its own, or else the one the answer carries (the latest such
//!   answer wins, so a member that moved is followed); without either it counts as
//!   `leader: None`.
//! - `NotPlacementLeader { leader: None }`, `ServerBusy`, a server-side `Timeout`, and the
//!   transport's retryable failures (unreachable, unknown or blocked peer, connection lost,
//!   timeout of one attempt): the next member, after a capped exponential backoff
//!   ([`BACKOFF_MIN`] doubling up to [`BACKOFF_MAX`]; a busy server's `retry_after_ms` is
//!   honoured).
//! - Every other error is the request's own (`AlreadyBootstrapped`,
//!   `ClusterNotBootstrapped`, `StoreNotFound`, `InvalidRequest`, …) and is returned at once;
//!   so are a response body that is not a placement answer (`Internal`) and a transport that
//!   is shut down.
//! - Each attempt waits at most `min(remaining, ATTEMPT_TIMEOUT_MAX)`; once the overall
//!   timeout has passed the last error is returned.
//!
//! Transport errors become [`RpcError`]s: a timeout is `Timeout`; a request that was not
//! sent (unreachable, unknown or blocked peer) is `ServerBusy` (retry later, perhaps
//! elsewhere); a broken connection, a protocol violation or a local failure is `Internal`
//! (the effect is unknown).

use std::time::Duration;

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tessera_transport::{Transport, TransportError};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::NodeId;
use tessera_wire::placement::{PlacementRequest, PlacementResponse};
use tessera_wire::rpc::{RpcRequestBody, RpcResponseBody, RpcResult};
use tokio::time::Instant;

/// The first pause before trying another member.
pub const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest pause between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// The longest one attempt may wait for its answer.
pub const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(1);

/// Which member to try first.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// The member tried first by the next call.
    node: NodeId,
    /// Whether `node` answered as the leader, or a member named it the leader.
    known: bool,
}

/// A line to the placement group: its members, and the leader last seen.
///
/// Cheap to share behind an `Arc`; calls may run concurrently.
#[derive(Debug)]
pub struct PlacementRpc {
    transport: Arc<Transport>,
    members: Vec<NodeId>,
    target: Mutex<Option<Target>>,
    /// Members whose last attempt failed at the transport (dead or cut off), with when
    /// they may be tried first again: others are tried before them meanwhile.
    suspects: Mutex<HashMap<NodeId, Instant>>,
    /// Leaders outside `members` whose address came from a member's answer (see
    /// [`learn`](Self::learn)).
    learned: Mutex<HashSet<NodeId>>,
}

/// How long a member that failed at the transport is tried only after the others.
pub const SUSPECT_FOR: Duration = Duration::from_secs(3);

/// What to do after one attempt failed.
enum Next {
    /// Retry at this member at once.
    Redirect(NodeId),
    /// Try the next member after a pause of at least this long.
    Elsewhere(Duration),
    /// Give up with the error.
    Fail,
}

impl PlacementRpc {
    /// A line to the placement group `members` (node ids whose addresses the caller has
    /// registered with [`Transport::set_peer`]). Duplicates are ignored.
    #[must_use]
    pub fn new(transport: Arc<Transport>, members: Vec<NodeId>) -> Self {
        let mut unique = Vec::with_capacity(members.len());
        for member in members {
            if !unique.contains(&member) {
                unique.push(member);
            }
        }
        let target = unique.first().map(|&node| Target { node, known: false });
        Self {
            transport,
            members: unique,
            target: Mutex::new(target),
            suspects: Mutex::new(HashMap::new()),
            learned: Mutex::new(HashSet::new()),
        }
    }

    /// The placement group's members.
    #[must_use]
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The transport the calls go through.
    #[must_use]
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The leader as last seen: the member that last answered, or that a member named as
    /// the leader. `None` before that, and after the remembered leader failed.
    #[must_use]
    pub fn leader_hint(&self) -> Option<NodeId> {
        self.target.lock().filter(|target| target.known).map(|target| target.node)
    }

    /// Sends `request` to the placement leader and returns its answer, retrying as the
    /// [module documentation](self) says until `timeout` has passed.
    ///
    /// # Errors
    /// The request's own error at once; otherwise, once `timeout` has passed, the last
    /// error seen (`Timeout` if no attempt was made).
    pub async fn call(
        &self,
        request: PlacementRequest,
        timeout: Duration,
    ) -> Result<PlacementResponse, RpcError> {
        let deadline = Instant::now() + timeout;
        let Some(mut node) = self.target.lock().map(|target| target.node) else {
            return Err(RpcError::InvalidRequest {
                message: "no placement members configured".to_owned(),
            });
        };
        let mut backoff = BACKOFF_MIN;
        let mut redirects = 0usize;
        let mut last = RpcError::Timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last);
            }
            let attempt = (deadline - now).min(ATTEMPT_TIMEOUT_MAX);
            let body = RpcRequestBody::Placement(request.clone());
            let (error, next) = match self.transport.rpc(node, body, attempt).await {
                Ok(response) => match response.result {
                    RpcResult::Ok(RpcResponseBody::Placement(answer)) => {
                        *self.target.lock() = Some(Target { node, known: true });
                        self.suspects.lock().remove(&node);
                        return Ok(answer);
                    }
                    RpcResult::Ok(other) => {
                        return Err(RpcError::Internal {
                            message: format!(
                                "placement node {node} answered with a non-placement body: \
                                 {other:?}"
                            ),
                        });
                    }
                    RpcResult::Err(error) => {
                        let next = self.after_error(node, &error);
                        if matches!(next, Next::Fail) {
                            // A leader refused the request itself.
                            *self.target.lock() = Some(Target { node, known: true });
                        }
                        (error, next)
                    }
                },
                Err(error) => {
                    self.suspects.lock().insert(node, Instant::now() + SUSPECT_FOR);
                    let next =
                        if retryable(&error) { Next::Elsewhere(BACKOFF_MIN) } else { Next::Fail };
                    (transport_error(error), next)
                }
            };
            tracing::debug!(%node, %error, "placement attempt failed");
            // Two members naming each other must not spin: one immediate redirect per
            // member in a row, then the backoff applies.
            let next = match next {
                Next::Redirect(_) if redirects >= self.members.len() => {
                    Next::Elsewhere(BACKOFF_MIN)
                }
                // A member naming a leader that just failed us knows less than we do.
                Next::Redirect(leader) if self.is_suspect(leader) => Next::Elsewhere(BACKOFF_MIN),
                other => other,
            };
            match next {
                Next::Fail => return Err(error),
                Next::Redirect(leader) => {
                    redirects += 1;
                    *self.target.lock() = Some(Target { node: leader, known: true });
                    node = leader;
                }
                Next::Elsewhere(at_least) => {
                    let pause = backoff.max(at_least);
                    redirects = 0;
                    node = self.move_on(node);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    let wake = (Instant::now() + pause).min(deadline);
                    tokio::time::sleep_until(wake).await;
                }
            }
            last = error;
        }
    }

    /// What to do after `node` answered `error`.
    fn after_error(&self, node: NodeId, error: &RpcError) -> Next {
        match error {
            RpcError::NotPlacementLeader { leader: Some(leader), address } if *leader != node => {
                // `learn` registers an address: kept out of the match guard.
                if self.members.contains(leader) || self.learn(*leader, address.as_deref()) {
                    Next::Redirect(*leader)
                } else {
                    Next::Elsewhere(BACKOFF_MIN)
                }
            }
            RpcError::NotPlacementLeader { .. } | RpcError::Timeout => Next::Elsewhere(BACKOFF_MIN),
            RpcError::ServerBusy { retry_after_ms, .. } => {
                Next::Elsewhere(Duration::from_millis((*retry_after_ms).into()).min(BACKOFF_MAX))
            }
            _ => Next::Fail,
        }
    }

    /// Whether `leader`, a member not configured here, can be tried. An address this node's
    /// transport got elsewhere (its own configuration) wins; otherwise `address` (`ip:port`)
    /// is registered, and replaces one learned before — a member that moved is dialled at
    /// its new address, and no longer suspect for having failed at the old one.
    fn learn(&self, leader: NodeId, address: Option<&str>) -> bool {
        let mut learned = self.learned.lock();
        let known = self.transport.peer_addr(leader);
        if known.is_some() && !learned.contains(&leader) {
            return true;
        }
        let Some(addr) = address.and_then(|address| address.parse().ok()) else {
            return learned.contains(&leader);
        };
        if known != Some(addr) {
            tracing::debug!(%leader, %addr, "placement leader not configured here: learned its address");
            self.transport.set_peer(leader, addr);
            self.suspects.lock().remove(&leader);
        }
        learned.insert(leader);
        true
    }

    /// Whether `node` failed at the transport less than [`SUSPECT_FOR`] ago.
    fn is_suspect(&self, node: NodeId) -> bool {
        let now = Instant::now();
        let mut suspects = self.suspects.lock();
        suspects.retain(|_, until| *until > now);
        suspects.contains_key(&node)
    }

    /// Forgets `failed` as the leader and returns the member to try next: the first after
    /// it, in member order, that is not suspect (or simply the next one if all are).
    fn move_on(&self, failed: NodeId) -> NodeId {
        let position = self.members.iter().position(|&member| member == failed).unwrap_or(0);
        let count = self.members.len();
        if count == 0 {
            return failed;
        }
        let in_order = (1..=count).map(|offset| self.members[(position + offset) % count]);
        let next = in_order
            .clone()
            .find(|member| *member != failed && !self.is_suspect(*member))
            .or_else(|| in_order.into_iter().next())
            .unwrap_or(failed);
        let mut target = self.target.lock();
        if target.is_none_or(|target| target.node == failed) {
            *target = Some(Target { node: next, known: false });
        }
        next
    }
}

/// Whether another member may succeed where this transport error happened.
fn retryable(error: &TransportError) -> bool {
    matches!(
        error,
        TransportError::Timeout { .. }
            | TransportError::Unreachable { .. }
            | TransportError::UnknownPeer { .. }
            | TransportError::Blocked { .. }
            | TransportError::ConnectionLost { .. }
            | TransportError::Protocol { .. }
    )
}

/// The [`RpcError`] a transport error stands for.
fn transport_error(error: TransportError) -> RpcError {
    match error {
        TransportError::Timeout { .. } => RpcError::Timeout,
        TransportError::Unreachable { .. }
        | TransportError::UnknownPeer { .. }
        | TransportError::Blocked { .. } => {
            RpcError::ServerBusy { reason: error.to_string(), retry_after_ms: 0 }
        }
        other => RpcError::Internal { message: other.to_string() },
    }
}
