//! Reading `cargo tree` output, for the rule that the pure crates (raft, engine, txn) never
//! pull in an I/O runtime or a storage engine (ARCHITECTURE.md §1).

use std::collections::BTreeSet;

/// Crates that must never appear in a pure crate's dependency tree.
pub const FORBIDDEN_IN_PURE_CRATES: &[&str] =
    &["tokio", "quinn", "quinn-proto", "rocksdb", "librocksdb-sys"];

/// The crates that must stay pure.
pub const PURE_CRATES: &[&str] = &["tessera-raft", "tessera-engine", "tessera-txn"];

/// Package names in the output of `cargo tree --prefix none --format {p}` (one `name vX.Y.Z
/// [(path)] [(*)]` per line).
#[must_use]
pub fn package_names(tree_output: &str) -> BTreeSet<String> {
    tree_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The forbidden crates present in a `cargo tree` output, sorted.
#[must_use]
pub fn forbidden_packages(tree_output: &str) -> Vec<String> {
    let names = package_names(tree_output);
    FORBIDDEN_IN_PURE_CRATES
        .iter()
        .filter(|forbidden| names.contains(**forbidden))
        .map(|forbidden| (*forbidden).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_forbidden_packages_anywhere_in_the_tree() {
        let tree = "tessera-raft v0.1.0 (/src/crates/raft)\n\
                    thiserror v2.0.1\n\
                    tokio v1.40.0\n\
                    librocksdb-sys v0.17.0+9.9.3\n\
                    tokio v1.40.0 (*)\n";
        assert_eq!(forbidden_packages(tree), vec!["tokio".to_owned(), "librocksdb-sys".to_owned()]);
    }

    #[test]
    fn a_clean_tree_has_none() {
        let tree =
            "tessera-raft v0.1.0 (/src/crates/raft)\nthiserror v2.0.1\ntokio-util-free v0.1.0\n";
        assert!(forbidden_packages(tree).is_empty());
    }
}
