//! `tessera-bench`: YCSB workloads (A–F, put-only, get-only) against Tessera or etcd, and
//! `compare`, which starts both on loopback and runs the same workloads side by side.
//!
//! ```sh
//! cargo run --release -p tessera-bench -- compare [--workload W] [--clients N] [--duration S] [--json]
//! cargo run --release -p tessera-bench -- load --system tessera --records 100000
//! cargo run --release -p tessera-bench -- run --system tessera --workload a --clients 64 --duration 30
//! ```
//!
//! Tables go to stdout (with `--json`, one JSON object per result line instead), progress
//! and notes to stderr. See bench/README.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tessera_bench::compare::{CompareOptions, compare, work_dir};
use tessera_bench::driver::Driver;
use tessera_bench::etcd::EtcdDriver;
use tessera_bench::runner::{RunOptions, load, run};
use tessera_bench::tessera_cluster::{Profile, parse_member, tessera_binary};
use tessera_bench::ycsb::plot::plot;
use tessera_bench::ycsb::workload::{Distribution, Keyspace, WorkloadName, WorkloadSpec};
use tessera_client::{ClientConfig, RawClient};

#[derive(Debug, Parser)]
#[command(name = "tessera-bench", version, about = "YCSB workloads against Tessera and etcd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start etcd (3 members) and Tessera (3 stores) here and run the same workloads on
    /// both, one after the other; print both results and the ratios.
    Compare(CompareArgs),
    /// Write the records a workload reads into a running system.
    Load(LoadArgs),
    /// Run a workload against a running system (load it first).
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum System {
    Tessera,
    Etcd,
}

/// Where the system under test is.
#[derive(Debug, clap::Args)]
struct Target {
    /// The system.
    #[arg(long, value_enum, default_value = "tessera")]
    system: System,
    /// Tessera: a placement member `ID=ADDR` (repeat). Default: the playground's profile
    /// `.tessera-profile.toml` in this directory.
    #[arg(long = "placement", env = "TESSERA_PLACEMENT", value_delimiter = ',')]
    placement: Vec<String>,
    /// Tessera: the cluster id. Default: from the profile.
    #[arg(long, env = "TESSERA_CLUSTER_ID")]
    cluster_id: Option<u64>,
    /// Tessera: the TLS directory (or its ca.pem). Default: from the profile.
    #[arg(long, env = "TESSERA_CA")]
    ca: Option<PathBuf>,
    /// Tessera: the client profile to read.
    #[arg(long, default_value = ".tessera-profile.toml")]
    profile: PathBuf,
    /// etcd: client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// etcd: gRPC connections shared by the clients.
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

#[derive(Debug, clap::Args)]
struct Records {
    /// Records in the key space.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    records: Records,
    /// Concurrent loading tasks.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    records: Records,
    /// The workload.
    #[arg(long, value_enum, default_value = "a")]
    workload: WorkloadName,
    /// The key choice (default: the workload's own).
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long)]
    duration: Option<f64>,
    /// Operations measured (instead of, or with, a duration).
    #[arg(long)]
    ops: Option<u64>,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Cap on operations per second over all clients.
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Draw throughput and p99 over time to this file (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// Workloads (repeat or comma-separate).
    #[arg(long = "workload", value_enum, value_delimiter = ',', default_values = ["put-only", "get-only"])]
    workloads: Vec<WorkloadName>,
    /// Client counts (repeat or comma-separate).
    #[arg(long = "clients", value_delimiter = ',', default_values = ["16", "256"])]
    clients: Vec<usize>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up per run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Runs per system per case, alternating Tessera and etcd; the best of each is kept.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[command(flatten)]
    records: Records,
    /// Print one JSON object per case instead of tables.
    #[arg(long)]
    json: bool,
    /// Draw throughput and p99 over time of every run to this file (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The `tessera` binary (default: next to this one, built if missing).
    #[arg(long)]
    tessera_bin: Option<PathBuf>,
    /// Keep the clusters' data and logs here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Compare(args) => compare_cmd(args).await,
            Command::Load(args) => load_cmd(args).await,
            Command::Run(args) => run_cmd(args).await,
        }
    })
}

fn progress() -> bool {
    std::io::stderr().is_terminal()
}

async fn connect(target: &Target) -> Result<Driver> {
    match target.system {
        System::Etcd => Ok(Driver::Etcd(
            EtcdDriver::connect(&target.endpoints, target.connections.max(1)).await?,
        )),
        System::Tessera => {
            let profile = Profile::load(&target.profile)?.unwrap_or_default();
            let cluster_id = target
                .cluster_id
                .or(profile.cluster_id)
                .context("no cluster id: --cluster-id, TESSERA_CLUSTER_ID or a profile")?;
            let mut certs = target
                .ca
                .clone()
                .or(profile.certs)
                .context("no TLS directory: --ca, TESSERA_CA or a profile")?;
            if certs.is_file() {
                certs = certs.parent().map(PathBuf::from).unwrap_or(certs);
            }
            let placement = if target.placement.is_empty() {
                profile.placement
            } else {
                target.placement.iter().map(|m| parse_member(m)).collect::<Result<Vec<_>>>()?
            };
            if placement.is_empty() {
                bail!("no placement members: --placement, TESSERA_PLACEMENT or a profile");
            }
            let client = RawClient::connect(&placement, ClientConfig::new(cluster_id, certs))
                .await
                .context("connecting to Tessera")?;
            Ok(Driver::Tessera(client))
        }
    }
}

async fn load_cmd(args: LoadArgs) -> Result<()> {
    let driver = connect(&args.target).await?;
    let spec = WorkloadSpec::new(WorkloadName::A, args.records.records, args.records.value_size);
    let summary = load(&driver, &spec, args.clients, args.batch, progress()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{}: loaded {} records of {} B in {:.1} s ({:.0} records/s)",
            driver.name(),
            summary.records,
            args.records.value_size,
            summary.secs,
            summary.records_per_sec
        );
    }
    Ok(())
}

async fn run_cmd(args: RunArgs) -> Result<()> {
    if args.duration.is_none() && args.ops.is_none() {
        bail!("give --duration SECONDS or --ops N");
    }
    let driver = connect(&args.target).await?;
    let mut spec = WorkloadSpec::new(args.workload, args.records.records, args.records.value_size);
    if let Some(distribution) = args.distribution {
        spec = spec.with_distribution(distribution);
    }
    let options = RunOptions {
        clients: args.clients,
        duration: args.duration.map(Duration::from_secs_f64),
        ops: args.ops,
        warmup: Duration::from_secs_f64(args.warmup),
        rate: args.rate,
        seed: args.seed,
        progress: progress(),
    };
    let report = run(&driver, &spec, &Keyspace::new(args.records.records), &options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.plot {
        plot(std::slice::from_ref(&report), path)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

async fn compare_cmd(args: CompareArgs) -> Result<()> {
    let (dir, _temp) = work_dir(args.dir.as_deref())?;
    let options = CompareOptions {
        workloads: args.workloads,
        clients: args.clients,
        records: args.records.records,
        value_size: args.records.value_size,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        rounds: args.rounds,
        dir,
        tessera_bin: tessera_binary(args.tessera_bin.as_deref())?,
        progress: progress(),
        seed: args.seed,
    };
    let json = args.json;
    let results = compare(&options, |comparison| {
        if json {
            match serde_json::to_string(comparison) {
                Ok(line) => println!("{line}"),
                Err(error) => eprintln!("encoding a result: {error}"),
            }
        } else {
            println!("{}", comparison.text());
        }
    })
    .await?;
    if let Some(path) = &args.plot {
        let reports: Vec<_> = results
            .iter()
            .flat_map(|c| {
                let mut tessera = c.tessera.clone();
                let mut etcd = c.etcd.clone();
                tessera.workload = format!("{} x{}", c.workload, c.clients);
                etcd.workload = format!("{} x{}", c.workload, c.clients);
                [tessera, etcd]
            })
            .collect();
        plot(&reports, path)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}
