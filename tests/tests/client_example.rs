//! The client crate's runnable example and its TLS options, against real processes: the
//! quickstart example (`crates/client/examples/quickstart.rs`, linked from the crate docs)
//! runs to the end against a cluster it finds through the environment, and a client with
//! operator-supplied certificate files (`ClientConfig::with_tls_files`) reads and writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use tessera_client::{ClientConfig, RawClient};
use tessera_tests::cluster::Cluster;
use tessera_tests::process::example_bin;
use tessera_transport::tls::{NodeTls, TlsSource};

#[test]
fn the_quickstart_example_runs_against_a_cluster() {
    let cluster = Cluster::start(41, 1, 3);
    cluster.wait_replicated(1, 3, Duration::from_secs(60));
    let placement: Vec<String> =
        cluster.members().iter().map(|(id, addr)| format!("{id}={addr}")).collect();
    let output = Command::new(example_bin("tessera-client", "quickstart"))
        .current_dir(cluster.path())
        .env("TESSERA_PLACEMENT", placement.join(","))
        .env("TESSERA_CLUSTER_ID", "41")
        .env("TESSERA_CA", cluster.certs().join("ca.pem"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for line in [
        "get quickstart/alice = Some(\"1\")",
        "scan quickstart/bob = 2",
        "cas quickstart/bob 2 -> 3: swapped = true",
        "cas quickstart/bob 3 -> deleted: true",
        "after delete_range: 0 keys left",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    assert_eq!(cluster.block_on(cluster.admin().get("quickstart/alice")).unwrap(), None);
}

#[test]
fn a_client_with_certificate_files_reads_and_writes() {
    let cluster = Cluster::start(42, 1, 3);
    cluster.wait_replicated(1, 3, Duration::from_secs(60));
    // An operator's files: here issued by the cluster's CA for a node name of their own.
    NodeTls::load(&TlsSource::DevGenerated { dir: cluster.certs().to_path_buf() }, "app").unwrap();
    let TlsSource::Files { ca, cert, key } = TlsSource::dev_files(cluster.certs(), "app") else {
        panic!("dev_files names the files")
    };
    let config = ClientConfig::with_tls_files(42, ca, cert, key);
    let client = cluster.block_on(RawClient::connect(cluster.members(), config)).unwrap();
    cluster.block_on(client.put("files/a", "1")).unwrap();
    assert_eq!(cluster.block_on(client.get("files/a")).unwrap().as_deref(), Some(&b"1"[..]));
    // A client whose files do not exist fails to connect and says which file.
    let missing = cluster.path().join("missing.pem");
    let config = ClientConfig::with_tls_files(42, &missing, &missing, &missing);
    let error = cluster.block_on(RawClient::connect(cluster.members(), config)).unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
}
