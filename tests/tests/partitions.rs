//! Network partitions between real processes, each in its own network namespace
//! ([`tessera_tests::netns`]): three placement members and three stores ticking every 20 ms,
//! the key space in two ranges, and the client in the root namespace.
//!
//! Every scenario runs one sequential writer per key (six keys over both ranges) that
//! reads each acknowledged write back at once (single writer per key: a linearizable read
//! returns exactly that write, or one of the writer's failed writes, whose outcome is
//! unknown and which may take effect at any later time), and ends by checking that every
//! key holds its last acknowledged value, a later attempted one or a failed one.
//!
//! - The store leading a range is cut from every other node: the majority elects another
//!   leader and serves; the isolated store acknowledges no write and serves no stale read
//!   when asked directly; after healing it catches up (follower reads through it return the
//!   final values) and its unacknowledged write is gone.
//! - A store leading a range and the placement leader are cut off together: the majority
//!   of each group goes on; after healing both rejoin.
//! - The placement leader is cut off: another member leads and serves the client (status,
//!   routes, timestamps above all earlier ones, a split), the isolated one hands out no
//!   timestamp below them; after healing it follows the new leader.
//!
//! Skipped (with a message) where network namespaces cannot be made: not root, no
//! `ip netns` or `iptables`; `TESSERA_REQUIRE_NETNS=1` turns the skip into a failure.
//! A failing test keeps its directory (process logs) and prints its path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_client::placement::PlacementRpc;
use tessera_client::{ClientConfig, RawClient};
use tessera_tests::netns::{self, Network};
use tessera_tests::process::{
    Process, log_path, placement_args, spawn_ready, store_args, tessera_bin,
};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::kv::{
    KvCommand, KvRequest, KvResponse, RawGetRequest, RawPutRequest, ReadMode, RequestContext,
};
use tessera_wire::placement::{OperatorStep, PlacementRequest, PlacementResponse, RangeRoute};
use tessera_wire::range::ReplicaRole;
use tessera_wire::rpc::{RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::timestamp::Timestamp;

const CLUSTER_ID: u64 = 41;
/// Every node listens on this port at its own address.
const PORT: u16 = 7000;
const PLACEMENT: [u64; 3] = [101, 102, 103];
const STORES: [u64; 3] = [1, 2, 3];
/// The keys written; the key space is split at [`SPLIT_AT`], so three are in each range.
const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];
const SPLIT_AT: &str = "k3";
const POLL: Duration = Duration::from_millis(50);
/// How long the cluster may take to form (replicas, split, leaders) and to converge.
const SETTLE: Duration = Duration::from_secs(30);
/// How long the majority may take to serve every key again after a cut.
const FAILOVER: Duration = Duration::from_secs(20);
/// Acknowledged writes (started after the event) every key needs to count as served.
const SERVED_WRITES: usize = 3;

fn store_node(store: u64) -> String {
    format!("s{store}")
}

fn placement_node(member: u64) -> String {
    format!("p{member}")
}

/// The test's directory, kept (and named) if the test fails.
struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("tessera-{test}-")).tempdir().unwrap();
        eprintln!("{test}: logs in {}", dir.path().display());
        Self(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("the directory lives as long as the test").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("test failed: logs kept in {}", dir.keep().display());
        }
    }
}

/// Three placement members and three stores in their own namespaces, and a client.
///
/// Fields drop in order: the client and its runtime, the processes, the directory (kept on
/// failure), the network.
struct Cluster {
    client: RawClient,
    runtime: tokio::runtime::Runtime,
    _stores: BTreeMap<u64, Process>,
    _placements: BTreeMap<u64, Process>,
    store_addrs: BTreeMap<u64, SocketAddr>,
    _dir: TestDir,
    network: Network,
}

impl Cluster {
    /// Builds the network and starts the cluster; `None` if namespaces cannot be used here.
    fn start(test: &str) -> Option<Self> {
        if netns::skip_unless_root() {
            return None;
        }
        let started = Instant::now();
        let mut nodes: Vec<String> = PLACEMENT.iter().map(|id| placement_node(*id)).collect();
        nodes.extend(STORES.iter().map(|id| store_node(*id)));
        let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let network = Network::new(&names);
        let dir = TestDir::new(test);
        let certs = dir.path().join("certs");
        let at = |node: &str| SocketAddr::new(IpAddr::V4(network.addr(node)), PORT);
        let members: Vec<(u64, SocketAddr)> =
            PLACEMENT.iter().map(|id| (*id, at(&placement_node(*id)))).collect();
        let store_addrs: BTreeMap<u64, SocketAddr> =
            STORES.iter().map(|id| (*id, at(&store_node(*id)))).collect();
        let spawn = |node: &str, args: Vec<String>| {
            let mut command = network.command(node, tessera_bin());
            command.args(args);
            // Logs worth keeping when a test fails, unless the caller chose a level.
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "info");
            }
            spawn_ready(node, command, &log_path(dir.path(), node))
        };
        let placements: BTreeMap<u64, Process> = std::thread::scope(|scope| {
            let starting: Vec<_> = PLACEMENT
                .iter()
                .map(|id| {
                    let args = placement_args(CLUSTER_ID, *id, &members, dir.path(), &certs);
                    let spawn = &spawn;
                    (*id, scope.spawn(move || spawn(&placement_node(*id), args)))
                })
                .collect();
            starting.into_iter().map(|(id, thread)| (id, thread.join().unwrap())).collect()
        });
        // Store 1 creates the cluster; 2 and 3 join it and get replicas.
        // No splits by load: the tests split where they choose, and a fast machine's writers
        // would otherwise pass the threshold and split a range first.
        let store = |id: u64| {
            let mut args =
                store_args(CLUSTER_ID, id, store_addrs[&id], &members, dir.path(), &certs);
            args.extend(["--load-split-qps".to_owned(), "0".to_owned()]);
            spawn(&store_node(id), args)
        };
        let mut stores = BTreeMap::new();
        stores.insert(1, store(1));
        std::thread::scope(|scope| {
            let starting: Vec<_> =
                [2, 3].into_iter().map(|id| (id, scope.spawn(move || store(id)))).collect();
            for (id, thread) in starting {
                stores.insert(id, thread.join().unwrap());
            }
        });
        eprintln!("{test}: processes ready after {:?}", started.elapsed());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = ClientConfig::new(CLUSTER_ID, &certs);
        config.attempt_timeout = Duration::from_secs(1);
        let client = runtime.block_on(RawClient::connect(&members, config)).unwrap();
        let cluster = Self {
            client,
            runtime,
            _stores: stores,
            _placements: placements,
            store_addrs,
            _dir: dir,
            network,
        };
        cluster.wait_routes("one range with three voters and a leader", SETTLE, |routes| {
            routes.len() == 1 && healthy(&routes[0])
        });
        let range = cluster.route(SPLIT_AT).descriptor.id;
        let steps = vec![OperatorStep::Split { keys: vec![Bytes::from(SPLIT_AT)] }];
        cluster.placement(PlacementRequest::AddOperator { range, steps });
        cluster.wait_routes("two ranges with three voters and a leader each", SETTLE, |routes| {
            routes.len() == 2
                && routes[1].descriptor.start_key.as_ref() == SPLIT_AT.as_bytes()
                && routes.iter().all(healthy)
        });
        eprintln!("{test}: cluster formed after {:?}", started.elapsed());
        Some(cluster)
    }

    fn try_placement(
        &self,
        request: PlacementRequest,
        timeout: Duration,
    ) -> Result<PlacementResponse, RpcError> {
        self.runtime.block_on(self.client.placement().call(request, timeout))
    }

    /// A placement call through the client that must succeed.
    fn placement(&self, request: PlacementRequest) -> PlacementResponse {
        let what = format!("{request:?}");
        self.try_placement(request, Duration::from_secs(10))
            .unwrap_or_else(|error| panic!("{what}: {error}"))
    }

    /// A placement call to member `id` alone (no redirects).
    fn direct_placement(
        &self,
        id: u64,
        request: PlacementRequest,
        timeout: Duration,
    ) -> Result<PlacementResponse, RpcError> {
        let transport = self.client.placement().transport().clone();
        let direct = PlacementRpc::new(transport, vec![NodeId(id)]);
        self.runtime.block_on(direct.call(request, timeout))
    }

    fn try_routes(&self) -> Result<Vec<RangeRoute>, RpcError> {
        let request = PlacementRequest::ScanRanges {
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            limit: 100,
        };
        match self.try_placement(request, Duration::from_secs(5))? {
            PlacementResponse::ScanRanges { routes } => Ok(routes),
            other => panic!("scan ranges: {other:?}"),
        }
    }

    fn route(&self, key: &str) -> RangeRoute {
        match self.placement(PlacementRequest::GetRangeByKey { key: Bytes::from(key.to_owned()) }) {
            PlacementResponse::GetRangeByKey { route } => route,
            other => panic!("route of {key}: {other:?}"),
        }
    }

    /// The placement leader, as the client's placement line finds it.
    fn placement_leader(&self) -> u64 {
        match self.placement(PlacementRequest::ClusterStatus) {
            PlacementResponse::ClusterStatus { status } => status.leader.0,
            other => panic!("cluster status: {other:?}"),
        }
    }

    /// Polls the placement driver's ranges until `done` holds (placement errors on the way
    /// are retried); returns how long it took.
    fn wait_routes(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[RangeRoute]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let seen = self.try_routes();
            if matches!(&seen, Ok(routes) if done(routes)) {
                return started.elapsed();
            }
            if started.elapsed() > deadline {
                panic!("{what}: not within {deadline:?}; last seen: {seen:#?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends `command` for the range `route` to store `store` alone, as a leader request
    /// (or with `mode` for reads), and returns what it answered.
    fn direct_kv(
        &self,
        store: u64,
        route: &RangeRoute,
        command: KvCommand,
        mode: ReadMode,
        timeout: Duration,
    ) -> Result<KvResponse, String> {
        let transport = self.client.placement().transport().clone();
        transport.set_peer(NodeId(store), self.store_addrs[&store]);
        let replica = route.descriptor.replica_on_store(StoreId(store)).map(|replica| replica.id);
        let request = KvRequest {
            context: RequestContext {
                range: route.descriptor.id,
                epoch: route.descriptor.epoch,
                store_id: StoreId(store),
                replica,
                read_mode: mode,
            },
            command,
        };
        let sent = self.runtime.block_on(transport.rpc(
            NodeId(store),
            RpcRequestBody::Kv(request),
            timeout,
        ));
        match sent {
            Ok(response) => match response.result {
                RpcResult::Ok(RpcResponseBody::Kv(answer)) => Ok(answer),
                RpcResult::Ok(other) => Err(format!("unexpected body {other:?}")),
                RpcResult::Err(error) => Err(format!("store refused: {error}")),
            },
            Err(error) => Err(format!("transport: {error}")),
        }
    }

    /// Waits until a member other than `old` answers, asked directly, that it leads the
    /// placement group; returns it.
    fn wait_new_placement_leader(&self, old: u64, deadline: Duration) -> u64 {
        let started = Instant::now();
        loop {
            for id in PLACEMENT.iter().copied().filter(|id| *id != old) {
                let status = self.direct_placement(
                    id,
                    PlacementRequest::ClusterStatus,
                    Duration::from_millis(300),
                );
                if let Ok(PlacementResponse::ClusterStatus { status }) = status
                    && status.leader.0 == id
                {
                    return id;
                }
            }
            assert!(
                started.elapsed() < deadline,
                "no placement member but {old} leads within {deadline:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until member `id`, asked directly, names `leader` as the placement leader.
    fn wait_follows(&self, id: u64, leader: u64, deadline: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let status = self.direct_placement(
                id,
                PlacementRequest::ClusterStatus,
                Duration::from_millis(300),
            );
            let named = match &status {
                Err(RpcError::NotPlacementLeader { leader: Some(named), .. }) => Some(named.0),
                Ok(PlacementResponse::ClusterStatus { status }) => Some(status.leader.0),
                _ => None,
            };
            if named == Some(leader) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < deadline,
                "placement member {id} does not follow {leader} within {deadline:?}: {status:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the client's placement calls are answered by `leader`.
    fn wait_client_sees_leader(&self, leader: u64, deadline: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let status = self.try_placement(PlacementRequest::ClusterStatus, deadline);
            match status {
                Ok(PlacementResponse::ClusterStatus { status }) if status.leader.0 == leader => {
                    return started.elapsed();
                }
                other => assert!(
                    started.elapsed() < deadline,
                    "the client's placement calls do not reach {leader} within {deadline:?}: \
                     {other:?}"
                ),
            }
            std::thread::sleep(POLL);
        }
    }

    /// Timestamps from the placement driver through the client.
    fn timestamps(&self) -> Timestamp {
        match self.placement(PlacementRequest::GetTimestamp { count: 1 }) {
            PlacementResponse::GetTimestamp { first, .. } => first,
            other => panic!("timestamps: {other:?}"),
        }
    }
}

/// Three voters and a leader.
fn healthy(route: &RangeRoute) -> bool {
    voters(route).len() == 3 && route.leader.is_some()
}

fn voters(route: &RangeRoute) -> Vec<u64> {
    route
        .descriptor
        .replicas
        .iter()
        .filter(|replica| replica.role == ReplicaRole::Voter)
        .map(|replica| replica.store_id.0)
        .collect()
}

fn leader_store(route: &RangeRoute) -> Option<u64> {
    route.leader.map(|leader| leader.store_id.0)
}

/// What one key's writer did.
#[derive(Debug, Default)]
struct KeyHistory {
    /// The highest sequence number attempted (written as `{key}-{seq}`).
    attempted: u64,
    /// Acknowledged writes: sequence number, when sent, when acknowledged.
    acked: Vec<(u64, Instant, Instant)>,
    /// Failed writes (outcome unknown): sequence number, when, why.
    failed: Vec<(u64, Instant, String)>,
    /// Read-backs that failed (the cluster was unavailable), not a violation.
    read_errors: usize,
    /// Linearizability violations seen by the read-backs.
    violations: Vec<String>,
}

impl KeyHistory {
    fn last_acked(&self) -> Option<u64> {
        self.acked.last().map(|(seq, _, _)| *seq)
    }

    /// Whether write `seq` failed (its outcome is unknown).
    fn failed_write(&self, seq: u64) -> bool {
        self.failed.iter().any(|(failed, _, _)| *failed == seq)
    }

    /// Acknowledged writes sent at or after `since`.
    fn acked_since(&self, since: Instant) -> usize {
        self.acked.iter().filter(|(_, sent, _)| *sent >= since).count()
    }
}

fn value_seq(key: &str, value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).unwrap();
    let seq = text.strip_prefix(key).and_then(|rest| rest.strip_prefix('-'));
    seq.and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("{key} holds {text:?}, which no writer wrote"))
}

/// One sequential writer per key, each reading its acknowledged writes back.
struct Writers {
    stop: Arc<AtomicBool>,
    histories: BTreeMap<&'static str, Arc<Mutex<KeyHistory>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &Cluster) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut histories = BTreeMap::new();
        let mut tasks = Vec::new();
        for key in KEYS {
            let history = Arc::new(Mutex::new(KeyHistory::default()));
            histories.insert(key, history.clone());
            let client = cluster.client.clone();
            let stop = stop.clone();
            tasks.push(cluster.runtime.spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    history.lock().unwrap().attempted = seq;
                    let sent = Instant::now();
                    if let Err(error) = client.put(key, format!("{key}-{seq}")).await {
                        history.lock().unwrap().failed.push((seq, sent, error.to_string()));
                        continue;
                    }
                    history.lock().unwrap().acked.push((seq, sent, Instant::now()));
                    // The only writer of the key: a linearizable read returns this write.
                    match client.get(key).await {
                        Ok(Some(value)) if value_seq(key, &value) == seq => {}
                        // An earlier write of unknown outcome, applied late: allowed.
                        Ok(Some(value))
                            if history.lock().unwrap().failed_write(value_seq(key, &value)) => {}
                        Ok(other) => history.lock().unwrap().violations.push(format!(
                            "{key}: write {seq} acknowledged, then read back {other:?}"
                        )),
                        Err(_) => history.lock().unwrap().read_errors += 1,
                    }
                }
            }));
        }
        Self { stop, histories, tasks }
    }

    fn history(&self, key: &str) -> std::sync::MutexGuard<'_, KeyHistory> {
        self.histories[key].lock().unwrap()
    }

    /// Waits until every key has [`SERVED_WRITES`] writes sent at or after `since`
    /// acknowledged, each read back; returns how long after `since` that was.
    fn wait_served(&self, what: &str, since: Instant, deadline: Duration) -> Duration {
        loop {
            let behind: Vec<&str> = KEYS
                .iter()
                .copied()
                .filter(|key| self.history(key).acked_since(since) < SERVED_WRITES)
                .collect();
            if behind.is_empty() {
                return since.elapsed();
            }
            if since.elapsed() > deadline {
                for key in &behind {
                    let history = self.history(key);
                    eprintln!(
                        "{key}: {} acknowledged, last failures {:?}",
                        history.acked.len(),
                        history.failed.iter().rev().take(3).collect::<Vec<_>>()
                    );
                }
                panic!("{what}: keys {behind:?} not served within {deadline:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the writers, waits for them, and checks what they saw; returns, per key, what
    /// the final value may be.
    fn finish(self, cluster: &Cluster) -> BTreeMap<&'static str, FinalBounds> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            cluster.runtime.block_on(task).unwrap();
        }
        let mut bounds = BTreeMap::new();
        for (key, history) in &self.histories {
            let history = history.lock().unwrap();
            let slowest = history
                .acked
                .iter()
                .map(|(_, sent, acked)| *acked - *sent)
                .max()
                .unwrap_or_default();
            eprintln!(
                "{key}: {} writes attempted, {} acknowledged (slowest {slowest:?}), {} failed, {} \
                 read-backs failed",
                history.attempted,
                history.acked.len(),
                history.failed.len(),
                history.read_errors
            );
            assert!(history.violations.is_empty(), "{:#?}", history.violations);
            let failed = history.failed.iter().map(|(seq, _, _)| *seq).collect();
            let final_bounds =
                FinalBounds { acked: history.last_acked(), attempted: history.attempted, failed };
            bounds.insert(*key, final_bounds);
        }
        bounds
    }
}

/// What one key's final value may be: its last acknowledged write or a later attempted one
/// (`acked..=attempted`), or a write that failed (outcome unknown: it may land late).
struct FinalBounds {
    acked: Option<u64>,
    attempted: u64,
    failed: Vec<u64>,
}

/// Checks, through the client, that every key holds what [`FinalBounds`] allows.
fn check_final(cluster: &Cluster, bounds: &BTreeMap<&'static str, FinalBounds>) {
    let keys: Vec<Bytes> = KEYS.iter().map(|key| Bytes::from(*key)).collect();
    let got: BTreeMap<Bytes, Bytes> =
        cluster.runtime.block_on(cluster.client.batch_get(keys)).unwrap().into_iter().collect();
    for (key, FinalBounds { acked, attempted, failed }) in bounds {
        let held = got.get(key.as_bytes()).map(|value| value_seq(key, value));
        match (acked, held) {
            (None, None) => {}
            (_, Some(seq)) => assert!(
                (acked.is_none_or(|acked| seq >= acked) && seq <= *attempted)
                    || failed.contains(&seq),
                "{key} holds write {seq}; last acknowledged {acked:?}, last attempted \
                 {attempted}, failed {failed:?}"
            ),
            (Some(acked), None) => panic!("{key}: acknowledged write {acked} lost"),
        }
    }
}

/// Waits until store `store`'s replicas answer follower reads (a read index from the
/// leader, then its own applied state) with exactly `expected` for every key.
fn wait_replica_converged(
    cluster: &Cluster,
    store: u64,
    expected: &BTreeMap<&'static str, Option<Bytes>>,
    deadline: Duration,
) -> Duration {
    let started = Instant::now();
    for (key, value) in expected {
        loop {
            let route = cluster.route(key);
            let command = KvCommand::RawGet(RawGetRequest { key: Bytes::from(*key) });
            let read = cluster.direct_kv(
                store,
                &route,
                command,
                ReadMode::ReplicaRead,
                Duration::from_secs(1),
            );
            match read {
                Ok(KvResponse::RawGet { value: read }) if read == *value => break,
                Ok(KvResponse::RawGet { value: read }) => {
                    panic!(
                        "store {store} read {key} = {read:?} after a read index; expected {value:?}"
                    )
                }
                other => assert!(
                    started.elapsed() < deadline,
                    "store {store} does not serve {key} within {deadline:?}: {other:?}"
                ),
            }
            std::thread::sleep(POLL);
        }
    }
    started.elapsed()
}

/// The final values through the client.
fn final_values(cluster: &Cluster) -> BTreeMap<&'static str, Option<Bytes>> {
    KEYS.iter()
        .map(|key| (*key, cluster.runtime.block_on(cluster.client.get(*key)).unwrap()))
        .collect()
}

/// Probes store `store`, cut off, which led the range of `key`: a write to it is not
/// acknowledged, and a leader read of `key` there returns nothing older than the last write
/// acknowledged (by the majority) before the read.
fn probe_isolated_store(cluster: &Cluster, writers: &Writers, store: u64, key: &'static str) {
    let route = cluster.route(key);
    let probe = format!("{key}/probe");
    let command = KvCommand::RawPut(RawPutRequest {
        key: Bytes::from(probe.clone()),
        value: Bytes::from("written to the minority"),
    });
    let write = cluster.direct_kv(store, &route, command, ReadMode::Leader, Duration::from_secs(3));
    eprintln!("a write sent to the isolated store {store}: {write:?}");
    assert!(
        !matches!(write, Ok(KvResponse::RawPut)),
        "isolated store {store} acknowledged a write of {probe}"
    );
    let before = writers.history(key).last_acked().expect("writes acknowledged by now");
    let command = KvCommand::RawGet(RawGetRequest { key: Bytes::from(key) });
    let read = cluster.direct_kv(store, &route, command, ReadMode::Leader, Duration::from_secs(3));
    eprintln!("a leader read sent to the isolated store {store}: {read:?}");
    if let Ok(KvResponse::RawGet { value }) = &read {
        let seq = value.as_ref().map(|value| value_seq(key, value));
        assert!(
            seq.is_some_and(|seq| seq >= before),
            "isolated store {store} served a stale read of {key}: write {seq:?}, but write \
             {before} was acknowledged before the read"
        );
    }
}

/// After healing: every range has three voters and a leader, the writers are served again,
/// `stores` answer follower reads with the final values, every acknowledged write holds, and
/// the probe write sent to the minority is absent.
fn converge(cluster: &Cluster, writers: Writers, healed: Instant, stores: &[u64], probe: &str) {
    let took = cluster.wait_routes("every range healthy after healing", SETTLE, |routes| {
        routes.len() == 2 && routes.iter().all(healthy)
    });
    eprintln!("ranges healthy {took:?} after healing");
    let took = writers.wait_served("after healing", healed, SETTLE);
    eprintln!("every key served {took:?} after healing");
    let bounds = writers.finish(cluster);
    check_final(cluster, &bounds);
    let expected = final_values(cluster);
    for store in stores {
        let took = wait_replica_converged(cluster, *store, &expected, SETTLE);
        eprintln!("store {store} serves the final values ({took:?})");
    }
    let probe = cluster.runtime.block_on(cluster.client.get(probe.to_owned())).unwrap();
    assert_eq!(probe, None, "a write sent only to a cut-off store surfaced");
}

#[test]
fn an_isolated_range_leader_is_replaced_and_catches_up() {
    let test = "isolated-range-leader";
    let Some(cluster) = Cluster::start(test) else { return };
    let started = Instant::now();
    let writers = Writers::start(&cluster);
    writers.wait_served("before the cut", started, SETTLE);
    let key = "k0";
    let victim = leader_store(&cluster.route(key)).expect("a leader");
    let cut = Instant::now();
    cluster.network.isolate(&store_node(victim));
    eprintln!("store {victim}, leading the range of {key}, cut off from every node");
    let took = writers.wait_served("with the leader cut off", cut, FAILOVER);
    eprintln!("every key served {took:?} after the cut");
    let took = cluster.wait_routes("another leader for the cut-off range", FAILOVER, |routes| {
        routes.iter().all(|route| leader_store(route).is_some_and(|leader| leader != victim))
    });
    eprintln!("the placement driver names other leaders {took:?} later");
    // Writes acknowledged by the new leader, then the isolated one is asked directly.
    writers.wait_served("under the new leader", Instant::now(), FAILOVER);
    probe_isolated_store(&cluster, &writers, victim, key);
    let healed = Instant::now();
    cluster.network.heal();
    eprintln!("healed {:?} after the cut", healed - cut);
    converge(&cluster, writers, healed, &[victim], &format!("{key}/probe"));
    eprintln!("{test}: {:?} after the cluster formed", started.elapsed());
}

#[test]
fn a_minority_of_a_store_and_a_placement_member_rejoins() {
    let test = "minority-partition";
    let Some(cluster) = Cluster::start(test) else { return };
    let started = Instant::now();
    let writers = Writers::start(&cluster);
    writers.wait_served("before the cut", started, SETTLE);
    let key = "k3";
    let victim = leader_store(&cluster.route(key)).expect("a leader");
    let old_leader = cluster.placement_leader();
    let minority = [store_node(victim), placement_node(old_leader)];
    let majority: Vec<String> = cluster
        .network
        .nodes()
        .into_iter()
        .filter(|node| !minority.iter().any(|cut| cut == node))
        .map(str::to_owned)
        .collect();
    let minority: Vec<&str> = minority.iter().map(String::as_str).collect();
    let majority: Vec<&str> = majority.iter().map(String::as_str).collect();
    let cut = Instant::now();
    cluster.network.partition(&minority, &majority);
    eprintln!("{minority:?} (leading {key}'s range and the placement group) cut from {majority:?}");
    let new_leader = cluster.wait_new_placement_leader(old_leader, FAILOVER);
    eprintln!("placement member {new_leader} leads {:?} after the cut", cut.elapsed());
    let took = writers.wait_served("with the minority cut off", cut, FAILOVER);
    eprintln!("every key served {took:?} after the cut");
    let took = cluster.wait_routes("another leader for the cut-off range", FAILOVER, |routes| {
        routes.iter().all(|route| leader_store(route).is_some_and(|leader| leader != victim))
    });
    eprintln!("the placement driver names other leaders {took:?} later");
    writers.wait_served("under the new leaders", Instant::now(), FAILOVER);
    probe_isolated_store(&cluster, &writers, victim, key);
    let healed = Instant::now();
    cluster.network.heal();
    eprintln!("healed {:?} after the cut", healed - cut);
    let leader = cluster.placement_leader();
    let took = cluster.wait_follows(old_leader, leader, SETTLE);
    eprintln!("placement member {old_leader} follows {leader} {took:?} after healing");
    converge(&cluster, writers, healed, &[victim], &format!("{key}/probe"));
    eprintln!("{test}: {:?} after the cluster formed", started.elapsed());
}

#[test]
fn an_isolated_placement_leader_is_replaced_and_rejoins_as_follower() {
    let test = "isolated-placement-leader";
    let Some(cluster) = Cluster::start(test) else { return };
    let started = Instant::now();
    let writers = Writers::start(&cluster);
    writers.wait_served("before the cut", started, SETTLE);
    let old_leader = cluster.placement_leader();
    let before = cluster.timestamps();
    let cut = Instant::now();
    cluster.network.isolate(&placement_node(old_leader));
    eprintln!("placement leader {old_leader} cut off from every node");
    let new_leader = cluster.wait_new_placement_leader(old_leader, FAILOVER);
    eprintln!("placement member {new_leader} leads {:?} after the cut", cut.elapsed());
    // The client's placement line finds the new leader (it can still reach the old one,
    // which answers as leader until it steps down: see the stale-read test below).
    let took = cluster.wait_client_sees_leader(new_leader, FAILOVER);
    eprintln!("the client's placement calls reach {new_leader} {took:?} after that");
    let after = cluster.timestamps();
    assert!(after > before, "timestamp {after:?} handed out after {before:?}");
    let direct = cluster.direct_placement(
        old_leader,
        PlacementRequest::GetTimestamp { count: 1 },
        Duration::from_secs(2),
    );
    eprintln!("a timestamp asked of the cut-off leader: {direct:?}");
    if let Ok(PlacementResponse::GetTimestamp { first, .. }) = direct {
        assert!(first > after, "the cut-off placement leader handed out {first:?} after {after:?}");
    }
    let took = writers.wait_served("with the placement leader cut off", cut, FAILOVER);
    eprintln!("every key served {took:?} after the cut");
    // A split scheduled by the new leader; the writers follow it through routing refreshes.
    let key = "k1";
    let range = cluster.route(key).descriptor.id;
    let steps = vec![OperatorStep::Split { keys: vec![Bytes::from(key)] }];
    cluster.placement(PlacementRequest::AddOperator { range, steps });
    let took = cluster.wait_routes("a split under the new placement leader", SETTLE, |routes| {
        routes.len() == 3
            && routes.iter().any(|route| route.descriptor.start_key.as_ref() == key.as_bytes())
            && routes.iter().all(healthy)
    });
    eprintln!("split at {key} done in {took:?}");
    let split = Instant::now();
    writers.wait_served("after the split", split, FAILOVER);
    let healed = Instant::now();
    cluster.network.heal();
    eprintln!("healed {:?} after the cut", healed - cut);
    let took = cluster.wait_follows(old_leader, new_leader, SETTLE);
    eprintln!("placement member {old_leader} follows {new_leader} {took:?} after healing");
    assert_eq!(cluster.placement_leader(), new_leader);
    let took = writers.wait_served("after healing", healed, SETTLE);
    eprintln!("every key served {took:?} after healing");
    let bounds = writers.finish(&cluster);
    check_final(&cluster, &bounds);
    let last = cluster.timestamps();
    assert!(last > after, "timestamp {last:?} handed out after {after:?}");
    eprintln!("{test}: {:?} after the cluster formed", started.elapsed());
}

/// A placement leader cut off from the group must stop answering reads as leader once its
/// lease is over, and so before another member is elected (`placement/src/node.rs`: "reads
/// are answered by the leader ... while its lease holds"). The test asks the cut-off leader
/// directly, over and over, and fails if it answers as leader after another member has
/// answered as leader.
#[test]
fn a_cut_off_placement_leader_serves_no_stale_reads() {
    let test = "stale-placement-reads";
    let Some(cluster) = Cluster::start(test) else { return };
    let old_leader = cluster.placement_leader();
    let cut = Instant::now();
    cluster.network.isolate(&placement_node(old_leader));
    let ask = |id: u64| {
        cluster.direct_placement(id, PlacementRequest::ClusterStatus, Duration::from_millis(200))
    };
    let leads = |id: u64, answer: &Result<PlacementResponse, RpcError>| matches!(answer, Ok(PlacementResponse::ClusterStatus { status }) if status.leader.0 == id);
    let mut elected: Option<(u64, Duration)> = None;
    loop {
        assert!(cut.elapsed() < FAILOVER, "no new placement leader within {FAILOVER:?}");
        if elected.is_none() {
            elected = PLACEMENT
                .iter()
                .copied()
                .filter(|id| *id != old_leader)
                .find(|id| leads(*id, &ask(*id)))
                .map(|id| (id, cut.elapsed()));
        }
        let old = ask(old_leader);
        if let Some((new_leader, at)) = elected {
            assert!(
                !leads(old_leader, &old),
                "stale read: placement member {old_leader}, cut off {:?} ago, answers \
                 ClusterStatus as leader although {new_leader} answered as leader {at:?} \
                 after the cut",
                cut.elapsed()
            );
            eprintln!(
                "{new_leader} leads {at:?} after the cut; {old_leader} answers {old:?} {:?} \
                 after the cut",
                cut.elapsed()
            );
            return;
        }
    }
}
