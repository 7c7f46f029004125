//! Routing decoded events to the tables that still need them, without copying them twice.
//!
//! ```text
//!   Event ──┬─ base wants it?  ──► ((BucketKey, ()), e, Upsert)   to consolidation
//!           └─ CDC wants it?   ──► Event                         to the CDC writer
//!   DeadLetter ──► its dead-letter table wants it? ──► DeadLetter  to the DLQ writer
//! ```
//!
//! # Invariants
//! - "Wants" means the record's offset is at or beyond the offset the table's newest floe
//!   snapshot recorded: a record below it is never written to that table again.
//! - An event both tables want is cloned once (the CDC copy); the base path takes it.

use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::metrics::Metrics;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Filter, OkErr};
use timely::dataflow::operators::generic::Operator;

use crate::bucket::Bucketer;
use crate::debezium::{DeadLetter, Event};
use crate::plan::PlanRef;
use crate::upsert::{BucketKey, Upsert};

/// An update to the keyed collection of upserts.
pub type UpsertUpdate = ((BucketKey, ()), Epoch, Upsert);

/// Splits events into keyed upsert updates (for base tables) and ledger events (for CDC
/// tables), skipping what each table already committed.
pub fn fan_out<'s>(
    events: Stream<'s, Epoch, Vec<Event>>,
    plan: PlanRef,
) -> (Stream<'s, Epoch, Vec<UpsertUpdate>>, Stream<'s, Epoch, Vec<Event>>) {
    let routed = events.unary::<CapacityContainerBuilder<Vec<Result<UpsertUpdate, Event>>>, _, _, _>(
        Pipeline,
        "FanOut",
        move |_cap, _info| {
            let bucketers: Vec<Option<Bucketer>> = plan
                .tables
                .iter()
                .map(|t| {
                    t.base.as_ref().and_then(|_| Bucketer::new(t.buckets, t.schema.columns[t.bucket_column].ty).ok())
                })
                .collect();
            let key_positions: Vec<usize> = plan
                .tables
                .iter()
                .map(|t| t.schema.key.iter().position(|&p| p == t.bucket_column).unwrap_or(0))
                .collect();
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(&epoch) = cap.least() else { return };
                    let mut session = output.session(&cap);
                    let mut skipped = 0;
                    let mut routed: Vec<u64> = vec![0; plan.tables.len()];
                    for event in data.drain(..) {
                        let t = event.table as usize;
                        let table = &plan.tables[t];
                        let to_cdc =
                            table.cdc.as_ref().is_some_and(|c| c.wants(&table.topic, event.partition, event.offset));
                        let to_base =
                            table.base.as_ref().is_some_and(|b| b.wants(&table.topic, event.partition, event.offset));
                        if !to_base && !to_cdc {
                            skipped += 1;
                            continue;
                        }
                        match (to_base, &bucketers[t]) {
                            (true, Some(bucketer)) => {
                                routed[t] += 1;
                                if to_cdc {
                                    session.give(Err(event.clone()));
                                }
                                let bucket = bucketer.bucket(&event.key.0[key_positions[t]]);
                                let key = BucketKey { table: event.table, bucket, key: event.key.clone() };
                                session.give(Ok(((key, ()), epoch, Upsert::from_event(event, table.upsert))));
                            }
                            _ => session.give(Err(event)),
                        }
                    }
                    if skipped > 0 {
                        Metrics::add(&plan.metrics.records_skipped, skipped);
                    }
                    for (t, n) in routed.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                        if let Some(target) = &plan.tables[t].base {
                            plan.metrics.table(&target.name.to_string(), |s| s.events += n);
                        }
                    }
                });
            }
        },
    );
    // `Result` is the routing enum `ok_err` splits on, not an error: Ok = base, Err = CDC.
    #[allow(clippy::result_large_err)]
    routed.ok_err(|r| r)
}

/// Dead letters their dead-letter tables still need; counts them.
pub fn dead_letters<'s>(dead: Stream<'s, Epoch, Vec<DeadLetter>>, plan: PlanRef) -> Stream<'s, Epoch, Vec<DeadLetter>> {
    let plan = Arc::clone(&plan);
    dead.filter(move |d| {
        let table = &plan.tables[d.table as usize];
        let wanted = plan.dead_letters[table.dead_letters].wants(&table.topic, d.partition, d.offset);
        if wanted {
            Metrics::add(&plan.metrics.dead_letters, 1);
            tracing::warn!(topic = %table.topic, partition = d.partition, offset = d.offset, reason = %d.reason, "dead letter");
        }
        wanted
    })
}
