//! # tessera (the binary)
//!
//! One binary for everything a user runs: `tessera store`, `tessera placement`,
//! `tessera playground`, and the CLI: `tessera kv …` for data, and the admin commands
//! (`cluster`, `store …`, `range`, `placement rule|member`, `operator`).
//!
//! Belongs here: argument parsing, config files, process wiring, admin HTTP. Does not belong
//! here: logic that a library crate could own and test on its own.

mod admin;
mod cli;
mod config;
mod demo;
mod kv_cmd;
mod placement_cmd;
mod placement_link;
mod playground;
mod profile;
mod store_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: every request allocates on its way through
/// QUIC, the RPC layer, the store and the apply worker, on threads that hand buffers to
/// one another, and glibc's malloc and free took about 7 % of all CPU of a 256-client put
/// run (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: a multi-Raft, range-sharded, transactional key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version and build information.
    Version,
    /// Run a store (with flags), or manage stores: `tessera store list|offline|up|label`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Store(Box<StoreCommand>),
    /// Run a placement member (with flags), or manage placement rules and members:
    /// `tessera placement rule list|set|delete`, `tessera placement member list|add|remove`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Placement(Box<PlacementCommand>),
    /// A local cluster on loopback: placement and stores as child processes.
    Playground(playground::PlaygroundArgs),
    /// Read and write keys: `tessera kv get|put|delete|delete-range|scan|cas`.
    #[command(subcommand)]
    Kv(kv_cmd::KvCmd),
    /// The cluster at a glance.
    #[command(subcommand)]
    Cluster(cli::ClusterCmd),
    /// List, split and move the leadership of ranges.
    #[command(subcommand)]
    Range(cli::RangeCmd),
    /// The placement driver's operators: list, add by hand, cancel.
    #[command(subcommand)]
    Operator(cli::OperatorCmd),
}

/// `tessera store`: run one, or a store admin command.
#[derive(Debug, clap::Args)]
struct StoreCommand {
    #[command(subcommand)]
    admin: Option<cli::StoreCmd>,
    #[command(flatten)]
    run: Option<store_cmd::StoreArgs>,
}

/// `tessera placement`: run a member, or a placement admin command.
#[derive(Debug, clap::Args)]
struct PlacementCommand {
    #[command(subcommand)]
    admin: Option<PlacementAdmin>,
    #[command(flatten)]
    run: Option<placement_cmd::PlacementArgs>,
}

#[derive(Debug, Subcommand)]
enum PlacementAdmin {
    /// Placement rules: where the replicas of key spans go.
    #[command(subcommand)]
    Rule(cli::RuleCmd),
    /// The placement group's members.
    #[command(subcommand)]
    Member(cli::MemberCmd),
}

/// Waits for Ctrl-C or SIGTERM: how every long-running subcommand is asked to stop.
///
/// # Errors
/// The signal handler cannot be installed.
fn wait_for_shutdown(runtime: &tokio::runtime::Runtime) -> Result<()> {
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Store(command) => match &command.admin {
            Some(admin) => cli::store(admin)?,
            None => match &command.run {
                Some(run) => store_cmd::run(run)?,
                None => {
                    anyhow::bail!("give a store's flags to run one, or a subcommand (see --help)")
                }
            },
        },
        Command::Placement(command) => match &command.admin {
            Some(PlacementAdmin::Rule(rule)) => cli::rule(rule)?,
            Some(PlacementAdmin::Member(member)) => cli::member(member)?,
            None => match &command.run {
                Some(run) => placement_cmd::run(run)?,
                None => {
                    anyhow::bail!("give a member's flags to run one, or a subcommand (see --help)")
                }
            },
        },
        Command::Playground(args) => playground::run(&args)?,
        Command::Kv(command) => {
            let code = kv_cmd::run(&command)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Cluster(command) => cli::cluster(&command)?,
        Command::Range(command) => cli::range(&command)?,
        Command::Operator(command) => cli::operator(&command)?,
        Command::Version => {
            println!(
                "tessera {} ({} {})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
        }
    }
    Ok(())
}
