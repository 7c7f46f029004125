//! `floe bench spark`: floe against the seed platform's batch layer, Spark `MERGE INTO` on
//! Iceberg, on one workload W(R, C) and one machine.
//!
//! ```text
//!   W(R, C) ──► bootstrap.jsonl ──► floe run (not timed) ──► floe.accounts (R rows)
//!                                                             │ Spark CTAS (not timed)
//!                                                             ▼
//!           ──► changes.jsonl ──► floe run   (TIMED) ──► floe.accounts, floe_cdc.accounts
//!                                  floe_cdc.accounts window ──► latest per key ──► Spark
//!                                  MERGE INTO spark.accounts                     (TIMED)
//!   both final base tables compared through Spark (EXCEPT ALL both ways) and with the
//!   workload's own aggregates: a difference fails the run.
//! ```
//!
//! # Invariants
//! - Each side is timed over the work the other side also does: floe over its whole process
//!   (start, planning, JSON decoding, writing, committing); Spark over the MERGE statement
//!   only, in a warm session, reading changes already parsed into Iceberg. Both choices
//!   flatter Spark.
//! - Peak RSS counts Spark's JVM and its Python driver; floe's is its own process.
//! - A run whose tables differ is an error, never a row of the table.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::{human, human_bytes};
use floe_harness::race::{RaceSpec, RaceSummary, race_columns_toml, race_table, write_race};
use serde::Deserialize;

use crate::bench::{RunStats, run_measured};

pub(crate) const READER: &str = include_str!("../../harness/python/floe_reader.py");
pub(crate) const RACE: &str = include_str!("../../harness/python/floe_race.py");

/// What to run (also `floe bench spark`'s arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct SparkBenchOptions {
    /// Rows of the initial table (R).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Change events (C).
    #[arg(long, default_value_t = 1_000_000)]
    pub changes: u64,
    /// Workload seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Scratch folder (replaced).
    #[arg(long, default_value = "floe-bench-spark")]
    pub dir: PathBuf,
    /// Records per partition per floe epoch.
    #[arg(long, default_value_t = 25_000)]
    pub commit_every: u64,
    /// Buckets of both base tables.
    #[arg(long, default_value_t = 16)]
    pub buckets: u32,
    /// Spark driver memory.
    #[arg(long, default_value = "6g")]
    pub spark_memory: String,
    /// Timed rounds per side, each from the same post-bootstrap state (median reported).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// floe's delete mode: position, vector or equality.
    #[arg(long, default_value = "position")]
    pub deletes: String,
    /// Timed Spark full scans of each final table (read cost; 0: skip).
    #[arg(long, default_value_t = 3)]
    pub scan_rounds: usize,
    /// Also compare `floe maintain` with Spark's rewrite_data_files on floe's final table.
    #[arg(long)]
    pub compaction: bool,
    /// Run floe without compaction and expiry inside the run, as the MERGE runs without
    /// them: the ingest paths alone, like for like (the read cost then shows what the
    /// skipped compaction would have bought).
    #[arg(long)]
    pub no_run_maintenance: bool,
}

/// Spark's answer to `floe_race.py scan`, per table.
#[derive(Debug, Deserialize)]
struct Scanned {
    median_seconds: f64,
    seconds: Vec<f64>,
    rows: u64,
    data_files: u64,
    data_bytes: u64,
    delete_files: u64,
    delete_entries: u64,
}

/// Spark's answer to `floe_race.py rewrite`.
#[derive(Debug, Deserialize)]
struct Rewritten {
    seconds: f64,
    data_seconds: f64,
    before: Layout,
    after: Layout,
}

#[derive(Debug, Deserialize)]
struct Layout {
    data_files: u64,
    data_bytes: u64,
    delete_files: u64,
}

/// Spark's answer to `floe_race.py merge`.
#[derive(Debug, Deserialize)]
struct MergeAnswer {
    seconds: f64,
    job_seconds: f64,
    cpu_seconds: f64,
    peak_rss_bytes: u64,
    peak_rss_is_whole_process: bool,
    window_rows: u64,
    latest_per_key: u64,
    compare: Compare,
}

#[derive(Clone, Debug, Deserialize)]
struct Compare {
    spark: Aggregates,
    floe: Aggregates,
    only_in_spark: u64,
    only_in_floe: u64,
    sample_only_in_spark: serde_json::Value,
    sample_only_in_floe: serde_json::Value,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
struct Aggregates {
    rows: u64,
    id_sum: i64,
    visits_sum: i64,
    null_emails: u64,
}

/// The Python of the venv the test script and `harness/scripts/spark.sh` install:
/// `FLOE_PYTHON`, else `$FLOE_CACHE` (default `~/.cache/floe`) `/venv/bin/python`.
pub fn python() -> Result<PathBuf> {
    let path = match std::env::var_os("FLOE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("FLOE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/floe"));
            cache.join("venv/bin/python")
        }
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "no Spark environment at {} (set FLOE_PYTHON, or run harness/scripts/spark.sh to install Spark 3.5 with Iceberg 1.10)",
                path.display()
            ),
        ))
    }
}

fn spark<T: for<'de> Deserialize<'de>>(options: &SparkBenchOptions, args: &[&str]) -> Result<T> {
    let script = options.dir.join("floe_race.py");
    let out =
        Command::new(python()?).arg(&script).args(args).env("FLOE_SPARK_MEMORY", &options.spark_memory).output()?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Internal,
            format!("Spark ({}) failed: {}", args.first().unwrap_or(&""), String::from_utf8_lossy(&out.stderr)),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::new(ErrorKind::Internal, format!("unreadable Spark answer: {}", String::from_utf8_lossy(&out.stdout)))
            .with_source(e)
    })
}

fn pipeline(log: &str, options: &SparkBenchOptions, commit_every: u64) -> String {
    format!(
        r#"[pipeline]
id = "race"
commit_every = {commit_every}

[source]
kind = "replay"
path = "{log}"

[[tables]]
topic = "{}"
base = "floe.accounts"
cdc = "floe_cdc.accounts"
buckets = {}
deletes = "{}"
{}{}"#,
        race_table().topic,
        options.buckets,
        options.deletes,
        race_columns_toml(),
        if options.no_run_maintenance { "[tables.maintenance]\ncompaction = false\nexpiry = false\n" } else { "" }
    )
}

/// The bootstrap is a bulk load (not timed): one epoch per this many records per partition.
const BOOTSTRAP_COMMIT_EVERY: u64 = 1_000_000;

/// Runs the race and returns the report.
pub fn bench_spark(options: &SparkBenchOptions) -> Result<String> {
    let python = python()?;
    let dir = &options.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    std::fs::write(dir.join("floe_reader.py"), READER)?;
    std::fs::write(dir.join("floe_race.py"), RACE)?;
    let options = SparkBenchOptions { dir: dir.clone(), ..options.clone() };
    let warehouse = dir.join("warehouse");
    let wh = warehouse.to_string_lossy().to_string();
    eprintln!("floe bench spark: Spark from {}", python.display());

    let spec = RaceSpec { seed: options.seed, rows: options.rows, changes: options.changes, partitions: 4 };
    let generating = Instant::now();
    let summary = {
        let mut bootstrap = BufWriter::with_capacity(1 << 20, File::create(dir.join("bootstrap.jsonl"))?);
        let mut changes = BufWriter::with_capacity(1 << 20, File::create(dir.join("changes.jsonl"))?);
        let summary = write_race(&spec, &mut bootstrap, &mut changes)?;
        bootstrap.flush()?;
        changes.flush()?;
        summary
    };
    eprintln!(
        "generated W({}, {}) in {:.0}s",
        human(options.rows),
        human(options.changes),
        generating.elapsed().as_secs_f64()
    );

    // 1. floe bootstraps R rows (not timed), and Spark copies them into its own table.
    if floe_engine::table_settings::DeleteMode::parse(&options.deletes).is_none() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("--deletes {}: not position, vector or equality", options.deletes),
        ));
    }
    std::fs::write(dir.join("bootstrap.toml"), pipeline("bootstrap.jsonl", &options, BOOTSTRAP_COMMIT_EVERY))?;
    std::fs::write(dir.join("changes.toml"), pipeline("changes.jsonl", &options, options.commit_every))?;
    let (boot, boot_wall) = run_measured(&dir.join("bootstrap.toml"), &dir.join("bootstrap-stats.json"))?;
    std::fs::remove_file(dir.join("bootstrap.jsonl"))?;
    eprintln!("floe bootstrap: {} rows in {boot_wall:.0}s", human(boot.records));
    #[derive(Deserialize)]
    struct Prepared {
        rows: u64,
        seconds: f64,
    }
    let buckets = options.buckets.to_string();
    let prepared: Prepared = spark(&options, &["prepare", &wh, "floe", "floe.accounts", "spark.accounts", &buckets])?;
    if prepared.rows != options.rows {
        return Err(Error::new(
            ErrorKind::Data,
            format!("Spark's copy has {} rows, the bootstrap {}", prepared.rows, options.rows),
        ));
    }
    eprintln!("Spark copied the bootstrap in {:.0}s", prepared.seconds);

    // 2. The timed parts: floe ingests the changes; Spark merges them. Spark's inputs are
    // warm (it just wrote its table); so is floe's log, read once here. Each round starts
    // from the same state: table files are immutable, so restoring the catalog file (the
    // tables' metadata pointers) undoes a round.
    let window = dir.join("window.json");
    let offsets: serde_json::Map<String, serde_json::Value> =
        summary.change_start.iter().map(|(p, o)| (p.to_string(), (*o).into())).collect();
    std::fs::write(&window, serde_json::Value::Object(offsets).to_string())?;
    let saved = save_catalog(&warehouse)?;
    warm(&dir.join("changes.jsonl"))?;
    let rounds = options.repeat.max(1);
    let mut floe_rounds = Vec::new();
    let mut spark_rounds = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            restore_catalog(&warehouse, &saved)?;
        }
        let (floe, floe_wall) = run_measured(&dir.join("changes.toml"), &dir.join("changes-stats.json"))?;
        eprintln!("round {}: floe changes {floe_wall:.1}s", round + 1);
        let last = if round + 1 == rounds { "compare" } else { "no-compare" };
        let merged: MergeAnswer = spark(
            &options,
            &[
                "merge",
                &wh,
                "floe",
                "floe_cdc.accounts",
                "spark.accounts",
                &window.to_string_lossy(),
                "floe.accounts",
                last,
            ],
        )?;
        eprintln!("round {}: Spark MERGE INTO {:.1}s", round + 1, merged.seconds);
        floe_rounds.push((floe, floe_wall));
        spark_rounds.push(merged);
    }
    let last = spark_rounds.last().ok_or_else(|| Error::new(ErrorKind::Internal, "no rounds"))?;
    check(&summary, last)?;
    let floe_all: Vec<f64> = floe_rounds.iter().map(|(_, w)| *w).collect();
    let spark_all: Vec<f64> = spark_rounds.iter().map(|m| m.seconds).collect();
    floe_rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (floe, floe_wall) = &floe_rounds[floe_rounds.len() / 2];
    let compare = spark_rounds.last().map(|m| m.compare.clone());
    spark_rounds.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mut median = spark_rounds.swap_remove(spark_rounds.len() / 2);
    if let Some(c) = compare {
        median.compare = c;
    }
    let mut r = report(&options, &summary, floe, *floe_wall, &median);
    if rounds > 1 {
        let list = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ");
        r += &format!("rounds (median shown above): floe {} s; Spark MERGE {} s\n", list(&floe_all), list(&spark_all));
    }
    if options.scan_rounds > 0 {
        r += &read_cost(&options, &wh)?;
    }
    if options.compaction {
        r += &compaction(&options, &warehouse, &wh)?;
    }
    Ok(r)
}

/// What each final table costs its readers: Spark's full scan of both, and their layouts.
fn read_cost(options: &SparkBenchOptions, wh: &str) -> Result<String> {
    let rounds = options.scan_rounds.to_string();
    let scans: std::collections::BTreeMap<String, Scanned> =
        spark(options, &["scan", wh, "floe", &rounds, "floe.accounts", "spark.accounts"])?;
    let (Some(floe), Some(spark_t)) = (scans.get("floe.accounts"), scans.get("spark.accounts")) else {
        return Err(Error::new(ErrorKind::Internal, "Spark scanned neither table"));
    };
    let mut r = format!(
        "read cost: Spark full scan (all columns, deletes applied, no-op sink), median of {} after a warm-up\n",
        options.scan_rounds
    );
    r += &format!(
        "{:<24} {:>9} {:>10} {:>11} {:>12} {:>14} {:>16}\n",
        "", "scan s", "rows", "data files", "delete files", "delete entries", "entries per row"
    );
    for (name, t) in [("floe", floe), ("Spark MERGE INTO", spark_t)] {
        r += &format!(
            "{:<24} {:>9.2} {:>10} {:>11} {:>12} {:>14} {:>16.4}\n",
            name,
            t.median_seconds,
            human(t.rows),
            t.data_files,
            t.delete_files,
            human(t.delete_entries),
            t.delete_entries as f64 / t.rows.max(1) as f64
        );
    }
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    r += &format!(
        "floe / Spark scan time: {:.2}x (rounds: floe {} s; Spark {} s; data {} vs {})\n",
        floe.median_seconds / spark_t.median_seconds.max(1e-9),
        list(&floe.seconds),
        list(&spark_t.seconds),
        human_bytes(floe.data_bytes),
        human_bytes(spark_t.data_bytes),
    );
    Ok(r)
}

/// `floe maintain` against Spark's `rewrite_data_files`, each from the same table state.
fn compaction(options: &SparkBenchOptions, warehouse: &Path, wh: &str) -> Result<String> {
    // Spark first: its process has exited (its catalog connections closed) before the
    // catalog is restored for floe, which runs in this process.
    let saved = save_catalog(warehouse)?;
    let theirs: Rewritten = spark(options, &["rewrite", wh, "floe", "floe.accounts"])?;
    restore_catalog(warehouse, &saved)?;
    let config = floe_engine::config::PipelineConfig::load(&options.dir.join("changes.toml"))?;
    let ours = crate::maintain::maintain(&config, Some("floe.accounts"), None)?;
    let t = ours.tables.first().cloned().unwrap_or_default();
    let mut r = String::from(
        "compaction of floe's final table, from the same state (every bucket rewritten, deletes applied):\n",
    );
    r += &format!(
        "  floe maintain:               {:>7.2} s, {} read, {:>6.1} MB/s; data files {} -> {}, delete files {} -> {}\n",
        t.seconds,
        human_bytes(t.bytes_read),
        t.bytes_read as f64 / 1e6 / t.seconds.max(1e-9),
        t.data_files.0,
        t.data_files.1,
        t.delete_files.0,
        t.delete_files.1,
    );
    r += &format!(
        "  Spark rewrite_data_files:    {:>7.2} s ({:.2} s data, then rewrite_position_delete_files), {} read, {:>6.1} MB/s; data files {} -> {}, delete files {} -> {}\n",
        theirs.seconds,
        theirs.data_seconds,
        human_bytes(theirs.before.data_bytes),
        theirs.before.data_bytes as f64 / 1e6 / theirs.data_seconds.max(1e-9),
        theirs.before.data_files,
        theirs.after.data_files,
        theirs.before.delete_files,
        theirs.after.delete_files,
    );
    r += "  (Spark in a session already started; floe in-process; both on this machine's cores)\n";
    let _ = theirs.after.data_bytes;
    Ok(r)
}

/// Copies the catalog file(s) aside; returns the copies.
fn save_catalog(warehouse: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut saved = Vec::new();
    for entry in std::fs::read_dir(warehouse)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if name.starts_with("catalog.db") {
            let copy = warehouse.join(format!("saved-{name}"));
            std::fs::copy(&path, &copy)?;
            saved.push((path, copy));
        }
    }
    Ok(saved)
}

/// Puts the saved catalog file(s) back (and drops any journal written since).
fn restore_catalog(warehouse: &Path, saved: &[(PathBuf, PathBuf)]) -> Result<()> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(warehouse.join(format!("catalog.db{suffix}")));
    }
    for (path, copy) in saved {
        // A new file, not the old one overwritten: a connection still open on the old one
        // cannot write into the restored state.
        let _ = std::fs::remove_file(path);
        std::fs::copy(copy, path)?;
    }
    Ok(())
}

/// Reads a file once so that the timed run finds it in the page cache.
fn warm(path: &Path) -> Result<()> {
    std::io::copy(&mut File::open(path)?, &mut std::io::sink())?;
    Ok(())
}

/// Both tables equal each other and the workload's aggregates, and the window is whole.
fn check(summary: &RaceSummary, merged: &MergeAnswer) -> Result<()> {
    let c = &merged.compare;
    let expected = Aggregates {
        rows: summary.final_rows,
        id_sum: summary.final_id_sum,
        visits_sum: summary.final_visits_sum,
        null_emails: summary.final_null_emails,
    };
    let mut problems = Vec::new();
    if c.only_in_spark > 0 || c.only_in_floe > 0 {
        problems.push(format!(
            "the final tables differ: {} rows only in Spark's (e.g. {}), {} only in floe's (e.g. {})",
            c.only_in_spark, c.sample_only_in_spark, c.only_in_floe, c.sample_only_in_floe
        ));
    }
    for (who, got) in [("floe", &c.floe), ("Spark", &c.spark)] {
        if *got != expected {
            problems.push(format!("{who}'s table is {got:?}, the workload says {expected:?}"));
        }
    }
    let events = summary.inserts + summary.updates + summary.deletes;
    if merged.window_rows != events {
        problems.push(format!("the CDC window holds {} rows, the workload {events} changes", merged.window_rows));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Data, format!("failed run: {}", problems.join("; "))))
    }
}

fn report(
    options: &SparkBenchOptions,
    summary: &RaceSummary,
    floe: &RunStats,
    floe_wall: f64,
    spark: &MergeAnswer,
) -> String {
    let changes = (summary.inserts + summary.updates + summary.deletes) as f64;
    let mut r = String::new();
    r += &format!(
        "W(R = {}, C = {}), seed {}: {} updates, {} inserts, {} deletes over {} keys (hottest key: {} changes); {} latest-per-key rows for MERGE\n",
        human(options.rows),
        human(options.changes),
        options.seed,
        human(summary.updates),
        human(summary.inserts),
        human(summary.deletes),
        human(summary.keys_changed),
        summary.max_changes_per_key,
        human(spark.latest_per_key),
    );
    r += &format!("{:<20} {:>9} {:>11} {:>8} {:>10}\n", "", "wall s", "changes/s", "CPU s", "peak mem");
    let floe_rate = changes / floe_wall;
    let spark_rate = changes / spark.seconds;
    r += &format!(
        "{:<20} {:>9.1} {:>11} {:>8.1} {:>10}\n",
        "floe",
        floe_wall,
        human(floe_rate as u64),
        floe.cpu_seconds,
        human_bytes(floe.peak_memory_bytes)
    );
    r += &format!(
        "{:<20} {:>9.1} {:>11} {:>8.1} {:>10}\n",
        "Spark MERGE INTO",
        spark.seconds,
        human(spark_rate as u64),
        spark.cpu_seconds,
        human_bytes(spark.peak_rss_bytes)
    );
    r += &format!(
        "{:<20} {:>9.1} {:>11}\n",
        "  Spark job",
        spark.job_seconds,
        human((changes / spark.job_seconds) as u64)
    );
    r += &format!(
        "{:<20} {:>9} {:>11} {:>8} {:>10}\n",
        "floe / Spark",
        format!("{:.2}x", floe_wall / spark.seconds),
        format!("{:.1}x", floe_rate / spark_rate),
        format!("{:.2}x", floe.cpu_seconds / spark.cpu_seconds.max(1e-9)),
        format!("{:.2}x", floe.peak_memory_bytes as f64 / spark.peak_rss_bytes.max(1) as f64),
    );
    r += &format!(
        "floe: {} snapshots, {:.2} µs per change, peak RSS {} with the mapped log's page cache ({} anonymous, shown above)\n",
        floe.commits,
        floe_wall * 1e6 / changes,
        human_bytes(floe.peak_rss_bytes),
        human_bytes(floe.peak_memory_bytes),
    );
    r += &format!(
        "Spark: the MERGE statement in a warm session is timed; \"Spark job\" adds starting the session (JVM, catalog), as a scheduled batch run pays it ({:.1}x floe)\n",
        spark.job_seconds / floe_wall
    );
    r += &format!(
        "Spark: {:.2} µs per change; peak RSS of the JVM and its Python driver{}; driver memory {}\n",
        spark.seconds * 1e6 / changes,
        if spark.peak_rss_is_whole_process { " over the whole process" } else { " during the MERGE" },
        options.spark_memory,
    );
    r += &format!(
        "verified: both final tables hold the same {} rows (EXCEPT ALL both ways is empty) and match the workload's count, sum(id), sum(visits), null emails\n",
        human(spark.compare.floe.rows)
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(only_in_floe: u64, floe_rows: u64) -> MergeAnswer {
        let agg = |rows| Aggregates { rows, id_sum: 10, visits_sum: 5, null_emails: 1 };
        MergeAnswer {
            seconds: 1.0,
            job_seconds: 2.0,
            cpu_seconds: 1.0,
            peak_rss_bytes: 1,
            peak_rss_is_whole_process: false,
            window_rows: 3,
            latest_per_key: 3,
            compare: Compare {
                spark: agg(4),
                floe: agg(floe_rows),
                only_in_spark: 0,
                only_in_floe,
                sample_only_in_spark: serde_json::Value::Null,
                sample_only_in_floe: serde_json::json!([{"id": 9}]),
            },
        }
    }

    fn summary() -> RaceSummary {
        RaceSummary {
            inserts: 1,
            updates: 1,
            deletes: 1,
            final_rows: 4,
            final_id_sum: 10,
            final_visits_sum: 5,
            final_null_emails: 1,
            ..RaceSummary::default()
        }
    }

    #[test]
    fn the_pipeline_parses_and_no_run_maintenance_turns_compaction_and_expiry_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            options: SparkBenchOptions,
        }
        let parse = |args: &[&str]| {
            let options = Cli::parse_from(std::iter::once("bench").chain(args.iter().copied())).options;
            let text = pipeline("changes.jsonl", &options, 25_000);
            floe_engine::config::PipelineConfig::parse(&text, Path::new("race.toml")).expect("pipeline")
        };
        let default = parse(&[]);
        assert!(default.tables[0].maintenance.compaction && default.tables[0].maintenance.expiry);
        let off = parse(&["--no-run-maintenance"]);
        assert!(!off.tables[0].maintenance.compaction && !off.tables[0].maintenance.expiry);
        assert_eq!(off.tables[0].base, default.tables[0].base);
    }

    #[test]
    fn equal_tables_pass_and_any_difference_fails_the_run() {
        check(&summary(), &answer(0, 4)).expect("identical");
        let e = check(&summary(), &answer(1, 4)).expect_err("a row only in floe's table");
        assert!(e.to_string().contains("failed run") && e.to_string().contains("\"id\":9"), "{e}");
        let e = check(&summary(), &answer(0, 5)).expect_err("floe disagrees with the workload");
        assert!(e.to_string().contains("floe's table"), "{e}");
        let mut short = answer(0, 4);
        short.window_rows = 2;
        assert!(check(&summary(), &short).is_err(), "a CDC window missing changes fails");
    }
}
