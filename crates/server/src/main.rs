//! # tessera (the binary)
//!
//! One binary for everything a user runs: `tessera store`, `tessera placement`,
//! `tessera playground`, and the CLI (`tessera kv …`, `tessera cluster …`). Subcommands
//! appear here as the parts behind them exist; today that is `version`, `store` and `placement`.
//!
//! Belongs here: argument parsing, config files, process wiring, admin HTTP. Does not belong
//! here: logic that a library crate could own and test on its own.

mod placement_cmd;
mod placement_link;
mod store_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Run a store: RocksDB engines, the QUIC transport and the multi-raft store.
    Store(store_cmd::StoreArgs),
    /// Run a member of the placement group: cluster metadata, timestamps, scheduling.
    Placement(Box<placement_cmd::PlacementArgs>),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Store(args) => store_cmd::run(&args)?,
        Command::Placement(args) => placement_cmd::run(&args)?,
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
