//! The systems a workload runs against, behind one interface: Tessera through its raw
//! client, etcd through `etcd-client`. Both clone cheaply and serve many tasks at once.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use tessera_client::{ClientError, RawClient};

use crate::etcd::EtcdDriver;
use crate::ycsb::workload::Op;

/// A system under test.
#[derive(Clone)]
#[allow(missing_debug_implementations, reason = "RawClient has no Debug")]
pub enum Driver {
    /// Tessera, raw key-value API (linearizable reads and writes).
    Tessera(RawClient),
    /// etcd, linearizable gets.
    Etcd(EtcdDriver),
}

impl Driver {
    /// The system's name in reports.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tessera(_) => "tessera",
            Self::Etcd(_) => "etcd",
        }
    }

    /// Performs one operation of a workload.
    ///
    /// # Errors
    /// The system's error.
    pub async fn execute(&self, op: Op) -> Result<()> {
        match op {
            Op::Read { key } => self.get(key).await.map(drop),
            Op::Update { key, value } | Op::Insert { key, value } => self.put(key, value).await,
            Op::Scan { start, len } => self.scan(start, len).await.map(drop),
            Op::ReadModifyWrite { key, value } => {
                self.get(key.clone()).await?;
                self.put(key, value).await
            }
        }
    }

    /// Reads `key`.
    ///
    /// # Errors
    /// The system's error.
    pub async fn get(&self, key: Bytes) -> Result<Option<Bytes>> {
        match self {
            Self::Tessera(client) => Ok(client.get(key).await?),
            Self::Etcd(client) => client.get(&key).await,
        }
    }

    /// Writes `key`.
    ///
    /// # Errors
    /// The system's error.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<()> {
        match self {
            Self::Tessera(client) => Ok(client.put(key, value).await?),
            Self::Etcd(client) => client.put(&key, &value).await,
        }
    }

    /// Reads up to `len` pairs from `start` on; returns how many came back.
    ///
    /// # Errors
    /// The system's error.
    pub async fn scan(&self, start: Bytes, len: u32) -> Result<usize> {
        match self {
            Self::Tessera(client) => Ok(client.scan(start, Bytes::new(), len).await?.len()),
            Self::Etcd(client) => client.scan(&start, len).await,
        }
    }

    /// Writes a batch of records for the load phase (Tessera: one `batch_put`, split by
    /// range by the client; etcd: one put after another).
    ///
    /// A Tessera batch that fails with an error worth retrying (the cluster was busy or
    /// electing, or the outcome is unknown) is written again, up to [`LOAD_ATTEMPTS`] times
    /// in all: the load writes fixed values, so writing a batch twice leaves what writing it
    /// once does.
    ///
    /// # Errors
    /// The system's error (for Tessera, the last one once the attempts are spent).
    pub async fn load(&self, pairs: Vec<(Bytes, Bytes)>) -> Result<()> {
        match self {
            Self::Tessera(client) => {
                retry_idempotent(LOAD_ATTEMPTS, LOAD_BACKOFF, || client.batch_put(pairs.clone()))
                    .await?;
                Ok(())
            }
            Self::Etcd(client) => {
                for (key, value) in pairs {
                    client.put(&key, &value).await?;
                }
                Ok(())
            }
        }
    }
}

/// Attempts at one batch of the load phase before its error ends the load.
pub const LOAD_ATTEMPTS: u32 = 5;

/// Wait before the first retry of a load batch; doubled before each later one.
pub const LOAD_BACKOFF: Duration = Duration::from_millis(100);

/// Runs `call` until it succeeds, fails with an error that is not
/// [retryable](ClientError::is_retryable), or has run `attempts` times (at least once),
/// waiting `backoff`, then twice as long, and so on, between attempts. Only for calls that
/// may run twice with the same effect as once.
///
/// # Errors
/// The first error that is not retryable, or the last one.
pub async fn retry_idempotent<F, Fut>(
    attempts: u32,
    backoff: Duration,
    mut call: F,
) -> std::result::Result<(), ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<(), ClientError>>,
{
    let mut wait = backoff;
    let mut attempt = 1;
    loop {
        let error = match call().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if !error.is_retryable() || attempt >= attempts {
            return Err(error);
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unknown() -> ClientError {
        ClientError::OutcomeUnknown {
            operation: "batch_put",
            reason: "connection lost after send".to_owned(),
        }
    }

    /// Runs `retry_idempotent` over a call that fails with `errors` in turn, then succeeds;
    /// returns its result and how many times the call ran.
    async fn run(attempts: u32, errors: Vec<ClientError>) -> (Result<(), ClientError>, u32) {
        let calls = AtomicU32::new(0);
        let errors = std::sync::Mutex::new(errors.into_iter());
        let result = retry_idempotent(attempts, Duration::from_millis(1), || {
            calls.fetch_add(1, Ordering::Relaxed);
            let next = errors.lock().unwrap().next();
            async move { next.map_or(Ok(()), Err) }
        })
        .await;
        (result, calls.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn an_ambiguous_failure_is_written_again() {
        let (result, calls) = run(5, vec![unknown(), unknown()]).await;
        result.expect("the third attempt succeeds");
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let refusal = ClientError::InvalidArgument("empty key".to_owned());
        let (result, calls) = run(5, vec![refusal]).await;
        assert!(matches!(result, Err(ClientError::InvalidArgument(_))), "{result:?}");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn the_last_error_ends_the_load_once_the_attempts_are_spent() {
        let (result, calls) = run(3, vec![unknown(), unknown(), unknown(), unknown()]).await;
        assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })), "{result:?}");
        assert_eq!(calls, 3);
    }
}
