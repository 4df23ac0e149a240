//! [`ClientConfig`]: the cluster, TLS material, deadlines and retry bounds of a client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tessera_transport::tls::TlsSource;

use crate::error::ClientError;

/// How a [`RawClient`](crate::RawClient) connects and how hard it tries.
///
/// Build it with [`ClientConfig::new`] and change the fields that differ from the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The cluster; nodes of another cluster refuse the client's connections.
    pub cluster_id: u64,
    /// The dev TLS directory shared with the cluster
    /// ([`TlsSource::DevGenerated`]): the
    /// client gets a certificate signed by that directory's CA, created if missing.
    pub certs_dir: PathBuf,
    /// The node name the client's certificate is made for (`<certs_dir>/nodes/<name>/`).
    /// Default `client`; every client may share it.
    pub tls_node_name: String,
    /// Certificates supplied by the operator instead of the dev directory: a cluster with
    /// production TLS needs [`TlsSource::Files`] with the cluster CA and a client
    /// certificate signed by it (see [`ClientConfig::with_tls_files`]). Default `None`:
    /// `certs_dir` as above.
    pub tls: Option<TlsSource>,
    /// The local UDP address of the client's QUIC endpoint. Default `0.0.0.0:0` (any port).
    pub listen: SocketAddr,
    /// How long one call may take overall, retries included (default 10 s). A write that
    /// runs out of time fails with [`ClientError::Timeout`]: its outcome is unknown.
    pub request_timeout: Duration,
    /// How long one attempt (one RPC to one store, or one placement lookup) may take
    /// (default 2 s); then the next replica is tried. Also the deadline the store is given.
    pub attempt_timeout: Duration,
    /// How many attempts one call (or one range's part of a batch) may make beyond the
    /// first before failing with [`ClientError::Unavailable`] (default 20).
    pub max_retries: u32,
    /// The first pause before retrying after a busy server or a range without a known
    /// leader (default 10 ms); doubles per pause.
    pub backoff_min: Duration,
    /// The longest pause between attempts (default 500 ms).
    pub backoff_max: Duration,
    /// How long a store that failed at the transport (down, cut off) is tried only after
    /// the other replicas (default 3 s).
    pub suspect_for: Duration,
    /// Whether a put, delete, batch put or delete range is sent again after an ambiguous
    /// failure (an attempt timed out, the connection broke after sending, the store
    /// answered `Timeout` or `Internal`). Default `false`: the call fails with
    /// [`ClientError::Timeout`] or [`ClientError::OutcomeUnknown`] instead, as a
    /// compare-and-swap always does.
    ///
    /// `true` trades linearizability for availability: the earlier attempt may still be
    /// on its way (held by a paused store, or in the network) and be applied after the
    /// retry was acknowledged, even after later writes of other clients, which it then
    /// undoes. Fit for bulk loads of keys nobody else writes; not for keys written
    /// concurrently.
    pub retry_ambiguous_writes: bool,
}

impl ClientConfig {
    /// The defaults for everything but the cluster and the TLS directory.
    #[must_use]
    pub fn new(cluster_id: u64, certs_dir: impl Into<PathBuf>) -> Self {
        Self {
            cluster_id,
            certs_dir: certs_dir.into(),
            tls_node_name: "client".to_owned(),
            tls: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            max_retries: 20,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            suspect_for: Duration::from_secs(3),
            retry_ambiguous_writes: false,
        }
    }

    /// The defaults, with production TLS: `ca` is the cluster CA certificate (the only trust
    /// anchor), `cert` the client's certificate chain signed by it (leaf first) and `key`
    /// its private key, all PEM.
    #[must_use]
    pub fn with_tls_files(
        cluster_id: u64,
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        let ca = ca.into();
        let certs_dir = ca.parent().map(PathBuf::from).unwrap_or_default();
        let mut config = Self::new(cluster_id, certs_dir);
        config.tls = Some(TlsSource::Files { ca, cert: cert.into(), key: key.into() });
        config
    }

    /// Checks the rules on the fields.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] naming the broken rule.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |reason: &str| Err(ClientError::InvalidArgument(reason.to_owned()));
        if self.request_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return invalid("request_timeout and attempt_timeout must be non-zero");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return invalid("need 0 < backoff_min <= backoff_max");
        }
        if self.tls_node_name.is_empty() {
            return invalid("tls_node_name must not be empty");
        }
        Ok(())
    }
}
