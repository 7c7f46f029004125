//! floe's end-to-end tests, one module per capability, linked into one test binary.
//!
//! They share a binary because each links the whole stack (iceberg, rdkafka, timely):
//! twelve binaries cost twelve links and ~3 GB of disk for nothing. nextest still runs
//! every test in its own process, so tests that run a pipeline in-process stay isolated;
//! filter a module with `-E 'test(/^kafka::/)'`.
//!
//! The stable fuzzer (`tests/fuzz.rs`) keeps its own binary: it installs a counting global
//! allocator that must not sit under these tests.

mod bad_input;
mod compaction;
mod erase;
mod expiry;
mod kafka;
mod kill9;
mod metrics;
mod oracle;
mod pipelines;
mod schema_evolution;
mod schema_live;
mod spark_interop;
