//! The committer: one worker turns each closed epoch's files into one atomic snapshot per
//! table, recording the source progress the epoch covers.
//!
//! ```text
//!   files @e ─────┐  (Exchange: all to the committer worker)
//!   progress @e ──┤
//!                 ▼
//!   PendingEpochs ── both frontiers > e ──► requests(e) ──► IO runtime:
//!                                              1. dead-letter tables (sequentially)
//!                                              2. CDC and base tables (concurrently)
//!                                           ──► CommitReport @e
//! ```
//!
//! # Invariants
//! - Exactly one worker commits ([`committer_worker`]); epochs commit strictly in order and
//!   one at a time, so each table's snapshots follow the epoch order.
//! - Each snapshot's offsets are cumulative for the table's topics: what the table had
//!   committed before the run, advanced by every closed epoch of the run.
//! - Dead-letter tables commit before the others within an epoch, so a restart (which
//!   resumes from the base and CDC tables) never skips a dead letter.
//! - A failed commit keeps its capability and records a fatal error: later epochs are never
//!   committed over a gap.
//! - Schema evolution: each snapshot carries the table's newest schema version (added to the
//!   metadata in the same swap when it is new), so the schema lands with or before the first
//!   data that uses it. A table paused at an epoch gets no snapshot for it or any later
//!   epoch; its pending change is recorded once, as a table property, for review.
//! - A schema version a pull found ahead of the stream commits alone (metadata only),
//!   between two epochs, and every later snapshot of the table carries it or a newer one.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::mpsc;

use floe_engine::commit::{CommitOutcome, CommitRequest, RetryPolicy, SchemaCommit, commit, commit_metadata};
use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use floe_engine::metrics::Metrics;
use floe_engine::offsets::SourceOffsets;
use floe_engine::schema_audit::{AuditEntry, PENDING_PROPERTY, PendingChange};
use iceberg::TableIdent;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::files::{Dest, WrittenFile};
use crate::plan::{PipelinePlan, PlanRef, Target};

/// A source's statement that, for epoch `e`, a partition is read up to `next_offset`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceProgress {
    /// Table (topic) index.
    pub table: u32,
    /// Partition.
    pub partition: i32,
    /// First offset not covered by this and earlier epochs.
    pub next_offset: i64,
}

/// What the committer did for one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReport {
    /// The epoch.
    pub epoch: Epoch,
    /// `(table, snapshot id, newly committed?)` per table touched.
    pub tables: Vec<(String, i64, bool)>,
}

/// The worker that commits for a pipeline: one place decides.
pub fn committer_worker(pipeline_id: &str, peers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pipeline_id.hash(&mut h);
    (h.finish() % peers.max(1) as u64) as usize
}

#[derive(Default)]
struct EpochContent {
    files: BTreeMap<Dest, Vec<WrittenFile>>,
    progress: Vec<SourceProgress>,
}

/// The committer's pure core: pending epochs and cumulative offsets.
pub struct PendingEpochs {
    plan: PlanRef,
    epochs: BTreeMap<Epoch, EpochContent>,
    run_progress: SourceOffsets,
    /// Tables whose pause is already recorded in the catalog.
    pauses_recorded: std::collections::BTreeSet<u32>,
    /// The newest epoch closed so far.
    closed_through: Option<Epoch>,
}

/// The commit requests of one epoch, in commit order.
#[derive(Debug, Default)]
pub struct EpochCommits {
    /// Dead-letter tables: commit first.
    pub first: Vec<(Dest, CommitRequest)>,
    /// Base and CDC tables: commit after, concurrently.
    pub then: Vec<(Dest, CommitRequest)>,
    /// Paused tables whose pending change is to be recorded (a property on each table).
    pub pauses: Vec<(TableIdent, PendingChange, crate::schema_versions::VersionsRef)>,
}

impl EpochCommits {
    /// Whether nothing is to be committed.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.then.is_empty() && self.pauses.is_empty()
    }
}

/// The Iceberg table a destination names.
pub fn target(plan: &PipelinePlan, dest: Dest) -> Option<&Target> {
    match dest {
        Dest::Base(t) => plan.tables.get(t as usize)?.base.as_ref(),
        Dest::Cdc(t) => plan.tables.get(t as usize)?.cdc.as_ref(),
        Dest::DeadLetters(i) => plan.dead_letters.get(i as usize),
    }
}

impl PendingEpochs {
    /// An empty table of pending epochs.
    pub fn new(plan: PlanRef) -> PendingEpochs {
        PendingEpochs {
            plan,
            epochs: BTreeMap::new(),
            run_progress: SourceOffsets::default(),
            pauses_recorded: Default::default(),
            closed_through: None,
        }
    }

    /// Adds a written file.
    pub fn add_file(&mut self, file: WrittenFile) {
        self.epochs.entry(file.epoch).or_default().files.entry(file.dest).or_default().push(file);
    }

    /// Adds source progress for an epoch.
    pub fn add_progress(&mut self, epoch: Epoch, progress: SourceProgress) {
        self.epochs.entry(epoch).or_default().progress.push(progress);
    }

    /// The oldest pending epoch.
    pub fn oldest(&self) -> Option<Epoch> {
        self.epochs.keys().next().copied()
    }

    fn topics(&self, dest: Dest) -> Vec<&str> {
        match dest {
            Dest::Base(t) | Dest::Cdc(t) => vec![self.plan.tables[t as usize].topic.as_str()],
            Dest::DeadLetters(i) => self.plan.dead_letter_topics(i as usize),
        }
    }

    /// Closes `epoch` (which must be the oldest): folds its progress into the run's and
    /// returns the requests that commit its files.
    pub fn close(&mut self, epoch: Epoch) -> Result<EpochCommits> {
        let content = self.epochs.remove(&epoch).unwrap_or_default();
        self.closed_through = Some(epoch);
        for p in &content.progress {
            let topic = &self.plan.tables[p.table as usize].topic;
            self.run_progress.advance(topic, p.partition, p.next_offset);
        }
        let mut commits = EpochCommits::default();
        self.record_pauses(epoch, &mut commits);
        for (dest, files) in content.files {
            let Some(target) = target(&self.plan, dest) else { continue };
            let mut offsets = target.committed.clone();
            offsets.merge(&self.run_progress.restrict(self.topics(dest)));
            let (schema_change, versions) = match dest {
                Dest::Base(t) | Dest::Cdc(t) => {
                    let table = &self.plan.tables[t as usize];
                    if table.versions.is_paused_at(epoch) {
                        continue;
                    }
                    (schema_commit(table, dest, epoch)?, table.versions.all())
                }
                Dest::DeadLetters(_) => (None, Vec::new()),
            };
            let mut data_files = Vec::new();
            let mut delete_files = Vec::new();
            // A file decodes with the schema it was written under: the run's first version
            // is the plan's target; later ones are resolved once per epoch.
            let mut evolved: BTreeMap<u32, Option<Target>> = BTreeMap::new();
            for f in &files {
                let at = match (dest, versions.get(f.schema_version as usize)) {
                    (Dest::Base(t) | Dest::Cdc(t), Some(v)) if v.number > 0 => {
                        if let std::collections::btree_map::Entry::Vacant(slot) = evolved.entry(v.number) {
                            let table = &self.plan.tables[t as usize];
                            slot.insert(match dest {
                                Dest::Cdc(_) => table.cdc_at(v)?.map(|(target, _)| target),
                                _ => table.base_at(v)?,
                            });
                        }
                        evolved[&v.number].as_ref()
                    }
                    _ => None,
                };
                let file = f.data_file(at.unwrap_or(target))?;
                if f.deletes {
                    delete_files.push(file);
                } else {
                    data_files.push(file);
                }
            }
            let request = CommitRequest {
                table: target.ident.clone(),
                pipeline_id: self.plan.pipeline_id.clone(),
                epoch,
                offsets,
                data_files,
                delete_files,
                removed: Vec::new(),
                rewrite: None,
                schema_change,
            };
            match dest {
                Dest::DeadLetters(_) => commits.first.push((dest, request)),
                _ => commits.then.push((dest, request)),
            }
        }
        Ok(commits)
    }
}

impl PendingEpochs {
    /// Schema versions a pull added ahead of the stream, as metadata-only commits to run
    /// between two epochs. Each is used from the first epoch not closed yet, so every later
    /// snapshot of the table carries it (or a newer version) and its schema never moves back.
    pub fn ahead_commits(&mut self) -> Result<Vec<(TableIdent, SchemaCommit)>> {
        let next = self.closed_through.map_or(0, |e| e + 1);
        let mut out = Vec::new();
        for table in &self.plan.tables {
            if table.versions.pause_state().is_some() {
                continue;
            }
            let Some(version) = table.versions.take_ahead() else { continue };
            table.versions.used_at(version.number, next);
            let at = table.versions.at(next);
            for (dest, target) in [(Dest::Base(table.index), &table.base), (Dest::Cdc(table.index), &table.cdc)] {
                if let (Some(target), Some(change)) = (target, schema_commit_of(table, dest, &at)?) {
                    out.push((target.ident.clone(), change));
                }
            }
        }
        Ok(out)
    }

    /// Queues the record of each pause that `epoch` reaches, once per table.
    fn record_pauses(&mut self, epoch: Epoch, commits: &mut EpochCommits) {
        for table in &self.plan.tables {
            let Some(pause) = table.versions.pause_state() else { continue };
            if epoch < pause.from_epoch || !self.pauses_recorded.insert(table.index) {
                continue;
            }
            let pending = PendingChange::new(pause.changes.clone(), &pause.first, table.schema_policy);
            for target in [&table.base, &table.cdc].into_iter().flatten() {
                commits.pauses.push((target.ident.clone(), pending.clone(), Arc::clone(&table.versions)));
            }
        }
    }
}

/// The schema a table's snapshot of `epoch` must carry: the epoch's version, once the run
/// evolved the table, with the audit entries of every version up to it.
fn schema_commit(table: &crate::plan::TablePlan, dest: Dest, epoch: Epoch) -> Result<Option<SchemaCommit>> {
    schema_commit_of(table, dest, &table.versions.at(epoch))
}

/// The schema change that brings a table to `latest` (none for the run's first version).
fn schema_commit_of(
    table: &crate::plan::TablePlan,
    dest: Dest,
    latest: &crate::schema_versions::Version,
) -> Result<Option<SchemaCommit>> {
    if latest.number == 0 {
        return Ok(None);
    }
    let schema = match dest {
        Dest::Cdc(_) => latest.schema.cdc_schema()?,
        _ => latest.schema.base_schema()?,
    };
    let approval = table.schema_policy.automatic_approval();
    let audit = table
        .versions
        .all()
        .iter()
        .filter(|v| v.number <= latest.number)
        .filter_map(|v| v.change.as_ref())
        .map(|(changes, first)| AuditEntry::new(changes.clone(), first, approval.clone()))
        .collect();
    Ok(Some(SchemaCommit { schema, retired: latest.retired.clone(), audit }))
}

/// A finished commit job: an epoch's snapshots, or a pull's metadata-only schema commits.
enum Done {
    Epoch(Epoch, Result<Vec<(Dest, CommitOutcome)>>),
    Schema(Result<()>),
}

/// What one epoch wrote to one table, for the metrics.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    data_files: u64,
    delete_files: u64,
    bytes: u64,
    max_source_ts_ms: Option<i64>,
}

async fn run_commits(
    catalog: Arc<dyn floe_engine::catalog::TableCatalog>,
    commits: EpochCommits,
) -> Result<Vec<(Dest, CommitOutcome)>> {
    let retry = RetryPolicy::default();
    let mut out = Vec::new();
    for (table, pending, versions) in &commits.pauses {
        let value = serde_json::to_string(pending).unwrap_or_default();
        let set = std::collections::HashMap::from([(PENDING_PROPERTY.to_string(), value)]);
        commit_metadata(catalog.as_ref(), table, None, set, &[]).await?;
        versions.pause_recorded();
    }
    for (dest, request) in &commits.first {
        out.push((*dest, commit(catalog.as_ref(), request, retry).await?));
    }
    let rest = futures::future::try_join_all(commits.then.iter().map(|(dest, request)| {
        let catalog = Arc::clone(&catalog);
        async move { Ok::<_, floe_engine::Error>((*dest, commit(catalog.as_ref(), request, retry).await?)) }
    }))
    .await?;
    out.extend(rest);
    Ok(out)
}

fn record_metrics(plan: &PipelinePlan, epoch_files: &BTreeMap<Dest, Written>, outcomes: &[(Dest, CommitOutcome)]) {
    for (dest, outcome) in outcomes {
        let Some(target) = target(plan, *dest) else { continue };
        let w = epoch_files.get(dest).copied().unwrap_or_default();
        plan.metrics.table(&target.name.to_string(), |s| match outcome {
            CommitOutcome::Committed { .. } => {
                s.commits += 1;
                s.data_files += w.data_files;
                s.delete_files += w.delete_files;
                s.bytes += w.bytes;
                s.last_source_ts_ms = s.last_source_ts_ms.max(w.max_source_ts_ms);
            }
            CommitOutcome::AlreadyCommitted { .. } => s.already_committed += 1,
            CommitOutcome::Dropped { .. } => {}
        });
        if matches!(outcome, CommitOutcome::Committed { .. }) {
            Metrics::add(&plan.metrics.commits, 1);
        }
    }
}

/// The committer operator.
pub fn commit_epochs<'s>(
    files: Stream<'s, Epoch, Vec<WrittenFile>>,
    progress: Stream<'s, Epoch, Vec<SourceProgress>>,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<CommitReport>> {
    let scope = files.scope();
    let chosen = committer_worker(&plan.pipeline_id, scope.peers()) as u64;
    files.binary_frontier(
        progress,
        Exchange::new(move |_: &WrittenFile| chosen),
        Exchange::new(move |_: &SourceProgress| chosen),
        "Committer",
        move |_default, info| {
            let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
            // Every worker runs this operator; only the chosen one receives and commits.
            let is_committer = scope.index() as u64 == chosen;
            if is_committer {
                plan.committer_wake.register((*activator).clone());
            }
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            let mut pending = PendingEpochs::new(Arc::clone(&plan));
            let mut caps: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
            let mut inflight: Option<(Epoch, Capability<Epoch>, BTreeMap<Dest, Written>)> = None;
            let mut schema_inflight = false;
            let mut failed = false;
            move |(files_in, files_frontier), (progress_in, progress_frontier), output| {
                files_in.for_each(|cap, data| {
                    if let Some(&e) = cap.least()
                        && !caps.contains_key(&e)
                        && let Some(c) = cap.retain_least(0)
                    {
                        caps.insert(e, c);
                    }
                    for f in data.drain(..) {
                        pending.add_file(f);
                    }
                });
                progress_in.for_each(|cap, data| {
                    let Some(&e) = cap.least() else { return };
                    if !caps.contains_key(&e)
                        && let Some(c) = cap.retain_least(0)
                    {
                        caps.insert(e, c);
                    }
                    for p in data.drain(..) {
                        pending.add_progress(e, p);
                    }
                });

                while let Ok(done) = done_rx.try_recv() {
                    let (epoch, result) = match done {
                        Done::Epoch(epoch, result) => (epoch, result),
                        Done::Schema(result) => {
                            schema_inflight = false;
                            if let Err(e) = result {
                                plan.failure.record(e);
                                failed = true;
                            }
                            continue;
                        }
                    };
                    match result {
                        Ok(outcomes) => {
                            if let Some((e, cap, sizes)) = inflight.take() {
                                debug_assert_eq!(e, epoch, "commits complete in order");
                                record_metrics(&plan, &sizes, &outcomes);
                                let report = CommitReport {
                                    epoch,
                                    tables: outcomes
                                        .iter()
                                        .filter_map(|(d, o)| {
                                            let name = target(&plan, *d)?.name.to_string();
                                            Some(match o {
                                                CommitOutcome::Committed { snapshot_id, .. } => {
                                                    (name, *snapshot_id, true)
                                                }
                                                CommitOutcome::AlreadyCommitted { snapshot_id, .. } => {
                                                    (name, *snapshot_id, false)
                                                }
                                                CommitOutcome::Dropped { .. } => return None,
                                            })
                                        })
                                        .collect(),
                                };
                                tracing::debug!(epoch, tables = report.tables.len(), "epoch committed");
                                output.session(&cap).give(report);
                            }
                        }
                        Err(e) => {
                            plan.failure.record(e);
                            failed = true;
                        }
                    }
                }

                // A pull's schema versions commit between two epochs.
                if is_committer && inflight.is_none() && !schema_inflight && !failed && plan.failure.get().is_none() {
                    match pending.ahead_commits() {
                        Ok(jobs) if jobs.is_empty() => {}
                        Ok(jobs) => {
                            let catalog = Arc::clone(&plan.catalog);
                            let tx = done_tx.clone();
                            let wake = Arc::clone(&activator);
                            plan.runtime.spawn(async move {
                                let mut result = Ok(());
                                for (table, change) in &jobs {
                                    result =
                                        commit_metadata(catalog.as_ref(), table, Some(change), Default::default(), &[])
                                            .await;
                                    if result.is_err() {
                                        break;
                                    }
                                    tracing::info!(table = %table, "schema change found by a pull committed");
                                }
                                let _ = tx.send(Done::Schema(result));
                                let _ = wake.activate();
                            });
                            schema_inflight = true;
                        }
                        Err(e) => {
                            plan.failure.record(e);
                            failed = true;
                        }
                    }
                }

                // Start the next epoch once the previous one is done and both inputs passed it.
                while inflight.is_none() && !schema_inflight && !failed {
                    let Some(epoch) = pending.oldest() else { break };
                    let frontier_passed = !files_frontier.frontier().less_equal(&epoch)
                        && !progress_frontier.frontier().less_equal(&epoch);
                    if !frontier_passed {
                        break;
                    }
                    // A failed pipeline commits nothing more (a decoder may have stopped it).
                    if plan.failure.get().is_some() {
                        failed = true;
                        break;
                    }
                    let mut sizes: BTreeMap<Dest, Written> = BTreeMap::new();
                    for (dest, files) in pending.epochs.get(&epoch).map(|c| &c.files).into_iter().flatten() {
                        let w = sizes.entry(*dest).or_default();
                        for f in files {
                            if f.deletes {
                                w.delete_files += 1
                            } else {
                                w.data_files += 1
                            }
                            w.bytes += f.bytes;
                            w.max_source_ts_ms = w.max_source_ts_ms.max(f.max_source_ts_ms);
                        }
                    }
                    let commits = match pending.close(epoch) {
                        Ok(c) => c,
                        Err(e) => {
                            plan.failure.record(e);
                            failed = true;
                            break;
                        }
                    };
                    // Capabilities of earlier epochs are no longer needed.
                    let cap = caps.remove(&epoch);
                    caps.retain(|e, _| *e > epoch);
                    if commits.is_empty() {
                        continue;
                    }
                    let Some(cap) = cap else {
                        plan.failure.record(format!("committer holds no capability for epoch {epoch}"));
                        failed = true;
                        break;
                    };
                    let catalog = Arc::clone(&plan.catalog);
                    let tx = done_tx.clone();
                    let wake = Arc::clone(&activator);
                    plan.runtime.spawn(async move {
                        let result = run_commits(catalog, commits).await;
                        let _ = tx.send(Done::Epoch(epoch, result));
                        let _ = wake.activate();
                    });
                    inflight = Some((epoch, cap, sizes));
                }
            }
        },
    )
}
