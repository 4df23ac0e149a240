//! `tessera-bench compare`: the same workloads against a 3-member etcd cluster and a
//! 3-store Tessera cluster, started here on loopback with the same durability (fsync on),
//! one after the other on the same machine, and the ratios.
//!
//! For each workload and client count: both systems start empty; each is loaded with the
//! same records and then runs the workload (warm-up, then the measured part); with
//! `rounds > 1` the runs alternate (Tessera, etcd, Tessera, etcd …) and the best round of
//! each is kept. CPU seconds of every server process over the measured run are reported
//! beside the throughput (everything shares the same cores).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tessera_client::{ClientConfig, RawClient};

use crate::cpu::pid_cpu_time;
use crate::driver::Driver;
use crate::etcd::{EtcdCluster, EtcdDriver, ensure_installed};
use crate::runner::{LoadSummary, RunOptions, load, run};
use crate::tessera_cluster::TesseraCluster;
use crate::ycsb::stats::{Report, ratio_table};
use crate::ycsb::workload::{Keyspace, OpKind, WorkloadName, WorkloadSpec};

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Workloads, each run at every client count.
    pub workloads: Vec<WorkloadName>,
    /// Client counts.
    pub clients: Vec<usize>,
    /// Records loaded before each run.
    pub records: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// The measured part of each run.
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    pub warmup: Duration,
    /// Runs per system per case, alternating; the best is kept.
    pub rounds: usize,
    /// Where the clusters live (a temporary directory by default).
    pub dir: PathBuf,
    /// The `tessera` binary.
    pub tessera_bin: PathBuf,
    /// Progress bars.
    pub progress: bool,
    /// Seed of the workload generators.
    pub seed: u64,
}

/// One case's result: both systems and the ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The workload.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Records loaded.
    pub records: u64,
    /// Value size.
    pub value_size: usize,
    /// Tessera's result.
    pub tessera: Report,
    /// etcd's result.
    pub etcd: Report,
    /// Tessera's load phase.
    pub tessera_load: LoadSummary,
    /// etcd's load phase.
    pub etcd_load: LoadSummary,
    /// CPU seconds Tessera's nodes used per second of the measured run.
    pub tessera_server_cpu: f64,
    /// CPU seconds etcd's members used per second of the measured run.
    pub etcd_server_cpu: f64,
    /// Tessera put (update + insert) ops/s ÷ etcd's, when the workload puts.
    pub put_ratio: Option<f64>,
    /// Tessera get (read) ops/s ÷ etcd's, when the workload reads.
    pub get_ratio: Option<f64>,
    /// Tessera ops/s ÷ etcd ops/s over all operations.
    pub total_ratio: f64,
}

impl Comparison {
    /// The two tables side by side and the ratios, for people.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = format!(
            "== workload {} · {} clients · {} records of {} B\n",
            self.workload, self.clients, self.records, self.value_size
        );
        out.push_str(&self.tessera.table());
        out.push_str(&self.etcd.table());
        out.push_str(&ratio_table(&self.tessera, &self.etcd));
        out.push_str(&format!(
            "server CPU (cores busy): tessera {:.2}, etcd {:.2}\n",
            self.tessera_server_cpu, self.etcd_server_cpu
        ));
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        out.push_str(&format!(
            "put ratio {}  get ratio {}  total ratio {:.2}x\n",
            ratio(self.put_ratio),
            ratio(self.get_ratio),
            self.total_ratio
        ));
        out
    }
}

fn ops_per_sec(report: &Report, kinds: &[OpKind]) -> Option<f64> {
    let names: Vec<&str> = kinds.iter().map(OpKind::name).collect();
    let mut any = false;
    let mut sum = 0.0;
    for op in &report.ops {
        if names.contains(&op.kind.as_str()) {
            any = true;
            sum += op.ops_per_sec;
        }
    }
    any.then_some(sum)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// CPU seconds of `pids` so far (processes that are gone count nothing).
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| pid_cpu_time(*pid).ok()).map(|d| d.as_secs_f64()).sum()
}

/// One measured run with CPU accounting of the servers.
async fn measured_run(
    driver: &Driver,
    spec: &WorkloadSpec,
    keyspace: &Keyspace,
    options: &RunOptions,
    pids: &[u32],
) -> Result<(Report, f64)> {
    let before = cpu_of(pids);
    let report = run(driver, spec, keyspace, options).await?;
    let after = cpu_of(pids);
    // The CPU covers the warm-up too: spread it over the whole run.
    let secs = report.duration_secs + options.warmup.as_secs_f64();
    Ok((report, (after - before) / secs.max(1e-9)))
}

/// Runs every case; calls `each` with each result as it comes.
///
/// # Errors
/// A cluster does not start, or a run fails.
pub async fn compare(
    options: &CompareOptions,
    mut each: impl FnMut(&Comparison),
) -> Result<Vec<Comparison>> {
    let etcd_bin = ensure_installed()?;
    let mut results = Vec::new();
    let mut case = 0;
    for workload in &options.workloads {
        for &clients in &options.clients {
            case += 1;
            let spec = WorkloadSpec::new(*workload, options.records, options.value_size);
            // Fresh clusters per case: each starts empty and equally warm.
            let case_dir = options.dir.join(format!("case-{case}"));
            eprintln!("== {} with {clients} clients: starting etcd and Tessera", workload.as_str());
            let mut etcd = EtcdCluster::start(&etcd_bin, &case_dir.join("etcd"), 3)
                .context("starting etcd")?;
            let mut tessera =
                TesseraCluster::start(&options.tessera_bin, &case_dir.join("tessera"), 3)
                    .context("starting Tessera")?;
            let connections = clients.clamp(1, 16);
            let etcd_driver =
                Driver::Etcd(EtcdDriver::connect(&etcd.endpoints(), connections).await?);
            let config = ClientConfig::new(tessera.cluster_id(), tessera.certs());
            let tessera_driver = Driver::Tessera(
                RawClient::connect(tessera.placement(), config)
                    .await
                    .context("connecting to Tessera")?,
            );
            let load_tasks = 32;
            let tessera_load =
                load(&tessera_driver, &spec, load_tasks, 100, options.progress).await?;
            eprintln!(
                "tessera: loaded {} records at {:.0}/s",
                tessera_load.records, tessera_load.records_per_sec
            );
            let etcd_load = load(&etcd_driver, &spec, load_tasks, 100, options.progress).await?;
            eprintln!(
                "etcd: loaded {} records at {:.0}/s",
                etcd_load.records, etcd_load.records_per_sec
            );
            let run_options = RunOptions {
                clients,
                duration: Some(options.duration),
                ops: None,
                warmup: options.warmup,
                rate: None,
                seed: options.seed,
                progress: options.progress,
            };
            let tessera_keys = Keyspace::new(options.records);
            let etcd_keys = Keyspace::new(options.records);
            let tessera_pids = tessera.node_pids();
            let etcd_pids = etcd.pids();
            let mut best_tessera: Option<(Report, f64)> = None;
            let mut best_etcd: Option<(Report, f64)> = None;
            for _ in 0..options.rounds.max(1) {
                let t = measured_run(
                    &tessera_driver,
                    &spec,
                    &tessera_keys,
                    &run_options,
                    &tessera_pids,
                )
                .await?;
                eprintln!("tessera: {:.0} ops/s", t.0.ops_per_sec);
                if best_tessera.as_ref().is_none_or(|best| t.0.ops_per_sec > best.0.ops_per_sec) {
                    best_tessera = Some(t);
                }
                let e =
                    measured_run(&etcd_driver, &spec, &etcd_keys, &run_options, &etcd_pids).await?;
                eprintln!("etcd: {:.0} ops/s", e.0.ops_per_sec);
                if best_etcd.as_ref().is_none_or(|best| e.0.ops_per_sec > best.0.ops_per_sec) {
                    best_etcd = Some(e);
                }
            }
            drop(tessera_driver);
            drop(etcd_driver);
            tessera.stop();
            etcd.stop();
            let (tessera_report, tessera_cpu) = best_tessera.context("no Tessera round")?;
            let (etcd_report, etcd_cpu) = best_etcd.context("no etcd round")?;
            let puts = [OpKind::Update, OpKind::Insert];
            let gets = [OpKind::Read];
            let comparison = Comparison {
                workload: workload.as_str().to_owned(),
                clients,
                records: options.records,
                value_size: options.value_size,
                put_ratio: ratio(
                    ops_per_sec(&tessera_report, &puts),
                    ops_per_sec(&etcd_report, &puts),
                ),
                get_ratio: ratio(
                    ops_per_sec(&tessera_report, &gets),
                    ops_per_sec(&etcd_report, &gets),
                ),
                total_ratio: tessera_report.ops_per_sec / etcd_report.ops_per_sec.max(1e-9),
                tessera: tessera_report,
                etcd: etcd_report,
                tessera_load,
                etcd_load,
                tessera_server_cpu: tessera_cpu,
                etcd_server_cpu: etcd_cpu,
            };
            each(&comparison);
            results.push(comparison);
            let _ = std::fs::remove_dir_all(&case_dir);
        }
    }
    Ok(results)
}

/// A directory for the clusters: `dir` if given, else a new one under the system's
/// temporary directory (kept only if `keep`).
///
/// # Errors
/// It cannot be created.
pub fn work_dir(dir: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
        return Ok((dir.to_path_buf(), None));
    }
    let temp = tempfile::Builder::new().prefix("tessera-bench-").tempdir()?;
    Ok((temp.path().to_path_buf(), Some(temp)))
}
