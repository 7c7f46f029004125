//! Routing decoded events to the tables that still need them.
//!
//! ```text
//!   Event ──► base wants it?  ──► ((BucketKey, ()), e, Upsert)   to consolidation
//!        └──► CDC wants it?   ──► Event                         to the CDC writer
//!   DeadLetter ──► its dead-letter table wants it? ──► DeadLetter to the DLQ writer
//! ```
//!
//! # Invariants
//! - "Wants" means the record's offset is at or beyond the offset the table's newest floe
//!   snapshot recorded: a record below it is never written to that table again.

use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::metrics::Metrics;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Filter;
use timely::dataflow::operators::generic::Operator;

use crate::bucket::Bucketer;
use crate::debezium::{DeadLetter, Event};
use crate::plan::PlanRef;
use crate::upsert::{BucketKey, Upsert};

/// An update to the keyed collection of upserts.
pub type UpsertUpdate = ((BucketKey, ()), Epoch, Upsert);

/// Events of tables with a base table, as keyed upsert updates.
pub fn to_upserts<'s>(events: Stream<'s, Epoch, Vec<Event>>, plan: PlanRef) -> Stream<'s, Epoch, Vec<UpsertUpdate>> {
    events.unary::<timely::container::CapacityContainerBuilder<Vec<UpsertUpdate>>, _, _, _>(Pipeline, "ToUpserts", move |_cap, _info| {
        let bucketers: Vec<Option<Bucketer>> = plan
            .tables
            .iter()
            .map(|t| {
                t.base.as_ref().and_then(|_| Bucketer::new(t.buckets, t.schema.columns[t.bucket_column].ty).ok())
            })
            .collect();
        move |input, output| {
            input.for_each(|cap, data| {
                let Some(&epoch) = cap.least() else { return };
                let mut session = output.session(&cap);
                let mut skipped = 0;
                let mut routed: Vec<u64> = vec![0; plan.tables.len()];
                for event in data.drain(..) {
                    let table = &plan.tables[event.table as usize];
                    let (Some(target), Some(bucketer)) = (&table.base, &bucketers[event.table as usize]) else { continue };
                    if !target.wants(&table.topic, event.partition, event.offset) {
                        skipped += 1;
                        continue;
                    }
                    let key_pos = table.schema.key.iter().position(|&p| p == table.bucket_column).unwrap_or(0);
                    let bucket = bucketer.bucket(&event.key.0[key_pos]);
                    routed[event.table as usize] += 1;
                    let upsert = Upsert::from_event(&event, table.upsert);
                    let key = BucketKey { table: event.table, bucket, key: event.key };
                    session.give(((key, ()), epoch, upsert));
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
    })
}

/// Events the CDC tables still need.
pub fn cdc_events<'s>(events: Stream<'s, Epoch, Vec<Event>>, plan: PlanRef) -> Stream<'s, Epoch, Vec<Event>> {
    events.filter(move |e| {
        let table = &plan.tables[e.table as usize];
        table.cdc.as_ref().is_some_and(|t| t.wants(&table.topic, e.partition, e.offset))
    })
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
