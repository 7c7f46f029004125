//! The schema watcher of a continuous run: pull detection every
//! `source.schema_pull_interval_ms`, and in-process resume of tables whose pause was
//! approved.
//!
//! ```text
//!   every interval:  newest record per partition ──► decide ──► versions.evolve_ahead ──► wake committer
//!   while paused:    table property floe.schema-pending gone? ──► drain the round; the runner plans again
//! ```
//!
//! # Invariants
//! - The watcher never writes a table. A change it finds goes into the table's live schema
//!   versions ahead of the stream, and the committer commits it between two epochs: one
//!   writer per table, and a table's schema never moves back.
//! - Only changes the table's policy applies automatically evolve ahead. A change that would
//!   pause the table is logged and left to the stream, which pauses the table at the exact
//!   record that carries it.
//! - Paused tables are not pulled. A paused table is resumed only after its pending change
//!   was seen in the catalog and then disappeared (approved, or the table re-bootstrapped);
//!   the round drains like a stop, so what was read is committed and the table restarts
//!   from its own committed offsets: nothing lost, nothing twice.
//! - Pull detection is best effort: a failed pull is logged and tried again next interval.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use floe_engine::error::Result;
use floe_engine::schema_audit::PENDING_PROPERTY;
use floe_engine::schema_drift::{Decision, Observed, decide};
use floe_operators::plan::{PipelinePlan, PlanRef};
use tracing::{info, warn};

use crate::planner::{SchemaDiscovery, pulled_shapes};

/// How often paused tables are checked for an approval.
const APPROVAL_CHECK: Duration = Duration::from_secs(1);

/// Compares every table that is not paused with what its source says now, and evolves the
/// tables ahead of the stream where the policy allows. Returns the tables evolved.
pub fn pull(plan: &PipelinePlan, discovery: &dyn SchemaDiscovery) -> Result<Vec<u32>> {
    let mut evolved = Vec::new();
    for table in &plan.tables {
        if table.versions.pause_state().is_some() {
            continue;
        }
        let keys = table.versions.latest().schema.key_names();
        for (shape, seen) in pulled_shapes(discovery, table.index, &table.topic, &keys)? {
            // A decoder may evolve the table meanwhile: then decide again against its version.
            loop {
                let latest = table.versions.latest();
                match decide(&latest.schema, &latest.retired, &shape, &Observed::default(), table.schema_policy) {
                    Decision::Unchanged => break,
                    Decision::Evolve { schema, retired, changes } => {
                        let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
                        let Some(next) =
                            table.versions.evolve_ahead(&latest, Arc::new(schema), retired, changes, seen.clone())
                        else {
                            continue;
                        };
                        info!(topic = %table.topic, partition = seen.partition, offset = seen.offset,
                            version = next.number, changes = %described.join("; "),
                            "pull: the source's schema moved on; evolving the tables ahead of the stream");
                        evolved.push(table.index);
                        break;
                    }
                    Decision::Pause { changes } => {
                        let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
                        warn!(topic = %table.topic, partition = seen.partition, offset = seen.offset,
                            changes = %described.join("; "),
                            "pull: the newest record carries a change that is not additive; the table will pause when the stream reaches it");
                        break;
                    }
                }
            }
        }
    }
    if !evolved.is_empty() {
        plan.committer_wake.wake();
    }
    Ok(evolved)
}

/// Paused tables and whether each one's pending change was seen in the catalog yet (or
/// recorded there by this run's committer: an approval may come before the watcher looks).
#[derive(Default)]
pub struct Approvals {
    seen_pending: BTreeSet<u32>,
}

impl Approvals {
    /// Whether some paused table's pending change has been resolved since it was recorded.
    pub fn resolved(&mut self, plan: &PipelinePlan) -> Result<bool> {
        for table in &plan.tables {
            if table.versions.pause_state().is_none() {
                continue;
            }
            let Some(target) = table.base.as_ref().or(table.cdc.as_ref()) else { continue };
            let Some(state) = plan.runtime.block_on(plan.catalog.load(&target.ident))? else { continue };
            let pending = state.metadata.properties().contains_key(PENDING_PROPERTY);
            if pending {
                self.seen_pending.insert(table.index);
            } else if self.seen_pending.contains(&table.index) || table.versions.is_pause_recorded() {
                info!(table = %target.name, "the paused table's schema change was resolved; resuming it");
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The watcher thread of one round of a continuous run.
pub struct Watcher {
    quit: Arc<AtomicBool>,
    resume: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `plan`: pulls every `interval` (never without one), checks paused
    /// tables for approval, and sets `drain` when the round must end so a table can resume.
    pub fn start(
        plan: PlanRef,
        discovery: Box<dyn SchemaDiscovery + Send>,
        interval: Option<Duration>,
        drain: Arc<AtomicBool>,
        quit: Arc<AtomicBool>,
    ) -> Watcher {
        let resume = Arc::new(AtomicBool::new(false));
        let thread = {
            let (quit, resume) = (Arc::clone(&quit), Arc::clone(&resume));
            std::thread::Builder::new()
                .name("floe-schema-watch".into())
                .spawn(move || {
                    let mut approvals = Approvals::default();
                    let mut last_pull = Instant::now();
                    let mut last_check = Instant::now();
                    while !quit.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        if plan.failure.get().is_some() {
                            return;
                        }
                        if let Some(every) = interval
                            && last_pull.elapsed() >= every
                        {
                            if let Err(e) = pull(&plan, discovery.as_ref()) {
                                warn!(error = %e, "pull: comparing schemas failed; trying again next interval");
                            }
                            last_pull = Instant::now();
                        }
                        if last_check.elapsed() >= APPROVAL_CHECK {
                            last_check = Instant::now();
                            match approvals.resolved(&plan) {
                                Ok(true) => {
                                    resume.store(true, Ordering::Relaxed);
                                    drain.store(true, Ordering::Relaxed);
                                    return;
                                }
                                Ok(false) => {}
                                Err(e) => warn!(error = %e, "checking paused tables for approval failed"),
                            }
                        }
                    }
                })
                .expect("spawning the schema watcher")
        };
        Watcher { quit, resume, thread: Some(thread) }
    }

    /// Stops the thread; returns whether the round ended to resume a table.
    pub fn finish(mut self) -> bool {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.resume.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::schema::ColumnType;

    use crate::planner::Sample;

    /// A source whose newest record has the given value schema fields.
    struct Newest(Vec<(&'static str, &'static str, bool)>);

    impl SchemaDiscovery for Newest {
        fn samples(&self, _table: u32, _limit: usize) -> Result<Vec<Sample>> {
            Ok(Vec::new())
        }

        fn newest(&self, _table: u32) -> Result<Vec<(i32, i64, Sample)>> {
            if self.0.is_empty() {
                return Ok(Vec::new());
            }
            let fields: Vec<String> = self
                .0
                .iter()
                .map(|(name, ty, optional)| format!(r#"{{"field":"{name}","type":"{ty}","optional":{optional}}}"#))
                .collect();
            let row = format!(r#"{{"type":"struct","optional":true,"fields":[{}]}}"#, fields.join(","));
            let value = format!(
                r#"{{"schema":{{"type":"struct","fields":[{{"field":"before",{r}}},{{"field":"after",{r}}}]}},"payload":null}}"#,
                r = &row[1..row.len() - 1]
            );
            let key = r#"{"schema":{"type":"struct","fields":[{"field":"id","type":"int64","optional":false}]},"payload":{"id":1}}"#;
            Ok(vec![(0, 41, (Some(key.as_bytes().to_vec()), value.into_bytes()))])
        }
    }

    /// A real plan over a SQLite catalog in `dir`: one schemaless table (id, qty).
    fn plan(dir: &std::path::Path) -> PipelinePlan {
        let text = r#"
            [source]
            kind = "replay"
            path = "none.jsonl"
            [[tables]]
            topic = "shop.orders"
            base = "base.orders"
            cdc = "cdc.orders"
            buckets = 2
            columns = [{ name = "id", type = "long", nullable = false }, { name = "qty", type = "int" }]
            key = ["id"]
        "#;
        let config = floe_engine::config::PipelineConfig::parse(text, &dir.join("p.toml")).expect("config");
        let runtime = floe_engine::runtime::IoRuntime::new(1).expect("runtime");
        let catalog: Arc<dyn floe_engine::catalog::TableCatalog> =
            Arc::new(runtime.block_on(floe_engine::catalog::SqlTableCatalog::open(&config.catalog)).expect("catalog"));
        let metrics = floe_engine::metrics::Metrics::new();
        crate::planner::plan(&config, catalog, runtime, metrics, &Newest(Vec::new()), &Default::default())
            .expect("plan")
    }

    #[test]
    fn an_additive_change_is_evolved_ahead_and_handed_to_the_committer_once() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let source = Newest(vec![("id", "int64", false), ("qty", "int64", true), ("note", "string", true)]);
        assert_eq!(pull(&plan, &source).expect("pull"), vec![0]);
        let versions = &plan.tables[0].versions;
        let latest = versions.latest();
        assert_eq!(latest.number, 1);
        let names: Vec<&str> = latest.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "qty", "note"]);
        assert_eq!(latest.schema.columns[1].ty, ColumnType::Long, "widened");
        let (_, first) = latest.change.as_ref().expect("audited");
        assert_eq!((first.detected.as_str(), first.partition, first.offset), ("pull", 0, 41));
        assert_eq!(versions.take_ahead().map(|v| v.number), Some(1));
        assert!(pull(&plan, &source).expect("again").is_empty(), "nothing new the second time");
        assert!(versions.take_ahead().is_none());
    }

    #[test]
    fn a_change_that_would_pause_is_left_to_the_stream_and_paused_tables_are_not_pulled() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let narrowed = Newest(vec![("id", "int64", false), ("qty", "int8", true)]);
        assert!(pull(&plan, &narrowed).expect("pull").is_empty(), "an older record, not a change");
        let retyped = Newest(vec![("id", "int64", false), ("qty", "string", true)]);
        assert!(pull(&plan, &retyped).expect("pull").is_empty());
        assert_eq!(plan.tables[0].versions.latest().number, 0);
        assert!(plan.tables[0].versions.pause_state().is_none(), "only the stream pauses a table");

        let seen = floe_operators::schema_versions::FirstSeen {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            detected: "push".into(),
            at_ms: 0,
        };
        plan.tables[0].versions.pause(3, vec![], seen);
        let added = Newest(vec![("id", "int64", false), ("qty", "int32", true), ("note", "string", true)]);
        assert!(pull(&plan, &added).expect("pull").is_empty(), "paused");
    }
}
