//! The pipeline plan: everything operators need to know about the tables they feed,
//! resolved once at startup and shared read-only by all workers.
//!
//! ```text
//!   PipelinePlan
//!    ├── tables[i]: TablePlan          one per [[tables]] entry (one topic)
//!    │     ├── schema                  row layout at start (positions = base table field order)
//!    │     ├── versions                the live schema versions (evolved by the decoders)
//!    │     ├── base: Option<Target>    upsert table: Iceberg schema, bucket spec, resume offsets
//!    │     └── cdc:  Option<Target>    ledger table
//!    └── dead_letters[j]: Target       one per dead-letter table
//! ```
//!
//! # Invariants
//! - `Target::committed` is what the table's newest floe snapshot says; a record at
//!   `(partition, offset)` is written to the target only if `offset` is at or beyond it.
//! - Plans never change during a run; what schema evolution changes lives in each table's
//!   [`SchemaVersions`](crate::schema_versions::SchemaVersions), and [`TablePlan::base_at`] /
//!   [`TablePlan::cdc_at`] give the targets as of a version.

use std::sync::Arc;

use floe_engine::catalog::TableCatalog;
use floe_engine::config::TableName;
use floe_engine::epoch::{Epoch, EpochPolicy};
use floe_engine::metrics::Metrics;
use floe_engine::offsets::SourceOffsets;
use floe_engine::runtime::IoRuntime;
use floe_engine::schema::{Column, TableSchemaRef};
use iceberg::TableIdent;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::row_view::RowMut;
use crate::schema_versions::{Version, VersionsRef};
use floe_engine::error::Result;
use floe_engine::schema_drift::SchemaPolicy;
use floe_engine::table_settings::{DeleteMode, MaintenanceSettings};
use iceberg::spec::{PartitionSpecRef, SchemaRef};

/// A user transform over typed rows: edit the row in place, return `false` to drop it.
pub type RowTransform = Arc<dyn Fn(&mut RowMut<'_>) -> bool + Send + Sync>;

/// One Iceberg table floe writes.
#[derive(Clone, Debug)]
pub struct Target {
    /// Configured name.
    pub name: TableName,
    /// Catalog identifier.
    pub ident: TableIdent,
    /// Current Iceberg schema.
    pub schema: SchemaRef,
    /// Default partition spec.
    pub spec: PartitionSpecRef,
    /// Table location (data files go under `<location>/data`).
    pub location: String,
    /// Resume offsets from the newest floe snapshot.
    pub committed: SourceOffsets,
    /// Table properties (write settings such as the Parquet codec).
    pub properties: std::collections::HashMap<String, String>,
    /// The table's last sequence number when the run planned it.
    pub sequence_number: i64,
}

/// A target for unit tests: `id long` (key), `v long`, unpartitioned, under `dir`.
#[cfg(test)]
pub(crate) fn test_target(dir: &std::path::Path) -> Target {
    use iceberg::spec::{NestedField, PartitionSpec, PrimitiveType, Schema, Type};
    let schema = Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
            Arc::new(NestedField::optional(2, "v", Type::Primitive(PrimitiveType::Long))),
        ])
        .with_identifier_field_ids([1])
        .build()
        .expect("schema");
    let schema = Arc::new(schema);
    let spec = Arc::new(PartitionSpec::builder(Arc::clone(&schema)).with_spec_id(0).build().expect("spec"));
    Target {
        name: TableName { namespace: "t".into(), name: "t".into() },
        ident: TableIdent::new(iceberg::NamespaceIdent::new("t".into()), "t".into()),
        schema,
        spec,
        location: dir.display().to_string(),
        committed: SourceOffsets::default(),
        properties: Default::default(),
        sequence_number: 0,
    }
}

impl Target {
    /// Whether a record belongs in this table (it is not below the committed offsets).
    pub fn wants(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.committed.get(topic, partition).is_none_or(|next| offset >= next)
    }
}

/// One source table (topic) and the tables maintained for it.
#[derive(Clone)]
pub struct TablePlan {
    /// Index in the pipeline's table list.
    pub index: u32,
    /// Source topic.
    pub topic: String,
    /// Row layout.
    pub schema: TableSchemaRef,
    /// Declared columns, when the topic is schemaless.
    pub declared: Option<Vec<Column>>,
    /// Column position the base table is bucketed by.
    pub bucket_column: usize,
    /// Bucket count.
    pub buckets: u32,
    /// Whether inserts also delete prior rows with the key.
    pub upsert: bool,
    /// Base (upsert) table.
    pub base: Option<Target>,
    /// CDC (ledger) table.
    pub cdc: Option<Target>,
    /// Index into [`PipelinePlan::dead_letters`].
    pub dead_letters: usize,
    /// Field ids of the key columns in the base table, in key order (equality ids).
    pub equality_ids: Vec<i32>,
    /// For each CDC table field after the metadata columns, the row position it reads.
    pub cdc_positions: Vec<Option<usize>>,
    /// Optional user transform applied to every row image.
    pub transform: Option<RowTransform>,
    /// The columns the transform was written for, if it declared a fixed row type.
    pub row_type: Option<Vec<String>>,
    /// The live schema versions.
    pub versions: VersionsRef,
    /// What schema drift does (`schema_changes`).
    pub schema_policy: SchemaPolicy,
    /// How the base table names deleted rows.
    pub deletes: DeleteMode,
    /// When the tables are compacted.
    pub maintenance: MaintenanceSettings,
}

impl TablePlan {
    /// The base target as of `version`: its Iceberg schema is the version's.
    pub fn base_at(&self, version: &Version) -> Result<Option<Target>> {
        let Some(base) = &self.base else { return Ok(None) };
        if version.number == 0 {
            return Ok(Some(base.clone()));
        }
        Ok(Some(Target { schema: Arc::new(version.schema.base_schema()?), ..base.clone() }))
    }

    /// The CDC target as of `version`, and which row position each of its source fields reads.
    pub fn cdc_at(&self, version: &Version) -> Result<Option<(Target, Vec<Option<usize>>)>> {
        let Some(cdc) = &self.cdc else { return Ok(None) };
        if version.number == 0 {
            return Ok(Some((cdc.clone(), self.cdc_positions.clone())));
        }
        // Evolution appends columns: the new ones read their own positions.
        let mut positions = self.cdc_positions.clone();
        positions.extend((self.schema.columns.len()..version.schema.columns.len()).map(Some));
        Ok(Some((Target { schema: Arc::new(version.schema.cdc_schema()?), ..cdc.clone() }, positions)))
    }
}

impl std::fmt::Debug for TablePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablePlan")
            .field("index", &self.index)
            .field("topic", &self.topic)
            .field("schema", &self.schema)
            .field("buckets", &self.buckets)
            .field("base", &self.base.as_ref().map(|t| t.name.to_string()))
            .field("cdc", &self.cdc.as_ref().map(|t| t.name.to_string()))
            .field("transform", &self.transform.is_some())
            .field("schema_policy", &self.schema_policy)
            .field("deletes", &self.deletes)
            .finish()
    }
}

/// Everything a run needs, shared by all workers.
#[derive(Clone, Debug)]
pub struct PipelinePlan {
    /// Recorded in every snapshot.
    pub pipeline_id: String,
    /// Offsets → epochs.
    pub epochs: EpochPolicy,
    /// How far the source may run ahead of the last committed epoch.
    pub max_inflight_epochs: u64,
    /// Source tables, by index.
    pub tables: Vec<TablePlan>,
    /// Dead-letter tables.
    pub dead_letters: Vec<Target>,
    /// Catalog for commits.
    pub catalog: Arc<dyn TableCatalog>,
    /// IO runtime for file writes and commits.
    pub runtime: IoRuntime,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// Where operators report fatal errors.
    pub failure: Arc<Failure>,
    /// Wakes the committer from outside the dataflow (a schema pull has work for it).
    pub committer_wake: Arc<Wake>,
    /// The key indexes of base tables in position or vector mode, rebuilt at start; each
    /// bucket's writer takes its own.
    pub indexes: Arc<IndexStore>,
    /// Whether writers finish due compactions when the input ends (a bounded run), rather
    /// than abandon them (a stop).
    pub maintain_at_end: bool,
    /// Erasure orders from the committer to the buckets' writers, and their reports.
    pub erasures: Arc<ErasureBoard>,
}

/// An order to erase keys from one bucket of a base table (position and vector modes: the
/// bucket's writer rewrites it, as it compacts).
#[derive(Clone, Debug)]
pub struct EraseOrder {
    /// The erasure's id.
    pub id: String,
    /// Table index.
    pub table: u32,
    /// Bucket.
    pub bucket: u32,
    /// The keys.
    pub filter: Arc<crate::snapshot_rewrite::KeyFilter>,
}

/// A bucket writer's answer to an [`EraseOrder`].
#[derive(Clone, Debug)]
pub struct BucketErased {
    /// The erasure's id.
    pub id: String,
    /// Table index.
    pub table: u32,
    /// Bucket.
    pub bucket: u32,
    /// `Ok(Some(e))`: the rewrite goes to the committer with epoch `e`; `Ok(None)`: the
    /// bucket holds nothing; `Err`: why the rewrite failed.
    pub result: std::result::Result<Option<Epoch>, String>,
}

/// Where the committer posts erasure orders and the writers report (one process).
#[derive(Default)]
pub struct ErasureBoard {
    orders: std::sync::Mutex<Vec<EraseOrder>>,
    reports: std::sync::Mutex<Vec<BucketErased>>,
    wakers: std::sync::Mutex<Vec<crate::epoch_writer::Waker>>,
}

impl std::fmt::Debug for ErasureBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureBoard").finish_non_exhaustive()
    }
}

impl ErasureBoard {
    /// Posts orders and wakes the writers.
    pub fn post(&self, orders: Vec<EraseOrder>) {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).extend(orders);
        for w in self.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            w();
        }
    }

    /// Takes the orders for the buckets `owns` says are this writer's.
    pub fn take(&self, owns: impl Fn(u32, u32) -> bool) -> Vec<EraseOrder> {
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        let (mine, rest): (Vec<EraseOrder>, Vec<EraseOrder>) =
            std::mem::take(&mut *orders).into_iter().partition(|o| owns(o.table, o.bucket));
        *orders = rest;
        mine
    }

    /// A writer's report.
    pub fn report(&self, report: BucketErased) {
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
    }

    /// The reports so far (taken).
    pub fn reports(&self) -> Vec<BucketErased> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Registers a writer to wake when orders arrive.
    pub fn register(&self, wake: crate::epoch_writer::Waker) {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).push(wake);
    }
}

/// Rebuilt key indexes, by `(table, bucket)`, until their writer takes them.
#[derive(Debug, Default)]
pub struct IndexStore(std::sync::Mutex<std::collections::HashMap<(u32, u32), crate::key_index::BucketIndex>>);

impl IndexStore {
    /// Stores a bucket's index.
    pub fn put(&self, table: u32, bucket: u32, index: crate::key_index::BucketIndex) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert((table, bucket), index);
    }

    /// Takes a bucket's index (once).
    pub fn take(&self, table: u32, bucket: u32) -> Option<crate::key_index::BucketIndex> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&(table, bucket))
    }
}

/// A handle that schedules one operator from any thread; empty until the operator registers.
#[derive(Debug, Default)]
pub struct Wake(std::sync::Mutex<Option<timely::scheduling::SyncActivator>>);

impl Wake {
    /// Registers the operator to wake.
    pub fn register(&self, activator: timely::scheduling::SyncActivator) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(activator);
    }

    /// Schedules the operator, if registered and still running.
    pub fn wake(&self) {
        if let Some(a) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = a.activate();
        }
    }
}

/// The first fatal error any operator hit. Operators that record one keep holding their
/// capabilities, so nothing after the failure can be committed; the runner stops the run.
#[derive(Debug, Default)]
pub struct Failure(std::sync::Mutex<Option<String>>);

impl Failure {
    /// Records a fatal error (the first one wins).
    pub fn record(&self, error: impl std::fmt::Display) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(error = %error, "fatal pipeline error");
            *slot = Some(error.to_string());
        }
    }

    /// The recorded error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Shared plan handle.
pub type PlanRef = Arc<PipelinePlan>;

impl PipelinePlan {
    /// The topics feeding dead-letter table `index`.
    pub fn dead_letter_topics(&self, index: usize) -> Vec<&str> {
        self.tables.iter().filter(|t| t.dead_letters == index).map(|t| t.topic.as_str()).collect()
    }

    /// Backpressure shared by the sources: epoch `epoch` may not start until the committer
    /// (probed by `committed`) finished every epoch below `epoch - max_inflight_epochs`.
    pub fn must_wait(&self, epoch: Epoch, committed: &ProbeHandle<Epoch>) -> bool {
        epoch >= self.max_inflight_epochs && committed.less_than(&(epoch - self.max_inflight_epochs))
    }

    /// Where a source should start reading a partition: the smallest committed offset over
    /// the base and CDC tables of the topic (`None`: from the beginning).
    ///
    /// Dead-letter tables are not consulted: they commit first within an epoch, so they
    /// are never behind the base and CDC tables.
    pub fn resume_offset(&self, table: u32, partition: i32) -> Option<i64> {
        let plan = &self.tables[table as usize];
        let mut start: Option<i64> = None;
        for target in [&plan.base, &plan.cdc].into_iter().flatten() {
            match target.committed.get(&plan.topic, partition) {
                None => return None,
                Some(o) => start = Some(start.map_or(o, |s: i64| s.min(o))),
            }
        }
        start
    }
}
