//! The base-table writer: per bucket and epoch, one data file with the rows the epoch
//! leaves and one equality-delete file with the keys it deleted or replaced.
//!
//! ```text
//!   consolidated (BucketKey, Upsert) @e ──► Upsert::action ──► BucketStage{rows, deletes}
//!                                                               │ frontier > e
//!                                                               ▼
//!                          data file  bucket=b  (rows)         equality deletes bucket=b (keys)
//! ```
//!
//! # Invariants
//! - Input arrives already exchanged by bucket (the consolidation's pact), so exactly one
//!   worker writes each `(table, bucket)`: the operator itself uses the `Pipeline` pact.
//! - Files are written under the epoch's schema version (`SchemaVersions::at`; older rows
//!   are padded and widened); nothing is written for a table paused at the epoch.
//! - A key is deleted (equality delete) iff the epoch may have replaced or removed an older
//!   row of it; its new row, if any, goes to the data file of the same epoch. Both get the
//!   same sequence number at commit, so the delete never hits the new row.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use floe_engine::value::Row;
use iceberg::spec::{Literal, Struct};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::arrow_rows::BatchBuilder;
use crate::epoch_writer::{StageCore, WriteJob, write_epochs};
use crate::files::{Dest, WrittenFile, key_schema, write_data, write_equality_deletes};
use crate::plan::PlanRef;
use crate::upsert::{Action, BucketKey, Upsert};

/// Rows and deleted keys of one bucket in one epoch.
#[derive(Debug, Default, PartialEq)]
pub struct BucketStage {
    /// Rows to write.
    pub rows: Vec<Row>,
    /// Keys to delete.
    pub deletes: Vec<Row>,
}

/// Staging for the base tables a worker owns buckets of.
pub struct BaseStage {
    plan: PlanRef,
    worker: usize,
    staged: BTreeMap<Epoch, HashMap<(u32, u32), BucketStage>>,
}

impl BaseStage {
    /// Staging for worker `worker`.
    pub fn new(plan: PlanRef, worker: usize) -> BaseStage {
        BaseStage { plan, worker, staged: BTreeMap::new() }
    }

    /// What is staged for an epoch (for tests).
    pub fn staged(&self, epoch: Epoch) -> Option<&HashMap<(u32, u32), BucketStage>> {
        self.staged.get(&epoch)
    }
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
        let stage = self.staged.entry(epoch).or_default().entry((key.table, key.bucket)).or_default();
        match action {
            Action::Noop => {}
            Action::Insert(row) => stage.rows.push(row),
            Action::Replace(row) => {
                stage.deletes.push(key.key);
                stage.rows.push(row);
            }
            Action::Delete => stage.deletes.push(key.key),
        }
        Ok(())
    }

    fn flush(&mut self, epoch: Epoch) -> Result<Vec<WriteJob>> {
        let Some(buckets) = self.staged.remove(&epoch) else { return Ok(Vec::new()) };
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(buckets.len());
        for ((table, bucket), stage) in buckets {
            let table_plan = &self.plan.tables[table as usize];
            if table_plan.versions.is_paused_at(epoch) {
                continue;
            }
            // The epoch's version: rows decoded under older ones are prefixes of it.
            let version = table_plan.versions.at(epoch);
            let Some(target) = table_plan.base_at(&version)? else { continue };
            let version = version.number;
            let data_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
            let mut data = BatchBuilder::new(data_schema, stage.rows.len())?;
            for row in &stage.rows {
                data.append(row.0.iter())?;
            }
            let key_arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&key_schema(
                &target.schema,
                &table_plan.equality_ids,
            )?)?);
            let mut keys = BatchBuilder::new(key_arrow, stage.deletes.len())?;
            for key in &stage.deletes {
                keys.append(key.0.iter())?;
            }
            let (rows, deletes) = (data.len() as u64, keys.len() as u64);
            self.plan.metrics.table(&target.name.to_string(), |s| {
                s.rows += rows;
                s.deletes += deletes;
            });
            let (data, keys) = (data.finish()?, keys.finish()?);
            let file_io = self.plan.catalog.file_io().clone();
            let equality_ids = table_plan.equality_ids.clone();
            let prefix = format!("e{epoch}-w{}-b{bucket}", self.worker);
            let partition: Struct = [Some(Literal::int(bucket as i32))].into_iter().collect();
            jobs.push(Box::pin(async move {
                let mut out = Vec::new();
                if keys.num_rows() > 0 {
                    for f in
                        write_equality_deletes(&file_io, &target, &equality_ids, Some(partition.clone()), keys, &prefix)
                            .await?
                    {
                        out.push(WrittenFile::new(Dest::Base(table), epoch, &target, f, None)?.at_version(version));
                    }
                }
                if data.num_rows() > 0 {
                    for f in write_data(&file_io, &target, Some(partition), vec![data], &prefix).await? {
                        out.push(WrittenFile::new(Dest::Base(table), epoch, &target, f, None)?.at_version(version));
                    }
                }
                Ok(out)
            }));
        }
        Ok(jobs)
    }
}

/// The base-writer operator over consolidated upserts (already exchanged by bucket).
pub fn write_base<'s>(
    upserts: Stream<'s, Epoch, Vec<(BucketKey, Epoch, Upsert)>>,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<WrittenFile>> {
    let worker = upserts.scope().index();
    write_epochs(upserts, Pipeline, "BaseWriter", BaseStage::new(Arc::clone(&plan), worker), plan)
}
