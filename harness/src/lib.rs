//! floe's deterministic test and benchmark toolkit.
//!
//! ```text
//!   WorkloadSpec(seed) ──► Generator ──► KafkaRecord ──► kcat replay log (or a broker)
//!                              │
//!                              └──► Model (the oracle) ──► verify ◄── tables read back
//! ```
//!
//! The harness is deliberately independent of floe's operators: it encodes Debezium
//! messages and computes expected values itself, so it can catch floe's mistakes.
#![deny(missing_docs)]

pub mod columns;
pub mod fuzz_input;
pub mod generator;
pub mod kcat;
pub mod model;
pub mod race;
pub mod tables;
pub mod verify;

pub use generator::{Generator, KafkaRecord, SchemaEdit, SchemaStep, WorkloadSpec};
pub use model::{Model, TableModel};
