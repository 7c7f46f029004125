//! Kafka → committed tables against replay → committed tables, on the same records.
//!
//! ```sh
//! cargo build --release --workspace --all-targets
//! cargo run --release -p floe-tests --example kafka_bench -- [EVENTS] [DIR]
//! ```
//!
//! Generates the benchmark workload (seed 7) as a replay log, produces the same records
//! into a tansu broker on loopback (sqlite storage), then times two `floe run` processes:
//! `--until-caught-up` from Kafka and the replay of the log. Both tables of both runs are
//! verified against the model; a mismatch fails the benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a developer tool: any failure should stop it loudly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use floe_engine::config::PipelineConfig;
use floe_engine::metrics::{human, human_bytes};
use floe_harness::WorkloadSpec;
use floe_harness::generator::Generator;
use floe_pipelines::bench::{RunStats, bench_pipeline};
use floe_pipelines::demo::{verify, write_workload};
use floe_tests::broker::Broker;
use floe_tests::produce::produce;

fn floe_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let floe = dir.join("floe");
    assert!(floe.is_file(), "{} missing: cargo build --release --workspace first", floe.display());
    floe
}

fn timed_run(dir: &Path, pipeline: &str, extra: &[&str]) -> (f64, RunStats) {
    let stats = dir.join("stats.json");
    let started = Instant::now();
    let status = Command::new(floe_binary())
        .current_dir(dir)
        .arg("run")
        .arg(dir.join(pipeline))
        .args(extra)
        .arg("--stats-json")
        .arg(&stats)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "floe run failed: {status}");
    (wall, serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map(|a| a.parse().unwrap()).unwrap_or(200_000);
    let root = PathBuf::from(args.next().unwrap_or_else(|| "floe-kafka-bench".into()));
    let _ = std::fs::remove_dir_all(&root);
    let (replay, kafka) = (root.join("replay"), root.join("kafka"));
    std::fs::create_dir_all(&replay).unwrap();
    std::fs::create_dir_all(&kafka).unwrap();
    let spec = WorkloadSpec::bench(7, events, events / 10);
    let (model, records) = write_workload(spec.clone(), &replay.join("changes.jsonl")).unwrap();
    let pipeline = bench_pipeline(25_000, None, "position", "warehouse");
    std::fs::write(replay.join("bench.toml"), &pipeline).unwrap();

    let broker = Broker::start(&root.join("broker"));
    broker.create_topic("shop.inventory.accounts", spec.partitions);
    let producing = Instant::now();
    produce(&broker.address(), Generator::new(spec));
    let produced = producing.elapsed().as_secs_f64();
    let kafka_toml = pipeline.replace(
        "kind = \"replay\"\npath = \"changes.jsonl\"",
        &format!("kind = \"kafka\"\nbrokers = \"{}\"", broker.address()),
    );
    std::fs::write(kafka.join("bench.toml"), kafka_toml).unwrap();

    let mut rows = Vec::new();
    for (name, dir, extra) in [("replay", &replay, &[][..]), ("kafka", &kafka, &["--until-caught-up"][..])] {
        let (wall, stats) = timed_run(dir, "bench.toml", extra);
        assert_eq!(stats.records, records, "{name}: read {} of {records} records", stats.records);
        let checks = verify(&PipelineConfig::load(&dir.join("bench.toml")).unwrap(), &model).unwrap();
        rows.push((name, wall, stats, checks));
    }
    println!("workload: {records} records (seed 7, {} initial rows), produced to tansu in {produced:.1}s", events / 10);
    println!("| source | wall s | events/s | CPU s | commits | peak memory (anon RSS) |");
    println!("|---|---|---|---|---|---|");
    for (name, wall, s, _) in &rows {
        println!(
            "| {name} | {wall:.2} | {} | {:.1} | {} | {} |",
            human((s.records as f64 / wall) as u64),
            s.cpu_seconds,
            s.commits,
            human_bytes(s.peak_memory_bytes)
        );
    }
    let ratio = (rows[1].2.records as f64 / rows[1].1) / (rows[0].2.records as f64 / rows[0].1);
    println!("kafka / replay throughput: {:.0}%", ratio * 100.0);
    for (name, _, _, checks) in &rows {
        for c in checks {
            println!("verified ({name}): {c}");
        }
    }
}
