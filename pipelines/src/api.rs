//! Pipelines declared in Rust: source → decode → optional transform → CDC and/or base table,
//! in a few lines.
//!
//! ```no_run
//! use floe_pipelines::api::Pipeline;
//! use floe_engine::value::Value;
//!
//! let outcome = Pipeline::new("shop")
//!     .warehouse("warehouse")                       // SQLite catalog + local warehouse
//!     .replay("changes.jsonl")                      // or .kafka("broker:9092")
//!     .table("shop.inventory.orders", |t| {
//!         t.base("base.orders").cdc("cdc.orders").buckets(16).transform(|row| {
//!             if row.get_str("customer") == Some("test") {
//!                 return false;                     // drop test orders
//!             }
//!             row.set("note", Value::Null).is_ok()  // and never keep free-text notes
//!         })
//!     })
//!     .run()
//!     .expect("pipeline");
//! println!("{}", outcome.metrics.summary());
//! ```
//!
//! The builder produces exactly what a pipeline file would (and is validated the same way),
//! plus the transforms, which only code can carry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use floe_engine::config::PipelineConfig;
use floe_engine::error::Result;
use floe_operators::plan::RowTransform;
use floe_operators::row_view::RowMut;

use crate::runner::{RunOptions, RunOutcome, run};

/// A pipeline under construction.
pub struct Pipeline {
    id: String,
    base_dir: PathBuf,
    catalog: Option<(String, String)>,
    source: Option<Source>,
    until_caught_up: bool,
    commit_every: Option<u64>,
    workers: Option<usize>,
    tables: Vec<TableBuilder>,
}

/// One source table under construction.
pub struct TableBuilder {
    topic: String,
    base: Option<String>,
    cdc: Option<String>,
    buckets: Option<u32>,
    key: Option<Vec<String>>,
    upsert: Option<bool>,
    transform: Option<RowTransform>,
    row_type: Option<Vec<String>>,
}

impl TableBuilder {
    /// Maintain the base (upsert) table `namespace.table`.
    pub fn base(mut self, name: &str) -> Self {
        self.base = Some(name.to_string());
        self
    }

    /// Maintain the CDC (ledger) table `namespace.table`.
    pub fn cdc(mut self, name: &str) -> Self {
        self.cdc = Some(name.to_string());
        self
    }

    /// Buckets of the base table's `bucket(N, key)` partitioning.
    pub fn buckets(mut self, n: u32) -> Self {
        self.buckets = Some(n);
        self
    }

    /// Primary-key columns (default: the record key's fields).
    pub fn key(mut self, columns: &[&str]) -> Self {
        self.key = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Whether inserts also delete prior rows of their key (default true).
    pub fn upsert(mut self, on: bool) -> Self {
        self.upsert = Some(on);
        self
    }

    /// A transform over each typed row image: edit it, or return `false` to drop it.
    pub fn transform(mut self, f: impl Fn(&mut RowMut<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.transform = Some(Arc::new(f));
        self
    }

    /// A transform written for a fixed row type: exactly `columns`, in order. If the table's
    /// schema evolves away from it, the run stops with an error naming both column lists
    /// (nothing after is committed; update the transform and restart).
    pub fn transform_for(
        mut self,
        columns: &[&str],
        f: impl Fn(&mut RowMut<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.transform = Some(Arc::new(f));
        self.row_type = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }
}

enum Source {
    Replay(String),
    Kafka(String),
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl Pipeline {
    /// A pipeline with id `id`; relative paths resolve against the working directory.
    pub fn new(id: &str) -> Pipeline {
        Pipeline {
            id: id.to_string(),
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            catalog: None,
            source: None,
            until_caught_up: false,
            commit_every: None,
            workers: None,
            tables: Vec::new(),
        }
    }

    /// Resolve relative paths against `dir`.
    pub fn relative_to(mut self, dir: &Path) -> Self {
        self.base_dir = dir.to_path_buf();
        self
    }

    /// Embedded default catalog: `<dir>/catalog.db` (SQLite) with the warehouse in `dir`.
    pub fn warehouse(mut self, dir: &str) -> Self {
        self.catalog = Some((format!("sqlite://{dir}/catalog.db"), dir.to_string()));
        self
    }

    /// Read a replay log.
    pub fn replay(mut self, path: &str) -> Self {
        self.source = Some(Source::Replay(path.to_string()));
        self
    }

    /// Read the tables' topics from Kafka (`bootstrap.servers`); runs until SIGINT/SIGTERM
    /// unless [`Pipeline::until_caught_up`].
    pub fn kafka(mut self, brokers: &str) -> Self {
        self.source = Some(Source::Kafka(brokers.to_string()));
        self
    }

    /// Kafka: stop once everything up to the high watermarks seen at start is committed.
    pub fn until_caught_up(mut self) -> Self {
        self.until_caught_up = true;
        self
    }

    /// Records per partition per epoch.
    pub fn commit_every(mut self, n: u64) -> Self {
        self.commit_every = Some(n);
        self
    }

    /// Worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Adds a source table (a topic) and what to maintain for it.
    pub fn table(mut self, topic: &str, build: impl FnOnce(TableBuilder) -> TableBuilder) -> Self {
        let t = TableBuilder {
            topic: topic.to_string(),
            base: None,
            cdc: None,
            buckets: None,
            key: None,
            upsert: None,
            transform: None,
            row_type: None,
        };
        self.tables.push(build(t));
        self
    }

    /// The equivalent pipeline file.
    pub fn to_toml(&self) -> String {
        let mut s = format!("[pipeline]\nid = {}\n", quoted(&self.id));
        if let Some(n) = self.commit_every {
            s += &format!("commit_every = {n}\n");
        }
        if let Some(n) = self.workers {
            s += &format!("workers = {n}\n");
        }
        if let Some((uri, warehouse)) = &self.catalog {
            s += &format!("[catalog]\nuri = {}\nwarehouse = {}\n", quoted(uri), quoted(warehouse));
        }
        match &self.source {
            Some(Source::Kafka(brokers)) => {
                s += &format!("[source]\nkind = \"kafka\"\nbrokers = {}\n", quoted(brokers))
            }
            Some(Source::Replay(path)) => s += &format!("[source]\nkind = \"replay\"\npath = {}\n", quoted(path)),
            None => s += "[source]\nkind = \"replay\"\npath = \"\"\n",
        }
        for t in &self.tables {
            s += &format!("[[tables]]\ntopic = {}\n", quoted(&t.topic));
            if let Some(b) = &t.base {
                s += &format!("base = {}\n", quoted(b));
            }
            if let Some(c) = &t.cdc {
                s += &format!("cdc = {}\n", quoted(c));
            }
            if let Some(n) = t.buckets {
                s += &format!("buckets = {n}\n");
            }
            if let Some(k) = &t.key {
                s += &format!("key = [{}]\n", k.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(", "));
            }
            if let Some(u) = t.upsert {
                s += &format!("upsert = {u}\n");
            }
        }
        s
    }

    /// Validates the pipeline as a pipeline file would be.
    pub fn config(&self) -> Result<PipelineConfig> {
        PipelineConfig::parse(&self.to_toml(), &self.base_dir.join(format!("{}.toml", self.id)))
    }

    /// Runs the pipeline to completion.
    pub fn run(self) -> Result<RunOutcome> {
        let config = self.config()?;
        let row_types: HashMap<usize, Vec<String>> =
            self.tables.iter().enumerate().filter_map(|(i, t)| t.row_type.clone().map(|r| (i, r))).collect();
        let transforms: HashMap<usize, RowTransform> =
            self.tables.into_iter().enumerate().filter_map(|(i, t)| t.transform.map(|f| (i, f))).collect();
        let options = RunOptions { transforms, row_types, until_caught_up: self.until_caught_up, ..Default::default() };
        run(&config, options)
    }
}
