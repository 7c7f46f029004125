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
//! - The decoder's specialised fast path and its serde path (`with_fast_path(false)`) turn
//!   every input into the same result: the same event, or the same dead-letter reason.
//! - No input allocates more than `ALLOC_PER_BYTE` bytes per input byte (plus
//!   `ALLOC_BASE`) at its peak: allocation is bounded by the input's size.
//!
//! The budget is `FLOE_FUZZ_SECONDS` (default 20 s, what CI runs); the seed is
//! `FLOE_SEED` or random, and printed with every failure:
//!
//! ```sh
//! FLOE_FUZZ_SECONDS=600 cargo nextest run --release -p floe-tests -E 'test(fuzz)' --no-capture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Counts live heap bytes and their peak, so each input's allocation can be bounded.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counters are
// bookkeeping only (the workspace denies unsafe code; a global allocator needs it).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak allocation one input may cause, per input byte…
const ALLOC_PER_BYTE: usize = 64;
/// …plus this.
const ALLOC_BASE: usize = 4 << 20;

/// The bytes `f` allocated at its peak, above what was live when it started.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

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
        match rng.random_range(0..10) {
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
            8 => {
                // Whitespace after a `:` or `,`, as `json.dumps` writes (the fast path's
                // other layouts).
                if let Some(i) = out[at..].iter().position(|b| matches!(b, b':' | b',')) {
                    out.insert(at + i + 1, b' ');
                }
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
    // Each table's decoder twice: the fast path, and the serde path alone.
    let decoders = |tables: &[floe_harness::tables::GenTable]| -> Vec<(TableDecoder, TableDecoder)> {
        let one = |i: usize, t: &floe_harness::tables::GenTable, fast: bool| {
            let versions = SchemaVersions::new(Arc::new(t.table_schema()), BTreeSet::new());
            TableDecoder::new(i as u32, &t.topic, versions, i == 0, SchemaPolicy::Additive, None).with_fast_path(fast)
        };
        tables.iter().enumerate().map(|(i, t)| (one(i, t, true), one(i, t, false))).collect()
    };
    let mut decoder = decoders(&tables);
    let mut worst_ratio = 0.0f64;
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
        let (fast, slow) = &mut decoder[*table];
        let (decoded, grew) = peak_growth(|| check(seed, "the decoder", &input, || fast.decode(record.clone(), 0)));
        let limit = ALLOC_PER_BYTE * input.len() + ALLOC_BASE;
        let shown = || String::from_utf8_lossy(&input[..input.len().min(2000)]).into_owned();
        assert!(grew <= limit, "seed {seed}: one input of {} bytes allocated {grew} bytes: {:?}", input.len(), shown());
        worst_ratio = worst_ratio.max(grew as f64 / input.len().max(1) as f64);
        let reference = check(seed, "the decoder's serde path", &input, || slow.decode(record, 0));
        assert_eq!(decoded, reference, "seed {seed}: the fast path and the serde path disagree on {:?}", shown());
        match decoded {
            Decoded::Event(_) => events += 1,
            Decoded::Dead(d) => {
                assert!(!d.reason.to_string().is_empty(), "seed {seed}: empty reason");
                dead += 1;
            }
            _ => {}
        }
        // The replay line parser.
        let line = mutate(&mut rng, line, other_line);
        let (_, grew) =
            peak_growth(|| check(seed, "the replay line parser", &line, || parser.parse(&line).map(|r| r.offset)));
        assert!(
            grew <= ALLOC_PER_BYTE * line.len() + ALLOC_BASE,
            "seed {seed}: a line of {} bytes allocated {grew}",
            line.len()
        );
        inputs += 1;
    }
    eprintln!(
        "fuzz seed {seed}: {inputs} inputs in {:?} ({events} events, {dead} dead letters; worst peak allocation {worst_ratio:.1} bytes per input byte)",
        started.elapsed()
    );
    assert!(inputs > 100, "seed {seed}: the fuzzer ran only {inputs} inputs");
    assert!(events > 0 && dead > 0, "seed {seed}: mutations should yield both events and dead letters");
}
