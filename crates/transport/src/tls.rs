//! TLS for the node mesh: certificates, keys and the quinn configurations built from them.
//!
//! TLS is always on (ARCHITECTURE.md §6). Every node is both a QUIC server (peers dial it)
//! and a QUIC client (it dials peers), and both directions use mutual TLS: the server
//! requires a client certificate signed by the cluster CA, and the client accepts only a
//! server certificate signed by that CA. A node never trusts anything but the one CA.
//!
//! Two sources of certificates ([`TlsSource`]):
//!
//! - [`TlsSource::DevGenerated`]: `tessera playground` and `--insecure-dev-certs`. A cluster CA
//!   (`ca.pem`, `ca-key.pem`) is created in a directory if missing, and every node gets a
//!   certificate signed by it in `<dir>/nodes/<node-name>/` (`cert.pem`, `key.pem`). Nodes
//!   sharing the directory trust each other; a node whose directory holds another CA does not.
//! - [`TlsSource::Files`]: production. The operator supplies PEM files for the CA, the
//!   node's certificate chain and its private key; they are checked when loaded (the
//!   certificate must chain to the CA and be valid for [`SERVER_NAME`], the key must match).
//!
//! Peers are addressed by IP, but the TLS server name a client asks for is always
//! [`SERVER_NAME`], so certificates need not carry IP SANs: a production certificate must
//! carry the DNS SAN `tessera-node` (and may carry anything else). The CA is what makes a
//! peer a member of the cluster, not its name.
//!
//! The rustls crypto provider is always `ring`, passed explicitly; nothing here relies on
//! or installs a process-wide default provider.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// The TLS server name every client asks for, and a DNS SAN every node certificate carries.
///
/// Using one fixed name instead of the peer's address means certificates need no IP SANs
/// and survive address changes; membership is decided by the CA signature.
pub const SERVER_NAME: &str = "tessera-node";

/// The ALPN protocol id both sides offer; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"tessera/1";

/// CA certificate file name in a dev directory.
const DEV_CA_CERT: &str = "ca.pem";
/// CA private key file name in a dev directory.
const DEV_CA_KEY: &str = "ca-key.pem";
/// Subdirectory of a dev directory holding one directory per node.
const DEV_NODES_DIR: &str = "nodes";
/// Node certificate file name in `<dir>/nodes/<node-name>/`.
const DEV_NODE_CERT: &str = "cert.pem";
/// Node private key file name in `<dir>/nodes/<node-name>/`.
const DEV_NODE_KEY: &str = "key.pem";
/// Lock file serialising dev generation between processes sharing a directory.
const DEV_LOCK: &str = ".dev-certs.lock";
/// Common name prefix of a dev CA; a fingerprint of the CA key follows (see
/// [`dev_ca_params`]).
const DEV_CA_COMMON_NAME: &str = "Tessera dev cluster CA";
/// Bytes of the CA key identifier in a dev CA's common name.
const DEV_CA_FINGERPRINT_BYTES: usize = 8;
/// Organisation in every dev certificate's subject.
const DEV_ORGANIZATION: &str = "Tessera";
/// Longest accepted node name (it becomes a directory name and a certificate CN).
const NODE_NAME_BYTES_MAX: usize = 64;

/// Where a node's TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Development: a cluster CA (`ca.pem`, `ca-key.pem`, keys with mode 0600) is created in
    /// `dir` if missing, and this node's certificate and key are created, signed by that CA,
    /// in `dir/nodes/<node-name>/` if missing or no longer valid for that CA. Nodes that
    /// share `dir` trust each other. Insecure by design: the CA key sits on disk next to
    /// everything else.
    DevGenerated {
        /// Directory holding the CA and the per-node certificates; created if missing.
        dir: PathBuf,
    },
    /// Production: PEM files supplied by the operator, used as they are (never written).
    Files {
        /// The cluster CA certificate(s): the only trust anchors.
        ca: PathBuf,
        /// This node's certificate chain, leaf first. The leaf must chain to `ca`, carry the
        /// DNS SAN [`SERVER_NAME`], and allow both server and client authentication.
        cert: PathBuf,
        /// This node's private key (PKCS#8, PKCS#1 or SEC1 PEM), matching the leaf.
        key: PathBuf,
    },
}

impl TlsSource {
    /// The [`TlsSource::Files`] naming the PEM files that [`TlsSource::DevGenerated`] with
    /// `dir` writes for `node_name` (they exist once [`NodeTls::load`] has run for it).
    #[must_use]
    pub fn dev_files(dir: &Path, node_name: &str) -> Self {
        let (ca, cert, key) = dev_paths(dir, node_name);
        Self::Files { ca, cert, key }
    }
}

/// The CA certificate, node certificate and node key paths of `node_name` in a dev `dir`.
fn dev_paths(dir: &Path, node_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let node_dir = dir.join(DEV_NODES_DIR).join(node_name);
    (dir.join(DEV_CA_CERT), node_dir.join(DEV_NODE_CERT), node_dir.join(DEV_NODE_KEY))
}

/// Connection-level timers installed on every QUIC connection (both directions).
///
/// The keep-alive makes an idle connection send a PING every `keep_alive_interval`, so a
/// healthy peer's connection never idles out; a dead or partitioned peer stops answering
/// and the connection closes after `max_idle_timeout`. That closure is the store's
/// node-liveness signal (ARCHITECTURE.md §6), which is why Raft heartbeats of quiesced
/// ranges can be skipped. QUIC uses the smaller of the two peers' idle timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicTimeouts {
    /// Interval between keep-alive PINGs on an otherwise idle connection.
    /// Must be non-zero and shorter than `max_idle_timeout`.
    pub keep_alive_interval: Duration,
    /// A connection with no packets received for this long is closed (peer presumed dead).
    /// Must be non-zero and at most 2^62 - 1 milliseconds.
    pub max_idle_timeout: Duration,
}

impl Default for QuicTimeouts {
    /// Keep-alive every 1 s, idle timeout 10 s: a dead peer is noticed within 10 s while
    /// several lost PINGs in a row are tolerated.
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(1),
            max_idle_timeout: Duration::from_secs(10),
        }
    }
}

impl QuicTimeouts {
    /// Checks the invariants documented on the fields.
    ///
    /// # Errors
    /// [`TlsError::InvalidTimeouts`] naming the violated rule.
    pub fn validate(&self) -> Result<(), TlsError> {
        let invalid = |reason: String| Err(TlsError::InvalidTimeouts { reason });
        if self.keep_alive_interval.is_zero() {
            return invalid("keep_alive_interval must be non-zero".to_owned());
        }
        if self.max_idle_timeout.is_zero() {
            return invalid("max_idle_timeout must be non-zero".to_owned());
        }
        if self.keep_alive_interval >= self.max_idle_timeout {
            return invalid(format!(
                "keep_alive_interval ({:?}) must be shorter than max_idle_timeout ({:?})",
                self.keep_alive_interval, self.max_idle_timeout
            ));
        }
        Ok(())
    }

    /// The quinn transport configuration carrying these timers.
    fn transport_config(&self) -> Result<Arc<TransportConfig>, TlsError> {
        self.validate()?;
        let idle = IdleTimeout::try_from(self.max_idle_timeout).map_err(|_| {
            TlsError::InvalidTimeouts {
                reason: format!(
                    "max_idle_timeout ({:?}) exceeds QUIC's limit",
                    self.max_idle_timeout
                ),
            }
        })?;
        let mut transport = TransportConfig::default();
        transport.keep_alive_interval(Some(self.keep_alive_interval)).max_idle_timeout(Some(idle));
        Ok(Arc::new(transport))
    }
}

/// Why TLS material could not be loaded, generated or turned into a configuration.
///
/// Every variant about a file names it. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A required file does not exist.
    #[error("TLS file {path} does not exist")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A file or directory could not be read, written or locked.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM parser's complaint.
        #[source]
        source: pem::Error,
    },
    /// A file expected to hold certificates holds no `CERTIFICATE` PEM section.
    #[error("{path} contains no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file expected to hold a private key holds no private key PEM section.
    #[error("{path} contains no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA file holds something that cannot be a trust anchor.
    #[error("{path} holds an unusable CA certificate: {source}")]
    InvalidCa {
        /// The CA file.
        path: PathBuf,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// The private key is of a type or algorithm the crypto provider cannot sign with.
    #[error("{path} holds an unsupported private key: {source}")]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate is not acceptable to peers trusting the CA: it does not chain to the
    /// CA, has expired, lacks the [`SERVER_NAME`] SAN or the server/client-auth usage.
    #[error(
        "certificate {cert} is not valid for the cluster CA {ca} as a `{SERVER_NAME}` peer: {source}"
    )]
    CertificateRejected {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// What verification reported.
        #[source]
        source: rustls::Error,
    },
    /// The dev CA could not be generated, or its stored key could not be used to sign.
    #[error("cannot create or use the dev CA in {dir}: {source}")]
    CaGeneration {
        /// The dev directory.
        dir: PathBuf,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// A dev node certificate could not be generated.
    #[error("cannot generate the dev certificate {path}: {source}")]
    CertGeneration {
        /// The certificate file that was to be written.
        path: PathBuf,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// A node name unusable as a directory name and certificate common name.
    #[error(
        "invalid node name {name:?}: use 1-{NODE_NAME_BYTES_MAX} ASCII letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    InvalidNodeName {
        /// The rejected name.
        name: String,
    },
    /// [`QuicTimeouts`] violating its documented rules.
    #[error("invalid QUIC timeouts: {reason}")]
    InvalidTimeouts {
        /// The violated rule.
        reason: String,
    },
    /// rustls refused to build a configuration.
    #[error("rustls configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// rustls refused to build a certificate verifier.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// The rustls configuration is unusable for QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// A node's TLS identity: the cluster CA it trusts, its certificate chain and private key,
/// and the QUIC timers; builds the quinn server and client configurations.
pub struct NodeTls {
    node_name: String,
    /// The cluster CA: the only trust anchors, for both directions.
    roots: Arc<RootCertStore>,
    /// Invariant: non-empty, leaf first, leaf matches `key` and chains to `roots`.
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: Arc<CryptoProvider>,
    timeouts: QuicTimeouts,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("node_name", &self.node_name)
            .field("trust_anchors", &self.roots.len())
            .field("cert_chain_len", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads (and in dev mode first generates, if needed) the TLS material of node
    /// `node_name`, with default [`QuicTimeouts`].
    ///
    /// Dev generation takes an exclusive lock on a file in the dev directory, so processes
    /// of one playground sharing the directory create one CA between them. This does
    /// blocking file I/O: call it at startup, or from `spawn_blocking`.
    ///
    /// # Errors
    /// Any [`TlsError`] about the files, dev generation, or verification: the certificate
    /// must chain to the CA, be valid for [`SERVER_NAME`] for both server and client
    /// authentication, and match the key.
    pub fn load(source: &TlsSource, node_name: &str) -> Result<Self, TlsError> {
        validate_node_name(node_name)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (ca, cert, key) = match source {
            TlsSource::DevGenerated { dir } => {
                ensure_dev_material(dir, node_name, &provider)?;
                dev_paths(dir, node_name)
            }
            TlsSource::Files { ca, cert, key } => (ca.clone(), cert.clone(), key.clone()),
        };
        let roots = load_ca(&ca)?;
        let (cert_chain, key) = load_node(&ca, &roots, &cert, &key, &provider)?;
        Ok(Self {
            node_name: node_name.to_owned(),
            roots,
            cert_chain,
            key,
            provider,
            timeouts: QuicTimeouts::default(),
        })
    }

    /// Replaces the QUIC timers used by [`Self::server_config`] and [`Self::client_config`]
    /// (checked when those are built).
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: QuicTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The node name this identity was loaded for.
    #[must_use]
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// This node's certificate chain, leaf first.
    #[must_use]
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// The QUIC timers in use.
    #[must_use]
    pub fn timeouts(&self) -> QuicTimeouts {
        self.timeouts
    }

    /// The key this node's endpoint derives QUIC stateless-reset tokens from (HKDF-SHA256 of
    /// its private key). It is the same after a restart, so a restarted node answers packets
    /// of its previous incarnation's connections with a stateless reset its peers recognise,
    /// and they reconnect at once instead of waiting for the idle timeout. It reveals
    /// nothing about the private key.
    #[must_use]
    pub fn stateless_reset_key(&self) -> ring::hmac::Key {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tessera stateless reset");
        let prk = salt.extract(self.key.secret_der());
        let okm = prk
            .expand(&[b"v1"], ring::hmac::HMAC_SHA256)
            .expect("HMAC-SHA256 key length is a valid HKDF-SHA256 output length");
        ring::hmac::Key::from(okm)
    }

    /// The configuration for this node's listening endpoint: TLS 1.3 only, ALPN [`ALPN`],
    /// presents this node's certificate, and REQUIRES a client certificate signed by the
    /// cluster CA (a client without one, or with another CA's, fails the handshake).
    /// 0-RTT is off: replayable early data has no place in Raft traffic.
    ///
    /// # Errors
    /// [`TlsError::InvalidTimeouts`], or rustls/quinn refusing the configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(Arc::new(tls))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(self.timeouts.transport_config()?);
        Ok(config)
    }

    /// The configuration for dialling peers: TLS 1.3 only, ALPN [`ALPN`], trusts only the
    /// cluster CA and presents this node's certificate. Connect with server name
    /// [`SERVER_NAME`].
    ///
    /// # Errors
    /// [`TlsError::InvalidTimeouts`], or rustls/quinn refusing the configuration.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(Arc::new(tls))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.timeouts.transport_config()?);
        Ok(config)
    }
}

/// Accepts names usable as one path component and as a certificate CN.
fn validate_node_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= NODE_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(TlsError::InvalidNodeName { name: name.to_owned() }) }
}

/// Reads a whole file, mapping "not found" to [`TlsError::MissingFile`].
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::MissingFile { path: path.to_owned() },
        _ => TlsError::Io { path: path.to_owned(), source },
    })
}

/// Every certificate in a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: path.to_owned() },
        source => TlsError::Pem { path: path.to_owned(), source },
    })
}

/// The trust anchors in the CA file.
fn load_ca(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::InvalidCa { path: path.to_owned(), source })?;
    }
    Ok(Arc::new(roots))
}

/// Loads a node's chain and key and checks them the way peers will: the key matches the
/// leaf, and the chain verifies against the CA as a server certificate for [`SERVER_NAME`]
/// and as a client certificate.
fn load_node(
    ca_path: &Path,
    roots: &Arc<RootCertStore>,
    cert_path: &Path,
    key_path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs(cert_path)?;
    let key = read_key(key_path)?;

    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| TlsError::InvalidKey { path: key_path.to_owned(), source })?;
    match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
        // `Unknown`: the key type cannot report its public key; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Err(source) => {
            return Err(TlsError::CertificateRejected {
                cert: cert_path.to_owned(),
                ca: ca_path.to_owned(),
                source,
            });
        }
    }

    let rejected = |source| TlsError::CertificateRejected {
        cert: cert_path.to_owned(),
        ca: ca_path.to_owned(),
        source,
    };
    let (leaf, intermediates) =
        chain.split_first().expect("read_certs returns at least one certificate");
    let now = UnixTime::now();
    let server_name = ServerName::try_from(SERVER_NAME).expect("SERVER_NAME is a valid DNS name");
    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()?
        .verify_server_cert(leaf, intermediates, &server_name, &[], now)
        .map_err(rejected)?;
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()?
        .verify_client_cert(leaf, intermediates, now)
        .map_err(rejected)?;
    Ok((chain, key))
}

/// Makes sure `dir` holds a CA and a node certificate for `node_name` valid for it.
fn ensure_dev_material(
    dir: &Path,
    node_name: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<(), TlsError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(DEV_LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    // Released when `lock` is dropped, or by the OS if this process dies.
    lock.lock().map_err(io_err(&lock_path))?;

    let (ca_cert_path, cert_path, key_path) = dev_paths(dir, node_name);
    let ca_key_path = dir.join(DEV_CA_KEY);
    // `ca.pem` is written last, so its presence means the CA is complete. A `ca-key.pem`
    // without it is a leftover of an interrupted generation that signed nothing.
    if !ca_cert_path.try_exists().map_err(io_err(&ca_cert_path))? {
        let key = KeyPair::generate()
            .map_err(|source| TlsError::CaGeneration { dir: dir.to_owned(), source })?;
        let cert = dev_ca_params(&key)
            .self_signed(&key)
            .map_err(|source| TlsError::CaGeneration { dir: dir.to_owned(), source })?;
        write_atomically(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
        write_atomically(&ca_cert_path, cert.pem().as_bytes(), false)?;
        tracing::info!(dir = %dir.display(), "generated dev cluster CA");
    }
    let roots = load_ca(&ca_cert_path)?;

    let node_dir = dir.join(DEV_NODES_DIR).join(node_name);
    match load_node(&ca_cert_path, &roots, &cert_path, &key_path, provider) {
        Ok(_) => return Ok(()),
        Err(TlsError::MissingFile { .. }) => {}
        Err(error) => {
            tracing::warn!(%error, node = node_name, "dev node certificate unusable; reissuing");
        }
    }

    let ca_key_pem = String::from_utf8(read_file(&ca_key_path)?)
        .map_err(|_| TlsError::NoPrivateKey { path: ca_key_path.clone() })?;
    let ca_gen_err = |source| TlsError::CaGeneration { dir: dir.to_owned(), source };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(ca_gen_err)?;
    let issuer = Issuer::new(dev_ca_params(&ca_key), ca_key);
    let node_key = KeyPair::generate().map_err(ca_gen_err)?;
    let cert_gen_err = |source| TlsError::CertGeneration { path: cert_path.clone(), source };
    let cert = dev_node_params(node_name)
        .map_err(cert_gen_err)?
        .signed_by(&node_key, &issuer)
        .map_err(cert_gen_err)?;
    fs::create_dir_all(&node_dir).map_err(io_err(&node_dir))?;
    write_atomically(&key_path, node_key.serialize_pem().as_bytes(), true)?;
    write_atomically(&cert_path, cert.pem().as_bytes(), false)?;
    tracing::info!(node = node_name, dir = %node_dir.display(), "issued dev node certificate");
    drop(lock);
    Ok(())
}

/// The dev CA's parameters for CA key `key`.
///
/// A function of the key alone: when a node certificate is issued by an existing CA, the
/// issuer is rebuilt from these parameters and the stored key (rcgen cannot parse the CA
/// certificate without its `x509-parser` feature), so the issuer name written into the node
/// certificate matches the CA's subject byte for byte. The key's fingerprint in the common
/// name gives every dev CA its own name, so a certificate from another dev CA is reported
/// as from an unknown issuer rather than as a bad signature.
fn dev_ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let fingerprint: String = params
        .key_identifier(key)
        .iter()
        .take(DEV_CA_FINGERPRINT_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("{DEV_CA_COMMON_NAME} {fingerprint}"));
    name.push(DnType::OrganizationName, DEV_ORGANIZATION);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A dev node certificate's parameters: SANs [`SERVER_NAME`], `localhost`, `127.0.0.1`;
/// usable for both server and client authentication.
fn dev_node_params(node_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![
        SERVER_NAME.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ])?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node_name);
    name.push(DnType::OrganizationName, DEV_ORGANIZATION);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so `path` is either
/// absent or complete. `secret` files are created with mode 0600 (on Unix).
fn write_atomically(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover from an interrupted run may have other permissions: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file: File = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        // Make the rename durable; best effort (not every platform can open directories).
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}
