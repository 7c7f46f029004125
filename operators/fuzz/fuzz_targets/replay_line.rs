//! The replay line parser (`kcat -C -J` lines) under libFuzzer.
//!
//! # Invariants checked
//! - No line panics the parser.
//! - Parsing a line with the escaped-prefix cache warm (the same line again, then after a
//!   neighbour that shares its schema) gives the same key and value bytes as parsing it
//!   cold: the cache is an optimisation, never a different answer.
//! - A line the parser accepts is JSON serde_json accepts, with the same partition, offset
//!   and, for a string payload, the same value bytes.
#![no_main]

use floe_operators::kcat_line::{KcatParser, KcatRecord};
use libfuzzer_sys::fuzz_target;

/// (partition, offset, whole key, whole value) of a parsed line.
type Parsed = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn whole(r: &KcatRecord) -> Parsed {
    let join = |prefix: &Option<std::sync::Arc<[u8]>>, rest: &Option<Vec<u8>>| {
        rest.as_ref().map(|rest| [prefix.as_deref().unwrap_or_default(), &rest[..]].concat())
    };
    (r.partition, r.offset, join(&r.key_prefix, &r.key), join(&r.value_prefix, &r.value))
}

fuzz_target!(|line: &[u8]| {
    let mut parser = KcatParser::new();
    let cold = parser.parse(line).map(|r| whole(&r));
    let warm = parser.parse(line).map(|r| whole(&r));
    assert_eq!(cold, warm, "a warm prefix cache changed the result");
    let Ok((partition, offset, _, value)) = cold else { return };
    let reference: serde_json::Value = serde_json::from_slice(line).expect("an accepted line is JSON");
    // `-0` is an integer zero to the parser and a float to serde_json.
    let number = |v: &serde_json::Value| v.as_i64().or_else(|| (v.as_f64() == Some(0.0)).then_some(0));
    assert_eq!(number(&reference["partition"]), Some(i64::from(partition)));
    assert_eq!(number(&reference["offset"]), Some(offset));
    if let Some(payload) = reference["payload"].as_str() {
        assert_eq!(value.as_deref(), Some(payload.as_bytes()), "the payload's bytes");
    }
});
