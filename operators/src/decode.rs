//! The decode operator: Kafka records in, typed change events out, bad records on a
//! second stream. A thin shell over [`crate::debezium::TableDecoder`].
//!
//! ```text
//!   SourceRecord @e ──► TableDecoder ──► Event @e        (data output)
//!                                   └──► DeadLetter @e   (error output)
//! ```
//!
//! # Invariants
//! - Local (`Pipeline` pact): records are decoded on the worker that read them, so a
//!   partition's events stay in offset order.
//! - Every record ends as one event, one dead letter, one counted tombstone, or one counted
//!   held record (its table is paused by a schema change; the offset is not committed).

use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::metrics::Metrics;
use floe_engine::record::SourceRecord;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::debezium::{DeadLetter, Decoded, Event, TableDecoder};
use crate::plan::PlanRef;

/// Builds one decoder per table of the plan.
pub fn decoders(plan: &PlanRef) -> Vec<TableDecoder> {
    plan.tables
        .iter()
        .map(|t| {
            TableDecoder::new(
                t.index,
                &t.topic,
                Arc::clone(&t.versions),
                t.declared.is_some(),
                t.schema_policy,
                t.transform.clone(),
            )
            .with_row_type(t.row_type.clone())
        })
        .collect()
}

/// The decode operator.
pub fn decode<'s>(
    records: Stream<'s, Epoch, Vec<SourceRecord>>,
    plan: PlanRef,
) -> (Stream<'s, Epoch, Vec<Event>>, Stream<'s, Epoch, Vec<DeadLetter>>) {
    let results = records
        .unary::<timely::container::CapacityContainerBuilder<Vec<Result<Event, DeadLetter>>>, _, _, _>(
            Pipeline,
            "Decode",
            move |_cap, _info| {
                let mut decoders = decoders(&plan);
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        let (mut tombstones, mut held) = (0, 0);
                        let epoch = cap.least().copied().unwrap_or_default();
                        for record in data.drain(..) {
                            let Some(decoder) = decoders.get_mut(record.table as usize) else { continue };
                            match decoder.decode(record, epoch) {
                                Decoded::Event(e) => session.give(Ok(e)),
                                Decoded::Dead(d) => session.give(Err(d)),
                                Decoded::Tombstone => tombstones += 1,
                                Decoded::Held => held += 1,
                                // The failure stops the run before this epoch commits.
                                Decoded::Fatal(reason) => plan.failure.record(reason),
                            }
                        }
                        if tombstones > 0 {
                            Metrics::add(&plan.metrics.tombstones, tombstones);
                        }
                        if held > 0 {
                            Metrics::add(&plan.metrics.held, held);
                        }
                    });
                }
            },
        );
    results.ok_err(|r| r)
}
