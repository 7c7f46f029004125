//! The CDC-table writer: every event becomes one ledger row, appended straight into Arrow
//! builders per epoch and `_source_ts` time partition, and written when the epoch closes.
//!
//! ```text
//!   Event @e ──► partition = day(_source_ts) ──► builders[(e, table, partition)] ──► data file @e
//!   row = (_op, _source_ts, _kafka_partition, _kafka_offset, after image | before image)
//! ```
//!
//! # Invariants
//! - Append-only: exactly one row per event the table has not yet committed (the caller
//!   filters by the table's committed offsets), so a `(partition, offset)` appears once.
//! - Writes locally (`Pipeline` pact): each worker writes the events of the Kafka
//!   partitions it reads.
//! - Schema evolution: a group's builder follows the table's newest schema version (a
//!   superset of every row's); when the epoch is written, what was built is conformed to the
//!   epoch's version (`SchemaVersions::at`). Nothing is written for a table paused at the
//!   epoch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use floe_engine::value::{Row, Value};
use iceberg::spec::{Datum, Literal, Struct};
use iceberg::transform::{BoxedTransformFunction, create_transform_function};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::arrow_rows::BatchBuilder;
use crate::debezium::{Event, Op};
use crate::epoch_writer::{StageCore, WriteJob, write_epochs};
use crate::files::{Dest, Written, WrittenFile, conform_batch, write_data};
use crate::plan::{PlanRef, TablePlan, Target};
use crate::schema_versions::Version;

struct Pending {
    batch: BatchBuilder,
    max_ts: Option<i64>,
    /// The schema version `batch` builds.
    layout: Arc<CdcLayout>,
    /// Batches finished under older versions.
    older: Vec<RecordBatch>,
}

/// The CDC table as of one schema version: the target, its Arrow schema, and the row
/// position each of its source fields reads.
struct CdcLayout {
    version: u32,
    target: Target,
    arrow: SchemaRef,
    positions: Vec<Option<usize>>,
}

/// Layouts by `(table, version)`, built once.
type Layouts = HashMap<(u32, u32), Arc<CdcLayout>>;

fn layout_of(layouts: &mut Layouts, table: &TablePlan, version: &Version) -> Result<Arc<CdcLayout>> {
    if let Some(layout) = layouts.get(&(table.index, version.number)) {
        return Ok(Arc::clone(layout));
    }
    let (target, positions) = table.cdc_at(version)?.ok_or_else(|| {
        floe_engine::Error::new(floe_engine::ErrorKind::Internal, "CDC event for a table without a CDC table")
    })?;
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
    let layout = Arc::new(CdcLayout { version: version.number, target, arrow, positions });
    layouts.insert((table.index, version.number), Arc::clone(&layout));
    Ok(layout)
}

/// Staging of ledger rows per `(table, time partition)` and epoch, in Arrow builders.
pub struct CdcStage {
    plan: PlanRef,
    worker: usize,
    transforms: HashMap<u32, BoxedTransformFunction>,
    layouts: Layouts,
    ops: [Value; 4],
    staged: BTreeMap<Epoch, HashMap<(u32, Option<i32>), Pending>>,
}

impl CdcStage {
    /// Staging for worker `worker`.
    pub fn new(plan: PlanRef, worker: usize) -> Result<CdcStage> {
        let mut transforms = HashMap::new();
        for t in &plan.tables {
            if let Some(field) = t.cdc.as_ref().and_then(|target| target.spec.fields().first()) {
                transforms.insert(t.index, create_transform_function(&field.transform)?);
            }
        }
        let ops = [Op::Create, Op::Update, Op::Delete, Op::Read].map(|o| Value::String(o.as_str().to_string()));
        Ok(CdcStage { plan, worker, transforms, layouts: HashMap::new(), ops, staged: BTreeMap::new() })
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

    fn op_value(&self, op: Op) -> &Value {
        &self.ops[match op {
            Op::Create => 0,
            Op::Update => 1,
            Op::Delete => 2,
            Op::Read => 3,
        }]
    }
}

/// Appends an event's ledger row (in the CDC table's field order) to `batch`.
pub fn append_ledger_row(
    batch: &mut BatchBuilder,
    op: &Value,
    event: &Event,
    key_positions: &[usize],
    positions: &[Option<usize>],
) -> Result<()> {
    let meta = [
        event.source_ts_ms.map(|ms| Value::TimestampTz(ms.saturating_mul(1000))).unwrap_or(Value::Null),
        Value::Int(event.partition),
        Value::Long(event.offset),
    ];
    let image: Option<&Row> = event.after.as_ref().or(event.before.as_ref());
    let null = Value::Null;
    let cells = positions.iter().map(|p| match (p, image) {
        (Some(p), Some(row)) => row.0.get(*p).unwrap_or(&null),
        // A delete without a before image still records its key.
        (Some(p), None) => key_positions.iter().position(|k| k == p).and_then(|i| event.key.0.get(i)).unwrap_or(&null),
        (None, _) => &null,
    });
    batch.append(std::iter::once(op).chain(meta.iter()).chain(cells))
}

impl StageCore for CdcStage {
    type Item = Event;

    fn stage(&mut self, epoch: Epoch, event: Event) -> Result<()> {
        let partition = self.partition_of(&event);
        let op = self.op_value(event.op).clone();
        let CdcStage { plan, layouts, staged, .. } = self;
        let table = &plan.tables[event.table as usize];
        let group = staged.entry(epoch).or_default();
        let pending = match group.entry((event.table, partition)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let layout = layout_of(layouts, table, &table.versions.latest())?;
                v.insert(Pending {
                    batch: BatchBuilder::new(Arc::clone(&layout.arrow), 1024)?,
                    max_ts: None,
                    layout,
                    older: Vec::new(),
                })
            }
        };
        // A row decoded under a newer version than the builder's: move the builder on, and
        // finish what was built so far.
        if pending.layout.version != table.versions.latest_number() {
            let layout = layout_of(layouts, table, &table.versions.latest())?;
            let built = std::mem::replace(&mut pending.batch, BatchBuilder::new(Arc::clone(&layout.arrow), 1024)?);
            if !built.is_empty() {
                pending.older.push(built.finish()?);
            }
            pending.layout = layout;
        }
        append_ledger_row(&mut pending.batch, &op, &event, &table.schema.key, &pending.layout.positions)?;
        pending.max_ts = pending.max_ts.max(event.source_ts_ms);
        Ok(())
    }

    fn flush(&mut self, epoch: Epoch) -> Result<Vec<WriteJob>> {
        let Some(groups) = self.staged.remove(&epoch) else { return Ok(Vec::new()) };
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(groups.len());
        for ((table, partition), mut pending) in groups {
            let table_plan = &self.plan.tables[table as usize];
            if table_plan.versions.is_paused_at(epoch) {
                continue;
            }
            // Every decoder has passed the epoch: its version is final.
            let layout = layout_of(&mut self.layouts, table_plan, &table_plan.versions.at(epoch))?;
            let target = layout.target.clone();
            let rows = (pending.batch.len() + pending.older.iter().map(RecordBatch::num_rows).sum::<usize>()) as u64;
            self.plan.metrics.table(&target.name.to_string(), |s| {
                s.events += rows;
                s.rows += rows;
            });
            let mut batches = Vec::with_capacity(pending.older.len() + 1);
            pending.older.push(pending.batch.finish()?);
            for built in pending.older.drain(..) {
                batches.push(conform_batch(built, &layout.arrow)?);
            }
            let version = layout.version;
            let max_ts = pending.max_ts;
            let file_io = self.plan.catalog.file_io().clone();
            let prefix = format!("e{epoch}-w{}", self.worker);
            let partition: Struct = [partition.map(Literal::int)].into_iter().collect();
            jobs.push(Box::pin(async move {
                let mut out = Vec::new();
                for f in write_data(&file_io, &target, Some(partition), batches, &prefix).await? {
                    out.push(Written::from(
                        WrittenFile::new(Dest::Cdc(table), epoch, &target, f, max_ts)?.at_version(version),
                    ));
                }
                Ok(out)
            }));
        }
        Ok(jobs)
    }
}

/// The CDC-writer operator.
pub fn write_cdc<'s>(events: Stream<'s, Epoch, Vec<Event>>, plan: PlanRef) -> Result<Stream<'s, Epoch, Vec<Written>>> {
    let worker = events.scope().index();
    let core = CdcStage::new(Arc::clone(&plan), worker)?;
    Ok(write_epochs(events, Pipeline, "CdcWriter", core, plan))
}
