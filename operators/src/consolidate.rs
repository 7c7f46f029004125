//! Per-epoch consolidation of the keyed upsert collection, exchanged by bucket.
//!
//! ```text
//!   ((BucketKey, ()), e, Upsert) ──Exchange(by table and bucket)──► arrange (batcher seals per epoch)
//!                                                                 ──► one (BucketKey, e, Upsert) per touched key
//! ```
//!
//! # Invariants
//! - The pact routes by `(table, bucket)`, so a bucket's keys meet on one worker, where its
//!   writer runs.
//! - The arrangement's trace is dropped right away (`as_collection` consumes it): batches
//!   are emitted and forgotten, so memory holds only open epochs, never the table.

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::implementations::{KeyBatcher, KeySpine};
use floe_engine::epoch::Epoch;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;

use crate::route::UpsertUpdate;
use crate::upsert::{BucketKey, Upsert};

/// The exchange route of a key: spreads `(table, bucket)` pairs over workers.
pub fn route(key: &BucketKey) -> u64 {
    route_of(key.table, key.bucket)
}

/// The route of a `(table, bucket)`: its writer is worker `route_of(..) % peers` (timely's
/// exchange).
pub fn route_of(table: u32, bucket: u32) -> u64 {
    bucket as u64 + table as u64
}

/// Consolidates upserts per key and epoch; the output lives on the bucket's worker.
pub fn consolidate_upserts<'s>(
    updates: Stream<'s, Epoch, Vec<UpsertUpdate>>,
) -> Stream<'s, Epoch, Vec<(BucketKey, Epoch, Upsert)>> {
    let pact = Exchange::new(|update: &UpsertUpdate| route(&(update.0).0));
    let arranged = arrange_core::<_, _, KeyBatcher<BucketKey, Epoch, Upsert>, KeySpine<BucketKey, Epoch, Upsert>>(
        updates,
        pact,
        "ConsolidateUpserts",
        KeyBatcher::new,
    );
    arranged.as_collection(|key: &BucketKey, _: &()| key.clone()).inner
}
