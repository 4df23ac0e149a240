//! A check RocksDB does not make: that the current MANIFEST ends on a record boundary.
//!
//! RocksDB reads its MANIFEST like a log and treats an incomplete last record as the end, so
//! a MANIFEST cut short (a truncated file) opens as an older version of the instance: files
//! flushed since then, whose WALs are already deleted, silently vanish. This module walks the
//! record headers of RocksDB's log format (`db/log_format.h`: 32 KiB blocks, 7-byte headers,
//! 11 for recyclable record types; record checksums are left to RocksDB) and refuses a
//! MANIFEST whose last record is incomplete.

use std::path::Path;

use tessera_engine::{EngineError, Result};

const BLOCK_SIZE: usize = 32768;
const HEADER_SIZE: usize = 7;
const RECYCLABLE_HEADER_SIZE: usize = 11;

/// Checks the MANIFEST named by `dir/CURRENT`. A missing `CURRENT` or MANIFEST is left to
/// RocksDB (a fresh directory, or an error RocksDB reports itself).
pub(crate) fn check_tail(dir: &Path) -> Result<()> {
    let current = match std::fs::read_to_string(dir.join("CURRENT")) {
        Ok(current) => current,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(EngineError::io(format!("reading {}/CURRENT", dir.display()), error));
        }
    };
    let name = current.trim_end();
    if !name.starts_with("MANIFEST-") || name.contains(['/', '\\']) {
        return Ok(());
    }
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(EngineError::io(format!("reading {}", path.display()), error)),
    };
    match torn_at(&bytes) {
        None => Ok(()),
        Some(offset) => Err(EngineError::corruption(
            path.display().to_string(),
            format!(
                "the MANIFEST ends inside a record (at byte {offset} of {}): it was truncated, \
                 and opening it would silently drop files",
                bytes.len()
            ),
        )),
    }
}

/// The offset of the incomplete record at the end of `log`, if any.
fn torn_at(log: &[u8]) -> Option<usize> {
    let mut offset = 0;
    let mut fragment_start = None;
    while offset < log.len() {
        let block_left = BLOCK_SIZE - offset % BLOCK_SIZE;
        if block_left < HEADER_SIZE {
            // Block trailer: zero padding.
            offset += block_left;
            continue;
        }
        if log.len() - offset < HEADER_SIZE {
            return Some(offset);
        }
        let length = usize::from(u16::from_le_bytes([log[offset + 4], log[offset + 5]]));
        let kind = log[offset + 6];
        if kind == 0 && length == 0 {
            // Preallocated space: the log ends here.
            break;
        }
        let recyclable = (5..=8).contains(&kind) || (kind >= 10 && kind & 1 == 1);
        let header = if recyclable { RECYCLABLE_HEADER_SIZE } else { HEADER_SIZE };
        let end = offset + header + length;
        if end > log.len() || header + length > block_left {
            return Some(offset);
        }
        match kind {
            1 | 5 => fragment_start = None,
            2 | 6 => fragment_start = Some(offset),
            4 | 8 => fragment_start = None,
            _ => {}
        }
        offset = end;
    }
    fragment_start
}

#[cfg(test)]
mod tests {
    use super::torn_at;

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0];
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn finds_a_truncated_last_record() {
        let mut log = record(1, b"first edit");
        log.extend(record(1, b"second edit"));
        assert_eq!(torn_at(&log), None);
        let whole = log.len();
        assert_eq!(torn_at(&log[..whole - 3]), Some(17));
        assert_eq!(torn_at(&log[..19]), Some(17));
        // A fragmented record cut after its first fragment.
        let mut fragmented = record(1, b"edit");
        fragmented.extend(record(2, b"part one"));
        assert_eq!(torn_at(&fragmented), Some(11));
        fragmented.extend(record(4, b"part two"));
        assert_eq!(torn_at(&fragmented), None);
        // Preallocated zeros after the last record end the log.
        let mut padded = record(1, b"edit");
        padded.extend([0u8; 64]);
        assert_eq!(torn_at(&padded), None);
    }
}
