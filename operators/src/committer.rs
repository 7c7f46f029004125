//! The committer: one worker turns each closed epoch's files, and the rewrites finished
//! with it, into atomic snapshots per table, recording the source progress the epoch
//! covers. The decisions live in [`crate::committer_core`]; this shell moves data,
//! capabilities and jobs.
//!
//! ```text
//!   files @e ─────┐  (Exchange: all to the committer worker)
//!   progress @e ──┤
//!                 ▼
//!   CommitterCore ── both frontiers > e ──► Job ──► IO runtime:
//!                                                    1. recorded pauses, dead-letter tables
//!                                                    2. CDC and base tables (concurrently;
//!                                                       each table's steps in order)
//!                                                 ──► CommitReport @e
//! ```
//!
//! # Invariants
//! - Exactly one worker commits ([`committer_worker`]); the core starts one job at a time.
//! - The capability for `e` is held until `e`'s job reports, and kept after a failure, so
//!   nothing later is committed over a gap.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::mpsc;

use floe_engine::catalog::TableCatalog;
use floe_engine::commit::{CommitOutcome, RetryPolicy, commit, commit_metadata};
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::Metrics;
use floe_engine::schema_audit::PENDING_PROPERTY;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

pub use crate::committer_core::{CommitReport, SourceProgress, target};
use crate::committer_core::{
    CommitterCore, Done, EpochCommits, Job, Outcomes, Step, StepKind, TableSteps, Written1, unreferenced_after,
};
use crate::erasure_requests::{Action, Coordinator, finalize};
use crate::files::{Dest, RewriteBase, Written};
use crate::plan::{PipelinePlan, PlanRef};
use crate::snapshot_rewrite::{Due, compact_table};

/// The worker that commits for a pipeline: one place decides.
pub fn committer_worker(pipeline_id: &str, peers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pipeline_id.hash(&mut h);
    (h.finish() % peers.max(1) as u64) as usize
}

/// Runs one epoch's commits.
async fn run_epoch(catalog: Arc<dyn TableCatalog>, epoch: Epoch, commits: EpochCommits) -> Result<Outcomes> {
    for (table, pending, versions) in &commits.pauses {
        let value = serde_json::to_string(pending).unwrap_or_default();
        let set = std::collections::HashMap::from([(PENDING_PROPERTY.to_string(), value)]);
        commit_metadata(catalog.as_ref(), table, None, set, &[]).await?;
        versions.pause_recorded();
    }
    let mut out = Vec::new();
    for table in commits.first {
        out.push(run_table(catalog.as_ref(), epoch, table).await?);
    }
    let rest =
        futures::future::try_join_all(commits.then.into_iter().map(|t| run_table(catalog.as_ref(), epoch, t))).await?;
    out.extend(rest);
    Ok(out)
}

/// Runs one table's steps in order; a rewrite learns its data sequence number here.
async fn run_table(
    catalog: &dyn TableCatalog,
    epoch: Epoch,
    table: TableSteps,
) -> Result<(Dest, Vec<(StepKind, CommitOutcome)>)> {
    let retry = RetryPolicy::default();
    let mut this_epoch: Option<i64> = None;
    let mut out = Vec::with_capacity(table.steps.len());
    for Step { mut request, bases, bytes_read, transient } in table.steps {
        request.data_sequence_numbers = bases
            .into_iter()
            .map(|base| match base {
                None => None,
                Some(RewriteBase::Sequence(seq)) => Some(seq),
                Some(RewriteBase::Epoch(Some(e))) if e == epoch && request.rewrite.is_some() => {
                    Some(this_epoch.unwrap_or(table.known.as_of(Some(e))))
                }
                Some(RewriteBase::Epoch(e)) => Some(table.known.as_of(e)),
            })
            .collect();
        let retired = request.removed.len() as u64;
        let outcome = commit(catalog, &request, retry).await?;
        let kind = match &request.rewrite {
            None => StepKind::Epoch { retired, rewrite_bytes: bytes_read },
            Some(_) => StepKind::Rewrite { bytes_read, retired },
        };
        if request.rewrite.is_none() {
            this_epoch = outcome.snapshot().map(|(_, seq)| seq);
        }
        for f in unreferenced_after(transient, &request, &outcome) {
            if let Err(e) = floe_engine::cleanup::remove(catalog.file_io(), &f.path).await {
                tracing::warn!(file = %f.path, error = %e, "could not delete a file no snapshot holds");
            }
        }
        out.push((kind, outcome));
    }
    Ok((table.dest, out))
}

/// Polls the catalog for erasure requests to this pipeline's tables, until dropped.
struct Poller(tokio::task::JoinHandle<()>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn poll_requests(
    plan: &PipelinePlan,
    tx: mpsc::Sender<Vec<floe_engine::catalog::Request>>,
    wake: Arc<timely::scheduling::SyncActivator>,
) -> Poller {
    let catalog = Arc::clone(&plan.catalog);
    let tables: Vec<iceberg::TableIdent> =
        plan.tables.iter().flat_map(|t| t.base.iter().chain(t.cdc.iter()).map(|x| x.ident.clone())).collect();
    Poller(plan.runtime.spawn(async move {
        loop {
            match catalog.pending_requests(&tables, crate::erasure_requests::KIND).await {
                Ok(requests) if !requests.is_empty() => {
                    if tx.send(requests).is_err() {
                        return;
                    }
                    let _ = wake.activate();
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "polling the catalog for requests"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }))
}

/// Answers a request in the catalog (a failure to answer is logged: `floe erase` then
/// times out and says so).
async fn answer(catalog: &dyn TableCatalog, id: &str, state: &str, result: &str) {
    if let Err(e) = catalog.finish_request(id, state, result).await {
        tracing::warn!(erasure = %id, error = %e, "could not answer the erasure request");
    }
}

fn record_metrics(plan: &PipelinePlan, sizes: &BTreeMap<Dest, Written1>, outcomes: &Outcomes) {
    for (dest, steps) in outcomes {
        let Some(target) = target(plan, *dest) else { continue };
        let w = sizes.get(dest).copied().unwrap_or_default();
        for (kind, outcome) in steps {
            plan.metrics.table(&target.name.to_string(), |s| match (kind, outcome) {
                (StepKind::Epoch { retired, rewrite_bytes }, CommitOutcome::Committed { .. }) => {
                    s.commits += 1;
                    if *rewrite_bytes > 0 {
                        s.rewrites += 1;
                        s.rewrite_bytes += rewrite_bytes;
                    }
                    s.data_files += w.data_files;
                    s.delete_files += w.delete_files;
                    s.bytes += w.bytes;
                    s.files_retired += retired;
                    s.last_source_ts_ms = s.last_source_ts_ms.max(w.max_source_ts_ms);
                }
                (StepKind::Rewrite { bytes_read, retired }, CommitOutcome::Committed { .. }) => {
                    s.commits += 1;
                    s.rewrites += 1;
                    s.rewrite_bytes += bytes_read;
                    s.files_retired += retired;
                }
                (_, CommitOutcome::AlreadyCommitted { .. }) => s.already_committed += 1,
                (_, CommitOutcome::Dropped { .. }) => {}
            });
            if matches!(outcome, CommitOutcome::Committed { .. }) {
                Metrics::add(&plan.metrics.commits, 1);
            }
        }
    }
}

/// The committer operator.
pub fn commit_epochs<'s>(
    files: Stream<'s, Epoch, Vec<Written>>,
    progress: Stream<'s, Epoch, Vec<SourceProgress>>,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<CommitReport>> {
    let scope = files.scope();
    let chosen = committer_worker(&plan.pipeline_id, scope.peers()) as u64;
    files.binary_frontier(
        progress,
        Exchange::new(move |_: &Written| chosen),
        Exchange::new(move |_: &SourceProgress| chosen),
        "Committer",
        move |default, info| {
            let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
            // Every worker runs this operator; only the chosen one receives and commits.
            let is_committer = scope.index() as u64 == chosen;
            if is_committer {
                plan.committer_wake.register((*activator).clone());
            }
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            let mut core = CommitterCore::new(Arc::clone(&plan));
            // Erasures asked through the catalog (`floe erase` while this pipeline runs).
            let mut erasures = Coordinator::default();
            let (requests_tx, requests_rx) = mpsc::channel::<Vec<floe_engine::catalog::Request>>();
            let poller = is_committer.then(|| poll_requests(&plan, requests_tx, Arc::clone(&activator)));
            let mut caps: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
            // Held at the inputs' frontier while table maintenance runs, so a bounded run
            // waits for it.
            let mut held: Option<Capability<Epoch>> = Some(default);
            move |(files_in, files_frontier), (progress_in, progress_frontier), output| {
                // The poller lives as long as the operator.
                let _ = &poller;
                files_in.for_each(|cap, data| {
                    if let Some(&e) = cap.least()
                        && !caps.contains_key(&e)
                        && let Some(c) = cap.retain_least(0)
                    {
                        caps.insert(e, c);
                    }
                    for f in data.drain(..) {
                        core.add(f);
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
                        core.add_progress(e, p);
                    }
                });

                while let Ok(done) = done_rx.try_recv() {
                    if matches!(done, Done::Erase) {
                        erasures.finished();
                    }
                    match core.done(done) {
                        Ok(Some((report, sizes, outcomes))) => {
                            record_metrics(&plan, &sizes, &outcomes);
                            if report.tables.is_empty() {
                                continue;
                            }
                            let epoch = report.epoch;
                            tracing::debug!(epoch, tables = report.tables.len(), "epoch committed");
                            if let Some(cap) = caps.remove(&epoch) {
                                output.session(&cap).give(report);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => plan.failure.record(e),
                    }
                }

                if is_committer {
                    while let Ok(requests) = requests_rx.try_recv() {
                        erasures.offer(requests);
                    }
                    for report in plan.erasures.reports() {
                        erasures.report(report);
                    }
                    for action in erasures.step(&plan, core.closed_through(), core.holds_from()) {
                        match action {
                            Action::Post(orders) => plan.erasures.post(orders),
                            Action::Finalize(job) => core.queue_erase(job),
                            Action::Answer { id, reason } => {
                                tracing::warn!(erasure = %id, %reason, "erasure refused");
                                let catalog = Arc::clone(&plan.catalog);
                                plan.runtime.spawn(async move {
                                    answer(catalog.as_ref(), &id, "failed", &reason).await;
                                });
                            }
                        }
                    }
                }
                if files_frontier.frontier().is_empty() && progress_frontier.frontier().is_empty() {
                    core.inputs_done();
                }
                loop {
                    let passed = |epoch: Epoch| {
                        !files_frontier.frontier().less_equal(&epoch)
                            && !progress_frontier.frontier().less_equal(&epoch)
                    };
                    let input_done = files_frontier.frontier().is_empty() && progress_frontier.frontier().is_empty();
                    if is_committer
                        && (!input_done || plan.maintain_at_end)
                        && let Some(job) = core.maintenance_due(input_done)
                    {
                        let catalog = Arc::clone(&plan.catalog);
                        let tx = done_tx.clone();
                        let wake = Arc::clone(&activator);
                        plan.runtime.spawn(async move {
                            let name = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                            let result = compact_table(
                                catalog.as_ref(),
                                job.dest,
                                &job.target,
                                &job.layout,
                                &job.settings,
                                Due::Thresholds,
                                job.epoch,
                                &name,
                            )
                            .await;
                            let _ = tx.send(Done::Maintenance(job.dest, result));
                            let _ = wake.activate();
                        });
                    }
                    let job = match core.next(is_committer, passed) {
                        Ok(Some(job)) => job,
                        Ok(None) => break,
                        Err(e) => {
                            plan.failure.record(e);
                            core.fail();
                            break;
                        }
                    };
                    let catalog = Arc::clone(&plan.catalog);
                    let tx = done_tx.clone();
                    let wake = Arc::clone(&activator);
                    match job {
                        Job::Ahead(jobs) => {
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
                                let _ = tx.send(Done::Ahead(result));
                                let _ = wake.activate();
                            });
                        }
                        Job::Rewrites(steps) => {
                            plan.runtime.spawn(async move {
                                let result = futures::future::try_join_all(
                                    steps.into_iter().map(|t| run_table(catalog.as_ref(), 0, t)),
                                )
                                .await;
                                let _ = tx.send(Done::Rewrites(result));
                                let _ = wake.activate();
                            });
                        }
                        Job::Expire(jobs) => {
                            let metrics = Arc::clone(&plan.metrics);
                            let names: Vec<String> = jobs.iter().map(|j| j.table.to_string()).collect();
                            plan.runtime.spawn(async move {
                                let now = chrono::Utc::now().timestamp_millis();
                                let mut results = Vec::new();
                                for (job, name) in jobs.into_iter().zip(names) {
                                    let result = floe_engine::expiry::expire_and_clean(
                                        catalog.as_ref(),
                                        &job.table,
                                        job.policy,
                                        now,
                                        job.cleanup,
                                        job.orphan_min_age,
                                    )
                                    .await;
                                    if let Ok(r) = &result {
                                        metrics.table(&name, |s| {
                                            s.snapshots_expired += r.snapshots_expired;
                                            s.files_cleaned += r.cleanup.files();
                                            s.bytes_cleaned += r.cleanup.bytes;
                                        });
                                    }
                                    results.push((job.dest, result));
                                }
                                let _ = tx.send(Done::Expire(results));
                                let _ = wake.activate();
                            });
                        }
                        Job::Erase(job) => {
                            plan.runtime.spawn(async move {
                                tracing::info!(erasure = %job.id, "erasure: rewriting, expiring, cleaning up, proving");
                                match finalize(catalog.as_ref(), &job).await {
                                    Ok((result, clean)) => {
                                        let state = if clean { "done" } else { "failed" };
                                        tracing::info!(erasure = %job.id, state, "erasure answered");
                                        answer(catalog.as_ref(), &job.id, state, &result).await;
                                    }
                                    Err(e) => {
                                        tracing::warn!(erasure = %job.id, error = %e, "erasure failed");
                                        answer(catalog.as_ref(), &job.id, "failed", &e.to_string()).await;
                                    }
                                }
                                let _ = tx.send(Done::Erase);
                                let _ = wake.activate();
                            });
                        }
                        Job::Epoch(epoch, commits, _) => {
                            // Capabilities of earlier epochs are no longer needed.
                            caps.retain(|e, _| *e >= epoch);
                            if !caps.contains_key(&epoch) {
                                plan.failure.record(Error::new(
                                    ErrorKind::Internal,
                                    format!("committer holds no capability for epoch {epoch}"),
                                ));
                                core.fail();
                                break;
                            }
                            let metrics = Arc::clone(&plan.metrics);
                            plan.runtime.spawn(async move {
                                let started = std::time::Instant::now();
                                let result = run_epoch(catalog, epoch, commits).await;
                                if result.is_ok() {
                                    metrics.record_commit(started.elapsed());
                                }
                                let _ = tx.send(Done::Epoch(epoch, result));
                                let _ = wake.activate();
                            });
                        }
                    }
                }
                let input_done = files_frontier.frontier().is_empty() && progress_frontier.frontier().is_empty();
                if let Some(cap) = held.as_mut() {
                    let least =
                        files_frontier.frontier().iter().chain(progress_frontier.frontier().iter()).min().copied();
                    if let Some(at) = least
                        && at > *cap.time()
                    {
                        cap.downgrade(&at);
                    }
                }
                if input_done && (!core.maintenance_busy() || core.failed() || !plan.maintain_at_end) {
                    held = None;
                }
                // Epochs closed without commits release their capabilities at once.
                if let Some(first) = core.holds_from() {
                    caps.retain(|e, _| *e >= first);
                }
            }
        },
    )
}
