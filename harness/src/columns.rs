//! Generated column types: every Connect/Debezium type floe maps, with its Connect field
//! schema, a seeded value generator, its Debezium JSON encoding, and the value floe must
//! write for it (in Iceberg units).
//!
//! # Invariants
//! - `encode(generate(rng))` is exactly what Debezium's JsonConverter would write, and
//!   [`GenType::expected`] is exactly what the type mapping promises for it (e.g. nanosecond
//!   timestamps floor to microseconds).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use floe_engine::schema::ColumnType;
use floe_engine::value::Value;
use ordered_float::OrderedFloat;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::json;

/// A Debezium-side column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenType {
    /// int8
    Int8,
    /// int16
    Int16,
    /// int32
    Int32,
    /// int64
    Int64,
    /// float32
    Float32,
    /// float64
    Float64,
    /// boolean
    Boolean,
    /// string (with unicode)
    Str,
    /// bytes
    Bytes,
    /// Connect Decimal(p, s)
    Decimal(u32, u32),
    /// io.debezium.time.Date
    DbzDate,
    /// org.apache.kafka.connect.data.Date
    ConnectDate,
    /// io.debezium.time.Timestamp (ms)
    DbzTimestamp,
    /// io.debezium.time.MicroTimestamp
    MicroTimestamp,
    /// io.debezium.time.NanoTimestamp
    NanoTimestamp,
    /// org.apache.kafka.connect.data.Timestamp (ms)
    ConnectTimestamp,
    /// io.debezium.time.ZonedTimestamp
    ZonedTimestamp,
    /// io.debezium.time.Time (ms)
    DbzTime,
    /// io.debezium.time.MicroTime
    MicroTime,
    /// io.debezium.time.NanoTime
    NanoTime,
    /// org.apache.kafka.connect.data.Time (ms)
    ConnectTime,
    /// io.debezium.data.Json
    Json,
    /// io.debezium.data.Enum
    Enum,
    /// io.debezium.data.EnumSet
    EnumSet,
    /// io.debezium.data.Uuid
    Uuid,
}

/// A generated column.
#[derive(Clone, Debug)]
pub struct GenColumn {
    /// Name.
    pub name: &'static str,
    /// Type.
    pub ty: GenType,
    /// Whether it may be null.
    pub optional: bool,
}

const WORDS: &[&str] = &[
    "apple",
    "Zürich",
    "naïve café",
    "日本語",
    "emoji 🚀",
    "quote \" and \\ backslash",
    "tab\tnew\nline",
    "",
    "Ω≈ç√",
    "plain",
];
const STATES: &[&str] = &["NEW", "PAID", "SHIPPED", "RETURNED", "CANCELLED"];
const DAY_US: i64 = 86_400_000_000;

impl GenType {
    /// The Iceberg type floe must create for it.
    pub fn column_type(self) -> ColumnType {
        match self {
            GenType::Int8 | GenType::Int16 | GenType::Int32 => ColumnType::Int,
            GenType::Int64 => ColumnType::Long,
            GenType::Float32 => ColumnType::Float,
            GenType::Float64 => ColumnType::Double,
            GenType::Boolean => ColumnType::Boolean,
            GenType::Str | GenType::Json | GenType::Enum | GenType::EnumSet | GenType::Uuid => ColumnType::String,
            GenType::Bytes => ColumnType::Binary,
            GenType::Decimal(p, s) => ColumnType::Decimal { precision: p, scale: s },
            GenType::DbzDate | GenType::ConnectDate => ColumnType::Date,
            GenType::DbzTimestamp | GenType::MicroTimestamp | GenType::NanoTimestamp | GenType::ConnectTimestamp => {
                ColumnType::Timestamp
            }
            GenType::ZonedTimestamp => ColumnType::TimestampTz,
            GenType::DbzTime | GenType::MicroTime | GenType::NanoTime | GenType::ConnectTime => ColumnType::Time,
        }
    }

    /// The Connect field schema.
    pub fn field_schema(self, name: &str, optional: bool) -> serde_json::Value {
        let (ty, logical, params): (&str, Option<&str>, Option<serde_json::Value>) = match self {
            GenType::Int8 => ("int8", None, None),
            GenType::Int16 => ("int16", None, None),
            GenType::Int32 => ("int32", None, None),
            GenType::Int64 => ("int64", None, None),
            GenType::Float32 => ("float32", None, None),
            GenType::Float64 => ("float64", None, None),
            GenType::Boolean => ("boolean", None, None),
            GenType::Str => ("string", None, None),
            GenType::Bytes => ("bytes", None, None),
            GenType::Decimal(p, s) => (
                "bytes",
                Some("org.apache.kafka.connect.data.Decimal"),
                Some(json!({"scale": s.to_string(), "connect.decimal.precision": p.to_string()})),
            ),
            GenType::DbzDate => ("int32", Some("io.debezium.time.Date"), None),
            GenType::ConnectDate => ("int32", Some("org.apache.kafka.connect.data.Date"), None),
            GenType::DbzTimestamp => ("int64", Some("io.debezium.time.Timestamp"), None),
            GenType::MicroTimestamp => ("int64", Some("io.debezium.time.MicroTimestamp"), None),
            GenType::NanoTimestamp => ("int64", Some("io.debezium.time.NanoTimestamp"), None),
            GenType::ConnectTimestamp => ("int64", Some("org.apache.kafka.connect.data.Timestamp"), None),
            GenType::ZonedTimestamp => ("string", Some("io.debezium.time.ZonedTimestamp"), None),
            GenType::DbzTime => ("int32", Some("io.debezium.time.Time"), None),
            GenType::MicroTime => ("int64", Some("io.debezium.time.MicroTime"), None),
            GenType::NanoTime => ("int64", Some("io.debezium.time.NanoTime"), None),
            GenType::ConnectTime => ("int32", Some("org.apache.kafka.connect.data.Time"), None),
            GenType::Json => ("string", Some("io.debezium.data.Json"), None),
            GenType::Enum => ("string", Some("io.debezium.data.Enum"), Some(json!({"allowed": STATES.join(",")}))),
            GenType::EnumSet => {
                ("string", Some("io.debezium.data.EnumSet"), Some(json!({"allowed": STATES.join(",")})))
            }
            GenType::Uuid => ("string", Some("io.debezium.data.Uuid"), None),
        };
        let mut f = serde_json::Map::new();
        f.insert("type".into(), json!(ty));
        f.insert("optional".into(), json!(optional));
        if let Some(l) = logical {
            f.insert("name".into(), json!(l));
            f.insert("version".into(), json!(1));
        }
        if let Some(p) = params {
            f.insert("parameters".into(), p);
        }
        f.insert("field".into(), json!(name));
        serde_json::Value::Object(f)
    }

    /// A random source value: the JSON Debezium writes, and the value floe must store.
    pub fn generate(self, rng: &mut impl Rng) -> (serde_json::Value, Value) {
        match self {
            GenType::Int8 => {
                let v: i8 = rng.random();
                (json!(v), Value::Int(v as i32))
            }
            GenType::Int16 => {
                let v: i16 = rng.random();
                (json!(v), Value::Int(v as i32))
            }
            GenType::Int32 => {
                let v: i32 = rng.random_range(-1_000_000..1_000_000);
                (json!(v), Value::Int(v))
            }
            GenType::Int64 => {
                let v: i64 = rng.random();
                (json!(v), Value::Long(v))
            }
            GenType::Float32 => {
                let v: f32 = (rng.random_range(-1e6f32..1e6f32) * 100.0).round() / 100.0;
                (json!(v), Value::Float(OrderedFloat(v)))
            }
            GenType::Float64 => {
                let v: f64 = rng.random_range(-1e9f64..1e9f64);
                (json!(v), Value::Double(OrderedFloat(v)))
            }
            GenType::Boolean => {
                let v: bool = rng.random();
                (json!(v), Value::Boolean(v))
            }
            GenType::Str => {
                let n = rng.random_range(1..4);
                let s: Vec<&str> = (0..n).map(|_| *WORDS.choose(rng).unwrap_or(&"x")).collect();
                let s = format!("{} #{}", s.join(" "), rng.random_range(0..10_000));
                (json!(s), Value::String(s))
            }
            GenType::Bytes => {
                let n = rng.random_range(0..24);
                let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                (json!(BASE64.encode(&b)), Value::Binary(b))
            }
            GenType::Decimal(p, _) => {
                let max = 10i128.pow(p.min(18));
                let v = rng.random_range(-(max - 1)..max);
                (json!(BASE64.encode(minimal_be_bytes(v))), Value::Decimal(v))
            }
            GenType::DbzDate | GenType::ConnectDate => {
                let d: i32 = rng.random_range(-3_650..30_000);
                (json!(d), Value::Date(d))
            }
            GenType::DbzTimestamp | GenType::ConnectTimestamp => {
                let ms: i64 = rng.random_range(-1_000_000_000_000i64..4_000_000_000_000);
                (json!(ms), Value::Timestamp(ms * 1000))
            }
            GenType::MicroTimestamp => {
                let us: i64 = rng.random_range(-1_000_000_000_000_000i64..4_000_000_000_000_000);
                (json!(us), Value::Timestamp(us))
            }
            GenType::NanoTimestamp => {
                let us: i64 = rng.random_range(-1_000_000_000_000_000i64..4_000_000_000_000_000);
                let ns = us * 1000 + rng.random_range(0..1000);
                (json!(ns), Value::Timestamp(us))
            }
            GenType::ZonedTimestamp => {
                let us: i64 = rng.random_range(0..4_000_000_000_000_000);
                let t = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
                // Debezium writes ISO-8601 with an offset; use a non-UTC offset half the time.
                let text = if rng.random() {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                } else {
                    let tz = chrono::FixedOffset::east_opt(5 * 3600 + 1800)
                        .unwrap_or(chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
                    t.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
                };
                (json!(text), Value::TimestampTz(us))
            }
            GenType::DbzTime | GenType::ConnectTime => {
                let ms: i32 = rng.random_range(0..86_400_000);
                (json!(ms), Value::Time(ms as i64 * 1000))
            }
            GenType::MicroTime => {
                let us: i64 = rng.random_range(0..DAY_US);
                (json!(us), Value::Time(us))
            }
            GenType::NanoTime => {
                let us: i64 = rng.random_range(0..DAY_US);
                let ns = us * 1000 + rng.random_range(0..1000);
                (json!(ns), Value::Time(us))
            }
            GenType::Json => {
                let doc =
                    json!({"k": rng.random_range(0..100), "tags": [WORDS.choose(rng).unwrap_or(&"x")]}).to_string();
                (json!(doc), Value::String(doc))
            }
            GenType::Enum => {
                let s = STATES.choose(rng).unwrap_or(&"NEW").to_string();
                (json!(s), Value::String(s))
            }
            GenType::EnumSet => {
                let s = STATES.iter().filter(|_| rng.random_bool(0.4)).copied().collect::<Vec<_>>().join(",");
                (json!(s), Value::String(s))
            }
            GenType::Uuid => {
                let s = format!("{:032x}", rng.random::<u128>());
                let s = format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32]);
                (json!(s), Value::String(s))
            }
        }
    }
}

/// Minimal big-endian two's complement bytes of an unscaled decimal.
pub fn minimal_be_bytes(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}
