//! The shell shared by every writer operator: stage records per epoch, and when the input
//! frontier passes an epoch, hand that epoch's staged records to the IO runtime as write
//! jobs; emit the written files at the epoch once the jobs finish.
//!
//! ```text
//!   records @e ──► StageCore::stage(e, ..)          (hold a capability for e)
//!   frontier > e ──► StageCore::flush(e) ──► jobs ──► IO runtime ──► files @e  (release e)
//! ```
//!
//! # Invariants
//! - Items are staged under their own epoch ([`StageCore::epoch_of`]), which may be later
//!   than their message's time; a capability is held for each staged epoch.
//! - The capability for epoch `e` is held from the first record at `e` until every file of
//!   `e` has been emitted, so the committer never sees `e` complete without all its files.
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

use crate::files::WrittenFile;
use crate::plan::PlanRef;

/// One asynchronous write producing files.
pub type WriteJob = Pin<Box<dyn Future<Output = Result<Vec<WrittenFile>>> + Send>>;

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
}

/// Runs a [`StageCore`] as a timely operator. See the module docs.
pub fn write_epochs<'s, C, P>(
    stream: Stream<'s, Epoch, Vec<C::Item>>,
    pact: P,
    name: &str,
    mut core: C,
    plan: PlanRef,
) -> Stream<'s, Epoch, Vec<WrittenFile>>
where
    C: StageCore,
    P: ParallelizationContract<Epoch, Vec<C::Item>>,
{
    let scope = stream.scope();
    let name = name.to_string();
    stream.unary_frontier(pact, &name.clone(), move |_default, info| {
        let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
        let (done_tx, done_rx) = mpsc::channel::<(Epoch, Result<Vec<WrittenFile>>)>();
        let mut staged: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
        let mut inflight: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
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
                        let tx = done_tx.clone();
                        let wake = Arc::clone(&activator);
                        plan.runtime.spawn(async move {
                            let result = futures::future::try_join_all(jobs)
                                .await
                                .map(|files| files.into_iter().flatten().collect::<Vec<_>>());
                            floe_engine::faults::point("files-written");
                            let _ = tx.send((epoch, result));
                            let _ = wake.activate();
                        });
                        inflight.insert(epoch, cap);
                    }
                    Err(e) => {
                        plan.failure.record(e.context(format!("{name}: staging epoch {epoch}")));
                        inflight.insert(epoch, cap);
                    }
                }
            }

            while let Ok((epoch, result)) = done_rx.try_recv() {
                match result {
                    Ok(files) => {
                        if let Some(cap) = inflight.remove(&epoch) {
                            output.session(&cap).give_iterator(files.into_iter());
                        }
                    }
                    Err(e) => plan.failure.record(e.context(format!("{name}: writing epoch {epoch}"))),
                }
            }
        }
    })
}
