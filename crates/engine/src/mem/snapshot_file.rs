//! The in-memory engine's snapshot file format, one file per column family:
//!
//! | bytes | meaning |
//! |---|---|
//! | 8 | magic `TSMEMSNP` |
//! | 1 | format version (1) |
//! | 1 | column family (0 default, 1 lock, 2 write) |
//! | per record: 1 + 4 + k + 4 + v | tag `0x01`, key length, key, value length, value |
//! | 1 + 8 | tag `0x00`, record count |
//!
//! Integers are big-endian; keys are strictly ascending; nothing follows the count.

use crate::error::{EngineError, Result};
use crate::kv::Cf;

const MAGIC: &[u8; 8] = b"TSMEMSNP";
const VERSION: u8 = 1;
const RECORD: u8 = 0x01;
const END: u8 = 0x00;

fn cf_tag(cf: Cf) -> u8 {
    match cf {
        Cf::Default => 0,
        Cf::Lock => 1,
        Cf::Write => 2,
        Cf::Meta => 3,
    }
}

/// Builds a snapshot file incrementally.
#[derive(Debug)]
pub(crate) struct Writer {
    buf: Vec<u8>,
    records: u64,
}

impl Writer {
    pub(crate) fn new(cf: Cf) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        buf.push(cf_tag(cf));
        Self { buf, records: 0 }
    }

    /// Appends one record. Keys must come in ascending order.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] if a key or value is longer than 4 GiB.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let too_long = || EngineError::InvalidArgument("snapshot record over 4 GiB".to_owned());
        let key_len = u32::try_from(key.len()).map_err(|_| too_long())?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long())?;
        self.buf.push(RECORD);
        self.buf.extend_from_slice(&key_len.to_be_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&value_len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.records += 1;
        Ok(())
    }

    /// How many records were added.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// The finished file.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.push(END);
        self.buf.extend_from_slice(&self.records.to_be_bytes());
        self.buf
    }
}

/// Parses a whole file written for `cf`, validating everything.
///
/// # Errors
/// [`EngineError::Corruption`] naming `location` on any deviation from the format.
pub(crate) fn parse(bytes: &[u8], cf: Cf, location: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = |detail: String| EngineError::corruption(location, detail);
    let mut reader = Reader { bytes, pos: 0 };
    let magic = reader.take(MAGIC.len()).ok_or_else(|| bad("shorter than its header".into()))?;
    if magic != MAGIC {
        return Err(bad("not a snapshot file (bad magic)".into()));
    }
    match reader.byte() {
        Some(VERSION) => {}
        Some(other) => return Err(bad(format!("unknown format version {other}"))),
        None => return Err(bad("shorter than its header".into())),
    }
    match reader.byte() {
        Some(tag) if tag == cf_tag(cf) => {}
        Some(tag) => {
            return Err(bad(format!("file is for column family {tag}, not {}", cf.name())));
        }
        None => return Err(bad("shorter than its header".into())),
    }
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let at = reader.pos;
        match reader.byte() {
            Some(RECORD) => {
                let truncated = || bad(format!("record at byte {at} is truncated"));
                let key = reader.chunk().ok_or_else(truncated)?;
                let value = reader.chunk().ok_or_else(truncated)?;
                if records.last().is_some_and(|(last, _)| last.as_slice() >= key) {
                    return Err(bad(format!("key at byte {at} is not above the previous key")));
                }
                records.push((key.to_vec(), value.to_vec()));
            }
            Some(END) => {
                let count =
                    reader.take(8).ok_or_else(|| bad("record count is truncated".into()))?;
                let mut buf = [0u8; 8];
                buf.copy_from_slice(count);
                let count = u64::from_be_bytes(buf);
                if count != records.len() as u64 {
                    return Err(bad(format!(
                        "trailer counts {count} records, file holds {}",
                        records.len()
                    )));
                }
                if reader.pos != bytes.len() {
                    return Err(bad(format!(
                        "{} bytes after the trailer",
                        bytes.len() - reader.pos
                    )));
                }
                return Ok(records);
            }
            Some(tag) => return Err(bad(format!("unknown record tag {tag} at byte {at}"))),
            None => return Err(bad("file ends without a trailer".into())),
        }
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, len: usize) -> Option<&'b [u8]> {
        let end = self.pos.checked_add(len)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    // A u32 length followed by that many bytes.
    fn chunk(&mut self) -> Option<&'b [u8]> {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.take(4)?);
        let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = Writer::new(Cf::Lock);
        writer.add(b"za", b"1").unwrap();
        writer.add(b"zb", b"").unwrap();
        assert_eq!(writer.records(), 2);
        writer.finish()
    }

    #[test]
    fn round_trips() {
        let records = parse(&sample(), Cf::Lock, "f").unwrap();
        assert_eq!(records, vec![(b"za".to_vec(), b"1".to_vec()), (b"zb".to_vec(), Vec::new())]);
        assert!(parse(&Writer::new(Cf::Default).finish(), Cf::Default, "f").unwrap().is_empty());
    }

    #[test]
    fn every_truncation_and_wrong_cf_is_corruption() {
        let file = sample();
        for len in 0..file.len() {
            let error = parse(&file[..len], Cf::Lock, "f").unwrap_err();
            assert!(matches!(error, EngineError::Corruption { .. }), "{len}: {error}");
        }
        assert!(parse(&file, Cf::Write, "f").is_err());
        let mut longer = file.clone();
        longer.push(0);
        assert!(parse(&longer, Cf::Lock, "f").is_err());
    }

    #[test]
    fn every_single_byte_flip_is_refused_or_harmless() {
        let file = sample();
        for pos in 0..file.len() {
            for bit in 0..8 {
                let mut bad = file.clone();
                bad[pos] ^= 1 << bit;
                // Flips inside key or value bytes still parse (the CRC in the manifest
                // catches those); everything else must be refused, and nothing panics.
                if let Err(error) = parse(&bad, Cf::Lock, "f") {
                    assert!(matches!(error, EngineError::Corruption { .. }));
                }
            }
        }
    }
}
