//! The dead-letter writer: bad records, with their exact bytes and the reason, become rows
//! of the dead-letter table of their topic, committed with the epoch they belong to.
//!
//! # Invariants
//! - A dead letter is committed before the base and CDC tables commit its epoch (the
//!   committer orders it so), so a resumed run never skips one.
//! - Its offset counts as consumed: the tables' offsets move past it like any record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use floe_engine::value::Value;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::arrow_rows::BatchBuilder;
use crate::debezium::DeadLetter;
use crate::epoch_writer::{StageCore, WriteJob, write_epochs};
use crate::files::{Dest, Written, WrittenFile, write_data};
use crate::plan::PlanRef;

/// Staging of dead letters per dead-letter table and epoch.
pub struct DeadLetterStage {
    plan: PlanRef,
    worker: usize,
    staged: BTreeMap<Epoch, HashMap<usize, Vec<DeadLetter>>>,
}

impl DeadLetterStage {
    /// Staging for worker `worker`.
    pub fn new(plan: PlanRef, worker: usize) -> DeadLetterStage {
        DeadLetterStage { plan, worker, staged: BTreeMap::new() }
    }
}

impl StageCore for DeadLetterStage {
    type Item = DeadLetter;

    fn stage(&mut self, epoch: Epoch, dead: DeadLetter) -> Result<()> {
        let index = self.plan.tables[dead.table as usize].dead_letters;
        self.staged.entry(epoch).or_default().entry(index).or_default().push(dead);
        Ok(())
    }

    fn flush(&mut self, epoch: Epoch) -> Result<Vec<WriteJob>> {
        let Some(groups) = self.staged.remove(&epoch) else { return Ok(Vec::new()) };
        let now = chrono::Utc::now().timestamp_micros();
        let mut jobs: Vec<WriteJob> = Vec::new();
        for (index, letters) in groups {
            let target = self.plan.dead_letters[index].clone();
            let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
            let mut batch = BatchBuilder::new(arrow, letters.len())?;
            for d in &letters {
                let topic = self.plan.tables[d.table as usize].topic.clone();
                batch.append(&[
                    Value::String(topic),
                    Value::Int(d.partition),
                    Value::Long(d.offset),
                    d.key.clone().map(Value::Binary).unwrap_or(Value::Null),
                    d.value.clone().map(Value::Binary).unwrap_or(Value::Null),
                    Value::String(d.reason.to_string()),
                    Value::TimestampTz(now),
                    Value::String(d.reason.kind().to_string()),
                ])?;
            }
            let rows = batch.len() as u64;
            self.plan.metrics.table(&target.name.to_string(), |s| {
                s.events += rows;
                s.rows += rows;
            });
            let batch = batch.finish()?;
            let file_io = self.plan.catalog.file_io().clone();
            let prefix = format!("e{epoch}-w{}", self.worker);
            jobs.push(Box::pin(async move {
                let mut out = Vec::new();
                for f in write_data(&file_io, &target, None, vec![batch], &prefix).await? {
                    out.push(Written::from(WrittenFile::new(
                        Dest::DeadLetters(index as u32),
                        epoch,
                        &target,
                        f,
                        None,
                    )?));
                }
                Ok(out)
            }));
        }
        Ok(jobs)
    }
}

/// The dead-letter-writer operator.
pub fn write_dead_letters<'s>(
    dead: Stream<'s, Epoch, Vec<DeadLetter>>,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<Written>> {
    let worker = dead.scope().index();
    write_epochs(dead, Pipeline, "DeadLetterWriter", DeadLetterStage::new(Arc::clone(&plan), worker), plan)
}
