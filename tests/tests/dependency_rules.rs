//! The pure crates (raft, engine, txn) must not depend on tokio, quinn or RocksDB, directly
//! or through anything else (ARCHITECTURE.md §1, STYLE.md 15). Checked on the real
//! dependency graph with `cargo tree`.

use std::process::Command;

use tessera_tests::cargo_tree::{PURE_CRATES, forbidden_packages, package_names};

fn cargo_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(&cargo)
        .current_dir(workspace)
        .args(["tree", "--offline", "--package", package, "--edges", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .unwrap_or_else(|error| {
            // Seen once (2026-11-23, ENOENT) and not reproduced since: name everything needed
            // to tell a missing binary from a missing directory next time.
            let cwd_exists = std::path::Path::new(workspace).is_dir();
            let cargo_exists = std::path::Path::new(&cargo).exists();
            panic!(
                "cannot run `{cargo} tree` in {workspace} (directory exists: {cwd_exists}, \
                 cargo exists: {cargo_exists}): {error}"
            )
        });
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

#[test]
fn pure_crates_pull_in_no_runtime_network_or_storage_engine() {
    for package in PURE_CRATES {
        let tree = cargo_tree(package);
        assert!(
            package_names(&tree).contains(*package),
            "cargo tree output for {package} does not name the package itself:\n{tree}"
        );
        let forbidden = forbidden_packages(&tree);
        assert!(forbidden.is_empty(), "{package} depends on {forbidden:?}:\n{tree}");
    }
}
