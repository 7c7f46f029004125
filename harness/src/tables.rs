//! Source tables of generated workloads, and the Debezium messages (JsonConverter with
//! schemas) they produce.
//!
//! Two tables cover the type mapping and keys:
//! - `orders`: single `int64` key, every Connect/Debezium type, nulls and unicode;
//! - `order_lines`: a composite `(region string, line_no int32)` key.

use floe_engine::schema::{Column, TableSchema};
use serde_json::{Map, Value as Json, json};

use crate::columns::{GenColumn, GenType};

/// A generated source table.
#[derive(Clone, Debug)]
pub struct GenTable {
    /// Kafka topic (`server.database.table`).
    pub topic: String,
    /// Database table name.
    pub table: String,
    /// Columns, key columns included.
    pub columns: Vec<GenColumn>,
    /// Positions of the key columns.
    pub key: Vec<usize>,
    /// Positions of columns the source dropped: left out of the messages, null in the
    /// generator's rows (the table keeps them, as `lenient` or an approval does).
    pub dropped: std::collections::BTreeSet<usize>,
    value_schema: String,
    key_schema: String,
}

fn col(name: &'static str, ty: GenType, optional: bool) -> GenColumn {
    GenColumn { name, ty, optional }
}

impl GenTable {
    /// A table named `table` in `shop.inventory`.
    pub fn new(table: &str, columns: Vec<GenColumn>, key: Vec<usize>) -> GenTable {
        let topic = format!("shop.inventory.{table}");
        let mut t = GenTable {
            topic,
            table: table.to_string(),
            columns,
            key,
            dropped: Default::default(),
            value_schema: String::new(),
            key_schema: String::new(),
        };
        t.rebuild();
        t
    }

    /// Recomputes the messages' schemas after a schema change.
    pub fn rebuild(&mut self) {
        self.value_schema = self.build_value_schema().to_string();
        self.key_schema = self.build_key_schema().to_string();
    }

    /// `orders`: an int64 key and one column of every mapped type.
    pub fn orders() -> GenTable {
        use GenType::*;
        GenTable::new(
            "orders",
            vec![
                col("id", Int64, false),
                col("customer", Str, false),
                col("status", Enum, true),
                col("amount", Decimal(12, 2), true),
                col("quantity", Int32, true),
                col("weight", Float64, true),
                col("discount", Float32, true),
                col("flags", Int8, true),
                col("priority", Int16, true),
                col("paid", Boolean, true),
                col("created_at", MicroTimestamp, true),
                col("updated_at", ZonedTimestamp, true),
                col("legacy_ts", DbzTimestamp, true),
                col("nano_ts", NanoTimestamp, true),
                col("connect_ts", ConnectTimestamp, true),
                col("ship_date", DbzDate, true),
                col("connect_date", ConnectDate, true),
                col("slot", DbzTime, true),
                col("slot_us", MicroTime, true),
                col("slot_ns", NanoTime, true),
                col("connect_time", ConnectTime, true),
                col("attrs", Json, true),
                col("tags", EnumSet, true),
                col("ref", Uuid, true),
                col("note", Str, true),
                col("blob", Bytes, true),
                col("big_total", Decimal(38, 6), true),
                col("serial", Int64, true),
            ],
            vec![0],
        )
    }

    /// `order_lines`: a composite (string, int) key.
    pub fn order_lines() -> GenTable {
        use GenType::*;
        GenTable::new(
            "order_lines",
            vec![
                col("region", Str, false),
                col("line_no", Int32, false),
                col("sku", Str, false),
                col("qty", Int16, true),
                col("price", Decimal(10, 2), true),
                col("comment", Str, true),
            ],
            vec![0, 1],
        )
    }

    /// `accounts`: the benchmark table, an int64 key and ten columns of mixed types, the
    /// shape of a typical OLTP row.
    pub fn accounts() -> GenTable {
        use GenType::*;
        GenTable::new(
            "accounts",
            vec![
                col("id", Int64, false),
                col("name", Str, false),
                col("email", Str, true),
                col("balance", Decimal(14, 2), true),
                col("status", Enum, true),
                col("visits", Int32, true),
                col("score", Float64, true),
                col("active", Boolean, true),
                col("created_at", MicroTimestamp, true),
                col("updated_at", ZonedTimestamp, true),
                col("birthday", DbzDate, true),
            ],
            vec![0],
        )
    }

    /// The columns floe should create (Iceberg types), with the key.
    pub fn table_schema(&self) -> TableSchema {
        let columns = self
            .columns
            .iter()
            .map(|c| Column { name: c.name.to_string(), ty: c.ty.column_type(), nullable: c.optional })
            .collect();
        let key: Vec<String> = self.key.iter().map(|&i| self.columns[i].name.to_string()).collect();
        TableSchema::new(columns, &key).unwrap_or_else(|e| panic!("generated table {} is invalid: {e}", self.table))
    }

    fn row_struct(&self, field: &str) -> Json {
        let fields: Vec<Json> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.dropped.contains(i))
            .map(|(_, c)| c.ty.field_schema(c.name, c.optional))
            .collect();
        json!({"type": "struct", "fields": fields, "optional": true, "name": format!("{}.Value", self.topic), "field": field})
    }

    fn build_value_schema(&self) -> Json {
        let source = json!({
            "type": "struct",
            "fields": [
                {"type": "string", "optional": false, "field": "version"},
                {"type": "string", "optional": false, "field": "connector"},
                {"type": "string", "optional": false, "field": "name"},
                {"type": "int64", "optional": false, "field": "ts_ms"},
                {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1, "parameters": {"allowed": "true,last,false,incremental"}, "default": "false", "field": "snapshot"},
                {"type": "string", "optional": false, "field": "db"},
                {"type": "string", "optional": true, "field": "sequence"},
                {"type": "string", "optional": true, "field": "table"},
                {"type": "int64", "optional": false, "field": "server_id"},
                {"type": "string", "optional": true, "field": "gtid"},
                {"type": "string", "optional": false, "field": "file"},
                {"type": "int64", "optional": false, "field": "pos"},
                {"type": "int32", "optional": false, "field": "row"},
                {"type": "int64", "optional": true, "field": "thread"},
                {"type": "string", "optional": true, "field": "query"}
            ],
            "optional": false,
            "name": "io.debezium.connector.mysql.Source",
            "field": "source"
        });
        let transaction = json!({
            "type": "struct",
            "fields": [
                {"type": "string", "optional": false, "field": "id"},
                {"type": "int64", "optional": false, "field": "total_order"},
                {"type": "int64", "optional": false, "field": "data_collection_order"}
            ],
            "optional": true,
            "name": "event.block",
            "version": 1,
            "field": "transaction"
        });
        json!({
            "type": "struct",
            "fields": [
                self.row_struct("before"),
                self.row_struct("after"),
                source,
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"},
                transaction
            ],
            "optional": false,
            "name": format!("{}.Envelope", self.topic),
            "version": 1
        })
    }

    fn build_key_schema(&self) -> Json {
        let fields: Vec<Json> =
            self.key.iter().map(|&i| self.columns[i].ty.field_schema(self.columns[i].name, false)).collect();
        json!({"type": "struct", "fields": fields, "optional": false, "name": format!("{}.Key", self.topic)})
    }

    /// The record key: `{"schema": ..., "payload": {key columns}}`.
    pub fn key_message(&self, key_json: &Map<String, Json>) -> String {
        let payload = Json::Object(key_json.clone()).to_string();
        format!(r#"{{"schema":{},"payload":{payload}}}"#, self.key_schema)
    }

    /// The record value: `{"schema": ..., "payload": {before, after, source, op, ts_ms, transaction}}`.
    pub fn value_message(&self, payload: &Json) -> String {
        format!(r#"{{"schema":{},"payload":{payload}}}"#, self.value_schema)
    }

    /// The schemaless value (JsonConverter with `schemas.enable=false`).
    pub fn schemaless_message(&self, payload: &Json) -> String {
        payload.to_string()
    }
}
