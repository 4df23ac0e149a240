//! `tessera kv get|put|delete|delete-range|scan|cas`: raw key-value access from the shell,
//! through the Rust client (routing, retries and deadlines as in `tessera-client`).
//!
//! Keys and values are given as text and printed as text (bytes that are not UTF-8 are
//! shown with replacement characters; `--json` adds their hex). Exit codes: 0 done, 1 the
//! cluster refused or failed (the message says why), 2 bad usage, 3 the answer is "no": the
//! key is absent (`get`) or the compare-and-swap did not swap (`cas`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use tessera_client::{ClientConfig, RawClient};

use crate::profile::ConnectArgs;

/// The exit code of a command whose answer is "no" (absent key, compare-and-swap refused).
pub const EXIT_NO: i32 = 3;

/// `tessera kv …`
#[derive(Debug, clap::Subcommand)]
pub enum KvCmd {
    /// Print the value of a key (exit code 3 when it is absent).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a key (done also when it is absent).
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete every key in `[START, END)`.
    DeleteRange {
        /// First key deleted.
        start: String,
        /// First key kept (an empty string: the end of the key space).
        end: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Keys and values in `[START, END)`, in key order.
    Scan {
        /// First key (default: the start of the key space).
        #[arg(default_value = "")]
        start: String,
        /// End (exclusive; default: the end of the key space).
        #[arg(default_value = "")]
        end: String,
        /// At most this many pairs.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only keys whose text starts with this (sets START and END).
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Compare and swap: set (or delete) a key only if it holds the expected value; prints
    /// whether it swapped and the value before (exit code 3 when it did not swap).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        #[arg(long, required_unless_present = "expect_absent")]
        expect: Option<String>,
        /// The key must be absent instead.
        #[arg(long, conflicts_with = "expect")]
        expect_absent: bool,
        /// The new value.
        #[arg(long, required_unless_present = "delete")]
        new: Option<String>,
        /// Delete the key instead of setting a new value.
        #[arg(long, conflicts_with = "new")]
        delete: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

impl KvCmd {
    fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Get { connect, .. }
            | Self::Put { connect, .. }
            | Self::Delete { connect, .. }
            | Self::DeleteRange { connect, .. }
            | Self::Scan { connect, .. }
            | Self::Cas { connect, .. } => connect,
        }
    }
}

/// The first key after every key starting with `prefix` (empty: no such key).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    end
}

fn text_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            json!({ "text": String::from_utf8_lossy(bytes), "hex": hex })
        }
    }
}

/// Runs a `tessera kv` command; returns the process exit code.
///
/// # Errors
/// The cluster cannot be reached, refuses, or the request runs out of time (a write's
/// outcome is then unknown, and the message says so).
pub fn run(command: &KvCmd) -> Result<i32> {
    let args = command.connect();
    let profile = args.resolve()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut config = ClientConfig::new(profile.cluster_id, profile.certs_dir.clone());
    config.request_timeout = Duration::from_secs(10);
    let members = profile.members()?;
    runtime.block_on(async {
        let client =
            RawClient::connect(&members, config).await.context("connecting to the cluster")?;
        execute(&client, command, args.json).await
    })
}

async fn execute(client: &RawClient, command: &KvCmd, as_json: bool) -> Result<i32> {
    match command {
        KvCmd::Get { key, .. } => {
            let value = client.get(Bytes::from(key.clone())).await.context("get")?;
            if as_json {
                println!("{}", json!({ "key": key, "value": value.as_deref().map(text_json) }));
            } else if let Some(value) = &value {
                println!("{}", String::from_utf8_lossy(value));
            } else {
                eprintln!("{key}: not found");
            }
            Ok(if value.is_some() { 0 } else { EXIT_NO })
        }
        KvCmd::Put { key, value, .. } => {
            client
                .put(Bytes::from(key.clone()), Bytes::from(value.clone()))
                .await
                .context("put")?;
            done(as_json, &json!({ "key": key, "put": true }), "OK");
            Ok(0)
        }
        KvCmd::Delete { key, .. } => {
            client.delete(Bytes::from(key.clone())).await.context("delete")?;
            done(as_json, &json!({ "key": key, "deleted": true }), "OK");
            Ok(0)
        }
        KvCmd::DeleteRange { start, end, .. } => {
            if !end.is_empty() && end <= start {
                bail!("delete-range: END ({end:?}) must come after START ({start:?})");
            }
            client
                .delete_range(Bytes::from(start.clone()), Bytes::from(end.clone()))
                .await
                .context("delete-range")?;
            done(as_json, &json!({ "start": start, "end": end, "deleted": true }), "OK");
            Ok(0)
        }
        KvCmd::Scan { start, end, limit, prefix, .. } => {
            let (start, end) = match prefix {
                Some(prefix) => (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes())),
                None => (start.as_bytes().to_vec(), end.as_bytes().to_vec()),
            };
            if !end.is_empty() && end <= start {
                bail!("scan: END must come after START");
            }
            let pairs =
                client.scan(Bytes::from(start), Bytes::from(end), *limit).await.context("scan")?;
            if as_json {
                let pairs: Vec<Value> = pairs
                    .iter()
                    .map(|(key, value)| json!({ "key": text_json(key), "value": text_json(value) }))
                    .collect();
                println!("{}", json!({ "pairs": pairs }));
            } else {
                for (key, value) in &pairs {
                    println!(
                        "{}\t{}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    );
                }
                eprintln!("({} pairs)", pairs.len());
            }
            Ok(0)
        }
        KvCmd::Cas { key, expect, new, .. } => {
            let expected = expect.clone().map(Bytes::from);
            let new_value = new.clone().map(Bytes::from);
            let (swapped, previous) = client
                .compare_and_swap(Bytes::from(key.clone()), expected, new_value)
                .await
                .context("cas")?;
            if as_json {
                println!(
                    "{}",
                    json!({
                        "key": key, "swapped": swapped,
                        "previous": previous.as_deref().map(text_json),
                    })
                );
            } else {
                let before = previous.as_deref().map_or_else(
                    || "absent".to_owned(),
                    |v| String::from_utf8_lossy(v).into_owned(),
                );
                println!(
                    "{} (value before: {before})",
                    if swapped { "swapped" } else { "NOT swapped" }
                );
            }
            Ok(if swapped { 0 } else { EXIT_NO })
        }
    }
}

fn done(as_json: bool, value: &Value, text: &str) {
    if as_json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"");
        assert_eq!(prefix_end(b""), b"");
    }
}
