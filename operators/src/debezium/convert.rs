//! JSON value → typed [`Value`] for one column, streaming (no JSON tree is built).
//!
//! [`ValueSeed`] is a serde `DeserializeSeed`: the payload parser hands it each field's JSON
//! token together with the column's [`Conversion`], and it produces the Iceberg-unit value.
//!
//! # Invariants
//! - Every rejection names the column and says what was expected, and leaves a hint (type
//!   or range) that the decoder's [`super::dead_reason::DeadReason`] classification takes.
//! - No silent truncation: out-of-range integers, over-precise decimals and times outside a
//!   day are errors, never clamped.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use floe_engine::value::Value;
use ordered_float::OrderedFloat;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::connect_schema::{Conversion, TimeUnit};
use super::dead_reason::{Hint, hint};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Seed converting one JSON value for a named column.
#[derive(Clone, Copy)]
pub struct ValueSeed<'a> {
    /// How to convert.
    pub conversion: Conversion,
    /// Column name, for messages.
    pub column: &'a str,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    /// A value of the column's type outside its range (or precision).
    fn fail<E: de::Error>(&self, what: impl fmt::Display) -> E {
        hint(Hint::Range);
        E::custom(format!("column `{}`: {what}", self.column))
    }

    /// A value that is not of the column's type, or not in its type's text form.
    fn malformed<E: de::Error>(&self, what: impl fmt::Display) -> E {
        hint(Hint::Type);
        E::custom(format!("column `{}`: {what}", self.column))
    }

    fn mismatch<E: de::Error>(&self, got: impl fmt::Display) -> E {
        self.malformed(format!("expected {}, got {got}", expected(self.conversion)))
    }

    fn integer<E: de::Error>(&self, v: i128) -> Result<Value, E> {
        let as_i64 = || i64::try_from(v).map_err(|_| self.fail(format!("{v} does not fit in 64 bits")));
        match self.conversion {
            Conversion::Int { min, max } => {
                if v < min as i128 || v > max as i128 {
                    return Err(self.fail(format!("{v} is outside [{min}, {max}]")));
                }
                Ok(Value::Int(v as i32))
            }
            Conversion::Long => Ok(Value::Long(as_i64()?)),
            Conversion::Float => Ok(Value::Float(OrderedFloat(v as f32))),
            Conversion::Double => Ok(Value::Double(OrderedFloat(v as f64))),
            Conversion::Date | Conversion::DeclaredDate => {
                i32::try_from(v).map(Value::Date).map_err(|_| self.fail(format!("{v} days is out of range")))
            }
            Conversion::Time(unit) => {
                let micros = to_micros(as_i64()?, unit).ok_or_else(|| self.fail(format!("{v} overflows")))?;
                if !(0..MICROS_PER_DAY).contains(&micros) {
                    return Err(self.fail(format!("time {micros}µs is outside one day")));
                }
                Ok(Value::Time(micros))
            }
            Conversion::Timestamp(unit) => {
                to_micros(as_i64()?, unit).map(Value::Timestamp).ok_or_else(|| self.fail(format!("{v} overflows")))
            }
            Conversion::DeclaredTimestamp { zoned } => {
                let micros = as_i64()?;
                Ok(if zoned { Value::TimestampTz(micros) } else { Value::Timestamp(micros) })
            }
            Conversion::DecimalText { precision, scale } => {
                decimal_from_text(&v.to_string(), precision, scale).map(Value::Decimal).map_err(|m| self.fail(m))
            }
            Conversion::JsonText => Ok(Value::String(v.to_string())),
            _ => Err(self.mismatch(format!("the number {v}"))),
        }
    }
}

fn expected(c: Conversion) -> &'static str {
    match c {
        Conversion::Boolean => "a boolean",
        Conversion::Int { .. } | Conversion::Long => "an integer",
        Conversion::Float | Conversion::Double => "a number",
        Conversion::String => "a string",
        Conversion::Bytes => "a base64 string",
        Conversion::Decimal { .. } | Conversion::WideDecimalText { .. } => "a base64 decimal",
        Conversion::Date => "an integer day count",
        Conversion::Time(_) | Conversion::Timestamp(_) => "an integer time",
        Conversion::ZonedTimestamp => "an ISO-8601 timestamp string",
        Conversion::JsonText => "a JSON value",
        Conversion::DecimalText { .. } => "a base64 decimal or a number",
        Conversion::DeclaredDate => "a day count or YYYY-MM-DD",
        Conversion::DeclaredTimestamp { .. } => "microseconds or an ISO-8601 timestamp",
    }
}

fn to_micros(v: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Millis => v.checked_mul(1000),
        TimeUnit::Micros => Some(v),
        TimeUnit::Nanos => Some(v.div_euclid(1000)),
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} for column `{}`", expected(self.conversion), self.column)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        match self.conversion {
            Conversion::Boolean => Ok(Value::Boolean(v)),
            Conversion::JsonText => Ok(Value::String(v.to_string())),
            _ => Err(self.mismatch(v)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.integer(v as i128)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.integer(v as i128)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match self.conversion {
            Conversion::Float => Ok(Value::Float(OrderedFloat(v as f32))),
            Conversion::Double => Ok(Value::Double(OrderedFloat(v))),
            Conversion::DecimalText { precision, scale } => {
                decimal_from_text(&v.to_string(), precision, scale).map(Value::Decimal).map_err(|m| self.fail(m))
            }
            Conversion::JsonText => Ok(Value::String(v.to_string())),
            _ => Err(self.mismatch(format!("the number {v}"))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        match self.conversion {
            Conversion::String => Ok(Value::String(v.to_string())),
            Conversion::Bytes => {
                BASE64.decode(v).map(Value::Binary).map_err(|e| self.malformed(format!("invalid base64: {e}")))
            }
            Conversion::Decimal { precision, .. } | Conversion::DecimalText { precision, .. } => {
                let bytes = BASE64.decode(v).map_err(|e| self.malformed(format!("invalid base64 decimal: {e}")))?;
                let unscaled = unscaled_from_bytes(&bytes).ok_or_else(|| self.fail("decimal wider than 128 bits"))?;
                check_precision(unscaled, precision).map_err(|m| self.fail(m))?;
                Ok(Value::Decimal(unscaled))
            }
            Conversion::WideDecimalText { scale } => {
                let bytes = BASE64.decode(v).map_err(|e| self.malformed(format!("invalid base64 decimal: {e}")))?;
                Ok(Value::String(big_decimal_text(&bytes, scale)))
            }
            Conversion::ZonedTimestamp | Conversion::DeclaredTimestamp { zoned: true } => {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| Value::TimestampTz(t.timestamp_micros()))
                    .map_err(|e| self.malformed(format!("`{v}` is not an ISO-8601 timestamp: {e}")))
            }
            Conversion::DeclaredTimestamp { zoned: false } => parse_naive_timestamp(v)
                .map(Value::Timestamp)
                .ok_or_else(|| self.malformed(format!("`{v}` is not an ISO-8601 timestamp"))),
            Conversion::DeclaredDate => NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(|d| Value::Date((d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32))
                .map_err(|e| self.malformed(format!("`{v}` is not a date: {e}"))),
            Conversion::JsonText => Ok(Value::String(serde_json::to_string(v).unwrap_or_default())),
            _ => Err(self.mismatch(format!("the string {v:?}"))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        if self.conversion != Conversion::JsonText {
            return Err(self.mismatch("an object"));
        }
        let v: serde_json::Value = de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        if self.conversion != Conversion::JsonText {
            return Err(self.mismatch("an array"));
        }
        let v: serde_json::Value = de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Value::String(v.to_string()))
    }
}

fn parse_naive_timestamp(v: &str) -> Option<i64> {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// Big-endian two's complement bytes → i128, if they fit.
pub fn unscaled_from_bytes(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[0] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    let (excess, tail) = if bytes.len() > 16 { bytes.split_at(bytes.len() - 16) } else { (&[][..], bytes) };
    if excess.iter().any(|&b| b != fill) {
        return None;
    }
    let mut buf = [fill; 16];
    buf[16 - tail.len()..].copy_from_slice(tail);
    let v = i128::from_be_bytes(buf);
    // Sign of the 128-bit value must match the sign of the original bytes.
    ((v < 0) == negative).then_some(v)
}

fn check_precision(unscaled: i128, precision: u32) -> Result<(), String> {
    let limit = 10i128.checked_pow(precision).unwrap_or(i128::MAX);
    if unscaled.unsigned_abs() >= limit.unsigned_abs() {
        return Err(format!("{unscaled} has more than {precision} digits"));
    }
    Ok(())
}

/// `"-12.5"` at scale 2 → `-1250`; more fractional digits than the scale is an error.
pub fn decimal_from_text(text: &str, precision: u32, scale: u32) -> Result<i128, String> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !valid(int_part) || !valid(frac_part) {
        return Err(format!("`{text}` is not a decimal number"));
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale as usize {
        return Err(format!("`{text}` has more than {scale} fractional digits"));
    }
    let mut unscaled: i128 = 0;
    let push = |acc: i128, c: char| -> Option<i128> { acc.checked_mul(10)?.checked_add((c as u8 - b'0') as i128) };
    for c in int_part.chars() {
        unscaled = push(unscaled, c).ok_or_else(|| format!("`{text}` overflows"))?;
    }
    for i in 0..scale as usize {
        let c = frac_trimmed.chars().nth(i).unwrap_or('0');
        unscaled = push(unscaled, c).ok_or_else(|| format!("`{text}` overflows"))?;
    }
    let unscaled = if negative { -unscaled } else { unscaled };
    check_precision(unscaled, precision)?;
    Ok(unscaled)
}

/// Decimal text of an arbitrarily wide two's complement unscaled value.
fn big_decimal_text(bytes: &[u8], scale: u32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude as big-endian base-256 digits.
    let mut mag: Vec<u8> = if negative {
        let mut inv: Vec<u8> = bytes.iter().map(|b| !b).collect();
        for b in inv.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
        inv
    } else {
        bytes.to_vec()
    };
    // Repeated division by 10.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | *b as u32;
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    while digits.len() <= scale as usize {
        digits.push(b'0');
    }
    digits.reverse();
    let split = digits.len() - scale as usize;
    let mut s = String::from_utf8_lossy(&digits[..split]).to_string();
    if scale > 0 {
        s.push('.');
        s.push_str(&String::from_utf8_lossy(&digits[split..]));
    }
    if negative { format!("-{s}") } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(conversion: Conversion, json: &str) -> Result<Value, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        ValueSeed { conversion, column: "c" }.deserialize(&mut de).map_err(|e| e.to_string())
    }

    #[test]
    fn decimals_from_base64_two_complement() {
        // 12345 = 0x3039; -12345 = 0xCFC7
        assert_eq!(convert(Conversion::Decimal { precision: 10, scale: 2 }, "\"MDk=\""), Ok(Value::Decimal(12345)));
        assert_eq!(convert(Conversion::Decimal { precision: 10, scale: 2 }, "\"z8c=\""), Ok(Value::Decimal(-12345)));
        let err = convert(Conversion::Decimal { precision: 3, scale: 0 }, "\"MDk=\"").expect_err("too many digits");
        assert!(err.contains("column `c`") && err.contains("more than 3 digits"), "{err}");
    }

    #[test]
    fn times_and_timestamps_in_micros() {
        assert_eq!(convert(Conversion::Timestamp(TimeUnit::Millis), "1500"), Ok(Value::Timestamp(1_500_000)));
        assert_eq!(convert(Conversion::Timestamp(TimeUnit::Nanos), "-1"), Ok(Value::Timestamp(-1)));
        assert_eq!(convert(Conversion::Time(TimeUnit::Millis), "1000"), Ok(Value::Time(1_000_000)));
        assert!(convert(Conversion::Time(TimeUnit::Micros), "86400000000").is_err());
        assert_eq!(
            convert(Conversion::ZonedTimestamp, "\"1970-01-01T00:00:01.5+01:00\""),
            Ok(Value::TimestampTz(-3_598_500_000))
        );
    }

    #[test]
    fn ints_are_range_checked() {
        let int8 = Conversion::Int { min: -128, max: 127 };
        assert_eq!(convert(int8, "127"), Ok(Value::Int(127)));
        assert!(convert(int8, "128").expect_err("range").contains("outside"));
        assert!(convert(Conversion::Long, "\"x\"").expect_err("type").contains("expected an integer"));
    }

    #[test]
    fn structs_become_json_text() {
        assert_eq!(convert(Conversion::JsonText, r#"{"a":[1,2]}"#), Ok(Value::String(r#"{"a":[1,2]}"#.into())));
    }

    #[test]
    fn decimal_text_parsing() {
        assert_eq!(decimal_from_text("-12.5", 10, 2), Ok(-1250));
        assert_eq!(decimal_from_text("3", 10, 2), Ok(300));
        assert!(decimal_from_text("1.234", 10, 2).is_err());
        assert!(decimal_from_text("abc", 10, 2).is_err());
    }

    #[test]
    fn wide_decimal_text() {
        assert_eq!(big_decimal_text(&[0x30, 0x39], 2), "123.45");
        assert_eq!(big_decimal_text(&[0xcf, 0xc7], 2), "-123.45");
        assert_eq!(big_decimal_text(&[0x05], 3), "0.005");
    }

    #[test]
    fn unscaled_sign_extension() {
        assert_eq!(unscaled_from_bytes(&[0xff; 20]), Some(-1));
        assert_eq!(unscaled_from_bytes(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
