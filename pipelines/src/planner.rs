//! Turning a validated configuration into a [`PipelinePlan`]: decide each table's column
//! model, create missing Iceberg tables, and read back where each table left off.
//!
//! ```text
//!   for each [[tables]]:
//!     column model ← existing base table │ existing CDC table │ declared columns │ first record's schema
//!     drift at start (changed declared columns, newest record per partition) → evolve via the catalog
//!     create missing base (bucket spec), CDC (time spec) and dead-letter tables
//!     committed offsets ← newest floe snapshot of each table (and refuse foreign pipelines)
//! ```
//!
//! # Invariants
//! - An existing table is authoritative: its schema, key and partition spec win over the
//!   configuration, and a conflicting configuration is an error naming the key.
//! - Creating a table that another process created meanwhile is not an error.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use floe_engine::catalog::{TableCatalog, TableState, ident};
use floe_engine::commit::{SchemaCommit, commit_metadata, upgrade_to_v3};
use floe_engine::config::{PipelineConfig, TableConfig, TableName};
use floe_engine::epoch::EpochPolicy;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::Metrics;
use floe_engine::offsets::{SourceOffsets, committed_progress};
use floe_engine::runtime::IoRuntime;
use floe_engine::schema::{
    Column, TableSchema, base_partition_spec, cdc_columns, cdc_partition_spec, dead_letter_columns, dead_letter_schema,
};
use floe_engine::schema_audit::{AuditEntry, history, now_ms, retired, retired_from};
use floe_engine::schema_drift::{Decision, Observed, SourceShape, decide};
use floe_engine::table_settings::DeleteMode;
use floe_operators::debezium::connect_schema::{ConnectSchema, record_key_fields, row_fields};
use floe_operators::plan::{Failure, PipelinePlan, RowTransform, TablePlan, Target};
use floe_operators::schema_versions::{FirstSeen, SchemaVersions};
use iceberg::TableCreation;
use iceberg::spec::{FormatVersion, Schema, Transform, UnboundPartitionSpec};
use tracing::{info, warn};

/// A sample record of a topic: key bytes and value bytes.
pub type Sample = (Option<Vec<u8>>, Vec<u8>);

/// Finds a sample message of a topic, to learn its schema when no table exists yet.
pub trait SchemaDiscovery {
    /// Up to `limit` samples of table `table`'s topic, oldest first.
    fn samples(&self, table: u32, limit: usize) -> Result<Vec<Sample>>;

    /// The newest record of each partition of table `table`'s topic, with its partition and
    /// offset: what the source says the table looks like now (pull detection).
    fn newest(&self, _table: u32) -> Result<Vec<(i32, i64, Sample)>> {
        Ok(Vec::new())
    }
}

/// Property recording a table's key columns (the CDC table has no identifier fields).
pub const KEY_PROPERTY: &str = "floe.key";

/// Builds the plan. `transforms` are user transforms by table index.
pub fn plan(
    config: &PipelineConfig,
    catalog: Arc<dyn TableCatalog>,
    runtime: IoRuntime,
    metrics: Arc<Metrics>,
    discovery: &dyn SchemaDiscovery,
    transforms: &HashMap<usize, RowTransform>,
) -> Result<PipelinePlan> {
    let mut dead_letter_names: Vec<TableName> = Vec::new();
    let mut tables = Vec::new();
    for (i, t) in config.tables.iter().enumerate() {
        let dl = match dead_letter_names.iter().position(|n| n == &t.dead_letters) {
            Some(p) => p,
            None => {
                dead_letter_names.push(t.dead_letters.clone());
                dead_letter_names.len() - 1
            }
        };
        match plan_table(config, i, t, catalog.as_ref(), &runtime, discovery)? {
            Some(mut table) => {
                table.dead_letters = dl;
                table.transform = transforms.get(&i).cloned();
                tables.push(table);
            }
            None => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}: `tables[{i}]`: topic `{}` has no records to learn its columns from and no table exists yet; declare `columns` or start once the topic has data",
                        config.file.display(),
                        t.topic
                    ),
                ));
            }
        }
    }
    let mut dead_letters = Vec::new();
    for name in &dead_letter_names {
        let mut state = ensure(
            catalog.as_ref(),
            &runtime,
            name,
            dead_letter_schema()?,
            UnboundPartitionSpec::builder().with_spec_id(0).build(),
            props("dead-letters", None, None),
        )?;
        if state.metadata.current_schema().field_by_name(dead_letter_columns::REASON_KIND).is_none() {
            // Made before dead letters had a reason kind: add the column (optional, so older
            // rows read null), as any additive change.
            let change = SchemaCommit { schema: dead_letter_schema()?, retired: Default::default(), audit: Vec::new() };
            let ident = state.ident.clone();
            runtime.block_on(commit_metadata(catalog.as_ref(), &ident, Some(&change), HashMap::new(), &[]))?;
            info!(table = %name, "dead-letter table: added column `reason_kind`");
            state = load(catalog.as_ref(), &runtime, name)?
                .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{name} vanished")))?;
        }
        dead_letters.push(target(name, &state, &config.pipeline.id)?);
    }
    Ok(PipelinePlan {
        pipeline_id: config.pipeline.id.clone(),
        epochs: EpochPolicy::every(config.pipeline.commit_every),
        max_inflight_epochs: config.pipeline.max_inflight_epochs,
        tables,
        dead_letters,
        catalog,
        runtime,
        metrics,
        failure: Arc::new(Failure::default()),
        committer_wake: Default::default(),
        indexes: Default::default(),
        erasures: Default::default(),
        maintain_at_end: false,
    })
}

fn props(kind: &str, topic: Option<&str>, key: Option<&[String]>) -> HashMap<String, String> {
    // No `write.parquet.compression-codec`: unset, floe writes zstd, and Snappy for small
    // epoch files (`files::compression`); a codec the user sets is used for every file.
    let mut p = HashMap::from([("floe.kind".to_string(), kind.to_string())]);
    if kind == "base" {
        for k in ["write.delete.mode", "write.update.mode", "write.merge.mode"] {
            p.insert(k.to_string(), "merge-on-read".to_string());
        }
        p.insert("write.upsert.enabled".to_string(), "true".to_string());
    }
    if let Some(t) = topic {
        p.insert("floe.topic".to_string(), t.to_string());
    }
    if let Some(k) = key {
        p.insert(KEY_PROPERTY.to_string(), k.join(","));
    }
    p
}

fn load(catalog: &dyn TableCatalog, runtime: &IoRuntime, name: &TableName) -> Result<Option<TableState>> {
    runtime.block_on(catalog.load(&ident(name)))
}

fn ensure(
    catalog: &dyn TableCatalog,
    runtime: &IoRuntime,
    name: &TableName,
    schema: Schema,
    spec: UnboundPartitionSpec,
    properties: HashMap<String, String>,
) -> Result<TableState> {
    ensure_format(catalog, runtime, name, schema, spec, properties, FormatVersion::V2)
}

fn ensure_format(
    catalog: &dyn TableCatalog,
    runtime: &IoRuntime,
    name: &TableName,
    schema: Schema,
    spec: UnboundPartitionSpec,
    properties: HashMap<String, String>,
    format_version: FormatVersion,
) -> Result<TableState> {
    if let Some(state) = load(catalog, runtime, name)? {
        return Ok(state);
    }
    let creation = TableCreation::builder()
        .name(name.name.clone())
        .schema(schema)
        .partition_spec(spec)
        .properties(properties)
        .format_version(format_version)
        .build();
    match runtime.block_on(catalog.create(&name.namespace, creation)) {
        Ok(state) => {
            info!(table = %name, "created table");
            Ok(state)
        }
        Err(e) => match load(catalog, runtime, name)? {
            // Lost a creation race: the other creator's table is as good as ours.
            Some(state) => Ok(state),
            None => Err(e),
        },
    }
}

fn target(name: &TableName, state: &TableState, pipeline_id: &str) -> Result<Target> {
    let committed = match committed_progress(&state.metadata)? {
        Some(p) if p.pipeline_id != pipeline_id => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{name} is written by pipeline `{}`; this pipeline is `{pipeline_id}`. Two pipelines must not write one table: set `pipeline.id = \"{}\"` to continue that pipeline",
                    p.pipeline_id, p.pipeline_id
                ),
            ));
        }
        Some(p) => p.offsets,
        None => SourceOffsets::default(),
    };
    Ok(Target {
        name: name.clone(),
        ident: state.ident.clone(),
        schema: Arc::clone(state.metadata.current_schema()),
        spec: Arc::clone(state.metadata.default_partition_spec()),
        location: state.metadata.location().to_string(),
        committed,
        properties: state.metadata.properties().clone(),
        sequence_number: state.metadata.last_sequence_number(),
    })
}

/// The column model of an existing CDC table: its source columns (all nullable), keyed by
/// `key` or else by the key the table records; `None` if it records none.
pub fn cdc_column_model(
    metadata: &iceberg::spec::TableMetadata,
    key: Option<&[String]>,
) -> Result<Option<TableSchema>> {
    let columns = metadata
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .skip(cdc_columns::COUNT)
        .map(|f| {
            let ty = match f.field_type.as_ref() {
                iceberg::spec::Type::Primitive(p) => floe_engine::schema::ColumnType::from_iceberg(p),
                _ => None,
            };
            ty.map(|ty| Column { name: f.name.clone(), ty, nullable: true }).ok_or_else(|| {
                Error::new(ErrorKind::Data, format!("CDC column `{}` has a type floe does not write", f.name))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let key: Vec<String> = match (key, metadata.properties().get(KEY_PROPERTY)) {
        (Some(k), _) => k.to_vec(),
        (None, Some(p)) => p.split(',').map(str::to_string).collect(),
        (None, None) => return Ok(None),
    };
    TableSchema::new(columns, &key).map(Some)
}

/// Whether a CDC table's source columns are a strict prefix (by name) of `schema`'s, or
/// narrower: the base table evolved and the CDC table did not.
fn lags(cdc: &iceberg::spec::TableMetadata, schema: &TableSchema) -> Result<bool> {
    let expected = schema.cdc_schema()?;
    let have: Vec<_> = cdc.current_schema().as_struct().fields().to_vec();
    let want: Vec<_> = expected.as_struct().fields().to_vec();
    if have.len() > want.len() || have.iter().zip(&want).any(|(h, w)| h.name != w.name) {
        return Ok(false);
    }
    Ok(have.len() < want.len() || have.iter().zip(&want).any(|(h, w)| h.field_type != w.field_type))
}

/// What drift found at start changes: the retired columns and the audit records.
type StartEvolution = (BTreeSet<String>, Vec<AuditEntry>);

/// Applies the drift visible at start to `schema`: changed declared columns (a column the
/// file no longer declares is dropped), then the newest record of each partition. Returns
/// the schema and, if it changed, the retired columns and the audit records to commit.
fn evolve_at_start(
    config: &PipelineConfig,
    index: usize,
    t: &TableConfig,
    mut schema: TableSchema,
    mut retired: BTreeSet<String>,
    discovery: &dyn SchemaDiscovery,
) -> Result<(TableSchema, Option<StartEvolution>)> {
    let file = config.file.display();
    let mut shapes: Vec<(SourceShape, Observed, FirstSeen)> = Vec::new();
    let now = now_ms();
    if let Some(declared) = &t.columns {
        let dropped = schema
            .columns
            .iter()
            .filter(|c| !declared.iter().any(|d| d.name == c.name))
            .map(|c| c.name.clone())
            .collect();
        let seen =
            FirstSeen { topic: t.topic.clone(), partition: -1, offset: -1, detected: "declared".into(), at_ms: now };
        // The file is the source's word: what it no longer declares is dropped, a narrower type is narrowed.
        let narrowed = declared
            .iter()
            .filter(|d| schema.position(&d.name).is_some_and(|p| schema.columns[p].ty != d.ty))
            .map(|d| d.name.clone())
            .collect();
        shapes.push((SourceShape { columns: declared.clone(), key: None }, Observed { dropped, narrowed }, seen));
    }
    for (shape, seen) in pulled_shapes(discovery, index as u32, &t.topic, &schema.key_names())? {
        shapes.push((shape, Observed::default(), seen));
    }
    let mut audit = Vec::new();
    for (shape, dropped, seen) in shapes {
        match decide(&schema, &retired, &shape, &dropped, t.schema_changes) {
            Decision::Unchanged => {}
            Decision::Evolve { schema: next, retired: now_retired, changes } => {
                let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
                info!(topic = %t.topic, detected = %seen.detected, partition = seen.partition, changes = %described.join("; "), "schema drift found at start; evolving the tables");
                audit.push(AuditEntry::new(changes, &seen, t.schema_changes.automatic_approval()));
                schema = next;
                retired = now_retired;
            }
            Decision::Pause { changes } => {
                let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
                if seen.detected == "declared" {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "{file}: `tables[{index}].columns`: {} (schema_changes = \"{}\"); restore the columns, or set schema_changes = \"lenient\"",
                            described.join("; "),
                            t.schema_changes.name()
                        ),
                    ));
                }
                warn!(topic = %t.topic, partition = seen.partition, offset = seen.offset, changes = %described.join("; "),
                    "the newest record carries a schema change that is not additive; the table will pause when the stream reaches it");
            }
        }
    }
    if audit.is_empty() {
        return Ok((schema, None));
    }
    Ok((schema, Some((retired, audit))))
}

/// What the source says table `table` looks like now: the shape of the newest record of
/// each partition of its topic (pull detection). Records whose schema floe cannot read are
/// skipped; the stream dead-letters them when it reaches them.
pub fn pulled_shapes(
    discovery: &dyn SchemaDiscovery,
    table: u32,
    topic: &str,
    key_names: &[String],
) -> Result<Vec<(SourceShape, FirstSeen)>> {
    let now = now_ms();
    let mut out = Vec::new();
    for (partition, offset, (key, value)) in discovery.newest(table)? {
        let Ok(Some(found)) = schema_from_sample(key.as_deref(), &value, Some(key_names)) else { continue };
        let key = key.as_deref().and_then(record_key_fields);
        let seen = FirstSeen { topic: topic.to_string(), partition, offset, detected: "pull".into(), at_ms: now };
        out.push((SourceShape { columns: found.columns, key }, seen));
    }
    Ok(out)
}

/// Column model from a sample message: its value schema's row struct, and its key
/// schema's fields (or `key` from the configuration).
pub fn schema_from_sample(
    key: Option<&[u8]>,
    value: &[u8],
    config_key: Option<&[String]>,
) -> Result<Option<TableSchema>> {
    #[derive(serde::Deserialize)]
    struct WithSchema {
        schema: Option<ConnectSchema>,
    }
    let Ok(parsed) = serde_json::from_slice::<WithSchema>(value) else { return Ok(None) };
    let Some(schema) = parsed.schema else { return Ok(None) };
    let Some(fields) = row_fields(&schema) else { return Ok(None) };
    let columns: Vec<Column> = fields.into_iter().map(|(c, _)| c).collect();
    let key_names: Vec<String> = match config_key {
        Some(k) => k.to_vec(),
        None => key.and_then(record_key_fields).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "the record key carries no schema to take the primary key from; set `key` for the table",
            )
        })?,
    };
    TableSchema::new(columns, &key_names).map(Some)
}

fn plan_table(
    config: &PipelineConfig,
    index: usize,
    t: &TableConfig,
    catalog: &dyn TableCatalog,
    runtime: &IoRuntime,
    discovery: &dyn SchemaDiscovery,
) -> Result<Option<TablePlan>> {
    let file = config.file.display();
    let key_err = |k: &str, msg: String| Error::new(ErrorKind::Config, format!("{file}: `tables[{index}].{k}`: {msg}"));
    let base_state = match &t.base {
        Some(n) => load(catalog, runtime, n)?,
        None => None,
    };
    let cdc_state = match &t.cdc {
        Some(n) => load(catalog, runtime, n)?,
        None => None,
    };

    // 1. The column model.
    let schema: TableSchema = if let Some(state) = &base_state {
        TableSchema::from_base_schema(state.metadata.current_schema())?
    } else if let Some(state) = &cdc_state {
        cdc_column_model(&state.metadata, t.key.as_deref())?
            .ok_or_else(|| key_err("key", "the existing CDC table does not record its key; set `key`".into()))?
    } else if let Some(columns) = &t.columns {
        let key = t.key.clone().unwrap_or_default();
        TableSchema::new(columns.clone(), &key).map_err(|e| key_err("columns", e.to_string()))?
    } else {
        let samples = discovery.samples(index as u32, 64)?;
        if samples.is_empty() {
            return Ok(None);
        }
        let mut found = None;
        for (k, v) in &samples {
            if let Some(s) =
                schema_from_sample(k.as_deref(), v, t.key.as_deref()).map_err(|e| key_err("key", e.to_string()))?
            {
                found = Some(s);
                break;
            }
        }
        match found {
            Some(s) => {
                info!(topic = %t.topic, columns = s.columns.len(), key = ?s.key_names(), "learned columns from the topic");
                s
            }
            None => {
                return Err(key_err(
                    "columns",
                    format!(
                        "`{}` carries no Connect schemas (schemaless JSON); declare the table's `columns`",
                        t.topic
                    ),
                ));
            }
        }
    };
    // 1c. A CDC table left behind its base table's schema (a crash between the two
    // tables' schema commits) catches up, with the base table's audit records.
    let cdc_state = match (&base_state, cdc_state) {
        (Some(base), Some(cdc)) if lags(&cdc.metadata, &schema)? => {
            let change = SchemaCommit {
                schema: schema.cdc_schema()?,
                retired: retired(&base.metadata),
                audit: history(&base.metadata)?,
            };
            runtime.block_on(commit_metadata(catalog, &cdc.ident, Some(&change), HashMap::new(), &[]))?;
            info!(table = %cdc.ident, "CDC table schema caught up with its base table");
            load(catalog, runtime, t.cdc.as_ref().expect("a CDC state has a name"))?
        }
        (_, cdc) => cdc,
    };
    if let Some(k) = &t.key
        && &schema.key_names() != k
    {
        return Err(key_err("key", format!("the table's key is {:?}, not {k:?}", schema.key_names())));
    }
    // 1b. Drift found before any new event: the declared columns, and the newest record of
    // each partition (pull). Additive changes are applied now, through the catalog.
    let (schema, base_state, cdc_state) = match (&base_state, &cdc_state) {
        (None, None) => (schema, base_state, cdc_state),
        _ => {
            let retired = base_state.as_ref().or(cdc_state.as_ref()).map(|s| retired(&s.metadata)).unwrap_or_default();
            match evolve_at_start(config, index, t, schema, retired, discovery)? {
                (schema, None) => (schema, base_state, cdc_state),
                (schema, Some((retired, audit))) => {
                    for (state, cdc) in [(&base_state, false), (&cdc_state, true)] {
                        let Some(state) = state else { continue };
                        let commit = SchemaCommit {
                            schema: if cdc { schema.cdc_schema()? } else { schema.base_schema()? },
                            retired: retired.clone(),
                            audit: audit.clone(),
                        };
                        runtime.block_on(commit_metadata(catalog, &state.ident, Some(&commit), HashMap::new(), &[]))?;
                    }
                    let reload = |n: &Option<TableName>| match n {
                        Some(n) => load(catalog, runtime, n),
                        None => Ok(None),
                    };
                    (schema, reload(&t.base)?, reload(&t.cdc)?)
                }
            }
        }
    };

    // 2. Bucketing.
    let (bucket_column, buckets) = match &base_state {
        Some(state) => {
            let spec = state.metadata.default_partition_spec();
            let field = spec.fields().first().filter(|_| spec.fields().len() == 1);
            match field.map(|f| (f.transform, f.source_id)) {
                Some((Transform::Bucket(n), source_id)) => {
                    let name = state
                        .metadata
                        .current_schema()
                        .field_by_id(source_id)
                        .map(|f| f.name.clone())
                        .unwrap_or_default();
                    let pos = schema.position(&name).filter(|p| schema.key.contains(p)).ok_or_else(|| {
                        key_err("base", "the base table is bucketed by a column outside the key".into())
                    })?;
                    if n != t.buckets {
                        warn!(table = %t.base.as_ref().map(|b| b.to_string()).unwrap_or_default(), existing = n, configured = t.buckets, "the base table keeps its bucket count");
                    }
                    (pos, n)
                }
                _ => {
                    return Err(key_err(
                        "base",
                        "the existing base table is not partitioned by bucket(N, key column)".into(),
                    ));
                }
            }
        }
        None => {
            let pos = match &t.bucket_column {
                Some(c) => schema.position(c).filter(|p| schema.key.contains(p)).ok_or_else(|| {
                    key_err(
                        "bucket_column",
                        format!("`{c}` is not a key column; the bucket must be a function of the key"),
                    )
                })?,
                None => schema.key[0],
            };
            (pos, t.buckets)
        }
    };

    // 3. Tables.
    let key_names = schema.key_names();
    let base = match &t.base {
        None => None,
        Some(name) => {
            let format = match t.deletes {
                DeleteMode::Vector => FormatVersion::V3,
                _ => FormatVersion::V2,
            };
            let state = match base_state {
                Some(s) => s,
                None => ensure_format(
                    catalog,
                    runtime,
                    name,
                    schema.base_schema()?,
                    base_partition_spec(&schema, bucket_column, buckets)?,
                    props("base", Some(&t.topic), Some(&key_names)),
                    format,
                )?,
            };
            let state = match (t.deletes, state.metadata.format_version()) {
                (DeleteMode::Vector, FormatVersion::V2) => {
                    runtime.block_on(upgrade_to_v3(catalog, &state.ident))?;
                    info!(table = %name, "upgraded to format version 3 for deletion vectors");
                    load(catalog, runtime, name)?.ok_or_else(|| key_err("base", format!("{name} vanished")))?
                }
                (DeleteMode::Position, FormatVersion::V3) => {
                    return Err(key_err(
                        "deletes",
                        format!(
                            "{name} is format version 3, which takes deletion vectors, not position-delete files; set deletes = \"vector\""
                        ),
                    ));
                }
                _ => state,
            };
            Some(target(name, &state, &config.pipeline.id)?)
        }
    };
    let cdc = match &t.cdc {
        None => None,
        Some(name) => {
            let state = match cdc_state {
                Some(s) => s,
                None => ensure(
                    catalog,
                    runtime,
                    name,
                    schema.cdc_schema()?,
                    cdc_partition_spec(t.cdc_partition)?,
                    props("cdc", Some(&t.topic), Some(&key_names)),
                )?,
            };
            Some(target(name, &state, &config.pipeline.id)?)
        }
    };
    let equality_ids = match &base {
        Some(b) => key_names
            .iter()
            .map(|n| {
                b.schema
                    .field_by_name(n)
                    .map(|f| f.id)
                    .ok_or_else(|| key_err("base", format!("key column `{n}` missing")))
            })
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let cdc_positions = match &cdc {
        Some(c) => {
            c.schema.as_struct().fields().iter().skip(cdc_columns::COUNT).map(|f| schema.position(&f.name)).collect()
        }
        None => Vec::new(),
    };
    let retired_columns =
        base.as_ref().or(cdc.as_ref()).map(|target| retired_from(&target.properties)).unwrap_or_default();
    let schema = Arc::new(schema);
    Ok(Some(TablePlan {
        index: index as u32,
        topic: t.topic.clone(),
        versions: SchemaVersions::new(Arc::clone(&schema), retired_columns),
        schema_policy: t.schema_changes,
        schema,
        declared: t.columns.clone(),
        bucket_column,
        buckets,
        upsert: t.upsert,
        base,
        cdc,
        dead_letters: 0,
        equality_ids,
        cdc_positions,
        transform: None,
        row_type: None,
        deletes: t.deletes,
        maintenance: t.maintenance.clone(),
    }))
}
