//! The `floe` command line. `main.rs` (and the test crate's copy of the binary) call
//! [`main`], so tests exercise exactly what users run.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 configuration error, 3 a table is paused by
//! a schema change that waits for approval (the other tables completed).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bench::{BenchOptions, RunStats, bench, cpu_seconds};
use crate::bench_spark::{SparkBenchOptions, bench_spark};
use crate::demo::{DemoOptions, demo};
use crate::record::{OffsetSpec, RecordOptions, record};
use crate::runner::{RunOptions, run};
use anyhow::Context;
use clap::{Parser, Subcommand};
use floe_engine::config::PipelineConfig;
use floe_engine::error::ErrorKind;
use floe_engine::metrics::{Metrics, peak_rss_bytes};

/// floe: Debezium change streams into Apache Iceberg CDC and base tables.
#[derive(Parser)]
#[command(name = "floe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file. A replay source runs until its log is consumed and committed; a
    /// Kafka source until SIGINT/SIGTERM (it then commits what is closed and exits 0).
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Kafka: exit once everything up to the high watermarks seen at start is committed.
        #[arg(long)]
        until_caught_up: bool,
        /// Override `pipeline.workers`.
        #[arg(long)]
        workers: Option<usize>,
        /// Also write the run's numbers (records, seconds, peak RSS, CPU) as JSON here.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464) at /metrics.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Capture Kafka records as a replay log (the `kcat -C -J` format) on stdout.
    Record {
        /// `bootstrap.servers`.
        #[arg(long)]
        brokers: String,
        /// Topic to record (repeatable).
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// First offsets: OFFSET, or PARTITION:OFFSET,... (default: earliest).
        #[arg(long, value_parser = OffsetSpec::parse)]
        from: Option<OffsetSpec>,
        /// End offsets, exclusive: OFFSET, or PARTITION:OFFSET,... (default: the high
        /// watermarks at start).
        #[arg(long, value_parser = OffsetSpec::parse)]
        to: Option<OffsetSpec>,
        /// A librdkafka property, KEY=VALUE (repeatable; SASL, TLS, ...).
        #[arg(short = 'X', long = "property", value_parser = key_value)]
        properties: Vec<(String, String)>,
    },
    /// Benchmark replay-log → committed tables on the benchmark workload, verified.
    /// `floe bench spark` races floe against Spark MERGE INTO instead.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        against: Option<BenchAgainst>,
        /// Change events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Rows of the initial snapshot (part of the events).
        #[arg(long, default_value_t = 100_000)]
        initial_rows: u64,
        /// Workload seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Scratch folder (replaced).
        #[arg(long, default_value = "floe-bench")]
        dir: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Records per partition per epoch.
        #[arg(long, default_value_t = 25_000)]
        commit_every: u64,
        /// Delete modes of the base table, comma-separated: each runs in a fresh warehouse
        /// on the same log (position, vector, equality).
        #[arg(long, value_delimiter = ',', default_value = "position")]
        deletes: Vec<String>,
        /// Runs per delete mode, interleaved; the median is reported.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Review, approve and audit schema changes.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Per table: source schema version, Iceberg schema id, the plan's schema, whether data
    /// after the last change is committed, and how long the change took to converge; then
    /// its health: data and delete files, bytes, snapshots, metadata size, delete entries
    /// per live row, and when it was last compacted, expired and cleaned up.
    Status {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Compact a pipeline's tables while no pipeline writes them: every base-table bucket
    /// with more than one data file or any delete is rewritten with its deletes applied,
    /// every CDC partition's small files merged. Refuses while a pipeline holds a table
    /// (a running pipeline compacts its own tables, see `[tables.maintenance]`).
    Maintain {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Only this table: its base or CDC table name, or its topic.
        #[arg(long)]
        table: Option<String>,
        /// Delete unreferenced files older than this (e.g. "10m", "0s"), instead of the
        /// tables' `orphan_min_age`.
        #[arg(long, value_parser = parse_duration_arg)]
        orphan_min_age: Option<std::time::Duration>,
    },
    /// Remove the rows of primary keys physically from a source table's base and CDC
    /// tables (compliance erasure): rewrite the files that hold them, expire the snapshots
    /// that reference the old files, delete those files, then read every file under the
    /// tables' locations to prove no row of the keys is left, and record an audit entry
    /// (`floe.erasure.<id>`) in each table's properties.
    Erase {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The table: its base or CDC table name, or its topic.
        table: String,
        /// Keys to erase: the value for a one-column key, a JSON array for a composite key.
        #[arg(long = "key", num_args = 1..)]
        keys: Vec<String>,
        /// A file of keys, one per line.
        #[arg(long = "keys")]
        keys_file: Option<PathBuf>,
        /// While a pipeline writes the table, its committer erases; wait this long for it.
        #[arg(long, default_value = "10m", value_parser = parse_duration_arg)]
        wait: std::time::Duration,
    },
    /// Generate a seeded workload, run it on embedded defaults, and verify the tables.
    Demo {
        /// Records to generate.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Workload seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Folder for the log and warehouse (default: ./floe-demo).
        #[arg(long, default_value = "floe-demo")]
        dir: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        workers: Option<usize>,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Show pending schema changes as a reviewable diff.
    Plan {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Apply a paused table's pending change; the table resumes on the next run.
    Approve {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The table: its base or CDC table name, or its topic.
        table: String,
    },
    /// Every schema change applied to a table, oldest first.
    History {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The table: its base or CDC table name, or its topic.
        table: String,
    },
}

/// The run ended with tables paused by schema changes (exit code 3).
#[derive(Debug)]
struct PausedTables(Vec<String>);

impl std::fmt::Display for PausedTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for PausedTables {}

#[derive(Subcommand)]
enum BenchAgainst {
    /// The decode core alone on one core: events/s of the fast path and of the serde
    /// fallback, on the benchmark workload in several JSON layouts, and of the replay path.
    Decoder {
        /// Records per layout.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Workload seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Timed rounds per case (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The key index: rebuild time from a table of R rows, and its memory per key.
    Index {
        /// Rows of the table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Workload seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Scratch folder (replaced).
        #[arg(long, default_value = "floe-bench-index")]
        dir: PathBuf,
        /// Timed rebuilds (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Buckets of the base table.
        #[arg(long, default_value_t = 16)]
        buckets: u32,
    },
    /// Many epochs with table maintenance off, then on (same log): events/s, epoch commit
    /// latency after 10, 1,000 and 10,000 epochs, files, snapshots, metadata size, and
    /// (`--spark`) Spark's full-scan time.
    Maintenance {
        /// Epochs.
        #[arg(long, default_value_t = 10_000)]
        epochs: u64,
        /// Records per partition per epoch (4 partitions).
        #[arg(long, default_value_t = 5)]
        per_epoch: u64,
        /// Workload seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Scratch folder (replaced).
        #[arg(long, default_value = "floe-bench-maintenance")]
        dir: PathBuf,
        /// Also time Spark's full scan of each base table (needs the Spark venv).
        #[arg(long)]
        spark: bool,
        /// Timed Spark scans (median reported).
        #[arg(long, default_value_t = 3)]
        scan_rounds: usize,
    },
    /// Erase K keys from a table of R rows (offline, proof included), verified.
    Erase {
        /// Rows of the table.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Keys to erase.
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        /// Workload seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Scratch folder (replaced).
        #[arg(long, default_value = "floe-bench-erase")]
        dir: PathBuf,
    },
    /// Race floe against Spark `MERGE INTO` on Iceberg (needs harness/scripts/spark.sh):
    /// R initial rows, then C changes; both final tables are compared through Spark.
    Spark(SparkBenchOptions),
}

fn parse_duration_arg(text: &str) -> std::result::Result<std::time::Duration, String> {
    floe_engine::table_settings::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. \"10m\", \"1h\", \"0s\")"))
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    crate::allocator::tune();
    floe_engine::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { pipeline, until_caught_up, workers, stats_json, metrics_addr } => {
            run_pipeline(pipeline, until_caught_up, workers, stats_json, metrics_addr)
        }
        Command::Record { brokers, topics, from, to, properties } => {
            let options = RecordOptions { brokers, topics, from, to, properties };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            record(&options, &mut out).map(|n| eprintln!("floe: recorded {n} records")).map_err(anyhow::Error::from)
        }
        Command::Bench { against: Some(BenchAgainst::Spark(options)), .. } => {
            bench_spark(&options).map(|report| print!("{report}")).map_err(anyhow::Error::from)
        }
        Command::Bench { against: Some(BenchAgainst::Decoder { records, seed, rounds }), .. } => {
            crate::bench_decoder::bench_decoder(&crate::bench_decoder::DecoderBenchOptions { records, seed, rounds })
                .map(|report| print!("{report}"))
                .map_err(anyhow::Error::from)
        }
        Command::Bench { against: Some(BenchAgainst::Index { rows, seed, dir, rounds, buckets }), .. } => {
            crate::bench_index::bench_index(&crate::bench_index::IndexBenchOptions { rows, seed, dir, rounds, buckets })
                .map(|report| print!("{report}"))
                .map_err(anyhow::Error::from)
        }
        Command::Bench {
            against: Some(BenchAgainst::Maintenance { epochs, per_epoch, seed, dir, spark, scan_rounds }),
            ..
        } => {
            let options =
                crate::bench_maintenance::MaintenanceBenchOptions { epochs, per_epoch, seed, dir, spark, scan_rounds };
            crate::bench_maintenance::bench_maintenance(&options).map(|r| print!("{r}")).map_err(anyhow::Error::from)
        }
        Command::Bench { against: Some(BenchAgainst::Erase { rows, keys, seed, dir }), .. } => {
            let options = crate::bench_maintenance::EraseBenchOptions { rows, keys, seed, dir };
            crate::bench_maintenance::bench_erase(&options).map(|r| print!("{r}")).map_err(anyhow::Error::from)
        }
        Command::Bench { against: None, events, initial_rows, seed, dir, workers, commit_every, deletes, rounds } => {
            bench(&BenchOptions { events, initial_rows, seed, dir, workers, commit_every, modes: deletes, rounds })
                .map(|report| print!("{report}"))
                .map_err(anyhow::Error::from)
        }
        Command::Schema { command } => schema_command(command),
        Command::Status { pipeline } => PipelineConfig::load(&pipeline)
            .and_then(|c| crate::schema_cli::status(&c))
            .map(|r| print!("{r}"))
            .map_err(anyhow::Error::from),
        Command::Maintain { pipeline, table, orphan_min_age } => PipelineConfig::load(&pipeline)
            .and_then(|c| crate::maintain::maintain(&c, table.as_deref(), orphan_min_age))
            .map(|r| print!("{r}"))
            .map_err(anyhow::Error::from),
        Command::Erase { pipeline, table, keys, keys_file, wait } => PipelineConfig::load(&pipeline)
            .and_then(|c| {
                let keys = crate::erase::read_keys(&keys, keys_file.as_deref())?;
                crate::erase::erase(&c, &table, &keys, wait)
            })
            .map(|r| print!("{r}"))
            .map_err(anyhow::Error::from),
        Command::Demo { events, seed, dir, workers } => {
            if dir.exists() {
                // A demo always starts from scratch: remove what a previous demo left.
                let _ = std::fs::remove_dir_all(&dir);
            }
            demo(&DemoOptions { events, seed, dir, workers })
                .map(|report| print!("{report}"))
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floe: error: {e:#}");
            if e.downcast_ref::<PausedTables>().is_some() {
                return ExitCode::from(3);
            }
            let config = e.downcast_ref::<floe_engine::Error>().is_some_and(|e| e.kind() == ErrorKind::Config);
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

fn schema_command(command: SchemaCommand) -> anyhow::Result<()> {
    let report = match command {
        SchemaCommand::Plan { pipeline } => crate::schema_cli::plan(&PipelineConfig::load(&pipeline)?)?,
        SchemaCommand::Approve { pipeline, table } => {
            crate::schema_cli::approve(&PipelineConfig::load(&pipeline)?, &table)?
        }
        SchemaCommand::History { pipeline, table } => {
            crate::schema_cli::show_history(&PipelineConfig::load(&pipeline)?, &table)?
        }
    };
    print!("{report}");
    Ok(())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn run_pipeline(
    path: PathBuf,
    until_caught_up: bool,
    workers: Option<usize>,
    stats_json: Option<PathBuf>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let mut config = PipelineConfig::load(&path)?;
    if let Some(w) = workers {
        config.pipeline.workers = w.max(1);
    }
    let started = std::time::Instant::now();
    let outcome = run(&config, RunOptions { progress_line: true, until_caught_up, metrics_addr, ..Default::default() })
        .with_context(|| format!("pipeline `{}` ({})", config.pipeline.id, path.display()))?;
    print!("{}", outcome.metrics.summary());
    if let Some(stats_path) = stats_json {
        let stats = RunStats {
            records: Metrics::get(&outcome.metrics.records_in),
            seconds: started.elapsed().as_secs_f64(),
            peak_memory_bytes: Metrics::get(&outcome.metrics.peak_anon_bytes),
            peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
            cpu_seconds: cpu_seconds(),
            commits: Metrics::get(&outcome.metrics.commits),
            commit_micros: outcome.metrics.commit_latencies(),
        };
        std::fs::write(&stats_path, serde_json::to_vec_pretty(&stats)?)
            .with_context(|| format!("writing {}", stats_path.display()))?;
    }
    if !outcome.paused.is_empty() {
        return Err(PausedTables(outcome.paused.iter().map(ToString::to_string).collect()).into());
    }
    Ok(())
}
