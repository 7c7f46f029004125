//! The `floe` command line. `main.rs` (and the test crate's copy of the binary) call
//! [`main`], so tests exercise exactly what users run.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use floe_engine::config::PipelineConfig;
use floe_engine::error::ErrorKind;
use crate::demo::{DemoOptions, demo};
use crate::runner::{RunOptions, run};

/// floe: Debezium change streams into Apache Iceberg CDC and base tables.
#[derive(Parser)]
#[command(name = "floe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file; a replay source runs until its log is consumed and committed.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Override `pipeline.workers`.
        #[arg(long)]
        workers: Option<usize>,
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

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    floe_engine::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { pipeline, workers } => run_pipeline(pipeline, workers),
        Command::Demo { events, seed, dir, workers } => {
            if dir.exists() {
                // A demo always starts from scratch: remove what a previous demo left.
                let _ = std::fs::remove_dir_all(&dir);
            }
            demo(&DemoOptions { events, seed, dir, workers }).map(|report| print!("{report}")).map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floe: error: {e:#}");
            let config = e.downcast_ref::<floe_engine::Error>().is_some_and(|e| e.kind() == ErrorKind::Config);
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

fn run_pipeline(path: PathBuf, workers: Option<usize>) -> anyhow::Result<()> {
    let mut config = PipelineConfig::load(&path)?;
    if let Some(w) = workers {
        config.pipeline.workers = w.max(1);
    }
    let outcome = run(&config, RunOptions { progress_line: true, ..Default::default() })
        .with_context(|| format!("pipeline `{}` ({})", config.pipeline.id, path.display()))?;
    print!("{}", outcome.metrics.summary());
    Ok(())
}
