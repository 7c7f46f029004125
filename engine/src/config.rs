//! Pipeline configuration: the TOML file a user writes, parsed and validated into
//! [`PipelineConfig`].
//!
//! ```toml
//! [pipeline]
//! id = "shop"                  # default: the file's stem
//! commit_every = 10000         # records per partition in one epoch (one commit per table)
//!
//! [catalog]
//! uri = "sqlite://warehouse/catalog.db"   # default
//! warehouse = "warehouse"                  # default
//!
//! [source]
//! kind = "replay"
//! path = "changes.jsonl"
//!
//! [[tables]]
//! topic = "shop.inventory.orders"
//! base = "base.orders"
//! cdc = "cdc.orders"
//! buckets = 16
//! schema_changes = "additive"  # default; or "lenient", "manual"
//! ```
//!
//! # Invariants
//! - Every error names the file, the key (as a path such as `tables[0].buckets`) and what
//!   is wrong; unknown keys are errors, so typos never pass silently.
//! - Relative paths (source path, SQLite file, warehouse) resolve against the folder of the
//!   pipeline file, never against the process's working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Column, ColumnType, TimeGranularity};
use crate::schema_drift::SchemaPolicy;
use crate::table_settings::{DeleteMode, MaintenanceSettings, RawMaintenance};

/// A validated pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// Pipeline identity and epoch settings.
    pub pipeline: PipelineSettings,
    /// Where tables live.
    pub catalog: CatalogConfig,
    /// Where change events come from.
    pub source: SourceConfig,
    /// One entry per source table.
    pub tables: Vec<TableConfig>,
    /// `[[tables]]` entries with a `topic_pattern`, expanded by [`PipelineConfig::with_topics`].
    pub templates: Vec<TableTemplate>,
}

/// `[pipeline]`
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Recorded in every snapshot; a table written by another pipeline id is refused.
    pub id: String,
    /// Timely worker threads.
    pub workers: usize,
    /// Records per partition per epoch.
    pub commit_every: u64,
    /// How many epochs the source may run ahead of the last committed one.
    pub max_inflight_epochs: u64,
}

/// `[catalog]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogConfig {
    /// Catalog name; the JDBC catalog keys rows by it, so readers must use the same name.
    pub name: String,
    /// SQL catalog URI with an absolute path, e.g. `sqlite:///data/warehouse/catalog.db`.
    pub uri: String,
    /// Warehouse root: an absolute local path.
    pub warehouse: String,
}

/// `[source]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    /// A file of Kafka records in `kcat -C -J` form.
    Replay {
        /// Absolute path of the log.
        path: PathBuf,
    },
    /// Kafka topics, read with librdkafka.
    Kafka(KafkaConfig),
}

/// Where a partition with no committed progress starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest record the broker still has.
    #[default]
    Earliest,
    /// The first record produced after the pipeline starts.
    Latest,
}

/// `[source] kind = "kafka"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, comma-separated.
    pub brokers: String,
    /// Topics to consume (default: every topic a `[[tables]]` entry names or matches).
    pub topics: Option<Vec<String>>,
    /// Regex selecting topics to consume.
    pub topic_pattern: Option<String>,
    /// Start of partitions with no committed progress.
    pub start: StartPosition,
    /// Consumer group offsets are committed to, for lag dashboards only.
    pub group_id: String,
    /// Passed verbatim to librdkafka (SASL, TLS, client.id, ...); never logged.
    pub properties: Secrets,
    /// In a continuous run, the longest an epoch stays open (idle or slow partitions).
    pub commit_interval: std::time::Duration,
    /// In a continuous run, how often each table's schema is compared with the newest
    /// record of its topic (pull detection); `None`: only at start.
    pub schema_pull_interval: Option<std::time::Duration>,
}

/// Default of `source.schema_pull_interval_ms`: five minutes.
pub const DEFAULT_SCHEMA_PULL_MS: u64 = 300_000;

/// Replaces each `${env:NAME}` in `text` with the environment variable `NAME` (secrets stay
/// out of pipeline files); returns the name of a variable that is not set.
pub fn expand_env(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${env:") {
        let Some(end) = rest[at..].find('}') else { break };
        let name = &rest[at + 6..at + end];
        out.push_str(&rest[..at]);
        out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Configuration values that must not appear in logs or errors (passwords, keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "<redacted>"))).finish()
    }
}

/// A `[[tables]]` entry with `topic_pattern`: one table per matching topic.
#[derive(Clone, Debug)]
pub struct TableTemplate {
    /// Position in `[[tables]]`, for messages.
    pub index: usize,
    /// The pattern, matched against whole topic names.
    pub pattern: String,
    /// The entry, with `{1}`, `{2}`, ... in table names standing for capture groups.
    pub proto: TableConfig,
}

/// A fully qualified table name: namespace and table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Namespace (one level).
    pub namespace: String,
    /// Table.
    pub name: String,
}

impl TableName {
    /// A name split at its first dot, unchecked (template names carry placeholders).
    fn raw(text: &str) -> TableName {
        let (ns, name) = text.split_once('.').unwrap_or((text, ""));
        TableName { namespace: ns.to_string(), name: name.to_string() }
    }

    /// Parses `namespace.table`.
    pub fn parse(text: &str) -> Option<TableName> {
        let (ns, name) = text.split_once('.')?;
        let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        (ok(ns) && ok(name)).then(|| TableName { namespace: ns.to_string(), name: name.to_string() })
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// `[[tables]]`: one source table and the tables floe maintains for it.
#[derive(Clone, Debug, PartialEq)]
pub struct TableConfig {
    /// Kafka topic carrying the table's change events.
    pub topic: String,
    /// The upsert (mirror) table, if maintained.
    pub base: Option<TableName>,
    /// The append-only change ledger, if maintained.
    pub cdc: Option<TableName>,
    /// Where this topic's bad records go.
    pub dead_letters: TableName,
    /// Number of buckets of the base table's partitioning.
    pub buckets: u32,
    /// Primary-key columns; default: the fields of the record key.
    pub key: Option<Vec<String>>,
    /// Column the base table is bucketed by; default: the first key column.
    pub bucket_column: Option<String>,
    /// Whether inserts also delete prior rows with their key (idempotent under redelivery).
    pub upsert: bool,
    /// Time granularity of the CDC table's partitioning.
    pub cdc_partition: TimeGranularity,
    /// Declared columns, for schemaless (payload-only) topics.
    pub columns: Option<Vec<Column>>,
    /// What schema drift does: `additive` (default), `lenient` or `manual`.
    pub schema_changes: SchemaPolicy,
    /// How the base table names deleted rows (`deletes`).
    pub deletes: DeleteMode,
    /// When floe compacts the tables (`[tables.maintenance]`).
    pub maintenance: MaintenanceSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    catalog: RawCatalog,
    source: RawSource,
    #[serde(default)]
    tables: Vec<RawTable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    id: Option<String>,
    workers: Option<usize>,
    commit_every: Option<u64>,
    max_inflight_epochs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    name: Option<String>,
    uri: Option<String>,
    warehouse: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawSource {
    Replay {
        path: PathBuf,
    },
    Kafka {
        brokers: Brokers,
        topics: Option<Vec<String>>,
        topic_pattern: Option<String>,
        start: Option<StartPosition>,
        group_id: Option<String>,
        commit_interval_ms: Option<u64>,
        schema_pull_interval_ms: Option<u64>,
        #[serde(default)]
        properties: BTreeMap<String, toml::Value>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Brokers {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    topic: Option<String>,
    topic_pattern: Option<String>,
    base: Option<String>,
    cdc: Option<String>,
    dead_letters: Option<String>,
    buckets: Option<u32>,
    key: Option<Vec<String>>,
    bucket_column: Option<String>,
    upsert: Option<bool>,
    cdc_partition: Option<TimeGranularity>,
    columns: Option<Vec<RawColumn>>,
    schema_changes: Option<String>,
    deletes: Option<String>,
    maintenance: Option<RawMaintenance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "default_true")]
    nullable: bool,
}

fn default_true() -> bool {
    true
}

/// Default records per partition per epoch.
pub const DEFAULT_COMMIT_EVERY: u64 = 10_000;
/// Default bucket count of base tables.
pub const DEFAULT_BUCKETS: u32 = 16;

impl PipelineConfig {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("cannot read pipeline file {}", path.display())).with_source(e)
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates pipeline text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<PipelineConfig> {
        let file = path.to_path_buf();
        let base_dir =
            path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let raw: RawFile = parse_toml(text, path)?;
        let err = |key: &str, msg: String| config_error(path, key, &msg);

        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "floe".into());
        let pipeline = PipelineSettings {
            id: raw.pipeline.id.unwrap_or(stem),
            workers: raw.pipeline.workers.unwrap_or_else(default_workers),
            commit_every: raw.pipeline.commit_every.unwrap_or(DEFAULT_COMMIT_EVERY),
            max_inflight_epochs: raw.pipeline.max_inflight_epochs.unwrap_or(4),
        };
        if pipeline.id.trim().is_empty() {
            return Err(err("pipeline.id", "must not be empty".into()));
        }
        if pipeline.workers == 0 {
            return Err(err("pipeline.workers", "must be at least 1".into()));
        }
        if pipeline.commit_every == 0 {
            return Err(err("pipeline.commit_every", "must be at least 1".into()));
        }
        if pipeline.max_inflight_epochs == 0 {
            return Err(err("pipeline.max_inflight_epochs", "must be at least 1".into()));
        }

        let warehouse = raw.catalog.warehouse.unwrap_or_else(|| "warehouse".into());
        if warehouse.contains("://") && !warehouse.starts_with("file://") {
            return Err(err(
                "catalog.warehouse",
                format!("`{warehouse}`: only local warehouses are supported so far (a path or file:// URI)"),
            ));
        }
        let warehouse = resolve(&base_dir, warehouse.strip_prefix("file://").unwrap_or(&warehouse));
        let uri = raw.catalog.uri.unwrap_or_else(|| "sqlite://warehouse/catalog.db".into());
        let Some(db) = uri.strip_prefix("sqlite://") else {
            return Err(err("catalog.uri", format!("`{uri}`: only sqlite:// catalogs are supported so far")));
        };
        let (db_path, query) = db.split_once('?').unwrap_or((db, ""));
        if db_path.is_empty() {
            return Err(err("catalog.uri", format!("`{uri}` names no database file")));
        }
        let db_abs = resolve(&base_dir, db_path);
        let uri = if query.is_empty() {
            format!("sqlite://{}", db_abs.display())
        } else {
            format!("sqlite://{}?{query}", db_abs.display())
        };
        let catalog = CatalogConfig {
            name: raw.catalog.name.unwrap_or_else(|| "floe".into()),
            uri,
            warehouse: warehouse.display().to_string(),
        };
        if catalog.name.trim().is_empty() {
            return Err(err("catalog.name", "must not be empty".into()));
        }

        let source = match raw.source {
            RawSource::Replay { path: p } => SourceConfig::Replay { path: resolve(&base_dir, &p.to_string_lossy()) },
            RawSource::Kafka {
                brokers,
                topics,
                topic_pattern,
                start,
                group_id,
                commit_interval_ms,
                schema_pull_interval_ms,
                properties,
            } => {
                let brokers = match brokers {
                    Brokers::One(b) => b,
                    Brokers::Many(list) => list.join(","),
                };
                if brokers.trim().is_empty() {
                    return Err(err("source.brokers", "must name at least one broker".into()));
                }
                if let Some(p) = &topic_pattern {
                    regex::Regex::new(p).map_err(|e| err("source.topic_pattern", format!("not a valid regex: {e}")))?;
                }
                let mut props = BTreeMap::new();
                for (k, v) in properties {
                    let text = match v {
                        toml::Value::String(s) => s,
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        _ => {
                            return Err(err(
                                &format!("source.properties.{k}"),
                                "must be a string, number or boolean".into(),
                            ));
                        }
                    };
                    if matches!(k.as_str(), "enable.auto.commit" | "group.id" | "bootstrap.servers") {
                        return Err(err(
                            &format!("source.properties.{k}"),
                            "is set by floe (use source.brokers / source.group_id; offsets live in the tables)".into(),
                        ));
                    }
                    let text = expand_env(&text).map_err(|var| {
                        err(&format!("source.properties.{k}"), format!("refers to ${{env:{var}}}, which is not set"))
                    })?;
                    props.insert(k, text);
                }
                let commit_interval_ms = commit_interval_ms.unwrap_or(5_000);
                if commit_interval_ms == 0 {
                    return Err(err("source.commit_interval_ms", "must be at least 1".into()));
                }
                SourceConfig::Kafka(KafkaConfig {
                    brokers,
                    topics,
                    topic_pattern,
                    start: start.unwrap_or_default(),
                    group_id: group_id.unwrap_or_else(|| format!("floe-{}", pipeline.id)),
                    properties: Secrets(props),
                    commit_interval: std::time::Duration::from_millis(commit_interval_ms),
                    schema_pull_interval: match schema_pull_interval_ms.unwrap_or(DEFAULT_SCHEMA_PULL_MS) {
                        0 => None,
                        ms => Some(std::time::Duration::from_millis(ms)),
                    },
                })
            }
        };

        if raw.tables.is_empty() {
            return Err(err("tables", "at least one [[tables]] entry is required".into()));
        }
        let mut tables = Vec::with_capacity(raw.tables.len());
        let mut templates = Vec::new();
        let mut topics = BTreeMap::new();
        for (i, t) in raw.tables.into_iter().enumerate() {
            let key_of = |k: &str| format!("tables[{i}].{k}");
            let (topic, pattern) = match (&t.topic, &t.topic_pattern) {
                (Some(topic), None) => (topic.clone(), None),
                (None, Some(p)) => {
                    regex::Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| err(&key_of("topic_pattern"), format!("not a valid regex: {e}")))?;
                    (p.clone(), Some(p.clone()))
                }
                (Some(_), Some(_)) => {
                    return Err(err(&key_of("topic"), "give `topic` or `topic_pattern`, not both".into()));
                }
                (None, None) => return Err(err(&key_of("topic"), "a table needs `topic` (or `topic_pattern`)".into())),
            };
            if topic.trim().is_empty() {
                return Err(err(&key_of("topic"), "must not be empty".into()));
            }
            if pattern.is_none()
                && let Some(prev) = topics.insert(topic.clone(), i)
            {
                return Err(err(&key_of("topic"), format!("`{topic}` is already consumed by tables[{prev}]")));
            }
            // Template names hold `{1}`-style placeholders; check them with a sample capture.
            let name = |k: &str, v: &Option<String>| -> Result<Option<TableName>> {
                match v {
                    None => Ok(None),
                    Some(text) => {
                        let probe = if pattern.is_some() { fill_captures(text, &["x"; 10]) } else { text.clone() };
                        TableName::parse(&probe)
                            .map(|_| Some(TableName::raw(text)))
                            .ok_or_else(|| err(&key_of(k), format!("`{text}` is not of the form namespace.table")))
                    }
                }
            };
            let base = name("base", &t.base)?;
            let cdc = name("cdc", &t.cdc)?;
            if base.is_none() && cdc.is_none() {
                return Err(err(&key_of("base"), "a table needs `base`, `cdc`, or both".into()));
            }
            if base.is_some() && base == cdc {
                return Err(err(&key_of("cdc"), "the CDC table must differ from the base table".into()));
            }
            let namespace = base.as_ref().or(cdc.as_ref()).map(|n| n.namespace.clone()).unwrap_or_default();
            let dead_letters = match name("dead_letters", &t.dead_letters)? {
                Some(n) => n,
                None => TableName { namespace, name: "dead_letters".into() },
            };
            let buckets = t.buckets.unwrap_or(DEFAULT_BUCKETS);
            if buckets == 0 {
                return Err(err(&key_of("buckets"), "must be at least 1".into()));
            }
            if let Some(key) = &t.key
                && key.is_empty()
            {
                return Err(err(&key_of("key"), "must name at least one column".into()));
            }
            let columns = match t.columns {
                None => None,
                Some(cols) => {
                    let mut out = Vec::with_capacity(cols.len());
                    for (j, c) in cols.into_iter().enumerate() {
                        let ty = ColumnType::parse(&c.ty).ok_or_else(|| {
                            err(
                                &format!("tables[{i}].columns[{j}].type"),
                                format!(
                                    "`{}` is not a type floe knows (boolean, int, long, float, double, decimal(p, s), date, time, timestamp, timestamptz, string, binary)",
                                    c.ty
                                ),
                            )
                        })?;
                        out.push(Column { name: c.name, ty, nullable: c.nullable });
                    }
                    if t.key.is_none() {
                        return Err(err(&key_of("key"), "declared columns need an explicit `key`".into()));
                    }
                    Some(out)
                }
            };
            if let (Some(cols), Some(key)) = (&columns, &t.key) {
                for k in key {
                    if !cols.iter().any(|c| &c.name == k) {
                        return Err(err(&key_of("key"), format!("`{k}` is not one of the declared columns")));
                    }
                }
            }
            let schema_changes = match t.schema_changes.as_deref() {
                None => SchemaPolicy::default(),
                Some(text) => SchemaPolicy::parse(text).ok_or_else(|| {
                    err(
                        &key_of("schema_changes"),
                        format!("`{text}` is not a schema policy (additive, lenient, manual)"),
                    )
                })?,
            };
            let deletes = match t.deletes.as_deref() {
                None => DeleteMode::default(),
                Some(text) => DeleteMode::parse(text).ok_or_else(|| {
                    err(&key_of("deletes"), format!("`{text}` is not a delete mode (position, vector, equality)"))
                })?,
            };
            let maintenance = t
                .maintenance
                .unwrap_or_default()
                .validate(deletes, |k, msg| err(&key_of(&format!("maintenance.{k}")), msg))?;
            let table = TableConfig {
                topic,
                base,
                cdc,
                dead_letters,
                buckets,
                key: t.key,
                bucket_column: t.bucket_column,
                upsert: t.upsert.unwrap_or(true),
                cdc_partition: t.cdc_partition.unwrap_or_default(),
                columns,
                schema_changes,
                deletes,
                maintenance,
            };
            match pattern {
                Some(pattern) => templates.push(TableTemplate { index: i, pattern, proto: table }),
                None => tables.push(table),
            }
        }
        let config = PipelineConfig { file, pipeline, catalog, source, tables, templates };
        config.check_table_names()?;
        Ok(config)
    }

    /// Tables named twice would be written by two writers at once.
    fn check_table_names(&self) -> Result<()> {
        let err = |key: &str, msg: String| config_error(&self.file, key, &msg);
        let mut owners: BTreeMap<TableName, String> = BTreeMap::new();
        for (i, t) in self.tables.iter().enumerate() {
            for (k, n) in [("base", &t.base), ("cdc", &t.cdc)] {
                if let Some(n) = n
                    && let Some(prev) = owners.insert(n.clone(), format!("tables[{i}].{k} (topic {})", t.topic))
                {
                    return Err(err(&format!("tables[{i}].{k}"), format!("`{n}` is already used by {prev}")));
                }
            }
        }
        for (i, t) in self.tables.iter().enumerate() {
            if let Some(prev) = owners.get(&t.dead_letters) {
                return Err(err(
                    &format!("tables[{i}].dead_letters"),
                    format!("`{}` is already used by {prev}", t.dead_letters),
                ));
            }
        }
        Ok(())
    }

    /// Whether the source's `topics` / `topic_pattern` (if set) select a topic.
    pub fn source_selects(&self, topic: &str) -> bool {
        let SourceConfig::Kafka(k) = &self.source else { return true };
        if k.topics.is_none() && k.topic_pattern.is_none() {
            return true;
        }
        let listed = k.topics.as_ref().is_some_and(|t| t.iter().any(|t| t == topic));
        let matched = k
            .topic_pattern
            .as_ref()
            .and_then(|p| regex::Regex::new(&format!("^(?:{p})$")).ok())
            .is_some_and(|r| r.is_match(topic));
        listed || matched
    }

    /// The concrete pipeline for the topics a source offers: explicit `[[tables]]`
    /// entries, plus one table per offered topic that a `topic_pattern` entry matches
    /// (`{1}`, `{2}`, ... in its table names become the capture groups). A topic the
    /// source's `topics`/`topic_pattern` select must have a table.
    pub fn with_topics(&self, offered: &[String]) -> Result<PipelineConfig> {
        let mut config = self.clone();
        config.templates.clear();
        let explicit: std::collections::BTreeSet<&str> = self.tables.iter().map(|t| t.topic.as_str()).collect();
        let mut offered: Vec<&String> = offered.iter().collect();
        offered.sort();
        offered.dedup();
        for topic in offered {
            if explicit.contains(topic.as_str()) || !self.source_selects(topic) {
                continue;
            }
            let matched = self.templates.iter().find_map(|t| {
                let re = regex::Regex::new(&format!("^(?:{})$", t.pattern)).ok()?;
                let caps = re.captures(topic)?;
                let groups: Vec<String> =
                    (0..caps.len()).map(|i| caps.get(i).map(|m| sanitize(m.as_str())).unwrap_or_default()).collect();
                Some((t, groups))
            });
            match matched {
                Some((t, groups)) => {
                    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
                    let expand = |n: &TableName| -> Result<TableName> {
                        let text = fill_captures(&n.to_string(), &refs);
                        TableName::parse(&text).ok_or_else(|| {
                            config_error(
                                &self.file,
                                &format!("tables[{}]", t.index),
                                &format!("topic `{topic}` makes the table name `{text}`, which is not namespace.table"),
                            )
                        })
                    };
                    let mut table = t.proto.clone();
                    table.topic = topic.clone();
                    table.base = table.base.as_ref().map(expand).transpose()?;
                    table.cdc = table.cdc.as_ref().map(expand).transpose()?;
                    table.dead_letters = expand(&table.dead_letters)?;
                    config.tables.push(table);
                }
                None if matches!(&self.source, SourceConfig::Kafka(k) if k.topics.is_some() || k.topic_pattern.is_some()) =>
                {
                    return Err(config_error(
                        &self.file,
                        "source",
                        &format!(
                            "topic `{topic}` is selected by the source, but no [[tables]] entry names or matches it"
                        ),
                    ));
                }
                None => {}
            }
        }
        config.check_table_names()?;
        Ok(config)
    }
}

/// Replaces `{0}` .. `{9}` with capture groups.
fn fill_captures(text: &str, groups: &[&str]) -> String {
    let mut out = text.to_string();
    for (i, g) in groups.iter().enumerate().take(10) {
        out = out.replace(&format!("{{{i}}}"), g);
    }
    out
}

/// A topic fragment made fit for a table name.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' }).collect()
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

fn config_error(file: &Path, key: &str, message: &str) -> Error {
    Error::new(ErrorKind::Config, format!("{}: `{key}`: {message}", file.display()))
}

fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let line_of =
        |span: Option<std::ops::Range<usize>>| span.map(|s| text[..s.start.min(text.len())].lines().count().max(1));
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let line = line_of(e.span()).map(|l| format!(" (line {l})")).unwrap_or_default();
        Error::new(ErrorKind::Config, format!("{}{line}: invalid TOML: {}", path.display(), e.message().trim()))
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = line_of(inner.span()).map(|l| format!(" (line {l})")).unwrap_or_default();
        let key = if key == "." || key.is_empty() { "(top level)".to_string() } else { key };
        Error::new(ErrorKind::Config, format!("{}{line}: `{key}`: {}", path.display(), inner.message().trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PipelineConfig> {
        PipelineConfig::parse(text, Path::new("/srv/pipes/shop.toml"))
    }

    const MINIMAL: &str = r#"
[source]
kind = "replay"
path = "changes.jsonl"
[[tables]]
topic = "shop.inventory.orders"
base = "base.orders"
cdc = "cdc.orders"
"#;

    #[test]
    fn secrets_can_come_from_the_environment() {
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(expand_env("a${env:PATH}b"), Ok(format!("a{path}b")));
        assert_eq!(expand_env("plain"), Ok("plain".to_string()));
        assert_eq!(expand_env("${env:FLOE_SURELY_UNSET_1234}"), Err("FLOE_SURELY_UNSET_1234".to_string()));
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.pipeline.id, "shop");
        assert_eq!(c.catalog.uri, "sqlite:///srv/pipes/warehouse/catalog.db");
        assert_eq!(c.catalog.warehouse, "/srv/pipes/warehouse");
        assert_eq!(c.source, SourceConfig::Replay { path: PathBuf::from("/srv/pipes/changes.jsonl") });
        let t = &c.tables[0];
        assert_eq!(t.buckets, 16);
        assert_eq!(t.dead_letters.to_string(), "base.dead_letters");
        assert!(t.upsert);
    }

    #[test]
    fn unknown_key_names_file_and_path() {
        let text = MINIMAL.replace("cdc = \"cdc.orders\"", "cdc = \"cdc.orders\"\nbukets = 4");
        let e = parse(&text).expect_err("typo").to_string();
        assert!(e.contains("/srv/pipes/shop.toml"), "{e}");
        assert!(e.contains("tables[0]"), "{e}");
        assert!(e.contains("bukets"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let text = MINIMAL.replace("cdc = \"cdc.orders\"", "cdc = \"cdc.orders\"\nbuckets = \"many\"");
        let e = parse(&text).expect_err("bad type").to_string();
        assert!(e.contains("tables[0].buckets"), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn bad_table_name_is_explained() {
        let text = MINIMAL.replace("base = \"base.orders\"", "base = \"orders\"");
        let e = parse(&text).expect_err("bad name").to_string();
        assert!(e.contains("`tables[0].base`") && e.contains("namespace.table"), "{e}");
    }

    #[test]
    fn unknown_source_kind() {
        let text = MINIMAL.replace("kind = \"replay\"", "kind = \"carrier-pigeon\"");
        let e = parse(&text).expect_err("bad kind").to_string();
        assert!(e.contains("carrier-pigeon"), "{e}");
    }

    #[test]
    fn kafka_source_and_secret_properties() {
        let text = r#"
[source]
kind = "kafka"
brokers = ["b1:9092", "b2:9092"]
start = "latest"
[source.properties]
"security.protocol" = "SASL_SSL"
"sasl.password" = "hunter2"
"fetch.max.bytes" = 52428800
[[tables]]
topic = "t"
base = "a.b"
"#;
        let c = parse(text).expect("valid");
        let SourceConfig::Kafka(k) = &c.source else { panic!("kafka") };
        assert_eq!(k.brokers, "b1:9092,b2:9092");
        assert_eq!(k.start, StartPosition::Latest);
        assert_eq!(k.group_id, "floe-shop");
        assert_eq!(k.properties.0["fetch.max.bytes"], "52428800");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "secrets never show: {shown}");
        let bad = text.replace("\"fetch.max.bytes\" = 52428800", "\"group.id\" = \"x\"");
        let e = parse(&bad).expect_err("group.id is floe's").to_string();
        assert!(e.contains("source.properties.group.id"), "{e}");
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn topic_pattern_tables_expand_per_topic() {
        let text = r#"
[source]
kind = "kafka"
brokers = "b:9092"
topic_pattern = "shop\\.inventory\\..*"
[[tables]]
topic = "shop.inventory.special"
base = "x.special"
[[tables]]
topic_pattern = "shop\\.inventory\\.(.+)"
base = "base.{1}"
cdc = "cdc.{1}"
"#;
        let c = parse(text).expect("valid");
        assert_eq!(c.templates.len(), 1);
        let topics = ["shop.inventory.orders", "shop.inventory.special", "shop.inventory.Order-Lines", "other.x"];
        let e = c.with_topics(&topics.map(String::from)).expect("expand");
        let names: Vec<String> =
            e.tables.iter().map(|t| format!("{} -> {}", t.topic, t.base.as_ref().expect("base"))).collect();
        assert_eq!(
            names,
            vec![
                "shop.inventory.special -> x.special",
                "shop.inventory.Order-Lines -> base.order_lines",
                "shop.inventory.orders -> base.orders",
            ]
        );
        // A selected topic without a table is an error.
        let strict = text.replace(
            "topic_pattern = \"shop\\\\.inventory\\\\.(.+)\"",
            "topic_pattern = \"shop\\\\.inventory\\\\.(o.+)\"",
        );
        let e = parse(&strict).expect("valid").with_topics(&topics.map(String::from)).expect_err("unmatched");
        assert!(e.to_string().contains("Order-Lines"), "{e}");
    }

    #[test]
    fn an_unknown_schema_policy_names_its_key() {
        let e = PipelineConfig::parse(&format!("{MINIMAL}schema_changes = \"yolo\"\n"), Path::new("p.toml"))
            .expect_err("policy")
            .to_string();
        assert!(e.contains("p.toml") && e.contains("tables[0].schema_changes") && e.contains("yolo"), "{e}");
    }

    #[test]
    fn delete_mode_and_maintenance_are_per_table() {
        let text = format!(
            "{MINIMAL}deletes = \"vector\"\n[tables.maintenance]\nmax_data_files = 3\ntarget_file_size = \"64MiB\"\n"
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.tables[0].deletes, DeleteMode::Vector);
        assert_eq!(c.tables[0].maintenance.max_data_files, 3);
        assert_eq!(c.tables[0].maintenance.target_file_size, 64 << 20);
        assert_eq!(parse(MINIMAL).expect("valid").tables[0].deletes, DeleteMode::Position);
        let e = parse(&format!("{MINIMAL}deletes = \"soft\"\n")).expect_err("mode").to_string();
        assert!(e.contains("/srv/pipes/shop.toml") && e.contains("tables[0].deletes") && e.contains("soft"), "{e}");
        let e =
            parse(&format!("{MINIMAL}[tables.maintenance]\nmax_delete_ratio = 2.0\n")).expect_err("ratio").to_string();
        assert!(e.contains("tables[0].maintenance.max_delete_ratio"), "{e}");
        let e = parse(&format!("{MINIMAL}[tables.maintenance]\nmax_data_filez = 2\n")).expect_err("typo").to_string();
        assert!(e.contains("max_data_filez"), "{e}");
    }

    #[test]
    fn declared_columns_need_key_and_known_types() {
        let text = format!(
            "{MINIMAL}key = [\"id\"]\ncolumns = [{{ name = \"id\", type = \"long\", nullable = false }}, {{ name = \"x\", type = \"varchar\" }}]\n"
        );
        let e = parse(&text).expect_err("bad type").to_string();
        assert!(e.contains("tables[0].columns[1].type") && e.contains("varchar"), "{e}");
    }
}
