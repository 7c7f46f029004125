//! A byte cursor over JSON text, for the decoder's fast path: whitespace, strings, numbers
//! and validating skips, with no allocation unless a string has escapes.
//!
//! ```text
//!   {"id": 7, "name": "a\"b", "doc": {"x": [1, 2]}}
//!    └str┘ └num   └str┘ └str (escaped → Cow::Owned)
//!                                └ skip_span: validated, returned as raw text
//! ```
//!
//! # Invariants
//! - Whatever the cursor accepts, serde_json (with `float_roundtrip`) accepts too, and reads
//!   to the same value. The cursor may refuse input serde_json accepts: that is [`Unsure`],
//!   never an error of its own, and the caller then lets serde_json decide.
//! - Every string it passes over is checked: well-formed escapes, no raw control
//!   characters, valid UTF-8. Skipped values are checked as strictly as read ones.
//! - Nesting is bounded by [`MAX_DEPTH`], below serde_json's recursion limit of 128, so a
//!   document serde_json refuses as too deep is never accepted here.

use std::borrow::Cow;
use std::fmt;

/// The deepest container nesting (counted from the document's top) the cursor reads.
pub const MAX_DEPTH: usize = 100;

/// The cursor cannot vouch for the input; the caller falls back to serde_json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsure;

impl fmt::Display for Unsure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not on the fast path")
    }
}

impl std::error::Error for Unsure {}

impl serde::de::Error for Unsure {
    fn custom<T: fmt::Display>(_: T) -> Unsure {
        Unsure
    }
}

/// A fast-path result.
pub type Scan<T> = Result<T, Unsure>;

/// A JSON number as serde_json classifies it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// A number with a fraction or exponent (or `-0`).
    F64(f64),
}

/// A position in JSON text.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    /// The text.
    pub bytes: &'a [u8],
    /// The next byte to read.
    pub at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    /// Skips JSON whitespace.
    #[inline]
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte, if any.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte`, or is unsure.
    #[inline]
    pub fn eat(&mut self, byte: u8) -> Scan<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Consumes `literal` (`true`, `false`, `null`), or is unsure.
    pub fn literal(&mut self, literal: &[u8]) -> Scan<()> {
        if self.bytes[self.at..].starts_with(literal) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Whether the rest is whitespace only.
    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.at == self.bytes.len()
    }

    /// A string at the cursor (its opening quote): the raw content between the quotes, and
    /// whether it holds escapes. The content is checked (escapes, controls, UTF-8).
    pub fn string_raw(&mut self) -> Scan<(&'a [u8], bool)> {
        let (content, escaped, high) = self.scan_string()?;
        if high && std::str::from_utf8(content).is_err() {
            return Err(Unsure);
        }
        Ok((content, escaped))
    }

    /// A string's value: borrowed when it has no escapes, else unescaped.
    pub fn string(&mut self) -> Scan<Cow<'a, str>> {
        let (content, escaped, _) = self.scan_string()?;
        // The one UTF-8 check of the content (escapes are ASCII).
        let text = std::str::from_utf8(content).map_err(|_| Unsure)?;
        if escaped { unescape(text).map(Cow::Owned) } else { Ok(Cow::Borrowed(text)) }
    }

    /// Scans a string's escapes and control characters (not its UTF-8): its raw content,
    /// whether it holds escapes, and whether it holds non-ASCII bytes.
    fn scan_string(&mut self) -> Scan<(&'a [u8], bool, bool)> {
        self.eat(b'"')?;
        let start = self.at;
        let (mut escaped, mut high) = (false, false);
        loop {
            let rest = &self.bytes[self.at..];
            let hit = memchr::memchr2(b'"', b'\\', rest).ok_or(Unsure)?;
            let run = &rest[..hit];
            if run.iter().any(|&b| b < 0x20) {
                return Err(Unsure);
            }
            high |= !run.is_ascii();
            self.at += hit + 1;
            if rest[hit] == b'"' {
                return Ok((&self.bytes[start..self.at - 1], escaped, high));
            }
            escaped = true;
            let &e = self.bytes.get(self.at).ok_or(Unsure)?;
            self.at += 1;
            match e {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    hex4(self.bytes.get(self.at..self.at + 4).ok_or(Unsure)?)?;
                    self.at += 4;
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// Reads the object at the cursor: `member` gets each key and the cursor at its value,
    /// and must consume the value.
    pub fn object(&mut self, mut member: impl FnMut(&mut Cursor<'a>, Cow<'a, str>) -> Scan<()>) -> Scan<()> {
        self.delimited(b'{', b'}', |c| {
            let name = c.string()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            member(c, name)
        })
    }

    /// Reads `open`, items separated by commas (each read by `item`, which starts at the
    /// item and must consume it), and `close`, with whitespace anywhere between.
    fn delimited(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Cursor<'a>) -> Scan<()>) -> Scan<()> {
        self.eat(open)?;
        self.ws();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.ws();
            item(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b) if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// A number at the cursor, classified as serde_json classifies it.
    pub fn number(&mut self) -> Scan<Number> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Unsure),
        }
        let int_end = self.at;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            float = true;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            float = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.required_digits()?;
        }
        if float {
            // ASCII by construction; std's parse is correctly rounded, as is serde_json's
            // with `float_roundtrip`. An overflow is serde_json's error, not infinity.
            let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| Unsure)?;
            let v: f64 = text.parse().map_err(|_| Unsure)?;
            return if v.is_finite() { Ok(Number::F64(v)) } else { Err(Unsure) };
        }
        let digits = &self.bytes[int_start..int_end];
        if digits.len() > 20 {
            return Err(Unsure);
        }
        let mut significand: u64 = 0;
        for &d in digits {
            significand = significand.checked_mul(10).and_then(|s| s.checked_add(u64::from(d - b'0'))).ok_or(Unsure)?;
        }
        Ok(match (negative, significand) {
            (false, s) => Number::U64(s),
            // serde_json reads `-0` as a float.
            (true, 0) => Number::F64(-0.0),
            (true, s) if s <= 1 << 63 => Number::I64((s as i64).wrapping_neg()),
            (true, _) => return Err(Unsure),
        })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Scan<()> {
        let start = self.at;
        self.digits();
        if self.at == start { Err(Unsure) } else { Ok(()) }
    }

    /// Skips one value, checking it; `depth` is the nesting the value sits at.
    pub fn skip(&mut self, depth: usize) -> Scan<()> {
        match self.peek().ok_or(Unsure)? {
            b'"' => self.string_raw().map(|_| ()),
            b'{' | b'[' if depth >= MAX_DEPTH => Err(Unsure),
            b'{' => self.delimited(b'{', b'}', |c| {
                c.string_raw()?;
                c.ws();
                c.eat(b':')?;
                c.ws();
                c.skip(depth + 1)
            }),
            b'[' => self.delimited(b'[', b']', |c| c.skip(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => Err(Unsure),
        }
    }

    /// Skips one value and returns its raw text.
    pub fn skip_span(&mut self, depth: usize) -> Scan<&'a [u8]> {
        let start = self.at;
        self.skip(depth)?;
        Ok(&self.bytes[start..self.at])
    }
}

fn hex4(digits: &[u8]) -> Scan<u32> {
    let mut v = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Unsure),
        };
        v = v * 16 + u32::from(n);
    }
    Ok(v)
}

/// Unescapes checked string content. A lone surrogate is unsure (serde_json refuses it).
fn unescape(text: &str) -> Scan<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(offset) = memchr::memchr(b'\\', &bytes[i..]) {
        out.push_str(&text[i..i + offset]);
        i += offset + 1;
        let e = bytes[i];
        i += 1;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = hex4(&bytes[i..i + 4])?;
                i += 4;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if bytes.get(i..i + 2) != Some(b"\\u") {
                            return Err(Unsure);
                        }
                        let second = hex4(bytes.get(i + 2..i + 6).ok_or(Unsure)?)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(Unsure);
                        }
                        i += 6;
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Unsure),
                    c => c,
                };
                char::from_u32(code).ok_or(Unsure)?
            }
            _ => return Err(Unsure),
        };
        out.push(c);
    }
    out.push_str(&text[i..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Scan<Number> {
        let mut c = Cursor::new(text.as_bytes());
        let n = c.number()?;
        if c.at == text.len() { Ok(n) } else { Err(Unsure) }
    }

    #[test]
    fn numbers_are_classified_as_serde_json_does() {
        assert_eq!(number("0"), Ok(Number::U64(0)));
        assert_eq!(number("18446744073709551615"), Ok(Number::U64(u64::MAX)));
        assert_eq!(number("-9223372036854775808"), Ok(Number::I64(i64::MIN)));
        assert_eq!(number("-7"), Ok(Number::I64(-7)));
        assert!(matches!(number("-0"), Ok(Number::F64(v)) if v == 0.0 && v.is_sign_negative()));
        assert_eq!(number("1.5e3"), Ok(Number::F64(1500.0)));
        assert_eq!(number("2E-1"), Ok(Number::F64(0.2)));
        for bad in ["01", "1.", ".5", "-", "1e", "1e+", "+1", "inf", "NaN", "1e400", "18446744073709551616"] {
            assert_eq!(number(bad), Err(Unsure), "{bad}");
        }
        // Whatever is accepted, serde_json reads the same.
        for text in ["0", "-0", "3.141592653589793", "1e-300", "-123456789012345678", "4.9e-324"] {
            let ours = number(text).expect(text);
            let theirs: serde_json::Value = serde_json::from_str(text).expect(text);
            let same = match ours {
                Number::U64(v) => theirs.as_u64() == Some(v),
                Number::I64(v) => theirs.as_i64() == Some(v),
                Number::F64(v) => theirs.as_f64().map(f64::to_bits) == Some(v.to_bits()),
            };
            assert!(same, "{text}: {ours:?} against {theirs:?}");
        }
    }

    #[test]
    fn strings_are_checked_and_unescaped() {
        fn read(text: &[u8]) -> Scan<Cow<'_, str>> {
            Cursor::new(text).string()
        }
        assert_eq!(read(br#""plain""#), Ok(Cow::Borrowed("plain")));
        assert_eq!(read(br#""a\"b\\c\n\u00e9\ud83d\ude00""#).map(Cow::into_owned), Ok("a\"b\\c\né😀".to_string()));
        assert_eq!(read("\"é\"".as_bytes()), Ok(Cow::Borrowed("é")));
        for bad in [&b"\"a"[..], b"\"\\x\"", b"\"\\u12\"", b"\"\x01\"", b"\"\xff\"", br#""\ud800""#, br#""\udc00x""#] {
            assert_eq!(read(bad), Err(Unsure), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn skips_check_what_they_skip() {
        let skip = |text: &str| {
            let mut c = Cursor::new(text.as_bytes());
            c.skip(0).map(|()| c.at_end())
        };
        assert_eq!(skip(r#"{"a": [1, -2.5e3, true, false, null, "x", {}], "b": {"c": []}}"#), Ok(true));
        for bad in [r#"{"a" 1}"#, r#"{"a":1,}"#, "[1 2]", "[1,]", "tru", r#"{"a":01}"#, r#"{1:2}"#] {
            assert_eq!(skip(bad), Err(Unsure), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(skip(&deep), Err(Unsure));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(skip(&ok), Ok(true));
    }
}
