//! Reusable floe dataflow operators, each a thin timely shell over a core that is tested
//! without timely.
//!
//! ```text
//!   replay_source ──► decode ──┬─► route::fan_out ─┬─► consolidate ──► base_writer ──┐
//!   (SourceProgress)───────┐   │                   └─────────────────► cdc_writer ───┤
//!                          │   └─► route::dead_letters ───────────────► dead_letter ──┤
//!                          └──────────────────────────────────────────────► committer ◄┘
//! ```
#![deny(missing_docs)]

pub mod arrow_rows;
pub mod base_index;
pub mod base_writer;
pub mod bucket;
pub mod bucket_rewrite;
pub mod cdc_writer;
pub mod committer;
pub mod committer_core;
pub mod consolidate;
pub mod dead_letter_writer;
pub mod debezium;
pub mod decode;
pub mod delete_files;
pub mod epoch_writer;
pub mod erase;
pub mod erase_proof;
pub mod erasure_requests;
pub mod files;
#[cfg(feature = "kafka")]
pub mod kafka_client;
#[cfg(feature = "kafka")]
pub mod kafka_source;
pub mod kcat_line;
pub mod key_index;
pub mod key_index_rebuild;
pub mod parquet_encoding;
pub mod plan;
pub mod replay_log;
pub mod replay_source;
pub mod route;
pub mod row_view;
pub mod schema_versions;
pub mod snapshot_rewrite;
pub mod source_clock;
pub mod upsert;
