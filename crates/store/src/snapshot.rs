//! What a range snapshot's `data` carries: the range as of the snapshot and the KV engine's
//! files holding its keys. The files stay on disk beside the store; only their manifest
//! travels inside the Raft message. Over the QUIC transport the files themselves are
//! streamed separately and the receiver rewrites the manifest to point at its own copies
//! (see [`crate::transport_net`]).

use std::path::PathBuf;

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};
use tessera_engine::{Cf, SnapshotFile, SnapshotManifest};
use tessera_wire::range::RangeDescriptor;

use crate::codec;

/// One file of a snapshot, as listed in [`SnapshotData`].
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotDataFile {
    /// The column family it loads into, by name.
    pub cf: String,
    /// Where the file is on the store that holds it.
    pub path: String,
    /// Its length.
    pub size_bytes: u64,
    /// Keys in it.
    pub keys: u64,
    /// CRC-32C of the whole file.
    pub checksum: u32,
}

/// The payload of a range snapshot (`Snapshot::data`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotData {
    /// The range as of the snapshot's index.
    pub descriptor: RangeDescriptor,
    /// The files, in column family order.
    pub files: Vec<SnapshotDataFile>,
}

impl SnapshotData {
    /// The payload for `descriptor` with the files of `manifest`.
    #[must_use]
    pub fn new(descriptor: RangeDescriptor, manifest: &SnapshotManifest) -> Self {
        let files = manifest
            .files
            .iter()
            .map(|file| SnapshotDataFile {
                cf: file.cf.name().to_owned(),
                path: file.path.display().to_string(),
                size_bytes: file.size_bytes,
                keys: file.keys,
                checksum: file.checksum,
            })
            .collect();
        Self { descriptor, files }
    }

    /// Encodes the payload.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(codec::encode(self))
    }

    /// Decodes a payload; the error says what is wrong.
    ///
    /// # Errors
    /// Bytes that are not an encoded payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        codec::decode(bytes)
    }

    /// The engine's manifest of the files.
    ///
    /// # Errors
    /// A column family name this engine does not know, or one that holds no data.
    pub fn manifest(&self) -> Result<SnapshotManifest, String> {
        let files = self
            .files
            .iter()
            .map(|file| {
                let cf = Cf::from_name(&file.cf).filter(|cf| Cf::DATA.contains(cf)).ok_or_else(
                    || format!("snapshot file for unknown column family {:?}", file.cf),
                )?;
                Ok(SnapshotFile {
                    cf,
                    path: PathBuf::from(&file.path),
                    size_bytes: file.size_bytes,
                    keys: file.keys,
                    checksum: file.checksum,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SnapshotManifest { files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_wire::ids::RangeId;

    #[test]
    fn data_round_trips_and_unknown_column_families_are_refused() {
        let manifest = SnapshotManifest {
            files: vec![SnapshotFile {
                cf: Cf::Default,
                path: PathBuf::from("/tmp/x/default.sst"),
                size_bytes: 10,
                keys: 2,
                checksum: 7,
            }],
        };
        let descriptor = RangeDescriptor { id: RangeId(9), ..RangeDescriptor::default() };
        let data = SnapshotData::new(descriptor, &manifest);
        let back = SnapshotData::decode(&data.encode()).unwrap();
        assert_eq!(back, data);
        assert_eq!(back.manifest().unwrap(), manifest);
        let mut bad = back;
        bad.files[0].cf = "meta".to_owned();
        assert!(bad.manifest().unwrap_err().contains("meta"));
        assert!(SnapshotData::decode(b"\x01nonsense").is_err());
    }
}
