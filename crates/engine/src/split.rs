//! Split-key suggestion by size, over any reader (both engines use it on a snapshot).

use crate::error::Result;
use crate::keys::KeySpan;
use crate::kv::{Cf, KvCursor, KvRead};

/// How many sample points per column family the second pass keeps at most.
const SAMPLES_PER_CF: u64 = 1024;

/// A key near the middle, by bytes of keys and values, of `span` over the data column
/// families, such that both `[start, key)` and `[key, end)` hold data; `None` if the span
/// holds fewer than two distinct keys. Reads the span twice.
///
/// # Errors
/// I/O failures, corruption.
pub fn split_key_by_scan<R: KvRead>(reader: &R, span: &KeySpan) -> Result<Option<Vec<u8>>> {
    let mut total = 0u64;
    for cf in Cf::DATA {
        let mut cursor = reader.cursor(cf, span)?;
        let mut valid = cursor.seek_to_first()?;
        while valid {
            total += (cursor.key().len() + cursor.value().len()) as u64;
            valid = cursor.next()?;
        }
    }
    if total == 0 {
        return Ok(None);
    }
    let step = (total / SAMPLES_PER_CF).max(1);
    // (key, bytes from the previous sample of the same column family up to and including
    // this key). Summing these over keys `<= k` approximates the bytes in `[start, k]`.
    let mut samples: Vec<(Vec<u8>, u64)> = Vec::new();
    for cf in Cf::DATA {
        let mut cursor = reader.cursor(cf, span)?;
        let mut valid = cursor.seek_to_first()?;
        let mut since_sample = 0u64;
        // The first key of each column family is always a sample, so two distinct keys
        // always give two distinct samples.
        let mut first_key = true;
        while valid {
            since_sample += (cursor.key().len() + cursor.value().len()) as u64;
            let key = cursor.key().to_vec();
            valid = cursor.next()?;
            if since_sample >= step || !valid || first_key {
                samples.push((key, since_sample));
                since_sample = 0;
                first_key = false;
            }
        }
    }
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    let first = samples.first().map(|(key, _)| key.clone()).expect("total > 0 means a sample");
    let mut left = 0u64;
    let mut candidate = None;
    for (key, bytes) in &samples {
        // `key` would start the right half: everything before it is the left half.
        if *key > first && left * 2 >= total {
            candidate = Some(key.clone());
            break;
        }
        left += bytes;
        if *key > first {
            candidate = Some(key.clone());
        }
    }
    Ok(candidate)
}
