//! What the engine's integration tests share: a SQLite catalog in a scratch folder, and the
//! one-column table they commit to.

use floe_engine::catalog::{TableCatalog, TableState};
use floe_engine::config::CatalogConfig;
use floe_engine::schema::{Column, ColumnType, TableSchema};
use iceberg::TableCreation;
use iceberg::spec::UnboundPartitionSpec;

/// A SQLite catalog (and warehouse) in `dir`.
pub fn catalog_config(dir: &std::path::Path) -> CatalogConfig {
    CatalogConfig {
        name: "floe".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: dir.join("warehouse").display().to_string(),
    }
}

/// Creates `ns.t`, unpartitioned, with one required `id` bigint key.
pub async fn create_table(catalog: &dyn TableCatalog) -> TableState {
    let schema =
        TableSchema::new(vec![Column { name: "id".into(), ty: ColumnType::Long, nullable: false }], &["id".into()])
            .expect("schema")
            .base_schema()
            .expect("iceberg schema");
    let creation = TableCreation::builder()
        .name("t".into())
        .schema(schema)
        .partition_spec(UnboundPartitionSpec::builder().with_spec_id(0).build())
        .build();
    catalog.create("ns", creation).await.expect("create")
}
