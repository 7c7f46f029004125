//! Keying and bucketing: Iceberg's own `bucket(N, column)` transform decides which bucket
//! (and so which writer) owns a key, so readers can prune by bucket.
//!
//! # Invariants
//! - `Bucketer::bucket` equals the partition value Iceberg computes for the row, because it
//!   *is* iceberg-rust's transform (murmur3 over the spec's single-value serialization).
//! - All events of one key land in one bucket: the bucket column is a key column.

use floe_engine::schema::ColumnType;
use floe_engine::value::Value;
use iceberg::spec::{Datum, PrimitiveType, Transform};
use iceberg::transform::{BoxedTransformFunction, create_transform_function};

/// An Iceberg datum for a value of a column type (`None` for NULL).
pub fn datum(value: &Value, ty: ColumnType) -> Option<Datum> {
    Some(match (value, ty) {
        (Value::Null, _) => return None,
        (Value::Boolean(v), _) => Datum::bool(*v),
        (Value::Int(v), _) => Datum::int(*v),
        (Value::Long(v), _) => Datum::long(*v),
        (Value::Float(v), _) => Datum::float(v.0),
        (Value::Double(v), _) => Datum::double(v.0),
        (Value::Decimal(v), ColumnType::Decimal { precision, scale }) => {
            Datum::try_from_bytes(&minimal_be_bytes(*v), PrimitiveType::Decimal { precision, scale }).ok()?
        }
        (Value::Decimal(_), _) => return None,
        (Value::Date(v), _) => Datum::date(*v),
        (Value::Time(v), _) => Datum::time_micros(*v).ok()?,
        (Value::Timestamp(v), _) => Datum::timestamp_micros(*v),
        (Value::TimestampTz(v), _) => Datum::timestamptz_micros(*v),
        (Value::String(v), _) => Datum::string(v),
        (Value::Binary(v), _) => Datum::binary(v.iter().copied()),
    })
}

/// Minimal big-endian two's complement bytes of an unscaled decimal.
pub fn minimal_be_bytes(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

/// Computes `bucket(N, column)` for key values.
pub struct Bucketer {
    function: BoxedTransformFunction,
    ty: ColumnType,
    buckets: u32,
}

impl Bucketer {
    /// A bucketer for `buckets` buckets over a column of type `ty`.
    pub fn new(buckets: u32, ty: ColumnType) -> iceberg::Result<Bucketer> {
        Ok(Bucketer { function: create_transform_function(&Transform::Bucket(buckets))?, ty, buckets })
    }

    /// The bucket of a (non-null) value.
    pub fn bucket(&self, value: &Value) -> u32 {
        let bucket = datum(value, self.ty).and_then(|d| self.function.transform_literal(&d).ok().flatten()).and_then(
            |d| match d.literal() {
                iceberg::spec::PrimitiveLiteral::Int(b) => Some(*b as u32),
                _ => None,
            },
        );
        // Keys are validated non-null before bucketing; an untransformable value still
        // needs a stable home, and bucket 0 is as good as any.
        bucket.unwrap_or(0) % self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_reference_values() {
        // Iceberg spec, "Appendix B: 32-bit Hash Requirements": bucket hashes of known values.
        // hash(34L) = 2017239379 → bucket(16) = 2017239379 % 16 = 3
        let b = Bucketer::new(16, ColumnType::Long).expect("bucketer");
        assert_eq!(b.bucket(&Value::Long(34)), 2017239379 % 16);
        // hash("iceberg") = 1210000089
        let s = Bucketer::new(1000, ColumnType::String).expect("bucketer");
        assert_eq!(s.bucket(&Value::String("iceberg".into())), 1210000089 % 1000);
        // int hashes like long: hash(34) = 2017239379
        let i = Bucketer::new(16, ColumnType::Int).expect("bucketer");
        assert_eq!(i.bucket(&Value::Int(34)), 2017239379 % 16);
    }

    #[test]
    fn minimal_bytes() {
        assert_eq!(minimal_be_bytes(0), vec![0]);
        assert_eq!(minimal_be_bytes(127), vec![0x7f]);
        assert_eq!(minimal_be_bytes(128), vec![0x00, 0x80]);
        assert_eq!(minimal_be_bytes(-1), vec![0xff]);
        assert_eq!(minimal_be_bytes(-129), vec![0xff, 0x7f]);
        assert_eq!(minimal_be_bytes(12345), vec![0x30, 0x39]);
    }
}
