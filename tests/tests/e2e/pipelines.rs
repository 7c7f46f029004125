//! Pipeline variants: schemaless topics with declared columns, and pipelines declared
//! through the Rust API with a user transform.

use floe_engine::config::TableName;
use floe_engine::value::{Row, Value};
use floe_harness::WorkloadSpec;
use floe_harness::verify::{compare_base, compare_cdc};
use floe_pipelines::api::Pipeline;
use floe_tests::{Scratch, pipeline_toml, seed};

#[test]
fn schemaless_topics_use_the_declared_columns() {
    let s = seed();
    let mut spec = WorkloadSpec::standard(s, 4_000);
    spec.schemaless = vec![1];
    let toml = pipeline_toml(200, 2).replace(
        "buckets = 4\n",
        "buckets = 4\nkey = [\"region\", \"line_no\"]\ncolumns = [\n  { name = \"region\", type = \"string\", nullable = false },\n  { name = \"line_no\", type = \"int\", nullable = false },\n  { name = \"sku\", type = \"string\", nullable = false },\n  { name = \"qty\", type = \"int\" },\n  { name = \"price\", type = \"decimal(10, 2)\" },\n  { name = \"comment\", type = \"string\" },\n]\n",
    );
    let scratch = Scratch::new(spec, &toml);
    scratch.run();
    scratch.assert_tables_equal_model();
}

#[test]
fn the_rust_api_runs_a_pipeline_with_a_transform() {
    let s = seed();
    let scratch = Scratch::new(WorkloadSpec::standard(s, 3_000), &pipeline_toml(200, 2));
    let outcome = Pipeline::new("api")
        .relative_to(scratch.path())
        .warehouse("warehouse")
        .replay("changes.jsonl")
        .commit_every(200)
        .workers(2)
        .table("shop.inventory.orders", |t| t.base("shop.orders").cdc("shop_cdc.orders").buckets(8))
        .table("shop.inventory.order_lines", |t| {
            t.base("shop.order_lines").buckets(4).transform(|row| {
                let upper = row.get_str("sku").map(str::to_uppercase);
                match upper {
                    Some(sku) => row.set("sku", Value::String(sku)).is_ok(),
                    None => true,
                }
            })
        })
        .run()
        .unwrap_or_else(|e| panic!("seed {s}: {e}"));
    assert!(floe_engine::metrics::Metrics::get(&outcome.metrics.commits) > 0);

    let orders = scratch.model.table("shop.inventory.orders").expect("model");
    let read = |n: &str, t: &str| scratch.read(&TableName { namespace: n.into(), name: t.into() });
    compare_base(orders, &read("shop", "orders")).unwrap_or_else(|d| panic!("seed {s}: {d}"));
    compare_cdc(orders, &read("shop_cdc", "orders")).unwrap_or_else(|d| panic!("seed {s}: {d}"));
    // The transformed table equals the model with the same transform applied.
    let mut lines = scratch.model.table("shop.inventory.order_lines").expect("model").clone();
    let sku = lines.schema.position("sku").expect("sku");
    for row in lines.rows.values_mut() {
        let mut values = row.0.to_vec();
        if let Value::String(s) = &values[sku] {
            values[sku] = Value::String(s.to_uppercase());
        }
        *row = Row::new(values);
    }
    compare_base(&lines, &read("shop", "order_lines")).unwrap_or_else(|d| panic!("seed {s}: {d}"));
}
