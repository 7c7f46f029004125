//! `floe bench index`: what floe's key index costs. A race bootstrap of R rows is ingested
//! (not timed); then the base table's key index is rebuilt from the table, as every
//! `floe run` does at start, and timed, with its memory.
//!
//! ```text
//!   W(R, 0) bootstrap ──► floe run ──► floe.accounts (R rows, bucket(16, id))
//!   rebuild_table (all buckets, in parallel) × rounds ──► seconds, keys/s, index bytes per key
//! ```
//!
//! # Invariants
//! - The rebuild is the one `floe run` uses (`key_index_rebuild::rebuild_table`), over the
//!   real table files; memory is the index's own estimate (hash table capacity and key
//!   bytes) and the process's anonymous RSS growth, both reported.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog};
use floe_engine::config::PipelineConfig;
use floe_engine::error::Result;
use floe_engine::metrics::{Metrics, human, human_bytes};
use floe_engine::runtime::IoRuntime;
use floe_harness::race::{RaceSpec, race_columns_toml, race_table, write_race};
use floe_operators::key_index_rebuild::rebuild_table;

use crate::bench::run_measured;
use crate::planner::{Sample, SchemaDiscovery, plan};

/// What to run.
#[derive(Clone, Debug)]
pub struct IndexBenchOptions {
    /// Rows of the table.
    pub rows: u64,
    /// Seed.
    pub seed: u64,
    /// Scratch folder (replaced).
    pub dir: PathBuf,
    /// Timed rebuilds.
    pub rounds: usize,
    /// Buckets.
    pub buckets: u32,
}

struct NoDiscovery;

impl SchemaDiscovery for NoDiscovery {
    fn samples(&self, _table: u32, _limit: usize) -> Result<Vec<Sample>> {
        Ok(Vec::new())
    }
}

fn anon_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("RssAnon:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs the benchmark and returns the report.
pub fn bench_index(options: &IndexBenchOptions) -> Result<String> {
    let dir = &options.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let spec = RaceSpec { seed: options.seed, rows: options.rows, changes: 0, partitions: 4 };
    {
        let mut bootstrap = BufWriter::with_capacity(1 << 20, File::create(dir.join("bootstrap.jsonl"))?);
        let mut changes = std::io::sink();
        write_race(&spec, &mut bootstrap, &mut changes)?;
        bootstrap.flush()?;
    }
    let toml = format!(
        r#"[pipeline]
id = "index"
commit_every = 1000000

[source]
kind = "replay"
path = "bootstrap.jsonl"

[[tables]]
topic = "{}"
base = "floe.accounts"
buckets = {}
{}"#,
        race_table().topic,
        options.buckets,
        race_columns_toml()
    );
    let pipeline = dir.join("index.toml");
    std::fs::write(&pipeline, toml)?;
    let (stats, wall) = run_measured(&pipeline, &dir.join("stats.json"))?;
    std::fs::remove_file(dir.join("bootstrap.jsonl"))?;
    eprintln!("floe bench index: ingested {} rows in {wall:.0}s", human(stats.records));

    let config = PipelineConfig::load(&pipeline)?;
    let runtime = IoRuntime::new(2)?;
    let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
    let planned =
        plan(&config, Arc::clone(&catalog), runtime.clone(), Metrics::new(), &NoDiscovery, &Default::default())?;
    let table = &planned.tables[0];
    let mut seconds = Vec::new();
    let (mut keys, mut files, mut index_bytes, mut rss_growth) = (0, 0, 0, 0);
    for _ in 0..options.rounds.max(1) {
        let before = anon_rss();
        let started = Instant::now();
        let rebuilt = runtime.block_on(rebuild_table(catalog.as_ref(), table, |_| true, 8))?;
        seconds.push(started.elapsed().as_secs_f64());
        rss_growth = anon_rss().saturating_sub(before);
        keys = rebuilt.keys;
        files = rebuilt.files;
        index_bytes = rebuilt.buckets.values().map(|b| b.stats().index_bytes).sum();
        drop(rebuilt);
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut r = format!(
        "key index of floe.accounts: {} keys in {files} data files, {} buckets (bigint key)\n",
        human(keys),
        options.buckets
    );
    r += &format!(
        "rebuild from the table (key column read, deletes applied, buckets in parallel): median {median:.2} s = {}/s (rounds: {})\n",
        human((keys as f64 / median.max(1e-9)) as u64),
        seconds.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ")
    );
    r += &format!(
        "memory: index {} = {:.1} bytes per key ({} per million keys); anonymous RSS grew {} during a rebuild\n",
        human_bytes(index_bytes),
        index_bytes as f64 / keys.max(1) as f64,
        human_bytes(index_bytes * 1_000_000 / keys.max(1)),
        human_bytes(rss_growth),
    );
    Ok(r)
}
