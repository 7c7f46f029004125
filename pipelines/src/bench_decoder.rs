//! `floe bench decoder`: the decode core alone, on one core, in events/s: the specialised
//! fast path and the serde fallback, on the benchmark workload's records written in
//! several JSON layouts, and the replay path (kcat line parse, then decode).
//!
//! ```text
//!   Generator(bench workload) ──► records ──► layout (compact │ spaced │ reordered │ payload first)
//!        ──► TableDecoder::decode, fast path on │ off, `rounds` times ──► median events/s
//!   kcat lines ──► KcatParser::parse ──► decode (shared schema prefix) ──► events/s
//! ```
//!
//! # Invariants
//! - Every layout decodes to the same typed rows as the compact layout (checked before
//!   timing; digests differ because the image text differs), and no record is a dead letter.
//! - Records are built before each timed round; only parse and decode are timed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::record::SourceRecord;
use floe_engine::schema_drift::SchemaPolicy;
use floe_harness::generator::{Generator, KafkaRecord, WorkloadSpec};
use floe_harness::kcat::kcat_line;
use floe_operators::debezium::{Decoded, TableDecoder};
use floe_operators::kcat_line::KcatParser;
use floe_operators::schema_versions::SchemaVersions;
use serde_json::Value as Json;

/// What to run.
#[derive(Clone, Debug)]
pub struct DecoderBenchOptions {
    /// Records per layout.
    pub records: u64,
    /// Workload seed.
    pub seed: u64,
    /// Timed rounds per case (median reported).
    pub rounds: usize,
}

/// A JSON layout of the same records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Kafka Connect's JsonConverter: no whitespace, `schema` first.
    Compact,
    /// `json.dumps` defaults: a space after every `:` and `,`.
    Spaced,
    /// Compact, with the fields of `payload` and of `source` in reverse order.
    Reordered,
    /// Spaced and reordered, `payload` before `schema`.
    PayloadFirst,
}

impl Layout {
    const ALL: [Layout; 4] = [Layout::Compact, Layout::Spaced, Layout::Reordered, Layout::PayloadFirst];

    fn name(self) -> &'static str {
        match self {
            Layout::Compact => "compact (Connect)",
            Layout::Spaced => "spaced (json.dumps)",
            Layout::Reordered => "fields reordered",
            Layout::PayloadFirst => "payload first, spaced",
        }
    }

    fn write(self, value: &str) -> String {
        let json: Json = serde_json::from_str(value).unwrap_or(Json::Null);
        let json = match self {
            Layout::Compact | Layout::Spaced => json,
            Layout::Reordered => reorder(json, false),
            Layout::PayloadFirst => reorder(json, true),
        };
        if matches!(self, Layout::Compact | Layout::Reordered) {
            return json.to_string();
        }
        let mut out = Vec::with_capacity(value.len() * 5 / 4);
        // Serializing a `Value` into a `Vec` cannot fail, and its output is UTF-8.
        let _ = serde::Serialize::serialize(&json, &mut serde_json::Serializer::with_formatter(&mut out, Spaced));
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `payload` (and its `source`) with fields reversed; `payload` first if asked.
fn reorder(json: Json, payload_first: bool) -> Json {
    let Json::Object(top) = json else { return json };
    let reverse = |m: serde_json::Map<String, Json>| m.into_iter().rev().collect::<serde_json::Map<String, Json>>();
    let mut out: serde_json::Map<String, Json> = top
        .into_iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("payload", Json::Object(payload)) => {
                let mut payload = reverse(payload);
                if let Some(Json::Object(source)) = payload.remove("source") {
                    payload.insert("source".into(), Json::Object(reverse(source)));
                }
                (k, Json::Object(payload))
            }
            (_, v) => (k, v),
        })
        .collect();
    if payload_first {
        out = reverse(out);
    }
    Json::Object(out)
}

/// `json.dumps`' default separators: a space after every `:` and `,`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
}

fn decoder(fast: bool) -> TableDecoder {
    let table = floe_harness::tables::GenTable::accounts();
    let versions = SchemaVersions::new(Arc::new(table.table_schema()), BTreeSet::new());
    TableDecoder::new(0, &table.topic, versions, false, SchemaPolicy::Additive, None).with_fast_path(fast)
}

fn source_records(records: &[KafkaRecord], layout: Layout) -> Vec<SourceRecord> {
    records
        .iter()
        .map(|r| {
            let value = r.value.as_deref().map(|v| layout.write(v).into_bytes());
            SourceRecord::new(0, r.partition, r.offset, r.key.clone().map(String::into_bytes), value)
        })
        .collect()
}

/// Decodes `records`; returns seconds, and the typed rows (with digests cleared) when asked.
fn decode_all(
    decoder: &mut TableDecoder,
    records: Vec<SourceRecord>,
    keep: bool,
) -> Result<(f64, Vec<floe_operators::debezium::Event>)> {
    let mut kept = Vec::new();
    let started = Instant::now();
    for record in records {
        match decoder.decode(record, 0) {
            Decoded::Event(mut e) if keep => {
                e.before_digest = None;
                e.after_digest = None;
                kept.push(e);
            }
            Decoded::Event(e) => drop(std::hint::black_box(e)),
            Decoded::Tombstone => {}
            Decoded::Dead(d) => {
                return Err(internal(format!("record at offset {} is a dead letter: {}", d.offset, d.reason)));
            }
            other => return Err(internal(format!("unexpected decode result {other:?}"))),
        }
    }
    Ok((started.elapsed().as_secs_f64(), kept))
}

fn internal(message: String) -> Error {
    Error::new(ErrorKind::Internal, message)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs the benchmark and returns the report.
pub fn bench_decoder(options: &DecoderBenchOptions) -> Result<String> {
    let records: Vec<KafkaRecord> =
        Generator::new(WorkloadSpec::bench(options.seed, options.records, options.records / 10)).collect();
    let n = records.len() as f64;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "decoder micro-benchmark: {} records of the benchmark workload (seed {}), one core, median of {} rounds",
        records.len(),
        options.seed,
        options.rounds.max(1)
    );
    let _ = writeln!(
        report,
        "{:<24} {:>10} {:>14} {:>14} {:>8}",
        "layout", "bytes/rec", "fast ev/s", "fallback ev/s", "speedup"
    );
    let (_, reference) = decode_all(&mut decoder(false), source_records(&records, Layout::Compact), true)?;
    let mut compact_fast = 0.0;
    for layout in Layout::ALL {
        let sample = source_records(&records, layout);
        let bytes = sample.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum::<usize>() as f64 / n;
        for fast in [true, false] {
            let (_, rows) = decode_all(&mut decoder(fast), sample.clone(), true)?;
            if rows != reference {
                return Err(internal(format!("layout `{}` decodes to other rows", layout.name())));
            }
        }
        drop(sample);
        let mut rates = [0.0; 2];
        for (slot, fast) in [true, false].into_iter().enumerate() {
            let mut times = Vec::new();
            for _ in 0..options.rounds.max(1) {
                let input = source_records(&records, layout);
                let mut d = decoder(fast);
                times.push(decode_all(&mut d, input, false)?.0);
            }
            rates[slot] = n / median(times);
        }
        if layout == Layout::Compact {
            compact_fast = rates[0];
        }
        let _ = writeln!(
            report,
            "{:<24} {:>10.0} {:>14.0} {:>14.0} {:>7.2}x   ({:.0}% of compact fast)",
            layout.name(),
            bytes,
            rates[0],
            rates[1],
            rates[0] / rates[1],
            100.0 * rates[0] / compact_fast
        );
    }
    // The replay path: each kcat line parsed (cached escaped prefix), then decoded.
    let lines: Vec<String> = records.iter().map(kcat_line).collect();
    let mut times = Vec::new();
    for _ in 0..options.rounds.max(1) {
        let mut parser = KcatParser::new();
        let mut d = decoder(true);
        let started = Instant::now();
        for line in &lines {
            let r = parser.parse(line.as_bytes()).map_err(internal)?;
            let record = SourceRecord {
                key_prefix: r.key_prefix,
                value_prefix: r.value_prefix,
                ..SourceRecord::new(0, r.partition, r.offset, r.key, r.value)
            };
            if let Decoded::Dead(dead) = d.decode(record, 0) {
                return Err(internal(format!("replay line is a dead letter: {}", dead.reason)));
            }
        }
        times.push(started.elapsed().as_secs_f64());
    }
    let bytes = lines.iter().map(String::len).sum::<usize>() as f64 / n;
    let _ = writeln!(
        report,
        "{:<24} {:>10.0} {:>14.0}   (kcat line parse + decode)",
        "replay line",
        bytes,
        n / median(times)
    );
    Ok(report)
}
