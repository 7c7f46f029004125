//! `floe bench`: replay-log → committed-tables throughput on the benchmark workload.
//!
//! ```text
//!   generate W (seed) ──► <dir>/changes.jsonl       (not timed)
//!   floe run <dir>/bench.toml  (a child process)   (timed: wall, CPU, peak RSS of the child)
//!   read tables back, compare with the model        (not timed; a mismatch fails the bench)
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use floe_engine::config::PipelineConfig;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::{human, human_bytes};
use floe_harness::WorkloadSpec;
use serde::{Deserialize, Serialize};

use crate::demo::{verify, write_workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Change events to generate.
    pub events: u64,
    /// Rows of the initial snapshot (part of `events`).
    pub initial_rows: u64,
    /// Seed.
    pub seed: u64,
    /// Scratch folder.
    pub dir: PathBuf,
    /// Worker threads of the measured run.
    pub workers: Option<usize>,
    /// Records per partition per epoch.
    pub commit_every: u64,
    /// Delete modes to run (each in a fresh warehouse, on the same log).
    pub modes: Vec<String>,
    /// Runs per mode, interleaved (the median is reported).
    pub rounds: usize,
}

/// Machine-readable numbers of one `floe run` (written with `--stats-json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunStats {
    /// Records read.
    pub records: u64,
    /// Wall seconds of the run (pipeline start to exit).
    pub seconds: f64,
    /// Peak anonymous resident memory (heap, stacks), bytes.
    pub peak_memory_bytes: u64,
    /// Peak resident set size, bytes, including resident pages of the mapped replay log.
    pub peak_rss_bytes: u64,
    /// User + system CPU seconds of the process.
    pub cpu_seconds: f64,
    /// Snapshots committed.
    pub commits: u64,
    /// Each epoch's commit time, microseconds, in order.
    #[serde(default)]
    pub commit_micros: Vec<u32>,
}

/// The benchmark pipeline file, for base tables in delete mode `mode`, in `warehouse`.
pub fn bench_pipeline(commit_every: u64, workers: Option<usize>, mode: &str, warehouse: &str) -> String {
    let workers = workers.map(|w| format!("workers = {w}\n")).unwrap_or_default();
    format!(
        r#"[pipeline]
id = "bench"
commit_every = {commit_every}
{workers}
[catalog]
warehouse = "{warehouse}"
uri = "sqlite://{warehouse}/catalog.db"

[source]
kind = "replay"
path = "changes.jsonl"

[[tables]]
topic = "shop.inventory.accounts"
base = "bench.accounts"
cdc = "bench_cdc.accounts"
buckets = 16
deletes = "{mode}"
"#
    )
}

/// CPU seconds (user + system) of this process so far, from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `floe run PIPELINE --stats-json STATS` as a child process (this same binary);
/// returns its numbers and the wall seconds around it.
pub fn run_measured(pipeline: &Path, stats: &Path) -> Result<(RunStats, f64)> {
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(pipeline)
        .arg("--stats-json")
        .arg(stats)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .status()?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(Error::new(ErrorKind::Internal, format!("floe run {} failed: {status}", pipeline.display())));
    }
    let stats = serde_json::from_slice(&std::fs::read(stats)?)
        .map_err(|e| Error::new(ErrorKind::Internal, "unreadable run stats").with_source(e))?;
    Ok((stats, wall))
}

/// Runs the benchmark and returns the report.
pub fn bench(options: &BenchOptions) -> Result<String> {
    if options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)?;
    }
    std::fs::create_dir_all(&options.dir)?;
    let log = options.dir.join("changes.jsonl");
    let spec = WorkloadSpec::bench(options.seed, options.events, options.initial_rows);
    let generating = Instant::now();
    let (model, written) = write_workload(spec, &log)?;
    let generated = generating.elapsed().as_secs_f64();
    let log_bytes = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let modes: Vec<String> = if options.modes.is_empty() { vec!["position".into()] } else { options.modes.clone() };
    for m in &modes {
        if floe_engine::table_settings::DeleteMode::parse(m).is_none() {
            return Err(Error::new(ErrorKind::Config, format!("--deletes {m}: not position, vector or equality")));
        }
    }
    let mut runs: Vec<(String, RunStats, f64)> = Vec::new();
    for _round in 0..options.rounds.max(1) {
        for mode in &modes {
            let warehouse = format!("warehouse-{mode}");
            let _ = std::fs::remove_dir_all(options.dir.join(&warehouse));
            let pipeline = options.dir.join(format!("bench-{mode}.toml"));
            std::fs::write(&pipeline, bench_pipeline(options.commit_every, options.workers, mode, &warehouse))?;
            let (stats, wall) = run_measured(&pipeline, &options.dir.join(format!("stats-{mode}.json")))?;
            eprintln!("{mode}: {:.2}s, {} events/s", wall, human((stats.records as f64 / wall) as u64));
            runs.push((mode.clone(), stats, wall));
        }
    }
    let verifying = Instant::now();
    let mut checks = Vec::new();
    for mode in &modes {
        let pipeline = options.dir.join(format!("bench-{mode}.toml"));
        checks.extend(verify(&PipelineConfig::load(&pipeline)?, &model)?.into_iter().map(|c| format!("{mode}: {c}")));
    }
    let verified = verifying.elapsed().as_secs_f64();
    let median = |mode: &str| {
        let mut v: Vec<&(String, RunStats, f64)> = runs.iter().filter(|(m, _, _)| m == mode).collect();
        v.sort_by(|a, b| a.2.total_cmp(&b.2));
        v[v.len() / 2].clone()
    };
    let (_, stats, wall) = median(&modes[0]);

    let mut r = String::new();
    r += &format!(
        "workload: {written} records ({} change events, {} initial rows; seed {}), {} log ({:.0} bytes/record)\n",
        model.events(),
        options.initial_rows,
        options.seed,
        human_bytes(log_bytes),
        log_bytes as f64 / written.max(1) as f64
    );
    r += &format!(
        "floe run ({}): {:.2}s wall ({:.2}s in the pipeline), {:.2} CPU s, {} commits, peak memory {} (anonymous RSS; {} RSS incl. the mapped log)\n",
        modes[0],
        wall,
        stats.seconds,
        stats.cpu_seconds,
        stats.commits,
        human_bytes(stats.peak_memory_bytes),
        human_bytes(stats.peak_rss_bytes)
    );
    r += &format!(
        "throughput: {} events/s ({:.0} MB/s of replay log), end to end incl. process start and planning\n",
        human((stats.records as f64 / wall) as u64),
        log_bytes as f64 / wall / 1e6
    );
    if modes.len() > 1 || options.rounds > 1 {
        r += &format!("delete modes, {} rounds each, interleaved (median):\n", options.rounds.max(1));
        let reference = modes.iter().find(|m| *m == "equality").map(|m| median(m).2);
        for mode in &modes {
            let (_, st, w) = median(mode);
            let all: Vec<String> =
                runs.iter().filter(|(m, _, _)| m == mode).map(|(_, _, w)| format!("{w:.2}")).collect();
            r += &format!(
                "  {mode:<9} {:>8} events/s  {w:>6.2} s  {:>6.1} CPU s  peak {:>10}  commits {:>4}{}  (runs: {} s)\n",
                human((st.records as f64 / w) as u64),
                st.cpu_seconds,
                human_bytes(st.peak_memory_bytes),
                st.commits,
                reference.map(|e| format!("  {:.0}% of equality", 100.0 * e / w)).unwrap_or_default(),
                all.join(", ")
            );
        }
    }
    for line in checks {
        r += &format!("verified: {line}\n");
    }
    r += &format!("(generating the log took {generated:.1}s, verifying {verified:.1}s; neither is timed above)\n");
    Ok(r)
}
