//! `floe bench maintenance` and `floe bench erase`: what table maintenance costs and buys
//! over many epochs, and what an erasure costs on a large table.
//!
//! ```text
//!   maintenance: generate W (4 partitions, E epochs of N records per partition)
//!     floe run, maintenance off (no compaction, expiry or cleanup)   ┐ same log, fresh
//!     floe run, maintenance on  (defaults; snapshot_max_age = 0s)   ┘ warehouses
//!     each: events/s, epoch commit latency after 10 / 1,000 / 10,000 epochs, files,
//!           snapshots, metadata size, files and bytes on disk; [--spark] Spark full scan
//!     both verified against the model
//!   erase: R rows (+10% changes) ingested in chunks of 500k records ─► K keys erased (timed) ─► verified
//! ```
//!
//! # Invariants
//! - A run that differs from the model fails the benchmark; numbers of wrong tables are
//!   never reported.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::cleanup::{list_files, local_path};
use floe_engine::config::PipelineConfig;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::{human, human_bytes};
use floe_engine::runtime::IoRuntime;
use floe_engine::value::{Row, Value};
use floe_harness::kcat::write_log;
use floe_harness::{Generator, WorkloadSpec};

use crate::bench::{RunStats, bench_pipeline, run_measured};
use crate::demo::{verify, write_workload};

/// What `floe bench maintenance` runs.
#[derive(Clone, Debug)]
pub struct MaintenanceBenchOptions {
    /// Epochs (per partition).
    pub epochs: u64,
    /// Records per partition per epoch.
    pub per_epoch: u64,
    /// Seed.
    pub seed: u64,
    /// Scratch folder (replaced).
    pub dir: PathBuf,
    /// Also measure Spark's full-scan time of each base table.
    pub spark: bool,
    /// Timed Spark scans (median reported).
    pub scan_rounds: usize,
}

/// One table's footprint: (table, data files, delete files, snapshots, metadata bytes,
/// files on disk, bytes on disk).
type Footprint = (String, u64, u64, u64, u64, u64, u64);

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Measured {
    mode: &'static str,
    stats: RunStats,
    wall: f64,
    tables: Vec<Footprint>,
    scan_seconds: Option<f64>,
}

const MAINTENANCE_OFF: &str = "
[tables.maintenance]
compaction = false
expiry = false
cleanup = false
";

const MAINTENANCE_ON: &str = "
[tables.maintenance]
snapshot_max_age = \"0s\"
";

/// The median of the epoch commit times (ms) in the window of `width` epochs ending at `n`.
fn latency_at(micros: &[u32], n: usize, width: usize) -> Option<f64> {
    if micros.len() < n {
        return None;
    }
    let mut window: Vec<u32> = micros[n.saturating_sub(width)..n].to_vec();
    window.sort_unstable();
    window.get(window.len() / 2).map(|us| *us as f64 / 1000.0)
}

/// The figures of a finished run's tables.
fn footprint(config: &PipelineConfig) -> Result<Vec<Footprint>> {
    let runtime = IoRuntime::new(2)?;
    let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
    let mut out = Vec::new();
    for t in &config.tables {
        for name in t.base.iter().chain(t.cdc.iter()) {
            let Some(state) = runtime.block_on(catalog.load(&ident(name)))? else { continue };
            let h = runtime.block_on(crate::table_health::health(catalog.file_io(), &state))?;
            let files = list_files(Path::new(local_path(state.metadata.location())));
            let bytes: u64 = files.iter().map(|(_, _, len)| len).sum();
            out.push((
                name.to_string(),
                h.data_files,
                h.delete_files,
                h.snapshots,
                h.metadata_bytes,
                files.len() as u64,
                bytes,
            ));
        }
    }
    Ok(out)
}

/// Runs the maintenance benchmark and returns the report.
pub fn bench_maintenance(options: &MaintenanceBenchOptions) -> Result<String> {
    if options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)?;
    }
    std::fs::create_dir_all(&options.dir)?;
    let dir = options.dir.canonicalize()?;
    let partitions = 4;
    let events = options.epochs * options.per_epoch * partitions;
    let initial = events / 4;
    let spec = WorkloadSpec::bench(options.seed, events, initial);
    let (model, written) = write_workload(spec, &dir.join("changes.jsonl"))?;
    eprintln!("floe bench maintenance: {written} records, about {} epochs", written / partitions / options.per_epoch);
    let mut runs = Vec::new();
    // Maintenance on first: off grows its metadata with every epoch and takes far longer.
    for (mode, section) in [("on", MAINTENANCE_ON), ("off", MAINTENANCE_OFF)] {
        let warehouse = format!("warehouse-{mode}");
        let pipeline = dir.join(format!("maintenance-{mode}.toml"));
        let toml = bench_pipeline(options.per_epoch, Some(2), "position", &warehouse) + section;
        std::fs::write(&pipeline, toml)?;
        let (stats, wall) = run_measured(&pipeline, &dir.join(format!("stats-{mode}.json")))?;
        eprintln!("maintenance {mode}: {wall:.1}s, {} events/s", human((stats.records as f64 / wall) as u64));
        let config = PipelineConfig::load(&pipeline)?;
        let checks = verify(&config, &model)?;
        eprintln!("maintenance {mode}: {}", checks.join("; "));
        let tables = footprint(&config)?;
        let scan_seconds = match options.spark {
            true => Some(spark_scan(&dir, &config, options.scan_rounds)?),
            false => None,
        };
        runs.push(Measured { mode, stats, wall, tables, scan_seconds });
        eprint!("{}", report(options, written, &runs));
    }
    Ok(report(options, written, &runs))
}

/// Spark's median full-scan time of the base table.
fn spark_scan(dir: &Path, config: &PipelineConfig, rounds: usize) -> Result<f64> {
    #[derive(serde::Deserialize)]
    struct Scanned {
        median_seconds: f64,
    }
    std::fs::write(dir.join("floe_reader.py"), crate::bench_spark::READER)?;
    std::fs::write(dir.join("floe_race.py"), crate::bench_spark::RACE)?;
    let base = config.tables[0].base.clone().map(|b| b.to_string()).unwrap_or_default();
    let out = std::process::Command::new(crate::bench_spark::python()?)
        .arg(dir.join("floe_race.py"))
        .args(["scan", &config.catalog.warehouse, &config.catalog.name, &rounds.to_string(), &base])
        .output()?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Internal,
            format!("Spark scan failed: {}", String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let answer: std::collections::BTreeMap<String, Scanned> = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::new(ErrorKind::Internal, "unreadable Spark answer").with_source(e))?;
    answer.get(&base).map(|s| s.median_seconds).ok_or_else(|| Error::new(ErrorKind::Internal, "Spark scanned nothing"))
}

fn report(options: &MaintenanceBenchOptions, written: u64, runs: &[Measured]) -> String {
    let mut r = format!(
        "workload: {written} records over 4 partitions, {} records per partition per epoch (seed {})\n",
        options.per_epoch, options.seed
    );
    r += &format!(
        "{:<16} {:>10} {:>8} {:>8} | epoch commit ms (median of 10) after {:>6} {:>6} {:>7} | {:>7}\n",
        "maintenance", "events/s", "wall s", "epochs", "10", "1,000", "10,000", "scan s"
    );
    let off_rate = runs.iter().find(|m| m.mode == "off").map(|m| m.stats.records as f64 / m.wall);
    for m in runs {
        let micros = &m.stats.commit_micros;
        let at = |n: usize| latency_at(micros, n, 10).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let rate = m.stats.records as f64 / m.wall;
        r += &format!(
            "{:<16} {:>10} {:>8.1} {:>8} | {:>46} {:>6} {:>7} | {:>7}   {}\n",
            m.mode,
            human(rate as u64),
            m.wall,
            micros.len(),
            at(10),
            at(1000),
            at(10_000),
            m.scan_seconds.map(|s| format!("{s:.2}")).unwrap_or_else(|| "-".into()),
            off_rate.map(|off| format!("({:.0}% of off)", 100.0 * rate / off)).unwrap_or_default()
        );
    }
    r += &format!(
        "{:<16} {:<22} {:>10} {:>12} {:>10} {:>10} {:>13} {:>12}\n",
        "maintenance", "table", "data files", "delete files", "snapshots", "metadata", "files on disk", "disk"
    );
    for m in runs {
        for (table, data, deletes, snapshots, metadata, files, bytes) in &m.tables {
            r += &format!(
                "{:<16} {:<22} {:>10} {:>12} {:>10} {:>10} {:>13} {:>12}\n",
                m.mode,
                table,
                data,
                deletes,
                snapshots,
                human_bytes(*metadata),
                files,
                human_bytes(*bytes)
            );
        }
    }
    r
}

/// What `floe bench erase` runs.
#[derive(Clone, Debug)]
pub struct EraseBenchOptions {
    /// Rows of the table.
    pub rows: u64,
    /// Keys to erase.
    pub keys: usize,
    /// Seed.
    pub seed: u64,
    /// Scratch folder (replaced).
    pub dir: PathBuf,
}

/// Records per chunk of the erasure benchmark's log (~1.8 GB of Debezium JSON with its schema).
const INGEST_CHUNK: usize = 500_000;

/// Runs the erasure benchmark and returns the report.
pub fn bench_erase(options: &EraseBenchOptions) -> Result<String> {
    if options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)?;
    }
    std::fs::create_dir_all(&options.dir)?;
    let dir = options.dir.canonicalize()?;
    let spec = WorkloadSpec::bench(options.seed, options.rows + options.rows / 10, options.rows);
    let pipeline = dir.join("erase.toml");
    std::fs::write(&pipeline, bench_pipeline(250_000, None, "position", "warehouse"))?;
    // The log is written and ingested a chunk at a time: a 10M-row table's whole log
    // (~17 GB) need not fit on disk. Each run resumes at the offsets the last committed.
    let mut generator = Generator::new(spec);
    let (mut written, mut records, mut wall) = (0u64, 0u64, 0f64);
    loop {
        let log = dir.join("changes.jsonl");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&log)?);
        let n = write_log(&mut out, generator.by_ref().take(INGEST_CHUNK))?;
        out.flush()?;
        drop(out);
        if n == 0 {
            break;
        }
        written += n;
        let (stats, seconds) = run_measured(&pipeline, &dir.join("stats.json"))?;
        records += stats.records;
        wall += seconds;
        eprintln!("ingested {written} records in {wall:.1}s ({} events/s)", human((records as f64 / wall) as u64));
    }
    std::fs::remove_file(dir.join("changes.jsonl"))?;
    let mut model = generator.into_model();
    let config = PipelineConfig::load(&pipeline)?;
    // Keys: spread over the key space, live ones and deleted ones.
    let table = &mut model.tables[0];
    let mut keys: Vec<Row> =
        table.cdc_keys.values().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let step = (keys.len() / options.keys.max(1)).max(1);
    keys = keys.into_iter().step_by(step).take(options.keys).collect();
    let texts: Vec<String> = keys
        .iter()
        .map(|k| match &k.0[..] {
            [Value::Long(v)] => Ok(v.to_string()),
            other => Err(Error::new(ErrorKind::Internal, format!("unexpected key {other:?}"))),
        })
        .collect::<Result<_>>()?;
    let live = keys.iter().filter(|k| table.rows.contains_key(*k)).count();
    let base = config.tables[0].base.clone().map(|b| b.to_string()).unwrap_or_default();
    let started = Instant::now();
    let erased = crate::erase::erase(&config, &base, &texts, std::time::Duration::from_secs(3600))?;
    let seconds = started.elapsed().as_secs_f64();
    table.erase(&keys.iter().cloned().collect());
    let checks = verify(&config, &model)?;
    let mut r = format!(
        "table: {} rows in the base table ({written} records ingested: {} initial rows + changes; seed {})\n",
        human(model.tables[0].rows.len() as u64 + live as u64),
        human(options.rows),
        options.seed
    );
    r += &format!(
        "erased {} keys ({live} live, {} deleted before) in {seconds:.2} s, proof included\n",
        keys.len(),
        keys.len() - live
    );
    r += &erased.to_string();
    r += &format!("verified: {}\n", checks.join("; "));
    Ok(r)
}
