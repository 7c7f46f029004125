//! The key index of one bucket: where every live row sits, primary key → (data file, row
//! position), and which rows of each data file are deleted. It turns an epoch's upserts into
//! deletes that name exact rows, and a compaction's output into remapped positions.
//!
//! ```text
//!   epoch e, changes (key → new row | none)            rewrite (started at epoch e0)
//!     key live at (f, p)? ─► delete (f, p)                inputs: written files, deleted@e0
//!     new row ─► (new file, next position)                outputs: new files, row sources
//!   ─► EpochDelta { rows in file order,                 ─► keys remapped to the new files
//!                   deleted positions per file }           carried = deleted now − deleted@e0
//!                                                          removed = inputs (+ their vectors,
//!                                                          delete files that name only them)
//! ```
//!
//! # Invariants
//! - A key maps to at most one live row, and a live row's position is never in its file's
//!   deleted set; rows never come back to life.
//! - Position deletes name only files the bucket knows, so everything they name is committed
//!   no later than they are (epochs commit in order).
//! - A rewrite's inputs are files whose write finished (`written`); every row live in an
//!   input at the start of the rewrite is in exactly one output row, so remapping a live key
//!   always succeeds, and a row deleted while the rewrite ran is carried to its new position.
//! - Nothing here does IO or knows timely: the base writer moves files, this decides.
//!
//! # Notes
//! Keys of one integer-like column (int, long, date, time, timestamps) are stored as
//! themselves; any other key as canonical bytes. A data file holds at most 2^32 rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::manifests::FileRef;
use floe_engine::table_settings::{DeleteMode, MaintenanceSettings};
use floe_engine::value::{Row, Value};
use roaring::RoaringBitmap;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// A data file of the bucket, by number.
pub type FileId = u32;

/// Where a row sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    /// The data file.
    pub file: FileId,
    /// The row's position in it.
    pub pos: u32,
}

/// A primary key in the index's compact form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IndexKey {
    /// A key of one integer-like column.
    Int(i64),
    /// Any other key, canonically encoded.
    Bytes(Box<[u8]>),
}

impl IndexKey {
    /// The key of `values` (the key columns, in key order).
    pub fn of(values: &[Value]) -> IndexKey {
        if let [v] = values
            && let Some(i) = int_like(v)
        {
            return IndexKey::Int(i);
        }
        let mut out = Vec::with_capacity(values.len() * 9);
        for v in values {
            encode_value(v, &mut out);
        }
        IndexKey::Bytes(out.into_boxed_slice())
    }
}

fn int_like(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) | Value::Date(i) => Some(*i as i64),
        Value::Long(i) | Value::Time(i) | Value::Timestamp(i) | Value::TimestampTz(i) => Some(*i),
        _ => None,
    }
}

/// A prefix-free encoding: a tag, then fixed-width bytes or a length and the bytes.
fn encode_value(v: &Value, out: &mut Vec<u8>) {
    let var = |out: &mut Vec<u8>, tag: u8, bytes: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    match v {
        Value::Null => out.push(0),
        Value::Boolean(b) => out.extend_from_slice(&[1, *b as u8]),
        Value::String(s) => var(out, 2, s.as_bytes()),
        Value::Binary(b) => var(out, 3, b),
        Value::Decimal(d) => {
            out.push(4);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(5);
            out.extend_from_slice(&f.0.to_bits().to_le_bytes());
        }
        Value::Double(f) => {
            out.push(6);
            out.extend_from_slice(&f.0.to_bits().to_le_bytes());
        }
        other => {
            out.push(7);
            out.extend_from_slice(&int_like(other).unwrap_or_default().to_le_bytes());
        }
    }
}

/// Keys → locations, with integer keys stored unboxed.
#[derive(Debug)]
enum KeyMap {
    Int(HashMap<i64, Loc, Xxh3DefaultBuilder>),
    Bytes(HashMap<Box<[u8]>, Loc, Xxh3DefaultBuilder>),
}

impl KeyMap {
    fn get(&self, key: &IndexKey) -> Option<Loc> {
        match (self, key) {
            (KeyMap::Int(m), IndexKey::Int(k)) => m.get(k).copied(),
            (KeyMap::Bytes(m), IndexKey::Bytes(k)) => m.get(k).copied(),
            _ => None,
        }
    }

    fn insert(&mut self, key: IndexKey, loc: Loc) -> Option<Loc> {
        match (self, key) {
            (KeyMap::Int(m), IndexKey::Int(k)) => m.insert(k, loc),
            (KeyMap::Bytes(m), IndexKey::Bytes(k)) => m.insert(k, loc),
            // A key of the other shape: the table's key is not what the bucket was built
            // for. `of` is deterministic per key type, so this cannot happen.
            (KeyMap::Int(_), IndexKey::Bytes(_)) | (KeyMap::Bytes(_), IndexKey::Int(_)) => None,
        }
    }

    fn remove(&mut self, key: &IndexKey) -> Option<Loc> {
        match (self, key) {
            (KeyMap::Int(m), IndexKey::Int(k)) => m.remove(k),
            (KeyMap::Bytes(m), IndexKey::Bytes(k)) => m.remove(k),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            KeyMap::Int(m) => m.len(),
            KeyMap::Bytes(m) => m.len(),
        }
    }

    fn remap(&mut self, mut f: impl FnMut(&mut Loc) -> Result<()>) -> Result<()> {
        match self {
            KeyMap::Int(m) => m.values_mut().try_for_each(&mut f),
            KeyMap::Bytes(m) => m.values_mut().try_for_each(&mut f),
        }
    }

    fn heap_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the slots, buckets = capacity * 8/7.
        match self {
            KeyMap::Int(m) => m.capacity() * 8 / 7 * (1 + std::mem::size_of::<(i64, Loc)>()),
            KeyMap::Bytes(m) => {
                m.capacity() * 8 / 7 * (1 + std::mem::size_of::<(Box<[u8]>, Loc)>())
                    + m.keys().map(|k| k.len()).sum::<usize>()
            }
        }
    }
}

/// A data file of the bucket.
#[derive(Clone, Debug)]
pub struct FileSlot {
    /// Its path.
    pub path: Arc<str>,
    /// Rows written.
    pub rows: u32,
    /// File size (estimated until written).
    pub bytes: u64,
    /// Deleted positions.
    pub deleted: RoaringBitmap,
    /// Whether its write finished (a rewrite may read it).
    pub written: bool,
    /// Whether a rewrite is reading it.
    pub rewriting: bool,
    /// Its current deletion vector (vector mode).
    pub vector: Option<FileRef>,
}

impl DeleteSlot {
    fn entries(&self) -> u64 {
        self.named.values().map(|b| b.len()).sum()
    }
}

impl FileSlot {
    fn deleted_ratio(&self) -> f64 {
        if self.rows == 0 { 1.0 } else { self.deleted.len() as f64 / self.rows as f64 }
    }
}

/// A delete file of the bucket that is not a deletion vector.
#[derive(Clone, Debug)]
pub struct DeleteSlot {
    /// The file.
    pub file: FileRef,
    /// The positions it names, per data file (position deletes).
    pub named: BTreeMap<FileId, RoaringBitmap>,
    /// An equality-delete file (from a time the table was written in equality mode): it
    /// names no file and applies by sequence number.
    pub equality: bool,
}

/// What an epoch did to a bucket.
#[derive(Debug, Default, PartialEq)]
pub struct EpochDelta {
    /// The epoch's data file, if it has rows.
    pub file: Option<FileId>,
    /// Rows, in the order they must be written (position = index).
    pub rows: Vec<Row>,
    /// Positions deleted by the epoch, per data file, ascending.
    pub deleted: BTreeMap<FileId, Vec<u32>>,
}

/// A rewrite's input: a data file and its deleted rows when the rewrite started.
#[derive(Clone, Debug)]
pub struct RewriteInput {
    /// The file.
    pub file: FileId,
    /// Its path.
    pub path: Arc<str>,
    /// Rows in it.
    pub rows: u32,
    /// Deleted positions at the start.
    pub deleted: RoaringBitmap,
}

/// A planned rewrite of one bucket.
#[derive(Clone, Debug)]
pub struct RewritePlan {
    /// Data files to rewrite.
    pub inputs: Vec<RewriteInput>,
    /// Bytes the inputs hold (for sizing outputs).
    pub input_bytes: u64,
    /// Every data file older than the bucket's equality deletes is an input, so those
    /// deletes are retired with the rewrite.
    pub retire_equality: bool,
}

/// A file a rewrite wrote: its rows came from `sources`, in order.
#[derive(Clone, Debug)]
pub struct RewriteOutput {
    /// Path.
    pub path: Arc<str>,
    /// Size.
    pub bytes: u64,
    /// Where each of its rows came from.
    pub sources: Vec<Loc>,
}

/// What finishing a rewrite changed.
#[derive(Clone, Debug, Default)]
pub struct RewriteApplied {
    /// The output files, now in the bucket.
    pub new_files: Vec<FileId>,
    /// Entries the rewrite's commit retires: the inputs, their deletion vectors, and delete
    /// files that name nothing live any more.
    pub removed: Vec<FileRef>,
    /// Deletes to write with the rewrite, per data file: rows deleted while it ran (now at
    /// their new positions) and, when consolidating, every deleted row of the other files.
    /// Vector mode: the file's whole deleted set.
    pub deletes: BTreeMap<FileId, Vec<u32>>,
}

/// Counts for health and thresholds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Live keys.
    pub keys: u64,
    /// Data files.
    pub data_files: u64,
    /// Delete files (position or equality files, plus deletion vectors).
    pub delete_files: u64,
    /// Deleted rows still in data files.
    pub deleted_rows: u64,
    /// Approximate heap bytes of the key map.
    pub index_bytes: u64,
}

/// The index of one bucket. See the module docs.
#[derive(Debug)]
pub struct BucketIndex {
    keys: KeyMap,
    files: BTreeMap<FileId, FileSlot>,
    deletes: Vec<DeleteSlot>,
    next_file: FileId,
    /// Live rows found twice at a rebuild: deleted with the bucket's next epoch.
    stray: Vec<Loc>,
}

impl BucketIndex {
    /// An empty bucket whose keys are one integer-like column (`int_keys`) or not.
    pub fn new(int_keys: bool) -> BucketIndex {
        let keys = match int_keys {
            true => KeyMap::Int(HashMap::with_hasher(Xxh3DefaultBuilder::new())),
            false => KeyMap::Bytes(HashMap::with_hasher(Xxh3DefaultBuilder::new())),
        };
        BucketIndex { keys, files: BTreeMap::new(), deletes: Vec::new(), next_file: 0, stray: Vec::new() }
    }

    /// Whether a key type is stored unboxed.
    pub fn int_keys(types: &[floe_engine::schema::ColumnType]) -> bool {
        use floe_engine::schema::ColumnType as T;
        matches!(types, [T::Int | T::Long | T::Date | T::Time | T::Timestamp | T::TimestampTz])
    }

    // ---- building (rebuild at start) ----

    /// Adds a data file found in the table.
    pub fn add_file(&mut self, path: &str, rows: u64, bytes: u64, deleted: RoaringBitmap) -> Result<FileId> {
        let rows = u32::try_from(rows)
            .map_err(|_| Error::new(ErrorKind::Data, format!("{path} holds {rows} rows; floe indexes at most 2^32")))?;
        let id = self.next_file;
        self.next_file += 1;
        self.files.insert(
            id,
            FileSlot { path: Arc::from(path), rows, bytes, deleted, written: true, rewriting: false, vector: None },
        );
        Ok(id)
    }

    /// Records a live row found in the table. If the key was already live elsewhere, the
    /// row in the later file wins and the other is queued for deletion.
    pub fn add_live(&mut self, key: IndexKey, loc: Loc) {
        if let Some(previous) = self.keys.insert(key.clone(), loc) {
            let (keep, drop) = if previous > loc { (previous, loc) } else { (loc, previous) };
            self.keys.insert(key, keep);
            self.stray.push(drop);
        }
    }

    /// Marks rows of a file deleted (equality deletes found at a rebuild).
    pub fn mark_deleted(&mut self, file: FileId, positions: &[u32]) {
        if let Some(f) = self.files.get_mut(&file) {
            f.deleted.extend(positions.iter().copied());
        }
    }

    /// Records a delete file found in the table: position deletes naming positions of
    /// data files by path, or an equality-delete file.
    pub fn add_delete_file<'a>(
        &mut self,
        file: FileRef,
        named: impl IntoIterator<Item = (&'a str, RoaringBitmap)>,
        equality: bool,
    ) {
        let by_path: HashMap<&str, FileId> = self.files.iter().map(|(id, f)| (&*f.path, *id)).collect();
        let named = named.into_iter().filter_map(|(p, b)| by_path.get(p).map(|id| (*id, b))).collect();
        self.deletes.push(DeleteSlot { file, named, equality });
    }

    /// Records a data file's current deletion vector.
    pub fn set_vector(&mut self, file: FileId, vector: FileRef) -> Option<FileRef> {
        self.files.get_mut(&file).and_then(|f| f.vector.replace(vector))
    }

    /// The id of the file at `path`.
    pub fn file_id(&self, path: &str) -> Option<FileId> {
        self.files.iter().find(|(_, f)| &*f.path == path).map(|(id, _)| *id)
    }

    /// Where `key`'s live row sits.
    pub fn lookup(&self, key: &IndexKey) -> Option<Loc> {
        self.keys.get(key)
    }

    // ---- epochs ----

    /// Applies an epoch's net changes: each key's new row, or `None` for a delete. A key
    /// that is live is deleted at its position first, whatever the change (a redelivered
    /// insert, an update without a before image, a re-insert of a deleted key).
    pub fn apply_epoch(
        &mut self,
        new_file: &str,
        changes: impl IntoIterator<Item = (IndexKey, Option<Row>)>,
    ) -> Result<EpochDelta> {
        let file = self.next_file;
        let mut delta = EpochDelta::default();
        for loc in std::mem::take(&mut self.stray) {
            delta.deleted.entry(loc.file).or_default().push(loc.pos);
        }
        for (key, row) in changes {
            let old = match row {
                Some(row) => {
                    let pos = u32::try_from(delta.rows.len())
                        .map_err(|_| Error::new(ErrorKind::Data, "an epoch wrote more than 2^32 rows to one bucket"))?;
                    delta.rows.push(row);
                    self.keys.insert(key, Loc { file, pos })
                }
                None => self.keys.remove(&key),
            };
            if let Some(loc) = old {
                delta.deleted.entry(loc.file).or_default().push(loc.pos);
            }
        }
        for (id, positions) in &mut delta.deleted {
            positions.sort_unstable();
            positions.dedup();
            let slot = self.files.get_mut(id).ok_or_else(|| {
                Error::new(ErrorKind::Internal, format!("the key index names data file {id}, which it does not hold"))
            })?;
            for &p in positions.iter() {
                slot.deleted.insert(p);
            }
        }
        if !delta.rows.is_empty() {
            self.next_file += 1;
            self.files.insert(
                file,
                FileSlot {
                    path: Arc::from(new_file),
                    rows: delta.rows.len() as u32,
                    bytes: 0,
                    deleted: RoaringBitmap::new(),
                    written: false,
                    rewriting: false,
                    vector: None,
                },
            );
            delta.file = Some(file);
        }
        Ok(delta)
    }

    /// Records a position-delete file written for the bucket, naming `positions`.
    pub fn add_position_deletes(&mut self, file: FileRef, positions: &BTreeMap<FileId, Vec<u32>>) {
        let named = positions.iter().map(|(id, ps)| (*id, ps.iter().copied().collect())).collect();
        self.deletes.push(DeleteSlot { file, named, equality: false });
    }

    /// Marks a data file written (its size known): rewrites may read it.
    pub fn mark_written(&mut self, file: FileId, bytes: u64) {
        if let Some(f) = self.files.get_mut(&file) {
            f.written = true;
            f.bytes = bytes;
        }
    }

    /// A data file.
    pub fn file(&self, id: FileId) -> Option<&FileSlot> {
        self.files.get(&id)
    }

    /// Delete files that name no live data file any more, or (vector mode) only files
    /// whose vectors now hold every deleted row: forgotten here, to be retired.
    pub fn take_dangling(&mut self, mode: DeleteMode) -> Vec<FileRef> {
        let files = &self.files;
        let covered = |id: &FileId| files.get(id).is_some_and(|f| f.vector.is_some());
        let (gone, kept): (Vec<DeleteSlot>, Vec<DeleteSlot>) =
            std::mem::take(&mut self.deletes).into_iter().partition(|d| {
                !d.equality && (d.named.is_empty() || (mode == DeleteMode::Vector && d.named.keys().all(covered)))
            });
        self.deletes = kept;
        gone.into_iter().map(|d| d.file).collect()
    }

    // ---- compaction ----

    /// Counts of the bucket.
    pub fn stats(&self) -> BucketStats {
        BucketStats {
            keys: self.keys.len() as u64,
            data_files: self.files.len() as u64,
            delete_files: (self.deletes.len() + self.files.values().filter(|f| f.vector.is_some()).count()) as u64,
            deleted_rows: self.files.values().map(|f| f.deleted.len()).sum(),
            index_bytes: self.keys.heap_bytes() as u64,
        }
    }

    /// Whether the bucket passes a threshold, and what to rewrite: small files
    /// (size-tiered) when there are too many data files, files with too many deleted rows,
    /// every file while equality deletes remain. `None` if nothing is due, or a rewrite is
    /// running.
    pub fn plan_rewrite(&self, settings: &MaintenanceSettings) -> Option<RewritePlan> {
        if self.files.values().any(|f| f.rewriting) {
            return None;
        }
        let written: Vec<(&FileId, &FileSlot)> = self.files.iter().filter(|(_, f)| f.written).collect();
        // Equality deletes (from a time the table was in equality mode) go only with a
        // rewrite of every file they may apply to.
        let legacy = self.deletes.iter().any(|d| d.equality);
        let mut inputs: BTreeMap<FileId, &FileSlot> = BTreeMap::new();
        if legacy {
            inputs.extend(written.iter().map(|(id, f)| (**id, *f)));
        }
        // Files that lost too many rows.
        for (id, f) in &written {
            if f.deleted.len() as u32 == f.rows || f.deleted_ratio() >= settings.max_delete_ratio {
                inputs.insert(**id, f);
            }
        }
        // Too many files: merge the small ones, size-tiered. A file four times the size of
        // all smaller candidates together stays, so rows are rewritten a logarithmic
        // number of times, not once per merge.
        if self.files.len() > settings.max_data_files {
            let small = settings.small_file_size();
            let mut candidates: Vec<(&FileId, &FileSlot)> =
                written.iter().copied().filter(|(_, f)| f.bytes < small).collect();
            candidates.sort_by_key(|(id, f)| (std::cmp::Reverse(f.bytes), **id));
            while candidates.len() >= 2 {
                let rest: u64 = candidates[1..].iter().map(|(_, f)| f.bytes).sum();
                if candidates[0].1.bytes < 4 * rest {
                    break;
                }
                candidates.remove(0);
            }
            if candidates.len() >= 2 {
                inputs.extend(candidates.into_iter().map(|(id, f)| (*id, f)));
            }
        }
        // One clean file alone is not worth rewriting.
        if inputs.len() == 1 && inputs.values().all(|f| f.deleted.is_empty()) && !legacy {
            inputs.clear();
        }
        if inputs.is_empty() {
            return None;
        }
        let input_bytes = inputs.values().map(|f| f.bytes).sum();
        Some(RewritePlan {
            inputs: inputs
                .into_iter()
                .map(|(id, f)| RewriteInput {
                    file: id,
                    path: Arc::clone(&f.path),
                    rows: f.rows,
                    deleted: f.deleted.clone(),
                })
                .collect(),
            input_bytes,
            retire_equality: legacy,
        })
    }

    /// Position mode, with delete files scoped to one data file each (as Iceberg's own
    /// writers do, so a reader opens only the deletes of the file it reads): the epoch's
    /// deletes of each data file, and when that file would then have more than `max`
    /// delete files, the positions of its small ones too, size-tiered (a file four times
    /// the size of all smaller ones and the epoch's together stays); those are retired in
    /// the same commit (they were all committed before it). So a delete entry is rewritten
    /// a logarithmic number of times. Returns the positions to write, per data file, and
    /// the files to retire.
    pub fn epoch_deletes(&mut self, max: usize, epoch: &EpochDelta) -> (BTreeMap<FileId, Vec<u32>>, Vec<FileRef>) {
        let mut out = BTreeMap::new();
        let mut retire: BTreeSet<usize> = BTreeSet::new();
        for (id, incoming) in &epoch.deleted {
            let mut slots: Vec<usize> = (0..self.deletes.len())
                .filter(|i| {
                    let d = &self.deletes[*i];
                    !d.equality && d.named.len() == 1 && d.named.contains_key(id)
                })
                .collect();
            let mut merged: RoaringBitmap = incoming.iter().copied().collect();
            if slots.len() + 1 > max {
                slots.sort_by_key(|i| std::cmp::Reverse(self.deletes[*i].entries()));
                // Keep the largest files while each is four times the rest, leaving room
                // for the merged one: at most `max` files name this data file afterwards.
                let mut kept = 0;
                while kept + 2 <= max && kept < slots.len() {
                    let rest: u64 = slots[kept + 1..].iter().map(|i| self.deletes[*i].entries()).sum::<u64>()
                        + incoming.len() as u64;
                    if self.deletes[slots[kept]].entries() < 4 * rest {
                        break;
                    }
                    kept += 1;
                }
                for i in slots.split_off(kept) {
                    if let Some(b) = self.deletes[i].named.get(id) {
                        merged |= b;
                    }
                    retire.insert(i);
                }
            }
            out.insert(*id, merged.iter().collect());
        }
        let mut retired = Vec::new();
        let mut kept = Vec::new();
        for (i, slot) in std::mem::take(&mut self.deletes).into_iter().enumerate() {
            match retire.contains(&i) {
                true => retired.push(slot.file),
                false => kept.push(slot),
            }
        }
        self.deletes = kept;
        (out, retired)
    }

    /// A rewrite of every data file of the bucket (an erasure: the rows of its keys, live or
    /// deleted, may be in any of them), with every delete file retired; `None` while a file
    /// is still being written or rewritten (ask again later).
    pub fn plan_erase(&self) -> Option<RewritePlan> {
        if self.files.values().any(|f| f.rewriting || !f.written) {
            return None;
        }
        Some(RewritePlan {
            inputs: self
                .files
                .iter()
                .map(|(id, f)| RewriteInput {
                    file: *id,
                    path: Arc::clone(&f.path),
                    rows: f.rows,
                    deleted: f.deleted.clone(),
                })
                .collect(),
            input_bytes: self.files.values().map(|f| f.bytes).sum(),
            retire_equality: true,
        })
    }

    /// Marks a plan's inputs as being rewritten.
    pub fn begin_rewrite(&mut self, plan: &RewritePlan) {
        for i in &plan.inputs {
            if let Some(f) = self.files.get_mut(&i.file) {
                f.rewriting = true;
            }
        }
    }

    /// Forgets a rewrite that failed: its inputs stay as they are.
    pub fn abort_rewrite(&mut self, plan: &RewritePlan) {
        for i in &plan.inputs {
            if let Some(f) = self.files.get_mut(&i.file) {
                f.rewriting = false;
            }
        }
    }

    /// Applies a finished rewrite: remaps keys to the outputs, carries over rows deleted
    /// while it ran, and says what its commit retires and which deletes it writes. Keys in
    /// `erased` whose live row the rewrite left out (an erasure) are forgotten.
    pub fn finish_rewrite(
        &mut self,
        plan: &RewritePlan,
        outputs: Vec<RewriteOutput>,
        mode: DeleteMode,
        erased: &HashSet<IndexKey>,
    ) -> Result<RewriteApplied> {
        let mut applied = RewriteApplied::default();
        // Old (file, pos) → new location.
        let mut moved: HashMap<FileId, Vec<Option<Loc>>> =
            plan.inputs.iter().map(|i| (i.file, vec![None; i.rows as usize])).collect();
        for out in outputs {
            let id = self.next_file;
            self.next_file += 1;
            let rows = u32::try_from(out.sources.len())
                .map_err(|_| Error::new(ErrorKind::Data, "a rewrite output holds more than 2^32 rows"))?;
            for (pos, src) in out.sources.iter().enumerate() {
                let slot = moved.get_mut(&src.file).and_then(|v| v.get_mut(src.pos as usize)).ok_or_else(|| {
                    Error::new(ErrorKind::Internal, format!("a rewrite output names {src:?}, not an input"))
                })?;
                *slot = Some(Loc { file: id, pos: pos as u32 });
            }
            self.files.insert(
                id,
                FileSlot {
                    path: out.path,
                    rows,
                    bytes: out.bytes,
                    deleted: RoaringBitmap::new(),
                    written: true,
                    rewriting: false,
                    vector: None,
                },
            );
            applied.new_files.push(id);
        }
        // Erased keys whose row was left out.
        for key in erased {
            if let Some(loc) = self.keys.get(key)
                && moved.get(&loc.file).is_some_and(|v| v.get(loc.pos as usize).copied().flatten().is_none())
            {
                self.keys.remove(key);
            }
        }
        // Keys.
        self.keys.remap(|loc| {
            if let Some(v) = moved.get(&loc.file) {
                *loc = v.get(loc.pos as usize).copied().flatten().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Internal,
                        format!("a live row at {loc:?} is missing from the rewrite's output; the rewrite is discarded"),
                    )
                })?;
            }
            Ok(())
        })?;
        for loc in &mut self.stray {
            if let Some(new) = moved.get(&loc.file).and_then(|v| v.get(loc.pos as usize).copied().flatten()) {
                *loc = new;
            }
        }
        // Rows deleted while the rewrite ran: carried to their new positions.
        for input in &plan.inputs {
            let Some(old) = self.files.remove(&input.file) else { continue };
            let since = &old.deleted - &input.deleted;
            for p in since.iter() {
                if let Some(new) = moved[&input.file].get(p as usize).copied().flatten() {
                    if let Some(f) = self.files.get_mut(&new.file) {
                        f.deleted.insert(new.pos);
                    }
                    applied.deletes.entry(new.file).or_default().push(new.pos);
                }
            }
            applied.removed.push(FileRef::path(&*old.path));
            applied.removed.extend(old.vector);
        }
        let gone: BTreeSet<FileId> = plan.inputs.iter().map(|i| i.file).collect();
        for d in &mut self.deletes {
            d.named.retain(|r, _| !gone.contains(r));
        }
        // Delete files: equality ones go once every older data file is rewritten; position
        // ones once they name nothing live.
        let (gone_deletes, kept): (Vec<DeleteSlot>, Vec<DeleteSlot>) = std::mem::take(&mut self.deletes)
            .into_iter()
            .partition(|d| if d.equality { plan.retire_equality } else { d.named.is_empty() });
        self.deletes = kept;
        applied.removed.extend(gone_deletes.into_iter().map(|d| d.file));
        for positions in applied.deletes.values_mut() {
            positions.sort_unstable();
            positions.dedup();
        }
        if mode == DeleteMode::Vector {
            // A vector holds its file's whole deleted set.
            for (id, positions) in &mut applied.deletes {
                if let Some(f) = self.files.get(id) {
                    *positions = f.deleted.iter().collect();
                }
            }
        }
        Ok(applied)
    }

    /// The ids of the bucket's data files.
    pub fn file_ids(&self) -> impl Iterator<Item = FileId> + '_ {
        self.files.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn key(k: i64) -> IndexKey {
        IndexKey::of(&[Value::Long(k)])
    }

    fn row(k: i64, v: i64) -> Row {
        Row::new(vec![Value::Long(k), Value::Long(v)])
    }

    /// The index plus what every file holds, so live rows can be read back as a reader would.
    struct Table {
        index: BucketIndex,
        contents: HashMap<FileId, Vec<Row>>,
        epoch: u64,
    }

    impl Table {
        fn new() -> Table {
            Table { index: BucketIndex::new(true), contents: HashMap::new(), epoch: 0 }
        }

        fn epoch(&mut self, changes: Vec<(i64, Option<i64>)>) -> EpochDelta {
            self.epoch += 1;
            let path = format!("e{}.parquet", self.epoch);
            let delta = self
                .index
                .apply_epoch(&path, changes.into_iter().map(|(k, v)| (key(k), v.map(|v| row(k, v)))))
                .expect("epoch");
            if let Some(f) = delta.file {
                self.contents.insert(f, delta.rows.clone());
                self.index.mark_written(f, 100 * delta.rows.len() as u64);
            }
            delta
        }

        /// Live rows as a reader sees them: every file's rows minus its deleted positions.
        fn live(&self) -> BTreeMap<i64, i64> {
            let mut out = BTreeMap::new();
            for id in self.index.file_ids() {
                let f = self.index.file(id).expect("file");
                for (pos, r) in self.contents[&id].iter().enumerate() {
                    if !f.deleted.contains(pos as u32) {
                        let (Value::Long(k), Value::Long(v)) = (&r.0[0], &r.0[1]) else { panic!("row") };
                        assert!(out.insert(*k, *v).is_none(), "key {k} is live twice");
                    }
                }
            }
            out
        }

        /// Runs a rewrite the way the base writer does: reads the inputs' rows live at the
        /// start, writes them in outputs of `per_file` rows.
        fn rewrite_outputs(&mut self, plan: &RewritePlan, per_file: usize) -> Vec<RewriteOutput> {
            self.erasing_outputs(plan, per_file, &HashSet::new())
        }

        /// The same, leaving out every row of the `erased` keys.
        fn erasing_outputs(
            &mut self,
            plan: &RewritePlan,
            per_file: usize,
            erased: &HashSet<i64>,
        ) -> Vec<RewriteOutput> {
            let mut sources = Vec::new();
            for input in &plan.inputs {
                for pos in 0..input.rows {
                    let Value::Long(k) = &self.contents[&input.file][pos as usize].0[0] else { panic!("row") };
                    if !input.deleted.contains(pos) && !erased.contains(k) {
                        sources.push(Loc { file: input.file, pos });
                    }
                }
            }
            sources
                .chunks(per_file.max(1))
                .enumerate()
                .map(|(i, chunk)| RewriteOutput {
                    path: Arc::from(format!("r{}-{i}.parquet", self.epoch)),
                    bytes: 1000,
                    sources: chunk.to_vec(),
                })
                .collect()
        }

        /// What a reader of position deletes sees: the union of the delete files' positions
        /// is each data file's deleted set, no more, no less.
        fn assert_delete_files_cover_exactly_the_deleted_rows(&self, seed: u64, step: usize) {
            let mut named: BTreeMap<FileId, RoaringBitmap> = BTreeMap::new();
            for d in &self.index.deletes {
                for (id, b) in &d.named {
                    *named.entry(*id).or_default() |= b;
                }
            }
            for id in self.index.file_ids() {
                let deleted = &self.index.file(id).expect("file").deleted;
                let covered = named.remove(&id).unwrap_or_default();
                assert_eq!(&covered, deleted, "seed {seed} step {step}: file {id}'s delete files");
            }
            assert!(named.is_empty(), "seed {seed} step {step}: delete files name files that are gone: {named:?}");
            let mut per_file: BTreeMap<FileId, usize> = BTreeMap::new();
            for d in &self.index.deletes {
                for id in d.named.keys() {
                    *per_file.entry(*id).or_default() += 1;
                }
            }
            assert!(
                per_file.values().all(|n| *n <= 3),
                "seed {seed} step {step}: delete files per data file {per_file:?}"
            );
        }

        fn finish(
            &mut self,
            plan: &RewritePlan,
            outputs: Vec<RewriteOutput>,
            mode: DeleteMode,
            erased: &HashSet<i64>,
        ) -> RewriteApplied {
            let rows: Vec<Vec<Row>> = outputs
                .iter()
                .map(|o| o.sources.iter().map(|l| self.contents[&l.file][l.pos as usize].clone()).collect())
                .collect();
            let erased: HashSet<IndexKey> = erased.iter().map(|k| key(*k)).collect();
            let applied = self.index.finish_rewrite(plan, outputs, mode, &erased).expect("finish");
            for (id, rows) in applied.new_files.iter().zip(rows) {
                self.contents.insert(*id, rows);
            }
            applied
        }
    }

    #[test]
    fn upserts_resolve_through_the_index() {
        let mut t = Table::new();
        let d = t.epoch(vec![(1, Some(10)), (2, Some(20))]);
        assert!(d.deleted.is_empty());
        // An update without a before image, a delete, a redelivered insert.
        let d = t.epoch(vec![(1, Some(11)), (2, None), (3, Some(30))]);
        assert_eq!(d.deleted, BTreeMap::from([(0, vec![0, 1])]));
        let d = t.epoch(vec![(3, Some(30)), (2, Some(21))]);
        assert_eq!(d.deleted, BTreeMap::from([(1, vec![1])]), "the redelivered insert deletes its earlier row");
        assert_eq!(t.live(), BTreeMap::from([(1, 11), (2, 21), (3, 30)]));
        // Deleting a key that is not live names no row.
        let d = t.epoch(vec![(99, None)]);
        assert!(d.deleted.is_empty() && d.file.is_none());
    }

    #[test]
    fn keys_of_other_shapes_are_encoded_canonically() {
        let a = IndexKey::of(&[Value::String("ab".into()), Value::Long(1)]);
        let b = IndexKey::of(&[Value::String("a".into()), Value::String("b1".into())]);
        assert_ne!(a, b, "the encoding is prefix-free");
        assert_eq!(IndexKey::of(&[Value::Int(5)]), IndexKey::of(&[Value::Long(5)]), "widened keys stay equal");
        let mut index = BucketIndex::new(false);
        let d = index.apply_epoch("f", [(a.clone(), Some(row(1, 1)))]).expect("epoch");
        assert_eq!(d.rows.len(), 1);
        let d = index.apply_epoch("g", [(a, None)]).expect("epoch");
        assert_eq!(d.deleted, BTreeMap::from([(0, vec![0])]));
    }

    /// The law: whatever the epochs and rewrites, reading every file minus its deleted rows
    /// gives exactly the model, and each rewrite carries every delete made while it ran.
    #[test]
    fn live_rows_always_equal_the_model_across_epochs_and_rewrites() {
        for seed in 0..40u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut t = Table::new();
            let mut model: BTreeMap<i64, i64> = BTreeMap::new();
            let settings = MaintenanceSettings { max_data_files: 3, max_delete_files: 2, ..Default::default() };
            let _ = &settings;
            let mode = if seed % 2 == 0 { DeleteMode::Position } else { DeleteMode::Vector };
            // A running rewrite: its plan, epochs left, and for an erasure its keys; and the
            // keys changed since it started (they keep their new rows).
            let mut running: Option<(RewritePlan, usize, HashSet<i64>)> = None;
            let mut touched: HashSet<i64> = HashSet::new();
            for step in 0..60 {
                let mut changes = BTreeMap::new();
                for _ in 0..rng.random_range(1..12) {
                    let k = rng.random_range(0..40);
                    let v = if rng.random_bool(0.25) { None } else { Some(rng.random_range(0..1000)) };
                    changes.insert(k, v);
                }
                touched.extend(changes.keys().copied());
                for (k, v) in &changes {
                    match v {
                        Some(v) => model.insert(*k, *v),
                        None => model.remove(k),
                    };
                }
                let delta = t.epoch(changes.into_iter().collect());
                if mode == DeleteMode::Position {
                    // What the base writer does: consolidate past the limit, record the file.
                    let (positions, _retired) = t.index.epoch_deletes(2, &delta);
                    for (id, ps) in positions {
                        t.index
                            .add_position_deletes(FileRef::path(format!("d{step}-{id}")), &BTreeMap::from([(id, ps)]));
                    }
                    let _ = t.index.take_dangling(mode);
                    t.assert_delete_files_cover_exactly_the_deleted_rows(seed, step);
                }
                if mode == DeleteMode::Vector {
                    for id in t.index.file_ids().collect::<Vec<_>>() {
                        t.index.set_vector(id, FileRef { path: format!("dv{step}"), content_offset: Some(id as i64) });
                    }
                }
                // A rewrite runs for a few epochs, then finishes.
                match running.take() {
                    Some((plan, 0, erased)) => {
                        let outputs = t.erasing_outputs(&plan, 7, &erased);
                        // Rows of erased keys deleted while it ran have nowhere to be carried.
                        let dropped = |i: &RewriteInput, pos: u32| {
                            let Value::Long(k) = &t.contents[&i.file][pos as usize].0[0] else { panic!("row") };
                            erased.contains(k)
                        };
                        let carried_expected: u64 = plan
                            .inputs
                            .iter()
                            .map(|i| {
                                let now = t.index.file(i.file).map(|f| f.deleted.clone()).unwrap_or_default();
                                (&now - &i.deleted).iter().filter(|p| !dropped(i, *p)).count() as u64
                            })
                            .sum();
                        let applied = t.finish(&plan, outputs, mode, &erased);
                        for k in &erased {
                            if !touched.contains(k) {
                                model.remove(k);
                            }
                        }
                        for k in &erased {
                            assert!(
                                t.index.lookup(&key(*k)).is_some() == model.contains_key(k),
                                "seed {seed}: erased key {k} is indexed iff it came back"
                            );
                        }
                        if mode == DeleteMode::Position {
                            for (id, ps) in &applied.deletes {
                                let one = BTreeMap::from([(*id, ps.clone())]);
                                t.index.add_position_deletes(FileRef::path(format!("carry{step}-{id}")), &one);
                            }
                        }
                        let carried: u64 =
                            applied.new_files.iter().map(|id| t.index.file(*id).map_or(0, |f| f.deleted.len())).sum();
                        assert_eq!(
                            carried, carried_expected,
                            "seed {seed}: every delete made while the rewrite ran is carried"
                        );
                        for i in &plan.inputs {
                            assert!(
                                applied.removed.contains(&FileRef::path(&*i.path)),
                                "seed {seed}: inputs are retired"
                            );
                        }
                    }
                    Some((plan, n, erased)) => running = Some((plan, n - 1, erased)),
                    None => {
                        touched.clear();
                        if rng.random_bool(0.3) {
                            // An erasure of a few keys, live or not.
                            if let Some(plan) = t.index.plan_erase() {
                                let erased: HashSet<i64> =
                                    (0..rng.random_range(1..4)).map(|_| rng.random_range(0..40)).collect();
                                t.index.begin_rewrite(&plan);
                                running = Some((plan, rng.random_range(0..3), erased));
                            }
                        } else if let Some(plan) = t.index.plan_rewrite(&settings) {
                            t.index.begin_rewrite(&plan);
                            running = Some((plan, rng.random_range(0..3), HashSet::new()));
                        }
                    }
                }
                assert_eq!(t.live(), model, "seed {seed} step {step}");
                let _ = t.index.take_dangling(mode);
            }
            assert!(t.index.stats().data_files < 20, "seed {seed}: rewrites keep the bucket small");
        }
    }

    #[test]
    fn each_data_file_keeps_at_most_max_delete_files_size_tiered() {
        let mut t = Table::new();
        t.epoch((0..1000).map(|k| (k, Some(k))).collect());
        let d = t.epoch((0..200).map(|k| (k, None)).collect());
        let (positions, retired) = t.index.epoch_deletes(2, &d);
        assert!(retired.is_empty());
        t.index.add_position_deletes(FileRef::path("big"), &positions);
        let d = t.epoch(vec![(300, None)]);
        let (positions, retired) = t.index.epoch_deletes(2, &d);
        assert!(retired.is_empty(), "two files are within the limit");
        t.index.add_position_deletes(FileRef::path("small"), &positions);
        let d = t.epoch(vec![(301, None)]);
        let (positions, retired) = t.index.epoch_deletes(2, &d);
        assert_eq!(retired, vec![FileRef::path("small")], "the big file stays, the small one merges");
        assert_eq!(positions, BTreeMap::from([(0, vec![300, 301])]));
        t.index.add_position_deletes(FileRef::path("merged"), &positions);
        // Deletes of another data file are scoped to it.
        let d = t.epoch(vec![(1000, Some(1)), (1001, Some(1))]);
        let d2 = t.epoch(vec![(1000, None)]);
        let (positions, retired) = t.index.epoch_deletes(2, &d2);
        assert!(retired.is_empty());
        assert_eq!(positions, BTreeMap::from([(d.file.expect("file"), vec![0])]));
        assert_eq!(t.live().len(), 1000 - 202 + 1);
    }

    #[test]
    fn no_data_file_is_named_by_more_than_max_delete_files() {
        for max in 1..4usize {
            let mut t = Table::new();
            t.epoch((0..5000).map(|k| (k, Some(k))).collect());
            let mut live: Vec<FileRef> = Vec::new();
            let mut next = 0;
            // Shrinking epochs: each is small against the files before it, the case where
            // size-tiering alone would keep every file.
            for size in [1000, 200, 40, 8, 2, 1, 1, 1] {
                let d = t.epoch((next..next + size).map(|k| (k, None)).collect());
                next += size;
                let (positions, retired) = t.index.epoch_deletes(max, &d);
                live.retain(|f| !retired.contains(f));
                let file = FileRef::path(format!("d{next}"));
                t.index.add_position_deletes(file.clone(), &positions);
                live.push(file);
                assert!(live.len() <= max, "max {max}: {} delete files name one data file", live.len());
            }
            let named: u64 = t.index.deletes.iter().map(|d| d.entries()).sum();
            assert_eq!(named, next as u64, "max {max}: every deleted row is named once");
        }
    }

    #[test]
    fn small_files_merge_size_tiered_and_a_big_file_stays() {
        let mut t = Table::new();
        t.epoch((0..1000).map(|k| (k, Some(k))).collect());
        for e in 0..9 {
            t.epoch(vec![(2000 + e, Some(e))]);
        }
        let settings = MaintenanceSettings { max_data_files: 8, ..Default::default() };
        let plan = t.index.plan_rewrite(&settings).expect("ten files");
        let merged: Vec<FileId> = plan.inputs.iter().map(|i| i.file).collect();
        assert_eq!(merged.len(), 9, "the nine small files merge: {merged:?}");
        assert!(!merged.contains(&0), "the big file is left alone");
    }

    #[test]
    fn delete_files_naming_only_rewritten_files_dangle() {
        let mut t = Table::new();
        t.epoch(vec![(1, Some(1)), (2, Some(2))]);
        let d = t.epoch(vec![(1, None)]);
        t.index.add_position_deletes(FileRef::path("d1"), &d.deleted);
        let settings = MaintenanceSettings { max_delete_ratio: 0.5, ..Default::default() };
        let plan = t.index.plan_rewrite(&settings).expect("half deleted");
        let outputs = t.rewrite_outputs(&plan, 10);
        let applied = t.finish(&plan, outputs, DeleteMode::Position, &HashSet::new());
        assert!(applied.removed.contains(&FileRef::path("d1")), "{applied:?}");
        assert_eq!(t.live(), BTreeMap::from([(2, 2)]));
    }
}
