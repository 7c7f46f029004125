//! The committer's state machine, without timely: which epochs are pending, what each one
//! commits and in which order, what is in flight, and what the table's sequence numbers
//! were, so rewrites keep the data sequence number of the state they read.
//!
//! ```text
//!   add(Written @e), add_progress(e)        ─► PendingEpochs
//!   next(passed)          ─► Job::Ahead(schema commits)         between epochs
//!                         ─► Job::Rewrites(steps)               maintenance rewrites, between epochs
//!                         ─► Job::Expire(tables)                every `expire_every` commits of a table
//!                         ─► Job::Epoch(e, commits)             oldest epoch both inputs passed
//!   done(job result)      ─► CommitReport @e, sequence numbers learned
//! ```
//!
//! # Invariants
//! - One job at a time; epochs commit strictly in order, each table's steps in order:
//!   rewrites finished before the epoch's changes, the epoch's snapshot, rewrites finished
//!   after them (by `after_epoch`). Tables of one epoch commit concurrently.
//! - Dead-letter tables commit before the others within an epoch, so a restart (which
//!   resumes from the base and CDC tables) never skips a dead letter.
//! - Each snapshot's offsets are cumulative for the table's topics: what the table had
//!   committed before the run, advanced by every closed epoch of the run.
//! - After a failure nothing more is started: later epochs are never committed over a gap.
//! - A table paused at an epoch gets no snapshot for it or any later epoch; its pending
//!   change is recorded once, as a table property, for review.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use floe_engine::commit::{CommitOutcome, CommitRequest, RewriteCommit, SchemaCommit};
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::manifests::FileRef;
use floe_engine::offsets::SourceOffsets;
use floe_engine::schema_audit::{AuditEntry, PendingChange};
use iceberg::TableIdent;
use serde::{Deserialize, Serialize};

use crate::files::{Dest, RewriteBase, RewriteBundle, Written, WrittenFile};
use crate::plan::{PipelinePlan, PlanRef, TablePlan, Target};
use crate::schema_versions::{Version, VersionsRef};

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

/// The Iceberg table a destination names.
pub fn target(plan: &PipelinePlan, dest: Dest) -> Option<&Target> {
    match dest {
        Dest::Base(t) => plan.tables.get(t as usize)?.base.as_ref(),
        Dest::Cdc(t) => plan.tables.get(t as usize)?.cdc.as_ref(),
        Dest::DeadLetters(i) => plan.dead_letters.get(i as usize),
    }
}

/// One commit of a table within a job: an epoch's snapshot (carrying the rewrites that
/// finished before it, if any), or a `replace` snapshot of rewrites alone.
#[derive(Debug)]
pub struct Step {
    /// The request; its data files' sequence numbers are resolved when it runs.
    pub request: CommitRequest,
    /// Per data file: `None` (new rows), or the state a rewrite read its rows at.
    pub bases: Vec<Option<RewriteBase>>,
    /// Bytes the rewrites in it read (metrics).
    pub bytes_read: u64,
    /// Files it both added and retired: never live in any snapshot, deleted once the step
    /// is committed.
    pub transient: Vec<FileRef>,
}

/// The steps of one table, in order.
#[derive(Debug)]
pub struct TableSteps {
    /// The table.
    pub dest: Dest,
    /// Its steps.
    pub steps: Vec<Step>,
    /// Sequence numbers known for the table: epochs of this run → sequence number, and the
    /// table's sequence number at the start of the run.
    pub known: SequenceLog,
}

/// The commits of one epoch, in commit order.
#[derive(Debug, Default)]
pub struct EpochCommits {
    /// Dead-letter tables: commit first.
    pub first: Vec<TableSteps>,
    /// Base and CDC tables: commit after, concurrently.
    pub then: Vec<TableSteps>,
    /// Paused tables whose pending change is to be recorded (a property on each table).
    pub pauses: Vec<(TableIdent, PendingChange, VersionsRef)>,
}

impl EpochCommits {
    /// Whether nothing is to be committed.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.then.is_empty() && self.pauses.is_empty()
    }
}

/// What one epoch wrote to one table, for the metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written1 {
    /// Data files.
    pub data_files: u64,
    /// Delete files.
    pub delete_files: u64,
    /// Bytes.
    pub bytes: u64,
    /// Newest source timestamp.
    pub max_source_ts_ms: Option<i64>,
}

/// A table's sequence numbers by epoch of the run, bounded.
#[derive(Clone, Debug, Default)]
pub struct SequenceLog {
    start: i64,
    by_epoch: VecDeque<(Epoch, i64)>,
}

impl SequenceLog {
    const KEEP: usize = 10_000;

    /// A log for a table whose sequence number was `start` when the run began.
    pub fn new(start: i64) -> SequenceLog {
        SequenceLog { start, by_epoch: VecDeque::new() }
    }

    /// Records that the table's snapshot of `epoch` has sequence number `seq`.
    pub fn record(&mut self, epoch: Epoch, seq: i64) {
        if self.by_epoch.back().is_some_and(|(e, _)| *e >= epoch) {
            return;
        }
        self.by_epoch.push_back((epoch, seq));
        if self.by_epoch.len() > Self::KEEP {
            self.by_epoch.pop_front();
        }
    }

    /// The sequence number of the table as of `epoch` (`None`: as the run found it).
    /// Beyond the log's horizon it answers the oldest one it kept: a later, still safe,
    /// sequence number (see the commit protocol's notes on rewrites).
    pub fn as_of(&self, epoch: Option<Epoch>) -> i64 {
        let Some(epoch) = epoch else { return self.start };
        let i = self.by_epoch.partition_point(|(e, _)| *e <= epoch);
        match i {
            0 if self.by_epoch.len() == Self::KEEP => self.by_epoch.front().map_or(self.start, |(_, s)| *s),
            0 => self.start,
            i => self.by_epoch[i - 1].1,
        }
    }
}

#[derive(Default)]
struct EpochContent {
    files: BTreeMap<Dest, Vec<WrittenFile>>,
    rewrites: BTreeMap<Dest, Vec<RewriteBundle>>,
    progress: Vec<SourceProgress>,
}

/// Each table's step outcomes of a job.
pub type Outcomes = Vec<(Dest, Vec<(StepKind, CommitOutcome)>)>;

/// A finished job's report, the sizes its epoch wrote, and its outcomes.
pub type Finished = (CommitReport, BTreeMap<Dest, Written1>, Outcomes);

/// A job for the IO runtime.
#[derive(Debug)]
pub enum Job {
    /// Schema versions a pull found ahead of the stream: metadata-only commits.
    Ahead(Vec<(TableIdent, SchemaCommit)>),
    /// An epoch's commits.
    Epoch(Epoch, EpochCommits, BTreeMap<Dest, Written1>),
    /// Rewrites found by table maintenance, committed between two epochs.
    Rewrites(Vec<TableSteps>),
    /// Snapshot expiry and file cleanup of tables, between two epochs.
    Expire(Vec<ExpireJob>),
    /// The last part of an erasure, between two epochs
    /// ([`crate::erasure_requests::finalize`]).
    Erase(Box<crate::erasure_requests::FinalizeJob>),
}

/// One table's expiry (and cleanup), due after `expire_every` of its commits.
#[derive(Clone, Debug)]
pub struct ExpireJob {
    /// The table.
    pub dest: Dest,
    /// Its identifier.
    pub table: iceberg::TableIdent,
    /// What may go.
    pub policy: floe_engine::expiry::ExpiryPolicy,
    /// Whether files are cleaned up after.
    pub cleanup: bool,
    /// The orphan safety window.
    pub orphan_min_age: std::time::Duration,
}

/// What a finished job reports back.
pub enum Done {
    /// An `Ahead` job.
    Ahead(Result<()>),
    /// An `Epoch` job: each step's outcome, per table.
    Epoch(Epoch, Result<Outcomes>),
    /// A `Rewrites` job.
    Rewrites(Result<Outcomes>),
    /// A maintenance scan of a table found these rewrites (or failed).
    Maintenance(Dest, Result<Vec<RewriteBundle>>),
    /// An `Expire` job: each table's report (a failure leaves the table as it is).
    Expire(Vec<(Dest, Result<floe_engine::expiry::ExpiryReport>)>),
    /// An `Erase` job ended (its request is answered either way).
    Erase,
}

/// A table the committer compacts itself (CDC tables, equality-mode base tables), and how.
#[derive(Clone, Debug)]
pub struct MaintenanceJob {
    /// The table.
    pub dest: Dest,
    /// Its target.
    pub target: Target,
    /// CDC or bucketed base table.
    pub layout: crate::snapshot_rewrite::Layout,
    /// Its thresholds.
    pub settings: floe_engine::table_settings::MaintenanceSettings,
    /// The epoch its rewrites are committed with.
    pub epoch: Epoch,
}

/// Committer-side table maintenance: which table to scan next, and rewrites ready to commit.
#[derive(Debug, Default)]
struct Maintenance {
    running: bool,
    ready: Vec<RewriteBundle>,
    /// Files committed per table since its last scan.
    added: HashMap<Dest, u64>,
    final_pass: BTreeSet<Dest>,
}

/// Which kind of step an outcome is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// An epoch's snapshot, and the entries it retired.
    Epoch {
        /// Entries retired (replaced deletion vectors, dangling deletes, rewrite inputs).
        retired: u64,
        /// Bytes read by rewrites that ride in the snapshot (0: none).
        rewrite_bytes: u64,
    },
    /// A rewrite.
    Rewrite {
        /// Bytes it read.
        bytes_read: u64,
        /// Entries it retired.
        retired: u64,
    },
}

/// The committer's core. See the module docs.
pub struct CommitterCore {
    plan: PlanRef,
    epochs: BTreeMap<Epoch, EpochContent>,
    run_progress: SourceOffsets,
    /// Tables whose pause is already recorded in the catalog.
    pauses_recorded: BTreeSet<u32>,
    /// The newest epoch closed so far.
    closed_through: Option<Epoch>,
    inflight: Option<(Epoch, BTreeMap<Dest, Written1>)>,
    ahead_inflight: bool,
    failed: bool,
    sequences: HashMap<Dest, SequenceLog>,
    maintenance: Maintenance,
    rewrites_inflight: bool,
    /// Commits per table since its last expiry.
    since_expiry: HashMap<Dest, usize>,
    expire_inflight: bool,
    /// Both inputs are done (a bounded run's end): one last expiry of every table that
    /// committed since its last one, before the committer lets go.
    inputs_done: bool,
    final_expiry_done: bool,
    /// An erasure's last part, waiting for its turn; and whether it runs.
    erase_queued: Option<Box<crate::erasure_requests::FinalizeJob>>,
    erase_inflight: bool,
}

impl CommitterCore {
    /// An empty committer.
    pub fn new(plan: PlanRef) -> CommitterCore {
        CommitterCore {
            plan,
            epochs: BTreeMap::new(),
            run_progress: SourceOffsets::default(),
            pauses_recorded: BTreeSet::new(),
            closed_through: None,
            inflight: None,
            ahead_inflight: false,
            failed: false,
            sequences: HashMap::new(),
            maintenance: Maintenance::default(),
            rewrites_inflight: false,
            since_expiry: HashMap::new(),
            expire_inflight: false,
            inputs_done: false,
            final_expiry_done: false,
            erase_queued: None,
            erase_inflight: false,
        }
    }

    /// The newest epoch closed so far.
    pub fn closed_through(&self) -> Option<Epoch> {
        self.closed_through
    }

    /// Queues an erasure's last part: it runs alone, before the next epoch's commits, once
    /// no maintenance scan runs or waits to commit.
    pub fn queue_erase(&mut self, job: Box<crate::erasure_requests::FinalizeJob>) {
        self.erase_queued = Some(job);
    }

    /// Both inputs are done: the run is ending.
    pub fn inputs_done(&mut self) {
        self.inputs_done = true;
    }

    /// Whether the end-of-run expiry is still to come.
    /// (Epochs still to commit will add commits, so they count too.)
    fn final_expiry_pending(&self) -> bool {
        let enabled = |dest: &Dest| match dest {
            Dest::Base(t) | Dest::Cdc(t) => self.plan.tables.get(*t as usize).is_some_and(|t| t.maintenance.expiry),
            Dest::DeadLetters(_) => false,
        };
        self.inputs_done
            && !self.final_expiry_done
            && !self.failed
            && self.plan.tables.iter().any(|t| t.maintenance.expiry)
            && (!self.epochs.is_empty()
                || self.inflight.is_some()
                || self.since_expiry.iter().any(|(dest, n)| *n > 0 && enabled(dest)))
    }

    /// Tables due for expiry: `expire_every` commits since their last one. Their counters
    /// restart.
    fn expiry_due(&mut self) -> Vec<ExpireJob> {
        let plan = Arc::clone(&self.plan);
        // At the end, once every epoch is committed: every table with commits since its
        // last expiry, so the run leaves nothing for a later cleanup.
        let last = self.final_expiry_pending() && self.epochs.is_empty() && self.inflight.is_none();
        if last {
            self.final_expiry_done = true;
        }
        let mut due = Vec::new();
        for t in &plan.tables {
            let m = &t.maintenance;
            if !m.expiry {
                continue;
            }
            for (dest, target) in [(Dest::Base(t.index), t.base.as_ref()), (Dest::Cdc(t.index), t.cdc.as_ref())] {
                let Some(target) = target else { continue };
                let count = self.since_expiry.entry(dest).or_default();
                if *count < m.expire_every && !(last && *count > 0) {
                    continue;
                }
                *count = 0;
                due.push(ExpireJob {
                    dest,
                    table: target.ident.clone(),
                    policy: floe_engine::expiry::ExpiryPolicy::of(m),
                    cleanup: m.cleanup,
                    orphan_min_age: m.orphan_min_age,
                });
            }
        }
        due
    }

    /// Adds what a writer sent.
    pub fn add(&mut self, written: Written) {
        let content = self.epochs.entry(written.epoch()).or_default();
        match written {
            Written::File(f) => content.files.entry(f.dest).or_default().push(f),
            Written::Rewrite(r) => content.rewrites.entry(r.dest).or_default().push(r),
        }
    }

    /// Adds source progress for an epoch.
    pub fn add_progress(&mut self, epoch: Epoch, progress: SourceProgress) {
        self.epochs.entry(epoch).or_default().progress.push(progress);
    }

    /// The oldest pending epoch.
    pub fn oldest(&self) -> Option<Epoch> {
        self.epochs.keys().next().copied()
    }

    /// A table the committer should scan for due rewrites now (marked running), if any:
    /// enough files landed since its last scan, or (`input_done`, a bounded run) it got any
    /// files and had no last look yet.
    pub fn maintenance_due(&mut self, input_done: bool) -> Option<MaintenanceJob> {
        // One scan at a time, and none while its rewrites wait or commit: a scan must read
        // the table after them, or it plans the same files again.
        if self.maintenance.running
            || self.failed
            || !self.maintenance.ready.is_empty()
            || self.rewrites_inflight
            || self.erase_queued.is_some()
            || self.erase_inflight
        {
            return None;
        }
        let plan = Arc::clone(&self.plan);
        let epoch = self.closed_through.unwrap_or_default();
        for t in &plan.tables {
            if !t.maintenance.compaction || t.versions.pause_state().is_some() {
                continue;
            }
            let candidates = [
                (Dest::Cdc(t.index), t.cdc.as_ref(), t.maintenance.cdc_max_files, crate::snapshot_rewrite::Layout::Cdc),
                (
                    Dest::Base(t.index),
                    t.base.as_ref().filter(|_| !t.deletes.uses_index()),
                    t.maintenance.max_data_files,
                    crate::snapshot_rewrite::Layout::Cdc,
                ),
            ];
            for (dest, target, threshold, layout) in candidates {
                let Some(target) = target else { continue };
                let added = self.maintenance.added.get(&dest).copied().unwrap_or_default();
                let last_look = input_done && added > 0 && self.maintenance.final_pass.insert(dest);
                if added <= threshold as u64 && !last_look {
                    continue;
                }
                let layout = match (dest, layout) {
                    (Dest::Base(_), _) => match crate::key_index_rebuild::KeyShape::of(t, target) {
                        Ok(shape) => crate::snapshot_rewrite::Layout::Buckets(shape),
                        Err(_) => continue,
                    },
                    (_, layout) => layout,
                };
                self.maintenance.added.insert(dest, 0);
                self.maintenance.running = true;
                return Some(MaintenanceJob {
                    dest,
                    target: target.clone(),
                    layout,
                    settings: t.maintenance.clone(),
                    epoch,
                });
            }
        }
        None
    }

    /// Whether table maintenance is running or has rewrites to commit.
    pub fn maintenance_busy(&self) -> bool {
        self.maintenance.running
            || !self.maintenance.ready.is_empty()
            || self.rewrites_inflight
            || self.expire_inflight
            || self.final_expiry_pending()
    }

    /// The smallest epoch whose capability is still needed: the one in flight, else the
    /// oldest pending, else the first not closed.
    pub fn holds_from(&self) -> Option<Epoch> {
        self.inflight.as_ref().map(|(e, _)| *e).or(self.oldest()).or(self.closed_through.map(|e| e + 1))
    }

    /// Whether a failure stopped the committer.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Records a failure: nothing more is started.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// The next job, if one may start: nothing in flight, no failure. Schema versions found
    /// ahead go first; then the oldest epoch, once `passed(epoch)` says both inputs passed it.
    pub fn next(&mut self, is_committer: bool, passed: impl Fn(Epoch) -> bool) -> Result<Option<Job>> {
        if self.failed
            || self.inflight.is_some()
            || self.ahead_inflight
            || self.rewrites_inflight
            || self.expire_inflight
            || self.erase_inflight
        {
            return Ok(None);
        }
        if self.plan.failure.get().is_some() {
            self.failed = true;
            return Ok(None);
        }
        if is_committer {
            let ahead = self.ahead_commits()?;
            if !ahead.is_empty() {
                self.ahead_inflight = true;
                return Ok(Some(Job::Ahead(ahead)));
            }
        }
        if !self.maintenance.ready.is_empty() {
            let ready = std::mem::take(&mut self.maintenance.ready);
            let mut by_dest: BTreeMap<Dest, Vec<RewriteBundle>> = BTreeMap::new();
            for bundle in ready {
                by_dest.entry(bundle.dest).or_default().push(bundle);
            }
            let mut steps = Vec::new();
            for (dest, bundles) in by_dest {
                let Some(target) = target(&self.plan, dest) else { continue };
                let epoch = bundles.iter().map(|b| b.epoch).max().unwrap_or_default();
                let step = self.rewrite_step(dest, target, epoch, bundles)?;
                steps.push(TableSteps { dest, steps: vec![step], known: self.log(dest).clone() });
            }
            self.rewrites_inflight = true;
            return Ok(Some(Job::Rewrites(steps)));
        }
        // An erasure waits for a maintenance scan that runs (its outputs may hold the keys)
        // and for its rewrites to commit; none starts meanwhile.
        if self.erase_queued.is_some() && !self.maintenance.running && self.maintenance.ready.is_empty() {
            self.erase_inflight = true;
            return Ok(self.erase_queued.take().map(Job::Erase));
        }
        if is_committer {
            let due = self.expiry_due();
            if !due.is_empty() {
                self.expire_inflight = true;
                return Ok(Some(Job::Expire(due)));
            }
        }
        while let Some(epoch) = self.oldest() {
            if !passed(epoch) {
                return Ok(None);
            }
            let sizes = self.sizes(epoch);
            let commits = self.close(epoch)?;
            if commits.is_empty() {
                continue;
            }
            self.inflight = Some((epoch, sizes.clone()));
            return Ok(Some(Job::Epoch(epoch, commits, sizes)));
        }
        Ok(None)
    }

    /// Takes a finished job's result: learns sequence numbers, and returns the epoch's
    /// report with the sizes written (or records the failure and returns the error).
    pub fn done(&mut self, done: Done) -> Result<Option<Finished>> {
        match done {
            Done::Ahead(result) => {
                self.ahead_inflight = false;
                result.inspect_err(|_| self.failed = true).map(|()| None)
            }
            Done::Rewrites(result) => {
                self.rewrites_inflight = false;
                let outcomes = result.inspect_err(|_| self.failed = true)?;
                Ok(Some((
                    CommitReport { epoch: self.closed_through.unwrap_or_default(), tables: Vec::new() },
                    BTreeMap::new(),
                    outcomes,
                )))
            }
            Done::Expire(results) => {
                self.expire_inflight = false;
                for (dest, result) in results {
                    match result {
                        Ok(r) => tracing::debug!(?dest, ?r, "expiry and cleanup"),
                        Err(e) => tracing::warn!(?dest, error = %e, "snapshot expiry or cleanup failed; retried later"),
                    }
                }
                Ok(None)
            }
            Done::Erase => {
                self.erase_inflight = false;
                Ok(None)
            }
            Done::Maintenance(dest, result) => {
                self.maintenance.running = false;
                match result {
                    Ok(bundles) => self.maintenance.ready.extend(bundles),
                    Err(e) => tracing::warn!(?dest, error = %e, "table maintenance failed; the table stays as it is"),
                }
                Ok(None)
            }
            Done::Epoch(epoch, result) => {
                let Some((inflight, sizes)) = self.inflight.take() else {
                    return Err(Error::new(ErrorKind::Internal, format!("epoch {epoch} finished, none was in flight")));
                };
                if inflight != epoch {
                    self.failed = true;
                    return Err(Error::new(ErrorKind::Internal, "commits finished out of order"));
                }
                let outcomes = result.inspect_err(|_| self.failed = true)?;
                for (dest, steps) in &outcomes {
                    for (kind, outcome) in steps {
                        if let (StepKind::Epoch { .. }, Some((_, seq))) = (kind, outcome.snapshot()) {
                            self.log(*dest).record(epoch, seq);
                            *self.since_expiry.entry(*dest).or_default() += 1;
                            let files = sizes.get(dest).map_or(0, |w| w.data_files);
                            *self.maintenance.added.entry(*dest).or_default() += files;
                        }
                    }
                }
                let tables = outcomes
                    .iter()
                    .filter_map(|(d, steps)| {
                        let name = target(&self.plan, *d)?.name.to_string();
                        steps.iter().rev().find_map(|(_, o)| match o {
                            CommitOutcome::Committed { snapshot_id, .. } => Some((name.clone(), *snapshot_id, true)),
                            CommitOutcome::AlreadyCommitted { snapshot_id, .. } => {
                                Some((name.clone(), *snapshot_id, false))
                            }
                            CommitOutcome::Dropped { .. } => None,
                        })
                    })
                    .collect();
                Ok(Some((CommitReport { epoch, tables }, sizes, outcomes)))
            }
        }
    }

    fn log(&mut self, dest: Dest) -> &mut SequenceLog {
        let start = target(&self.plan, dest).map_or(0, |t| t.sequence_number);
        self.sequences.entry(dest).or_insert_with(|| SequenceLog::new(start))
    }

    fn sizes(&self, epoch: Epoch) -> BTreeMap<Dest, Written1> {
        let mut sizes: BTreeMap<Dest, Written1> = BTreeMap::new();
        for (dest, files) in self.epochs.get(&epoch).map(|c| &c.files).into_iter().flatten() {
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
        sizes
    }

    fn topics(&self, dest: Dest) -> Vec<&str> {
        match dest {
            Dest::Base(t) | Dest::Cdc(t) => vec![self.plan.tables[t as usize].topic.as_str()],
            Dest::DeadLetters(i) => self.plan.dead_letter_topics(i as usize),
        }
    }

    /// Closes `epoch` (which must be the oldest): folds its progress into the run's and
    /// returns the commits of its files and rewrites.
    pub fn close(&mut self, epoch: Epoch) -> Result<EpochCommits> {
        let content = self.epochs.remove(&epoch).unwrap_or_default();
        self.closed_through = Some(epoch);
        for p in &content.progress {
            let topic = &self.plan.tables[p.table as usize].topic;
            self.run_progress.advance(topic, p.partition, p.next_offset);
        }
        let mut commits = EpochCommits::default();
        self.record_pauses(epoch, &mut commits);
        let plan = Arc::clone(&self.plan);
        let dests: BTreeSet<Dest> = content.files.keys().chain(content.rewrites.keys()).copied().collect();
        let mut files = content.files;
        let mut rewrites = content.rewrites;
        for dest in dests {
            let Some(target) = target(&plan, dest) else { continue };
            if let Dest::Base(t) | Dest::Cdc(t) = dest
                && plan.tables[t as usize].versions.is_paused_at(epoch)
            {
                continue;
            }
            let mut steps = Vec::new();
            let (before, after): (Vec<RewriteBundle>, Vec<RewriteBundle>) = rewrites
                .remove(&dest)
                .unwrap_or_default()
                .into_iter()
                .partition(|r| r.after_epoch.is_none_or(|a| a < epoch));
            let epoch_files = files.remove(&dest).unwrap_or_default();
            // Rewrites finished before the epoch's changes ride in the epoch's snapshot;
            // alone (no changes), or after them, they get a `replace` snapshot.
            match (epoch_files.is_empty(), before.is_empty()) {
                (true, false) => steps.push(self.rewrite_step(dest, target, epoch, before)?),
                (true, true) => {}
                (false, _) => {
                    let mut step = self.epoch_step(dest, target, epoch, &epoch_files)?;
                    if !before.is_empty() {
                        let rewrite = self.rewrite_step(dest, target, epoch, before)?;
                        merge_into(&mut step, rewrite);
                    }
                    steps.push(step);
                }
            }
            if !after.is_empty() {
                steps.push(self.rewrite_step(dest, target, epoch, after)?);
            }
            let known = self.log(dest).clone();
            let table = TableSteps { dest, steps, known };
            match dest {
                Dest::DeadLetters(_) => commits.first.push(table),
                _ => commits.then.push(table),
            }
        }
        Ok(commits)
    }

    fn epoch_step(&self, dest: Dest, target: &Target, epoch: Epoch, files: &[WrittenFile]) -> Result<Step> {
        let mut offsets = target.committed.clone();
        offsets.merge(&self.run_progress.restrict(self.topics(dest)));
        let mut request = CommitRequest::epoch(target.ident.clone(), &self.plan.pipeline_id, epoch, offsets);
        if let Dest::Base(t) | Dest::Cdc(t) = dest {
            request.schema_change = schema_commit(&self.plan.tables[t as usize], dest, epoch)?;
        }
        self.decode_into(dest, target, files, &mut request)?;
        let bases = vec![None; request.data_files.len()];
        Ok(Step { request, bases, bytes_read: 0, transient: Vec::new() })
    }

    /// One `replace` snapshot for rewrites of one table (of several buckets, say).
    fn rewrite_step(&self, dest: Dest, target: &Target, epoch: Epoch, bundles: Vec<RewriteBundle>) -> Result<Step> {
        let mut request =
            CommitRequest::epoch(target.ident.clone(), &self.plan.pipeline_id, epoch, SourceOffsets::default());
        let id = match bundles.as_slice() {
            [one] => one.id.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let strict = bundles.iter().any(|b| b.strict);
        request.rewrite = Some(RewriteCommit { id, strict });
        // A rewrite snapshot carries the epoch's schema like an epoch snapshot: the table
        // may have had no changes since the version its files were written under.
        if let Dest::Base(t) | Dest::Cdc(t) = dest {
            request.schema_change = schema_commit(&self.plan.tables[t as usize], dest, epoch)?;
        }
        let mut bases = Vec::new();
        let mut bytes_read = 0;
        for bundle in bundles {
            bases.extend(bundle.added.iter().filter(|f| !f.deletes).map(|_| Some(bundle.base)));
            request.removed.extend(bundle.removed);
            bytes_read += bundle.bytes_read;
            self.decode_into(dest, target, &bundle.added, &mut request)?;
        }
        let mut step = Step { request, bases, bytes_read, transient: Vec::new() };
        net_out(&mut step);
        Ok(step)
    }

    /// Decodes files (each with the schema it was written under) into a request.
    fn decode_into(
        &self,
        dest: Dest,
        target: &Target,
        files: &[WrittenFile],
        request: &mut CommitRequest,
    ) -> Result<()> {
        let versions = match dest {
            Dest::Base(t) | Dest::Cdc(t) => self.plan.tables[t as usize].versions.all(),
            Dest::DeadLetters(_) => Vec::new(),
        };
        // The run's first version is the plan's target; later ones are resolved once.
        let mut evolved: BTreeMap<u32, Option<Target>> = BTreeMap::new();
        for f in files {
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
            let file = f.data_file(at.unwrap_or(target)).map_err(|e| {
                e.context(format!(
                    "reading the entry of {} (written under schema version {})",
                    f.path, f.schema_version
                ))
            })?;
            match f.deletes {
                true => request.delete_files.push(file),
                false => request.data_files.push(file),
            }
            request.removed.extend(f.removes.iter().cloned());
        }
        Ok(())
    }

    /// Schema versions a pull added ahead of the stream, as metadata-only commits to run
    /// between two epochs. Each is used from the first epoch not closed yet, so every later
    /// snapshot of the table carries it (or a newer version) and its schema never moves back.
    fn ahead_commits(&mut self) -> Result<Vec<(TableIdent, SchemaCommit)>> {
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

/// The files no snapshot can reference once a step's commit returned `outcome`: those it
/// netted out (`transient`), and a dropped step's own. Whole files only: a deletion
/// vector shares its Puffin file with others, which wait for cleanup.
pub fn unreferenced_after(transient: Vec<FileRef>, request: &CommitRequest, outcome: &CommitOutcome) -> Vec<FileRef> {
    let mut out = transient;
    if matches!(outcome, CommitOutcome::Dropped { .. }) {
        out.extend(request.data_files.iter().chain(&request.delete_files).map(FileRef::of));
    }
    out.retain(|f| f.content_offset.is_none());
    out
}

/// Folds a rewrite step into an epoch's step: one snapshot with both.
fn merge_into(step: &mut Step, rewrite: Step) {
    let r = rewrite.request;
    step.request.data_files.extend(r.data_files);
    step.request.delete_files.extend(r.delete_files);
    step.request.removed.extend(r.removed);
    step.bases.extend(rewrite.bases);
    step.bytes_read += rewrite.bytes_read;
    step.transient.extend(rewrite.transient);
    net_out(step);
}

/// Files a step both adds and retires (a bucket compacted twice before the committer got
/// to it; a rewrite's carried deletes consolidated by the epoch it rides with) were never
/// live: they leave both lists.
fn net_out(step: &mut Step) {
    let request = &mut step.request;
    let added: BTreeSet<FileRef> = request.data_files.iter().chain(&request.delete_files).map(FileRef::of).collect();
    let transient: BTreeSet<FileRef> = request.removed.iter().filter(|r| added.contains(*r)).cloned().collect();
    if transient.is_empty() {
        return;
    }
    request.removed.retain(|r| !transient.contains(r));
    let data = std::mem::take(&mut request.data_files);
    let bases = std::mem::take(&mut step.bases);
    let (data, bases): (Vec<_>, Vec<_>) =
        data.into_iter().zip(bases).filter(|(f, _)| !transient.contains(&FileRef::of(f))).unzip();
    request.data_files = data;
    step.bases = bases;
    request.delete_files.retain(|f| !transient.contains(&FileRef::of(f)));
    step.transient.extend(transient);
}

/// The schema a table's snapshot of `epoch` must carry: the epoch's version, once the run
/// evolved the table, with the audit entries of every version up to it.
fn schema_commit(table: &TablePlan, dest: Dest, epoch: Epoch) -> Result<Option<SchemaCommit>> {
    schema_commit_of(table, dest, &table.versions.at(epoch))
}

/// The schema change that brings a table to `latest` (none for the run's first version).
fn schema_commit_of(table: &TablePlan, dest: Dest, latest: &Version) -> Result<Option<SchemaCommit>> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use floe_engine::catalog::{SqlTableCatalog, TableCatalog};
    use floe_engine::config::CatalogConfig;
    use floe_engine::schema::{Column, ColumnType, TableSchema};
    use iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat, Struct};

    use super::*;
    use crate::plan::{PipelinePlan, TablePlan, test_target};
    use crate::schema_versions::SchemaVersions;

    fn plan(dir: &std::path::Path) -> PlanRef {
        plan_with(dir, Default::default())
    }

    fn plan_with(dir: &std::path::Path, maintenance: floe_engine::table_settings::MaintenanceSettings) -> PlanRef {
        let runtime = floe_engine::runtime::IoRuntime::new(1).expect("runtime");
        let config = CatalogConfig {
            name: "floe".into(),
            uri: format!("sqlite://{}/catalog.db", dir.display()),
            warehouse: dir.join("warehouse").display().to_string(),
        };
        let catalog: Arc<dyn TableCatalog> =
            Arc::new(runtime.block_on(SqlTableCatalog::open(&config)).expect("catalog"));
        let schema = Arc::new(
            TableSchema::new(
                vec![
                    Column { name: "id".into(), ty: ColumnType::Long, nullable: false },
                    Column { name: "v".into(), ty: ColumnType::Long, nullable: true },
                ],
                &["id".into()],
            )
            .expect("schema"),
        );
        let mut committed = SourceOffsets::default();
        committed.advance("t", 0, 0);
        let base = Target { committed, sequence_number: 7, ..test_target(dir) };
        let table = TablePlan {
            index: 0,
            topic: "t".into(),
            schema: Arc::clone(&schema),
            declared: None,
            bucket_column: 0,
            buckets: 1,
            upsert: true,
            base: Some(base),
            cdc: None,
            dead_letters: 0,
            equality_ids: vec![1],
            cdc_positions: Vec::new(),
            transform: None,
            row_type: None,
            versions: SchemaVersions::new(schema, Default::default()),
            schema_policy: Default::default(),
            deletes: Default::default(),
            maintenance,
        };
        Arc::new(PipelinePlan {
            pipeline_id: "p".into(),
            epochs: floe_engine::epoch::EpochPolicy::every(10),
            max_inflight_epochs: 4,
            tables: vec![table],
            dead_letters: Vec::new(),
            catalog,
            runtime,
            metrics: floe_engine::metrics::Metrics::new(),
            failure: Default::default(),
            committer_wake: Default::default(),
            indexes: Default::default(),
            erasures: Default::default(),
            maintain_at_end: false,
        })
    }

    fn file(plan: &PlanRef, epoch: Epoch, name: &str, deletes: bool) -> WrittenFile {
        let content = if deletes { DataContentType::PositionDeletes } else { DataContentType::Data };
        let data = DataFileBuilder::default()
            .content(content)
            .file_path(format!("/x/{name}.parquet"))
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .record_count(1)
            .file_size_in_bytes(10)
            .build()
            .expect("file");
        let target = plan.tables[0].base.as_ref().expect("base");
        WrittenFile::new(Dest::Base(0), epoch, target, data, None).expect("written")
    }

    fn progress(core: &mut CommitterCore, epoch: Epoch, next: i64) {
        core.add_progress(epoch, SourceProgress { table: 0, partition: 0, next_offset: next });
    }

    fn epoch_job(job: Option<Job>) -> (Epoch, EpochCommits) {
        match job {
            Some(Job::Epoch(e, commits, _)) => (e, commits),
            other => panic!("expected an epoch job, got {other:?}"),
        }
    }

    fn ok(epoch: Epoch, seq: i64) -> Done {
        let outcome = CommitOutcome::Committed { snapshot_id: seq, sequence_number: seq, attempts: 1 };
        Done::Epoch(epoch, Ok(vec![(Dest::Base(0), vec![(StepKind::Epoch { retired: 0, rewrite_bytes: 0 }, outcome)])]))
    }

    fn bundle(
        epoch: Epoch,
        after: Option<Epoch>,
        base: Option<Epoch>,
        added: Vec<WrittenFile>,
        removed: &[&str],
    ) -> RewriteBundle {
        RewriteBundle {
            dest: Dest::Base(0),
            epoch,
            id: format!("rw-{epoch}"),
            after_epoch: after,
            base: RewriteBase::Epoch(base),
            strict: true,
            added,
            removed: removed.iter().map(|r| FileRef::path(format!("/x/{r}.parquet"))).collect(),
            bytes_read: 100,
        }
    }

    #[test]
    fn epochs_commit_in_order_one_at_a_time_and_learn_their_sequence_numbers() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let mut core = CommitterCore::new(Arc::clone(&plan));
        for e in 0..3 {
            core.add(file(&plan, e, &format!("e{e}"), false).into());
            progress(&mut core, e, 10 * (e as i64 + 1));
        }
        // Only epochs both inputs passed start.
        assert!(core.next(true, |_| false).expect("next").is_none());
        let (e, commits) = epoch_job(core.next(true, |_| true).expect("next"));
        assert_eq!(e, 0);
        assert_eq!(commits.then.len(), 1);
        let step = &commits.then[0].steps[0];
        assert_eq!(step.request.offsets.get("t", 0), Some(10), "offsets are cumulative");
        assert!(core.next(true, |_| true).expect("next").is_none(), "one job at a time");
        assert_eq!(core.holds_from(), Some(0), "the epoch in flight keeps its capability");
        let (report, _, _) = core.done(ok(0, 8)).expect("done").expect("report");
        assert_eq!(report.epoch, 0);
        let (e, _) = epoch_job(core.next(true, |_| true).expect("next"));
        assert_eq!(e, 1);
        core.done(ok(1, 9)).expect("done");
        assert_eq!(core.log(Dest::Base(0)).as_of(Some(1)), 9);
        assert_eq!(core.log(Dest::Base(0)).as_of(Some(0)), 8);
        assert_eq!(core.log(Dest::Base(0)).as_of(None), 7, "as the run found the table");
    }

    #[test]
    fn a_rewrite_rides_in_the_next_epoch_or_follows_the_epoch_it_finished_after() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let mut core = CommitterCore::new(Arc::clone(&plan));
        core.add(file(&plan, 0, "e0", false).into());
        progress(&mut core, 0, 10);
        let (_, _) = epoch_job(core.next(true, |_| true).expect("next"));
        core.done(ok(0, 8)).expect("done");
        // Finished after epoch 0's changes, sent at epoch 1: it rides in epoch 1's snapshot.
        core.add(file(&plan, 1, "e1", false).into());
        core.add(Written::Rewrite(bundle(1, Some(0), Some(0), vec![file(&plan, 1, "merged", false)], &["e0"])));
        progress(&mut core, 1, 20);
        let (_, commits) = epoch_job(core.next(true, |_| true).expect("next"));
        let steps = &commits.then[0].steps;
        assert_eq!(steps.len(), 1, "one snapshot for the epoch and the rewrite");
        assert_eq!(steps[0].bases, vec![None, Some(RewriteBase::Epoch(Some(0)))]);
        assert!(steps[0].request.rewrite.is_none(), "idempotent by the epoch's offsets");
        assert_eq!(steps[0].request.removed, vec![FileRef::path("/x/e0.parquet")]);
        core.done(ok(1, 9)).expect("done");
        // Finished after epoch 2's changes, sent at epoch 2 (the input had ended): its own
        // `replace` snapshot, after the epoch's.
        core.add(file(&plan, 2, "e2", false).into());
        core.add(Written::Rewrite(bundle(2, Some(2), Some(2), vec![file(&plan, 2, "m2", false)], &["e2"])));
        progress(&mut core, 2, 30);
        let (_, commits) = epoch_job(core.next(true, |_| true).expect("next"));
        let steps = &commits.then[0].steps;
        assert_eq!(steps.len(), 2);
        assert!(steps[0].request.rewrite.is_none() && steps[1].request.rewrite.is_some(), "epoch first");
    }

    /// A rewrite committed alone carries its epoch's schema, as an epoch snapshot does: a
    /// snapshot never lists files of a schema newer than its own.
    #[test]
    fn a_rewrite_snapshot_carries_the_epochs_schema() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let versions = &plan.tables[0].versions;
        let mut columns = plan.tables[0].schema.columns.clone();
        columns.push(Column { name: "note".into(), ty: ColumnType::String, nullable: true });
        let wider = Arc::new(TableSchema::new(columns, &["id".into()]).expect("schema"));
        let first = crate::schema_versions::FirstSeen {
            topic: "t".into(),
            partition: 0,
            offset: 3,
            detected: "push".into(),
            at_ms: 0,
        };
        versions.evolve(&versions.latest(), wider, Default::default(), vec![], first).expect("v1");
        versions.used_at(1, 0);
        let mut core = CommitterCore::new(Arc::clone(&plan));
        core.add(Written::Rewrite(bundle(0, Some(0), None, vec![file(&plan, 0, "m", false)], &["old"])));
        progress(&mut core, 0, 10);
        let (_, commits) = epoch_job(core.next(true, |_| true).expect("next"));
        let step = &commits.then[0].steps[0];
        assert!(step.request.rewrite.is_some(), "a rewrite alone");
        let change = step.request.schema_change.as_ref().expect("the epoch's schema rides along");
        assert!(change.schema.field_by_name("note").is_some());
    }

    #[test]
    fn files_a_snapshot_both_adds_and_retires_were_never_live() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let mut core = CommitterCore::new(Arc::clone(&plan));
        // Two rewrites of one bucket before the committer got to them: the second retires
        // the first's output.
        let first = bundle(0, None, None, vec![file(&plan, 0, "a", false)], &["old1", "old2"]);
        let second = bundle(0, None, None, vec![file(&plan, 0, "b", false)], &["a", "old3"]);
        core.add(Written::Rewrite(first));
        core.add(Written::Rewrite(second));
        let (_, commits) = epoch_job(core.next(true, |_| true).expect("next"));
        let step = &commits.then[0].steps[0];
        let added: Vec<&str> = step.request.data_files.iter().map(|f| f.file_path()).collect();
        assert_eq!(added, vec!["/x/b.parquet"]);
        let removed: Vec<&str> = step.request.removed.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(removed, vec!["/x/old1.parquet", "/x/old2.parquet", "/x/old3.parquet"]);
        assert_eq!(step.bases.len(), 1);
        assert_eq!(step.transient, vec![FileRef::path("/x/a.parquet")], "deleted once the step lands");
        let landed = CommitOutcome::Committed { snapshot_id: 1, sequence_number: 1, attempts: 1 };
        let transient = step.transient.clone();
        assert_eq!(unreferenced_after(transient.clone(), &step.request, &landed), transient);
        let dropped = CommitOutcome::Dropped { reason: "inputs gone".into() };
        let gone: Vec<String> =
            unreferenced_after(transient, &step.request, &dropped).into_iter().map(|f| f.path).collect();
        assert_eq!(gone, vec!["/x/a.parquet", "/x/b.parquet"], "a dropped step's own files too");
    }

    #[test]
    fn expiry_runs_between_epochs_every_n_commits_and_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = floe_engine::table_settings::MaintenanceSettings { expire_every: 2, ..Default::default() };
        let plan = plan_with(dir.path(), settings);
        let mut core = CommitterCore::new(Arc::clone(&plan));
        for e in 0..4 {
            core.add(file(&plan, e, &format!("e{e}"), false).into());
            progress(&mut core, e, 10 * (e as i64 + 1));
        }
        for e in 0..2 {
            let (got, _) = epoch_job(core.next(true, |_| true).expect("next"));
            assert_eq!(got, e);
            core.done(ok(e, 8 + e as i64)).expect("done");
        }
        let jobs = match core.next(true, |_| true).expect("next") {
            Some(Job::Expire(jobs)) => jobs,
            other => panic!("expected an expiry after two commits, got {other:?}"),
        };
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].dest, Dest::Base(0));
        assert_eq!(jobs[0].policy.keep_snapshots, 5);
        assert!(core.next(true, |_| true).expect("next").is_none(), "no epoch commits while expiry runs");
        assert!(core.maintenance_busy(), "a bounded run waits for it");
        let failed = Err(Error::new(ErrorKind::Catalog, "gone"));
        assert!(
            core.done(Done::Expire(vec![(Dest::Base(0), failed)])).expect("a failed expiry is not fatal").is_none()
        );
        let (got, _) = epoch_job(core.next(true, |_| true).expect("next"));
        assert_eq!(got, 2, "epochs go on after it");
        core.done(ok(2, 10)).expect("done");
        let (got, _) = epoch_job(core.next(true, |_| true).expect("next"));
        assert_eq!(got, 3, "one commit since the last expiry is not enough");
        core.done(ok(3, 11)).expect("done");
        assert!(core.next(false, |_| true).expect("next").is_none(), "only the committer expires");
        assert!(matches!(core.next(true, |_| true).expect("next"), Some(Job::Expire(_))));
        core.done(Done::Expire(Vec::new())).expect("done");
        // The run's end: one last expiry of a table with any commit since its last one,
        // once every epoch is committed; the committer holds on until it is done.
        core.add(file(&plan, 4, "e4", false).into());
        progress(&mut core, 4, 50);
        core.inputs_done();
        assert!(core.maintenance_busy(), "the last expiry is still to come");
        let (got, _) = epoch_job(core.next(true, |_| true).expect("next"));
        assert_eq!(got, 4, "epochs first");
        core.done(ok(4, 12)).expect("done");
        assert!(matches!(core.next(true, |_| true).expect("next"), Some(Job::Expire(_))), "then the last expiry");
        core.done(Done::Expire(Vec::new())).expect("done");
        assert!(!core.maintenance_busy(), "and then the committer lets go");
        assert!(core.next(true, |_| true).expect("next").is_none());
    }

    #[test]
    fn a_failed_job_stops_the_committer() {
        let dir = tempfile::tempdir().expect("dir");
        let plan = plan(dir.path());
        let mut core = CommitterCore::new(Arc::clone(&plan));
        for e in 0..2 {
            core.add(file(&plan, e, &format!("e{e}"), false).into());
        }
        epoch_job(core.next(true, |_| true).expect("next"));
        let failed = Done::Epoch(0, Err(floe_engine::Error::new(floe_engine::ErrorKind::Catalog, "down")));
        assert!(core.done(failed).is_err());
        assert!(core.failed());
        assert!(core.next(true, |_| true).expect("next").is_none(), "nothing after a failure");
    }

    #[test]
    fn the_sequence_log_keeps_a_bounded_horizon_and_stays_safe_beyond_it() {
        let mut log = SequenceLog::new(3);
        assert_eq!(log.as_of(Some(5)), 3);
        for e in 0..(SequenceLog::KEEP as u64 + 10) {
            log.record(e, 100 + e as i64);
        }
        assert_eq!(log.as_of(Some(SequenceLog::KEEP as u64 + 5)), 100 + SequenceLog::KEEP as i64 + 5);
        // Beyond the horizon: the oldest kept, later than the truth, never earlier.
        assert_eq!(log.as_of(Some(2)), 110);
        log.record(3, 1);
        assert_eq!(
            log.as_of(Some(SequenceLog::KEEP as u64 + 9)),
            100 + SequenceLog::KEEP as i64 + 9,
            "out of order ignored"
        );
    }
}
