//! The standard CDC ingestion dataflow, built once per worker.
//!
//! ```text
//!   source ──► decode ──► fan_out ─┬─► consolidate (exchange by bucket) ─► base writer ──┐
//!      │                │          └────────────────────────────────────► CDC writer ───┤
//!      │                └─► dead letters ───────────────────────────────────► DLQ writer ───┤
//!      └──────── progress ───────────────────────────────────────────────────► committer ◄──┘
//!                                                                                  │
//!                                                                          probe (backpressure,
//!                                                                           completion)
//! ```

use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::error::Result;
use floe_operators::base_writer::write_base;
use floe_operators::cdc_writer::write_cdc;
use floe_operators::committer::commit_epochs;
use floe_operators::consolidate::consolidate_upserts;
use floe_operators::dead_letter_writer::write_dead_letters;
use floe_operators::decode::decode;
use floe_operators::kafka_source::{KafkaSourceSpec, kafka_source};
use floe_operators::plan::PlanRef;
use floe_operators::replay_log::ReplayIndex;
use floe_operators::replay_source::replay_source;
use floe_operators::route::{dead_letters, fan_out};
use timely::dataflow::Scope;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Concatenate, Probe};

/// Where a run reads from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// A replay log, indexed.
    Replay(Arc<ReplayIndex>),
    /// Kafka partitions.
    Kafka(Arc<KafkaSourceSpec>),
}

/// Builds the dataflow in `scope`; the committer's output feeds `probe`.
pub fn build<'s>(
    scope: Scope<'s, Epoch>,
    plan: PlanRef,
    source: &SourceSpec,
    probe: &ProbeHandle<Epoch>,
) -> Result<()> {
    let (records, progress) = match source {
        SourceSpec::Replay(index) => replay_source(scope, Arc::clone(index), Arc::clone(&plan), probe.clone()),
        SourceSpec::Kafka(spec) => kafka_source(scope, Arc::clone(spec), Arc::clone(&plan), probe.clone()),
    };
    let (events, dead) = decode(records, Arc::clone(&plan));
    let (upserts, ledger) = fan_out(events, Arc::clone(&plan));
    let mut files = Vec::new();
    if plan.tables.iter().any(|t| t.base.is_some()) {
        files.push(write_base(consolidate_upserts(upserts), Arc::clone(&plan)));
    }
    if plan.tables.iter().any(|t| t.cdc.is_some()) {
        files.push(write_cdc(ledger, Arc::clone(&plan))?);
    }
    files.push(write_dead_letters(dead_letters(dead, Arc::clone(&plan)), Arc::clone(&plan)));
    let files = scope.concatenate(files);
    commit_epochs(files, progress, plan).probe_with(probe);
    Ok(())
}
