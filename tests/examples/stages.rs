//! Ad-hoc stage timing of the replay + decode path (single thread).
#![allow(clippy::unwrap_used)] // a developer tool: any failure should stop it loudly
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use floe_engine::schema::TableSchema;
use floe_harness::tables::GenTable;
use floe_operators::debezium::{Decoded, TableDecoder};
use floe_operators::replay_log::{PartitionCursor, ReplayIndex};
use floe_operators::upsert::Upsert;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let topics = HashMap::from([("shop.inventory.accounts".to_string(), 0u32)]);
    let t = Instant::now();
    let mut index = ReplayIndex::build(&path).unwrap();
    index.assign(&topics);
    println!("index: {:?} for {} records", t.elapsed(), index.len());
    let schema: TableSchema = GenTable::accounts().table_schema();
    let mut d = TableDecoder::new(
        0,
        "shop.inventory.accounts",
        floe_operators::schema_versions::SchemaVersions::new(Arc::new(schema), Default::default()),
        false,
        floe_engine::schema_drift::SchemaPolicy::Additive,
        None,
    );
    let (mut read_t, mut decode_t, mut up_t, mut clone_t) = (0f64, 0f64, 0f64, 0f64);
    let mut n = 0;
    let mut misses = 0;
    for p in &index.partitions {
        let mut c = PartitionCursor::open(&index, p, None);
        loop {
            let t = Instant::now();
            let Some(r) = c.read().unwrap() else { break };
            if r.value.is_some() && r.value_prefix.is_none() {
                misses += 1;
            }
            read_t += t.elapsed().as_secs_f64();
            n += 1;
            let t = Instant::now();
            let decoded = d.decode(r, 0);
            decode_t += t.elapsed().as_secs_f64();
            if let Decoded::Event(e) = decoded {
                let t = Instant::now();
                let c2 = e.clone();
                clone_t += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let u = Upsert::from_event(e, true);
                up_t += t.elapsed().as_secs_f64();
                drop((u, c2));
            }
        }
    }
    let us = |x: f64| x * 1e6 / n as f64;
    println!("prefix cache misses: {misses}");
    println!(
        "per record: read+parse line {:.2} us, decode {:.2} us, upsert {:.2} us, clone event {:.2} us",
        us(read_t),
        us(decode_t),
        us(up_t),
        us(clone_t)
    );
}
