//! The reference reader: Spark 3.5 + Iceberg 1.10 reads what floe writes (applying the
//! equality deletes itself) and sees exactly the model; its metadata tables show the
//! layout floe promises; pyiceberg opens the same catalog file.

use std::collections::{BTreeMap, BTreeSet};

use floe_engine::config::TableName;
use floe_harness::WorkloadSpec;
use floe_harness::tables::GenTable;
use floe_harness::verify::{compare_base, compare_cdc};
use floe_tests::reference::{pyiceberg, read_parquet_dir, spark};
use floe_tests::{Scratch, seed};
use serde_json::json;

const PIPELINE: &str = r#"[pipeline]
id = "interop"
commit_every = 500
workers = 2

[source]
kind = "replay"
path = "changes.jsonl"

[[tables]]
topic = "shop.inventory.order_lines"
base = "shop.order_lines"
cdc = "shop_cdc.order_lines"
buckets = 4

[[tables]]
topic = "shop.inventory.accounts"
base = "shop.accounts"
cdc = "shop_cdc.accounts"
buckets = 8
"#;

#[test]
fn spark_and_pyiceberg_read_exactly_the_model_and_the_promised_layout() {
    let s = seed();
    let spec = WorkloadSpec {
        tables: vec![GenTable::order_lines(), GenTable::accounts()],
        ..WorkloadSpec::standard(s, 12_000)
    };
    let scratch = Scratch::new(spec, PIPELINE);
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
    for t in &config.tables {
        let model = scratch.model.table(&t.topic).expect("model");
        let base = t.base.as_ref().expect("base");
        let cdc = t.cdc.as_ref().expect("cdc");
        // Rows, with Spark applying the equality deletes.
        if let Err(diff) = compare_base(model, &read_parquet_dir(&export(base))) {
            panic!("seed {s}: Spark's read of {base} differs from the model: {diff}");
        }
        if let Err(diff) = compare_cdc(model, &read_parquet_dir(&export(cdc))) {
            panic!("seed {s}: Spark's read of {cdc} differs from the model: {diff}");
        }

        // Snapshots: one per epoch, each with floe's offsets; the same as floe's own list.
        for name in [base, cdc] {
            let snaps = answer["snapshots"][name.to_string()].as_array().expect("snapshots");
            let (_, mine) = ours.iter().find(|(n, _)| *n == name.to_string()).expect("ours");
            assert_eq!(
                snaps.len(),
                mine.len(),
                "seed {s}: {name}: Spark sees {} snapshots, floe made {}",
                snaps.len(),
                mine.len()
            );
            for (snap, (epoch, offsets)) in snaps.iter().zip(mine) {
                assert_eq!(snap["summary"]["floe.epoch"].as_str(), Some(epoch.as_str()), "seed {s}: {name}");
                assert_eq!(snap["summary"]["floe.offsets"].as_str(), Some(offsets.as_str()), "seed {s}: {name}");
                let op = if name == base { "overwrite" } else { "append" };
                assert_eq!(snap["operation"].as_str(), Some(op), "seed {s}: {name}: operation");
            }
        }

        // Files: per commit and touched bucket, one data file and at most one equality-
        // delete file whose equality ids are the key's field ids.
        let key_ids: Vec<i64> = {
            let metadata = scratch.table_metadata(base);
            let schema = metadata.current_schema();
            let mut ids: Vec<i64> = schema.identifier_field_ids().map(i64::from).collect();
            ids.sort_unstable();
            ids
        };
        let mut per: BTreeMap<(i64, i64), (usize, usize)> = BTreeMap::new();
        for f in answer["files"][base.to_string()].as_array().expect("entries") {
            let bucket = f["partition"].as_object().and_then(|p| p.values().next()).and_then(|v| v.as_i64());
            let bucket = bucket.unwrap_or_else(|| panic!("seed {s}: {base}: a file outside any bucket: {f}"));
            assert!((0..t.buckets as i64).contains(&bucket), "seed {s}: {base}: bucket {bucket} out of range");
            let slot = per.entry((f["snapshot_id"].as_i64().expect("snapshot"), bucket)).or_default();
            match f["content"].as_i64() {
                Some(0) => slot.0 += 1,
                Some(2) => {
                    slot.1 += 1;
                    let mut ids: Vec<i64> =
                        f["equality_ids"].as_array().expect("ids").iter().filter_map(|v| v.as_i64()).collect();
                    ids.sort_unstable();
                    assert_eq!(ids, key_ids, "seed {s}: {base}: equality ids are not the key's field ids");
                }
                other => panic!("seed {s}: {base}: unexpected file content {other:?}"),
            }
        }
        assert!(!per.is_empty(), "seed {s}: {base}: no files");
        for ((snapshot, bucket), (data, deletes)) in &per {
            assert!(
                *data <= 1 && *deletes <= 1,
                "seed {s}: {base}: snapshot {snapshot} bucket {bucket}: {data} data and {deletes} delete files"
            );
        }
        let with_deletes = per.values().filter(|(_, d)| *d == 1).count();
        assert!(with_deletes > 0, "seed {s}: {base}: no equality-delete files at all");
    }

    // pyiceberg: loads every table, lists the same snapshots, reads the CDC tables.
    let mut names = Vec::new();
    for t in &config.tables {
        names.push(t.base.as_ref().expect("base").to_string());
        names.push(format!("scan:{}", t.cdc.as_ref().expect("cdc")));
    }
    let py = pyiceberg(&warehouse, &catalog_name, &names);
    for t in &config.tables {
        let model = scratch.model.table(&t.topic).expect("model");
        for name in [t.base.as_ref().expect("base"), t.cdc.as_ref().expect("cdc")] {
            let (_, mut mine) = scratch.snapshots().into_iter().find(|(n, _)| *n == name.to_string()).expect("ours");
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
