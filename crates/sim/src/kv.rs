//! The simulated state machine: a small key-value map. Every write is `key=value` with a value
//! unique in the seed, so any observed value names exactly one write.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use tessera_raft::LogIndex;

/// The keys clients write.
pub const KEYS: u64 = 6;

/// A key-value map; each value remembers the log index of the write that set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<String, (String, LogIndex)>,
}

/// Splits an entry payload `key=value`.
#[must_use]
pub fn parse_write(data: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    let (key, value) = text.split_once('=')?;
    (!key.is_empty() && !value.is_empty()).then_some((key, value))
}

impl Kv {
    /// Applies the write `data` found at `index`.
    pub fn apply(&mut self, index: LogIndex, data: &[u8]) -> Result<(), String> {
        let (key, value) = parse_write(data).ok_or_else(|| {
            format!("entry {index} is not a write: {:?}", String::from_utf8_lossy(data))
        })?;
        self.map.insert(key.to_owned(), (value.to_owned(), index));
        Ok(())
    }

    /// The value of `key` and the index of the write that set it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&(String, LogIndex)> {
        self.map.get(key)
    }

    /// Every key, value and write index, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &(String, LogIndex))> {
        self.map.iter()
    }

    /// Snapshot bytes: one `key=value@index` line per key.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut text = String::new();
        for (key, (value, index)) in &self.map {
            writeln!(text, "{key}={value}@{index}").expect("writing to a String cannot fail");
        }
        Bytes::from(text)
    }

    /// The map encoded by [`Kv::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("snapshot is not UTF-8: {e}"))?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let parsed = line.split_once('=').and_then(|(key, rest)| {
                let (value, index) = rest.rsplit_once('@')?;
                Some((key, value, index.parse::<u64>().ok()?))
            });
            let Some((key, value, index)) = parsed else {
                return Err(format!("malformed snapshot line {line:?}"));
            };
            map.insert(key.to_owned(), (value.to_owned(), LogIndex(index)));
        }
        Ok(Self { map })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut kv = Kv::default();
        kv.apply(LogIndex(3), b"k1=v7").unwrap();
        kv.apply(LogIndex(4), b"k2=v8").unwrap();
        kv.apply(LogIndex(9), b"k1=v9").unwrap();
        let back = Kv::decode(&kv.encode()).unwrap();
        assert_eq!(back, kv);
        assert_eq!(back.get("k1"), Some(&("v9".to_owned(), LogIndex(9))));
        assert_eq!(Kv::decode(b"").unwrap(), Kv::default());
        assert!(Kv::decode(b"garbage").is_err());
        assert!(kv.apply(LogIndex(10), b"").is_err());
    }
}
