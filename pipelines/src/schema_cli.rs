//! `floe schema plan | approve | history` and `floe status`: reviewing, approving and
//! auditing schema changes, and showing each table's convergence (schema → plan → data).
//!
//! # Invariants
//! - Everything here reads and writes the tables' metadata through the catalog only; the
//!   running pipeline (if any) needs no other channel.
//! - Approval applies the lenient resolution of the pending changes (a dropped column is kept
//!   as optional and is null from then on; a renamed column is a new column) in one
//!   metadata commit per table, which also records the audit entry and clears the pause.
//!   A change that is not approvable is refused with the way out: re-bootstrap.

use std::fmt::Write as _;
use std::sync::Arc;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, TableState, ident};
use floe_engine::commit::{SchemaCommit, commit_metadata};
use floe_engine::config::{PipelineConfig, TableConfig, TableName};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::offsets::committed_progress;
use floe_engine::runtime::IoRuntime;
use floe_engine::schema::TableSchema;
use floe_engine::schema_audit::{AuditEntry, history, pending, retired};
use floe_engine::schema_drift::apply;
use iceberg::spec::Schema;

struct Tables {
    config: TableConfig,
    base: Option<TableState>,
    cdc: Option<TableState>,
}

impl Tables {
    fn name(&self) -> String {
        self.config.base.as_ref().or(self.config.cdc.as_ref()).map(ToString::to_string).unwrap_or_default()
    }

    fn first(&self) -> Option<&TableState> {
        self.base.as_ref().or(self.cdc.as_ref())
    }

    /// The column model, from the base table (or the CDC table's source columns).
    fn schema(&self) -> Result<TableSchema> {
        if let Some(b) = &self.base {
            return TableSchema::from_base_schema(b.metadata.current_schema());
        }
        let c = self.cdc.as_ref().ok_or_else(|| Error::new(ErrorKind::Config, "the table does not exist yet"))?;
        crate::planner::cdc_column_model(&c.metadata, self.config.key.as_deref())?
            .ok_or_else(|| Error::new(ErrorKind::Config, "the CDC table does not record its key; set `key`"))
    }
}

struct Session {
    runtime: IoRuntime,
    catalog: Arc<dyn TableCatalog>,
}

impl Session {
    fn open(config: &PipelineConfig) -> Result<Session> {
        let runtime = IoRuntime::new(1)?;
        let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
        Ok(Session { runtime, catalog })
    }

    fn load(&self, name: &Option<TableName>) -> Result<Option<TableState>> {
        match name {
            Some(n) => self.runtime.block_on(self.catalog.load(&ident(n))),
            None => Ok(None),
        }
    }

    fn tables(&self, config: &PipelineConfig) -> Result<Vec<Tables>> {
        config
            .tables
            .iter()
            .map(|t| Ok(Tables { config: t.clone(), base: self.load(&t.base)?, cdc: self.load(&t.cdc)? }))
            .collect()
    }
}

fn find<'a>(tables: &'a [Tables], name: &str, config: &PipelineConfig) -> Result<&'a Tables> {
    tables
        .iter()
        .find(|t| {
            t.config.topic == name
                || t.config.base.as_ref().is_some_and(|b| b.to_string() == name)
                || t.config.cdc.as_ref().is_some_and(|c| c.to_string() == name)
        })
        .ok_or_else(|| {
            let known: Vec<String> = tables.iter().map(Tables::name).collect();
            Error::new(
                ErrorKind::Config,
                format!("{}: no table `{name}` (tables: {})", config.file.display(), known.join(", ")),
            )
        })
}

fn describe_schema(out: &mut String, schema: &Schema) {
    for f in schema.as_struct().fields() {
        let key = if schema.identifier_field_ids().any(|id| id == f.id) { " (key)" } else { "" };
        let req = if f.required { "required" } else { "optional" };
        let _ = writeln!(out, "      {:>3}  {:<24} {:<16} {req}{key}", f.id, f.name, f.field_type.to_string());
    }
}

fn user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `floe schema plan`: the pending changes as a reviewable diff.
pub fn plan(config: &PipelineConfig) -> Result<String> {
    let session = Session::open(config)?;
    let mut out = String::new();
    for t in session.tables(config)? {
        let Some(state) = t.first() else {
            let _ = writeln!(out, "{}: not created yet", t.name());
            continue;
        };
        let Some(p) = pending(&state.metadata)? else {
            let _ = writeln!(
                out,
                "{}: no pending schema change (schema id {})",
                t.name(),
                state.metadata.current_schema_id()
            );
            continue;
        };
        let _ = writeln!(
            out,
            "{}: PAUSED by a schema change first seen at {} partition {} offset {} ({}; policy {})",
            t.name(),
            p.topic,
            p.partition,
            p.offset,
            time(p.detected_at_ms),
            p.policy
        );
        for c in &p.changes {
            let _ = writeln!(out, "    - {c}");
        }
        let schema = t.schema()?;
        match apply(&schema, &retired(&state.metadata), &p.changes) {
            Err(e) => {
                let _ = writeln!(out, "  cannot be approved: {e}");
                let _ = writeln!(
                    out,
                    "  way out: re-bootstrap the table (drop {} and rerun it from the topic's start or a fresh snapshot)",
                    t.name()
                );
            }
            Ok((next, _)) => {
                for (state, cdc) in [(&t.base, false), (&t.cdc, true)] {
                    let Some(state) = state else { continue };
                    let new = if cdc { next.cdc_schema()? } else { next.base_schema()? };
                    let _ = writeln!(out, "  {}: schema id {} now:", state.ident, state.metadata.current_schema_id());
                    describe_schema(&mut out, state.metadata.current_schema());
                    let _ = writeln!(out, "  after approval:");
                    describe_schema(&mut out, &new);
                }
                let _ = writeln!(
                    out,
                    "  approving (`floe schema approve {} {}`) commits this schema to both tables, records the approval, and resumes the table from its committed offsets; dropped columns stay, null from offset {} on",
                    config.file.display(),
                    t.name(),
                    p.offset
                );
            }
        }
    }
    Ok(out)
}

/// `floe schema approve`: applies a paused table's pending change.
pub fn approve(config: &PipelineConfig, table: &str) -> Result<String> {
    let session = Session::open(config)?;
    let tables = session.tables(config)?;
    let t = find(&tables, table, config)?;
    let state = t.first().ok_or_else(|| Error::new(ErrorKind::Config, format!("{table} does not exist yet")))?;
    let p = pending(&state.metadata)?
        .ok_or_else(|| Error::new(ErrorKind::Config, format!("{}: no pending schema change to approve", t.name())))?;
    let (next, now_retired) = apply(&t.schema()?, &retired(&state.metadata), &p.changes)?;
    let entry = AuditEntry::new(p.changes.clone(), &p.first_seen(), format!("approved by {}", user()));
    for (state, cdc) in [(&t.base, false), (&t.cdc, true)] {
        let Some(state) = state else { continue };
        let change = SchemaCommit {
            schema: if cdc { next.cdc_schema()? } else { next.base_schema()? },
            retired: now_retired.clone(),
            audit: vec![entry.clone()],
        };
        session.runtime.block_on(commit_metadata(
            session.catalog.as_ref(),
            &state.ident,
            Some(&change),
            Default::default(),
            &[],
        ))?;
    }
    let described: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
    Ok(format!(
        "{}: approved ({}); the table resumes from its committed offsets when the pipeline next runs\n",
        t.name(),
        described.join("; ")
    ))
}

/// `floe schema history`: every applied change, oldest first.
pub fn show_history(config: &PipelineConfig, table: &str) -> Result<String> {
    let session = Session::open(config)?;
    let tables = session.tables(config)?;
    let t = find(&tables, table, config)?;
    let mut out = String::new();
    for state in [&t.base, &t.cdc].into_iter().flatten() {
        let entries = history(&state.metadata)?;
        let _ = writeln!(
            out,
            "{} ({} changes, current schema id {})",
            state.ident,
            entries.len(),
            state.metadata.current_schema_id()
        );
        for (n, e) in entries.iter().enumerate() {
            let changes: Vec<String> = e.changes.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  #{:<3} {}  schema {} -> {}  {} at {}[{}]@{}  {}\n        {}",
                n + 1,
                time(e.applied_at_ms),
                e.old_schema_id,
                e.new_schema_id,
                e.detected,
                e.topic,
                e.partition,
                e.offset,
                e.approval,
                changes.join("; ")
            );
        }
        if let Some(p) = pending(&state.metadata)? {
            let changes: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  pending since {}: {}", time(p.detected_at_ms), changes.join("; "));
        }
    }
    Ok(out)
}

/// `floe status`: per table, schema → plan → data, and how long the last change took to
/// converge.
///
/// Convergence is the time from a change's detection to the first snapshot with data past
/// it: past its source offset (so it includes any wait for approval), or, for a change
/// found in the pipeline file, the first later snapshot under its schema.
pub fn status(config: &PipelineConfig) -> Result<String> {
    let session = Session::open(config)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>8} {:>8} {:>10}  {:<10} convergence (detection → data committed)",
        "table", "source v", "iceberg", "plan", "data", "state"
    );
    for t in session.tables(config)? {
        for state in [&t.base, &t.cdc].into_iter().flatten() {
            let m = &state.metadata;
            let entries = history(m)?;
            let pend = pending(m)?;
            let source_version = entries.len() + usize::from(pend.is_some());
            // The schema the newest data was written under: the plan in use.
            let plan_schema = m.current_snapshot().and_then(|s| s.schema_id());
            let progress = committed_progress(m)?;
            let last = entries.last();
            let data_after = match (last, &progress) {
                (Some(e), Some(p)) if e.partition >= 0 => {
                    p.offsets.get(&e.topic, e.partition).is_some_and(|next| next > e.offset)
                }
                (Some(_), _) => plan_schema.is_some_and(|s| s >= m.current_schema_id()),
                (None, _) => true,
            };
            let convergence = last.and_then(|e| {
                let first_data = m.snapshots().filter(|s| data_past(s, e)).map(|s| s.timestamp_ms()).min()?;
                Some(format!("{:.3}s", (first_data - e.detected_at_ms).max(0) as f64 / 1000.0))
            });
            let state_text = match (&pend, data_after) {
                (Some(_), _) => "paused",
                (None, true) => "converged",
                (None, false) => "catching up",
            };
            let _ = writeln!(
                out,
                "{:<28} {:>8} {:>8} {:>8} {:>10}  {:<10} {}",
                state.ident.to_string(),
                format!("v{source_version}"),
                m.current_schema_id(),
                plan_schema.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                if data_after { "committed" } else { "pending" },
                state_text,
                convergence.unwrap_or_else(|| "-".into())
            );
        }
    }
    let mut health = Vec::new();
    for t in session.tables(config)? {
        for state in [&t.base, &t.cdc].into_iter().flatten() {
            health.push(session.runtime.block_on(crate::table_health::health(session.catalog.file_io(), state))?);
        }
    }
    let _ = writeln!(out);
    out.push_str(&crate::table_health::render(&health, chrono::Utc::now().timestamp_millis()));
    Ok(out)
}

/// Whether snapshot `s` holds data past the change `e`.
fn data_past(s: &iceberg::spec::Snapshot, e: &AuditEntry) -> bool {
    if e.partition < 0 {
        return s.schema_id().is_some_and(|id| id >= e.new_schema_id) && s.timestamp_ms() >= e.detected_at_ms;
    }
    s.summary()
        .additional_properties
        .get(floe_engine::offsets::SUMMARY_OFFSETS)
        .and_then(|text| floe_engine::offsets::SourceOffsets::from_json(text).ok())
        .is_some_and(|o| o.get(&e.topic, e.partition).is_some_and(|next| next > e.offset))
}
