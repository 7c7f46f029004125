//! Compaction of one bucket by the worker that owns it: a background job reads the live
//! rows of the chosen files and writes them into files of the target size; when it
//! finishes, the key index is remapped and the rows deleted meanwhile are carried over, in
//! the same step, and the result goes to the committer as one rewrite.
//!
//! ```text
//!   flush(e0): plan_rewrite ─► begin ─► job: inputs (rows live at e0) ─► outputs (target size)
//!   epochs e0+1.. go on, deleting rows of the inputs
//!   poll(f): finish_rewrite ─► keys remapped, carried deletes ─► job: write deletes
//!            ─► RewriteBundle @f { base: e0, added: outputs + deletes, removed: inputs + ... }
//! ```
//!
//! # Invariants
//! - Rows keep their data sequence number: the bundle's base is epoch e0, whose snapshot
//!   holds every delete the job applied; deletes after e0 are carried to the outputs in the
//!   rewrite's own commit.
//! - A rewrite that fails is forgotten (its inputs stay live and indexed); its partial
//!   outputs are never committed. Ingestion goes on either way.
//! - At most one rewrite runs per worker, so compaction never takes more than one of the
//!   IO threads' share from ingestion.

use std::sync::Arc;
use std::sync::mpsc;

use arrow_array::{BooleanArray, RecordBatch};
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::table_files::read_columns;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, Struct};

use crate::base_index::file_path;
use crate::delete_files::write_data_at;
use crate::files::conform_batch;
use crate::key_index::{Loc, RewriteOutput, RewritePlan};
use crate::plan::Target;
use crate::snapshot_rewrite::KeyFilter;

/// A rewrite the worker started.
#[derive(Debug)]
pub struct Started {
    /// Table index.
    pub table: u32,
    /// Bucket.
    pub bucket: u32,
    /// What it rewrites.
    pub plan: RewritePlan,
    /// The epoch whose state it read (`None`: the table as the run found it).
    pub base_epoch: Option<Epoch>,
    /// The schema version its files are written under.
    pub version: u32,
    /// Set for an erasure: the order whose keys it leaves out.
    pub erase: Option<crate::plan::EraseOrder>,
}

/// A finished rewrite job.
#[derive(Debug)]
pub struct Finished {
    /// What was started.
    pub started: Started,
    /// The outputs (row sources and files), and bytes read; or why it failed.
    pub result: Result<(Vec<(RewriteOutput, DataFile)>, u64)>,
}

/// Running rewrites of one worker.
pub struct Rewrites {
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
    /// Jobs spawned and not yet collected.
    pub running: usize,
}

impl Default for Rewrites {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Rewrites { tx, rx, running: 0 }
    }
}

impl Rewrites {
    /// Where a job reports.
    pub fn sender(&self) -> mpsc::Sender<Finished> {
        self.tx.clone()
    }

    /// Finished jobs.
    pub fn finished(&mut self) -> Vec<Finished> {
        let done: Vec<Finished> = self.rx.try_iter().collect();
        self.running -= done.len().min(self.running);
        done
    }
}

/// Reads the rows of `plan`'s inputs that were live when it started (less the rows of
/// `erase`'s keys), and writes them to new files of about `target_file_size` bytes at paths
/// named `name`-N.
pub async fn rewrite(
    file_io: &FileIO,
    target: &Target,
    partition: Struct,
    plan: &RewritePlan,
    target_file_size: u64,
    erase: Option<&KeyFilter>,
    name: &str,
) -> Result<(Vec<(RewriteOutput, DataFile)>, u64)> {
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
    let fields = floe_engine::table_files::schema_fields(&target.schema)?;
    let erase_at: Vec<usize> = erase
        .map(|e| e.fields.iter().map(|(id, _)| fields.iter().position(|(f, _)| f == id).unwrap_or_default()).collect())
        .unwrap_or_default();
    let rows: u64 = plan.inputs.iter().map(|i| i.rows as u64).sum();
    let per_file = match plan.input_bytes {
        0 => u64::MAX,
        bytes => (target_file_size as u128 * rows.max(1) as u128 / bytes as u128).max(1) as u64,
    };
    let mut outputs = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut sources: Vec<Loc> = Vec::new();
    let mut bytes_read = 0;
    for input in &plan.inputs {
        bytes_read += file_io.new_input(&*input.path)?.metadata().await?.size;
        let mut pos: u32 = 0;
        for batch in read_columns(file_io, &input.path, &fields).await? {
            let n = batch.num_rows() as u32;
            let erased = match erase {
                Some(filter) => filter.hits(
                    &batch
                        .project(&erase_at)
                        .map_err(|e| Error::new(ErrorKind::Internal, "projecting key columns").with_source(e))?,
                )?,
                None => Vec::new(),
            };
            let kept_at =
                |p: u32| !input.deleted.contains(p) && !erased.get((p - pos) as usize).copied().unwrap_or(false);
            let keep: BooleanArray = (pos..pos + n).map(|p| Some(kept_at(p))).collect();
            sources.extend((pos..pos + n).filter(|p| kept_at(*p)).map(|p| Loc { file: input.file, pos: p }));
            pos += n;
            let kept = arrow_select::filter::filter_record_batch(&batch, &keep)
                .map_err(|e| Error::new(ErrorKind::Internal, "filtering deleted rows").with_source(e))?;
            if kept.num_rows() > 0 {
                pending.push(conform_batch(kept, &arrow)?);
            }
            while sources.len() as u64 >= per_file {
                outputs.push(
                    flush(
                        file_io,
                        target,
                        &partition,
                        &arrow,
                        &mut pending,
                        &mut sources,
                        per_file,
                        name,
                        outputs.len(),
                    )
                    .await?,
                );
            }
        }
        if pos != input.rows {
            return Err(Error::new(
                ErrorKind::Data,
                format!("{} holds {pos} rows, the index says {}", input.path, input.rows),
            ));
        }
    }
    if !sources.is_empty() {
        let n = sources.len() as u64;
        outputs.push(
            flush(file_io, target, &partition, &arrow, &mut pending, &mut sources, n, name, outputs.len()).await?,
        );
    }
    floe_engine::faults::point("compaction-files-written");
    Ok((outputs, bytes_read))
}

/// Writes the first `rows` pending rows as one output file.
#[allow(clippy::too_many_arguments)]
async fn flush(
    file_io: &FileIO,
    target: &Target,
    partition: &Struct,
    arrow: &arrow_schema::SchemaRef,
    pending: &mut Vec<RecordBatch>,
    sources: &mut Vec<Loc>,
    rows: u64,
    name: &str,
    n: usize,
) -> Result<(RewriteOutput, DataFile)> {
    let head = crate::files::take_rows(arrow, pending, rows as usize)?;
    let take = head.num_rows();
    let path = file_path(target, partition, &format!("{name}-{n}.parquet"));
    let file = write_data_at(file_io, target, partition.clone(), &path, head).await?;
    let out_sources: Vec<Loc> = sources.drain(..take).collect();
    Ok((RewriteOutput { path: Arc::from(path), bytes: file.file_size_in_bytes(), sources: out_sources }, file))
}
