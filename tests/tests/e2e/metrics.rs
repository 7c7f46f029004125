//! Prometheus metrics on `floe run --metrics-addr`: a scrape of a live Kafka run reports the
//! events read, the epoch commit latency, consumer lag and every table's health; an
//! address that cannot be served fails the run at once, naming it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floe_harness::WorkloadSpec;
use floe_harness::generator::Generator;
use floe_tests::broker::Broker;
use floe_tests::produce::produce;
use floe_tests::{Scratch, kafka_pipeline_toml, seed};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");

fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics address");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `line_start` (metric name and labels) in a scrape.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn a_live_run_serves_ingestion_commit_latency_and_table_health() {
    let s = seed();
    let spec = WorkloadSpec::standard(s, 6_000);
    let scratch = Scratch::new(spec.clone(), "");
    let broker = Broker::start(&scratch.path().join("broker"));
    for t in ["shop.inventory.orders", "shop.inventory.order_lines"] {
        broker.create_topic(t, spec.partitions);
    }
    produce(&broker.address(), Generator::new(spec));
    std::fs::write(scratch.pipeline(), kafka_pipeline_toml(&broker.address(), 200, 2)).expect("pipeline");
    let mut child = Command::new(FLOE)
        .args(["run".as_ref(), scratch.pipeline().as_os_str(), "--metrics-addr".as_ref(), "127.0.0.1:0".as_ref()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn floe run");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("floe run said where it serves metrics").expect("line");
        if let Some(rest) = line.strip_prefix("floe: metrics on http://") {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    let text = loop {
        let text = scrape(&addr);
        let committed = sample(&text, "floe_events_total").unwrap_or_default() as u64 == scratch.records
            && sample(&text, "floe_table_snapshots{table=\"shop_cdc.orders\"}").is_some_and(|v| v > 0.0);
        if committed {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "seed {s}: the run did not catch up: {text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(child.wait().expect("wait").success(), "seed {s}: floe run failed");
    eprintln!("{text}");
    assert!(sample(&text, "floe_epoch_commit_seconds_count").is_some_and(|n| n >= 1.0), "seed {s}: {text}");
    assert!(text.contains("floe_consumer_lag{topic=\"shop.inventory.orders\""), "seed {s}: no lag: {text}");
    for table in ["shop.orders", "shop.order_lines", "shop_cdc.orders", "shop_cdc.order_lines"] {
        let at = |name: &str| sample(&text, &format!("{name}{{table=\"{table}\"}}"));
        assert!(at("floe_table_data_files").is_some_and(|v| v > 0.0), "seed {s}: {table}: {text}");
        assert!(at("floe_table_bytes").is_some_and(|v| v > 0.0), "seed {s}: {table}: {text}");
        assert!(at("floe_table_metadata_bytes").is_some_and(|v| v > 0.0), "seed {s}: {table}: {text}");
        assert!(at("floe_table_delete_entries_per_row").is_some(), "seed {s}: {table}: {text}");
        assert!(at("floe_table_events_total").is_some_and(|v| v > 0.0), "seed {s}: {table}: {text}");
    }
}

#[test]
fn an_address_that_cannot_be_served_fails_the_run_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let scratch = Scratch::new(WorkloadSpec::standard(seed(), 100), &floe_tests::pipeline_toml(50, 1));
    let out = Command::new(FLOE)
        .args(["run".as_ref(), scratch.pipeline().as_os_str(), "--metrics-addr".as_ref(), addr.as_ref()])
        .output()
        .expect("spawn floe run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--metrics-addr") && stderr.contains(&addr), "{stderr}");
}
