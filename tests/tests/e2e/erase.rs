//! Compliance erasure (`floe erase`): the rows of chosen keys go from the base and CDC
//! tables, and no byte of their values is left in any file under the tables' locations,
//! whichever delete mode wrote them; the tables equal the model less those keys; a crash at
//! any moment of the erasure (fault points and kill -9 at random) loses nothing, and running
//! it again finishes it; the pipeline restarts after it exactly-once; a running pipeline
//! erases through its own committer while it goes on ingesting.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::cleanup::{list_files, local_path, retained};
use floe_engine::config::TableName;
use floe_engine::manifests::ManifestCache;
use floe_engine::runtime::IoRuntime;
use floe_engine::value::{Row, Value};
use floe_harness::WorkloadSpec;
use floe_harness::tables::GenTable;
use floe_harness::verify::batch_rows;
use floe_tests::{Scratch, replay_pipeline, seed};
use iceberg::spec::{Manifest, PrimitiveLiteral};
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");

fn spec(seed: u64, events: u64) -> WorkloadSpec {
    WorkloadSpec { tables: vec![GenTable::order_lines(), GenTable::accounts()], ..WorkloadSpec::standard(seed, events) }
}

/// `accounts` in position mode, `order_lines` (composite key) in equality mode; many
/// snapshots kept, so the erasure has old snapshots to expire.
fn pipeline(commit_every: u64) -> String {
    let table = |name: &str, deletes: &str| {
        format!(
            r#"
[[tables]]
topic = "shop.inventory.{name}"
base = "shop.{name}"
cdc = "shop_cdc.{name}"
buckets = 4
deletes = "{deletes}"

[tables.maintenance]
keep_snapshots = 40
snapshot_max_age = "24h"
"#
        )
    };
    replay_pipeline("erase", commit_every, 2, &[table("accounts", "position"), table("order_lines", "equality")])
}

/// A key to erase: its model row and its `--key` text.
struct Chosen {
    topic: String,
    table: TableName,
    keys: Vec<(Row, String)>,
}

impl Chosen {
    /// `keys` of table `t`, with their `--key` texts.
    fn of(t: &floe_engine::config::TableConfig, keys: Vec<&Row>) -> Chosen {
        let text = |k: &Row| match &k.0[..] {
            [Value::Long(v)] => v.to_string(),
            [Value::String(region), Value::Int(line)] => serde_json::json!([region, line]).to_string(),
            other => panic!("unexpected key {other:?}"),
        };
        Chosen {
            topic: t.topic.clone(),
            table: t.base.clone().expect("base"),
            keys: keys.into_iter().map(|k| (k.clone(), text(k))).collect(),
        }
    }
}

/// Keys of each table: some live at the end, some deleted by then.
fn choose(scratch: &Scratch, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<Chosen> {
    let mut out = Vec::new();
    for t in &scratch.config().tables {
        let model = scratch.model.table(&t.topic).expect("model");
        let all: BTreeSet<&Row> = model.cdc_keys.values().collect();
        let live: Vec<&Row> = all.iter().copied().filter(|k| model.rows.contains_key(*k)).collect();
        let gone: Vec<&Row> = all.iter().copied().filter(|k| !model.rows.contains_key(*k)).collect();
        assert!(live.len() >= 3 && !gone.is_empty(), "seed {}: the workload has too few keys", scratch.seed);
        let mut keys: Vec<&Row> = live.into_iter().choose_multiple(rng, 3);
        keys.extend(gone.into_iter().choose_multiple(rng, 2));
        out.push(Chosen::of(t, keys));
    }
    out
}

fn tables(scratch: &Scratch) -> Vec<TableName> {
    scratch.config().tables.iter().flat_map(|t| t.base.clone().into_iter().chain(t.cdc.clone())).collect()
}

/// The strings (six bytes or longer) of the CDC tables' rows now: those of the erased keys'
/// rows, and those of every other row.
fn cdc_strings(scratch: &Scratch, chosen: &[Chosen]) -> (HashSet<String>, HashSet<String>) {
    let mut mine = HashSet::new();
    let mut others = HashSet::new();
    for (t, c) in scratch.config().tables.iter().zip(chosen) {
        let model = scratch.model.table(&t.topic).expect("model");
        let read = scratch.read(t.cdc.as_ref().expect("cdc"));
        let key_at: Vec<usize> =
            model.schema.key.iter().map(|&k| read.position(&model.schema.columns[k].name).expect("key")).collect();
        let erased: BTreeSet<&Row> = c.keys.iter().map(|(k, _)| k).collect();
        for row in &read.rows {
            let key = Row::new(key_at.iter().map(|&i| row.0[i].clone()).collect());
            let set = if erased.contains(&key) { &mut mine } else { &mut others };
            set.extend(row.0.iter().filter_map(|v| match v {
                Value::String(s) if s.len() >= 6 => Some(s.clone()),
                _ => None,
            }));
        }
    }
    (mine, others)
}

/// Strings that only rows of the erased keys held (in the CDC table's history, read before
/// the erasure), six bytes or longer.
fn unique_strings(scratch: &Scratch, chosen: &[Chosen]) -> HashSet<String> {
    let (mut mine, others) = cdc_strings(scratch, chosen);
    mine.retain(|s| !others.contains(s));
    mine
}

/// Leaves out of `unique` the strings rows of other keys hold in the CDC tables now (events
/// committed after `unique` was taken may repeat a value).
fn still_unique(scratch: &Scratch, chosen: &[Chosen], unique: &mut HashSet<String>) {
    let (_, others) = cdc_strings(scratch, chosen);
    unique.retain(|s| !others.contains(s));
}

/// Scans every file under every table's location, referenced or not: Parquet files cell by
/// cell (a row whose key columns hold an erased key; any cell holding a unique string),
/// manifests bound by bound, everything else byte by byte. Returns what it found.
fn traces(scratch: &Scratch, chosen: &[Chosen], unique: &HashSet<String>) -> Vec<String> {
    let config = scratch.config();
    let runtime = IoRuntime::new(1).expect("runtime");
    let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
    let mut found = Vec::new();
    for (t, c) in config.tables.iter().zip(chosen) {
        let model = scratch.model.table(&t.topic).expect("model");
        let key_names: Vec<&str> = model.schema.key.iter().map(|&k| model.schema.columns[k].name.as_str()).collect();
        let erased: BTreeSet<&Row> = c.keys.iter().map(|(k, _)| k).collect();
        for name in t.base.iter().chain(t.cdc.iter()) {
            let state = runtime.block_on(catalog.load(&ident(name))).expect("load").expect("table");
            for (path, _, _) in list_files(Path::new(local_path(state.metadata.location()))) {
                let text = path.to_string_lossy().to_string();
                if text.ends_with(".parquet") {
                    let file = std::fs::File::open(&path).expect("open");
                    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .expect("parquet")
                        .build()
                        .expect("reader");
                    for batch in reader {
                        let batch = batch.expect("batch");
                        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
                        let key_at: Option<Vec<usize>> =
                            key_names.iter().map(|k| names.iter().position(|n| n == k)).collect();
                        for row in batch_rows(&batch).expect("rows") {
                            if let Some(at) = &key_at {
                                let key = Row::new(at.iter().map(|&i| row.0[i].clone()).collect());
                                if erased.contains(&key) {
                                    found.push(format!("{text}: a row of key {key}"));
                                }
                            }
                            for v in row.0.iter() {
                                if let Value::String(s) = v
                                    && unique.contains(s)
                                {
                                    found.push(format!("{text}: the value {s:?}"));
                                }
                            }
                        }
                    }
                } else if text.ends_with(".avro") {
                    let bytes = std::fs::read(&path).expect("read");
                    let Ok(manifest) = Manifest::parse_avro(&bytes) else { continue };
                    for entry in manifest.entries() {
                        let f = entry.data_file();
                        for d in f.lower_bounds().values().chain(f.upper_bounds().values()) {
                            if let PrimitiveLiteral::String(s) = d.literal()
                                && unique.contains(s)
                            {
                                found.push(format!("{text}: a bound {s:?}"));
                            }
                        }
                        for (key, _) in &c.keys {
                            if let [Value::Long(id)] = &key.0[..] {
                                let bound = |m: &std::collections::HashMap<i32, iceberg::spec::Datum>| {
                                    m.values().any(|d| d.literal() == &PrimitiveLiteral::Long(*id))
                                };
                                if bound(f.lower_bounds()) || bound(f.upper_bounds()) {
                                    found.push(format!("{text}: a bound {id}"));
                                }
                            }
                        }
                    }
                } else {
                    let bytes = std::fs::read(&path).expect("read");
                    for s in unique {
                        if bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
                            found.push(format!("{text}: the bytes of {s:?}"));
                        }
                    }
                }
            }
        }
    }
    found
}

fn erase(scratch: &Scratch, chosen: &Chosen, faults: Option<&str>) -> std::process::Output {
    let mut c = Command::new(FLOE);
    c.arg("erase").arg(scratch.pipeline()).arg(chosen.table.to_string()).args(["--wait", "120s", "--key"]);
    for (_, text) in &chosen.keys {
        c.arg(text);
    }
    c.env("RUST_LOG", "error");
    if let Some(f) = faults {
        c.env("FLOE_FAULTS", f);
    }
    c.output().expect("spawn floe erase")
}

/// Every file a retained snapshot (or the metadata log) references exists.
fn assert_nothing_referenced_is_gone(scratch: &Scratch, context: &str) {
    let config = scratch.config();
    let runtime = IoRuntime::new(1).expect("runtime");
    let catalog = runtime.block_on(SqlTableCatalog::open(&config.catalog)).expect("catalog");
    for name in tables(scratch) {
        let state = runtime.block_on(catalog.load(&ident(&name))).expect("load").expect("table");
        let keep = runtime
            .block_on(retained(catalog.file_io(), &state.metadata, &state.metadata_location, ManifestCache::global()))
            .expect("retained");
        for f in keep {
            assert!(Path::new(&f).exists(), "seed {}: {context}: {name}: {f} is referenced but gone", scratch.seed);
        }
    }
}

fn erase_from_model(scratch: &mut Scratch, chosen: &[Chosen]) {
    for c in chosen {
        let keys: BTreeSet<Row> = c.keys.iter().map(|(k, _)| k.clone()).collect();
        let table = scratch.model.tables.iter_mut().find(|t| t.topic == c.topic).expect("model");
        table.erase(&keys);
    }
}

#[test]
fn erasure_leaves_no_byte_of_the_keys_in_any_file_and_the_tables_equal_the_model_less_them() {
    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let mut scratch = Scratch::new(spec(s, 6_000), &pipeline(40));
    scratch.run();
    scratch.assert_tables_equal_model();
    let chosen = choose(&scratch, &mut rng);
    let unique = unique_strings(&scratch, &chosen);
    assert!(!unique.is_empty(), "seed {s}: the erased keys hold no value of their own to look for");
    assert!(!traces(&scratch, &chosen, &unique).is_empty(), "seed {s}: the scan finds the keys before the erasure");
    for c in &chosen {
        let out = erase(&scratch, c, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "seed {s}: floe erase failed: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{stdout}");
        assert!(stdout.contains("floe.erasure.") && stdout.contains("\"clean\":true"), "seed {s}: {stdout}");
    }
    let left = traces(&scratch, &chosen, &unique);
    assert!(left.is_empty(), "seed {s}: erased values are left: {left:#?}");
    erase_from_model(&mut scratch, &chosen);
    scratch.assert_tables_equal_model();
    assert_nothing_referenced_is_gone(&scratch, "after the erasure");
    // The audit entry is in the table's properties, without the keys.
    for c in &chosen {
        let metadata = scratch.table_metadata(&c.table);
        let audit: Vec<&String> =
            metadata.properties().iter().filter(|(k, _)| k.starts_with("floe.erasure.")).map(|(_, v)| v).collect();
        assert_eq!(audit.len(), 1, "seed {s}: one audit entry");
        assert!(audit[0].contains("\"rows_found\":0") && audit[0].contains("\"keys\":5"), "{}", audit[0]);
        for (_, text) in &c.keys {
            assert!(!audit[0].contains(text.as_str()), "seed {s}: the audit names a key");
        }
    }
    // A restart resumes exactly-once from the offsets the erasure's snapshots carried.
    scratch.run();
    scratch.assert_tables_equal_model();
}

#[test]
fn a_crash_at_any_moment_of_an_erasure_loses_nothing_and_a_rerun_finishes_it() {
    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let mut scratch = Scratch::new(spec(s, 3_000), &pipeline(50));
    scratch.run();
    let chosen = choose(&scratch, &mut rng);
    let unique = unique_strings(&scratch, &chosen);
    let points = [
        "erase-rewritten:1",
        "rewrite-before-swap:1",
        "rewrite-after-swap:1",
        "expire-before-cleanup:1",
        "cleanup-midway:1",
        "erase-before-proof:1",
    ];
    let mut crashed = 0;
    for point in points {
        for c in &chosen {
            let out = erase(&scratch, c, Some(point));
            if out.status.success() {
                continue;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(point.split(':').next().unwrap_or_default()), "seed {s}: {point}: {stderr}");
            crashed += 1;
            assert_nothing_referenced_is_gone(&scratch, point);
        }
    }
    assert!(crashed >= 2 * 3, "seed {s}: only {crashed} crashes");
    // And kill -9 at random moments.
    let mut kills = 0;
    for c in &chosen {
        kills += floe_tests::kill_at_random_moments(
            3,
            std::time::Duration::from_secs(30),
            || std::time::Duration::from_millis(rng.random_range(20..400)),
            || {
                let mut cmd = Command::new(FLOE);
                cmd.arg("erase").arg(scratch.pipeline()).arg(c.table.to_string()).arg("--key");
                cmd.args(c.keys.iter().map(|(_, t)| t.as_str()));
                cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                cmd.spawn().expect("spawn floe erase")
            },
        );
        assert_nothing_referenced_is_gone(&scratch, "after kill -9");
    }
    eprintln!("seed {s}: {crashed} crashes at fault points, {kills} random kills landed");
    // Whatever the crashes left, the tables hold the model's rows (erased or not yet).
    for t in tables(&scratch) {
        let _ = scratch.read(&t);
    }
    for c in &chosen {
        let out = erase(&scratch, c, None);
        assert!(out.status.success(), "seed {s}: the rerun failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let left = traces(&scratch, &chosen, &unique);
    assert!(left.is_empty(), "seed {s}: erased values are left: {left:#?}");
    erase_from_model(&mut scratch, &chosen);
    scratch.assert_tables_equal_model();
    assert_nothing_referenced_is_gone(&scratch, "after the rerun");
}

/// The same tables read from a Kafka-protocol broker, committed every few records and
/// every half second.
fn kafka_pipeline(brokers: &str) -> String {
    pipeline(30).replace(
        "[source]\nkind = \"replay\"\npath = \"changes.jsonl\"\n",
        &format!("[source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ncommit_interval_ms = 500\n"),
    )
}

/// Sum of the offsets the CDC tables committed.
fn committed_records(scratch: &Scratch) -> i64 {
    scratch
        .config()
        .tables
        .iter()
        .filter_map(|t| t.cdc.clone())
        .map(|t| scratch.committed(&t).0.values().flat_map(|p| p.values()).sum::<i64>())
        .sum()
}

fn wait_for_commits(scratch: &Scratch, records: i64, context: &str) {
    let started = std::time::Instant::now();
    while committed_records(scratch) < records {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "seed {}: {context}: {} of {records} records committed",
            scratch.seed,
            committed_records(scratch)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_running_pipeline_erases_through_its_own_committer_while_it_goes_on_ingesting() {
    use floe_harness::generator::{Generator, KafkaRecord};
    use floe_tests::broker::Broker;
    use floe_tests::produce::produce;
    use std::process::Stdio;

    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let spec = spec(s, 8_000);
    let mut scratch = Scratch::new(spec.clone(), "");
    let broker = Broker::start(&scratch.path().join("broker"));
    for t in ["shop.inventory.accounts", "shop.inventory.order_lines"] {
        broker.create_topic(t, spec.partitions);
    }
    std::fs::write(scratch.pipeline(), kafka_pipeline(&broker.address())).expect("pipeline");
    let records: Vec<KafkaRecord> = Generator::new(spec).collect();
    let half = records.len() / 2;
    let (first, second) = records.split_at(half);
    produce(&broker.address(), first.to_vec());
    let mut floe = Command::new(FLOE)
        .arg("run")
        .arg(scratch.pipeline())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn floe run");
    wait_for_commits(&scratch, half as i64, "the first half");

    // Keys whose every event is in the first half: nothing of them arrives later.
    let early: HashSet<(String, i32, i64)> = first.iter().map(|r| (r.topic.clone(), r.partition, r.offset)).collect();
    let mut chosen = Vec::new();
    for t in &scratch.config().tables {
        let model = scratch.model.table(&t.topic).expect("model");
        let mut late: BTreeSet<&Row> = BTreeSet::new();
        for ((p, o), k) in &model.cdc_keys {
            if !early.contains(&(t.topic.clone(), *p, *o)) {
                late.insert(k);
            }
        }
        let candidates: BTreeSet<&Row> = model.cdc_keys.values().filter(|k| !late.contains(*k)).collect();
        let keys: Vec<&Row> = candidates.into_iter().choose_multiple(&mut rng, 5);
        assert!(keys.len() == 5, "seed {s}: too few keys only the first half touches");
        chosen.push(Chosen::of(t, keys));
    }
    let unique = unique_strings(&scratch, &chosen);
    assert!(!unique.is_empty(), "seed {s}: the erased keys hold no value of their own to look for");

    // The second half arrives while the erasures run.
    let address = broker.address();
    let rest = second.to_vec();
    let producer = std::thread::spawn(move || {
        for chunk in rest.chunks(rest.len() / 8 + 1) {
            produce(&address, chunk.to_vec());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    for c in &chosen {
        let out = erase(&scratch, c, None);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "seed {s}: floe erase failed: {stderr}");
        eprintln!("{stderr}{stdout}");
        assert!(stderr.contains("its committer carries out request"), "seed {s}: the pipeline did not erase: {stderr}");
        assert!(stdout.contains("\"clean\":true"), "seed {s}: {stdout}");
    }
    producer.join().expect("producer");
    let t0 = std::time::Instant::now();
    wait_for_commits(&scratch, records.len() as i64, "everything");
    eprintln!("seed {s}: caught up {:.1}s after the producer finished", t0.elapsed().as_secs_f64());
    let _ = Command::new("kill").arg("-TERM").arg(floe.id().to_string()).status();
    let status = floe.wait().expect("wait for floe run");
    let mut stderr = String::new();
    if let Some(mut e) = floe.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "seed {s}: floe run failed: {stderr}");
    eprintln!("seed {s}: stopped {:.1}s after the producer finished", t0.elapsed().as_secs_f64());

    let mut unique = unique;
    still_unique(&scratch, &chosen, &mut unique);
    assert!(!unique.is_empty(), "seed {s}: every value of the erased keys came back with other keys");
    let left = traces(&scratch, &chosen, &unique);
    assert!(left.is_empty(), "seed {s}: erased values are left: {left:#?}");
    erase_from_model(&mut scratch, &chosen);
    scratch.assert_tables_equal_model();
    assert_nothing_referenced_is_gone(&scratch, "after the online erasure");
}
