//! Compaction inside the engine, in every delete mode: tables read back equal to the model
//! with rewrites running throughout, stay small, survive restarts and kill -9 at any moment
//! of a rewrite, and `floe maintain` compacts what a pipeline left.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use floe_engine::config::TableName;
use floe_harness::WorkloadSpec;
use floe_tests::{Scratch, kill_at_random_moments, replay_pipeline, seed};
use rand::{Rng, SeedableRng};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");
const MODES: [&str; 3] = ["position", "vector", "equality"];

/// The standard workload's two tables, compacting early: at most 3 data files and 2
/// delete files per bucket, 3 small files per CDC partition.
fn pipeline(mode: &str, commit_every: u64, compaction: bool) -> String {
    let table = |topic: &str, name: &str, buckets: u32| {
        format!(
            r#"
[[tables]]
topic = "shop.inventory.{topic}"
base = "shop.{name}"
cdc = "shop_cdc.{name}"
buckets = {buckets}
deletes = "{mode}"

[tables.maintenance]
compaction = {compaction}
max_data_files = 3
max_delete_files = 2
cdc_max_files = 3
"#
        )
    };
    replay_pipeline("compact", commit_every, 2, &[table("orders", "orders", 4), table("order_lines", "order_lines", 4)])
}

fn floe(scratch: &Scratch, args: &[&str], faults: Option<&str>) -> Command {
    let mut c = Command::new(FLOE);
    c.args(args).arg(scratch.pipeline()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("RUST_LOG", "error");
    if let Some(f) = faults {
        c.env("FLOE_FAULTS", f);
    }
    c
}

/// Per base table and bucket: (data files, the most delete files (not vectors) any data
/// file has, or the bucket has in equality mode, vectors).
fn layout(scratch: &Scratch) -> BTreeMap<(String, i32), (usize, usize, usize)> {
    let config = scratch.config();
    let runtime = floe_engine::runtime::IoRuntime::new(1).expect("runtime");
    let catalog = runtime.block_on(floe_engine::catalog::SqlTableCatalog::open(&config.catalog)).expect("catalog");
    let mut out = BTreeMap::new();
    for t in &config.tables {
        let name = t.base.as_ref().expect("base");
        let metadata = scratch.table_metadata(name);
        let files = runtime
            .block_on(floe_engine::table_files::snapshot_files(
                floe_engine::catalog::TableCatalog::file_io(&catalog),
                &metadata,
                floe_engine::manifests::ManifestCache::global(),
            ))
            .expect("files");
        for p in files.partitions {
            let vectors = p.deletes.iter().filter(|d| floe_engine::table_files::is_deletion_vector(&d.file)).count();
            let mut per_file: BTreeMap<Option<String>, usize> = BTreeMap::new();
            for d in p.deletes.iter().filter(|d| !floe_engine::table_files::is_deletion_vector(&d.file)) {
                *per_file.entry(d.file.referenced_data_file()).or_default() += 1;
            }
            let most = per_file.values().copied().max().unwrap_or_default();
            out.insert((name.to_string(), p.bucket().expect("bucket")), (p.data.len(), most, vectors));
        }
    }
    out
}

fn assert_small(scratch: &Scratch, mode: &str) {
    for ((table, bucket), (data, deletes, vectors)) in layout(scratch) {
        let s = scratch.seed;
        assert!(data <= 3, "seed {s} {mode}: {table} bucket {bucket} kept {data} data files");
        assert!(deletes <= 2, "seed {s} {mode}: {table} bucket {bucket}: a data file kept {deletes} delete files");
        assert!(vectors <= data, "seed {s} {mode}: {table} bucket {bucket}: {vectors} vectors for {data} files");
    }
}

#[test]
fn every_delete_mode_equals_the_model_with_compaction_running_throughout() {
    let s = seed();
    for mode in MODES {
        eprintln!("seed {s} mode {mode}");
        let scratch = Scratch::new(WorkloadSpec::standard(s, 8_000), &pipeline(mode, 60, true));
        scratch.run();
        scratch.assert_tables_equal_model();
        let compactions = scratch.compactions();
        let base: usize = compactions.iter().filter(|(t, _)| t.starts_with("shop.")).map(|(_, n)| n).sum();
        let cdc: usize = compactions.iter().filter(|(t, _)| t.starts_with("shop_cdc.")).map(|(_, n)| n).sum();
        assert!(base > 0, "seed {s} {mode}: no base table was compacted");
        assert!(cdc > 0, "seed {s} {mode}: no CDC table was compacted");
        assert_small(&scratch, mode);
        // Rewrites of their own are `replace` snapshots, so incremental readers skip them;
        // the CDC table's always are.
        let rewrites = scratch.rewrites();
        assert!(
            rewrites.iter().any(|(t, ids)| t.starts_with("shop_cdc.") && !ids.is_empty()),
            "seed {s} {mode}: CDC compactions are replace snapshots"
        );
        for (table, ids) in &rewrites {
            let metadata = scratch.table_metadata(&TableName::parse(table).expect("name"));
            for id in ids {
                let op = metadata.snapshot_by_id(*id).expect("snapshot").summary().operation.clone();
                assert_eq!(op, iceberg::spec::Operation::Replace, "seed {s} {mode}: {table}");
            }
        }
    }
}

#[test]
fn a_restart_rebuilds_the_index_from_compacted_tables_and_continues_exactly() {
    let s = seed();
    for mode in ["position", "vector"] {
        let scratch = Scratch::new(WorkloadSpec::standard(s, 6_000), &pipeline(mode, 50, true));
        let log = scratch.path().join("changes.jsonl");
        let full = std::fs::read_to_string(&log).expect("log");
        let lines: Vec<&str> = full.lines().collect();
        for share in [4, 7] {
            std::fs::write(&log, lines[..lines.len() * share / 10].join("\n") + "\n").expect("prefix");
            scratch.run();
        }
        std::fs::write(&log, &full).expect("full");
        scratch.run();
        scratch.assert_tables_equal_model();
        let compacted: usize = scratch.compactions().iter().map(|(_, n)| n).sum();
        assert!(compacted > 0, "seed {s} {mode}: nothing was compacted");
    }
}

/// Every file the current snapshots reference exists.
fn assert_nothing_referenced_is_gone(scratch: &Scratch, context: &str) {
    for f in scratch.referenced_files() {
        assert!(Path::new(&f).exists(), "seed {}: {context}: {f} is referenced but gone", scratch.seed);
    }
}

#[test]
fn kill_9_during_compaction_loses_nothing_and_keeps_every_referenced_file() {
    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    for mode in MODES {
        eprintln!("seed {s} mode {mode}");
        let scratch = Scratch::new(WorkloadSpec::standard(s, 20_000), &pipeline(mode, 60, true));
        // Crashes at the named moments of a rewrite: its files written, its commit staged,
        // its commit landed with the response lost.
        for point in ["none:1", "compaction-files-written:2", "rewrite-before-swap:3", "rewrite-after-swap:2"] {
            let out = floe(&scratch, &["run"], Some(point)).output().expect("spawn floe");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                // The run ended before reaching the point (few rewrites in this mode).
                continue;
            }
            assert!(stderr.contains(point.split(':').next().unwrap_or_default()), "seed {s} {mode}: {stderr}");
            assert_nothing_referenced_is_gone(&scratch, point);
        }
        // And at random moments.
        let kills = kill_at_random_moments(
            6,
            Duration::from_secs(60),
            || Duration::from_millis(rng.random_range(50..600)),
            || floe(&scratch, &["run"], None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"),
        );
        assert!(kills > 0, "seed {s} {mode}: no kill landed");
        let out = floe(&scratch, &["run"], None).output().expect("spawn floe");
        assert!(out.status.success(), "seed {s} {mode}: recovery failed: {}", String::from_utf8_lossy(&out.stderr));
        scratch.assert_tables_equal_model();
        assert_nothing_referenced_is_gone(&scratch, mode);
    }
}

#[test]
fn floe_maintain_compacts_what_a_pipeline_left_and_refuses_while_one_writes() {
    let s = seed();
    for mode in MODES {
        let scratch = Scratch::new(WorkloadSpec::standard(s, 6_000), &pipeline(mode, 50, false));
        scratch.run();
        let before = layout(&scratch);
        assert!(before.values().any(|(d, _, _)| *d > 3), "seed {s} {mode}: nothing to compact: {before:?}");
        let out = floe(&scratch, &["maintain"], None).output().expect("spawn floe");
        assert!(out.status.success(), "seed {s} {mode}: maintain failed: {}", String::from_utf8_lossy(&out.stderr));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(report.contains("shop.orders"), "seed {s} {mode}: {report}");
        for ((table, bucket), (data, deletes, vectors)) in layout(&scratch) {
            assert!(
                data <= 1 && deletes == 0 && vectors == 0,
                "seed {s} {mode}: {table} bucket {bucket} after maintain: {data} data, {deletes} deletes, {vectors} vectors"
            );
        }
        scratch.assert_tables_equal_model();
        assert_nothing_referenced_is_gone(&scratch, "maintain");
        // A pipeline run after it (its index rebuilt from the rewritten table) changes nothing.
        scratch.run();
        scratch.assert_tables_equal_model();
    }
    // While a pipeline holds the tables, maintain refuses and says who holds them.
    let scratch = Scratch::new(WorkloadSpec::standard(s, 2_000), &pipeline("position", 50, false));
    scratch.run();
    let holder = floe_tests::hold_writer_lease(&scratch, "pipeline:compact");
    let out = floe(&scratch, &["maintain"], None).output().expect("spawn floe");
    assert!(!out.status.success(), "seed {s}: maintain ran beside a writer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("compact") && stderr.contains("writ"), "seed {s}: {stderr}");
    drop(holder);
}
