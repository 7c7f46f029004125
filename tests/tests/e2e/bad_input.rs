//! Bad input gets a clear error and loses nothing: bad records land in the dead-letter
//! table with their exact bytes and a reason; bad configuration names the file and key.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use floe_engine::config::TableName;
use floe_engine::value::Value;
use floe_harness::WorkloadSpec;
use floe_tests::{Scratch, pipeline_toml, seed};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");

#[test]
fn bad_records_go_to_the_dead_letter_table_with_bytes_and_reason() {
    let s = seed();
    let mut spec = WorkloadSpec::standard(s, 5_000);
    spec.p_bad = 0.03;
    let scratch = Scratch::new(spec, &pipeline_toml(200, 2));
    let outcome = scratch.run();
    scratch.assert_tables_equal_model();

    // Every bad record, once, with its reason and its exact value bytes.
    let log = std::fs::read_to_string(scratch.path().join("changes.jsonl")).expect("log");
    let mut raw: BTreeMap<(String, i32, i64), Option<String>> = BTreeMap::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("kcat line");
        let key = (
            v["topic"].as_str().expect("topic").to_string(),
            v["partition"].as_i64().expect("p") as i32,
            v["offset"].as_i64().expect("o"),
        );
        raw.insert(key, v["payload"].as_str().map(str::to_string));
    }
    let dead = scratch.read(&TableName { namespace: "shop".into(), name: "dead_letters".into() });
    let col = |n: &str| dead.position(n).unwrap_or_else(|| panic!("dead-letter column {n}"));
    let mut found: BTreeMap<String, BTreeSet<(i32, i64)>> = BTreeMap::new();
    for row in &dead.rows {
        let (Value::String(topic), Value::Int(p), Value::Long(o)) =
            (&row.0[col("topic")], &row.0[col("partition")], &row.0[col("offset")])
        else {
            panic!("seed {s}: malformed dead letter {row}");
        };
        let Value::String(reason) = &row.0[col("reason")] else { panic!("seed {s}: no reason in {row}") };
        assert!(!reason.is_empty(), "seed {s}: empty reason");
        let Value::String(kind) = &row.0[col("reason_kind")] else { panic!("seed {s}: no reason kind in {row}") };
        let model = scratch.model.tables.iter().find(|t| &t.topic == topic).expect("topic");
        assert_eq!(
            Some(kind.as_str()),
            model.dead_kinds.get(&(*p, *o)).copied(),
            "seed {s}: reason kind of {topic}/{p}/{o} ({reason})"
        );
        if kind == "key_mismatch" {
            assert!(reason.contains("record key is") && reason.contains("row image's key is"), "seed {s}: {reason}");
        }
        let value = match &row.0[col("value")] {
            Value::Binary(b) => Some(String::from_utf8(b.clone()).expect("utf8")),
            _ => None,
        };
        assert_eq!(
            value,
            raw[&(topic.clone(), *p, *o)],
            "seed {s}: dead letter bytes of {topic}/{p}/{o} differ from the record"
        );
        assert!(
            found.entry(topic.clone()).or_default().insert((*p, *o)),
            "seed {s}: {topic}/{p}/{o} dead-lettered twice"
        );
    }
    let mut expected_total = 0;
    for t in &scratch.model.tables {
        expected_total += t.dead_letters.len();
        assert_eq!(
            found.get(&t.topic).cloned().unwrap_or_default(),
            t.dead_letters,
            "seed {s}: dead letters of {}",
            t.topic
        );
    }
    assert!(expected_total > 10, "seed {s}: the workload had bad records");
    assert_eq!(floe_engine::metrics::Metrics::get(&outcome.metrics.dead_letters), expected_total as u64);
    assert!(outcome.metrics.summary().contains(&format!("{expected_total} dead letters")));
    // A re-run neither loses nor repeats a dead letter.
    scratch.run();
    assert_eq!(
        scratch.read(&TableName { namespace: "shop".into(), name: "dead_letters".into() }).rows.len(),
        expected_total
    );
}

#[test]
fn config_errors_name_file_and_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("pipeline.toml");
    let cases = [
        (
            "[source]\nkind = \"replay\"\npath = \"x\"\n[[tables]]\ntopic = \"t\"\nbase = \"a.b\"\nbuckets = \"16\"\n",
            "tables[0].buckets",
        ),
        (
            "[source]\nkind = \"replay\"\npath = \"x\"\n[[tables]]\ntopic = \"t\"\nbase = \"a.b\"\nbukets = 16\n",
            "bukets",
        ),
        ("[source]\nkind = \"replay\"\npath = \"x\"\n[[tables]]\ntopic = \"t\"\nbase = \"nodot\"\n", "tables[0].base"),
        (
            "[pipeline]\ncommit_every = 0\n[source]\nkind = \"replay\"\npath = \"x\"\n[[tables]]\ntopic = \"t\"\nbase = \"a.b\"\n",
            "pipeline.commit_every",
        ),
        ("[source]\nkind = \"replay\"\npath = \"x\"\n[[tables]\n", "invalid TOML"),
    ];
    for (text, key) in cases {
        std::fs::write(&path, text).expect("write");
        let out = Command::new(FLOE).arg("run").arg(&path).output().expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(&path.display().to_string()) && stderr.contains(key), "{key}: {stderr}");
    }
}

#[test]
fn a_replay_log_that_is_not_kcat_output_is_refused_with_its_line() {
    let s = seed();
    let scratch = Scratch::new(WorkloadSpec::standard(s, 200), &pipeline_toml(100, 1));
    let log = scratch.path().join("changes.jsonl");
    let mut text = std::fs::read_to_string(&log).expect("log");
    text.push_str("this is not json\n");
    std::fs::write(&log, text).expect("write");
    let out = Command::new(FLOE).arg("run").arg(scratch.pipeline()).output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("changes.jsonl:") && stderr.contains("not a kcat -J record"), "{stderr}");
}
