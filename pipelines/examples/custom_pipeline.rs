//! A pipeline declared in Rust: replay a change log, mask a column on the way, keep a CDC
//! ledger and an upserted mirror of `orders`.
//!
//! ```sh
//! cargo run --release -p floe-pipelines --example custom_pipeline
//! ```
//!
//! It writes a seeded Debezium workload to `./custom-pipeline/changes.jsonl` first, so it
//! runs anywhere; point `.replay(...)` at your own `kcat -C -J` capture instead.

use floe_engine::value::Value;
use floe_harness::WorkloadSpec;
use floe_pipelines::api::Pipeline;
use floe_pipelines::demo::write_workload;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new("custom-pipeline");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    write_workload(WorkloadSpec::standard(1, 20_000), &dir.join("changes.jsonl"))?;

    // The pipeline: source → decode → transform → CDC table and base table.
    let outcome = Pipeline::new("custom")
        .relative_to(dir)
        .warehouse("warehouse")
        .replay("changes.jsonl")
        .table("shop.inventory.orders", |t| {
            t.cdc("ledger.orders").base("mirror.orders").buckets(8).transform(|row| {
                // Keep the free-text note out of the lakehouse; everything else passes.
                row.set("note", Value::Null).is_ok()
            })
        })
        .run()?;

    print!("{}", outcome.metrics.summary());
    println!("tables are in {}/warehouse (SQLite catalog: catalog.db)", dir.display());
    Ok(())
}
