//! A seeded, stable-toolchain fuzzer for the two parsers that read untrusted bytes: the
//! decoder (record key + value → `Decoded`) and the replay line parser.
//!
//! ```text
//!   corpus: the generator's records (both tables, bad records included) and their kcat lines
//!     ──► mutate (flip, insert, delete, duplicate, splice, deep nesting, huge numbers, truncate)
//!     ──► decode / parse under catch_unwind, timed
//! ```
//!
//! # Invariants checked
//! - No input panics either parser.
//! - No single input takes longer than `HANG` (a hang, or work far beyond its size).
//!
//! The budget is `FLOE_FUZZ_SECONDS` (default 20 s, what CI runs); the seed is
//! `FLOE_SEED` or random, and printed with every failure:
//!
//! ```sh
//! FLOE_FUZZ_SECONDS=600 cargo nextest run --release -p floe-tests -E 'test(fuzz)' --no-capture
//! ```

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_engine::record::SourceRecord;
use floe_engine::schema_drift::SchemaPolicy;
use floe_harness::kcat::kcat_line;
use floe_harness::{Generator, WorkloadSpec};
use floe_operators::debezium::{Decoded, TableDecoder};
use floe_operators::kcat_line::KcatParser;
use floe_operators::schema_versions::SchemaVersions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A corpus entry: table index, key bytes, value bytes, the record's kcat line.
type Seed = (usize, Vec<u8>, Vec<u8>, Vec<u8>);

/// The longest one input may take.
const HANG: Duration = Duration::from_secs(2);
/// Inputs are capped at this size: the fuzzer looks for bugs, not for slow big inputs.
const MAX_INPUT: usize = 1 << 16;

fn budget() -> Duration {
    let seconds = std::env::var("FLOE_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(seconds)
}

fn seed() -> u64 {
    std::env::var("FLOE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random())
}

/// One mutation of `input`, with `other` for splices.
fn mutate(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        let at = if len == 0 { 0 } else { rng.random_range(0..len) };
        match rng.random_range(0..9) {
            0 if len > 0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out.insert(at, rng.random()),
            2 if len > 0 => {
                let end = (at + rng.random_range(1..16)).min(len);
                out.drain(at..end);
            }
            3 if len > 0 => {
                let end = (at + rng.random_range(1..64)).min(len);
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let end = (from + rng.random_range(1..256)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            5 => {
                let depth = rng.random_range(1..400);
                let open = if rng.random_bool(0.5) { b'[' } else { b'{' };
                out.splice(at..at, std::iter::repeat_n(open, depth));
            }
            6 => {
                let numbers: [&[u8]; 6] =
                    [b"99999999999999999999999999", b"-1e999", b"1.5e308", b"-0", b"18446744073709551616", b"NaN"];
                out.splice(at..at, numbers[rng.random_range(0..numbers.len())].iter().copied());
            }
            7 => {
                let specials: [&[u8]; 6] = [b"\\", b"\\u", b"\\ud800", b"\"", b"\xff\xfe", b"null"];
                out.splice(at..at, specials[rng.random_range(0..specials.len())].iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// Runs `f` on one input: a panic or a hang fails the test, naming the seed and the input.
fn check<T>(seed: u64, what: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f));
    let took = started.elapsed();
    let shown = String::from_utf8_lossy(&input[..input.len().min(2000)]).into_owned();
    match result {
        Ok(out) if took <= HANG => out,
        Ok(_) => panic!("seed {seed}: {what} took {took:?} on {} bytes: {shown:?}", input.len()),
        Err(_) => panic!("seed {seed}: {what} panicked on: {shown:?}"),
    }
}

#[test]
fn fuzz_the_decoder_and_the_replay_line_parser() {
    let seed = seed();
    eprintln!("fuzz seed {seed} (FLOE_SEED={seed} repeats it), budget {:?}", budget());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut spec = WorkloadSpec::standard(seed, 400);
    spec.p_bad = 0.05;
    spec.p_no_before = 0.2;
    let tables = spec.tables.clone();
    let records: Vec<_> = Generator::new(spec).collect();
    // (table, key, value, kcat line) of each record.
    let corpus: Vec<Seed> = records
        .iter()
        .map(|r| {
            let table = tables.iter().position(|t| t.topic == r.topic).unwrap_or(0);
            let key = r.key.clone().unwrap_or_default().into_bytes();
            let value = r.value.clone().unwrap_or_default().into_bytes();
            (table, key, value, kcat_line(r).into_bytes())
        })
        .collect();
    let decoders = |tables: &[floe_harness::tables::GenTable]| -> Vec<TableDecoder> {
        tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let versions = SchemaVersions::new(Arc::new(t.table_schema()), BTreeSet::new());
                TableDecoder::new(i as u32, &t.topic, versions, i == 0, SchemaPolicy::Additive, None)
            })
            .collect()
    };
    let mut decoder = decoders(&tables);
    let mut parser = KcatParser::new();
    let (started, budget) = (Instant::now(), budget());
    let (mut inputs, mut events, mut dead) = (0u64, 0u64, 0u64);
    while started.elapsed() < budget {
        if inputs % 2_000 == 0 {
            // Mutated schemas evolve the tables; start over now and then so they stay small.
            decoder = decoders(&tables);
        }
        let (table, key, value, line) = &corpus[rng.random_range(0..corpus.len())];
        let (_, _, other_value, other_line) = &corpus[rng.random_range(0..corpus.len())];
        // The decoder: mutate the key, the value, or both.
        let which = rng.random_range(0..3);
        let key = if which != 1 { mutate(&mut rng, key, other_value) } else { key.clone() };
        let value = if which != 0 { mutate(&mut rng, value, other_value) } else { value.clone() };
        let input = [&key[..], b"\n", &value[..]].concat();
        let record = SourceRecord::new(*table as u32, 0, inputs as i64, Some(key), Some(value));
        match check(seed, "the decoder", &input, || decoder[*table].decode(record, 0)) {
            Decoded::Event(_) => events += 1,
            Decoded::Dead(d) => {
                assert!(!d.reason.to_string().is_empty(), "seed {seed}: empty reason");
                dead += 1;
            }
            _ => {}
        }
        // The replay line parser.
        let line = mutate(&mut rng, line, other_line);
        let _ = check(seed, "the replay line parser", &line, || parser.parse(&line).map(|r| r.offset));
        inputs += 1;
    }
    eprintln!("fuzz seed {seed}: {inputs} inputs in {:?} ({events} events, {dead} dead letters)", started.elapsed());
    assert!(inputs > 100, "seed {seed}: the fuzzer ran only {inputs} inputs");
    assert!(events > 0 && dead > 0, "seed {seed}: mutations should yield both events and dead letters");
}
