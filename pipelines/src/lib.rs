//! floe pipelines: the standard CDC ingestion pipeline, the Rust pipeline API, and the
//! pieces of the `floe` CLI.
//!
//! ```text
//!   pipeline.toml ─┐
//!                  ├─► PipelineConfig ──► planner (tables, schemas, resume offsets) ──► runner
//!   api::Pipeline ─┘                                                            (timely workers,
//!                                                                                dataflow.rs)
//! ```
#![deny(missing_docs)]

pub mod allocator;
pub mod api;
pub mod bench;
pub mod bench_decoder;
pub mod bench_index;
pub mod bench_maintenance;
pub mod bench_spark;
pub mod cli;
pub mod dataflow;
pub mod demo;
pub mod erase;
pub mod kafka_run;
pub mod leases;
pub mod maintain;
pub mod metrics_server;
pub mod planner;
pub mod record;
pub mod runner;
pub mod schema_cli;
pub mod schema_watch;
pub mod signals;
pub mod table_health;
