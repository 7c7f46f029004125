//! Typed row values: what flows through floe's dataflows.
//!
//! A [`Row`] is a vector of [`Value`]s positioned by the table's columns (see
//! [`crate::schema::TableSchema`]). Values are already in Iceberg's physical units, so the
//! writers copy them into Arrow without conversion:
//!
//! | Iceberg type   | variant                | unit                                  |
//! |----------------|------------------------|---------------------------------------|
//! | int            | `Int(i32)`             |                                       |
//! | long           | `Long(i64)`            |                                       |
//! | float/double   | `Float` / `Double`     | total order, NaN equal to itself      |
//! | decimal(p, s)  | `Decimal(i128)`        | unscaled value                        |
//! | date           | `Date(i32)`            | days since 1970-01-01                 |
//! | time           | `Time(i64)`            | microseconds since midnight           |
//! | timestamp(tz)  | `Timestamp(i64)`, `TimestampTz(i64)` | microseconds since epoch (UTC) |
//! | string         | `String`               | UTF-8                                 |
//! | binary         | `Binary`               |                                       |
//!
//! # Invariants
//! - `Value` is totally ordered and hashable, so rows and keys can be differential data.
//! - `Null` sorts first; values of different variants order by variant (only relevant for
//!   keys, whose columns have one type each).

use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// One typed cell.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// boolean
    Boolean(bool),
    /// int (32-bit)
    Int(i32),
    /// long (64-bit)
    Long(i64),
    /// float (32-bit IEEE)
    Float(OrderedFloat<f32>),
    /// double (64-bit IEEE)
    Double(OrderedFloat<f64>),
    /// decimal: the unscaled value; precision and scale live in the column type.
    Decimal(i128),
    /// date: days since the Unix epoch.
    Date(i32),
    /// time of day in microseconds.
    Time(i64),
    /// timestamp without zone, microseconds since the Unix epoch.
    Timestamp(i64),
    /// timestamp with zone, microseconds since the Unix epoch in UTC.
    TimestampTz(i64),
    /// UTF-8 string.
    String(String),
    /// Raw bytes.
    Binary(Vec<u8>),
}

impl Value {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Boolean(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Decimal(v) => write!(f, "{v}u"),
            Value::Date(v) => write!(f, "date:{v}"),
            Value::Time(v) => write!(f, "time:{v}"),
            Value::Timestamp(v) => write!(f, "ts:{v}"),
            Value::TimestampTz(v) => write!(f, "tstz:{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Binary(v) => write!(f, "0x{}", v.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        }
    }
}

/// A row: one value per table column, in column order.
///
/// Rows are shared, not copied: the CDC and base paths, differential's batches and the
/// writers all hold the same allocation, so cloning a row is a reference-count bump.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row(pub Arc<[Value]>);

impl Default for Row {
    fn default() -> Self {
        Row(Arc::from(Vec::new()))
    }
}

impl From<Vec<Value>> for Row {
    fn from(values: Vec<Value>) -> Row {
        Row(values.into())
    }
}

impl Row {
    /// A row of `values`.
    pub fn new(values: Vec<Value>) -> Row {
        Row(values.into())
    }

    /// The values of the given column positions, as a key.
    pub fn project(&self, positions: &[usize]) -> Row {
        Row(positions.iter().map(|&i| self.0.get(i).cloned().unwrap_or(Value::Null)).collect())
    }

    /// Mutable access to the values (copies them first if the row is shared).
    pub fn values_mut(&mut self) -> &mut [Value] {
        Arc::make_mut(&mut self.0)
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{v}")?;
        }
        write!(f, ")")
    }
}
