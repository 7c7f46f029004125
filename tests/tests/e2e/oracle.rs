//! Oracle tests: seeded workloads through the whole pipeline, tables read back with
//! equality deletes applied and compared with the reference model.

use floe_harness::WorkloadSpec;
use floe_tests::{Scratch, pipeline_toml, seed};

#[test]
fn base_and_cdc_tables_equal_the_model_for_random_seeds() {
    let first = seed();
    for i in 0..4 {
        let s = first.wrapping_add(i);
        eprintln!("seed {s}");
        let scratch = Scratch::new(WorkloadSpec::standard(s, 6_000), &pipeline_toml(200, 2));
        scratch.run();
        scratch.assert_tables_equal_model();
    }
}

#[test]
fn one_and_three_workers_make_identical_tables_and_commit_counts() {
    let s = seed();
    let one = Scratch::new(WorkloadSpec::standard(s, 5_000), &pipeline_toml(300, 1));
    let three = Scratch::new(WorkloadSpec::standard(s, 5_000), &pipeline_toml(300, 3));
    one.run();
    three.run();
    one.assert_tables_equal_model();
    three.assert_tables_equal_model();
    let counts = |sc: &Scratch| sc.snapshots().into_iter().map(|(t, ids)| (t, ids.len())).collect::<Vec<_>>();
    assert_eq!(counts(&one), counts(&three), "seed {s}: 1 and 3 workers commit the same epochs");
}

#[test]
fn running_twice_changes_nothing() {
    let s = seed();
    let scratch = Scratch::new(WorkloadSpec::standard(s, 4_000), &pipeline_toml(100, 2));
    scratch.run();
    let before = scratch.snapshots();
    assert!(before.iter().all(|(_, ids)| ids.len() > 3), "seed {s}: several epochs were committed: {before:?}");
    let again = scratch.run();
    assert_eq!(scratch.snapshots(), before, "seed {s}: a re-run must not commit anything");
    assert_eq!(floe_engine::metrics::Metrics::get(&again.metrics.commits), 0, "seed {s}");
    scratch.assert_tables_equal_model();
}

#[test]
fn a_longer_log_continues_where_the_tables_left_off() {
    let s = seed();
    let scratch = Scratch::new(WorkloadSpec::standard(s, 6_000), &pipeline_toml(250, 2));
    let log = scratch.path().join("changes.jsonl");
    let full = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = full.lines().collect();
    // First run: the first 60% of the log (a prefix of every partition).
    std::fs::write(&log, lines[..lines.len() * 6 / 10].join("\n") + "\n").expect("prefix");
    scratch.run();
    // Second run: the whole log.
    std::fs::write(&log, full).expect("full");
    scratch.run();
    scratch.assert_tables_equal_model();
}
