//! Snapshot expiry and file cleanup inside `floe run`: over many epochs with compaction,
//! expiry and cleanup running throughout, the tables equal the model, their snapshots,
//! files and metadata stay bounded, and Spark reads every retained snapshot; kill -9 at
//! every moment of an expiry and cleanup loses nothing and deletes nothing referenced.
//!
//! `FLOE_LONG_EPOCHS=N` scales the long test (CI runs ~1,000 epochs; the documented full
//! length is 10,000).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::cleanup::{list_files, local_path, retained};
use floe_engine::config::TableName;
use floe_engine::manifests::ManifestCache;
use floe_engine::runtime::IoRuntime;
use floe_harness::WorkloadSpec;
use floe_harness::tables::GenTable;
use floe_tests::reference::spark;
use floe_tests::{Scratch, kill_at_random_moments, replay_pipeline, seed};
use rand::{Rng, SeedableRng};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");
const KEEP: usize = 3;
const EVERY: usize = 8;

/// The standard workload with the tables Spark can read (it has no `time` type).
fn spec(seed: u64, events: u64) -> WorkloadSpec {
    WorkloadSpec { tables: vec![GenTable::order_lines(), GenTable::accounts()], ..WorkloadSpec::standard(seed, events) }
}

/// Two tables in position mode, expiring everything beyond the
/// newest `KEEP` snapshots every `EVERY` commits.
fn pipeline(commit_every: u64, workers: usize) -> String {
    let table = |topic: &str, name: &str| {
        format!(
            r#"
[[tables]]
topic = "shop.inventory.{topic}"
base = "shop.{name}"
cdc = "shop_cdc.{name}"
buckets = 4

[tables.maintenance]
max_data_files = 3
cdc_max_files = 4
keep_snapshots = {KEEP}
snapshot_max_age = "0s"
expire_every = {EVERY}
orphan_min_age = "1h"
"#
        )
    };
    replay_pipeline(
        "expire",
        commit_every,
        workers,
        &[table("order_lines", "order_lines"), table("accounts", "accounts")],
    )
}

fn tables(scratch: &Scratch) -> Vec<TableName> {
    let mut out = Vec::new();
    for t in &scratch.config().tables {
        out.extend(t.base.clone());
        out.extend(t.cdc.clone());
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    list_files(dir).into_iter().map(|(path, _, _)| path).collect()
}

/// (table, snapshots, referenced files, files on disk, metadata file bytes).
type Footprint = (String, usize, BTreeSet<String>, Vec<PathBuf>, u64);

/// Per table: (snapshots, files every retained snapshot and the metadata log reference,
/// files on disk under its location, bytes of the current metadata file). Asserts every
/// referenced file exists.
fn footprint(scratch: &Scratch, context: &str) -> Vec<Footprint> {
    let config = scratch.config();
    let runtime = IoRuntime::new(1).expect("runtime");
    let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
    let mut out = Vec::new();
    for name in tables(scratch) {
        let state = runtime.block_on(catalog.load(&ident(&name))).expect("load").expect("table");
        let keep = runtime
            .block_on(retained(catalog.file_io(), &state.metadata, &state.metadata_location, ManifestCache::global()))
            .expect("retained");
        for f in &keep {
            assert!(Path::new(f).exists(), "seed {}: {context}: {name}: {f} is referenced but gone", scratch.seed);
        }
        let on_disk = files_under(Path::new(local_path(state.metadata.location())));
        let metadata_bytes = std::fs::metadata(local_path(&state.metadata_location)).expect("metadata").len();
        out.push((
            name.to_string(),
            state.metadata.snapshots().len(),
            keep.into_iter().collect(),
            on_disk,
            metadata_bytes,
        ));
    }
    out
}

/// Epochs the run went through: the newest snapshot's epoch number, plus one.
fn epochs(scratch: &Scratch) -> usize {
    scratch
        .snapshot_summaries()
        .iter()
        .filter(|(t, _)| t == "shop.accounts")
        .flat_map(|(_, s)| s.iter())
        .filter_map(|(epoch, _)| epoch.parse::<usize>().ok())
        .max()
        .map_or(0, |e| e + 1)
}

#[test]
fn thousands_of_epochs_with_maintenance_stay_bounded_and_spark_reads_every_retained_snapshot() {
    floe_engine::logging::init();
    let s = seed();
    let target: u64 = std::env::var("FLOE_LONG_EPOCHS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    // The standard workload spreads its records over 2 topics × 4 partitions; one record per
    // partition per epoch gives about events / 8 epochs.
    let events = target * 8;
    eprintln!("seed {s}: {events} events, one record per partition per epoch");
    let scratch = Scratch::new(spec(s, events), &pipeline(1, 2));
    let started = std::time::Instant::now();
    scratch.run();
    eprintln!("seed {s}: ran in {:.1}s", started.elapsed().as_secs_f64());
    scratch.assert_tables_equal_model();
    let footprint = footprint(&scratch, "after the run");
    for (table, snapshots, referenced, on_disk, metadata_bytes) in &footprint {
        eprintln!(
            "seed {s}: {table}: {snapshots} snapshots, {} referenced files, {} on disk, metadata {metadata_bytes} B",
            referenced.len(),
            on_disk.len()
        );
        // Expiry runs every EVERY commits; a compaction may add a `replace` snapshot per
        // epoch between two runs.
        assert!(*snapshots <= KEEP + 2 * EVERY, "seed {s}: {table} kept {snapshots} snapshots");
        // Nothing on disk is unreferenced but the metadata files the commits since the last
        // cleanup pushed off the (100-entry) metadata log.
        let unreferenced: Vec<&PathBuf> =
            on_disk.iter().filter(|p| !referenced.contains(&p.to_string_lossy().to_string())).collect();
        let stray: Vec<&&PathBuf> =
            unreferenced.iter().filter(|p| !p.to_string_lossy().ends_with(".metadata.json")).collect();
        if !stray.is_empty() && std::env::var("FLOE_DEBUG_COPY").is_ok() {
            let _ = Command::new("cp").arg("-r").arg(scratch.path()).arg("/tmp/expiry-debug").status();
        }
        assert!(stray.is_empty(), "seed {s}: {table}: files on disk nothing references: {stray:?}");
        assert!(
            unreferenced.len() <= 2 * EVERY + 2,
            "seed {s}: {table}: {} old metadata files since the last cleanup",
            unreferenced.len()
        );
        // 100 logged metadata files at most, the current one and those since the last
        // cleanup; each small.
        let metadata_files = on_disk.iter().filter(|p| p.to_string_lossy().ends_with(".metadata.json")).count();
        assert!(metadata_files <= 101 + 2 * EVERY + 2, "seed {s}: {table}: {metadata_files} metadata files");
        assert!(*metadata_bytes < 64 << 10, "seed {s}: {table}: the metadata file grew to {metadata_bytes} B");
    }
    let epochs = epochs(&scratch);
    eprintln!("seed {s}: {epochs} epochs");
    assert!(epochs as u64 >= target / 2, "seed {s}: only {epochs} epochs ran");
    // The reference reader reads every retained snapshot of every table in full.
    let names: Vec<String> = tables(&scratch).iter().map(|t| t.to_string()).collect();
    let answer = spark(&scratch.path().join("warehouse"), "floe", &serde_json::json!({ "read_snapshots": names }));
    for (table, snapshots, ..) in &footprint {
        let reads = answer["snapshot_reads"][table].as_array().expect("reads");
        assert_eq!(reads.len(), *snapshots, "seed {s}: {table}: Spark read every retained snapshot");
    }
}

fn floe(scratch: &Scratch, faults: Option<&str>) -> Command {
    let mut c = Command::new(FLOE);
    c.arg("run").arg(scratch.pipeline()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("RUST_LOG", "error");
    if let Some(f) = faults {
        c.env("FLOE_FAULTS", f);
    }
    c
}

#[test]
fn kill_9_during_expiry_and_cleanup_loses_nothing_and_deletes_nothing_referenced() {
    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let scratch = Scratch::new(spec(s, 12_000), &pipeline(5, 2));
    // Crashes at the named moments: the expiry's metadata written, swapped with the
    // response lost, before cleanup, in the middle of it.
    let points = ["expire-before-swap:2", "expire-after-swap:3", "expire-before-cleanup:2", "cleanup-midway:4"];
    let mut crashed = 0;
    for point in points {
        let out = floe(&scratch, Some(point)).output().expect("spawn floe");
        if out.status.success() {
            continue;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(point.split(':').next().unwrap_or_default()), "seed {s}: {stderr}");
        crashed += 1;
        footprint(&scratch, point);
    }
    assert!(crashed >= 3, "seed {s}: only {crashed} of the fault points were reached");
    let kills = kill_at_random_moments(
        6,
        Duration::from_secs(60),
        || Duration::from_millis(rng.random_range(100..800)),
        || floe(&scratch, None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"),
    );
    assert!(kills > 0, "seed {s}: no kill landed");
    let out = floe(&scratch, None).output().expect("spawn floe");
    assert!(out.status.success(), "seed {s}: recovery failed: {}", String::from_utf8_lossy(&out.stderr));
    // Exactly once: the CDC tables hold every offset once, the base tables equal the model.
    scratch.assert_tables_equal_model();
    footprint(&scratch, "after recovery");
    // The orphans the crashes left go with `floe maintain --orphan-min-age 0s`.
    let out = Command::new(FLOE)
        .args(["maintain".as_ref(), scratch.pipeline().as_os_str(), "--orphan-min-age".as_ref(), "0s".as_ref()])
        .output()
        .expect("spawn floe maintain");
    assert!(out.status.success(), "seed {s}: maintain failed: {}", String::from_utf8_lossy(&out.stderr));
    for (table, _, referenced, on_disk, _) in footprint(&scratch, "after maintain") {
        let left: Vec<&PathBuf> =
            on_disk.iter().filter(|p| !referenced.contains(&p.to_string_lossy().to_string())).collect();
        assert!(left.is_empty(), "seed {s}: {table}: orphans left after maintain: {left:?}");
    }
    scratch.assert_tables_equal_model();
    let status = Command::new(FLOE).arg("status").arg(scratch.pipeline()).output().expect("floe status");
    let text = String::from_utf8_lossy(&status.stdout);
    eprintln!("{text}");
    assert!(status.status.success() && text.contains("deletes/row") && text.contains("shop.accounts"), "{text}");
}
