//! Debezium change events as Kafka Connect's JsonConverter writes them: schemas, value
//! conversion, payload parsing, and the per-table decoder.

pub mod connect_schema;
pub mod convert;
pub mod dead_reason;
pub mod decoder;
pub mod envelope;
pub mod json_scan;
pub mod payload_parser;
pub mod record_key;

pub use dead_reason::DeadReason;
pub use decoder::{DeadLetter, Decoded, Event, TableDecoder};
pub use envelope::Op;
