//! Erasures a running pipeline carries out: `floe erase` queues a request in the catalog
//! (`floe_requests`) when a pipeline holds the table; the pipeline's committer takes it,
//! has the rows removed while ingestion goes on, and answers with the audit.
//!
//! ```text
//!   catalog request ─► Coordinator::offer ─► (one at a time) activate
//!     base table, position / vector mode: EraseOrder per bucket of the keys ─► ErasureBoard
//!        ─► the bucket's writer rewrites the bucket without the keys (as it compacts; the
//!           key index forgets them) ─► RewriteBundle @e, committed with epoch e ─► report
//!     every bucket reported, every epoch up to the last one reported committed
//!        ─► FinalizeJob (alone, between two epochs, like expiry):
//!           equality-mode base table and CDC table rewritten at their snapshot
//!           ─► expire every older snapshot ─► delete their files ─► proof ─► audit entry
//!        ─► answer the request (done | failed, with the audit)
//! ```
//!
//! # Invariants
//! - The change that erases rows is committed by the pipeline's own committer: bucket
//!   rewrites ride in its epochs, the rest runs as one job no epoch commit overlaps.
//! - A base table the writers index is never rewritten by the committer (the index would
//!   point at retired files): only its buckets' writers rewrite it.
//! - The erasure covers every change committed before its last bucket rewrite; a change of
//!   a key that arrives after is new data, which the proof then reports (the source still
//!   has the key).
//! - The coordinator is a state machine with no IO ([`Coordinator::step`]); the committer
//!   shell runs what it asks for.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use floe_engine::catalog::{Request, TableCatalog};
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::table_settings::MaintenanceSettings;
use serde::{Deserialize, Serialize};

use crate::bucket::Bucketer;
use crate::erase::{EraseKeys, commit_rewrites, erase_table, expire_prove_record, last_commit};
use crate::files::Dest;
use crate::key_index_rebuild::KeyShape;
use crate::plan::{BucketErased, EraseOrder, PipelinePlan, Target};
use crate::snapshot_rewrite::Layout;

/// The request kind in `floe_requests`.
pub const KIND: &str = "erase";

/// What `floe erase` asks a running pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payload {
    /// The keys, as given on the command line.
    pub keys: Vec<String>,
    /// When it was asked (ms since the Unix epoch).
    pub requested_ms: i64,
}

/// The work left once the buckets are rewritten: runs alone in the committer.
#[derive(Clone, Debug)]
pub struct FinalizeJob {
    /// The request.
    pub id: String,
    /// The keys.
    pub keys: EraseKeys,
    /// The base table, and whether its writers rewrote it already (indexed modes).
    pub base: Option<(Target, bool)>,
    /// The CDC table.
    pub cdc: Option<Target>,
    /// The table's settings (orphan window).
    pub settings: MaintenanceSettings,
    /// Pipeline id for the rewrites' snapshots.
    pub pipeline_id: String,
    /// When it was asked.
    pub requested_ms: i64,
}

/// What the shell does for the coordinator.
#[derive(Debug)]
pub enum Action {
    /// Post bucket orders to the writers.
    Post(Vec<EraseOrder>),
    /// Answer a request without more work (it cannot be carried out).
    Answer {
        /// The request.
        id: String,
        /// Why.
        reason: String,
    },
    /// Run the final job (alone).
    Finalize(Box<FinalizeJob>),
}

struct Active {
    id: String,
    table: u32,
    keys: EraseKeys,
    requested_ms: i64,
    waiting: BTreeSet<u32>,
    through: Option<Epoch>,
    failure: Option<String>,
    finalizing: bool,
}

/// The committer's erasure state. See the module docs.
#[derive(Default)]
pub struct Coordinator {
    queue: VecDeque<Request>,
    seen: HashSet<String>,
    active: Option<Active>,
}

impl Coordinator {
    /// Requests the catalog holds (repeats are ignored).
    pub fn offer(&mut self, requests: Vec<Request>) {
        for r in requests {
            if self.seen.insert(r.id.clone()) {
                self.queue.push_back(r);
            }
        }
    }

    /// A bucket writer's report.
    pub fn report(&mut self, report: BucketErased) {
        let Some(a) = self.active.as_mut().filter(|a| a.id == report.id && a.table == report.table) else { return };
        a.waiting.remove(&report.bucket);
        match report.result {
            Ok(Some(e)) => a.through = Some(a.through.map_or(e, |t| t.max(e))),
            Ok(None) => {}
            Err(reason) => a.failure = Some(format!("bucket {} could not be rewritten: {reason}", report.bucket)),
        }
    }

    /// Whether an erasure is in progress or queued.
    pub fn busy(&self) -> bool {
        self.active.is_some() || !self.queue.is_empty()
    }

    /// The final job finished (its answer is given): the next request may start.
    pub fn finished(&mut self) {
        self.active = None;
    }

    /// What to do now: `closed_through` is the newest epoch closed, `holds_from` the oldest
    /// epoch not yet committed (or closed).
    pub fn step(
        &mut self,
        plan: &PipelinePlan,
        closed_through: Option<Epoch>,
        holds_from: Option<Epoch>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        while self.active.is_none() {
            let Some(request) = self.queue.pop_front() else { break };
            match activate(plan, &request, closed_through) {
                Ok((active, orders)) => {
                    if !orders.is_empty() {
                        out.push(Action::Post(orders));
                    }
                    self.active = Some(active);
                }
                Err(reason) => out.push(Action::Answer { id: request.id, reason }),
            }
        }
        let Some(a) = self.active.as_mut() else { return out };
        if !a.waiting.is_empty() || a.finalizing {
            return out;
        }
        if let Some(reason) = a.failure.take() {
            out.push(Action::Answer { id: a.id.clone(), reason });
            self.active = None;
            return out;
        }
        let committed = match (a.through, holds_from) {
            (None, _) | (_, None) => true,
            (Some(t), Some(h)) => h > t,
        };
        if !committed {
            return out;
        }
        a.finalizing = true;
        let t = &plan.tables[a.table as usize];
        out.push(Action::Finalize(Box::new(FinalizeJob {
            id: a.id.clone(),
            keys: a.keys.clone(),
            base: t.base.clone().map(|b| (b, t.deletes.uses_index())),
            cdc: t.cdc.clone(),
            settings: t.maintenance.clone(),
            pipeline_id: plan.pipeline_id.clone(),
            requested_ms: a.requested_ms,
        })));
        out
    }
}

/// Starts a request: the table it names, its keys, and the buckets to rewrite.
fn activate(
    plan: &PipelinePlan,
    request: &Request,
    closed_through: Option<Epoch>,
) -> std::result::Result<(Active, Vec<EraseOrder>), String> {
    let table = plan
        .tables
        .iter()
        .find(|t| {
            t.base.as_ref().is_some_and(|b| b.ident == request.table)
                || t.cdc.as_ref().is_some_and(|c| c.ident == request.table)
        })
        .ok_or_else(|| format!("{} is not a table of pipeline {}", request.table, plan.pipeline_id))?;
    let payload: Payload =
        serde_json::from_str(&request.payload).map_err(|e| format!("the request cannot be read: {e}"))?;
    let base = table.base.as_ref().ok_or_else(|| format!("{} has no base table to type the keys by", table.topic))?;
    let keys = EraseKeys::parse(&base.schema, &payload.keys).map_err(|e| e.to_string())?;
    let mut orders = Vec::new();
    if table.deletes.uses_index() {
        let column = &table.schema.columns[table.bucket_column];
        let at = keys
            .names
            .iter()
            .position(|n| *n == column.name)
            .ok_or_else(|| format!("the bucket column `{}` is not a key column", column.name))?;
        let bucketer = Bucketer::new(table.buckets, column.ty).map_err(|e| e.to_string())?;
        let buckets: BTreeSet<u32> = keys.values.iter().map(|k| bucketer.bucket(&k[at])).collect();
        let filter = Arc::new(keys.base_filter());
        orders.extend(buckets.into_iter().map(|bucket| EraseOrder {
            id: request.id.clone(),
            table: table.index,
            bucket,
            filter: Arc::clone(&filter),
        }));
    }
    let active = Active {
        id: request.id.clone(),
        table: table.index,
        keys,
        requested_ms: payload.requested_ms,
        waiting: orders.iter().map(|o| o.bucket).collect(),
        through: closed_through,
        failure: None,
        finalizing: false,
    };
    Ok((active, orders))
}

/// Runs a final job: the committer-side rewrites, expiry, cleanup, proof and audit of the
/// base and CDC tables; returns the answer (JSON) and whether the proof was clean.
pub async fn finalize(catalog: &dyn TableCatalog, job: &FinalizeJob) -> Result<(String, bool)> {
    let mut tables = serde_json::Map::new();
    let mut clean = true;
    let parts: Vec<(Target, Dest, bool)> = job
        .base
        .iter()
        .map(|(t, indexed)| (t.clone(), Dest::Base(0), !indexed))
        .chain(job.cdc.iter().map(|t| (t.clone(), Dest::Cdc(0), true)))
        .collect();
    for (target, dest, rewrite_here) in parts {
        let Some(state) = catalog.load(&target.ident).await? else { continue };
        let schema = state.metadata.current_schema();
        let (layout, filter) = match dest {
            Dest::Cdc(_) => (Layout::Cdc, job.keys.cdc_filter(schema)?),
            _ => (Layout::Buckets(KeyShape::from_schema(schema)?), job.keys.base_filter()),
        };
        let mut erased = None;
        if rewrite_here {
            let (pipeline_id, epoch) = last_commit(&state.metadata, &job.pipeline_id)?;
            let name = format!("x{}", job.id);
            let found = erase_table(catalog, dest, &target, &layout, &filter, &job.settings, epoch, &name).await?;
            erased = Some((found.files_with_keys, found.rows));
            commit_rewrites(catalog, &target, &pipeline_id, epoch, found.bundles).await?;
        }
        let audit = expire_prove_record(
            catalog,
            &target,
            &job.keys,
            &filter,
            &job.id,
            erased,
            job.settings.orphan_min_age,
            job.requested_ms,
        )
        .await?;
        clean &= audit.proof.clean();
        let mut entry: serde_json::Value = serde_json::from_str(&audit.entry)
            .map_err(|e| Error::new(ErrorKind::Internal, "reading an audit entry").with_source(e))?;
        if !audit.proof.clean() {
            entry["holders"] = serde_json::json!(audit.proof.holders);
        }
        tables.insert(target.name.to_string(), entry);
    }
    Ok((serde_json::json!({ "property": format!("floe.erasure.{}", job.id), "tables": tables }).to_string(), clean))
}
