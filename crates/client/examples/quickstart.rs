//! A first program against a running cluster: put, get, scan, compare-and-swap, delete.
//!
//! Start the playground (`make run`), then from the same directory:
//!
//! ```sh
//! cargo run -p tessera-client --example quickstart
//! ```
//!
//! The example finds the cluster as the CLI does: `TESSERA_PLACEMENT` (`ID=ADDR,...`),
//! `TESSERA_CLUSTER_ID` and `TESSERA_CA` (the TLS directory or its `ca.pem`) if set, else
//! the playground's profile `.tessera-profile.toml` in the current directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tessera_client::{ClientConfig, RawClient};

type Error = Box<dyn std::error::Error>;

/// Where the cluster is: its id, TLS directory and placement members.
struct Cluster {
    id: u64,
    certs: PathBuf,
    placement: Vec<(u64, SocketAddr)>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cluster = find_cluster()?;
    let mut config = ClientConfig::new(cluster.id, cluster.certs);
    config.request_timeout = Duration::from_secs(10);
    let client = RawClient::connect(&cluster.placement, config).await?;

    client.put("quickstart/alice", "1").await?;
    client.put("quickstart/bob", "2").await?;
    let alice = client.get("quickstart/alice").await?;
    println!("get quickstart/alice = {:?}", alice.as_deref().map(String::from_utf8_lossy));

    // Keys are ordered bytes: a prefix scan is a range [prefix, prefix + 1).
    for (key, value) in client.scan("quickstart/", "quickstart0", 100).await? {
        println!("scan {} = {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
    }

    // Compare-and-swap: set bob to 3 only if it still holds 2; then delete him if he holds 3.
    let (swapped, before) =
        client.compare_and_swap("quickstart/bob", Some("2".into()), Some("3".into())).await?;
    println!("cas quickstart/bob 2 -> 3: swapped = {swapped}, before = {before:?}");
    let (deleted, _) = client.compare_and_swap("quickstart/bob", Some("3".into()), None).await?;
    println!("cas quickstart/bob 3 -> deleted: {deleted}");

    client.delete_range("quickstart/", "quickstart0").await?;
    let left = client.scan("quickstart/", "quickstart0", 100).await?;
    println!("after delete_range: {} keys left", left.len());
    Ok(())
}

/// The cluster, from the environment or the playground's profile.
fn find_cluster() -> Result<Cluster, Error> {
    let profile: Option<toml::Table> = match std::fs::read_to_string(".tessera-profile.toml") {
        Ok(text) => Some(text.parse()?),
        Err(_) => None,
    };
    let from_profile = |key: &str| profile.as_ref().and_then(|table| table.get(key).cloned());
    let cluster_id = match std::env::var("TESSERA_CLUSTER_ID") {
        Ok(id) => id.parse()?,
        Err(_) => from_profile("cluster_id")
            .and_then(|id| id.as_integer())
            .and_then(|id| u64::try_from(id).ok())
            .ok_or("no cluster id: set TESSERA_CLUSTER_ID or run where the playground runs")?,
    };
    let certs = match std::env::var_os("TESSERA_CA") {
        Some(path) => PathBuf::from(path),
        None => from_profile("certs_dir")
            .and_then(|dir| dir.as_str().map(PathBuf::from))
            .ok_or("no TLS directory: set TESSERA_CA or run where the playground runs")?,
    };
    // `TESSERA_CA` may name the CA certificate itself.
    let certs =
        if certs.is_file() { certs.parent().map(PathBuf::from).unwrap_or(certs) } else { certs };
    let members: Vec<String> = match std::env::var("TESSERA_PLACEMENT") {
        Ok(list) => list.split(',').map(|member| member.trim().to_owned()).collect(),
        Err(_) => from_profile("placement")
            .and_then(|list| {
                list.as_array().map(|members| {
                    members.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect()
                })
            })
            .ok_or(
                "no placement members: set TESSERA_PLACEMENT or run where the playground runs",
            )?,
    };
    let mut placement = Vec::new();
    for member in members {
        let (id, addr) = member.split_once('=').ok_or(format!("`{member}`: expected ID=ADDR"))?;
        placement.push((id.parse()?, addr.parse()?));
    }
    Ok(Cluster { id: cluster_id, certs, placement })
}
