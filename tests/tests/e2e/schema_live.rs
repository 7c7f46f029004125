//! Schema evolution inside one continuous Kafka run (a real broker on loopback, floe as a
//! child process): an approved table resumes without a restart, and the periodic pull
//! evolves a lagging table ahead of its stream.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use floe_engine::config::TableName;
use floe_engine::schema_audit::{history, pending};
use floe_harness::columns::GenType;
use floe_harness::generator::Generator;
use floe_harness::{KafkaRecord, SchemaEdit, SchemaStep, WorkloadSpec};
use floe_tests::broker::Broker;
use floe_tests::produce::produce;
use floe_tests::{Scratch, accounts_pipeline, accounts_spec, seed};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");

/// How long any one condition may take before the test gives up (not a performance bound:
/// a generous ceiling so a broken pipeline fails instead of hanging).
const PATIENCE: Duration = Duration::from_secs(180);

fn name(text: &str) -> TableName {
    TableName::parse(text).expect("name")
}

/// The shared schema-evolution pipeline on a continuous Kafka source, with a small
/// in-flight window.
fn pipeline(brokers: &str, commit_every: u64, extra_source: &str, policy: &str) -> String {
    let source = format!("kind = \"kafka\"\nbrokers = \"{brokers}\"\ncommit_interval_ms = 300\n{extra_source}");
    accounts_pipeline("live", commit_every, "max_inflight_epochs = 2", &source, policy)
}

fn spec(seed: u64, events: u64, steps: Vec<SchemaStep>) -> WorkloadSpec {
    accounts_spec(seed, events, steps)
}

fn broker(scratch: &Scratch, spec: &WorkloadSpec) -> Broker {
    let broker = Broker::start(&scratch.path().join("broker"));
    for t in ["shop.inventory.accounts", "shop.inventory.order_lines"] {
        broker.create_topic(t, spec.partitions);
    }
    broker
}

/// `floe run` without `--until-caught-up`; its output goes to `floe.log` in the scratch.
fn spawn_floe(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("floe.log")).expect("log");
    Command::new(FLOE)
        .arg("run")
        .arg("pipeline.toml")
        .current_dir(dir)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn floe")
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("floe.log")).unwrap_or_default()
}

/// Waits until `done()`; on timeout, kills floe and fails with `what` and its log.
fn wait_for(scratch: &Scratch, child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().expect("poll floe") {
            panic!(
                "seed {}: floe exited ({status}) while waiting for {what}:\n{}",
                scratch.seed,
                log_of(scratch.path())
            );
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let tables: Vec<String> = scratch
                .config()
                .tables
                .iter()
                .flat_map(|t| [t.base.clone(), t.cdc.clone()])
                .flatten()
                .map(|t| format!("{t}: {:?}", scratch.committed(&t)))
                .collect();
            panic!(
                "seed {}: gave up waiting for {what}; committed:\n{}\n{}",
                scratch.seed,
                tables.join("\n"),
                log_of(scratch.path())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records per (topic, partition): where a table that has everything is committed up to.
fn ends(records: &[KafkaRecord]) -> BTreeMap<(String, i32), i64> {
    let mut out = BTreeMap::new();
    for r in records {
        let end = out.entry((r.topic.clone(), r.partition)).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    out
}

/// Whether `table` has committed every record of `topic`.
fn caught_up(scratch: &Scratch, table: &str, topic: &str, ends: &BTreeMap<(String, i32), i64>) -> bool {
    let committed = scratch.committed(&name(table));
    ends.iter().filter(|((t, _), _)| t == topic).all(|((t, p), end)| committed.get(t, *p) == Some(*end))
}

/// `floe status`: each table's schema → plan → data convergence (printed for the record).
fn status(scratch: &Scratch) -> String {
    let out =
        Command::new(FLOE).args(["status", "pipeline.toml"]).current_dir(scratch.path()).output().expect("floe status");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "seed {}: floe status failed: {}",
        scratch.seed,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    text
}

fn sigterm(scratch: &Scratch, child: Child) -> String {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let out = child.wait_with_output().expect("wait for floe");
    let log = log_of(scratch.path());
    assert!(out.status.success(), "seed {}: SIGTERM must end the run with 0 ({}):\n{log}", scratch.seed, out.status);
    log
}

/// A write lock on the SQLite catalog, held by another process (Python's sqlite3) until
/// dropped: floe's commits wait on it (its busy timeout and retries ride it out).
struct CatalogLock(Child);

impl CatalogLock {
    fn take(db: &Path) -> CatalogLock {
        use std::io::BufRead;
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                      c.execute('BEGIN IMMEDIATE')\n\
                      print('locked', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = Command::new(floe_tests::python())
            .arg("-c")
            .arg(script)
            .arg(db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn python");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "locked", "could not lock the catalog");
        CatalogLock(child)
    }
}

impl Drop for CatalogLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn an_approved_table_resumes_in_the_running_process() {
    let s = seed();
    let steps = vec![SchemaStep { at: 3_000, table: 0, edit: SchemaEdit::Drop("email") }];
    let spec = spec(s, 7_000, steps);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = broker(&scratch, &spec);
    let records: Vec<KafkaRecord> = Generator::new(spec.clone()).collect();
    let ends = ends(&records);
    produce(&broker.address(), records);
    std::fs::write(scratch.pipeline(), pipeline(&broker.address(), 150, "", "additive")).expect("pipeline");

    let mut child = spawn_floe(scratch.path());
    // The accounts table pauses at the drop and records it for review; order_lines goes on.
    wait_for(&scratch, &mut child, "the pause to be recorded", || {
        let m = scratch.try_table_metadata(&name("shop.accounts"));
        m.is_some_and(|m| pending(&m).ok().flatten().is_some())
    });
    wait_for(&scratch, &mut child, "the other table to ingest everything", || {
        caught_up(&scratch, "shop.order_lines", "shop.inventory.order_lines", &ends)
            && caught_up(&scratch, "shop_cdc.order_lines", "shop.inventory.order_lines", &ends)
    });
    assert!(
        !caught_up(&scratch, "shop.accounts", "shop.inventory.accounts", &ends),
        "seed {s}: the paused table committed past its pause"
    );

    let out = Command::new(FLOE)
        .args(["schema", "approve", "pipeline.toml", "shop.accounts"])
        .current_dir(scratch.path())
        .output()
        .expect("approve");
    assert!(out.status.success(), "seed {s}: approve failed: {}", String::from_utf8_lossy(&out.stderr));

    // The running process notices, plans again and resumes the table from its offsets.
    wait_for(&scratch, &mut child, "the approved table to resume and catch up", || {
        caught_up(&scratch, "shop.accounts", "shop.inventory.accounts", &ends)
            && caught_up(&scratch, "shop_cdc.accounts", "shop.inventory.accounts", &ends)
    });
    let log = sigterm(&scratch, child);
    assert!(log.contains("1 approved tables resumed in-process"), "seed {s}: no in-process resume:\n{log}");
    scratch.assert_tables_equal_model();
    let text = status(&scratch);
    assert!(text.contains("converged") && !text.contains("paused"), "seed {s}:\n{text}");
    let m = scratch.table_metadata(&name("shop.accounts"));
    let entries = history(&m).expect("history");
    assert_eq!(entries.len(), 1, "seed {s}: {entries:?}");
    assert!(entries[0].approval.starts_with("approved by "), "seed {s}: {entries:?}");
}

#[test]
fn a_pull_during_the_run_evolves_a_lagging_table_ahead_of_its_stream() {
    let s = seed();
    let events = 6_000;
    let steps = vec![SchemaStep::add_column(events - 100, 0, "tier", GenType::Str)];
    let spec = spec(s, events, steps);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = broker(&scratch, &spec);
    let records: Vec<KafkaRecord> = Generator::new(spec.clone()).collect();
    let ends = ends(&records);
    let cut = records
        .iter()
        .position(|r| r.value.as_deref().is_some_and(|v| v.contains("\"field\":\"tier\"")))
        .unwrap_or_else(|| panic!("seed {s}: no record carries the new column"));
    let carriers: BTreeMap<i32, i64> = records[cut..]
        .iter()
        .filter(|r| r.topic == "shop.inventory.accounts" && r.value.as_deref().is_some_and(|v| v.contains("\"tier\"")))
        .fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.partition).or_insert(r.offset);
            m
        });
    produce(&broker.address(), records[..cut].to_vec());
    let toml = pipeline(&broker.address(), 25, "schema_pull_interval_ms = 100", "additive");
    std::fs::write(scratch.pipeline(), toml).expect("pipeline");

    let mut child = spawn_floe(scratch.path());
    wait_for(&scratch, &mut child, "the first commit", || !scratch.committed(&name("shop.accounts")).0.is_empty());
    // A slow catalog: another writer holds its lock, so commits wait and the stream, at
    // most `max_inflight_epochs` ahead of them, lags far behind the topic.
    let lock = CatalogLock::take(&scratch.path().join("warehouse/catalog.db"));
    // Upstream adds the column meanwhile: the pull sees it in the newest records and
    // evolves the tables before the stream gets there.
    produce(&broker.address(), records[cut..].to_vec());
    wait_for(&scratch, &mut child, "the pull to find the new column", || {
        log_of(scratch.path()).contains("pull: the source's schema moved on")
    });
    drop(lock);
    let everything = format!("everything to be committed (ends {ends:?})");
    wait_for(&scratch, &mut child, &everything, || {
        ["shop.accounts", "shop_cdc.accounts"].iter().all(|t| caught_up(&scratch, t, "shop.inventory.accounts", &ends))
            && ["shop.order_lines", "shop_cdc.order_lines"]
                .iter()
                .all(|t| caught_up(&scratch, t, "shop.inventory.order_lines", &ends))
    });
    let log = sigterm(&scratch, child);
    scratch.assert_tables_equal_model();
    let text = status(&scratch);
    assert!(text.contains("converged"), "seed {s}:\n{text}");

    for table in ["shop.accounts", "shop_cdc.accounts"] {
        let m = scratch.table_metadata(&name(table));
        let entries = history(&m).expect("history");
        assert_eq!(entries.len(), 1, "seed {s}: {table}: the change is recorded once: {entries:?}");
        assert_eq!(entries[0].detected, "pull", "seed {s}: {table}: {entries:?}\n{log}");
        let tier = m.current_schema().field_by_name("tier");
        assert!(tier.is_some_and(|f| !f.required), "seed {s}: {table} lacks the optional column");
        // Evolved ahead: the schema is current before the first snapshot with a row that has
        // the column, and it came in a metadata-only commit (no snapshot carries the change).
        let mut snaps: Vec<_> = m.snapshots().collect();
        snaps.sort_by_key(|x| x.sequence_number());
        let first_with_column = snaps
            .iter()
            .find(|x| {
                let offsets = x.summary().additional_properties.get("floe.offsets").cloned().unwrap_or_default();
                let offsets = floe_engine::offsets::SourceOffsets::from_json(&offsets).unwrap_or_default();
                carriers.iter().any(|(p, o)| offsets.get("shop.inventory.accounts", *p).is_some_and(|next| next > *o))
            })
            .unwrap_or_else(|| panic!("seed {s}: {table}: no snapshot covers a row with the column"));
        assert_eq!(first_with_column.schema_id(), Some(entries[0].new_schema_id), "seed {s}: {table}: zero gap");
        let described: Vec<String> = snaps
            .iter()
            .map(|x| {
                let p = &x.summary().additional_properties;
                format!(
                    "seq {} schema {:?} epoch {:?} change {:?}",
                    x.sequence_number(),
                    x.schema_id(),
                    p.get("floe.epoch"),
                    p.get("floe.schema-change")
                )
            })
            .collect();
        assert!(
            snaps.iter().all(|x| !x.summary().additional_properties.contains_key("floe.schema-change")),
            "seed {s}: {table}: the pulled schema should land on its own, not with data: {entries:?}\n{}\n{log}",
            described.join("\n")
        );
    }
}
