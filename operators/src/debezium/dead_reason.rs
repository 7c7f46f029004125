//! Why a record became a dead letter: a closed set of kinds, each with the detail a person
//! needs to fix the record or its producer.
//!
//! ```text
//!   serde_json error ──► classify ──┬─ a column's value was refused ──► TypeMismatch | OutOfRange
//!                                   │  (the seed left a hint, see `hint`)
//!                                   ├─ recursion limit ─────────────► NestingTooDeep
//!                                   └─ anything else ───────────────► Unparseable
//!   decoder checks ──► MissingKey | KeyMismatch | UnknownOp | NotNullViolated
//! ```
//!
//! # Invariants
//! - `Display` is the text of the dead-letter table's `reason` column; [`DeadReason::kind`]
//!   is its `reason_kind` column, one of [`DeadReason::KINDS`].
//! - A key mismatch names both values: the record key's and the row image's.
//! - The hint a value seed leaves is per thread and taken by the next classification, so a
//!   stale hint never labels a later error.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeadReason {
    /// Not JSON, or not a Debezium change event (or its schema cannot be read).
    Unparseable(String),
    /// No key: neither the record key nor the row image has the key columns.
    MissingKey(String),
    /// The record key and the key columns of the row image disagree.
    KeyMismatch {
        /// The record key's values.
        record: String,
        /// The row image's key columns.
        image: String,
    },
    /// `op` is missing or not one of `c`, `r`, `u`, `d`.
    UnknownOp(String),
    /// A value of the wrong type for its column, or a field the table does not have.
    TypeMismatch(String),
    /// A value of the right type outside its column's range.
    OutOfRange(String),
    /// A NOT NULL column (or a key column) is NULL.
    NotNullViolated(String),
    /// JSON nested deeper than the parser allows.
    NestingTooDeep(String),
}

impl DeadReason {
    /// Every kind, as [`DeadReason::kind`] names it.
    pub const KINDS: [&'static str; 8] = [
        "unparseable",
        "missing_key",
        "key_mismatch",
        "unknown_op",
        "type_mismatch",
        "out_of_range",
        "not_null_violated",
        "nesting_too_deep",
    ];

    /// The kind, for the dead-letter table's `reason_kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            DeadReason::Unparseable(_) => "unparseable",
            DeadReason::MissingKey(_) => "missing_key",
            DeadReason::KeyMismatch { .. } => "key_mismatch",
            DeadReason::UnknownOp(_) => "unknown_op",
            DeadReason::TypeMismatch(_) => "type_mismatch",
            DeadReason::OutOfRange(_) => "out_of_range",
            DeadReason::NotNullViolated(_) => "not_null_violated",
            DeadReason::NestingTooDeep(_) => "nesting_too_deep",
        }
    }

    /// A JSON error while parsing a payload or key, by what went wrong: a value a column
    /// refused (its seed left a hint), nesting too deep, or unreadable JSON.
    pub fn of_json(e: &serde_json::Error) -> DeadReason {
        let text = e.to_string();
        match take_hint() {
            Some(Hint::Range) => DeadReason::OutOfRange(text),
            Some(Hint::Type) => DeadReason::TypeMismatch(text),
            None if text.starts_with("recursion limit exceeded") => DeadReason::NestingTooDeep(text),
            None if e.classify() == serde_json::error::Category::Data => DeadReason::TypeMismatch(text),
            None => DeadReason::Unparseable(text),
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadReason::KeyMismatch { record, image } => {
                write!(f, "key mismatch: the record key is {record} but the row image's key is {image}")
            }
            DeadReason::Unparseable(t)
            | DeadReason::MissingKey(t)
            | DeadReason::UnknownOp(t)
            | DeadReason::TypeMismatch(t)
            | DeadReason::OutOfRange(t)
            | DeadReason::NotNullViolated(t)
            | DeadReason::NestingTooDeep(t) => f.write_str(t),
        }
    }
}

/// What a value seed saw when it refused a value; serde's errors carry only text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hint {
    /// The value's type does not fit the column.
    Type,
    /// The value's type fits, its magnitude or format does not.
    Range,
}

thread_local! {
    static HINT: Cell<Option<Hint>> = const { Cell::new(None) };
}

/// Leaves `hint` for the classification of the error being raised.
pub(crate) fn hint(hint: Hint) {
    HINT.with(|h| h.set(Some(hint)));
}

/// Whether a hint was left since the last classification.
pub(crate) fn has_hint() -> bool {
    HINT.with(|h| h.get().is_some())
}

/// Takes the hint left since the last classification.
pub(crate) fn take_hint() -> Option<Hint> {
    HINT.with(Cell::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_and_distinct() {
        let all = [
            DeadReason::Unparseable(String::new()),
            DeadReason::MissingKey(String::new()),
            DeadReason::KeyMismatch { record: String::new(), image: String::new() },
            DeadReason::UnknownOp(String::new()),
            DeadReason::TypeMismatch(String::new()),
            DeadReason::OutOfRange(String::new()),
            DeadReason::NotNullViolated(String::new()),
            DeadReason::NestingTooDeep(String::new()),
        ];
        let kinds: Vec<&str> = all.iter().map(DeadReason::kind).collect();
        assert_eq!(kinds, DeadReason::KINDS);
    }

    #[test]
    fn classification_uses_the_hint_once() {
        let e = serde_json::from_str::<serde_json::Value>("{").expect_err("eof");
        hint(Hint::Range);
        assert_eq!(DeadReason::of_json(&e).kind(), "out_of_range");
        assert_eq!(DeadReason::of_json(&e).kind(), "unparseable");
        let deep = "[".repeat(200) + &"]".repeat(200);
        let e = serde_json::from_str::<serde_json::Value>(&deep).expect_err("deep");
        assert_eq!(DeadReason::of_json(&e).kind(), "nesting_too_deep");
        let e = serde_json::from_str::<u8>("\"x\"").expect_err("type");
        assert_eq!(DeadReason::of_json(&e).kind(), "type_mismatch");
    }

    #[test]
    fn a_key_mismatch_names_both_values() {
        let r = DeadReason::KeyMismatch { record: "[7]".into(), image: "[8]".into() };
        assert_eq!(r.to_string(), "key mismatch: the record key is [7] but the row image's key is [8]");
    }
}
