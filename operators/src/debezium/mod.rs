//! Debezium change events as Kafka Connect's JsonConverter writes them: schemas, value
//! conversion, payload parsing, and the per-table decoder.

pub mod connect_schema;
pub mod convert;
pub mod decoder;
pub mod envelope;

pub use decoder::{DeadLetter, Decoded, Event, TableDecoder};
pub use envelope::Op;
