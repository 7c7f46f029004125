//! Snapshot expiry: which snapshots a table may forget, and the metadata commit that
//! forgets them.
//!
//! # Invariants
//! - Never expired: the current snapshot; the newest `keep_snapshots` snapshots of the
//!   current snapshot's ancestry; every snapshot younger than `snapshot_max_age`; every
//!   snapshot a branch or tag points at; and the current snapshot's ancestry down to (and
//!   including) the newest snapshot that records floe's offsets, since a restart reads them
//!   there ([`crate::offsets::committed_progress`]).
//! - Expiry changes metadata only (snapshots, snapshot log). The files that only expired
//!   snapshots referenced are removed afterwards ([`crate::cleanup`]); a crash in between
//!   leaves orphans, which the next cleanup removes.
//! - It goes through the one compare-and-swap loop (fault points `expire-before-swap` and
//!   `expire-after-swap`), and the set is recomputed from the table as it is at every
//!   attempt, so it never removes a snapshot a concurrent commit made or needs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::FutureExt;
use iceberg::TableIdent;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};

use crate::catalog::TableCatalog;
use crate::commit::{Attempt, RetryPolicy, cas_loop};
use crate::error::Result;
use crate::offsets::committed_progress;

/// Table property recording the last expiry: `{"at_ms": .., "snapshots": ..}`.
pub const PROPERTY_LAST_EXPIRY: &str = "floe.last-expiry";
/// Table property recording the last cleanup that removed files:
/// `{"at_ms": .., "files": .., "bytes": ..}`.
pub const PROPERTY_LAST_CLEANUP: &str = "floe.last-cleanup";

/// What may be forgotten, and what must stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Never fewer snapshots than this (of the current snapshot's ancestry).
    pub keep_snapshots: usize,
    /// Snapshots younger than this stay, in milliseconds.
    pub max_age_ms: i64,
}

impl ExpiryPolicy {
    /// The policy a table's `[tables.maintenance]` sets.
    pub fn of(settings: &crate::table_settings::MaintenanceSettings) -> ExpiryPolicy {
        ExpiryPolicy {
            keep_snapshots: settings.keep_snapshots,
            max_age_ms: settings.snapshot_max_age.as_millis().min(i64::MAX as u128) as i64,
        }
    }
}

/// The ids of the snapshots of `metadata` that `policy` expires at `now_ms`, ascending.
pub fn plan_expiry(metadata: &TableMetadata, policy: ExpiryPolicy, now_ms: i64) -> Result<Vec<i64>> {
    let mut kept: BTreeSet<i64> = BTreeSet::new();
    // The current ancestry, newest first.
    let mut ancestry = Vec::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let Some(s) = metadata.snapshot_by_id(id) else { break };
        ancestry.push(id);
        next = s.parent_snapshot_id();
    }
    kept.extend(ancestry.iter().take(policy.keep_snapshots.max(1)));
    if let Some(progress) = committed_progress(metadata)? {
        for id in &ancestry {
            kept.insert(*id);
            if *id == progress.snapshot_id {
                break;
            }
        }
    }
    kept.extend(ref_targets(metadata)?);
    let cutoff = now_ms.saturating_sub(policy.max_age_ms);
    Ok(metadata
        .snapshots()
        .filter(|s| !kept.contains(&s.snapshot_id()) && s.timestamp_ms() < cutoff)
        .map(|s| s.snapshot_id())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// The snapshots the table's branches and tags point at (iceberg 0.10 exposes refs only by
/// name, so they are read from the metadata's serialized form).
fn ref_targets(metadata: &TableMetadata) -> Result<Vec<i64>> {
    let value = serde_json::to_value(metadata).map_err(|e| {
        crate::error::Error::new(crate::error::ErrorKind::Internal, "serializing table metadata").with_source(e)
    })?;
    Ok(value
        .get("refs")
        .and_then(|r| r.as_object())
        .map(|refs| refs.values().filter_map(|r| r.get("snapshot-id").and_then(|id| id.as_i64())).collect())
        .unwrap_or_default())
}

/// An expiry that was committed.
#[derive(Clone, Debug)]
pub struct Expired {
    /// The table before (it still lists the expired snapshots: what cleanup reads).
    pub before: Arc<TableMetadata>,
    /// The table after.
    pub after: Arc<TableMetadata>,
    /// Where `after` is.
    pub after_location: String,
    /// The expired snapshot ids.
    pub snapshots: Vec<i64>,
}

/// Expires what `policy` allows at `now_ms`, as one metadata commit; `None` if nothing is
/// due (nothing is written then).
pub async fn expire_snapshots(
    catalog: &dyn TableCatalog,
    table: &TableIdent,
    policy: ExpiryPolicy,
    now_ms: i64,
) -> Result<Option<Expired>> {
    let done = cas_loop(catalog, table, RetryPolicy::default(), "expiring snapshots of", |state, _| {
        async move {
            let ids = plan_expiry(&state.metadata, policy, now_ms)?;
            if ids.is_empty() {
                return Ok(Attempt::Done(None));
            }
            let record = serde_json::json!({ "at_ms": now_ms, "snapshots": ids.len() }).to_string();
            let metadata = TableMetadataBuilder::new_from_metadata(
                (*state.metadata).clone(),
                Some(state.metadata_location.clone()),
            )
            .remove_snapshots(&ids)
            .set_properties(HashMap::from([(PROPERTY_LAST_EXPIRY.to_string(), record)]))?
            .build()?
            .metadata;
            Ok(Attempt::Swap { metadata, outcome: Some((state.metadata, ids)), points: vec!["expire"] })
        }
        .boxed()
    })
    .await?;
    let Some((before, snapshots)) = done else { return Ok(None) };
    let after = catalog.load(table).await?.ok_or_else(|| {
        crate::error::Error::new(crate::error::ErrorKind::Catalog, format!("{table} vanished after an expiry"))
    })?;
    Ok(Some(Expired { before, after: after.metadata, after_location: after.metadata_location, snapshots }))
}

/// What one expiry-and-cleanup pass of a table did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExpiryReport {
    /// Snapshots expired.
    pub snapshots_expired: u64,
    /// What cleanup removed.
    pub cleanup: crate::cleanup::CleanupReport,
}

/// Expires `table`'s snapshots under `policy` at `now_ms`, then (`cleanup`) deletes the
/// files no retained snapshot references: those the expired snapshots reached at once,
/// unreferenced ones once older than `orphan_min_age`. Runs where no other commit to the
/// table races it (its committer, or `floe maintain` under the writer lease).
pub async fn expire_and_clean(
    catalog: &dyn TableCatalog,
    table: &TableIdent,
    policy: ExpiryPolicy,
    now_ms: i64,
    cleanup: bool,
    orphan_min_age: std::time::Duration,
) -> Result<ExpiryReport> {
    let expired = expire_snapshots(catalog, table, policy, now_ms).await?;
    let mut report = ExpiryReport {
        snapshots_expired: expired.as_ref().map_or(0, |e| e.snapshots.len() as u64),
        ..Default::default()
    };
    crate::faults::point("expire-before-cleanup");
    if cleanup {
        let (metadata, location, before) = match &expired {
            Some(e) => (Arc::clone(&e.after), e.after_location.clone(), Some(Arc::clone(&e.before))),
            None => {
                let state = catalog.load(table).await?.ok_or_else(|| {
                    crate::error::Error::new(crate::error::ErrorKind::Catalog, format!("{table} does not exist"))
                })?;
                (state.metadata, state.metadata_location, None)
            }
        };
        report.cleanup =
            crate::cleanup::cleanup(catalog.file_io(), &metadata, &location, before.as_deref(), orphan_min_age).await?;
        if report.cleanup.files() > 0 {
            let record = serde_json::json!({
                "at_ms": now_ms,
                "files": report.cleanup.files(),
                "bytes": report.cleanup.bytes,
            })
            .to_string();
            let set = HashMap::from([(PROPERTY_LAST_CLEANUP.to_string(), record)]);
            crate::commit::commit_metadata(catalog, table, None, set, &[]).await?;
            // That commit pushed the oldest logged metadata file off the log: it goes now,
            // not at the next cleanup.
            if let Some(now) = catalog.load(table).await? {
                let logged: BTreeSet<&str> =
                    now.metadata.metadata_log().iter().map(|l| l.metadata_file.as_str()).collect();
                for old in metadata.metadata_log() {
                    let path = old.metadata_file.as_str();
                    if !logged.contains(path) && path != now.metadata_location && path != location {
                        report.cleanup.bytes += crate::cleanup::remove(catalog.file_io(), path).await?;
                        report.cleanup.metadata_files += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}
