//! Rows → Arrow record batches in a table's Arrow schema (the one iceberg-rust derives,
//! with field ids), ready for iceberg's Parquet writers.
//!
//! # Invariants
//! - Column `i` of the batch is built from the [`ColumnSource`] at index `i`; the batch's
//!   schema is exactly the target schema, so the writers never re-map fields.
//! - A value whose variant does not match the column type is a bug upstream (the decoder
//!   validates types); it is reported as an error, never written. The exceptions are the
//!   lossless promotions schema evolution allows (int into long, float into double) and
//!   rows shorter than the schema (decoded before columns were added): padded with nulls.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    LargeBinaryBuilder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::value::Value;

/// Appends values of one column.
enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Float(Float32Builder),
    Double(Float64Builder),
    Decimal(Decimal128Builder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    String(StringBuilder),
    Binary(LargeBinaryBuilder),
}

impl ColumnBuilder {
    fn new(ty: &DataType, capacity: usize) -> Result<ColumnBuilder> {
        Ok(match ty {
            DataType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(capacity)),
            DataType::Int32 => ColumnBuilder::Int(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => ColumnBuilder::Long(Int64Builder::with_capacity(capacity)),
            DataType::Float32 => ColumnBuilder::Float(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => ColumnBuilder::Double(Float64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| Error::new(ErrorKind::Internal, "decimal type").with_source(e))?,
            ),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time64(_) => ColumnBuilder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            DataType::Timestamp(_, tz) => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()),
            ),
            DataType::Utf8 => ColumnBuilder::String(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::LargeBinary => ColumnBuilder::Binary(LargeBinaryBuilder::with_capacity(capacity, capacity * 16)),
            other => return Err(Error::new(ErrorKind::Internal, format!("floe does not write Arrow type {other}"))),
        })
    }

    fn append(&mut self, v: &Value) -> std::result::Result<(), &'static str> {
        match (self, v) {
            (ColumnBuilder::Boolean(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Int(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Long(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Float(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Double(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Decimal(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Date(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Time(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Timestamp(b), Value::Null) => b.append_null(),
            (ColumnBuilder::String(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Binary(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Boolean(b), Value::Boolean(x)) => b.append_value(*x),
            (ColumnBuilder::Int(b), Value::Int(x)) => b.append_value(*x),
            (ColumnBuilder::Long(b), Value::Long(x)) => b.append_value(*x),
            // Rows decoded before a column was widened (int → long, float → double).
            (ColumnBuilder::Long(b), Value::Int(x)) => b.append_value(i64::from(*x)),
            (ColumnBuilder::Double(b), Value::Float(x)) => b.append_value(f64::from(x.0)),
            (ColumnBuilder::Float(b), Value::Float(x)) => b.append_value(x.0),
            (ColumnBuilder::Double(b), Value::Double(x)) => b.append_value(x.0),
            (ColumnBuilder::Decimal(b), Value::Decimal(x)) => b.append_value(*x),
            (ColumnBuilder::Date(b), Value::Date(x)) => b.append_value(*x),
            (ColumnBuilder::Time(b), Value::Time(x)) => b.append_value(*x),
            (ColumnBuilder::Timestamp(b), Value::Timestamp(x) | Value::TimestampTz(x)) => b.append_value(*x),
            (ColumnBuilder::String(b), Value::String(x)) => b.append_value(x),
            (ColumnBuilder::Binary(b), Value::Binary(x)) => b.append_value(x),
            _ => return Err("value does not match the column type"),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Boolean(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Long(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Double(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Time(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish()),
            ColumnBuilder::String(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Builds a batch in `schema` column by column: `cell(row, column)` gives each value.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchBuilder {
    /// A builder for `schema`, sized for `capacity` rows.
    pub fn new(schema: SchemaRef, capacity: usize) -> Result<BatchBuilder> {
        let columns =
            schema.fields().iter().map(|f| ColumnBuilder::new(f.data_type(), capacity)).collect::<Result<_>>()?;
        Ok(BatchBuilder { schema, columns, rows: 0 })
    }

    /// Appends one row given its cells in schema order. A row decoded under an older schema
    /// version is shorter: its missing trailing columns are null.
    pub fn append<'a>(&mut self, cells: impl IntoIterator<Item = &'a Value>) -> Result<()> {
        let mut given = 0;
        for (i, (builder, v)) in self.columns.iter_mut().zip(cells).enumerate() {
            builder.append(v).map_err(|m| {
                Error::new(ErrorKind::Internal, format!("column `{}`: {m}: {v}", self.schema.field(i).name()))
            })?;
            given += 1;
        }
        for (i, builder) in self.columns.iter_mut().enumerate().skip(given) {
            builder.append(&Value::Null).map_err(|m| {
                Error::new(ErrorKind::Internal, format!("column `{}`: {m}", self.schema.field(i).name()))
            })?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows were appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The finished batch.
    pub fn finish(self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.into_iter().map(ColumnBuilder::finish).collect();
        RecordBatch::try_new(self.schema, arrays)
            .map_err(|e| Error::new(ErrorKind::Internal, "building a record batch").with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use floe_engine::schema::{Column, ColumnType, TableSchema};

    #[test]
    fn builds_batches_in_the_iceberg_arrow_schema() {
        let schema = TableSchema::new(
            vec![
                Column { name: "id".into(), ty: ColumnType::Long, nullable: false },
                Column { name: "at".into(), ty: ColumnType::TimestampTz, nullable: true },
                Column { name: "blob".into(), ty: ColumnType::Binary, nullable: true },
                Column { name: "price".into(), ty: ColumnType::Decimal { precision: 9, scale: 2 }, nullable: true },
            ],
            &["id".to_string()],
        )
        .expect("schema");
        let arrow =
            Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema.base_schema().expect("iceberg")).expect("arrow"));
        let mut b = BatchBuilder::new(arrow, 2).expect("builder");
        b.append(&[Value::Long(1), Value::TimestampTz(5), Value::Binary(vec![1]), Value::Decimal(1234)]).expect("row");
        b.append(&[Value::Long(2), Value::Null, Value::Null, Value::Null]).expect("row");
        let batch = b.finish().expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(1).null_count(), 1);
        let err =
            BatchBuilder::new(batch.schema(), 1).expect("b").append(&[Value::String("x".into())]).expect_err("type");
        assert!(err.to_string().contains("column `id`"));
    }

    #[test]
    fn rows_of_an_older_schema_version_are_widened_and_padded() {
        let schema = TableSchema::new(
            vec![
                Column { name: "id".into(), ty: ColumnType::Long, nullable: false },
                Column { name: "qty".into(), ty: ColumnType::Long, nullable: true },
                Column { name: "score".into(), ty: ColumnType::Double, nullable: true },
                Column { name: "note".into(), ty: ColumnType::String, nullable: true },
            ],
            &["id".to_string()],
        )
        .expect("schema");
        let arrow =
            Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema.base_schema().expect("iceberg")).expect("arrow"));
        let mut b = BatchBuilder::new(arrow, 1).expect("builder");
        // Decoded when qty was an int, score a float, and note did not exist.
        b.append(&[Value::Long(1), Value::Int(-7), Value::Float(ordered_float::OrderedFloat(0.5))]).expect("row");
        let batch = b.finish().expect("batch");
        let qty = batch.column(1).as_any().downcast_ref::<arrow_array::Int64Array>().expect("long");
        assert_eq!(qty.value(0), -7);
        let score = batch.column(2).as_any().downcast_ref::<arrow_array::Float64Array>().expect("double");
        assert_eq!(score.value(0), 0.5);
        assert!(batch.column(3).is_null(0));
    }
}
