//! Helpers for floe's end-to-end tests: a scratch folder with a replay log, a pipeline file
//! and a warehouse; running the pipeline in-process or as the `floe` binary; reading tables
//! back and comparing them with the harness model.
//!
//! Every assertion helper takes the seed so a failure names it.

pub mod broker;
pub mod produce;
pub mod reference;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::config::{PipelineConfig, TableName};
use floe_engine::runtime::IoRuntime;
use floe_harness::verify::{TableRows, compare_base, compare_cdc, read_table};
use floe_harness::{Model, WorkloadSpec};
use floe_pipelines::demo::write_workload;
use floe_pipelines::runner::{RunOptions, RunOutcome, run};

/// A seed for randomized tests: `FLOE_SEED` if set, else derived from the clock.
pub fn seed() -> u64 {
    match std::env::var("FLOE_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("FLOE_SEED={s} is not a number")),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }
    }
}

/// A scratch pipeline: `<dir>/changes.jsonl`, `<dir>/pipeline.toml`, `<dir>/warehouse`.
pub struct Scratch {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
    /// The expected tables.
    pub model: Model,
    /// Records in the log.
    pub records: u64,
    /// The seed.
    pub seed: u64,
}

/// A pipeline file that replays `<dir>/changes.jsonl` into `tables` (their `[[tables]]`
/// sections, concatenated).
pub fn replay_pipeline(id: &str, commit_every: u64, workers: usize, tables: &[String]) -> String {
    format!(
        r#"[pipeline]
id = "{id}"
commit_every = {commit_every}
workers = {workers}

[source]
kind = "replay"
path = "changes.jsonl"
{}"#,
        tables.concat()
    )
}

/// The default test pipeline file for the standard workload.
pub fn pipeline_toml(commit_every: u64, workers: usize) -> String {
    replay_pipeline(
        "test",
        commit_every,
        workers,
        &[r#"
[[tables]]
topic = "shop.inventory.orders"
base = "shop.orders"
cdc = "shop_cdc.orders"
buckets = 8

[[tables]]
topic = "shop.inventory.order_lines"
base = "shop.order_lines"
cdc = "shop_cdc.order_lines"
buckets = 4
"#
        .to_string()],
    )
}

/// The schema-evolution pipeline: `accounts` (evolves, under `policy`) and `order_lines`
/// (does not), both Spark-readable. `source` is the `[source]` section's body; `settings`
/// extra `[pipeline]` lines.
pub fn accounts_pipeline(id: &str, commit_every: u64, settings: &str, source: &str, policy: &str) -> String {
    format!(
        r#"[pipeline]
id = "{id}"
commit_every = {commit_every}
workers = 2
{settings}

[source]
{source}

[[tables]]
topic = "shop.inventory.accounts"
base = "shop.accounts"
cdc = "shop_cdc.accounts"
buckets = 4
schema_changes = "{policy}"

[[tables]]
topic = "shop.inventory.order_lines"
base = "shop.order_lines"
cdc = "shop_cdc.order_lines"
buckets = 4
"#
    )
}

/// The workload of [`accounts_pipeline`]: `accounts` and `order_lines` with schema steps.
pub fn accounts_spec(seed: u64, events: u64, steps: Vec<floe_harness::SchemaStep>) -> WorkloadSpec {
    WorkloadSpec {
        tables: vec![floe_harness::tables::GenTable::accounts(), floe_harness::tables::GenTable::order_lines()],
        schema_steps: steps,
        ..WorkloadSpec::standard(seed, events)
    }
}

/// Spawns a process with `spawn` and SIGKILLs it after `pause()`, again and again, until
/// `kills` kills landed while it was still running or `budget` ran out; returns how many
/// landed.
pub fn kill_at_random_moments(
    kills: usize,
    budget: std::time::Duration,
    mut pause: impl FnMut() -> std::time::Duration,
    mut spawn: impl FnMut() -> std::process::Child,
) -> usize {
    let started = std::time::Instant::now();
    let mut landed = 0;
    while landed < kills && started.elapsed() < budget {
        let mut child = spawn();
        std::thread::sleep(pause());
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("SIGKILL");
            landed += 1;
        }
        let _ = child.wait();
    }
    landed
}

/// The test pipeline file reading the standard workload's topics from Kafka.
pub fn kafka_pipeline_toml(brokers: &str, commit_every: u64, workers: usize) -> String {
    pipeline_toml(commit_every, workers).replace(
        "[source]\nkind = \"replay\"\npath = \"changes.jsonl\"\n",
        &format!("[source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ncommit_interval_ms = 500\n"),
    )
}

/// A Python with `kafka-python` (and later pyspark): `FLOE_PYTHON`, else the venv the test
/// script installs (`$FLOE_CACHE` or `~/.cache/floe`, then `venv/bin/python`).
pub fn python() -> PathBuf {
    floe_pipelines::bench_spark::python().unwrap_or_else(|e| panic!("{e}"))
}

impl Scratch {
    /// The folder of an existing scratch with a new pipeline file (same log and model).
    pub fn with_pipeline(&self, toml: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(self.path().join("changes.jsonl"), dir.path().join("changes.jsonl")).expect("copy log");
        std::fs::write(dir.path().join("pipeline.toml"), toml).expect("write pipeline");
        Scratch { dir, model: self.model.clone(), records: self.records, seed: self.seed }
    }

    /// Runs the pipeline in-process with `options`.
    pub fn run_with(&self, options: RunOptions) -> RunOutcome {
        run(&self.config(), options).unwrap_or_else(|e| panic!("seed {}: run failed: {e}", self.seed))
    }

    /// The offsets the newest floe snapshot of `name` recorded (empty without one).
    pub fn committed(&self, name: &TableName) -> floe_engine::offsets::SourceOffsets {
        let config = self.config();
        let runtime = IoRuntime::new(1).expect("runtime");
        let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
        let Some(state) = runtime.block_on(catalog.load(&ident(name))).expect("load") else {
            return Default::default();
        };
        floe_engine::offsets::committed_progress(&state.metadata)
            .expect("progress")
            .map(|p| p.offsets)
            .unwrap_or_default()
    }

    /// Writes the workload's log and the pipeline file.
    pub fn new(spec: WorkloadSpec, toml: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        let seed = spec.seed;
        let (model, records) = write_workload(spec, &dir.path().join("changes.jsonl")).expect("write workload");
        std::fs::write(dir.path().join("pipeline.toml"), toml).expect("write pipeline");
        Scratch { dir, model, records, seed }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The pipeline file.
    pub fn pipeline(&self) -> PathBuf {
        self.path().join("pipeline.toml")
    }

    /// The parsed pipeline.
    pub fn config(&self) -> PipelineConfig {
        PipelineConfig::load(&self.pipeline()).expect("pipeline config")
    }

    /// Runs the pipeline in-process.
    pub fn run(&self) -> RunOutcome {
        run(&self.config(), RunOptions::default()).unwrap_or_else(|e| panic!("seed {}: run failed: {e}", self.seed))
    }

    /// Reads one table back.
    pub fn read(&self, name: &TableName) -> TableRows {
        let config = self.config();
        let runtime = IoRuntime::new(1).expect("runtime");
        let catalog: Arc<dyn TableCatalog> =
            Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog"));
        runtime.block_on(read_table(catalog.as_ref(), &ident(name))).expect("read table")
    }

    /// Asserts every base and CDC table equals the model.
    pub fn assert_tables_equal_model(&self) {
        for t in &self.config().tables {
            let m = self.model.table(&t.topic).expect("model");
            if let Some(b) = &t.base
                && let Err(diff) = compare_base(m, &self.read(b))
            {
                panic!("seed {}: {diff}", self.seed);
            }
            if let Some(c) = &t.cdc
                && let Err(diff) = compare_cdc(m, &self.read(c))
            {
                panic!("seed {}: {diff}", self.seed);
            }
        }
    }

    /// Paths of every data and delete file the current snapshots of the configured tables
    /// reference.
    pub fn referenced_files(&self) -> std::collections::BTreeSet<String> {
        let config = self.config();
        let runtime = IoRuntime::new(1).expect("runtime");
        let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
        let mut names: Vec<TableName> = Vec::new();
        for t in &config.tables {
            names.extend(t.base.clone());
            names.extend(t.cdc.clone());
            names.push(t.dead_letters.clone());
        }
        let mut out = std::collections::BTreeSet::new();
        for n in names {
            let Some(state) = runtime.block_on(catalog.load(&ident(&n))).expect("load") else { continue };
            let Some(current) = state.metadata.current_snapshot() else { continue };
            runtime.block_on(async {
                let bytes =
                    catalog.file_io().new_input(current.manifest_list()).expect("input").read().await.expect("list");
                let list = iceberg::spec::ManifestList::parse_with_version(&bytes, state.metadata.format_version())
                    .expect("parse");
                for m in list.entries() {
                    let manifest = m.load_manifest(catalog.file_io()).await.expect("manifest");
                    out.extend(
                        manifest.entries().iter().map(|e| e.file_path().trim_start_matches("file://").to_string()),
                    );
                }
            });
        }
        out
    }

    /// The current metadata of a table.
    pub fn table_metadata(&self, name: &TableName) -> iceberg::spec::TableMetadata {
        self.try_table_metadata(name).unwrap_or_else(|| panic!("seed {}: {name} does not exist", self.seed))
    }

    /// The current metadata of a table, if it exists yet.
    pub fn try_table_metadata(&self, name: &TableName) -> Option<iceberg::spec::TableMetadata> {
        let config = self.config();
        let runtime = IoRuntime::new(1).expect("runtime");
        let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
        let state = runtime.block_on(catalog.load(&ident(name))).expect("load")?;
        Some(state.metadata.as_ref().clone())
    }

    /// `(table, [(floe.epoch, floe.offsets)] oldest first)` for every configured table: what
    /// each commit said about the source.
    pub fn snapshot_summaries(&self) -> Vec<(String, Vec<(String, String)>)> {
        let config = self.config();
        let runtime = IoRuntime::new(1).expect("runtime");
        let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
        let mut out = Vec::new();
        for (name, ids) in self.snapshots() {
            let n = TableName::parse(&name).expect("name");
            let state = runtime.block_on(catalog.load(&ident(&n))).expect("load").expect("table exists");
            let summaries = ids
                .iter()
                .filter_map(|id| state.metadata.snapshot_by_id(*id))
                .map(|s| {
                    let p = &s.summary().additional_properties;
                    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
                    (get("floe.epoch"), get("floe.offsets"))
                })
                .collect();
            out.push((name, summaries));
        }
        out
    }

    /// `(table, number of snapshots)` for every configured table.
    pub fn snapshot_counts(&self) -> Vec<(String, usize)> {
        self.snapshots().into_iter().map(|(t, ids)| (t, ids.len())).collect()
    }

    /// `(table, epoch snapshot ids on the main branch's ancestry)` for every configured
    /// table: the snapshots that commit source changes (rewrites, whose number depends on
    /// timing, are left out; see [`Scratch::rewrites`]).
    pub fn snapshots(&self) -> Vec<(String, Vec<i64>)> {
        self.ancestry(false)
    }

    /// `(table, rewrite snapshot ids)` for every configured table: compactions committed
    /// as `replace` snapshots of their own.
    pub fn rewrites(&self) -> Vec<(String, Vec<i64>)> {
        self.ancestry(true)
    }

    /// `(table, snapshots holding rewritten files)` for every configured table: every
    /// compaction, in a `replace` snapshot or riding in an epoch's.
    pub fn compactions(&self) -> Vec<(String, usize)> {
        let config = self.config();
        let mut out = Vec::new();
        for t in &config.tables {
            for n in [&t.base, &t.cdc].into_iter().flatten() {
                let metadata = self.table_metadata(n);
                let count = metadata
                    .snapshots()
                    .filter(|s| s.summary().additional_properties.contains_key(floe_engine::commit::SUMMARY_REWRITTEN))
                    .count();
                out.push((n.to_string(), count));
            }
        }
        out
    }

    fn ancestry(&self, rewrites: bool) -> Vec<(String, Vec<i64>)> {
        let config = self.config();
        let runtime = IoRuntime::new(1).expect("runtime");
        let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
        let mut out = Vec::new();
        let mut names: Vec<TableName> = Vec::new();
        for t in &config.tables {
            names.extend(t.base.clone());
            names.extend(t.cdc.clone());
        }
        for n in names {
            let state = runtime.block_on(catalog.load(&ident(&n))).expect("load").expect("table exists");
            let mut ids = Vec::new();
            let mut next = state.metadata.current_snapshot_id();
            while let Some(id) = next {
                let snapshot = state.metadata.snapshot_by_id(id);
                let is_rewrite = snapshot.is_some_and(|s| {
                    s.summary().additional_properties.contains_key(floe_engine::commit::SUMMARY_REWRITE_ID)
                });
                if is_rewrite == rewrites {
                    ids.push(id);
                }
                next = snapshot.and_then(|s| s.parent_snapshot_id());
            }
            ids.reverse();
            out.push((n.to_string(), ids));
        }
        out
    }
}

/// Holds the writer lease of every base and CDC table of `scratch` as `owner` (as a running
/// pipeline does) until dropped.
pub fn hold_writer_lease(scratch: &Scratch, owner: &str) -> floe_pipelines::leases::Held {
    let config = scratch.config();
    let runtime = IoRuntime::new(1).expect("runtime");
    let catalog: Arc<dyn TableCatalog> =
        Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog"));
    let tables = config.tables.iter().flat_map(|t| [&t.base, &t.cdc]).flatten().map(ident).collect();
    floe_pipelines::leases::take_for_run(catalog, runtime, tables, owner.to_string()).expect("lease")
}
