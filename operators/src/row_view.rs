//! Typed, schema-aware access to a row for user transforms.
//!
//! ```
//! use floe_engine::schema::{Column, ColumnType, TableSchema};
//! use floe_engine::value::{Row, Value};
//! use floe_operators::row_view::RowMut;
//!
//! let schema = TableSchema::new(
//!     vec![
//!         Column { name: "id".into(), ty: ColumnType::Long, nullable: false },
//!         Column { name: "email".into(), ty: ColumnType::String, nullable: true },
//!     ],
//!     &["id".to_string()],
//! ).unwrap();
//! let mut row = Row::new(vec![Value::Long(7), Value::String("a@b.c".into())]);
//! let mut view = RowMut::new(&schema, &mut row);
//! assert_eq!(view.get_i64("id"), Some(7));
//! view.set("email", Value::Null).unwrap();
//! assert!(view.set("email", Value::Long(1)).is_err()); // wrong type
//! assert_eq!(row.0[1], Value::Null);
//! ```
//!
//! # Invariants
//! - `set` only accepts values of the column's type (or NULL for nullable columns), so a
//!   transform cannot produce a row the writers would reject.

use floe_engine::schema::{ColumnType, TableSchema};
use floe_engine::value::{Row, Value};

/// A mutable row with its schema.
pub struct RowMut<'a> {
    schema: &'a TableSchema,
    row: &'a mut Row,
}

impl<'a> RowMut<'a> {
    /// Wraps a row of `schema`.
    pub fn new(schema: &'a TableSchema, row: &'a mut Row) -> RowMut<'a> {
        RowMut { schema, row }
    }

    /// The table schema.
    pub fn schema(&self) -> &TableSchema {
        self.schema
    }

    /// The value of a column.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.schema.position(column).and_then(|p| self.row.0.get(p))
    }

    /// A string column's value.
    pub fn get_str(&self, column: &str) -> Option<&str> {
        match self.get(column)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An int or long column's value.
    pub fn get_i64(&self, column: &str) -> Option<i64> {
        match self.get(column)? {
            Value::Int(v) => Some(*v as i64),
            Value::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// Sets a column, checking the value against the column's type.
    pub fn set(&mut self, column: &str, value: Value) -> Result<(), String> {
        let p = self.schema.position(column).ok_or_else(|| format!("no column `{column}`"))?;
        let c = &self.schema.columns[p];
        let fits = match (&value, c.ty) {
            (Value::Null, _) => c.nullable && !self.schema.key.contains(&p),
            (Value::Boolean(_), ColumnType::Boolean)
            | (Value::Int(_), ColumnType::Int)
            | (Value::Long(_), ColumnType::Long)
            | (Value::Float(_), ColumnType::Float)
            | (Value::Double(_), ColumnType::Double)
            | (Value::Decimal(_), ColumnType::Decimal { .. })
            | (Value::Date(_), ColumnType::Date)
            | (Value::Time(_), ColumnType::Time)
            | (Value::Timestamp(_), ColumnType::Timestamp)
            | (Value::TimestampTz(_), ColumnType::TimestampTz)
            | (Value::String(_), ColumnType::String)
            | (Value::Binary(_), ColumnType::Binary) => true,
            _ => false,
        };
        if !fits {
            return Err(format!(
                "column `{column}` is {}{}; cannot hold {value}",
                c.ty,
                if c.nullable { "" } else { " NOT NULL" }
            ));
        }
        self.row.values_mut()[p] = value;
        Ok(())
    }
}
