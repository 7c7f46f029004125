//! Snapshot expiry and file cleanup against the real SQLite catalog and real files: what
//! the retained snapshots reference stays, what only expired snapshots referenced goes,
//! orphans go once past the safety window, and the offsets a restart needs survive.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog};
use floe_engine::cleanup::{list_files, local_path, retained};
use floe_engine::commit::{CommitRequest, RetryPolicy, RewriteCommit, commit};
use floe_engine::expiry::{ExpiryPolicy, expire_and_clean, plan_expiry};
use floe_engine::manifests::{FileRef, ManifestCache};
use floe_engine::offsets::{SourceOffsets, committed_progress};
use iceberg::TableIdent;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Struct};
use support::{catalog_config, create_table};

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Arc<SqlTableCatalog>,
    table: TableIdent,
    location: PathBuf,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let catalog = Arc::new(SqlTableCatalog::open(&catalog_config(dir.path())).await.expect("catalog"));
    let state = create_table(catalog.as_ref()).await;
    let location = PathBuf::from(local_path(state.metadata.location()));
    Fixture { _dir: dir, catalog, table: state.ident, location }
}

/// A real file under the table's data folder, as a data file entry.
fn data_file(location: &Path, name: &str) -> DataFile {
    let path = location.join("data").join(format!("{name}.parquet"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, name.as_bytes()).expect("write");
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(path.display().to_string())
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .partition_spec_id(0)
        .record_count(1)
        .file_size_in_bytes(name.len() as u64)
        .build()
        .expect("data file")
}

fn epoch(f: &Fixture, e: u64) -> CommitRequest {
    let mut offsets = SourceOffsets::default();
    offsets.advance("topic", 0, 10 * (e as i64 + 1));
    let mut r = CommitRequest::epoch(f.table.clone(), "p", e, offsets);
    r.data_files = vec![data_file(&f.location, &format!("e{e}"))];
    r
}

fn rewrite(f: &Fixture, id: &str, inputs: &[String], output: &str, seq: i64) -> CommitRequest {
    let mut r = CommitRequest::epoch(f.table.clone(), "p", 99, SourceOffsets::default());
    r.data_files = vec![data_file(&f.location, output)];
    r.data_sequence_numbers = vec![Some(seq)];
    r.removed = inputs
        .iter()
        .map(|i| FileRef::path(f.location.join("data").join(format!("{i}.parquet")).display().to_string()))
        .collect();
    r.rewrite = Some(RewriteCommit { id: id.into(), strict: true });
    r
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    list_files(dir).into_iter().map(|(path, _, _)| path).collect()
}

/// Every file any snapshot of the table references exists.
async fn nothing_referenced_is_gone(f: &Fixture) -> usize {
    let state = f.catalog.load(&f.table).await.expect("load").expect("table");
    let keep = retained(f.catalog.file_io(), &state.metadata, &state.metadata_location, ManifestCache::global())
        .await
        .expect("retained");
    for path in &keep {
        assert!(Path::new(path).exists(), "{path} is referenced by the table and gone");
    }
    keep.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_keeps_the_newest_snapshots_and_cleanup_removes_only_what_they_do_not_reach() {
    let f = fixture().await;
    for e in 0..6 {
        commit(f.catalog.as_ref(), &epoch(&f, e), RetryPolicy::default()).await.expect("epoch");
    }
    // Compaction retires e0..e3: only the first snapshots still reach them.
    let inputs: Vec<String> = (0..4).map(|e| format!("e{e}")).collect();
    commit(f.catalog.as_ref(), &rewrite(&f, "rw", &inputs, "merged", 4), RetryPolicy::default()).await.expect("rw");
    for e in 6..8 {
        commit(f.catalog.as_ref(), &epoch(&f, e), RetryPolicy::default()).await.expect("epoch");
    }
    let stray = f.location.join("data").join("crashed-writer.parquet");
    std::fs::write(&stray, b"left by a crash").expect("stray");
    let before = f.catalog.load(&f.table).await.expect("load").expect("table");
    assert_eq!(before.metadata.snapshots().len(), 9);

    // Young snapshots stay whatever their number.
    let policy = ExpiryPolicy { keep_snapshots: 3, max_age_ms: 3_600_000 };
    let now = chrono::Utc::now().timestamp_millis();
    assert!(plan_expiry(&before.metadata, policy, now).expect("plan").is_empty());

    let policy = ExpiryPolicy { keep_snapshots: 3, max_age_ms: 0 };
    let report = expire_and_clean(f.catalog.as_ref(), &f.table, policy, now + 1, true, Duration::from_secs(3600))
        .await
        .expect("expire");
    assert_eq!(report.snapshots_expired, 6);
    let after = f.catalog.load(&f.table).await.expect("load").expect("table");
    assert_eq!(after.metadata.snapshots().len(), 3, "keep_snapshots");
    for e in 0..4 {
        let p = f.location.join("data").join(format!("e{e}.parquet"));
        assert!(!p.exists(), "{} only expired snapshots reached", p.display());
    }
    for name in ["e4", "e5", "e6", "e7", "merged"] {
        assert!(f.location.join("data").join(format!("{name}.parquet")).exists(), "{name} is live");
    }
    assert!(report.cleanup.expired_files >= 4 + 6, "data files and manifest lists: {report:?}");
    assert!(stray.exists(), "an orphan younger than the window stays");
    nothing_referenced_is_gone(&f).await;
    let progress = committed_progress(&after.metadata).expect("progress").expect("floe snapshot");
    assert_eq!(progress.offsets.get("topic", 0), Some(80), "a restart still finds its offsets");

    // Past the window, the orphan goes; nothing referenced does.
    let report =
        expire_and_clean(f.catalog.as_ref(), &f.table, policy, now + 2, true, Duration::ZERO).await.expect("cleanup");
    assert_eq!(report.snapshots_expired, 0);
    assert!(!stray.exists(), "the orphan is removed");
    assert!(report.cleanup.orphans >= 1);
    let referenced = nothing_referenced_is_gone(&f).await;
    let on_disk = files_under(&f.location).len();
    assert_eq!(on_disk, referenced, "only referenced files remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_files_stay_bounded_over_many_commits() {
    let f = fixture().await;
    let policy = ExpiryPolicy { keep_snapshots: 2, max_age_ms: 0 };
    for e in 0..130 {
        commit(f.catalog.as_ref(), &epoch(&f, e), RetryPolicy::default()).await.expect("epoch");
        if e % 10 == 9 {
            let now = chrono::Utc::now().timestamp_millis() + 1;
            expire_and_clean(f.catalog.as_ref(), &f.table, policy, now, true, Duration::from_secs(3600))
                .await
                .expect("expire");
        }
    }
    let state = f.catalog.load(&f.table).await.expect("load").expect("table");
    assert!(state.metadata.snapshots().len() <= 2 + 10);
    let metadata_files = files_under(&f.location.join("metadata"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .count();
    assert!(metadata_files <= 100 + 12, "the metadata log bounds the metadata files: {metadata_files}");
    nothing_referenced_is_gone(&f).await;
}
