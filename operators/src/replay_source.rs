//! The replay source: reads a replay log's partitions epoch by epoch and emits records at
//! their epochs, plus one progress statement per partition and epoch.
//!
//! ```text
//!   partitions (round-robin over workers)
//!      p0: o0 o1 o2 | o3 o4 o5 | ...        epoch = (offset - origin) / N
//!      p1: o0 o1 o2 | o3 ...
//!            e=0        e=1
//!   ──► records @e, SourceProgress{p, next_offset} @e ──► downgrade to e+1 ──► ... ──► drop (EOF)
//! ```
//!
//! # Invariants
//! - Each worker reads a disjoint set of partitions; each partition from the resume offset
//!   its tables recorded (or the log's start).
//! - The capability is held at the smallest epoch any of the worker's partitions may still
//!   produce, so the frontier passes an epoch exactly when every partition finished it.
//! - Backpressure: the source does not start epoch `e` until the committer has finished
//!   every epoch below `e - max_inflight_epochs`.

use std::sync::Arc;
use std::time::Duration;

use floe_engine::epoch::{Epoch, EpochPolicy};
use floe_engine::metrics::Metrics;
use floe_engine::record::SourceRecord;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};

use crate::committer::SourceProgress;
use crate::plan::PlanRef;
use crate::replay_log::{PartitionCursor, ReplayIndex};

/// Records and progress in one stream, split right after the source.
#[derive(Clone, Debug)]
pub enum SourceItem {
    /// A record.
    Record(SourceRecord),
    /// A partition finished an epoch.
    Progress(SourceProgress),
}

/// Records per activation before yielding to other operators.
const BATCH: usize = 4096;

struct Assigned {
    cursor: PartitionCursor,
    origin: i64,
    last: Option<i64>,
    reported: Option<i64>,
}

impl Assigned {
    fn next_epoch(&self, policy: &EpochPolicy) -> Option<Epoch> {
        self.cursor.peek_offset().map(|o| policy.epoch_of(self.origin, o))
    }
}

/// Splits a source stream into records and progress.
pub fn split<'s>(
    items: Stream<'s, Epoch, Vec<SourceItem>>,
) -> (Stream<'s, Epoch, Vec<SourceRecord>>, Stream<'s, Epoch, Vec<SourceProgress>>) {
    items.ok_err(|item| match item {
        SourceItem::Record(r) => Ok(r),
        SourceItem::Progress(p) => Err(p),
    })
}

/// The replay-source operator. `committed` probes the committer's output.
pub fn replay_source<'s>(
    scope: Scope<'s, Epoch>,
    index: Arc<ReplayIndex>,
    plan: PlanRef,
    committed: ProbeHandle<Epoch>,
) -> (Stream<'s, Epoch, Vec<SourceRecord>>, Stream<'s, Epoch, Vec<SourceProgress>>) {
    let (worker, peers) = (scope.index(), scope.peers());
    let items = source::<_, timely::container::CapacityContainerBuilder<Vec<SourceItem>>, _, _>(
        scope,
        "ReplaySource",
        move |cap, info| {
            let activator = scope.activator_for(info.address);
            let policy = plan.epochs;
            let mut parts: Vec<Assigned> = Vec::new();
            for (i, p) in index.partitions.iter().enumerate() {
                if i % peers != worker {
                    continue;
                }
                let start = plan.resume_offset(p.table, p.partition);
                let cursor = PartitionCursor::open(&index, p, start);
                let origin = start.or(cursor.peek_offset()).unwrap_or(0);
                parts.push(Assigned { cursor, origin, last: None, reported: None });
            }
            let first = parts.iter().filter_map(|a| a.next_epoch(&policy)).min();
            let mut cap = first.map(|e| {
                let mut c = cap;
                c.downgrade(&e);
                c
            });
            activator.activate();
            move |output| {
                let Some(held) = cap.as_mut() else { return };
                let epoch = *held.time();
                if plan.failure.get().is_some() {
                    return;
                }
                if plan.must_wait(epoch, &committed) {
                    activator.activate_after(Duration::from_millis(5));
                    return;
                }
                let mut session = output.session(held);
                let mut budget = BATCH;
                let mut read = 0u64;
                for a in parts.iter_mut() {
                    while budget > 0 && a.next_epoch(&policy) == Some(epoch) {
                        match a.cursor.read() {
                            Ok(Some(record)) => {
                                a.last = Some(record.offset);
                                session.give(SourceItem::Record(record));
                                budget -= 1;
                                read += 1;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                plan.failure.record(e);
                                return;
                            }
                        }
                    }
                    // Finished this epoch for the partition: say how far it got.
                    if a.next_epoch(&policy) != Some(epoch)
                        && let Some(last) = a.last
                        && a.reported != Some(last)
                    {
                        a.reported = Some(last);
                        session.give(SourceItem::Progress(SourceProgress {
                            table: a.cursor.table(),
                            partition: a.cursor.partition(),
                            next_offset: last + 1,
                        }));
                    }
                }
                drop(session);
                Metrics::add(&plan.metrics.records_in, read);
                if budget == 0 {
                    activator.activate();
                    return;
                }
                match parts.iter().filter_map(|a| a.next_epoch(&policy)).min() {
                    Some(next) => {
                        held.downgrade(&next);
                        activator.activate();
                    }
                    None => cap = None,
                }
            }
        },
    );
    split(items)
}
