//! The shell shared by every writer operator: stage records per epoch, and when the input
//! frontier passes an epoch, hand that epoch's staged records to the IO runtime as write
//! jobs; emit the written files at the epoch once the jobs finish. A core may also run
//! background work (compaction) and emit its results between epochs.
//!
//! ```text
//!   records @e ──► StageCore::stage(e, ..)          (hold a capability for e)
//!   frontier > e ──► StageCore::flush(e) ──► jobs ──► IO runtime ──► files @e  (release e)
//!                                                          └──► StageCore::written(e, files)
//!   any activation ──► StageCore::poll(f) ──► jobs ──► results @f    (f: the input frontier,
//!                                                                     held while the core is busy)
//! ```
//!
//! # Invariants
//! - Items are staged under their own epoch ([`StageCore::epoch_of`]), which may be later
//!   than their message's time; a capability is held for each staged epoch.
//! - The capability for epoch `e` is held from the first record at `e` until every file of
//!   `e` has been emitted, so the committer never sees `e` complete without all its files.
//! - Background results are emitted at the epoch the core names, never below the smallest
//!   epoch the input may still carry (or, once the input is done, the last one it had),
//!   through a capability the shell holds for as long as the core says it is busy:
//!   background work never holds back an epoch the input has passed, and never loses its
//!   results at the end of the input.
//! - On a write error the capability is *kept* and the error recorded in the plan's
//!   [`crate::plan::Failure`]: nothing of `e` or later can be committed, and the runner stops.
//! - The worker never blocks on IO; job completion wakes the operator through a
//!   `SyncActivator`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;

use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::files::Written;
use crate::plan::PlanRef;

/// One asynchronous write producing files.
pub type WriteJob = Pin<Box<dyn Future<Output = Result<Vec<Written>>> + Send>>;

/// Wakes the operator from another thread (a background job finished).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The testable core of a writer: per-epoch staging and turning a closed epoch into jobs.
pub trait StageCore: 'static {
    /// Input record type.
    type Item: 'static;
    /// The epoch an item belongs to. A message's time is only a lower bound of the times
    /// of the updates it carries (differential batches span every epoch the frontier
    /// passed at once), so items that carry their own time must say so.
    fn epoch_of(&self, _item: &Self::Item, message_time: Epoch) -> Epoch {
        message_time
    }
    /// Stages one record of `epoch`. An error is a bug upstream (a value of the wrong
    /// type); it stops the pipeline before anything of the epoch is committed.
    fn stage(&mut self, epoch: Epoch, item: Self::Item) -> Result<()>;
    /// Takes everything staged for `epoch` and returns the jobs that write it.
    fn flush(&mut self, epoch: Epoch) -> Result<Vec<WriteJob>>;
    /// The jobs of `epoch` finished and wrote `files`.
    fn written(&mut self, _epoch: Epoch, _files: &[Written]) {}
    /// Called on every activation: finished background work, as jobs with the epoch their
    /// results go out at, at least `at` (`input_done`: the input has ended; `at` is then
    /// the last epoch it may have carried).
    fn poll(&mut self, _at: Epoch, _input_done: bool) -> Result<Vec<(Epoch, WriteJob)>> {
        Ok(Vec::new())
    }
    /// Whether background work is running or due (the shell then holds a capability).
    fn busy(&self) -> bool {
        false
    }
    /// Gives the core a way to wake the operator when background work finishes.
    fn attach(&mut self, _wake: Waker) {}
}

/// Runs a [`StageCore`] as a timely operator. See the module docs.
pub fn write_epochs<'s, C, P>(
    stream: Stream<'s, Epoch, Vec<C::Item>>,
    pact: P,
    name: &str,
    mut core: C,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<Written>>
where
    C: StageCore,
    P: ParallelizationContract<Epoch, Vec<C::Item>>,
{
    let scope = stream.scope();
    let name = name.to_string();
    stream.unary_frontier(pact, &name.clone(), move |default, info| {
        let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
        let wake = Arc::clone(&activator);
        core.attach(Arc::new(move || {
            let _ = wake.activate();
        }));
        let (done_tx, done_rx) = mpsc::channel::<(Epoch, bool, Result<Vec<Written>>)>();
        let mut staged: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
        let mut inflight: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
        // Background results: held at the input frontier while the core is busy.
        let mut held: Option<Capability<Epoch>> = Some(default);
        let mut background: BTreeMap<Epoch, (Capability<Epoch>, usize)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else { return };
                for item in data.drain(..) {
                    let epoch = core.epoch_of(&item, time);
                    debug_assert!(epoch >= time, "an update's time is at least its message's time");
                    staged.entry(epoch).or_insert_with(|| cap.delayed(&epoch, 0));
                    if let Err(e) = core.stage(epoch, item) {
                        plan.failure.record(e.context(format!("{name}: staging epoch {epoch}")));
                    }
                }
            });

            while let Some(&epoch) = staged.keys().next() {
                if frontier.frontier().less_equal(&epoch) {
                    break;
                }
                let Some(cap) = staged.remove(&epoch) else { break };
                match core.flush(epoch) {
                    Ok(jobs) => {
                        spawn(&plan, &activator, &done_tx, epoch, false, jobs);
                        inflight.insert(epoch, cap);
                    }
                    Err(e) => {
                        plan.failure.record(e.context(format!("{name}: staging epoch {epoch}")));
                        inflight.insert(epoch, cap);
                    }
                }
            }

            while let Ok((epoch, from_background, result)) = done_rx.try_recv() {
                match result {
                    Ok(files) if from_background => {
                        if let Some((cap, left)) = background.get_mut(&epoch) {
                            output.session(&*cap).give_iterator(files.into_iter());
                            *left -= 1;
                            if *left == 0 {
                                background.remove(&epoch);
                            }
                        }
                    }
                    Ok(files) => {
                        core.written(epoch, &files);
                        if let Some(cap) = inflight.remove(&epoch) {
                            output.session(&cap).give_iterator(files.into_iter());
                        }
                    }
                    Err(e) => plan.failure.record(e.context(format!("{name}: writing epoch {epoch}"))),
                }
            }

            // Background work: results go out at the input frontier (or its last epoch).
            let input_done = frontier.frontier().is_empty();
            if let Some(cap) = held.as_mut()
                && let Some(&at) = frontier.frontier().iter().min()
                && at > *cap.time()
            {
                cap.downgrade(&at);
            }
            if let Some(cap) = held.as_ref() {
                let at = *cap.time();
                match core.poll(at, input_done) {
                    Ok(jobs) => {
                        for (epoch, job) in jobs {
                            let epoch = epoch.max(at);
                            // One message comes back per spawn.
                            let slot = background.entry(epoch).or_insert_with(|| (cap.delayed(&epoch), 0));
                            slot.1 += 1;
                            spawn(&plan, &activator, &done_tx, epoch, true, vec![job]);
                        }
                    }
                    Err(e) => plan.failure.record(e.context(format!("{name}: background work"))),
                }
            }
            if input_done && staged.is_empty() && !core.busy() {
                held = None;
            }
        }
    })
}

fn spawn(
    plan: &PlanRef,
    activator: &Arc<timely::scheduling::SyncActivator>,
    done: &mpsc::Sender<(Epoch, bool, Result<Vec<Written>>)>,
    epoch: Epoch,
    background: bool,
    jobs: Vec<WriteJob>,
) {
    let tx = done.clone();
    let wake = Arc::clone(activator);
    plan.runtime.spawn(async move {
        let result =
            futures::future::try_join_all(jobs).await.map(|files| files.into_iter().flatten().collect::<Vec<_>>());
        if !background {
            floe_engine::faults::point("files-written");
        }
        let _ = tx.send((epoch, background, result));
        let _ = wake.activate();
    });
}
