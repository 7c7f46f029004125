//! The byte framing of one decoder fuzz input: which table, the record key and the value,
//! in one buffer that a fuzzer (libFuzzer under `cargo fuzz`) mutates as a whole.
//!
//! ```text
//!   [flags][key length: u16 LE][key bytes][value bytes]
//!   flags: bit 0 table index, bit 1 a key is present, bit 2 a tombstone (no value),
//!          bit 3 the value arrives split: its first half as a shared prefix
//! ```
//!
//! # Invariants
//! - Every byte string unframes: missing parts are empty, a key length past the end is
//!   cut to what is there. A fuzzer's input is arbitrary.
//! - `unframe(frame(x)) == x` for every `x` whose key is at most `u16::MAX` bytes.

use std::sync::Arc;

use floe_engine::record::SourceRecord;

/// One decoder input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderInput {
    /// Table index (0 or 1 of [`crate::WorkloadSpec::standard`]'s tables).
    pub table: usize,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Whether a source split the value's first half off as a shared prefix.
    pub split: bool,
}

const KEY: u8 = 2;
const TOMBSTONE: u8 = 4;
const SPLIT: u8 = 8;

/// The bytes of `input`.
pub fn frame(input: &DecoderInput) -> Vec<u8> {
    let key = input.key.as_deref().unwrap_or_default();
    let key = &key[..key.len().min(u16::MAX as usize)];
    let flags = (input.table & 1) as u8
        | if input.key.is_some() { KEY } else { 0 }
        | if input.value.is_none() { TOMBSTONE } else { 0 }
        | if input.split { SPLIT } else { 0 };
    let mut out = vec![flags];
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(input.value.as_deref().unwrap_or_default());
    out
}

/// The input `bytes` stand for (any bytes do).
pub fn unframe(bytes: &[u8]) -> DecoderInput {
    let flags = bytes.first().copied().unwrap_or_default();
    let len = match bytes.get(1..3) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]) as usize,
        None => 0,
    };
    let rest = bytes.get(3..).unwrap_or_default();
    let (key, value) = rest.split_at(len.min(rest.len()));
    DecoderInput {
        table: usize::from(flags & 1),
        key: (flags & KEY != 0).then(|| key.to_vec()),
        value: (flags & TOMBSTONE == 0).then(|| value.to_vec()),
        split: flags & SPLIT != 0,
    }
}

impl DecoderInput {
    /// The record a source would hand the decoder for table index `table`.
    pub fn record(&self, table: u32, offset: i64) -> SourceRecord {
        let mut record = SourceRecord::new(table, 0, offset, self.key.clone(), self.value.clone());
        if let (true, Some(value)) = (self.split, &self.value) {
            let (prefix, rest) = value.split_at(value.len() / 2);
            record.value_prefix = Some(Arc::from(prefix));
            record.value = Some(rest.to_vec());
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_any_bytes_unframe() {
        let inputs = [
            DecoderInput { table: 1, key: Some(b"{\"id\":1}".to_vec()), value: Some(b"{}".to_vec()), split: true },
            DecoderInput { table: 0, key: None, value: None, split: false },
            DecoderInput { table: 0, key: Some(Vec::new()), value: Some(Vec::new()), split: false },
        ];
        for input in inputs {
            assert_eq!(unframe(&frame(&input)), input);
        }
        for bytes in [&b""[..], b"\x02", b"\x02\xff\xff", b"\x0f\x05\x00ab"] {
            let input = unframe(bytes);
            assert!(input.key.as_ref().is_none_or(|k| k.len() <= bytes.len()));
        }
        let split = unframe(&frame(&DecoderInput { table: 0, key: None, value: Some(b"abcd".to_vec()), split: true }));
        let record = split.record(0, 7);
        assert_eq!(record.value_bytes().as_deref(), Some(&b"abcd"[..]));
        assert_eq!(record.value_prefix.as_deref(), Some(&b"ab"[..]));
    }
}
