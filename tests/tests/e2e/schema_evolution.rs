//! Schema evolution, end to end, with Spark reading the results: a new column and a widened
//! type mid-stream (zero gap), a dropped column pausing only its table until approved,
//! SIGKILL at the schema commit, drift found by pull at start, and the audit history.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use floe_engine::config::TableName;
use floe_engine::offsets::committed_progress;
use floe_engine::schema_audit::{history, pending};
use floe_harness::columns::GenType;
use floe_harness::tables::GenTable;
use floe_harness::verify::{compare_base, compare_cdc};
use floe_harness::{SchemaEdit, SchemaStep, WorkloadSpec};
use floe_tests::reference::{read_parquet_dir, spark};
use floe_tests::{Scratch, accounts_pipeline, accounts_spec, seed};
use iceberg::spec::{PrimitiveType, TableMetadata, Type};
use serde_json::json;

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");

/// The replay form of the shared schema-evolution pipeline.
fn pipeline(commit_every: u64, policy: &str) -> String {
    accounts_pipeline("evolve", commit_every, "", "kind = \"replay\"\npath = \"changes.jsonl\"", policy)
}

fn spec(seed: u64, events: u64, steps: Vec<SchemaStep>) -> WorkloadSpec {
    accounts_spec(seed, events, steps)
}

fn name(text: &str) -> TableName {
    let (namespace, name) = text.split_once('.').expect("ns.table");
    TableName { namespace: namespace.into(), name: name.into() }
}

fn floe(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(FLOE).args(args).current_dir(dir).output().expect("spawn floe");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Spark reads every table; each equals the model.
fn spark_reads_the_model(scratch: &Scratch) {
    let s = scratch.seed;
    let config = scratch.config();
    let warehouse = scratch.path().join("warehouse");
    let export = |t: &TableName| scratch.path().join(format!("spark-{t}"));
    let mut request = json!({"export": {}});
    for t in &config.tables {
        for n in [t.base.as_ref(), t.cdc.as_ref()].into_iter().flatten() {
            request["export"][n.to_string()] = json!(export(n));
        }
    }
    spark(&warehouse, &config.catalog.name, &request);
    for t in &config.tables {
        let model = scratch.model.table(&t.topic).expect("model");
        let (base, cdc) = (t.base.as_ref().expect("base"), t.cdc.as_ref().expect("cdc"));
        compare_base(model, &read_parquet_dir(&export(base)))
            .unwrap_or_else(|d| panic!("seed {s}: Spark's {base} differs from the model: {d}"));
        compare_cdc(model, &read_parquet_dir(&export(cdc)))
            .unwrap_or_else(|d| panic!("seed {s}: Spark's {cdc} differs from the model: {d}"));
    }
}

fn field_type(metadata: &TableMetadata, column: &str) -> Option<PrimitiveType> {
    match metadata.current_schema().field_by_name(column)?.field_type.as_ref() {
        Type::Primitive(p) => Some(p.clone()),
        _ => None,
    }
}

/// Snapshots of a table, oldest first: (schema id, floe offsets JSON).
fn snapshots(metadata: &TableMetadata) -> Vec<(i32, floe_engine::offsets::SourceOffsets, i64)> {
    let mut snaps: Vec<_> = metadata.snapshots().collect();
    snaps.sort_by_key(|s| s.sequence_number());
    snaps
        .iter()
        .filter_map(|s| {
            let offsets = s.summary().additional_properties.get("floe.offsets")?;
            let offsets = floe_engine::offsets::SourceOffsets::from_json(offsets).ok()?;
            Some((s.schema_id().unwrap_or(0), offsets, s.sequence_number()))
        })
        .collect()
}

#[test]
fn a_new_column_lands_with_its_first_row_and_old_rows_read_null() {
    let s = seed();
    let steps = vec![SchemaStep::add_column(3_000, 0, "tier", GenType::Str)];
    let scratch = Scratch::new(spec(s, 8_000, steps), &pipeline(150, "additive"));
    let outcome = scratch.run();
    assert!(outcome.paused.is_empty(), "seed {s}: an additive change paused a table");
    scratch.assert_tables_equal_model();
    spark_reads_the_model(&scratch);

    for table in ["shop.accounts", "shop_cdc.accounts"] {
        let m = scratch.table_metadata(&name(table));
        assert_eq!(field_type(&m, "tier"), Some(PrimitiveType::String), "seed {s}: {table} lacks the new column");
        assert!(!m.current_schema().field_by_name("tier").expect("tier").required, "seed {s}: {table}");
        // Zero gap: the schema lands in the commit of the first record that carries the
        // column (in any partition), or the one just before; never after.
        let entries = history(&m).expect("history");
        assert_eq!(entries.len(), 1, "seed {s}: {table}: {entries:?}");
        assert_eq!((entries[0].detected.as_str(), entries[0].approval.as_str()), ("push", "automatic (additive)"));
        let carriers = first_carriers(&scratch, "shop.inventory.accounts", "\\\"field\\\":\\\"tier\\\"");
        let snaps = snapshots(&m);
        let carrying = snaps
            .iter()
            .position(|(_, offsets, _)| {
                carriers.iter().any(|(p, o)| offsets.get("shop.inventory.accounts", *p).is_some_and(|next| next > *o))
            })
            .unwrap_or_else(|| panic!("seed {s}: {table}: no snapshot covers a record with the column"));
        let evolved = snaps
            .iter()
            .position(|(schema, _, _)| *schema == entries[0].new_schema_id)
            .unwrap_or_else(|| panic!("seed {s}: {table}: no snapshot carries the new schema"));
        assert!(
            evolved <= carrying && carrying - evolved <= 1,
            "seed {s}: {table}: the schema landed in snapshot {evolved}, the first data using it in {carrying}"
        );
    }
}

/// Per partition of `topic`, the offset of the first record whose text contains `needle`.
fn first_carriers(scratch: &Scratch, topic: &str, needle: &str) -> Vec<(i32, i64)> {
    let log = std::fs::read_to_string(scratch.path().join("changes.jsonl")).expect("log");
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(needle)) {
        let v: serde_json::Value = serde_json::from_str(line).expect("kcat line");
        if v["topic"].as_str() != Some(topic) {
            continue;
        }
        let (p, o) = (v["partition"].as_i64().expect("p") as i32, v["offset"].as_i64().expect("o"));
        first.entry(p).or_insert(o);
    }
    assert!(!first.is_empty(), "no record of {topic} contains {needle}");
    first.into_iter().collect()
}

#[test]
fn widening_int_to_long_keeps_values_beyond_the_int_range_and_the_history_lists_every_change() {
    let s = seed();
    let steps = vec![
        SchemaStep { at: 2_000, table: 0, edit: SchemaEdit::Widen("visits", GenType::Int64) },
        SchemaStep::add_column(4_000, 0, "note", GenType::Str),
    ];
    let scratch = Scratch::new(spec(s, 7_000, steps), &pipeline(150, "additive"));
    scratch.run();
    scratch.assert_tables_equal_model();
    spark_reads_the_model(&scratch);
    let model = scratch.model.table("shop.inventory.accounts").expect("model");
    let visits = model.schema.position("visits").expect("visits");
    assert!(
        model.rows.values().any(|r| matches!(r.0[visits], floe_engine::value::Value::Long(v) if v > i64::from(i32::MAX) || v < i64::from(i32::MIN))),
        "seed {s}: the workload has no value beyond the int range to prove anything"
    );
    for table in ["shop.accounts", "shop_cdc.accounts"] {
        let m = scratch.table_metadata(&name(table));
        assert_eq!(field_type(&m, "visits"), Some(PrimitiveType::Long), "seed {s}: {table}");
        let entries = history(&m).expect("history");
        let kinds: Vec<String> = entries.iter().flat_map(|e| e.changes.iter().map(ToString::to_string)).collect();
        assert_eq!(
            kinds,
            vec!["column `visits` widened from int to long".to_string(), "new column `note` string".to_string()],
            "seed {s}: {table}"
        );
        assert!(
            entries
                .windows(2)
                .all(|w| w[0].new_schema_id <= w[1].old_schema_id + 1 && w[0].applied_at_ms <= w[1].applied_at_ms),
            "seed {s}: {table}: history out of order: {entries:?}"
        );
    }
    let (code, text) = floe(&["schema", "history", "pipeline.toml", "shop.accounts"], scratch.path());
    assert_eq!(code, 0, "{text}");
    let widened = text.find("widened from int to long").unwrap_or_else(|| panic!("seed {s}: {text}"));
    let added = text.find("new column `note`").unwrap_or_else(|| panic!("seed {s}: {text}"));
    assert!(widened < added, "seed {s}: history not in order:\n{text}");
    let (code, text) = floe(&["status", "pipeline.toml"], scratch.path());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("converged") && !text.contains("paused"), "seed {s}:\n{text}");
}

#[test]
fn a_dropped_column_pauses_only_its_table_until_approved() {
    let s = seed();
    let steps = vec![SchemaStep { at: 3_000, table: 0, edit: SchemaEdit::Drop("email") }];
    let scratch = Scratch::new(spec(s, 7_000, steps), &pipeline(150, "additive"));

    let (code, text) = floe(&["run", "pipeline.toml"], scratch.path());
    assert_eq!(code, 3, "seed {s}: a paused table must end the run with exit code 3:\n{text}");
    assert!(
        text.contains("shop.accounts") && text.contains("column `email` was dropped"),
        "seed {s}: the message must name the table, the column and the change:\n{text}"
    );
    // The other table went on to the end; the paused one committed nothing past the pause.
    let lines = scratch.model.table("shop.inventory.order_lines").expect("model");
    compare_base(lines, &scratch.read(&name("shop.order_lines"))).unwrap_or_else(|d| panic!("seed {s}: {d}"));
    let m = scratch.table_metadata(&name("shop.accounts"));
    let p = pending(&m).expect("pending").unwrap_or_else(|| panic!("seed {s}: no pending change recorded"));
    let committed = committed_progress(&m).expect("progress").map(|p| p.offsets).unwrap_or_default();
    assert!(
        committed.get(&p.topic, p.partition).is_none_or(|next| next <= p.offset),
        "seed {s}: offsets past the pause were committed"
    );
    assert!(m.current_schema().field_by_name("email").is_some());

    let (code, plan) = floe(&["schema", "plan", "pipeline.toml"], scratch.path());
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("PAUSED") && plan.contains("column `email` was dropped") && plan.contains("after approval"),
        "seed {s}:\n{plan}"
    );
    let (code, text) = floe(&["schema", "approve", "pipeline.toml", "shop.accounts"], scratch.path());
    assert_eq!(code, 0, "seed {s}: {text}");
    let (code, text) = floe(&["run", "pipeline.toml"], scratch.path());
    assert_eq!(code, 0, "seed {s}: the approved table must resume:\n{text}");

    scratch.assert_tables_equal_model();
    spark_reads_the_model(&scratch);
    let m = scratch.table_metadata(&name("shop.accounts"));
    assert!(pending(&m).expect("pending").is_none());
    let entries = history(&m).expect("history");
    assert_eq!(entries.len(), 1, "seed {s}: {entries:?}");
    assert!(entries[0].approval.starts_with("approved by "), "seed {s}: {entries:?}");
}

#[test]
fn a_kill_at_the_schema_commit_applies_the_schema_once_and_loses_nothing() {
    let s = seed();
    let steps = || vec![SchemaStep::add_column(2_500, 0, "tier", GenType::Int32)];
    // The schema rides on a data commit; kill before its pointer swap, then (the restart
    // finds the change by pull, at start) before and after that metadata commit; or kill
    // right after the data commit's swap (a lost response).
    let scenarios: [&[&str]; 2] = [
        &["schema-commit-before-swap:1", "schema-before-swap:1", "schema-after-swap:1"],
        &["schema-commit-after-swap:1"],
    ];
    for faults in scenarios {
        let scratch = Scratch::new(spec(s, 6_000, steps()), &pipeline(150, "additive"));
        for fault in faults {
            let out = Command::new(FLOE)
                .args(["run", "pipeline.toml"])
                .current_dir(scratch.path())
                .env("FLOE_FAULTS", fault)
                .output()
                .expect("spawn");
            assert!(
                !out.status.success(),
                "seed {s}: {fault} did not crash the run: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (code, text) = floe(&["run", "pipeline.toml"], scratch.path());
        assert_eq!(code, 0, "seed {s}: {text}");
        scratch.assert_tables_equal_model();
        for table in ["shop.accounts", "shop_cdc.accounts"] {
            let m = scratch.table_metadata(&name(table));
            let entries = history(&m).expect("history");
            assert_eq!(entries.len(), 1, "seed {s}: {faults:?}: {table}: applied {} times: {entries:?}", entries.len());
            let ids: Vec<i32> = m.schemas_iter().map(|x| x.schema_id()).collect();
            assert_eq!(ids.len(), 2, "seed {s}: {faults:?}: {table}: schemas {ids:?}");
        }
        // Each CDC event exactly once.
        let cdc = scratch.read(&name("shop_cdc.accounts"));
        let (p, o) = (cdc.position("_kafka_partition").expect("p"), cdc.position("_kafka_offset").expect("o"));
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for r in &cdc.rows {
            *seen.entry((r.0[p].to_string(), r.0[o].to_string())).or_default() += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "seed {s}: {faults:?}: duplicate CDC events");
        if faults.len() == 1 {
            spark_reads_the_model(&scratch);
        }
    }
}

#[test]
fn pull_detection_evolves_an_idle_table_at_start_before_any_new_event() {
    let s = seed();
    // The log ends with the column already added upstream: the last record of some partition
    // carries it. The first run stops before that record; the second must evolve the table
    // at start, from the newest records, before it reads anything.
    let steps = vec![SchemaStep::add_column(3_950, 0, "tier", GenType::Str)];
    let full = Scratch::new(spec(s, 4_000, steps), &pipeline(100, "additive"));
    let log = std::fs::read_to_string(full.path().join("changes.jsonl")).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    let cut = lines
        .iter()
        .position(|l| l.contains("tier"))
        .unwrap_or_else(|| panic!("seed {s}: no record carries the column"));
    std::fs::write(full.path().join("changes.jsonl"), lines[..cut].join("\n") + "\n").expect("truncate");
    full.run();
    let before = scratch_snapshot_count(&full, "shop.accounts");
    std::fs::write(full.path().join("changes.jsonl"), log.clone()).expect("restore");
    full.run();
    full.assert_tables_equal_model();
    let m = full.table_metadata(&name("shop.accounts"));
    let entries = history(&m).expect("history");
    assert_eq!(entries.len(), 1, "seed {s}: {entries:?}");
    assert_eq!(entries[0].detected, "pull", "seed {s}: the change was not found at start: {entries:?}");
    // Applied before any new snapshot: the first snapshot after the first run already has it.
    let snaps = snapshots(&m);
    assert!(snaps.len() > before, "seed {s}: the second run committed nothing");
    assert_eq!(snaps[before].0, entries[0].new_schema_id, "seed {s}: the first new snapshot predates the schema");
    spark_reads_the_model(&full);
}

fn scratch_snapshot_count(scratch: &Scratch, table: &str) -> usize {
    snapshots(&scratch.table_metadata(&name(table))).len()
}

#[test]
fn a_transform_written_for_a_fixed_row_type_is_told_when_the_schema_moves_on() {
    let s = seed();
    let steps = vec![SchemaStep::add_column(1_500, 0, "tier", GenType::Str)];
    let scratch = Scratch::new(spec(s, 3_000, steps), &pipeline(150, "additive"));
    let columns: Vec<&str> = GenTable::accounts().columns.iter().map(|c| c.name).collect();
    let result = floe_pipelines::api::Pipeline::new("evolve")
        .relative_to(scratch.path())
        .warehouse("warehouse")
        .replay("changes.jsonl")
        .commit_every(150)
        .workers(2)
        .table("shop.inventory.accounts", |t| {
            t.base("shop.accounts").cdc("shop_cdc.accounts").buckets(4).transform_for(&columns, |_| true)
        })
        .run();
    let e = result.expect_err("the schema moved away from the transform's row type").to_string();
    assert!(
        e.contains("transform is written for") && e.contains("tier"),
        "seed {s}: the error must name both row types: {e}"
    );
    // Nothing from the epoch that needed the new column on was committed.
    let m = scratch.table_metadata(&name("shop.accounts"));
    assert!(m.current_schema().field_by_name("tier").is_none(), "seed {s}: the evolved schema was committed");
}
