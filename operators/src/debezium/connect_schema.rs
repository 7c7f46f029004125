//! Kafka Connect schemas (as JsonConverter writes them) and their mapping to Iceberg types.
//!
//! | Connect / Debezium                                   | Iceberg        | conversion                |
//! |------------------------------------------------------|----------------|---------------------------|
//! | int8, int16, int32                                   | int            | range-checked             |
//! | int64                                                | long           |                           |
//! | float32 / float64                                    | float / double |                           |
//! | boolean / string / bytes                             | boolean / string / binary (base64) |       |
//! | `org.apache.kafka.connect.data.Decimal`              | decimal(p, s)  | base64 two's complement   |
//! | `io.debezium.time.Date`, Connect `Date`              | date           | days                      |
//! | `io.debezium.time.Timestamp`, Connect `Timestamp`    | timestamp      | ms → µs                   |
//! | `io.debezium.time.MicroTimestamp`                    | timestamp      | µs                        |
//! | `io.debezium.time.NanoTimestamp`                     | timestamp      | ns → µs                   |
//! | `io.debezium.time.ZonedTimestamp`                    | timestamptz    | ISO-8601 → µs UTC         |
//! | `io.debezium.time.Time`, Connect `Time`              | time           | ms → µs                   |
//! | `io.debezium.time.MicroTime` / `NanoTime`            | time           | µs / ns → µs              |
//! | `io.debezium.data.Json`, `Enum`, `EnumSet`, `Uuid`   | string         |                           |
//! | any other logical name                               | its physical type                          ||
//! | struct, array, map (no logical mapping)              | string         | the JSON text             |
//!
//! # Invariants
//! - The mapping is total: every Connect schema yields a [`Conversion`]; decimals wider than
//!   Iceberg's 38 digits fall back to their decimal text as a string.

use std::collections::HashMap;

use floe_engine::schema::{Column, ColumnType};
use serde::Deserialize;

/// A Connect schema node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ConnectSchema {
    /// Physical type: int8 … int64, float32, float64, boolean, string, bytes, struct, array, map.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether the value may be null.
    #[serde(default)]
    pub optional: bool,
    /// Logical type name, e.g. `io.debezium.time.MicroTimestamp`.
    #[serde(default)]
    pub name: Option<String>,
    /// Field name, when this schema is a struct field.
    #[serde(default)]
    pub field: Option<String>,
    /// Fields of a struct.
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    /// Logical type parameters (string valued in Connect JSON).
    #[serde(default)]
    pub parameters: HashMap<String, String>,
}

impl ConnectSchema {
    /// The struct field with the given name.
    pub fn field(&self, name: &str) -> Option<&ConnectSchema> {
        self.fields.iter().find(|f| f.field.as_deref() == Some(name))
    }
}

/// How a JSON value of a column becomes a [`floe_engine::value::Value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// JSON boolean.
    Boolean,
    /// JSON integer within `[min, max]` → int.
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// JSON integer → long.
    Long,
    /// JSON number → float.
    Float,
    /// JSON number → double.
    Double,
    /// JSON string → string.
    String,
    /// Base64 JSON string → binary.
    Bytes,
    /// Base64 big-endian two's complement unscaled value → decimal(p, s).
    Decimal {
        /// Precision.
        precision: u32,
        /// Scale.
        scale: u32,
    },
    /// Base64 decimal wider than 38 digits → its text as a string.
    WideDecimalText {
        /// Scale used to place the decimal point.
        scale: u32,
    },
    /// Integer days → date.
    Date,
    /// Integer → time, multiplied/divided into microseconds.
    Time(TimeUnit),
    /// Integer → timestamp without zone, in microseconds.
    Timestamp(TimeUnit),
    /// ISO-8601 string → timestamptz.
    ZonedTimestamp,
    /// Any JSON value → its compact JSON text.
    JsonText,
    /// Declared (schemaless) decimal: Debezium's encodings without a schema, a base64
    /// unscaled value (`decimal.handling.mode=precise`, the default) or a JSON number
    /// (`double`). Strings are never guessed at: `string` mode columns are declared `string`.
    DecimalText {
        /// Precision.
        precision: u32,
        /// Scale.
        scale: u32,
    },
    /// Declared date: integer days or `YYYY-MM-DD`.
    DeclaredDate,
    /// Declared timestamp: integer microseconds or ISO-8601 text.
    DeclaredTimestamp {
        /// Whether the column is timestamptz.
        zoned: bool,
    },
}

/// Unit of an integer time value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl Conversion {
    /// The Iceberg column type this conversion produces.
    pub fn column_type(self) -> ColumnType {
        match self {
            Conversion::Boolean => ColumnType::Boolean,
            Conversion::Int { .. } => ColumnType::Int,
            Conversion::Long => ColumnType::Long,
            Conversion::Float => ColumnType::Float,
            Conversion::Double => ColumnType::Double,
            Conversion::String | Conversion::JsonText | Conversion::WideDecimalText { .. } => ColumnType::String,
            Conversion::Bytes => ColumnType::Binary,
            Conversion::Decimal { precision, scale } | Conversion::DecimalText { precision, scale } => {
                ColumnType::Decimal { precision, scale }
            }
            Conversion::Date | Conversion::DeclaredDate => ColumnType::Date,
            Conversion::Time(_) => ColumnType::Time,
            Conversion::Timestamp(_) => ColumnType::Timestamp,
            Conversion::ZonedTimestamp => ColumnType::TimestampTz,
            Conversion::DeclaredTimestamp { zoned: true } => ColumnType::TimestampTz,
            Conversion::DeclaredTimestamp { zoned: false } => ColumnType::Timestamp,
        }
    }

    /// This conversion, producing the table's `table` type when that is a lossless widening
    /// of what it produces (int → long, float → double, a wider decimal at the same scale).
    /// Other combinations are left alone (the caller checked compatibility).
    pub fn widened_to(self, table: ColumnType) -> Conversion {
        match (self, table) {
            (Conversion::Int { .. }, ColumnType::Long) => Conversion::Long,
            (Conversion::Float, ColumnType::Double) => Conversion::Double,
            (Conversion::Decimal { scale, .. }, ColumnType::Decimal { precision, scale: s }) if s == scale => {
                Conversion::Decimal { precision, scale }
            }
            (c, _) => c,
        }
    }

    /// The conversion for a Connect field schema.
    pub fn for_connect(schema: &ConnectSchema) -> Conversion {
        match schema.name.as_deref() {
            Some("org.apache.kafka.connect.data.Decimal") if schema.ty == "bytes" => {
                let scale = schema.parameters.get("scale").and_then(|s| s.parse().ok()).unwrap_or(0);
                let precision: u32 =
                    schema.parameters.get("connect.decimal.precision").and_then(|s| s.parse().ok()).unwrap_or(38);
                if precision > 38 || scale > 38 {
                    Conversion::WideDecimalText { scale }
                } else {
                    Conversion::Decimal { precision: precision.max(scale).max(1), scale }
                }
            }
            Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") if is_int(&schema.ty) => {
                Conversion::Date
            }
            Some("io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") if is_int(&schema.ty) => {
                Conversion::Timestamp(TimeUnit::Millis)
            }
            Some("io.debezium.time.MicroTimestamp") if is_int(&schema.ty) => Conversion::Timestamp(TimeUnit::Micros),
            Some("io.debezium.time.NanoTimestamp") if is_int(&schema.ty) => Conversion::Timestamp(TimeUnit::Nanos),
            Some("io.debezium.time.ZonedTimestamp") if schema.ty == "string" => Conversion::ZonedTimestamp,
            Some("io.debezium.time.Time" | "org.apache.kafka.connect.data.Time") if is_int(&schema.ty) => {
                Conversion::Time(TimeUnit::Millis)
            }
            Some("io.debezium.time.MicroTime") if is_int(&schema.ty) => Conversion::Time(TimeUnit::Micros),
            Some("io.debezium.time.NanoTime") if is_int(&schema.ty) => Conversion::Time(TimeUnit::Nanos),
            // Json, Enum, EnumSet, Uuid and unknown logical names: the physical type decides.
            _ => Self::physical(&schema.ty),
        }
    }

    fn physical(ty: &str) -> Conversion {
        match ty {
            "int8" => Conversion::Int { min: i8::MIN as i64, max: i8::MAX as i64 },
            "int16" => Conversion::Int { min: i16::MIN as i64, max: i16::MAX as i64 },
            "int32" => Conversion::Int { min: i32::MIN as i64, max: i32::MAX as i64 },
            "int64" => Conversion::Long,
            "float32" => Conversion::Float,
            "float64" => Conversion::Double,
            "boolean" => Conversion::Boolean,
            "string" => Conversion::String,
            "bytes" => Conversion::Bytes,
            _ => Conversion::JsonText,
        }
    }

    /// The conversion for a column declared in the pipeline file (schemaless topics).
    pub fn for_declared(ty: ColumnType) -> Conversion {
        match ty {
            ColumnType::Boolean => Conversion::Boolean,
            ColumnType::Int => Conversion::Int { min: i32::MIN as i64, max: i32::MAX as i64 },
            ColumnType::Long => Conversion::Long,
            ColumnType::Float => Conversion::Float,
            ColumnType::Double => Conversion::Double,
            ColumnType::Decimal { precision, scale } => Conversion::DecimalText { precision, scale },
            ColumnType::Date => Conversion::DeclaredDate,
            ColumnType::Time => Conversion::Time(TimeUnit::Micros),
            ColumnType::Timestamp => Conversion::DeclaredTimestamp { zoned: false },
            ColumnType::TimestampTz => Conversion::DeclaredTimestamp { zoned: true },
            ColumnType::String => Conversion::String,
            ColumnType::Binary => Conversion::Bytes,
        }
    }
}

fn is_int(ty: &str) -> bool {
    matches!(ty, "int8" | "int16" | "int32" | "int64")
}

/// The row columns a Debezium value schema declares: the fields of its `after` (or
/// `before`) struct, with their conversions.
pub fn row_fields(value_schema: &ConnectSchema) -> Option<Vec<(Column, Conversion)>> {
    let image = value_schema.field("after").or_else(|| value_schema.field("before"))?;
    if image.ty != "struct" {
        return None;
    }
    Some(
        image
            .fields
            .iter()
            .map(|f| {
                let conversion = Conversion::for_connect(f);
                let column = Column {
                    name: f.field.clone().unwrap_or_default(),
                    ty: conversion.column_type(),
                    nullable: f.optional,
                };
                (column, conversion)
            })
            .collect(),
    )
}

/// Field names of a Connect key schema (a struct of the primary-key columns).
pub fn key_fields(key_schema: &ConnectSchema) -> Vec<String> {
    if key_schema.ty == "struct" {
        key_schema.fields.iter().filter_map(|f| f.field.clone()).collect()
    } else {
        Vec::new()
    }
}

/// The key fields a record key's own Connect schema names (`{"schema": ..., "payload": ...}`);
/// `None` for a key without a schema or with no fields.
pub fn record_key_fields(key: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct WithSchema {
        schema: Option<ConnectSchema>,
    }
    let schema = serde_json::from_slice::<WithSchema>(key).ok()?.schema?;
    Some(key_fields(&schema)).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(json: &str) -> ConnectSchema {
        serde_json::from_str(json).expect("schema json")
    }

    #[test]
    fn maps_every_listed_type_exactly() {
        let cases = [
            (r#"{"type":"int8","field":"a"}"#, ColumnType::Int),
            (r#"{"type":"int16","field":"a"}"#, ColumnType::Int),
            (r#"{"type":"int32","field":"a"}"#, ColumnType::Int),
            (r#"{"type":"int64","field":"a"}"#, ColumnType::Long),
            (r#"{"type":"float32","field":"a"}"#, ColumnType::Float),
            (r#"{"type":"float64","field":"a"}"#, ColumnType::Double),
            (r#"{"type":"boolean","field":"a"}"#, ColumnType::Boolean),
            (r#"{"type":"string","field":"a"}"#, ColumnType::String),
            (r#"{"type":"bytes","field":"a"}"#, ColumnType::Binary),
            (
                r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"a"}"#,
                ColumnType::Decimal { precision: 10, scale: 2 },
            ),
            (r#"{"type":"int32","name":"io.debezium.time.Date","field":"a"}"#, ColumnType::Date),
            (r#"{"type":"int32","name":"org.apache.kafka.connect.data.Date","field":"a"}"#, ColumnType::Date),
            (r#"{"type":"int64","name":"io.debezium.time.Timestamp","field":"a"}"#, ColumnType::Timestamp),
            (r#"{"type":"int64","name":"io.debezium.time.MicroTimestamp","field":"a"}"#, ColumnType::Timestamp),
            (r#"{"type":"int64","name":"io.debezium.time.NanoTimestamp","field":"a"}"#, ColumnType::Timestamp),
            (r#"{"type":"int64","name":"org.apache.kafka.connect.data.Timestamp","field":"a"}"#, ColumnType::Timestamp),
            (r#"{"type":"string","name":"io.debezium.time.ZonedTimestamp","field":"a"}"#, ColumnType::TimestampTz),
            (r#"{"type":"int32","name":"io.debezium.time.Time","field":"a"}"#, ColumnType::Time),
            (r#"{"type":"int64","name":"io.debezium.time.MicroTime","field":"a"}"#, ColumnType::Time),
            (r#"{"type":"int64","name":"io.debezium.time.NanoTime","field":"a"}"#, ColumnType::Time),
            (r#"{"type":"string","name":"io.debezium.data.Json","field":"a"}"#, ColumnType::String),
            (r#"{"type":"string","name":"io.debezium.data.Enum","field":"a"}"#, ColumnType::String),
            (r#"{"type":"string","name":"io.debezium.data.EnumSet","field":"a"}"#, ColumnType::String),
            (r#"{"type":"string","name":"io.debezium.data.Uuid","field":"a"}"#, ColumnType::String),
            (r#"{"type":"int32","name":"io.debezium.time.Year","field":"a"}"#, ColumnType::Int),
            (r#"{"type":"bytes","name":"io.debezium.data.Bits","field":"a"}"#, ColumnType::Binary),
            (
                r#"{"type":"struct","name":"io.debezium.data.VariableScaleDecimal","fields":[],"field":"a"}"#,
                ColumnType::String,
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(Conversion::for_connect(&field(json)).column_type(), expected, "{json}");
        }
    }

    #[test]
    fn decimal_wider_than_iceberg_falls_back_to_text() {
        let f = field(
            r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"30","connect.decimal.precision":"65"},"field":"a"}"#,
        );
        assert_eq!(Conversion::for_connect(&f), Conversion::WideDecimalText { scale: 30 });
    }
}
