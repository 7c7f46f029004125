//! Iceberg v3 deletion vectors: the `deletion-vector-v1` Puffin blob, encoded and decoded.
//!
//! ```text
//!   blob = length (4 bytes, big-endian; covers magic + bitmap)
//!        | magic D1 D3 39 64
//!        | bitmap: Roaring "portable" 64-bit format (count u64 LE, then per high key:
//!        |         key u32 LE + a 32-bit Roaring bitmap, keys ascending)
//!        | CRC-32 (java.util.zip variant, big-endian) over magic + bitmap
//! ```
//!
//! # Invariants
//! - `decode(encode(v)) == v` for every set of positions, and `decode` rejects a blob whose
//!   length, magic or checksum does not match, so a torn or foreign blob is never applied.
//! - The blob is stored uncompressed; its offset and length in the Puffin file are what the
//!   manifest entry's `content_offset` and `content_size_in_bytes` name.

use roaring::{RoaringBitmap, RoaringTreemap};

use crate::error::{Error, ErrorKind, Result};

/// The blob type in the Puffin footer.
pub const BLOB_TYPE: &str = "deletion-vector-v1";
/// Blob property: the data file the vector applies to.
pub const REFERENCED_DATA_FILE: &str = "referenced-data-file";
/// Blob property: the number of deleted positions.
pub const CARDINALITY: &str = "cardinality";
const MAGIC: [u8; 4] = [0xD1, 0xD3, 0x39, 0x64];

/// The field id a deletion vector's blob metadata names: the `_pos` metadata column.
pub const POS_FIELD_ID: i32 = i32::MAX - 2;

/// Encodes deleted row positions (of one data file) as a `deletion-vector-v1` blob, with
/// run containers where they are smaller (as Java's writer does).
pub fn encode(positions: &RoaringTreemap) -> Vec<u8> {
    let mut positions = positions.clone();
    positions.optimize();
    let mut bitmap = Vec::with_capacity(positions.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = positions.serialize_into(&mut bitmap);
    let mut out = Vec::with_capacity(bitmap.len() + 12);
    out.extend_from_slice(&((bitmap.len() + MAGIC.len()) as u32).to_be_bytes());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&bitmap);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&MAGIC);
    crc.update(&bitmap);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out
}

/// Encodes positions held as a 32-bit bitmap (floe's data files stay below 2^32 rows).
pub fn encode_u32(positions: &RoaringBitmap) -> Vec<u8> {
    encode(&RoaringTreemap::from_bitmaps([(0u32, positions.clone())]))
}

/// Decodes a `deletion-vector-v1` blob.
pub fn decode(blob: &[u8]) -> Result<RoaringTreemap> {
    let bad = |what: &str| Error::new(ErrorKind::Data, format!("not a deletion vector: {what}"));
    if blob.len() < 12 {
        return Err(bad("shorter than its framing"));
    }
    let length = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if length + 8 != blob.len() {
        return Err(bad(&format!("the length field says {length} bytes, the blob holds {}", blob.len() - 8)));
    }
    let body = &blob[4..4 + length];
    if body[..4] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let stored = &blob[4 + length..];
    let crc = crc32fast::hash(body);
    if stored != crc.to_be_bytes() {
        return Err(bad("checksum mismatch"));
    }
    RoaringTreemap::deserialize_from(&body[4..]).map_err(|e| bad("malformed bitmap").with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_positions_across_the_32_bit_boundary() {
        let mut v = RoaringTreemap::new();
        for p in [0u64, 1, 7, 65_535, 65_536, 1 << 20, (1 << 32) + 5] {
            v.insert(p);
        }
        v.insert_range(1000..3000);
        assert_eq!(decode(&encode(&v)).expect("decode"), v);
        assert_eq!(decode(&encode(&RoaringTreemap::new())).expect("empty").len(), 0);
    }

    #[test]
    fn known_bytes_for_a_tiny_vector() {
        // positions {1, 3}: one high key (0), an array container of two values.
        let blob = encode_u32(&[1u32, 3].into_iter().collect());
        let body_len = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        assert_eq!(&blob[4..8], &MAGIC);
        // bitmap count = 1 (u64 LE), key = 0 (u32 LE)
        assert_eq!(&blob[8..16], &1u64.to_le_bytes());
        assert_eq!(&blob[16..20], &0u32.to_le_bytes());
        assert_eq!(blob.len(), body_len + 8);
        assert_eq!(&blob[blob.len() - 4..], &crc32fast::hash(&blob[4..4 + body_len]).to_be_bytes());
    }

    #[test]
    fn rejects_torn_and_foreign_blobs() {
        let blob = encode_u32(&(0..100u32).collect());
        assert!(decode(&blob[..blob.len() - 1]).is_err(), "torn");
        let mut flipped = blob.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(decode(&flipped).is_err(), "corrupt");
        let mut magic = blob.clone();
        magic[4] = 0;
        assert!(decode(&magic).is_err(), "magic");
        assert!(decode(b"PAR1").is_err());
    }
}
