//! Range snapshots as files: one file per non-empty data column family, each with its size,
//! key count and CRC-32C, checked when built, before sending and before ingesting.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::kv::Cf;

/// One file of a range snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The column family the file loads into.
    pub cf: Cf,
    /// Where the file is.
    pub path: PathBuf,
    /// Its length.
    pub size_bytes: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// CRC-32C of the whole file.
    pub checksum: u32,
}

/// The files of a range snapshot. Column families with no key in the span have no file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// The files, in column family order.
    pub files: Vec<SnapshotFile>,
}

impl SnapshotManifest {
    /// Total bytes of all files.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|file| file.size_bytes).sum()
    }

    /// Total keys of all files.
    #[must_use]
    pub fn keys(&self) -> u64 {
        self.files.iter().map(|file| file.keys).sum()
    }

    /// Checks every file's length and checksum.
    ///
    /// # Errors
    /// [`EngineError::Corruption`] naming the first file that differs; I/O failures.
    pub fn verify(&self) -> Result<()> {
        self.files.iter().try_for_each(SnapshotFile::verify)
    }
}

impl SnapshotFile {
    /// Recomputes the file's length and checksum and compares them with the manifest.
    ///
    /// # Errors
    /// [`EngineError::Corruption`] on a difference; I/O failures.
    pub fn verify(&self) -> Result<()> {
        let (size_bytes, checksum) = file_checksum(&self.path)?;
        let location = self.path.display().to_string();
        if size_bytes != self.size_bytes {
            return Err(EngineError::corruption(
                location,
                format!("snapshot file is {size_bytes} bytes, manifest says {}", self.size_bytes),
            ));
        }
        if checksum != self.checksum {
            return Err(EngineError::corruption(
                location,
                format!(
                    "snapshot file CRC-32C {checksum:08x}, manifest says {:08x}",
                    self.checksum
                ),
            ));
        }
        Ok(())
    }
}

/// Length and CRC-32C of a file.
///
/// # Errors
/// I/O failures.
pub fn file_checksum(path: &Path) -> Result<(u64, u32)> {
    let context = || format!("reading {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|error| EngineError::io(context(), error))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let read = file.read(&mut buf).map_err(|error| EngineError::io(context(), error))?;
        if read == 0 {
            return Ok((len, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..read]);
        len += read as u64;
    }
}
