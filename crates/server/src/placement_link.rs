//! The store's line to the placement driver in the product binary: [`PlacementLink`] is the
//! store's [`PlacementClient`] over a [`PlacementRpc`], and [`spawn_store_directory`] keeps
//! the transport's addresses of the other stores up to date from the placement driver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tessera_client::placement::PlacementRpc;
use tessera_store::PlacementClient;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::placement::{PlacementRequest, PlacementResponse};
use tokio::runtime::Handle;
use tokio::task::{AbortHandle, JoinSet};

/// How long one store request to the placement driver may take, retries included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests in flight at most; beyond, new ones are dropped.
pub const IN_FLIGHT_MAX: usize = 256;
/// How often the store directory is refreshed.
pub const DIRECTORY_INTERVAL: Duration = Duration::from_secs(1);

/// Answers waiting for the store's thread.
type Answers = Arc<Mutex<Vec<(u64, Result<PlacementResponse, RpcError>)>>>;

/// The store's [`PlacementClient`] over a [`PlacementRpc`].
///
/// [`send`](PlacementClient::send) spawns the call on the runtime and returns at once; at
/// most [`IN_FLIGHT_MAX`] calls run at once and a request beyond that is dropped (counted in
/// `tessera_store_placement_dropped_total`: every store request is periodic or retried).
/// Each call may take [`REQUEST_TIMEOUT`]; its answer waits for
/// [`take_answers`](PlacementClient::take_answers). Dropping the link aborts the calls in
/// flight.
#[derive(Debug)]
pub struct PlacementLink {
    rpc: Arc<PlacementRpc>,
    runtime: Handle,
    answers: Answers,
    calls: JoinSet<()>,
}

impl PlacementLink {
    /// A link making its calls through `rpc` on `runtime`.
    #[must_use]
    pub fn new(rpc: Arc<PlacementRpc>, runtime: Handle) -> Self {
        Self { rpc, runtime, answers: Arc::default(), calls: JoinSet::new() }
    }

    /// Forgets the calls that finished.
    fn reap(&mut self) {
        while self.calls.try_join_next().is_some() {}
    }
}

impl PlacementClient for PlacementLink {
    fn send(&mut self, token: u64, request: PlacementRequest) {
        self.reap();
        if self.calls.len() >= IN_FLIGHT_MAX {
            tracing::debug!(token, ?request, "placement request dropped: too many in flight");
            metrics::counter!("tessera_store_placement_dropped_total").increment(1);
            return;
        }
        let rpc = self.rpc.clone();
        let answers = self.answers.clone();
        self.calls.spawn_on(
            async move {
                let answer = rpc.call(request, REQUEST_TIMEOUT).await;
                if let Err(error) = &answer {
                    tracing::debug!(token, %error, "placement request failed");
                }
                answers.lock().push((token, answer));
            },
            &self.runtime,
        );
    }

    fn take_answers(&mut self) -> Vec<(u64, Result<PlacementResponse, RpcError>)> {
        self.reap();
        std::mem::take(&mut *self.answers.lock())
    }
}

/// Starts the task that keeps the addresses of the other stores known to the transport:
/// at once and then every [`DIRECTORY_INTERVAL`] it asks the placement driver for every
/// store (tombstones left out) and registers the address of each store other than `this`
/// (and other than the placement members) whose address parses as a socket address with a
/// specified IP, under the store's node id. The store's network reaches store `n` at node
/// `n` (`tessera_store::transport_net::node_of`), so stores started with `--placement` need
/// no `--peer`. Abort the returned handle to stop it.
pub fn spawn_store_directory(
    rpc: Arc<PlacementRpc>,
    this: StoreId,
    runtime: &Handle,
) -> AbortHandle {
    runtime
        .spawn(async move {
            let mut known: HashMap<NodeId, SocketAddr> = HashMap::new();
            let mut interval = tokio::time::interval(DIRECTORY_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let request = PlacementRequest::GetAllStores { exclude_tombstones: true };
                let stores = match rpc.call(request, DIRECTORY_INTERVAL).await {
                    Ok(PlacementResponse::GetAllStores { stores }) => stores,
                    Ok(other) => {
                        tracing::warn!(?other, "unexpected answer to GetAllStores");
                        continue;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "store directory not refreshed");
                        continue;
                    }
                };
                for store in stores {
                    if store.id == this || rpc.members().contains(&store.node_id) {
                        continue;
                    }
                    let addr = match store.address.parse::<SocketAddr>() {
                        Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => addr,
                        _ => {
                            tracing::debug!(
                                store = %store.id,
                                address = %store.address,
                                "store address not usable"
                            );
                            continue;
                        }
                    };
                    if known.insert(store.node_id, addr) != Some(addr) {
                        tracing::info!(store = %store.id, node = %store.node_id, %addr, "store address learned");
                        rpc.transport().set_peer(store.node_id, addr);
                    }
                }
            }
        })
        .abort_handle()
}
