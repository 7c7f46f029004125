//! The live column model of one table during a run: the schema versions the decoders
//! evolve and the writers and committer read, and whether the table is paused.
//!
//! ```text
//!   decoder (record @e carries a new schema) ──► decide ──► evolve(e, schema)  ─┐
//!                                                     └──► pause(e, changes)   │
//!   writers (epoch e closes)   ◄── latest() ───────────────────────────────────┤
//!   committer (epoch e)        ◄── latest(), paused_from() ────────────────────┘
//!   schema watcher (pull) ──► evolve_ahead ──► committer: take_ahead, commit it alone
//! ```
//!
//! # Invariants
//! - Versions only grow: each is the previous one with columns appended, widened or made
//!   optional (see `floe_engine::schema_drift`). So a row decoded under any earlier version
//!   is a positional prefix of a later one, and writing it under a later one is lossless.
//! - Zero gap, and no earlier than needed: a decoder marks the version a row needs at the
//!   row's epoch ([`SchemaVersions::used_at`]) before it emits the row; an epoch is written
//!   and committed under [`SchemaVersions::at`], the newest version some row of it or of an
//!   earlier epoch needs. Writers and the committer run only after every decoder has passed
//!   the epoch, so the schema lands exactly with the first commit whose data uses it.
//! - A version a pull adds ahead of the stream is used from the first epoch the committer
//!   has not closed when it takes it, and committed on its own (metadata only) at once:
//!   every later snapshot carries it or a newer one, so a table's schema never moves back.
//! - A pause at epoch `p` only moves earlier (`min`): records of the table at or after the
//!   earliest pause are neither written nor committed, so its offsets stay at `p - 1`.
//! - Shared by the workers of one process (a mutex; schema changes are rare). Across
//!   processes, versions would travel as a broadcast stream: not built yet.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use floe_engine::epoch::Epoch;
use floe_engine::schema::TableSchemaRef;
pub use floe_engine::schema_audit::FirstSeen;
use floe_engine::schema_drift::Change;
use serde::{Deserialize, Serialize};

/// One version of the table's column model.
#[derive(Debug)]
pub struct Version {
    /// The first epoch with a row that needs this version (`u64::MAX`: none yet). Only ever
    /// lowered: by decoders, for epochs they have not passed; by the committer, for a pulled
    /// version, to the first epoch it has not closed.
    from_epoch: AtomicU64,
    /// 0 for the schema the run started with, then 1, 2, ...
    pub number: u32,
    /// The column model.
    pub schema: TableSchemaRef,
    /// Columns kept after the source dropped them.
    pub retired: BTreeSet<String>,
    /// What changed from the previous version, and where (none for version 0).
    pub change: Option<(Vec<Change>, FirstSeen)>,
}

/// Why a table stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// First epoch not committed.
    pub from_epoch: Epoch,
    /// What changed.
    pub changes: Vec<Change>,
    /// The record that carried it.
    pub first: FirstSeen,
}

#[derive(Debug)]
struct Inner {
    versions: Vec<Arc<Version>>,
    pause: Option<Pause>,
    /// Versions a pull added ahead of the stream, not yet handed to the committer.
    ahead: Vec<u32>,
}

/// The versions of one table. See the module docs.
#[derive(Debug)]
pub struct SchemaVersions {
    inner: Mutex<Inner>,
    /// The newest version's number, readable without the lock (per-record checks).
    latest: AtomicU32,
    /// The pause epoch, `u64::MAX` when not paused (per-record checks).
    paused_from: AtomicU64,
    /// Whether the committer recorded the pause in the catalog (for review).
    recorded: AtomicBool,
}

/// Shared handle.
pub type VersionsRef = Arc<SchemaVersions>;

impl SchemaVersions {
    /// Versions starting at `schema`.
    pub fn new(schema: TableSchemaRef, retired: BTreeSet<String>) -> VersionsRef {
        let first = Arc::new(Version { from_epoch: AtomicU64::new(0), number: 0, schema, retired, change: None });
        Arc::new(SchemaVersions {
            inner: Mutex::new(Inner { versions: vec![first], pause: None, ahead: Vec::new() }),
            latest: AtomicU32::new(0),
            paused_from: AtomicU64::new(u64::MAX),
            recorded: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest version's number.
    pub fn latest_number(&self) -> u32 {
        self.latest.load(Ordering::Acquire)
    }

    /// The newest version.
    pub fn latest(&self) -> Arc<Version> {
        let inner = self.lock();
        Arc::clone(inner.versions.last().expect("version 0 always exists"))
    }

    /// Every version, oldest first.
    pub fn all(&self) -> Vec<Arc<Version>> {
        self.lock().versions.clone()
    }

    /// The version files up to `flushed` (the last epoch whose frontier passed; `None`
    /// before any) were written under, at most: final, unlike [`Self::at`] of a later
    /// epoch. A rewrite of those files writes under it, so it never writes a schema that
    /// the snapshot committing it may not carry.
    pub fn as_of_flushed(&self, flushed: Option<Epoch>) -> Arc<Version> {
        match flushed {
            Some(epoch) => self.at(epoch),
            None => Arc::clone(&self.lock().versions[0]),
        }
    }

    /// Records that a row of epoch `epoch` needs version `number`.
    pub fn used_at(&self, number: u32, epoch: Epoch) {
        if let Some(v) = self.lock().versions.get(number as usize) {
            v.from_epoch.fetch_min(epoch, Ordering::AcqRel);
        }
    }

    /// The version epoch `epoch` is written and committed under: the newest one that a row
    /// of this or an earlier epoch needs. Final once every decoder has passed `epoch`.
    pub fn at(&self, epoch: Epoch) -> Arc<Version> {
        let inner = self.lock();
        let v = inner.versions.iter().rev().find(|v| v.from_epoch.load(Ordering::Acquire) <= epoch);
        Arc::clone(v.unwrap_or(&inner.versions[0]))
    }

    /// Adds a version evolved from `base` (the version the caller decided against). If
    /// another decoder evolved the table meanwhile, the caller must decide again: returns
    /// `None` then.
    pub fn evolve(
        &self,
        base: &Version,
        schema: TableSchemaRef,
        retired: BTreeSet<String>,
        changes: Vec<Change>,
        first: FirstSeen,
    ) -> Option<Arc<Version>> {
        let mut inner = self.lock();
        let latest = inner.versions.last().expect("version 0 always exists");
        if latest.number != base.number {
            return None;
        }
        let next = Arc::new(Version {
            from_epoch: AtomicU64::new(u64::MAX),
            number: base.number + 1,
            schema,
            retired,
            change: Some((changes, first)),
        });
        tracing::info!(version = next.number, "table schema evolved");
        inner.versions.push(Arc::clone(&next));
        self.latest.store(next.number, Ordering::Release);
        Some(next)
    }

    /// Like [`SchemaVersions::evolve`], for a change found by a pull, ahead of any row that
    /// needs it: the committer commits it on its own ([`SchemaVersions::take_ahead`]), so the
    /// tables evolve even if no row ever arrives.
    pub fn evolve_ahead(
        &self,
        base: &Version,
        schema: TableSchemaRef,
        retired: BTreeSet<String>,
        changes: Vec<Change>,
        first: FirstSeen,
    ) -> Option<Arc<Version>> {
        let next = self.evolve(base, schema, retired, changes, first)?;
        self.lock().ahead.push(next.number);
        Some(next)
    }

    /// The newest version a pull added since the last call, if any. The caller (the
    /// committer) marks it used from the first epoch it has not closed, and commits it.
    pub fn take_ahead(&self) -> Option<Arc<Version>> {
        let mut inner = self.lock();
        let newest = inner.ahead.drain(..).max()?;
        inner.versions.get(newest as usize).cloned()
    }

    /// Pauses the table from `epoch` on (an earlier pause wins).
    pub fn pause(&self, epoch: Epoch, changes: Vec<Change>, first: FirstSeen) {
        let mut inner = self.lock();
        match &inner.pause {
            Some(p) if p.from_epoch <= epoch => {}
            _ => {
                inner.pause = Some(Pause { from_epoch: epoch, changes, first });
                self.paused_from.store(epoch, Ordering::Release);
            }
        }
    }

    /// Notes that the pause's pending change is in the catalog.
    pub fn pause_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    /// Whether the pause's pending change was committed to the catalog in this run.
    pub fn is_pause_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// The pause, if any.
    pub fn pause_state(&self) -> Option<Pause> {
        self.lock().pause.clone()
    }

    /// Whether records of epoch `epoch` are held back by a pause.
    pub fn is_paused_at(&self, epoch: Epoch) -> bool {
        epoch >= self.paused_from.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::schema::{Column, ColumnType, TableSchema};

    fn schema(n: usize) -> TableSchemaRef {
        let mut columns = vec![Column { name: "id".into(), ty: ColumnType::Long, nullable: false }];
        columns.extend((1..n).map(|i| Column { name: format!("c{i}"), ty: ColumnType::Int, nullable: true }));
        Arc::new(TableSchema::new(columns, &["id".to_string()]).expect("schema"))
    }

    fn seen() -> FirstSeen {
        FirstSeen { topic: "t".into(), partition: 0, offset: 7, detected: "push".into(), at_ms: 0 }
    }

    #[test]
    fn a_stale_decision_must_be_taken_again() {
        let v = SchemaVersions::new(schema(1), BTreeSet::new());
        let base = v.latest();
        assert!(v.evolve(&base, schema(2), BTreeSet::new(), vec![], seen()).is_some());
        assert!(v.evolve(&base, schema(2), BTreeSet::new(), vec![], seen()).is_none(), "based on version 0");
        assert_eq!(v.latest().number, 1);
        assert_eq!(v.latest().schema.columns.len(), 2);
    }

    #[test]
    fn an_epoch_uses_the_newest_version_needed_up_to_it() {
        let v = SchemaVersions::new(schema(1), BTreeSet::new());
        let one = v.evolve(&v.latest(), schema(2), BTreeSet::new(), vec![], seen()).expect("v1");
        v.evolve(&one, schema(3), BTreeSet::new(), vec![], seen()).expect("v2");
        assert_eq!(v.at(100).number, 0, "registered, but no row needs them yet");
        v.used_at(2, 7);
        v.used_at(1, 9);
        v.used_at(1, 4);
        let at = |e| v.at(e).number;
        assert_eq!((at(3), at(4), at(6), at(7), at(50)), (0, 1, 1, 2, 2));
    }

    /// A rewrite started after epoch 4 while a decoder ahead had adopted version 1 at epoch
    /// 5 writes under version 0: epoch 5 is not final, and the rewrite may commit in a
    /// snapshot of epoch 4 (the flaky `widening_int_to_long` failure: long bounds listed
    /// under an int schema).
    #[test]
    fn a_rewrite_writes_under_the_version_of_the_last_flushed_epoch() {
        let v = SchemaVersions::new(schema(1), BTreeSet::new());
        v.evolve(&v.latest(), schema(2), BTreeSet::new(), vec![], seen()).expect("v1");
        v.used_at(1, 5);
        assert_eq!(v.as_of_flushed(None).number, 0);
        assert_eq!(v.as_of_flushed(Some(4)).number, 0);
        assert_eq!(v.as_of_flushed(Some(5)).number, 1);
        v.used_at(1, 0);
        assert_eq!(v.as_of_flushed(None).number, 0, "before any flush: the run's first version");
    }

    #[test]
    fn a_pulled_version_is_handed_over_once() {
        let v = SchemaVersions::new(schema(1), BTreeSet::new());
        assert!(v.take_ahead().is_none());
        let one = v.evolve_ahead(&v.latest(), schema(2), BTreeSet::new(), vec![], seen()).expect("v1");
        v.evolve_ahead(&one, schema(3), BTreeSet::new(), vec![], seen()).expect("v2");
        assert_eq!(v.take_ahead().map(|x| x.number), Some(2), "the newest covers the older");
        assert!(v.take_ahead().is_none());
        assert_eq!(v.at(9).number, 0, "no epoch uses it until the committer says so");
    }

    #[test]
    fn the_earliest_pause_wins() {
        let v = SchemaVersions::new(schema(1), BTreeSet::new());
        v.pause(5, vec![], seen());
        v.pause(7, vec![], seen());
        assert!(!v.is_paused_at(4) && v.is_paused_at(5) && v.is_paused_at(9));
        v.pause(3, vec![], seen());
        assert!(v.is_paused_at(3));
        assert_eq!(v.pause_state().map(|p| p.from_epoch), Some(3));
    }
}
