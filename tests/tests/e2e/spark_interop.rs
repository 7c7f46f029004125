//! The reference reader: Spark 3.5 + Iceberg 1.10 reads what floe writes, in all three
//! delete modes, with compaction running during ingestion, and sees exactly the model;
//! its metadata tables show the layout floe promises; pyiceberg reads the position and
//! vector base tables (a v3 table with deletion vectors) and every CDC table.

use std::collections::{BTreeMap, BTreeSet};

use floe_engine::config::TableName;
use floe_harness::WorkloadSpec;
use floe_harness::tables::GenTable;
use floe_harness::verify::{compare_base, compare_cdc};
use floe_tests::reference::{pyiceberg, read_parquet_dir, spark};
use floe_tests::{Scratch, replay_pipeline, seed};
use serde_json::json;

/// One table per delete mode, compacting early: at most 3 data files and 2 delete files
/// per bucket, so rewrites run throughout the ingestion.
fn pipeline() -> String {
    let table = |topic: &str, name: &str, mode: &str| {
        format!(
            r#"
[[tables]]
topic = "shop.inventory.{topic}"
base = "shop.{name}"
cdc = "shop_cdc.{name}"
buckets = 4
deletes = "{mode}"

[tables.maintenance]
max_data_files = 3
max_delete_files = 2
cdc_max_files = 3
"#
        )
    };
    replay_pipeline(
        "interop",
        150,
        2,
        &[
            table("order_lines", "order_lines", "position"),
            table("accounts", "accounts", "vector"),
            table("members", "members", "equality"),
        ],
    )
}

fn mode_of(base: &TableName) -> &'static str {
    match base.name.as_str() {
        "order_lines" => "position",
        "accounts" => "vector",
        _ => "equality",
    }
}

#[test]
fn spark_and_pyiceberg_read_exactly_the_model_in_every_delete_mode_under_compaction() {
    let s = seed();
    let members = GenTable::new("members", GenTable::accounts().columns.clone(), vec![0]);
    let spec = WorkloadSpec {
        tables: vec![GenTable::order_lines(), GenTable::accounts(), members],
        ..WorkloadSpec::standard(s, 15_000)
    };
    let scratch = Scratch::new(spec, &pipeline());
    scratch.run();
    let warehouse = scratch.path().join("warehouse");
    let config = scratch.config();
    let catalog_name = config.catalog.name.clone();
    let export = |t: &TableName| scratch.path().join(format!("spark-{t}"));
    let mut request = json!({"export": {}, "metadata": []});
    for t in &config.tables {
        for name in [t.base.as_ref(), t.cdc.as_ref()].into_iter().flatten() {
            request["export"][name.to_string()] = json!(export(name));
            request["metadata"].as_array_mut().expect("list").push(json!(name.to_string()));
        }
    }
    let answer = spark(&warehouse, &catalog_name, &request);

    let ours = scratch.snapshot_summaries();
    let rewrites: BTreeMap<String, BTreeSet<i64>> =
        scratch.rewrites().into_iter().map(|(t, ids)| (t, ids.into_iter().collect())).collect();
    for t in &config.tables {
        let model = scratch.model.table(&t.topic).expect("model");
        let base = t.base.as_ref().expect("base");
        let cdc = t.cdc.as_ref().expect("cdc");
        let mode = mode_of(base);
        // Rows, with Spark applying the deletes (and deletion vectors) itself.
        if let Err(diff) = compare_base(model, &read_parquet_dir(&export(base))) {
            panic!("seed {s}: {mode}: Spark's read of {base} differs from the model: {diff}");
        }
        if let Err(diff) = compare_cdc(model, &read_parquet_dir(&export(cdc))) {
            panic!("seed {s}: Spark's read of {cdc} differs from the model: {diff}");
        }
        let expected_format = if mode == "vector" { "3" } else { "2" };
        assert_eq!(answer["format_version"][base.to_string()].as_str(), Some(expected_format), "seed {s}: {base}");

        // Snapshots: one per epoch with floe's offsets, the same as floe's own list, plus
        // `replace` snapshots for the rewrites (compaction ran during ingestion).
        for name in [base, cdc] {
            let snaps = answer["snapshots"][name.to_string()].as_array().expect("snapshots");
            let mine_rewrites = rewrites.get(&name.to_string()).cloned().unwrap_or_default();
            let (epochs, replaced): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
                snaps.iter().partition(|v| v["operation"].as_str() != Some("replace"));
            let (_, mine) = ours.iter().find(|(n, _)| *n == name.to_string()).expect("ours");
            assert_eq!(epochs.len(), mine.len(), "seed {s}: {name}: Spark sees {} epoch snapshots", epochs.len());
            for (snap, (epoch, offsets)) in epochs.iter().zip(mine) {
                assert_eq!(snap["summary"]["floe.epoch"].as_str(), Some(epoch.as_str()), "seed {s}: {name}");
                assert_eq!(snap["summary"]["floe.offsets"].as_str(), Some(offsets.as_str()), "seed {s}: {name}");
                let op = snap["operation"].as_str().unwrap_or_default();
                let allowed: &[&str] = if name == base { &["overwrite", "append", "delete"] } else { &["append"] };
                assert!(allowed.contains(&op), "seed {s}: {name}: operation {op}");
            }
            assert_eq!(replaced.len(), mine_rewrites.len(), "seed {s}: {name}: replace snapshots");
            let compacted = snaps.iter().filter(|v| v["summary"]["floe.rewritten-files"].is_string()).count();
            assert!(compacted > 0, "seed {s}: {name}: nothing was compacted during ingestion");
        }

        // Files added by each epoch snapshot, per touched bucket: one data file, and the
        // mode's deletes: one position-delete file or deletion vector per data file it
        // touched; or one equality-delete file on the key's field ids.
        let key_ids: Vec<i64> = {
            let metadata = scratch.table_metadata(base);
            let mut ids: Vec<i64> = metadata.current_schema().identifier_field_ids().map(i64::from).collect();
            ids.sort_unstable();
            ids
        };
        let base_rewrites = rewrites.get(&base.to_string()).cloned().unwrap_or_default();
        let entries = answer["files"][base.to_string()].as_array().expect("entries");
        // A snapshot's own sequence number is the largest its added entries carry; rewritten
        // files riding in an epoch's snapshot keep an older one.
        let mut newest: BTreeMap<i64, i64> = BTreeMap::new();
        for f in entries {
            let (snapshot, seq) =
                (f["snapshot_id"].as_i64().expect("snapshot"), f["sequence_number"].as_i64().expect("seq"));
            let slot = newest.entry(snapshot).or_insert(seq);
            *slot = (*slot).max(seq);
        }
        let mut per: BTreeMap<(i64, i64), (usize, usize, BTreeSet<String>)> = BTreeMap::new();
        for f in entries {
            let snapshot = f["snapshot_id"].as_i64().expect("snapshot");
            // A rewrite's own files: outputs keep an older sequence number; the deletes it
            // carried over to them are named `...-carry-...`.
            let rewritten = (f["content"].as_i64() == Some(0)
                && f["sequence_number"].as_i64() < newest.get(&snapshot).copied())
                || f["file_path"].as_str().is_some_and(|p| p.contains("-carry-"));
            if base_rewrites.contains(&snapshot) || rewritten {
                continue;
            }
            let bucket = f["partition"].as_object().and_then(|p| p.values().next()).and_then(|v| v.as_i64());
            let bucket = bucket.unwrap_or_else(|| panic!("seed {s}: {base}: a file outside any bucket: {f}"));
            assert!((0..t.buckets as i64).contains(&bucket), "seed {s}: {base}: bucket {bucket} out of range");
            let slot = per.entry((snapshot, bucket)).or_default();
            let format = f["file_format"].as_str().unwrap_or_default().to_ascii_uppercase();
            match (mode, f["content"].as_i64()) {
                (_, Some(0)) => slot.0 += 1,
                ("position", Some(1)) => {
                    assert_eq!(format, "PARQUET", "seed {s}: {base}");
                    let target =
                        f["referenced_data_file"].as_str().expect("a position-delete file names its data file");
                    assert!(slot.2.insert(target.to_string()), "seed {s}: {base}: two delete files for {target}");
                }
                ("vector", Some(1)) => {
                    assert_eq!(format, "PUFFIN", "seed {s}: {base}");
                    let target = f["referenced_data_file"].as_str().expect("a vector names its data file");
                    assert!(slot.2.insert(target.to_string()), "seed {s}: {base}: two vectors for {target}");
                }
                ("equality", Some(2)) => {
                    slot.1 += 1;
                    let mut ids: Vec<i64> =
                        f["equality_ids"].as_array().expect("ids").iter().filter_map(|v| v.as_i64()).collect();
                    ids.sort_unstable();
                    assert_eq!(ids, key_ids, "seed {s}: {base}: equality ids are not the key's field ids");
                }
                (m, other) => panic!("seed {s}: {base} ({m} mode): unexpected file content {other:?}: {f}"),
            }
        }
        assert!(!per.is_empty(), "seed {s}: {base}: no files");
        for ((snapshot, bucket), (data, deletes, _)) in &per {
            assert!(
                *data <= 1 && *deletes <= 1,
                "seed {s}: {base}: snapshot {snapshot} bucket {bucket}: {data} data and {deletes} delete files"
            );
        }
        assert!(per.values().any(|(_, d, v)| *d > 0 || !v.is_empty()), "seed {s}: {base}: no deletes at all");
        // The current snapshot: at most one live vector per data file.
        if mode == "vector" {
            let live = answer["live_deletes"][base.to_string()].as_array().expect("live deletes");
            let mut seen = BTreeSet::new();
            for d in live {
                let target = d["referenced_data_file"].as_str().unwrap_or_default();
                assert!(seen.insert(target.to_string()), "seed {s}: {base}: two live vectors for {target}");
            }
        }
    }

    // pyiceberg: loads every table, lists the same snapshots, and reads the position and
    // vector base tables and every CDC table (it refuses equality deletes).
    let py_export = |t: &TableName| scratch.path().join(format!("py-{t}"));
    let mut names = Vec::new();
    for t in &config.tables {
        let base = t.base.as_ref().expect("base");
        names.push(match mode_of(base) {
            "equality" => base.to_string(),
            _ => format!("export:{base}={}", py_export(base).display()),
        });
        names.push(format!("scan:{}", t.cdc.as_ref().expect("cdc")));
    }
    let py = pyiceberg(&warehouse, &catalog_name, &names);
    for t in &config.tables {
        let model = scratch.model.table(&t.topic).expect("model");
        let base = t.base.as_ref().expect("base");
        if mode_of(base) != "equality"
            && let Err(diff) = compare_base(model, &read_parquet_dir(&py_export(base)))
        {
            panic!("seed {s}: {}: pyiceberg's read of {base} differs from the model: {diff}", mode_of(base));
        }
        for name in [base, t.cdc.as_ref().expect("cdc")] {
            let mut mine: Vec<i64> = scratch
                .snapshots()
                .into_iter()
                .chain(scratch.rewrites())
                .filter(|(n, _)| *n == name.to_string())
                .flat_map(|(_, ids)| ids)
                .collect();
            mine.sort_unstable();
            let mut theirs: Vec<i64> =
                py[name.to_string()]["snapshots"].as_array().expect("list").iter().filter_map(|v| v.as_i64()).collect();
            theirs.sort_unstable();
            assert_eq!(theirs, mine, "seed {s}: pyiceberg lists other snapshots of {name}");
        }
        let cdc = t.cdc.as_ref().expect("cdc").to_string();
        let offsets: Vec<(i64, i64)> = py[&cdc]["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|p| (p[0].as_i64().expect("partition"), p[1].as_i64().expect("offset")))
            .collect();
        let unique: BTreeSet<&(i64, i64)> = offsets.iter().collect();
        assert_eq!(unique.len(), offsets.len(), "seed {s}: pyiceberg reads a (partition, offset) twice in {cdc}");
        assert_eq!(
            offsets.len(),
            model.cdc.len(),
            "seed {s}: pyiceberg reads {} events of {cdc}, the model has {}",
            offsets.len(),
            model.cdc.len()
        );
    }
}
