//! # tessera-client
//!
//! The Rust client: a routing cache keyed by range start key, refreshed on `NotLeader`,
//! `EpochNotMatch`, `RangeNotFound` and unreachable stores; bounded retries with backoff and
//! deadlines; batched timestamp requests; the `RawClient` and `TxnClient` APIs.
//!
//! Does not belong here: server-side logic. Depends on `tessera-wire` and
//! `tessera-transport` only.
//!
//! # Raw key-value access
//!
//! [`RawClient::connect`] takes the placement members and a [`ClientConfig`]; the client
//! finds each key's range and leader itself (see [`raw`] for the retry rules and
//! [`routing`] for the cache). TLS: [`ClientConfig::new`] takes the cluster's development
//! TLS directory (the playground's `certs/`, which it prints);
//! [`ClientConfig::with_tls_files`] takes the cluster CA and a client certificate and key.
//!
//! A runnable program is `examples/quickstart.rs`: start the playground with `make run`,
//! then, from the same directory, `cargo run -p tessera-client --example quickstart`. It
//! finds the cluster through the playground's profile (or `TESSERA_PLACEMENT`,
//! `TESSERA_CLUSTER_ID`, `TESSERA_CA`) and tests run it against real processes
//! (`tests/tests/client_example.rs`). In short:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use tessera_client::{ClientConfig, ClientError, RawClient};
//!
//! # async fn example() -> Result<(), ClientError> {
//! let mut config = ClientConfig::new(1, "/var/lib/tessera/certs");
//! config.request_timeout = Duration::from_secs(5);
//! let placement = [(101, "10.0.0.1:7100".parse().expect("an address"))];
//! let client = RawClient::connect(&placement, config).await?;
//!
//! client.put("user/1", "alice").await?;
//! assert_eq!(client.get("user/1").await?.as_deref(), Some(&b"alice"[..]));
//! let users = client.scan("user/", "user0", 100).await?;
//! let (swapped, previous) =
//!     client.compare_and_swap("user/1", Some("alice".into()), Some("bob".into())).await?;
//! assert!(swapped && previous.is_some() && !users.is_empty());
//! client.delete_range("user/", "user0").await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
pub mod placement;
pub mod raw;
pub mod routing;

pub use config::ClientConfig;
pub use error::ClientError;
pub use raw::RawClient;
pub use routing::{CachedRoute, RouteCache};
