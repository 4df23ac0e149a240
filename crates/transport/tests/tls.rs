//! TLS for the node mesh, over real quinn endpoints on 127.0.0.1: dev certificates from one
//! directory let nodes talk, anything else is refused, and bad files give typed errors.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::Endpoint;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tessera_transport::tls::{ALPN, NodeTls, QuicTimeouts, SERVER_NAME, TlsError, TlsSource};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Every network step must finish well within this; a hang fails the test.
const DEADLINE: Duration = Duration::from_secs(10);

fn dev(dir: &Path, name: &str) -> NodeTls {
    NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, name).unwrap()
}

/// An echo server: every bidirectional stream gets its bytes back. Reports the outcome of
/// each incoming handshake on the returned channel.
fn echo_server(
    config: quinn::ServerConfig,
) -> (Endpoint, SocketAddr, mpsc::UnboundedReceiver<Result<(), String>>) {
    let endpoint = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (handshakes_tx, handshakes_rx) = mpsc::unbounded_channel();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let handshakes_tx = handshakes_tx.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(conn) => {
                        let _ = handshakes_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = handshakes_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(data) = recv.read_to_end(1 << 20).await else {
                        return;
                    };
                    if send.write_all(&data).await.is_err() || send.finish().is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, addr, handshakes_rx)
}

fn client(config: quinn::ClientConfig) -> Endpoint {
    let mut endpoint = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

/// Where an exchange failed.
#[derive(Debug)]
enum Failure {
    /// The client's handshake failed (e.g. the client rejected the server's certificate).
    Handshake(String),
    /// The handshake completed on the client's side but the stream failed (e.g. the server
    /// rejected the client's certificate after the client sent it).
    Stream(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Self::Handshake(m) | Self::Stream(m) => m,
        }
    }
}

/// Connects, sends `payload` on a new bidirectional stream and returns the reply; bounded by
/// [`DEADLINE`] (a timeout panics: it would be a hang, which is a bug in itself).
async fn echo(endpoint: &Endpoint, addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, Failure> {
    let exchange = async {
        let connecting =
            endpoint.connect(addr, SERVER_NAME).map_err(|e| Failure::Handshake(e.to_string()))?;
        let conn = connecting.await.map_err(|e| Failure::Handshake(e.to_string()))?;
        let stream = |e: &dyn std::fmt::Display| Failure::Stream(e.to_string());
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream(&e))?;
        send.write_all(payload).await.map_err(|e| stream(&e))?;
        send.finish().map_err(|e| stream(&e))?;
        let reply = recv.read_to_end(1 << 20).await.map_err(|e| stream(&e))?;
        conn.close(0u32.into(), b"done");
        Ok(reply)
    };
    timeout(DEADLINE, exchange).await.expect("TLS exchange hung past the deadline")
}

/// The next handshake outcome the server saw, within the deadline.
async fn server_handshake(
    rx: &mut mpsc::UnboundedReceiver<Result<(), String>>,
) -> Result<(), String> {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("server saw no handshake before the deadline")
        .expect("server task ended")
}

/// A client configuration built by hand (not through `NodeTls`), to present identities
/// `NodeTls` would refuse to load: trusts the CA in `ca_pem`, presents `identity` if any.
fn manual_client(ca_pem: &Path, identity: Option<(&Path, &Path)>) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let mut tls = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap(),
    ))
}

fn files_of(source: &TlsSource) -> (&Path, &Path, &Path) {
    match source {
        TlsSource::Files { ca, cert, key } => (ca, cert, key),
        TlsSource::DevGenerated { .. } => panic!("expected Files"),
    }
}

/// (a) Two nodes with certificates from one dev directory complete mutual TLS and echo
/// bytes over a bidirectional stream, in both directions of dialling.
#[tokio::test]
async fn nodes_sharing_a_dev_dir_connect_and_echo() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = dev(dir.path(), "n1");
    let n2 = dev(dir.path(), "n2");

    let (_server, addr, mut handshakes) = echo_server(n1.server_config().unwrap());
    let reply = echo(&client(n2.client_config().unwrap()), addr, b"hello tessera").await.unwrap();
    assert_eq!(reply, b"hello tessera");
    server_handshake(&mut handshakes).await.unwrap();

    let (_server2, addr2, _) = echo_server(n2.server_config().unwrap());
    let payload = vec![7u8; 200_000];
    let reply = echo(&client(n1.client_config().unwrap()), addr2, &payload).await.unwrap();
    assert_eq!(reply, payload);
}

/// (b) A node whose certificate comes from another dev CA is refused: as a client the
/// server rejects it, as a server the client rejects it, and two such nodes never talk.
#[tokio::test]
async fn node_from_another_dev_ca_is_refused_both_ways() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a1 = dev(dir_a.path(), "n1");
    let a2 = dev(dir_a.path(), "n2");
    let b1 = dev(dir_b.path(), "n1");
    let a1_files = TlsSource::dev_files(dir_a.path(), "n1");
    let (ca_a, _, _) = files_of(&a1_files);
    let b_files = TlsSource::dev_files(dir_b.path(), "n1");
    let (_, b_cert, b_key) = files_of(&b_files);
    let a_files = TlsSource::dev_files(dir_a.path(), "n2");
    let (_, a_cert, a_key) = files_of(&a_files);

    let (_server_a, addr_a, mut handshakes_a) = echo_server(a1.server_config().unwrap());

    // Positive control: the hand-built client with a proper identity from CA A works, so
    // the refusals below are about the certificate and nothing else.
    let good = client(manual_client(ca_a, Some((a_cert, a_key))));
    assert_eq!(echo(&good, addr_a, b"ok").await.unwrap(), b"ok");
    server_handshake(&mut handshakes_a).await.unwrap();

    // As a client: trusts CA A (so it accepts the server) but presents CA B's certificate.
    let foreign = client(manual_client(ca_a, Some((b_cert, b_key))));
    let result = echo(&foreign, addr_a, b"let me in").await;
    assert!(result.is_err(), "server accepted a foreign client: {result:?}");
    let seen = server_handshake(&mut handshakes_a).await.unwrap_err();
    assert!(seen.contains("UnknownIssuer"), "{seen}");

    // As a server: a node of CA A dialling a node of CA B rejects B's certificate during
    // its own handshake.
    let (_server_b, addr_b, _) = echo_server(b1.server_config().unwrap());
    let result = echo(&client(a2.client_config().unwrap()), addr_b, b"hi").await;
    let Err(Failure::Handshake(message)) = result else {
        panic!("client accepted a foreign server: {result:?}");
    };
    assert!(message.contains("UnknownIssuer"), "{message}");

    // And the whole foreign node dialling a node of CA A gets nowhere either.
    let failure = echo(&client(b1.client_config().unwrap()), addr_a, b"hi").await.unwrap_err();
    assert!(failure.message().contains("UnknownIssuer"), "{failure:?}");
}

/// (c) A client presenting no certificate at all is refused by the server.
#[tokio::test]
async fn client_without_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = dev(dir.path(), "n1");
    let files = TlsSource::dev_files(dir.path(), "n1");
    let (ca, _, _) = files_of(&files);

    let (_server, addr, mut handshakes) = echo_server(n1.server_config().unwrap());
    let anonymous = client(manual_client(ca, None));
    let result = echo(&anonymous, addr, b"anonymous").await;
    assert!(result.is_err(), "server accepted an anonymous client: {result:?}");
    let seen = server_handshake(&mut handshakes).await.unwrap_err();
    assert!(seen.contains("no certificates"), "{seen}");
}

/// (d) The PEM files a dev directory produced load as a production `Files` source, give the
/// same identity, and interoperate with a dev-loaded node.
#[tokio::test]
async fn files_source_round_trips_dev_pems() {
    let dir = tempfile::tempdir().unwrap();
    let dev_n1 = dev(dir.path(), "n1");
    let n2 = dev(dir.path(), "n2");

    let files = TlsSource::dev_files(dir.path(), "n1");
    let n1 = NodeTls::load(&files, "n1").unwrap();
    assert_eq!(n1.cert_chain(), dev_n1.cert_chain());
    assert_eq!(n1.node_name(), "n1");

    let (_server, addr, _) = echo_server(n1.server_config().unwrap());
    let reply = echo(&client(n2.client_config().unwrap()), addr, b"files").await.unwrap();
    assert_eq!(reply, b"files");

    let (_server2, addr2, _) = echo_server(n2.server_config().unwrap());
    let reply = echo(&client(n1.client_config().unwrap()), addr2, b"back").await.unwrap();
    assert_eq!(reply, b"back");

    // Debug never prints key material.
    let debug = format!("{n1:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

/// (e) Bad inputs give typed errors naming the file, never a panic.
#[test]
fn bad_inputs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    dev(dir.path(), "n1");
    dev(dir.path(), "n2");
    let n1_files = TlsSource::dev_files(dir.path(), "n1");
    let (ca, cert, key) = files_of(&n1_files);
    let n2_files = TlsSource::dev_files(dir.path(), "n2");
    let (_, _, n2_key) = files_of(&n2_files);
    let scratch = tempfile::tempdir().unwrap();
    let load = |ca: &Path, cert: &Path, key: &Path| {
        NodeTls::load(
            &TlsSource::Files { ca: ca.to_owned(), cert: cert.to_owned(), key: key.to_owned() },
            "n1",
        )
    };

    // Missing files, each named.
    let missing = scratch.path().join("nope.pem");
    for (c, e, k) in [(&*missing, cert, key), (ca, &*missing, key), (ca, cert, &*missing)] {
        let err = load(c, e, k).unwrap_err();
        assert!(matches!(&err, TlsError::MissingFile { path } if *path == missing), "{err:?}");
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    // Text without any PEM section.
    let garbage = scratch.path().join("garbage.pem");
    std::fs::write(&garbage, b"this is not a certificate\n").unwrap();
    let err = load(&garbage, cert, key).unwrap_err();
    assert!(matches!(&err, TlsError::NoCertificate { path } if *path == garbage), "{err:?}");
    let err = load(ca, &garbage, key).unwrap_err();
    assert!(matches!(&err, TlsError::NoCertificate { path } if *path == garbage), "{err:?}");
    let err = load(ca, cert, &garbage).unwrap_err();
    assert!(matches!(&err, TlsError::NoPrivateKey { path } if *path == garbage), "{err:?}");
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    // A PEM section that is not valid base64.
    let broken = scratch.path().join("broken.pem");
    std::fs::write(
        &broken,
        b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load(&broken, cert, key).unwrap_err();
    assert!(matches!(&err, TlsError::Pem { path, .. } if *path == broken), "{err:?}");

    // Valid PEM of the wrong kind: a certificate where the key should be.
    let err = load(ca, cert, cert).unwrap_err();
    assert!(matches!(&err, TlsError::NoPrivateKey { path } if path == cert), "{err:?}");

    // A certificate that is not DER inside well-formed PEM.
    let junk_der = scratch.path().join("junk-der.pem");
    std::fs::write(
        &junk_der,
        b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load(&junk_der, cert, key).unwrap_err();
    assert!(matches!(&err, TlsError::InvalidCa { path, .. } if *path == junk_der), "{err:?}");
    let err = load(ca, &junk_der, key).unwrap_err();
    assert!(matches!(&err, TlsError::CertificateRejected { .. }), "{err:?}");

    // n2's key with n1's certificate.
    let err = load(ca, cert, n2_key).unwrap_err();
    assert!(
        matches!(&err, TlsError::KeyMismatch { cert: c, key: k } if c == cert && k == n2_key),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    dev(other.path(), "n1");
    let other_files = TlsSource::dev_files(other.path(), "n1");
    let (_, other_cert, other_key) = files_of(&other_files);
    let err = load(ca, other_cert, other_key).unwrap_err();
    assert!(
        matches!(&err, TlsError::CertificateRejected { cert: c, ca: a, .. } if c == other_cert && a == ca),
        "{err:?}"
    );
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A dev directory whose CA file is garbage is an error, and the file is not replaced.
    let bad_dev = tempfile::tempdir().unwrap();
    std::fs::write(bad_dev.path().join("ca.pem"), b"garbage").unwrap();
    let err = NodeTls::load(&TlsSource::DevGenerated { dir: bad_dev.path().to_owned() }, "n1")
        .unwrap_err();
    assert!(matches!(&err, TlsError::NoCertificate { .. }), "{err:?}");
    assert_eq!(std::fs::read(bad_dev.path().join("ca.pem")).unwrap(), b"garbage");

    // Node names that could escape the directory.
    for name in ["", "../evil", "a/b", ".hidden"] {
        let err = NodeTls::load(&TlsSource::DevGenerated { dir: dir.path().to_owned() }, name)
            .unwrap_err();
        assert!(matches!(err, TlsError::InvalidNodeName { .. }), "{name:?}: {err:?}");
    }

    // Timeouts violating their rules fail when configs are built.
    let n1 = NodeTls::load(&n1_files, "n1").unwrap().with_timeouts(QuicTimeouts {
        keep_alive_interval: Duration::from_secs(10),
        max_idle_timeout: Duration::from_secs(5),
    });
    assert!(matches!(n1.server_config(), Err(TlsError::InvalidTimeouts { .. })));
    assert!(matches!(n1.client_config(), Err(TlsError::InvalidTimeouts { .. })));
    let zero = QuicTimeouts { keep_alive_interval: Duration::ZERO, ..QuicTimeouts::default() };
    assert!(zero.validate().is_err());
    QuicTimeouts::default().validate().unwrap();
}

/// (f) Running dev generation again reuses the CA and the node certificate byte for byte;
/// keys are private to the owner; a stale node certificate (another CA's) is reissued.
#[test]
fn dev_generation_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let first = dev(dir.path(), "n1");
    let ca_before = std::fs::read(&ca_path).unwrap();
    let ca_key_before = std::fs::read(dir.path().join("ca-key.pem")).unwrap();
    let n1_files = TlsSource::dev_files(dir.path(), "n1");
    let (_, cert, key) = files_of(&n1_files);
    let cert_before = std::fs::read(cert).unwrap();
    let key_before = std::fs::read(key).unwrap();

    let second = dev(dir.path(), "n1");
    assert_eq!(std::fs::read(&ca_path).unwrap(), ca_before);
    assert_eq!(std::fs::read(dir.path().join("ca-key.pem")).unwrap(), ca_key_before);
    assert_eq!(std::fs::read(cert).unwrap(), cert_before);
    assert_eq!(std::fs::read(key).unwrap(), key_before);
    assert_eq!(first.cert_chain(), second.cert_chain());

    // Another node reuses the CA too.
    dev(dir.path(), "n2");
    assert_eq!(std::fs::read(&ca_path).unwrap(), ca_before);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for secret in [dir.path().join("ca-key.pem"), key.to_owned()] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", secret.display());
        }
    }

    // A node directory holding another CA's certificate gets a fresh one from this CA.
    let other = tempfile::tempdir().unwrap();
    dev(other.path(), "n1");
    let other_files = TlsSource::dev_files(other.path(), "n1");
    let (_, other_cert, other_key) = files_of(&other_files);
    std::fs::copy(other_cert, cert).unwrap();
    std::fs::copy(other_key, key).unwrap();
    let reissued = dev(dir.path(), "n1");
    assert_ne!(reissued.cert_chain(), first.cert_chain());
    assert_eq!(std::fs::read(&ca_path).unwrap(), ca_before);
    NodeTls::load(&n1_files, "n1").unwrap();
}

/// Nodes of one playground starting at once on a fresh directory end up with one CA: the
/// generation lock makes exactly one of them create it.
#[test]
fn concurrent_dev_generation_creates_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let nodes: Vec<NodeTls> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..6).map(|i| scope.spawn(move || dev(path, &format!("n{i}")))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every node's certificate verifies against the one CA now on disk.
    for node in &nodes {
        let files = TlsSource::dev_files(dir.path(), node.node_name());
        let reloaded = NodeTls::load(&files, node.node_name()).unwrap();
        assert_eq!(reloaded.cert_chain(), node.cert_chain());
    }
}

/// The keep-alive keeps an idle connection open past the idle timeout.
#[tokio::test]
async fn keep_alive_holds_idle_connection_open() {
    let dir = tempfile::tempdir().unwrap();
    let timeouts = QuicTimeouts {
        keep_alive_interval: Duration::from_millis(100),
        max_idle_timeout: Duration::from_millis(500),
    };
    let n1 = dev(dir.path(), "n1").with_timeouts(timeouts);
    let n2 = dev(dir.path(), "n2").with_timeouts(timeouts);
    let (_server, addr, _) = echo_server(n1.server_config().unwrap());
    let endpoint = client(n2.client_config().unwrap());
    let conn =
        timeout(DEADLINE, endpoint.connect(addr, SERVER_NAME).unwrap()).await.unwrap().unwrap();
    // Idle for three idle timeouts: without keep-alive the connection would be gone.
    let closed = timeout(Duration::from_millis(1500), conn.closed()).await;
    assert!(closed.is_err(), "idle connection closed: {closed:?}");
    assert!(conn.close_reason().is_none());
}
