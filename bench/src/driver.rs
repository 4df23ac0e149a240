//! The systems a workload runs against, behind one interface: Tessera through its raw
//! client, etcd through `etcd-client`. Both clone cheaply and serve many tasks at once.

use anyhow::Result;
use bytes::Bytes;
use tessera_client::RawClient;

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
    /// # Errors
    /// The system's error.
    pub async fn load(&self, pairs: Vec<(Bytes, Bytes)>) -> Result<()> {
        match self {
            Self::Tessera(client) => Ok(client.batch_put(pairs).await?),
            Self::Etcd(client) => {
                for (key, value) in pairs {
                    client.put(&key, &value).await?;
                }
                Ok(())
            }
        }
    }
}
