//! The Kafka source against a real Kafka-protocol broker (tansu, sqlite storage) on
//! loopback: exactly-once under SIGKILL, broker outages and lost commit responses;
//! Kafka and replay runs of the same records agree; `floe record` captures what a live run
//! reads; an independent client (kafka-python) agrees with floe about the topic.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use floe_engine::config::TableName;
use floe_harness::WorkloadSpec;
use floe_harness::generator::Generator;
use floe_pipelines::runner::RunOptions;
use floe_tests::broker::Broker;
use floe_tests::produce::produce;
use floe_tests::{Scratch, kafka_pipeline_toml, kill_at_random_moments, pipeline_toml, python, seed};
use rand::{Rng, SeedableRng};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");
const TOPICS: [&str; 2] = ["shop.inventory.orders", "shop.inventory.order_lines"];

/// A broker in the scratch folder with the workload's topics created and produced.
fn broker_with(scratch: &Scratch, spec: &WorkloadSpec) -> Broker {
    let broker = Broker::start(&scratch.path().join("broker"));
    for t in TOPICS {
        broker.create_topic(t, spec.partitions);
    }
    let n = produce(&broker.address(), Generator::new(spec.clone()));
    assert_eq!(n, scratch.records, "seed {}: produced a different number of records than logged", scratch.seed);
    broker
}

fn floe_run(scratch: &Scratch, faults: Option<&str>) -> Command {
    let mut c = Command::new(FLOE);
    c.arg("run").arg(scratch.pipeline()).arg("--until-caught-up");
    c.stdout(Stdio::null()).stderr(Stdio::piped()).env("RUST_LOG", "warn");
    if let Some(f) = faults {
        c.env("FLOE_FAULTS", f);
    }
    c
}

fn finish(scratch: &Scratch, child: Child) {
    let out = child.wait_with_output().expect("wait for floe");
    assert!(out.status.success(), "seed {}: floe failed: {}", scratch.seed, String::from_utf8_lossy(&out.stderr));
}

fn sorted_rows(scratch: &Scratch, table: &str) -> Vec<String> {
    let mut rows: Vec<String> =
        scratch.read(&TableName::parse(table).expect("name")).rows.iter().map(|r| format!("{r:?}")).collect();
    rows.sort();
    rows
}

fn until_caught_up() -> RunOptions {
    RunOptions { until_caught_up: true, ..Default::default() }
}

#[test]
fn kafka_and_replay_runs_make_the_same_commits_and_a_recording_replays_the_same() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 20_000);
    let kafka = Scratch::new(spec.clone(), "");
    let broker = broker_with(&kafka, &spec);
    std::fs::write(kafka.pipeline(), kafka_pipeline_toml(&broker.address(), 400, 2)).expect("pipeline");

    let outcome = kafka.run_with(until_caught_up());
    assert_eq!(
        floe_engine::metrics::Metrics::get(&outcome.metrics.records_in),
        kafka.records,
        "seed {s}: the run read a different number of records than the topics hold"
    );
    kafka.assert_tables_equal_model();

    // Replay of the generator's log: same contents, same commits.
    let replay = kafka.with_pipeline(&pipeline_toml(400, 2));
    replay.run();
    replay.assert_tables_equal_model();
    assert_eq!(
        kafka.snapshot_summaries(),
        replay.snapshot_summaries(),
        "seed {s}: Kafka and replay runs committed different epochs or offsets"
    );
    for t in ["shop.orders", "shop.order_lines", "shop_cdc.orders", "shop_cdc.order_lines"] {
        assert!(sorted_rows(&kafka, t) == sorted_rows(&replay, t), "seed {s}: {t} differs between Kafka and replay");
    }

    // `floe record` captures the topics; a replay of the recording builds the same tables.
    let recorded = kafka.with_pipeline(&pipeline_toml(400, 2));
    let log = std::fs::File::create(recorded.path().join("changes.jsonl")).expect("log");
    let out = Command::new(FLOE)
        .args(["record", "--brokers", &broker.address(), "--topic", TOPICS[0], "--topic", TOPICS[1]])
        .stdout(log)
        .stderr(Stdio::piped())
        .output()
        .expect("floe record");
    assert!(out.status.success(), "seed {s}: floe record failed: {}", String::from_utf8_lossy(&out.stderr));
    recorded.run();
    recorded.assert_tables_equal_model();
    assert_eq!(recorded.snapshot_counts(), kafka.snapshot_counts(), "seed {s}: the recording replays differently");

    // A second Kafka run finds nothing new and commits nothing.
    kafka.run_with(until_caught_up());
    assert_eq!(kafka.snapshot_counts(), replay.snapshot_counts(), "seed {s}: a caught-up rerun committed again");
}

#[test]
fn sigkill_loop_during_a_long_kafka_ingest_loses_and_duplicates_nothing() {
    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let spec = WorkloadSpec { snapshot_rows: 2_000, ..WorkloadSpec::standard(s, 200_000) };
    let scratch = Scratch::new(spec.clone(), "");
    let broker = broker_with(&scratch, &spec);
    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 2_000, 2)).expect("pipeline");

    // Crash points first (between files and commit, inside a commit, after the pointer
    // swap), then SIGKILL at random moments.
    let mut kills = 0;
    for fault in ["files-written:3", "commit-before-swap:2", "commit-after-swap:3", "commit-after-swap:8"] {
        let out = floe_run(&scratch, Some(fault)).output().expect("floe");
        assert!(!out.status.success(), "seed {s}: floe should have crashed at {fault}");
        kills += 1;
    }
    kills += kill_at_random_moments(
        20,
        Duration::from_secs(300),
        || Duration::from_millis(rng.random_range(200..2_500)),
        || floe_run(&scratch, None).spawn().expect("spawn floe"),
    );
    assert!(kills >= 24, "seed {s}: only {kills} kills landed");
    finish(&scratch, floe_run(&scratch, None).spawn().expect("spawn floe"));
    // Both tables equal the model; compare_cdc checks each (partition, offset) once.
    scratch.assert_tables_equal_model();
}

#[test]
fn broker_unreachable_at_start_and_bounced_mid_ingest_loses_nothing() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 60_000);
    let scratch = Scratch::new(spec.clone(), "");
    let mut broker = broker_with(&scratch, &spec);
    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 500, 2)).expect("pipeline");

    // Unreachable at start: floe retries until the broker is back.
    broker.stop();
    let child = floe_run(&scratch, None).spawn().expect("spawn floe");
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    // Mid-ingest bounce, once some epochs are committed.
    let started = Instant::now();
    while scratch.committed(&TableName::parse("shop_cdc.orders").expect("name")).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(120), "seed {s}: nothing committed within 120s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut child = child;
    assert!(
        child.try_wait().expect("poll").is_none(),
        "seed {s}: floe finished before the bounce; make the ingest longer"
    );
    broker.stop();
    std::thread::sleep(Duration::from_secs(4));
    broker.restart();
    let out = child.wait_with_output().expect("wait for floe");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed {s}: floe failed: {log}");
    assert!(log.contains("Kafka broker unreachable"), "seed {s}: no clear retry line: {log}");
    scratch.assert_tables_equal_model();
}

#[test]
fn a_lost_commit_response_is_detected_from_the_snapshot_summary() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 8_000);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = broker_with(&scratch, &spec);
    let toml = kafka_pipeline_toml(&broker.address(), 250, 2);
    std::fs::write(scratch.pipeline(), &toml).expect("pipeline");
    for fault in ["commit-after-swap:2", "commit-after-swap:7"] {
        let out = floe_run(&scratch, Some(fault)).output().expect("floe");
        assert!(!out.status.success(), "seed {s}: floe should have died at {fault}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("commit-after-swap"), "seed {s}: died elsewhere");
    }
    finish(&scratch, floe_run(&scratch, None).spawn().expect("spawn floe"));
    scratch.assert_tables_equal_model();
    let clean = scratch.with_pipeline(&toml);
    clean.run_with(until_caught_up());
    assert_eq!(scratch.snapshot_counts(), clean.snapshot_counts(), "seed {s}: an epoch was committed twice");
}

#[test]
fn sigterm_commits_what_is_closed_and_exits_zero() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 10_000);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = broker_with(&scratch, &spec);
    // A continuous run (no --until-caught-up), epochs closed by time when idle.
    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 100_000, 2)).expect("pipeline");
    let child = Command::new(FLOE)
        .arg("run")
        .arg(scratch.pipeline())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn floe");
    // Everything gets committed by time (commit_every is larger than any partition).
    let started = Instant::now();
    loop {
        let committed: i64 = ["shop_cdc.orders", "shop_cdc.order_lines"]
            .iter()
            .map(|t| {
                scratch.committed(&TableName::parse(t).expect("name")).0.values().flat_map(|p| p.values()).sum::<i64>()
            })
            .sum();
        if committed == scratch.records as i64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "seed {s}: idle epochs were not closed by time");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "seed {s}: SIGTERM should exit 0: {}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("consumer lag at exit"), "seed {s}: no lag in the summary: {summary}");
    scratch.assert_tables_equal_model();
}

#[test]
fn the_stop_flag_ends_a_continuous_run_and_a_restart_resumes() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 6_000);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = broker_with(&scratch, &spec);
    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 300, 1)).expect("pipeline");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    scratch.run_with(RunOptions { stop: Some(stop), ..Default::default() });
    stopper.join().expect("stopper");
    // Whatever the first run committed, the second picks up exactly after it.
    scratch.run_with(until_caught_up());
    scratch.assert_tables_equal_model();
}

#[test]
fn kafka_python_agrees_with_floe_as_producer_and_consumer() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 5_000);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = Broker::start(&scratch.path().join("broker"));
    for t in TOPICS {
        broker.create_topic(t, spec.partitions);
    }
    // kafka-python produces the generator's log (so floe's input never came from rdkafka)...
    let script = r#"
import json, sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
brokers, log, dump = sys.argv[1], sys.argv[2], sys.argv[3]
producer = KafkaProducer(bootstrap_servers=brokers, acks="all", max_in_flight_requests_per_connection=1, retries=5)
for line in open(log, encoding="utf-8"):
    r = json.loads(line)
    k = r["key"].encode() if r["key"] is not None else None
    v = r["payload"].encode() if r["payload"] is not None else None
    md = producer.send(r["topic"], key=k, value=v, partition=r["partition"], timestamp_ms=r["ts"]).get(timeout=60)
    assert md.offset == r["offset"], (r["topic"], r["partition"], md.offset, r["offset"])
producer.flush()
# ...and consumes everything back, for comparison with `floe record`.
consumer = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
parts = [TopicPartition(t, p) for t in sorted({json.loads(l)["topic"] for l in open(log)}) for p in consumer.partitions_for_topic(t)]
consumer.assign(parts)
consumer.seek_to_beginning()
ends = consumer.end_offsets(parts)
out = {}
while any(consumer.position(p) < ends[p] for p in parts):
    for tp, msgs in consumer.poll(timeout_ms=1000).items():
        for m in msgs:
            out[f"{m.topic}/{m.partition}/{m.offset}"] = [m.key.decode() if m.key is not None else None, m.value.decode() if m.value is not None else None]
json.dump({"ends": {f"{p.topic}/{p.partition}": ends[p] for p in parts}, "records": out}, open(dump, "w"))
"#;
    let dump = scratch.path().join("python.json");
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(broker.address())
        .arg(scratch.path().join("changes.jsonl"))
        .arg(&dump)
        .output()
        .expect("python");
    assert!(out.status.success(), "seed {s}: kafka-python failed: {}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 200, 2)).expect("pipeline");
    scratch.run_with(until_caught_up());
    scratch.assert_tables_equal_model();

    // floe's recording and kafka-python's consumer see the same records and end offsets.
    let out = Command::new(FLOE)
        .args(["record", "--brokers", &broker.address(), "--topic", TOPICS[0], "--topic", TOPICS[1]])
        .output()
        .expect("floe record");
    assert!(out.status.success(), "seed {s}: floe record failed: {}", String::from_utf8_lossy(&out.stderr));
    let dump: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).expect("dump")).expect("json");
    let theirs = dump["records"].as_object().expect("records");
    let mut ends: BTreeMap<String, i64> = BTreeMap::new();
    let mut ours = 0;
    for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("kcat json");
        let id = format!("{}/{}/{}", r["topic"].as_str().expect("topic"), r["partition"], r["offset"]);
        assert_eq!(
            theirs.get(&id),
            Some(&serde_json::json!([r["key"], r["payload"]])),
            "seed {s}: record {id} differs"
        );
        let end = ends.entry(format!("{}/{}", r["topic"].as_str().expect("topic"), r["partition"])).or_default();
        *end = (*end).max(r["offset"].as_i64().expect("offset") + 1);
        ours += 1;
    }
    assert_eq!(ours, theirs.len(), "seed {s}: floe record and kafka-python saw different record counts");
    for (p, end) in dump["ends"].as_object().expect("ends") {
        assert_eq!(ends.get(p).copied().unwrap_or(0), end.as_i64().expect("end"), "seed {s}: end offset of {p}");
    }
}

#[test]
fn pull_detection_reads_the_newest_record_of_each_partition_from_the_broker() {
    use floe_harness::SchemaStep;
    use floe_harness::columns::GenType;
    let s = seed();
    let spec = WorkloadSpec {
        schema_steps: vec![SchemaStep::add_column(2_900, 0, "tier", GenType::Str)],
        ..WorkloadSpec::standard(s, 3_000)
    };
    let scratch = Scratch::new(spec.clone(), "");
    let records: Vec<_> = Generator::new(spec.clone()).collect();
    let cut = records
        .iter()
        .position(|r| r.value.as_deref().is_some_and(|v| v.contains("\"field\":\"tier\"")))
        .unwrap_or_else(|| panic!("seed {s}: no record carries the new column"));
    let broker = Broker::start(&scratch.path().join("broker"));
    for t in TOPICS {
        broker.create_topic(t, spec.partitions);
    }
    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 200, 2)).expect("pipeline");
    produce(&broker.address(), records[..cut].to_vec());
    scratch.run_with(until_caught_up());
    // Upstream added the column and wrote a few rows with it; floe finds it at start, by
    // reading the newest record of each partition, before it consumes anything.
    produce(&broker.address(), records[cut..].to_vec());
    scratch.run_with(until_caught_up());
    scratch.assert_tables_equal_model();
    let orders = scratch.table_metadata(&TableName::parse("shop.orders").expect("name"));
    let entries = floe_engine::schema_audit::history(&orders).expect("history");
    assert_eq!(entries.len(), 1, "seed {s}: {entries:?}");
    assert_eq!(entries[0].detected, "pull", "seed {s}: {entries:?}");
    assert!(orders.current_schema().field_by_name("tier").is_some(), "seed {s}");
}
