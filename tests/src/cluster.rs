//! A cluster of real `tessera` processes on loopback for fault tests: placement members and
//! stores in one temporary directory, each process's stderr in `{dir}/{name}.log` (a
//! restarted process gets `{name}.{n}.log`), and the placement driver's API for the faults
//! and the waits (splits, leader transfers, who leads what, is everything healthy).
//!
//! The cluster owns a multi-threaded tokio runtime: clients made by [`Cluster::client`] live
//! on it, and workloads are spawned on [`Cluster::runtime`]. Its methods block the calling
//! thread (the test's main thread drives the faults) and wait with deadlines, polling.
//!
//! When the test panics, dropping the cluster kills every process and keeps the directory
//! (its path is printed) so that the logs can be read.
//!
//! The processes run the binary named by `TESSERA_BIN` if set, else this build's
//! ([`tessera_bin`]). `TESSERA_KEEP_DIR=1` keeps the directory of a passing test too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;
use tessera_client::placement::PlacementRpc;
use tessera_client::{ClientConfig, RawClient};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::placement::{
    ClusterStatus, OperatorStep, PlacementRequest, PlacementResponse, RangeRoute, StoreState,
};
use tessera_wire::range::ReplicaRole;

use crate::process::{
    Process, free_port, log_path, placement_args, spawn_ready, store_args, tessera_bin,
};

/// The node id of placement member `n` (from 1): 100 + n, distinct from store ids.
pub const PLACEMENT_ID_BASE: u64 = 100;
/// How often waits poll.
pub const POLL: Duration = Duration::from_millis(50);
/// How long one placement call of the test may take, retries included.
const CALL: Duration = Duration::from_secs(10);
/// How long an operator asked for is given before it is asked for again (it may have
/// failed: the range changed under it, or the placement leader that held it died).
const REISSUE: Duration = Duration::from_secs(4);

/// The `tessera` binary the cluster runs: `TESSERA_BIN`, else this build's.
#[must_use]
pub fn binary() -> PathBuf {
    std::env::var_os("TESSERA_BIN").map_or_else(tessera_bin, PathBuf::from)
}

/// A `tessera` command of [`binary`] with `args`.
fn command(args: &[String]) -> Command {
    let mut command = Command::new(binary());
    command.args(args);
    command
}

/// A running cluster (see the [module documentation](self)).
#[derive(Debug)]
pub struct Cluster {
    cluster_id: u64,
    /// `None` once kept (in `drop`).
    dir: Option<TempDir>,
    path: PathBuf,
    certs: PathBuf,
    members: Vec<(u64, SocketAddr)>,
    placement: BTreeMap<u64, Option<Process>>,
    stores: BTreeMap<u64, (SocketAddr, Option<Process>)>,
    /// How many times each process was started, for its log's name.
    starts: BTreeMap<String, u32>,
    admin: Option<RawClient>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Cluster {
    /// Starts `placement_members` placement members (node ids 101, 102, …) and then
    /// `stores` stores (ids 1, 2, …; store 1 bootstraps the cluster), each ready, and
    /// connects the cluster's own client. Does not wait for replication: see
    /// [`Cluster::wait_ranges`].
    ///
    /// # Panics
    /// A process does not become ready, or the client cannot connect.
    #[must_use]
    pub fn start(cluster_id: u64, placement_members: u64, stores: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tessera-cluster-")
            .tempdir()
            .expect("creating the test's temporary directory");
        let path = dir.path().to_path_buf();
        let certs = path.join("certs");
        let members: Vec<(u64, SocketAddr)> =
            (1..=placement_members).map(|n| (PLACEMENT_ID_BASE + n, free_port())).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut cluster = Self {
            cluster_id,
            dir: Some(dir),
            path,
            certs,
            members: members.clone(),
            placement: BTreeMap::new(),
            stores: BTreeMap::new(),
            starts: BTreeMap::new(),
            admin: None,
            runtime: Some(runtime),
        };
        eprintln!("cluster {cluster_id} in {}", cluster.path.display());
        for (id, _) in &members {
            cluster.placement.insert(*id, None);
            cluster.restart_placement(*id);
        }
        for id in 1..=stores {
            cluster.stores.insert(id, (free_port(), None));
            cluster.restart_store(id);
        }
        let config = ClientConfig::new(cluster_id, &cluster.certs);
        let admin = cluster
            .block_on(RawClient::connect(&members, config))
            .expect("the cluster's own client connects");
        cluster.admin = Some(admin);
        cluster
    }

    /// The development TLS directory the cluster's nodes share.
    #[must_use]
    pub fn certs(&self) -> &Path {
        &self.certs
    }

    /// The cluster id.
    #[must_use]
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The test's directory (logs, data, certificates).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The placement members `(node id, address)`.
    #[must_use]
    pub fn members(&self) -> &[(u64, SocketAddr)] {
        &self.members
    }

    /// The store ids.
    #[must_use]
    pub fn store_ids(&self) -> Vec<u64> {
        self.stores.keys().copied().collect()
    }

    /// The runtime the clients live on.
    ///
    /// # Panics
    /// Never: the runtime lives as long as the cluster.
    #[must_use]
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the cluster")
    }

    /// Runs `future` to completion on the cluster's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// The cluster's own client (for placement calls).
    ///
    /// # Panics
    /// Never: it is connected by [`Cluster::start`].
    #[must_use]
    pub fn admin(&self) -> &RawClient {
        self.admin.as_ref().expect("the admin client is connected at start")
    }

    /// A new client on the cluster's runtime, with the given deadlines per call and per
    /// attempt.
    ///
    /// # Panics
    /// It cannot connect (see [`RawClient::connect`]).
    #[must_use]
    pub fn client(&self, request_timeout: Duration, attempt_timeout: Duration) -> RawClient {
        let mut config = ClientConfig::new(self.cluster_id, &self.certs);
        config.request_timeout = request_timeout;
        config.attempt_timeout = attempt_timeout;
        self.block_on(RawClient::connect(&self.members, config))
            .unwrap_or_else(|error| panic!("a client of cluster {}: {error}", self.cluster_id))
    }

    /// Starts (or starts again, on the same data directory and address) store `id`, and
    /// waits for it to be ready.
    ///
    /// # Panics
    /// The store is unknown or running, or it does not become ready.
    pub fn restart_store(&mut self, id: u64) {
        let (listen, running) = self.stores.get(&id).expect("a store of the cluster");
        assert!(running.is_none(), "store {id} is running");
        let args = store_args(self.cluster_id, id, *listen, &self.members, &self.path, &self.certs);
        let name = format!("store-{id}");
        let process = spawn_ready(&name, command(&args), &self.next_log(&name));
        self.stores.get_mut(&id).expect("a store of the cluster").1 = Some(process);
    }

    /// Starts (or starts again, on the same data directory) placement member `id`.
    ///
    /// # Panics
    /// The member is unknown or running, or it does not become ready.
    pub fn restart_placement(&mut self, id: u64) {
        let running = self.placement.get(&id).expect("a placement member of the cluster");
        assert!(running.is_none(), "placement member {id} is running");
        let args = placement_args(self.cluster_id, id, &self.members, &self.path, &self.certs);
        let name = format!("placement-{id}");
        let process = spawn_ready(&name, command(&args), &self.next_log(&name));
        *self.placement.get_mut(&id).expect("a placement member of the cluster") = Some(process);
    }

    /// Kills store `id` with SIGKILL.
    ///
    /// # Panics
    /// The store is not running.
    pub fn kill_store(&mut self, id: u64) {
        let process = self.stores.get_mut(&id).and_then(|(_, process)| process.take());
        process.expect("the store is running").kill();
    }

    /// Kills placement member `id` with SIGKILL.
    ///
    /// # Panics
    /// The member is not running.
    pub fn kill_placement(&mut self, id: u64) {
        let process = self.placement.get_mut(&id).and_then(Option::take);
        process.expect("the placement member is running").kill();
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, …) to store `id`.
    ///
    /// # Panics
    /// The store is not running, or `kill` fails.
    pub fn signal_store(&self, id: u64, signal: &str) {
        let process = self.stores.get(&id).and_then(|(_, process)| process.as_ref());
        process.expect("the store is running").signal(signal);
    }

    /// A placement call, retried across the members for up to 10 s.
    ///
    /// # Errors
    /// The placement driver's error (the last one seen if it never answered).
    pub fn call(&self, request: PlacementRequest) -> Result<PlacementResponse, RpcError> {
        self.block_on(self.admin().placement().call(request, CALL))
    }

    /// The cluster's status as the placement leader sees it.
    ///
    /// # Panics
    /// The placement driver does not answer.
    #[must_use]
    pub fn status(&self) -> ClusterStatus {
        match self.call(PlacementRequest::ClusterStatus) {
            Ok(PlacementResponse::ClusterStatus { status }) => status,
            other => panic!("cluster status: {other:?}"),
        }
    }

    /// The placement leader's node id.
    ///
    /// # Panics
    /// The placement driver does not answer.
    #[must_use]
    pub fn placement_leader(&self) -> u64 {
        self.status().leader.0
    }

    /// Every range's route, in key order.
    ///
    /// # Panics
    /// The placement driver does not answer.
    #[must_use]
    pub fn routes(&self) -> Vec<RangeRoute> {
        let request = PlacementRequest::ScanRanges {
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            limit: 1_000,
        };
        match self.call(request) {
            Ok(PlacementResponse::ScanRanges { routes }) => routes,
            other => panic!("scan ranges: {other:?}"),
        }
    }

    /// The route of the range holding `key`.
    ///
    /// # Panics
    /// The placement driver does not answer.
    #[must_use]
    pub fn route(&self, key: &[u8]) -> RangeRoute {
        let request = PlacementRequest::GetRangeByKey { key: Bytes::copy_from_slice(key) };
        match self.call(request) {
            Ok(PlacementResponse::GetRangeByKey { route }) => route,
            other => panic!("route of {key:?}: {other:?}"),
        }
    }

    /// Polls the ranges until `done` holds for them; returns how long it took.
    ///
    /// # Panics
    /// Not within `deadline` (the ranges are printed).
    pub fn wait_ranges(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[RangeRoute]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let routes = self.routes();
            if done(&routes) {
                return started.elapsed();
            }
            if started.elapsed() > deadline {
                for route in &routes {
                    eprintln!("{route:?}");
                }
                panic!("{what}: not within {deadline:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until there are `ranges` ranges, each with `voters` voters (and no other
    /// replica) and a known leader.
    ///
    /// # Panics
    /// Not within `deadline`.
    pub fn wait_replicated(&self, ranges: usize, voters: usize, deadline: Duration) -> Duration {
        self.wait_ranges(
            &format!("{ranges} ranges of {voters} voters with leaders"),
            deadline,
            |routes| {
                routes.len() == ranges
                    && routes.iter().all(|route| {
                        route.leader.is_some()
                            && voters_of(route).len() == voters
                            && route.descriptor.replicas.len() == voters
                    })
            },
        )
    }

    /// Splits the range holding `at` there through the placement driver and waits until the
    /// placement driver knows a range starting at `at`; the operator is asked for again if
    /// it does not take effect within a few seconds. Returns how long it took.
    ///
    /// # Panics
    /// Not within `deadline`.
    pub fn split(&self, at: &[u8], deadline: Duration) -> Duration {
        let key = Bytes::copy_from_slice(at);
        self.operate(&format!("split at {key:?}"), at, deadline, |route| {
            if route.descriptor.start_key == key {
                return None;
            }
            Some(vec![OperatorStep::Split { keys: vec![key.clone()] }])
        })
    }

    /// Moves the leadership of the range holding `key` to store `to` through the placement
    /// driver and waits until the placement driver sees it there (asking again if needed).
    /// Returns how long it took.
    ///
    /// # Panics
    /// Not within `deadline`.
    pub fn transfer_leader(&self, key: &[u8], to: u64, deadline: Duration) -> Duration {
        self.operate(&format!("leader of {key:?} to store {to}"), key, deadline, |route| {
            if route.leader.is_some_and(|leader| leader.store_id == StoreId(to)) {
                return None;
            }
            Some(vec![OperatorStep::TransferLeader { to_store: StoreId(to) }])
        })
    }

    /// Asks for the operator `steps` gives for the range holding `key` until `steps`
    /// returns `None` (done).
    fn operate(
        &self,
        what: &str,
        key: &[u8],
        deadline: Duration,
        steps: impl Fn(&RangeRoute) -> Option<Vec<OperatorStep>>,
    ) -> Duration {
        let started = Instant::now();
        let mut asked: Option<Instant> = None;
        loop {
            let route = self.route(key);
            let Some(wanted) = steps(&route) else {
                return started.elapsed();
            };
            assert!(started.elapsed() < deadline, "{what}: not within {deadline:?}: {route:?}");
            if asked.is_none_or(|at| at.elapsed() > REISSUE) {
                let request =
                    PlacementRequest::AddOperator { range: route.descriptor.id, steps: wanted };
                match self.call(request) {
                    Ok(PlacementResponse::AddOperator { .. }) => asked = Some(Instant::now()),
                    // Refused (another operator runs, the range just changed): ask again.
                    other => eprintln!("{what}: operator refused: {other:?}"),
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// How many ranges each store leads, as the placement driver last heard (stores leading
    /// none included).
    #[must_use]
    pub fn leader_counts(&self) -> BTreeMap<u64, usize> {
        let mut counts: BTreeMap<u64, usize> = self.stores.keys().map(|id| (*id, 0)).collect();
        for route in self.routes() {
            if let Some(leader) = route.leader {
                *counts.entry(leader.store_id.0).or_default() += 1;
            }
        }
        counts
    }

    /// The store leading the most ranges (the smallest id among equals).
    ///
    /// # Panics
    /// The cluster has no store.
    #[must_use]
    pub fn store_with_most_leaders(&self) -> u64 {
        let counts = self.leader_counts();
        let most = counts.values().copied().max().expect("the cluster has stores");
        counts
            .into_iter()
            .find(|(_, count)| *count == most)
            .map(|(store, _)| store)
            .expect("a store with the most leaders")
    }

    /// Waits until every process is running, every running placement member answers (as
    /// the leader, or naming one), the placement leader sees every store `Up`, and there
    /// are `ranges` ranges of `voters` voters, each with a leader. Returns how long it took.
    ///
    /// # Panics
    /// A process is not running, or the rest does not hold within `deadline`.
    pub fn wait_healthy(&mut self, ranges: usize, voters: usize, deadline: Duration) -> Duration {
        let started = Instant::now();
        for (id, process) in &mut self.placement {
            let process = process.as_mut().unwrap_or_else(|| panic!("placement {id} is down"));
            assert!(!process.has_exited(), "placement member {id} exited");
        }
        for (id, (_, process)) in &mut self.stores {
            let process = process.as_mut().unwrap_or_else(|| panic!("store {id} is down"));
            assert!(!process.has_exited(), "store {id} exited");
        }
        let members: Vec<u64> = self.placement.keys().copied().collect();
        for member in members {
            loop {
                if self.member_answers(member) {
                    break;
                }
                assert!(
                    started.elapsed() < deadline,
                    "placement member {member} does not answer within {deadline:?}"
                );
                std::thread::sleep(POLL);
            }
        }
        loop {
            let status = self.status();
            let up = status.stores.iter().all(|store| store.state == StoreState::Up);
            if up && status.stores.len() == self.stores.len() {
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "stores not all up within {deadline:?}: {:?}",
                status.stores
            );
            std::thread::sleep(POLL);
        }
        let left = deadline.saturating_sub(started.elapsed());
        self.wait_replicated(ranges, voters, left);
        started.elapsed()
    }

    /// Whether placement member `id` answers by itself: it leads, or it names the leader.
    fn member_answers(&self, id: u64) -> bool {
        let direct =
            PlacementRpc::new(self.admin().placement().transport().clone(), vec![NodeId(id)]);
        let answer =
            self.block_on(direct.call(PlacementRequest::ClusterStatus, Duration::from_millis(500)));
        match answer {
            // From `id` as the leader, or from the leader `id` named (a redirect).
            Ok(PlacementResponse::ClusterStatus { .. }) => true,
            Err(RpcError::NotPlacementLeader { leader, .. }) => leader.is_some(),
            _ => false,
        }
    }

    /// The log file for the next start of process `name`.
    fn next_log(&mut self, name: &str) -> PathBuf {
        let starts = self.starts.entry(name.to_owned()).or_default();
        *starts += 1;
        if *starts == 1 {
            log_path(&self.path, name)
        } else {
            log_path(&self.path, &format!("{name}.{starts}"))
        }
    }

    /// Keeps the directory after the cluster is dropped, and returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The clients first, while their runtime still runs; then the processes.
        self.admin = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        for (_, process) in std::mem::take(&mut self.placement) {
            drop(process);
        }
        for (_, (_, process)) in std::mem::take(&mut self.stores) {
            drop(process);
        }
        if std::env::var_os("TESSERA_KEEP_DIR").is_some() && self.dir.is_some() {
            let path = self.keep();
            eprintln!("TESSERA_KEEP_DIR: the directory is kept in {}", path.display());
        } else if std::thread::panicking() && self.dir.is_some() {
            let path = self.keep();
            eprintln!("test failed: its directory (logs, data) is kept in {}", path.display());
        }
    }
}

/// The stores holding a voter of `route`'s range.
#[must_use]
pub fn voters_of(route: &RangeRoute) -> Vec<u64> {
    route
        .descriptor
        .replicas
        .iter()
        .filter(|replica| replica.role == ReplicaRole::Voter)
        .map(|replica| replica.store_id.0)
        .collect()
}
