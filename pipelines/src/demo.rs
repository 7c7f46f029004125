//! `floe demo`: a seeded workload on embedded defaults, run and verified end to end.
//!
//! ```text
//!   harness generator (seed) ──► <dir>/changes.jsonl (kcat -J) + the model
//!   <dir>/demo.toml ──► floe run ──► <dir>/warehouse (SQLite catalog + Iceberg tables)
//!   tables read back (deletes applied) ──► compared with the model
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::config::{PipelineConfig, TableName};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::{human, human_bytes};
use floe_engine::runtime::IoRuntime;
use floe_harness::kcat::write_log;
use floe_harness::verify::{compare_base, compare_cdc, read_table};
use floe_harness::{Generator, Model, WorkloadSpec};

use crate::runner::{RunOptions, run};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Records to generate.
    pub events: u64,
    /// Workload seed.
    pub seed: u64,
    /// Where to put the log and the warehouse.
    pub dir: PathBuf,
    /// Worker threads (default: all cores).
    pub workers: Option<usize>,
}

/// Writes a seeded workload's replay log; returns the model and the records written.
pub fn write_workload(spec: WorkloadSpec, path: &Path) -> Result<(Model, u64)> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut generator = Generator::new(spec);
    let written = write_log(&mut out, generator.by_ref())?;
    out.flush()?;
    Ok((generator.into_model(), written))
}

/// The pipeline file of the demo.
pub fn demo_pipeline(log: &str, workers: Option<usize>) -> String {
    let workers = workers.map(|w| format!("workers = {w}\n")).unwrap_or_default();
    format!(
        r#"# floe demo: two MySQL tables captured by Debezium, replayed from a kcat log.
[pipeline]
id = "demo"
commit_every = 20000
{workers}
[source]
kind = "replay"
path = "{log}"

[[tables]]
topic = "shop.inventory.orders"
base = "shop.orders"
cdc = "shop_cdc.orders"
buckets = 16

[[tables]]
topic = "shop.inventory.order_lines"
base = "shop.order_lines"
cdc = "shop_cdc.order_lines"
buckets = 16
"#
    )
}

/// Reads the tables of `config` back and compares them with `model`.
pub fn verify(config: &PipelineConfig, model: &Model) -> Result<Vec<String>> {
    let runtime = IoRuntime::new(2)?;
    let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
    let mut lines = Vec::new();
    for t in &config.tables {
        let m = model
            .table(&t.topic)
            .ok_or_else(|| Error::new(ErrorKind::Internal, format!("no model for {}", t.topic)))?;
        let check = |name: &TableName, base: bool| -> Result<String> {
            let rows = runtime.block_on(read_table(catalog.as_ref(), &ident(name)))?;
            let result = if base { compare_base(m, &rows) } else { compare_cdc(m, &rows) };
            result.map_err(|e| Error::new(ErrorKind::Data, e))?;
            Ok(format!("{:<24} {:>9} rows  equal to the model", name.to_string(), rows.rows.len()))
        };
        if let Some(b) = &t.base {
            lines.push(check(b, true)?);
        }
        if let Some(c) = &t.cdc {
            lines.push(check(c, false)?);
        }
    }
    Ok(lines)
}

/// Runs the demo and returns the report to print.
pub fn demo(options: &DemoOptions) -> Result<String> {
    std::fs::create_dir_all(&options.dir)?;
    let log = options.dir.join("changes.jsonl");
    let started = Instant::now();
    let (model, written) = write_workload(WorkloadSpec::standard(options.seed, options.events), &log)?;
    let generated = started.elapsed();
    let log_size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let pipeline_file = options.dir.join("demo.toml");
    std::fs::write(&pipeline_file, demo_pipeline("changes.jsonl", options.workers))?;
    let config = PipelineConfig::load(&pipeline_file)?;

    let ran = Instant::now();
    let outcome = run(&config, RunOptions { progress_line: true, ..Default::default() })?;
    let elapsed = ran.elapsed();
    let checks = verify(&config, &model)?;

    let mut report = String::new();
    report += &format!(
        "generated {written} records ({} change events, the rest tombstones; seed {}) in {:.1}s: {} of replay log at {}\n",
        model.events(),
        options.seed,
        generated.as_secs_f64(),
        human_bytes(log_size),
        log.display()
    );
    report += &outcome.metrics.summary();
    let records = floe_engine::metrics::Metrics::get(&outcome.metrics.records_in);
    report += &format!(
        "ingest: {} records in {:.2}s = {}/s, peak memory {} (anonymous RSS)\n",
        records,
        elapsed.as_secs_f64(),
        human((records as f64 / elapsed.as_secs_f64().max(1e-9)) as u64),
        human_bytes(floe_engine::metrics::Metrics::get(&outcome.metrics.peak_anon_bytes))
    );
    report += "verified (read back with their deletes applied):\n";
    for line in checks {
        report += &format!("  {line}\n");
    }
    report += &format!("warehouse: {}\n", config.catalog.warehouse);
    Ok(report)
}
