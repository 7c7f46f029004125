//! The proof that an erasure left nothing: every file under a table's location, referenced
//! or not, is read, and none may hold a row or a manifest bound of an erased key.
//!
//! ```text
//!   every file under the location
//!     *.parquet ─► key columns (by field id) ─► rows matching a key      (data, deletes)
//!     *.avro    ─► manifest entries ─► lower/upper bounds of the key columns equal a key
//!     other     ─► metadata JSON, manifest lists, Puffin vectors: no row values (counted)
//! ```
//!
//! # Invariants
//! - It reads the storage, not the metadata: a file nothing references (a crash's orphan)
//!   counts the same as a live one.
//! - A Parquet file without the key columns (a position-delete file) holds no key; a file
//!   that cannot be read is a failure of the proof, never skipped.
//! - Local (`file:`) locations only: object storage cannot be listed through `FileIO`.

use std::path::Path;

use floe_engine::cleanup::{list_files, local_path};
use floe_engine::error::{Error, ErrorKind, Result};
use iceberg::io::FileIO;
use iceberg::spec::{Datum, Manifest};

use crate::erase::file_holds;
use crate::snapshot_rewrite::KeyFilter;

/// What the proof read, and what it found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Proof {
    /// Files under the location.
    pub files: u64,
    /// Parquet files read (data and delete files).
    pub parquet_files: u64,
    /// Manifests read.
    pub manifests: u64,
    /// Rows holding an erased key.
    pub rows_found: u64,
    /// Manifest entries whose key-column bounds equal an erased key.
    pub bounds_found: u64,
    /// The files that hold something (at most 20).
    pub holders: Vec<String>,
}

impl Proof {
    /// Whether nothing of the keys was found.
    pub fn clean(&self) -> bool {
        self.rows_found == 0 && self.bounds_found == 0
    }

    fn found(&mut self, path: &Path) {
        if self.holders.len() < 20 {
            self.holders.push(path.display().to_string());
        }
    }
}

/// Scans every file under `location` for rows of `filter`'s keys and for manifest bounds
/// equal to one of `datums` (each key's values, in the order of `filter.fields`).
pub async fn prove_erased(
    file_io: &FileIO,
    location: &str,
    filter: &KeyFilter,
    datums: &[Vec<Option<Datum>>],
) -> Result<Proof> {
    if location.contains("://") && !location.starts_with("file:") {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{location}: the erasure proof lists files, which only a local warehouse allows"),
        ));
    }
    let mut proof = Proof::default();
    for (path, _, _) in list_files(Path::new(local_path(location))) {
        proof.files += 1;
        let text = path.to_string_lossy();
        if text.ends_with(".parquet") {
            proof.parquet_files += 1;
            let hits = file_holds(file_io, &text, filter).await.map_err(|e| {
                Error::new(ErrorKind::Data, format!("the erasure proof cannot read {text}")).with_source(e)
            })?;
            if hits > 0 {
                proof.rows_found += hits;
                proof.found(&path);
            }
        } else if text.ends_with(".avro") {
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::new(ErrorKind::Io, format!("the erasure proof cannot read {text}: {e}")))?;
            // Manifest lists are Avro too, and hold no column values: only manifests parse.
            let Ok(manifest) = Manifest::parse_avro(&bytes) else { continue };
            proof.manifests += 1;
            let ids: Vec<i32> = filter.fields.iter().map(|(id, _)| *id).collect();
            let mut hits = 0;
            for entry in manifest.entries() {
                let file = entry.data_file();
                if datums
                    .iter()
                    .any(|key| bound_is(file.lower_bounds(), &ids, key) || bound_is(file.upper_bounds(), &ids, key))
                {
                    hits += 1;
                }
            }
            if hits > 0 {
                proof.bounds_found += hits;
                proof.found(&path);
            }
        }
    }
    Ok(proof)
}

/// Whether every key column's bound in `bounds` equals the key's value.
fn bound_is(bounds: &std::collections::HashMap<i32, Datum>, ids: &[i32], key: &[Option<Datum>]) -> bool {
    !ids.is_empty()
        && ids.iter().zip(key).all(|(id, value)| matches!((bounds.get(id), value), (Some(b), Some(v)) if b == v))
}
