//! The decoder under libFuzzer: record key + value bytes (framed by
//! `floe_harness::fuzz_input`) → `Decoded`.
//!
//! # Invariants checked
//! - No input panics the decoder (libFuzzer also reports hangs, `-timeout`, and
//!   allocations past `-malloc_limit_mb`).
//! - The specialised fast path and the serde path alone turn every input into the same
//!   result: the same event, or the same dead-letter reason.
//!
//! Each input gets fresh decoders, so a crash reproduces from its input alone.
#![no_main]

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use floe_engine::schema_drift::SchemaPolicy;
use floe_harness::WorkloadSpec;
use floe_harness::fuzz_input::unframe;
use floe_harness::tables::GenTable;
use floe_operators::debezium::TableDecoder;
use floe_operators::schema_versions::SchemaVersions;
use libfuzzer_sys::fuzz_target;

static TABLES: LazyLock<Vec<GenTable>> = LazyLock::new(|| WorkloadSpec::standard(0, 1).tables);

fn decoder(index: usize, fast: bool) -> TableDecoder {
    let table = &TABLES[index];
    let versions = SchemaVersions::new(Arc::new(table.table_schema()), BTreeSet::new());
    TableDecoder::new(index as u32, &table.topic, versions, index == 0, SchemaPolicy::Additive, None)
        .with_fast_path(fast)
}

fuzz_target!(|data: &[u8]| {
    let input = unframe(data);
    let index = input.table % TABLES.len();
    let record = input.record(index as u32, 0);
    let fast = decoder(index, true).decode(record.clone(), 0);
    let slow = decoder(index, false).decode(record, 0);
    assert_eq!(fast, slow, "the fast path and the serde path disagree");
});
