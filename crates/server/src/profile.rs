//! Where the CLI finds the cluster: a client profile (TOML) written by `tessera playground`
//! in the directory it runs from, overridden by flags and environment variables.
//!
//! ```toml
//! cluster_id = 7
//! certs_dir = "/abs/path/data/playground/certs"
//! placement = ["101=127.0.0.1:20171", "102=127.0.0.1:20172"]
//! ```
//!
//! Resolution, first found wins for each field: the flag (`--cluster-id`, `--ca` (alias
//! `--certs`: the TLS directory or its `ca.pem`), `--placement ID=ADDR`), the environment
//! (`TESSERA_CLUSTER_ID`, `TESSERA_CERTS` or `TESSERA_CA`, `TESSERA_PLACEMENT` as a
//! comma-separated list), the profile file (`--profile PATH`, `TESSERA_PROFILE`, else
//! [`DEFAULT_PROFILE`] in the current directory).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The profile's file name, in the directory the playground runs from.
pub const DEFAULT_PROFILE: &str = ".tessera-profile.toml";

/// What a client needs to reach a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The cluster's id (checked by every connection's handshake).
    pub cluster_id: u64,
    /// The development TLS directory (the cluster CA; client certificates are issued from
    /// it).
    pub certs_dir: PathBuf,
    /// Placement members, `ID=ADDR`.
    pub placement: Vec<String>,
}

impl Profile {
    /// The placement members, parsed.
    ///
    /// # Errors
    /// A member that is not `ID=ADDR`.
    pub fn members(&self) -> Result<Vec<(u64, SocketAddr)>> {
        self.placement
            .iter()
            .map(|member| parse_member(member).map_err(anyhow::Error::msg))
            .collect()
    }

    /// Writes the profile to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).context("encoding the profile")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a profile.
    ///
    /// # Errors
    /// The file cannot be read or is not a profile (the error names the problem).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a client profile", path.display()))
    }
}

/// Parses `ID=ADDR`.
///
/// # Errors
/// Says what is wrong.
pub fn parse_member(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected ID=ADDR"))?;
    let id = id.trim().parse().map_err(|_| format!("`{id}`: not a node id"))?;
    let addr = addr.trim().parse().map_err(|_| format!("`{addr}`: not a socket address"))?;
    Ok((id, addr))
}

/// The connection flags every CLI command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// A placement member, `ID=ADDR` (repeat for each). Default: from the profile.
    #[arg(long = "placement", value_parser = parse_member)]
    pub placement: Vec<(u64, SocketAddr)>,
    /// The cluster id. Default: from the profile.
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// The cluster's TLS directory (the playground's `certs/`), or the CA certificate
    /// `ca.pem` in it. Default: from the profile.
    #[arg(long = "certs", visible_alias = "ca")]
    pub certs: Option<PathBuf>,
    /// The client profile to read. Default: `./.tessera-profile.toml`.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl ConnectArgs {
    /// The profile in force: flags, then environment, then the profile file.
    ///
    /// # Errors
    /// Something missing everywhere, or malformed (the message says which and where).
    pub fn resolve(&self) -> Result<Profile> {
        let path = self
            .profile
            .clone()
            .or_else(|| std::env::var_os("TESSERA_PROFILE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PROFILE));
        let file = if path.exists() { Some(Profile::load(&path)?) } else { None };
        let env_placement = std::env::var("TESSERA_PLACEMENT").ok();
        let placement: Vec<String> = if !self.placement.is_empty() {
            self.placement.iter().map(|(id, addr)| format!("{id}={addr}")).collect()
        } else if let Some(list) = env_placement {
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        } else if let Some(file) = &file {
            file.placement.clone()
        } else {
            bail!(
                "no placement members: give --placement ID=ADDR, set TESSERA_PLACEMENT, or run \
                 from the directory where `tessera playground` wrote {DEFAULT_PROFILE}"
            );
        };
        let cluster_id = match (self.cluster_id, std::env::var("TESSERA_CLUSTER_ID").ok(), &file) {
            (Some(id), _, _) => id,
            (None, Some(text), _) => {
                text.parse().with_context(|| format!("TESSERA_CLUSTER_ID `{text}`"))?
            }
            (None, None, Some(file)) => file.cluster_id,
            (None, None, None) => bail!("no cluster id: give --cluster-id or TESSERA_CLUSTER_ID"),
        };
        let certs_dir = self
            .certs
            .clone()
            .or_else(|| std::env::var_os("TESSERA_CERTS").map(PathBuf::from))
            .or_else(|| std::env::var_os("TESSERA_CA").map(PathBuf::from))
            .or_else(|| file.as_ref().map(|file| file.certs_dir.clone()))
            .context("no TLS directory: give --ca (or --certs), TESSERA_CA or TESSERA_CERTS")?;
        let certs_dir = certs_directory(certs_dir)?;
        let profile = Profile { cluster_id, certs_dir, placement };
        profile.members()?;
        Ok(profile)
    }
}

/// The TLS directory named by `path`: the directory itself, or the one holding the CA
/// certificate `path` names.
///
/// # Errors
/// `path` does not exist.
fn certs_directory(path: PathBuf) -> Result<PathBuf> {
    let metadata = std::fs::metadata(&path)
        .with_context(|| format!("TLS directory or CA certificate {}", path.display()))?;
    if metadata.is_dir() {
        return Ok(path);
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => Ok(parent.to_path_buf()),
        _ => Ok(PathBuf::from(".")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_round_trips_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let profile = Profile {
            cluster_id: 7,
            certs_dir: dir.path().join("certs"),
            placement: vec!["101=127.0.0.1:1".to_owned()],
        };
        profile.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), profile);
        std::fs::write(&path, "cluster_id = 7\ncolour = 1\n").unwrap();
        let error = format!("{:#}", Profile::load(&path).unwrap_err());
        assert!(error.contains("not a client profile"), "{error}");
        let bad = Profile { placement: vec!["nope".to_owned()], ..profile };
        assert!(bad.members().is_err());
    }

    #[test]
    fn the_ca_flag_takes_the_directory_or_the_ca_file_in_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "pem").unwrap();
        assert_eq!(certs_directory(dir.path().to_path_buf()).unwrap(), dir.path());
        assert_eq!(certs_directory(dir.path().join("ca.pem")).unwrap(), dir.path());
        let error = format!("{:#}", certs_directory(dir.path().join("nope.pem")).unwrap_err());
        assert!(error.contains("nope.pem"), "{error}");
    }
}
