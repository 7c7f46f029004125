//! The CDC-table writer: every event becomes one ledger row, written per epoch and per
//! `_source_ts` time partition.
//!
//! ```text
//!   Event @e ──► partition = day(_source_ts) ──► stage[(table, partition)] ──► data file @e
//!   row = (_op, _source_ts, _kafka_partition, _kafka_offset, after image | before image)
//! ```
//!
//! # Invariants
//! - Append-only: exactly one row per event the table has not yet committed (the caller
//!   filters by the table's committed offsets), so a `(partition, offset)` appears once.
//! - Writes locally (`Pipeline` pact): each worker writes the events of the Kafka
//!   partitions it reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use floe_engine::value::{Row, Value};
use iceberg::spec::{Datum, Literal, Struct};
use iceberg::transform::{BoxedTransformFunction, create_transform_function};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::arrow_rows::BatchBuilder;
use crate::debezium::Event;
use crate::epoch_writer::{StageCore, WriteJob, write_epochs};
use crate::files::{Dest, WrittenFile, write_data};
use crate::plan::PlanRef;

/// Staging of ledger rows per `(table, time partition)` and epoch.
pub struct CdcStage {
    plan: PlanRef,
    worker: usize,
    transforms: HashMap<u32, BoxedTransformFunction>,
    staged: BTreeMap<Epoch, HashMap<(u32, Option<i32>), Vec<Event>>>,
}

impl CdcStage {
    /// Staging for worker `worker`.
    pub fn new(plan: PlanRef, worker: usize) -> Result<CdcStage> {
        let mut transforms = HashMap::new();
        for t in &plan.tables {
            if let Some(target) = &t.cdc {
                if let Some(field) = target.spec.fields().first() {
                    transforms.insert(t.index, create_transform_function(&field.transform)?);
                }
            }
        }
        Ok(CdcStage { plan, worker, transforms, staged: BTreeMap::new() })
    }

    fn partition_of(&self, event: &Event) -> Option<i32> {
        let ts = event.source_ts_ms?;
        let datum = Datum::timestamptz_micros(ts.checked_mul(1000)?);
        let out = self.transforms.get(&event.table)?.transform_literal(&datum).ok()??;
        match out.literal() {
            iceberg::spec::PrimitiveLiteral::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// The ledger row of an event, in the CDC table's field order.
pub fn ledger_row(event: &Event, key_positions: &[usize], positions: &[Option<usize>]) -> Vec<Value> {
    let image: Option<&Row> = event.after.as_ref().or(event.before.as_ref());
    let mut cells = Vec::with_capacity(4 + positions.len());
    cells.push(Value::String(event.op.as_str().to_string()));
    cells.push(event.source_ts_ms.map(|ms| Value::TimestampTz(ms.saturating_mul(1000))).unwrap_or(Value::Null));
    cells.push(Value::Int(event.partition));
    cells.push(Value::Long(event.offset));
    for p in positions {
        let v = match (p, image) {
            (Some(p), Some(row)) => row.0.get(*p).cloned().unwrap_or(Value::Null),
            // A delete without a before image still records its key.
            (Some(p), None) => key_positions
                .iter()
                .position(|k| k == p)
                .and_then(|i| event.key.0.get(i).cloned())
                .unwrap_or(Value::Null),
            (None, _) => Value::Null,
        };
        cells.push(v);
    }
    cells
}

impl StageCore for CdcStage {
    type Item = Event;

    fn stage(&mut self, epoch: Epoch, event: Event) {
        let partition = self.partition_of(&event);
        self.staged.entry(epoch).or_default().entry((event.table, partition)).or_default().push(event);
    }

    fn flush(&mut self, epoch: Epoch) -> Result<Vec<WriteJob>> {
        let Some(groups) = self.staged.remove(&epoch) else { return Ok(Vec::new()) };
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(groups.len());
        for ((table, partition), events) in groups {
            let table_plan = &self.plan.tables[table as usize];
            let Some(target) = table_plan.cdc.clone() else { continue };
            let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
            let mut batch = BatchBuilder::new(arrow, events.len())?;
            let mut max_ts: Option<i64> = None;
            for e in &events {
                batch.append(&ledger_row(e, &table_plan.schema.key, &table_plan.cdc_positions))?;
                max_ts = max_ts.max(e.source_ts_ms);
            }
            let rows = batch.len() as u64;
            self.plan.metrics.table(&target.name.to_string(), |s| {
                s.events += rows;
                s.rows += rows;
            });
            let batch = batch.finish()?;
            let file_io = self.plan.catalog.file_io().clone();
            let prefix = format!("e{epoch}-w{}", self.worker);
            let partition: Struct = [partition.map(Literal::int)].into_iter().collect();
            jobs.push(Box::pin(async move {
                let mut out = Vec::new();
                for f in write_data(&file_io, &target, Some(partition), batch, &prefix).await? {
                    out.push(WrittenFile::new(Dest::Cdc(table), epoch, &target, f, max_ts)?);
                }
                Ok(out)
            }));
        }
        Ok(jobs)
    }
}

/// The CDC-writer operator.
pub fn write_cdc<'s>(events: Stream<'s, Epoch, Vec<Event>>, plan: PlanRef) -> Result<Stream<'s, Epoch, Vec<WrittenFile>>> {
    let worker = events.scope().index();
    let core = CdcStage::new(Arc::clone(&plan), worker)?;
    Ok(write_epochs(events, Pipeline, "CdcWriter", core, plan))
}
