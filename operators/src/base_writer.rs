//! The base-table writer: per bucket and epoch, one data file with the rows the epoch
//! leaves, and deletes for the rows it replaced or removed; and, in position and vector
//! mode, compaction of the buckets it owns.
//!
//! ```text
//!   consolidated (BucketKey, Upsert) @e ──► Upsert::action ──► staged per (table, bucket)
//!                                                   │ frontier > e
//!        position / vector mode ──► key index ──► data file + position deletes | vectors
//!                                            └──► due? start a bucket rewrite (background)
//!        equality mode ───────────────────────► data file + equality deletes (keys)
//! ```
//!
//! # Invariants
//! - Input arrives already exchanged by bucket (the consolidation's pact), so exactly one
//!   worker writes each `(table, bucket)`, and holds its key index: the operator itself uses
//!   the `Pipeline` pact.
//! - Files are written under the epoch's schema version (`SchemaVersions::at`; older rows
//!   are padded and widened); nothing is written for a table paused at the epoch.
//! - Equality mode: a key is deleted (equality delete) iff the epoch may have replaced or
//!   removed an older row of it; its new row goes to the data file of the same epoch. Both
//!   get the same sequence number at commit, so the delete never hits the new row.
//! - Position and vector modes: a key's older row is deleted iff the index holds one, at its
//!   exact position; the decision never reads the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::value::Row;
use iceberg::spec::{Literal, Struct};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::arrow_rows::BatchBuilder;
use crate::base_index::{plan_deletes, stage_bucket, write_bucket, write_deletes};
use crate::bucket_rewrite::{Finished, Rewrites, Started, rewrite};
use crate::epoch_writer::{StageCore, Waker, WriteJob, write_epochs};
use crate::files::{
    Dest, RewriteBase, RewriteBundle, Written, WrittenFile, key_schema, write_data, write_equality_deletes,
};
use crate::key_index::{BucketIndex, FileId};
use crate::plan::{BucketErased, EraseOrder, PlanRef, TablePlan};
use crate::upsert::{Action, BucketKey, Upsert};

/// Rows and deleted keys of one bucket in one epoch (equality mode).
#[derive(Debug, Default, PartialEq)]
pub struct BucketStage {
    /// Rows to write.
    pub rows: Vec<Row>,
    /// Keys to delete.
    pub deletes: Vec<Row>,
}

/// What an epoch stages for one bucket.
#[derive(Debug)]
enum Staged {
    /// Equality mode: rows and keys.
    Equality(BucketStage),
    /// Position and vector modes: each key's new row, or `None` for a delete.
    Keys(Vec<(Row, Option<Row>)>),
}

/// Staging for the base tables a worker owns buckets of.
pub struct BaseStage {
    plan: PlanRef,
    worker: usize,
    staged: BTreeMap<Epoch, HashMap<(u32, u32), Staged>>,
    /// Key indexes of the buckets this worker wrote to (position and vector modes).
    indexes: HashMap<(u32, u32), BucketIndex>,
    /// Data files being written, until their epoch's jobs report.
    writing: HashMap<String, ((u32, u32), FileId)>,
    rewrites: Rewrites,
    wake: Option<Waker>,
    last_flushed: Option<Epoch>,
    final_pass: bool,
    /// Workers of the dataflow (bucket ownership).
    peers: usize,
    /// Erasure orders for this worker's buckets, waiting for the bucket to be free.
    erase_queue: Vec<EraseOrder>,
}

impl BaseStage {
    /// Staging for worker `worker`.
    pub fn new(plan: PlanRef, worker: usize, peers: usize) -> BaseStage {
        BaseStage {
            peers: peers.max(1),
            erase_queue: Vec::new(),
            plan,
            worker,
            staged: BTreeMap::new(),
            indexes: HashMap::new(),
            writing: HashMap::new(),
            rewrites: Rewrites::default(),
            wake: None,
            last_flushed: None,
            final_pass: false,
        }
    }

    /// What is staged for an epoch, in equality mode (for tests).
    pub fn staged(&self, epoch: Epoch) -> Option<HashMap<(u32, u32), &BucketStage>> {
        self.staged.get(&epoch).map(|m| {
            m.iter()
                .filter_map(|(k, s)| match s {
                    Staged::Equality(b) => Some((*k, b)),
                    Staged::Keys(_) => None,
                })
                .collect()
        })
    }

    fn index(&mut self, table: u32, bucket: u32) -> Result<&mut BucketIndex> {
        if !self.indexes.contains_key(&(table, bucket)) {
            let index = self.plan.indexes.take(table, bucket).ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("no key index was rebuilt for table {table} bucket {bucket} before the run"),
                )
            })?;
            self.indexes.insert((table, bucket), index);
        }
        self.indexes.get_mut(&(table, bucket)).ok_or_else(|| Error::new(ErrorKind::Internal, "the key index vanished"))
    }

    /// Starts a rewrite of a bucket if one is due and none runs on this worker.
    fn maybe_compact(&mut self, table: u32, bucket: u32, base_epoch: Option<Epoch>) -> Result<()> {
        let plan = Arc::clone(&self.plan);
        let t = &plan.tables[table as usize];
        if self.rewrites.running > 0 || !t.maintenance.compaction || t.versions.pause_state().is_some() {
            return Ok(());
        }
        // Not the next epoch's version: that one is not final, and a decoder ahead may
        // have adopted a newer one whose schema the rewrite's snapshot need not carry.
        let version = t.versions.as_of_flushed(base_epoch);
        let Some(target) = t.base_at(&version)? else { return Ok(()) };
        let index = self.index(table, bucket)?;
        let Some(rewrite_plan) = index.plan_rewrite(&t.maintenance) else { return Ok(()) };
        index.begin_rewrite(&rewrite_plan);
        tracing::debug!(table = %target.name, bucket, inputs = rewrite_plan.inputs.len(), "bucket rewrite started");
        let started = Started { table, bucket, plan: rewrite_plan, base_epoch, version: version.number, erase: None };
        self.spawn_rewrite(started, target, t.maintenance.target_file_size);
        Ok(())
    }

    /// Runs a started rewrite in the background; it reports through `rewrites`.
    fn spawn_rewrite(&mut self, started: Started, target: crate::plan::Target, size: u64) {
        let file_io = self.plan.catalog.file_io().clone();
        let bucket = started.bucket;
        let kind = if started.erase.is_some() { "x" } else { "c" };
        let name = format!("{kind}{}-w{}-b{bucket}", short_id(), self.worker);
        let tx = self.rewrites.sender();
        let wake = self.wake.clone();
        self.rewrites.running += 1;
        self.plan.runtime.spawn(async move {
            let partition = bucket_partition(bucket);
            let erase = started.erase.as_ref().map(|o| Arc::clone(&o.filter));
            let result = rewrite(&file_io, &target, partition, &started.plan, size, erase.as_deref(), &name).await;
            let _ = tx.send(Finished { started, result });
            if let Some(w) = wake {
                w();
            }
        });
    }

    /// Turns a finished rewrite into the job that writes its deletes and sends it on, at
    /// `at` or, if the input already passed it, at the last epoch flushed: the rewrite
    /// commits after every epoch whose changes the index holds.
    fn finish(&mut self, done: Finished, at: Epoch) -> Result<Option<(Epoch, WriteJob)>> {
        let Finished { started, result } = done;
        let (table, bucket) = (started.table, started.bucket);
        let plan = Arc::clone(&self.plan);
        let t = &plan.tables[table as usize];
        let (outputs, bytes_read) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(table = table, bucket, error = %e, "bucket rewrite failed; its files stay as they are");
                self.index(table, bucket)?.abort_rewrite(&started.plan);
                if let Some(order) = &started.erase {
                    self.erased(order, Err(e.to_string()));
                }
                return Ok(None);
            }
        };
        let version = t.versions.all().get(started.version as usize).cloned().unwrap_or_else(|| t.versions.at(at));
        let Some(target) = t.base_at(&version)? else { return Ok(None) };
        let partition = bucket_partition(bucket);
        let mode = t.deletes;
        let (sources, files): (Vec<_>, Vec<_>) = outputs.into_iter().unzip();
        let name = format!("c{}-w{}-b{bucket}-carry", short_id(), self.worker);
        let index = self.index(table, bucket)?;
        let erased = started.erase.as_ref().map(|o| o.filter.keys.clone()).unwrap_or_default();
        let applied = index.finish_rewrite(&started.plan, sources, mode, &erased)?;
        let (deletes, replaced) = plan_deletes(index, mode, &target, &partition, &applied.deletes, &name);
        let mut removed = applied.removed;
        removed.extend(replaced);
        let at = at.max(self.last_flushed.unwrap_or(at));
        if let Some(order) = &started.erase {
            self.erased(order, Ok(Some(at)));
        }
        let bundle = RewriteBundle {
            dest: Dest::Base(table),
            epoch: at,
            id: uuid::Uuid::new_v4().to_string(),
            after_epoch: self.last_flushed,
            base: RewriteBase::Epoch(started.base_epoch),
            strict: true,
            added: Vec::new(),
            removed,
            bytes_read,
        };
        let file_io = plan.catalog.file_io().clone();
        let number = version.number;
        tracing::debug!(table = %target.name, bucket, outputs = files.len(), retired = bundle.removed.len(), "bucket rewrite finished");
        Ok(Some((
            at,
            Box::pin(async move {
                let mut bundle = bundle;
                for f in files {
                    bundle.added.push(WrittenFile::new(Dest::Base(table), at, &target, f, None)?.at_version(number));
                }
                for f in write_deletes(&file_io, &target, partition, deletes).await? {
                    bundle.added.push(WrittenFile::new(Dest::Base(table), at, &target, f, None)?.at_version(number));
                }
                Ok(vec![Written::Rewrite(bundle)])
            }),
        )))
    }
}

impl BaseStage {
    /// Reports an erasure order's outcome to the committer.
    fn erased(&self, order: &EraseOrder, result: std::result::Result<Option<Epoch>, String>) {
        self.plan.erasures.report(BucketErased {
            id: order.id.clone(),
            table: order.table,
            bucket: order.bucket,
            result,
        });
        self.plan.committer_wake.wake();
    }

    /// Takes this worker's erasure orders, and starts the next one when no rewrite runs and
    /// its bucket has no file still being written.
    fn start_erasures(&mut self) -> Result<()> {
        let peers = self.peers as u64;
        let worker = self.worker as u64;
        let mine = self.plan.erasures.take(|t, b| crate::consolidate::route_of(t, b) % peers == worker);
        self.erase_queue.extend(mine);
        let mut i = 0;
        while self.rewrites.running == 0 && i < self.erase_queue.len() {
            let order = self.erase_queue[i].clone();
            let plan = Arc::clone(&self.plan);
            let t = &plan.tables[order.table as usize];
            if t.versions.pause_state().is_some() {
                i += 1;
                continue;
            }
            let has_index = self.indexes.contains_key(&(order.table, order.bucket))
                || self
                    .plan
                    .indexes
                    .take(order.table, order.bucket)
                    .map(|ix| {
                        self.indexes.insert((order.table, order.bucket), ix);
                    })
                    .is_some();
            if !has_index {
                // Nothing was ever written to the bucket.
                self.erase_queue.remove(i);
                self.erased(&order, Ok(None));
                continue;
            }
            let base_epoch = self.last_flushed;
            let version = t.versions.as_of_flushed(base_epoch);
            let Some(target) = t.base_at(&version)? else {
                self.erase_queue.remove(i);
                self.erased(&order, Ok(None));
                continue;
            };
            let Some(rewrite_plan) = self.index(order.table, order.bucket)?.plan_erase() else {
                // A file of the bucket is still being written: next time.
                i += 1;
                continue;
            };
            self.erase_queue.remove(i);
            if rewrite_plan.inputs.is_empty() {
                self.erased(&order, Ok(None));
                continue;
            }
            self.index(order.table, order.bucket)?.begin_rewrite(&rewrite_plan);
            tracing::info!(table = %target.name, bucket = order.bucket, erasure = %order.id, "erasing keys from a bucket");
            let (table, bucket) = (order.table, order.bucket);
            let started =
                Started { table, bucket, plan: rewrite_plan, base_epoch, version: version.number, erase: Some(order) };
            self.spawn_rewrite(started, target, t.maintenance.target_file_size);
        }
        Ok(())
    }
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn bucket_partition(bucket: u32) -> Struct {
    [Some(Literal::int(bucket as i32))].into_iter().collect()
}

impl StageCore for BaseStage {
    type Item = (BucketKey, Epoch, Upsert);

    fn epoch_of(&self, (_, time, _): &Self::Item, _message_time: Epoch) -> Epoch {
        *time
    }

    fn stage(&mut self, epoch: Epoch, (key, _time, upsert): Self::Item) -> Result<()> {
        let action = upsert.action();
        if action == Action::Noop {
            return Ok(());
        }
        let by_index = self.plan.tables[key.table as usize].deletes.uses_index();
        let slot =
            self.staged.entry(epoch).or_default().entry((key.table, key.bucket)).or_insert_with(|| match by_index {
                true => Staged::Keys(Vec::new()),
                false => Staged::Equality(BucketStage::default()),
            });
        match (slot, action) {
            (_, Action::Noop) => {}
            (Staged::Keys(changes), Action::Insert(row) | Action::Replace(row)) => changes.push((key.key, Some(row))),
            (Staged::Keys(changes), Action::Delete) => changes.push((key.key, None)),
            (Staged::Equality(stage), Action::Insert(row)) => stage.rows.push(row),
            (Staged::Equality(stage), Action::Replace(row)) => {
                stage.deletes.push(key.key);
                stage.rows.push(row);
            }
            (Staged::Equality(stage), Action::Delete) => stage.deletes.push(key.key),
        }
        Ok(())
    }

    fn flush(&mut self, epoch: Epoch) -> Result<Vec<WriteJob>> {
        let Some(buckets) = self.staged.remove(&epoch) else { return Ok(Vec::new()) };
        self.last_flushed = Some(epoch);
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(buckets.len());
        let plan = Arc::clone(&self.plan);
        for ((table, bucket), staged) in buckets {
            let table_plan = &plan.tables[table as usize];
            if table_plan.versions.is_paused_at(epoch) {
                continue;
            }
            let job = match staged {
                Staged::Equality(stage) => equality_job(&plan, table_plan, self.worker, epoch, bucket, stage)?,
                Staged::Keys(changes) => self.index_job(table_plan, epoch, bucket, changes)?,
            };
            jobs.extend(job);
            if table_plan.deletes.uses_index() {
                self.maybe_compact(table, bucket, Some(epoch))?;
            }
        }
        Ok(jobs)
    }

    fn written(&mut self, _epoch: Epoch, files: &[Written]) {
        for f in files {
            let Written::File(f) = f else { continue };
            if f.deletes {
                continue;
            }
            if let Some(((table, bucket), id)) = self.writing.remove(&f.path)
                && let Some(index) = self.indexes.get_mut(&(table, bucket))
            {
                index.mark_written(id, f.bytes);
            }
        }
    }

    fn poll(&mut self, at: Epoch, input_done: bool) -> Result<Vec<(Epoch, WriteJob)>> {
        let mut jobs = Vec::new();
        for done in self.rewrites.finished() {
            jobs.extend(self.finish(done, at)?);
        }
        self.start_erasures()?;
        if input_done && !self.plan.maintain_at_end {
            return Ok(jobs);
        }
        // The input ended: a last look at every bucket this worker holds.
        if input_done && !self.final_pass && self.rewrites.running == 0 {
            let buckets: Vec<(u32, u32)> = self.indexes.keys().copied().collect();
            for (table, bucket) in buckets {
                self.maybe_compact(table, bucket, self.last_flushed)?;
                if self.rewrites.running > 0 {
                    return Ok(jobs);
                }
            }
            self.final_pass = true;
        }
        Ok(jobs)
    }

    fn busy(&self) -> bool {
        self.rewrites.running > 0 && (self.plan.maintain_at_end || self.plan.failure.get().is_none())
    }

    fn attach(&mut self, wake: Waker) {
        self.plan.erasures.register(Arc::clone(&wake));
        self.wake = Some(wake);
    }
}

impl BaseStage {
    /// One bucket's epoch in position or vector mode.
    fn index_job(
        &mut self,
        table_plan: &TablePlan,
        epoch: Epoch,
        bucket: u32,
        changes: Vec<(Row, Option<Row>)>,
    ) -> Result<Option<WriteJob>> {
        let table = table_plan.index;
        let version = table_plan.versions.at(epoch);
        let Some(target) = table_plan.base_at(&version)? else { return Ok(None) };
        let partition = bucket_partition(bucket);
        let name = format!("e{epoch}-w{}-b{bucket}-{}", self.worker, short_id());
        let mode = table_plan.deletes;
        let max_deletes = table_plan.maintenance.max_delete_files;
        let write = stage_bucket(self.index(table, bucket)?, mode, max_deletes, &target, &partition, &name, changes)?;
        if let Some((id, path, _)) = &write.data {
            self.writing.insert(path.clone(), ((table, bucket), *id));
        }
        let (rows, deletes) = write.counts;
        self.plan.metrics.table(&target.name.to_string(), |s| {
            s.rows += rows;
            s.deletes += deletes;
        });
        let file_io = self.plan.catalog.file_io().clone();
        let number = version.number;
        Ok(Some(Box::pin(async move {
            let removes = write.removes.clone();
            let (data, deletes) = write_bucket(&file_io, &target, partition, write).await?;
            let mut out: Vec<Written> = Vec::new();
            for f in deletes.into_iter().chain(data) {
                out.push(WrittenFile::new(Dest::Base(table), epoch, &target, f, None)?.at_version(number).into());
            }
            if let Some(Written::File(first)) = out.first_mut() {
                first.removes = removes;
            }
            Ok(out)
        })))
    }
}

/// One bucket's epoch in equality mode.
fn equality_job(
    plan: &PlanRef,
    table_plan: &TablePlan,
    worker: usize,
    epoch: Epoch,
    bucket: u32,
    stage: BucketStage,
) -> Result<Option<WriteJob>> {
    let table = table_plan.index;
    // The epoch's version: rows decoded under older ones are prefixes of it.
    let version = table_plan.versions.at(epoch);
    let Some(target) = table_plan.base_at(&version)? else { return Ok(None) };
    let version = version.number;
    let data_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
    let mut data = BatchBuilder::new(data_schema, stage.rows.len())?;
    for row in &stage.rows {
        data.append(row.0.iter())?;
    }
    let key_arrow =
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&key_schema(&target.schema, &table_plan.equality_ids)?)?);
    let mut keys = BatchBuilder::new(key_arrow, stage.deletes.len())?;
    for key in &stage.deletes {
        keys.append(key.0.iter())?;
    }
    let (rows, deletes) = (data.len() as u64, keys.len() as u64);
    plan.metrics.table(&target.name.to_string(), |s| {
        s.rows += rows;
        s.deletes += deletes;
    });
    let (data, keys) = (data.finish()?, keys.finish()?);
    let file_io = plan.catalog.file_io().clone();
    let equality_ids = table_plan.equality_ids.clone();
    let prefix = format!("e{epoch}-w{worker}-b{bucket}");
    let partition = bucket_partition(bucket);
    Ok(Some(Box::pin(async move {
        let mut out: Vec<Written> = Vec::new();
        if keys.num_rows() > 0 {
            for f in
                write_equality_deletes(&file_io, &target, &equality_ids, Some(partition.clone()), keys, &prefix).await?
            {
                out.push(WrittenFile::new(Dest::Base(table), epoch, &target, f, None)?.at_version(version).into());
            }
        }
        if data.num_rows() > 0 {
            for f in write_data(&file_io, &target, Some(partition), vec![data], &prefix).await? {
                out.push(WrittenFile::new(Dest::Base(table), epoch, &target, f, None)?.at_version(version).into());
            }
        }
        Ok(out)
    })))
}

/// The base-writer operator over consolidated upserts (already exchanged by bucket).
pub fn write_base<'s>(
    upserts: Stream<'s, Epoch, Vec<(BucketKey, Epoch, Upsert)>>,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<Written>> {
    let (worker, peers) = (upserts.scope().index(), upserts.scope().peers());
    write_epochs(upserts, Pipeline, "BaseWriter", BaseStage::new(Arc::clone(&plan), worker, peers), plan)
}
