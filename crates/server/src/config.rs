//! Node configuration: a TOML file (`--config FILE`) and flags, flags winning.
//!
//! Every flag of `tessera store` and `tessera placement` has a key of the same name in the
//! file, with `_` for `-` (`--store-id 1` is `store_id = 1`); repeatable flags are arrays
//! (`--placement 101=ADDR` is `placement = ["101=ADDR"]`). A key the command does not know
//! stops the start, naming the key and the file; so does a value of the wrong type or an
//! address that does not parse. Relative paths are relative to the current directory.
//! `docs/configuration.md` lists every key with its default.
//!
//! TLS: either `insecure_dev_certs = DIR` (development: a cluster CA and node certificates
//! generated in DIR) or all three of `tls_ca`, `tls_cert`, `tls_key` (PEM files the
//! operator supplies; a missing or unreadable file stops the start, naming it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use tessera_transport::tls::TlsSource;

/// Reads a TOML config file into `T` (which denies unknown keys).
///
/// # Errors
/// The file cannot be read, is not TOML, or holds a key or value `T` does not accept; the
/// message names the file and, from the TOML parser, the key, line and column.
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!("config file {}: {}", path.display(), error.to_string().trim_end())
    })
}

/// The TLS settings every node takes (flags `--insecure-dev-certs`, `--tls-ca`,
/// `--tls-cert`, `--tls-key`, or the same keys in the config file).
#[derive(Debug, Clone, Default)]
pub struct TlsArgs {
    /// Development TLS: the directory of the generated CA and node certificates.
    pub insecure_dev_certs: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM, leaf first).
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Flags over the file's keys, field by field.
    #[must_use]
    pub fn or(self, file: Self) -> Self {
        Self {
            insecure_dev_certs: self.insecure_dev_certs.or(file.insecure_dev_certs),
            tls_ca: self.tls_ca.or(file.tls_ca),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
        }
    }

    /// Where the node's TLS material comes from.
    ///
    /// # Errors
    /// Neither or both ways given, a `--tls-*` flag without the other two, or a PEM file
    /// that does not exist.
    pub fn source(&self) -> Result<TlsSource> {
        let files =
            [("tls_ca", &self.tls_ca), ("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)];
        let given: Vec<&str> =
            files.iter().filter(|(_, path)| path.is_some()).map(|(name, _)| *name).collect();
        match (&self.insecure_dev_certs, given.len()) {
            (Some(dir), 0) => Ok(TlsSource::DevGenerated { dir: dir.clone() }),
            (Some(_), _) => bail!(
                "give either insecure_dev_certs or the tls_ca, tls_cert and tls_key files, not both"
            ),
            (None, 0) => bail!(
                "no TLS material: give --tls-ca, --tls-cert and --tls-key (or, for development \
                 only, --insecure-dev-certs DIR)"
            ),
            (None, 3) => {
                for (name, path) in files {
                    let path = path.as_ref().expect("all three are given");
                    if !path.is_file() {
                        bail!("{name}: {} does not exist or is not a file", path.display());
                    }
                }
                Ok(TlsSource::Files {
                    ca: self.tls_ca.clone().expect("given"),
                    cert: self.tls_cert.clone().expect("given"),
                    key: self.tls_key.clone().expect("given"),
                })
            }
            (None, _) => {
                let missing: Vec<&str> = files
                    .iter()
                    .filter(|(_, path)| path.is_none())
                    .map(|(name, _)| *name)
                    .collect();
                bail!("{} given without {}", given.join(" and "), missing.join(" and "))
            }
        }
    }
}

/// A value that must come from a flag or the config file.
///
/// # Errors
/// Neither gives it: the message names the flag and the key.
pub fn required<T>(value: Option<T>, flag: &str) -> Result<T> {
    value.with_context(|| {
        format!("missing --{flag} (or `{}` in the config file)", flag.replace('-', "_"))
    })
}

/// Parses `ID=ADDR` (a node id and its socket address).
///
/// # Errors
/// Says what is wrong.
pub fn parse_node_addr(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected ID=ADDR"))?;
    let id = id.trim().parse().map_err(|_| format!("`{id}`: not a node id"))?;
    let addr = addr.trim().parse().map_err(|_| {
        format!("`{addr}`: not a socket address (expected IP:PORT, e.g. 127.0.0.1:20160)")
    })?;
    Ok((id, addr))
}

/// Parses the file's `ID=ADDR` strings of key `key`.
///
/// # Errors
/// The first entry that does not parse, naming the key.
pub fn parse_node_addrs(key: &str, entries: &[String]) -> Result<Vec<(u64, SocketAddr)>> {
    entries
        .iter()
        .map(|entry| parse_node_addr(entry).map_err(|error| anyhow::anyhow!("{key}: {error}")))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        listen: Option<SocketAddr>,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn config_mistakes_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let unknown = write(dir.path(), "lisen = \"127.0.0.1:1\"\n");
        let error = format!("{:#}", load_file::<Sample>(&unknown).unwrap_err());
        assert!(error.contains("node.toml") && error.contains("lisen"), "{error}");
        let bad = write(dir.path(), "listen = \"127.0.0.1\"\n");
        let error = format!("{:#}", load_file::<Sample>(&bad).unwrap_err());
        assert!(error.contains("listen") && error.contains("line 1"), "{error}");
        let missing = dir.path().join("absent.toml");
        let error = format!("{:#}", load_file::<Sample>(&missing).unwrap_err());
        assert!(error.contains("absent.toml"), "{error}");
    }

    #[test]
    fn tls_needs_one_complete_source_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(TlsArgs::default().source().unwrap_err().to_string().contains("no TLS"));
        let partial = TlsArgs { tls_ca: Some(dir.path().join("ca.pem")), ..TlsArgs::default() };
        let error = partial.source().unwrap_err().to_string();
        assert!(error.contains("tls_cert and tls_key"), "{error}");
        let absent = TlsArgs {
            tls_ca: Some(dir.path().join("ca.pem")),
            tls_cert: Some(dir.path().join("node.pem")),
            tls_key: Some(dir.path().join("node-key.pem")),
            ..TlsArgs::default()
        };
        let error = absent.source().unwrap_err().to_string();
        assert!(error.contains("ca.pem") && error.contains("does not exist"), "{error}");
        let dev = TlsArgs { insecure_dev_certs: Some(dir.path().into()), ..TlsArgs::default() };
        assert!(matches!(dev.source().unwrap(), TlsSource::DevGenerated { .. }));
        let both = TlsArgs { tls_key: Some(dir.path().into()), ..dev };
        assert!(both.source().unwrap_err().to_string().contains("not both"));
    }

    #[test]
    fn node_addresses_say_what_is_wrong() {
        assert_eq!(parse_node_addr("7=127.0.0.1:9").unwrap().0, 7);
        assert!(parse_node_addr("7").unwrap_err().contains("ID=ADDR"));
        assert!(parse_node_addr("x=127.0.0.1:9").unwrap_err().contains("not a node id"));
        assert!(parse_node_addr("7=localhost").unwrap_err().contains("not a socket address"));
        let error = parse_node_addrs("placement", &["1=nowhere".to_owned()]).unwrap_err();
        assert!(error.to_string().starts_with("placement:"), "{error}");
    }
}
