//! floe's runtime: the epoch model, catalog and file IO, the commit protocol,
//! configuration, metrics and logging.
//!
//! ```text
//!   config ──► pipeline plan ──► timely workers ──► operators (floe-operators)
//!                                    │                    │
//!                                    │ epochs (epoch.rs)  │ files
//!                                    ▼                    ▼
//!                              commit protocol (commit.rs) ──► catalog (catalog.rs)
//! ```
//!
//! Library crates return [`Error`]; binaries wrap it with `anyhow` context.
#![deny(missing_docs)]

pub mod arrow_value;
pub mod catalog;
pub mod cleanup;
pub mod commit;
pub mod config;
pub mod deletion_vector;
pub mod epoch;
pub mod error;
pub mod expiry;
pub mod faults;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod offsets;
pub mod record;
pub mod replay_format;
pub mod runtime;
pub mod schema;
pub mod schema_audit;
pub mod schema_commit;
pub mod schema_drift;
pub mod table_files;
pub mod table_settings;
pub mod value;

pub use error::{Error, ErrorKind, Result};
