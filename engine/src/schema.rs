//! Table schemas: the column model floe maps sources onto, and the Iceberg schemas and
//! partition specs of the tables it maintains.
//!
//! ```text
//!   Debezium schema / declared columns ──► TableSchema ──► base table  (id 1..n, key = identifier fields)
//!                                                     └──► CDC table   (_op, _source_ts, _kafka_partition,
//!                                                                       _kafka_offset, then the columns)
//! ```
//!
//! # Invariants
//! - Row positions equal `TableSchema::columns` positions, which equal the base table's
//!   field order. When the base table exists, its schema is authoritative
//!   ([`TableSchema::from_base_schema`]); sources are mapped onto it by column name.
//! - Key columns are required in the base table (Iceberg identifier fields must be).
//! - Every source column is optional in the CDC table: a delete event carries only what its
//!   before image holds.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// An Iceberg primitive type that floe reads from sources and writes to tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// boolean
    Boolean,
    /// int
    Int,
    /// long
    Long,
    /// float
    Float,
    /// double
    Double,
    /// decimal(precision, scale)
    Decimal {
        /// Total digits, at most 38.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// date
    Date,
    /// time (microseconds)
    Time,
    /// timestamp without zone (microseconds)
    Timestamp,
    /// timestamp with zone (microseconds, UTC)
    TimestampTz,
    /// string
    String,
    /// binary
    Binary,
}

impl ColumnType {
    /// The Iceberg type.
    pub fn to_iceberg(self) -> PrimitiveType {
        match self {
            ColumnType::Boolean => PrimitiveType::Boolean,
            ColumnType::Int => PrimitiveType::Int,
            ColumnType::Long => PrimitiveType::Long,
            ColumnType::Float => PrimitiveType::Float,
            ColumnType::Double => PrimitiveType::Double,
            ColumnType::Decimal { precision, scale } => PrimitiveType::Decimal { precision, scale },
            ColumnType::Date => PrimitiveType::Date,
            ColumnType::Time => PrimitiveType::Time,
            ColumnType::Timestamp => PrimitiveType::Timestamp,
            ColumnType::TimestampTz => PrimitiveType::Timestamptz,
            ColumnType::String => PrimitiveType::String,
            ColumnType::Binary => PrimitiveType::Binary,
        }
    }

    /// The floe type of an Iceberg primitive, if floe writes it.
    pub fn from_iceberg(ty: &PrimitiveType) -> Option<ColumnType> {
        Some(match ty {
            PrimitiveType::Boolean => ColumnType::Boolean,
            PrimitiveType::Int => ColumnType::Int,
            PrimitiveType::Long => ColumnType::Long,
            PrimitiveType::Float => ColumnType::Float,
            PrimitiveType::Double => ColumnType::Double,
            PrimitiveType::Decimal { precision, scale } => ColumnType::Decimal { precision: *precision, scale: *scale },
            PrimitiveType::Date => ColumnType::Date,
            PrimitiveType::Time => ColumnType::Time,
            PrimitiveType::Timestamp => ColumnType::Timestamp,
            PrimitiveType::Timestamptz => ColumnType::TimestampTz,
            PrimitiveType::String => ColumnType::String,
            PrimitiveType::Binary => ColumnType::Binary,
            _ => return None,
        })
    }

    /// Parses the type names used in pipeline files: `int`, `long`, `decimal(10, 2)`, ...
    pub fn parse(text: &str) -> Option<ColumnType> {
        let t = text.trim().to_ascii_lowercase();
        Some(match t.as_str() {
            "boolean" | "bool" => ColumnType::Boolean,
            "int" | "integer" => ColumnType::Int,
            "long" | "bigint" => ColumnType::Long,
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time,
            "timestamp" => ColumnType::Timestamp,
            "timestamptz" => ColumnType::TimestampTz,
            "string" => ColumnType::String,
            "binary" => ColumnType::Binary,
            other => {
                let inner = other.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                let precision: u32 = p.trim().parse().ok()?;
                let scale: u32 = s.trim().parse().ok()?;
                if precision == 0 || precision > 38 || scale > precision {
                    return None;
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_iceberg())
    }
}

/// A named, typed column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name, as in the source.
    pub name: String,
    /// Iceberg type.
    pub ty: ColumnType,
    /// Whether the column may hold NULL.
    pub nullable: bool,
}

/// The columns of one source table and which of them form the primary key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Columns in row order.
    pub columns: Vec<Column>,
    /// Positions of the primary-key columns, in key order.
    pub key: Vec<usize>,
}

/// Shared, immutable table schema.
pub type TableSchemaRef = Arc<TableSchema>;

/// Names of the CDC table's metadata columns, in field order.
pub mod cdc_columns {
    /// The Debezium op: c, u, d or r.
    pub const OP: &str = "_op";
    /// `source.ts_ms` as a timestamptz.
    pub const SOURCE_TS: &str = "_source_ts";
    /// Kafka partition of the event.
    pub const PARTITION: &str = "_kafka_partition";
    /// Kafka offset of the event.
    pub const OFFSET: &str = "_kafka_offset";
    /// How many metadata columns precede the source columns.
    pub const COUNT: usize = 4;
}

impl TableSchema {
    /// Builds a schema, resolving key column names to positions.
    pub fn new(columns: Vec<Column>, key_names: &[String]) -> Result<TableSchema> {
        let mut key = Vec::with_capacity(key_names.len());
        for name in key_names {
            let pos = columns.iter().position(|c| &c.name == name).ok_or_else(|| {
                Error::new(ErrorKind::Data, format!("key column `{name}` is not a column of the table"))
            })?;
            key.push(pos);
        }
        if key.is_empty() {
            return Err(Error::new(ErrorKind::Data, "a table needs at least one primary-key column"));
        }
        let mut seen = HashMap::new();
        for (i, c) in columns.iter().enumerate() {
            if let Some(prev) = seen.insert(c.name.as_str(), i) {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!("column `{}` appears twice (positions {prev} and {i})", c.name),
                ));
            }
            if c.name.starts_with("_kafka_") || c.name == cdc_columns::OP || c.name == cdc_columns::SOURCE_TS {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!("column `{}` collides with a CDC table metadata column", c.name),
                ));
            }
        }
        Ok(TableSchema { columns, key })
    }

    /// Position of a column by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Names of the key columns in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key.iter().map(|&i| self.columns[i].name.clone()).collect()
    }

    /// The base table's Iceberg schema: field ids 1..=n in column order, key columns
    /// required and declared as identifier fields.
    pub fn base_schema(&self) -> Result<Schema> {
        let fields = self.columns.iter().enumerate().map(|(i, c)| {
            let required = self.key.contains(&i) || !c.nullable;
            Arc::new(NestedField::new(i as i32 + 1, &c.name, Type::Primitive(c.ty.to_iceberg()), required))
        });
        Ok(Schema::builder()
            .with_fields(fields)
            .with_identifier_field_ids(self.key.iter().map(|&i| i as i32 + 1))
            .build()?)
    }

    /// The CDC table's Iceberg schema: the four metadata columns, then every source column
    /// as optional.
    pub fn cdc_schema(&self) -> Result<Schema> {
        let mut fields = vec![
            Arc::new(NestedField::required(1, cdc_columns::OP, Type::Primitive(PrimitiveType::String))),
            Arc::new(NestedField::optional(2, cdc_columns::SOURCE_TS, Type::Primitive(PrimitiveType::Timestamptz))),
            Arc::new(NestedField::required(3, cdc_columns::PARTITION, Type::Primitive(PrimitiveType::Int))),
            Arc::new(NestedField::required(4, cdc_columns::OFFSET, Type::Primitive(PrimitiveType::Long))),
        ];
        for (i, c) in self.columns.iter().enumerate() {
            let id = (cdc_columns::COUNT + i + 1) as i32;
            fields.push(Arc::new(NestedField::optional(id, &c.name, Type::Primitive(c.ty.to_iceberg()))));
        }
        Ok(Schema::builder().with_fields(fields).build()?)
    }

    /// Reads the column model back from an existing base table's schema.
    pub fn from_base_schema(schema: &Schema) -> Result<TableSchema> {
        let mut columns = Vec::new();
        let struct_type = schema.as_struct();
        for field in struct_type.fields() {
            let ty = match field.field_type.as_ref() {
                Type::Primitive(p) => ColumnType::from_iceberg(p),
                _ => None,
            }
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Data,
                    format!("column `{}` has type {} which floe does not write", field.name, field.field_type),
                )
            })?;
            columns.push(Column { name: field.name.clone(), ty, nullable: !field.required });
        }
        let ids: Vec<i32> = schema.identifier_field_ids().collect();
        if ids.is_empty() {
            return Err(Error::new(
                ErrorKind::Data,
                "the base table declares no identifier fields, so floe cannot tell its primary key",
            ));
        }
        let key = ids
            .iter()
            .map(|id| {
                struct_type.fields().iter().position(|f| f.id == *id).ok_or_else(|| {
                    Error::new(ErrorKind::Data, format!("identifier field id {id} is not a top-level column"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TableSchema { columns, key })
    }
}

/// Names of the dead-letter table's columns, in field order.
pub mod dead_letter_columns {
    /// Topic of the bad record.
    pub const TOPIC: &str = "topic";
    /// Kafka partition.
    pub const PARTITION: &str = "partition";
    /// Kafka offset.
    pub const OFFSET: &str = "offset";
    /// Raw key bytes.
    pub const KEY: &str = "key";
    /// Raw value bytes.
    pub const VALUE: &str = "value";
    /// Why the record was rejected.
    pub const REASON: &str = "reason";
    /// When floe rejected it.
    pub const FAILED_AT: &str = "failed_at";
    /// The kind of reason (`unparseable`, `key_mismatch`, ...; optional: tables made before
    /// it have it added, and their older rows read null).
    pub const REASON_KIND: &str = "reason_kind";
}

/// The dead-letter table's Iceberg schema (unpartitioned).
pub fn dead_letter_schema() -> Result<Schema> {
    use dead_letter_columns as c;
    let p = |t| Type::Primitive(t);
    Ok(Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(1, c::TOPIC, p(PrimitiveType::String))),
            Arc::new(NestedField::required(2, c::PARTITION, p(PrimitiveType::Int))),
            Arc::new(NestedField::required(3, c::OFFSET, p(PrimitiveType::Long))),
            Arc::new(NestedField::optional(4, c::KEY, p(PrimitiveType::Binary))),
            Arc::new(NestedField::optional(5, c::VALUE, p(PrimitiveType::Binary))),
            Arc::new(NestedField::required(6, c::REASON, p(PrimitiveType::String))),
            Arc::new(NestedField::required(7, c::FAILED_AT, p(PrimitiveType::Timestamptz))),
            Arc::new(NestedField::optional(8, c::REASON_KIND, p(PrimitiveType::String))),
        ])
        .build()?)
}

/// Partition spec of a base table: `bucket(buckets, <column>)`.
pub fn base_partition_spec(schema: &TableSchema, bucket_column: usize, buckets: u32) -> Result<UnboundPartitionSpec> {
    let column = &schema.columns[bucket_column];
    Ok(UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(bucket_column as i32 + 1, format!("{}_bucket", column.name), Transform::Bucket(buckets))?
        .build())
}

/// Time granularity of the CDC table's partitioning on `_source_ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimeGranularity {
    /// `hour(_source_ts)`
    Hour,
    /// `day(_source_ts)`
    #[default]
    Day,
    /// `month(_source_ts)`
    Month,
}

/// Partition spec of a CDC table: a time transform of `_source_ts` (field id 2).
pub fn cdc_partition_spec(granularity: TimeGranularity) -> Result<UnboundPartitionSpec> {
    let (transform, suffix) = match granularity {
        TimeGranularity::Hour => (Transform::Hour, "hour"),
        TimeGranularity::Day => (Transform::Day, "day"),
        TimeGranularity::Month => (Transform::Month, "month"),
    };
    Ok(UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(2, format!("{}_{suffix}", cdc_columns::SOURCE_TS), transform)?
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        TableSchema::new(
            vec![
                Column { name: "id".into(), ty: ColumnType::Long, nullable: false },
                Column { name: "name".into(), ty: ColumnType::String, nullable: true },
                Column { name: "price".into(), ty: ColumnType::Decimal { precision: 10, scale: 2 }, nullable: true },
            ],
            &["id".to_string()],
        )
        .expect("valid schema")
    }

    #[test]
    fn base_schema_marks_key_as_required_identifier() {
        let s = schema().base_schema().expect("schema");
        assert_eq!(s.identifier_field_ids().collect::<Vec<_>>(), vec![1]);
        assert!(s.field_by_id(1).expect("id").required);
        assert!(!s.field_by_id(2).expect("name").required);
        let back = TableSchema::from_base_schema(&s).expect("round trip");
        assert_eq!(back.key, vec![0]);
        assert_eq!(back.columns[2].ty, ColumnType::Decimal { precision: 10, scale: 2 });
    }

    #[test]
    fn cdc_schema_puts_metadata_first() {
        let s = schema().cdc_schema().expect("schema");
        let names: Vec<_> = s.as_struct().fields().iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, vec!["_op", "_source_ts", "_kafka_partition", "_kafka_offset", "id", "name", "price"]);
        assert!(!s.field_by_id(5).expect("id").required);
    }

    #[test]
    fn parses_declared_types() {
        assert_eq!(ColumnType::parse("decimal(10, 2)"), Some(ColumnType::Decimal { precision: 10, scale: 2 }));
        assert_eq!(ColumnType::parse("TimestampTZ"), Some(ColumnType::TimestampTz));
        assert_eq!(ColumnType::parse("decimal(40,2)"), None);
        assert_eq!(ColumnType::parse("varchar"), None);
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = TableSchema::new(vec![], &["id".to_string()]).expect_err("no such column");
        assert!(err.to_string().contains("`id`"));
    }
}
