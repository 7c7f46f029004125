//! Arrow cells as floe [`Value`]s: how rows read back from Parquet (key index rebuilds,
//! rewrites, the verifier) become values again.
//!
//! # Invariants
//! - The inverse of the writers' conversion (`floe_operators::arrow_rows`): a value written
//!   and read back is equal to itself.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::{DataType, TimeUnit};
use ordered_float::OrderedFloat;

use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;

/// The value at row `i` of an Arrow array, in floe's units (see [`crate::value`]).
pub fn value_at(a: &dyn Array, i: usize) -> Result<Value> {
    use arrow_array::types::*;
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Boolean => Value::Boolean(a.as_boolean().value(i)),
        DataType::Int32 => Value::Int(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::Long(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => Value::Float(OrderedFloat(a.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => Value::Double(OrderedFloat(a.as_primitive::<Float64Type>().value(i))),
        DataType::Decimal128(_, _) => Value::Decimal(a.as_primitive::<Decimal128Type>().value(i)),
        DataType::Date32 => Value::Date(a.as_primitive::<Date32Type>().value(i)),
        DataType::Time64(TimeUnit::Microsecond) => Value::Time(a.as_primitive::<Time64MicrosecondType>().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            Value::Timestamp(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            Value::TimestampTz(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Binary => Value::Binary(a.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Value::Binary(a.as_binary::<i64>().value(i).to_vec()),
        DataType::BinaryView => Value::Binary(a.as_binary_view().value(i).to_vec()),
        other => return Err(Error::new(ErrorKind::Data, format!("floe cannot read Arrow type {other}"))),
    })
}
