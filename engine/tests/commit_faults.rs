//! Fault tests of the commit protocol's one compare-and-swap loop, against the real SQLite
//! catalog wrapped in one fault-injecting catalog ([`Unreliable`]): lost responses,
//! transient failures and racing commits, for epoch, rewrite and metadata commits.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use floe_engine::catalog::{SqlTableCatalog, TableCatalog, TableState};
use floe_engine::commit::{CommitOutcome, CommitRequest, RetryPolicy, RewriteCommit, commit, commit_metadata};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::manifests::{FileRef, ManifestCache, live_entries};
use floe_engine::offsets::{SourceOffsets, committed_progress};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, ManifestList, Operation, Struct};
use iceberg::table::Table;
use iceberg::{TableCreation, TableIdent};
use support::{catalog_config, create_table};

fn data_file(name: &str) -> DataFile {
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(format!("/nonexistent/{name}.parquet"))
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .partition_spec_id(0)
        .record_count(1)
        .file_size_in_bytes(100)
        .build()
        .expect("data file")
}

fn delete_file(name: &str) -> DataFile {
    DataFileBuilder::default()
        .content(DataContentType::PositionDeletes)
        .file_path(format!("/nonexistent/{name}.parquet"))
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .partition_spec_id(0)
        .record_count(1)
        .file_size_in_bytes(100)
        .build()
        .expect("delete file")
}

fn request(table: &TableIdent, epoch: u64, partition: i32, next: i64) -> CommitRequest {
    let mut offsets = SourceOffsets::default();
    offsets.advance("topic", partition, next);
    let mut r = CommitRequest::epoch(table.clone(), "p", epoch, offsets);
    r.data_files = vec![data_file(&format!("e{epoch}-p{partition}"))];
    r
}

fn rewrite(table: &TableIdent, id: &str, inputs: &[&str], output: &str, seq: i64, strict: bool) -> CommitRequest {
    let mut r = CommitRequest::epoch(table.clone(), "p", 99, SourceOffsets::default());
    r.data_files = vec![data_file(output)];
    r.data_sequence_numbers = vec![Some(seq)];
    r.removed = inputs.iter().map(|i| FileRef::path(format!("/nonexistent/{i}.parquet"))).collect();
    r.rewrite = Some(RewriteCommit { id: id.into(), strict });
    r
}

/// `(snapshots, live file paths with their data sequence numbers)`.
async fn live(catalog: &dyn TableCatalog, table: &TableIdent) -> (usize, Vec<(String, i64)>) {
    let state = catalog.load(table).await.expect("load").expect("exists");
    let snapshots = state.metadata.snapshots().len();
    let Some(current) = state.metadata.current_snapshot() else { return (0, Vec::new()) };
    let bytes = catalog.file_io().new_input(current.manifest_list()).expect("input").read().await.expect("read");
    let list = ManifestList::parse_with_version(&bytes, state.metadata.format_version()).expect("list");
    let entries = live_entries(catalog.file_io(), list.entries(), ManifestCache::global()).await.expect("entries");
    let mut files: Vec<(String, i64)> =
        entries.iter().map(|e| (e.file_path().to_string(), e.sequence_number().unwrap_or(-1))).collect();
    files.sort();
    (snapshots, files)
}

/// The one fault-injecting catalog: a real catalog whose swaps can lose their response,
/// fail transiently without applying, or find a competing commit landed first.
#[derive(Debug)]
struct Unreliable {
    inner: Arc<SqlTableCatalog>,
    /// Swaps that apply, then report a retryable failure (a lost response).
    lose: AtomicUsize,
    /// Swaps that fail retryably without applying.
    fail: AtomicUsize,
    /// Commits another writer lands just before our next swaps, one per swap.
    competitors: std::sync::Mutex<Vec<CommitRequest>>,
    /// Swaps that lost a race.
    conflicts: AtomicUsize,
}

impl Unreliable {
    fn new(inner: Arc<SqlTableCatalog>) -> Unreliable {
        Unreliable {
            inner,
            lose: AtomicUsize::new(0),
            fail: AtomicUsize::new(0),
            competitors: Default::default(),
            conflicts: AtomicUsize::new(0),
        }
    }

    fn take(counter: &AtomicUsize) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[async_trait]
impl TableCatalog for Unreliable {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn file_io(&self) -> &FileIO {
        self.inner.file_io()
    }
    async fn ensure_namespace(&self, namespace: &str) -> Result<()> {
        self.inner.ensure_namespace(namespace).await
    }
    async fn load(&self, ident: &TableIdent) -> Result<Option<TableState>> {
        self.inner.load(ident).await
    }
    async fn create(&self, namespace: &str, creation: TableCreation) -> Result<TableState> {
        self.inner.create(namespace, creation).await
    }
    async fn swap_metadata(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<()> {
        let competitor = self.competitors.lock().expect("lock").pop();
        if let Some(other) = competitor {
            commit(self.inner.as_ref(), &other, RetryPolicy::default()).await?;
        }
        if Self::take(&self.fail) {
            return Err(Error::new(ErrorKind::Catalog, "database is locked").with_retryable(true));
        }
        let result = self.inner.swap_metadata(ident, expected, new).await;
        if matches!(&result, Err(e) if e.kind() == ErrorKind::CommitConflict) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result?;
        if Self::take(&self.lose) {
            return Err(Error::new(ErrorKind::Catalog, "connection reset after the update").with_retryable(true));
        }
        Ok(())
    }
    async fn table(&self, ident: &TableIdent) -> Result<Table> {
        self.inner.table(ident).await
    }
}

async fn setup() -> (tempfile::TempDir, Arc<SqlTableCatalog>, Unreliable, TableIdent) {
    let dir = tempfile::tempdir().expect("tmp");
    let inner = Arc::new(SqlTableCatalog::open(&catalog_config(dir.path())).await.expect("catalog"));
    let table = create_table(inner.as_ref()).await.ident;
    let catalog = Unreliable::new(Arc::clone(&inner));
    (dir, inner, catalog, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commit_response_is_detected_and_not_committed_twice() {
    let (_dir, _inner, catalog, table) = setup().await;
    catalog.lose.store(1, Ordering::SeqCst);
    let outcome = commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(
        matches!(outcome, CommitOutcome::AlreadyCommitted { .. }),
        "the retry must find its own commit: {outcome:?}"
    );
    let (snapshots, files) = live(&catalog, &table).await;
    assert_eq!(snapshots, 1, "exactly one snapshot");
    assert_eq!(files, vec![("/nonexistent/e0-p0.parquet".to_string(), 1)]);
    // And a restart's commit of the same epoch is a no-op too.
    let again = commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(matches!(again, CommitOutcome::AlreadyCommitted { .. }));
    assert_eq!(live(&catalog, &table).await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_catalog_errors_are_retried_with_the_same_outcome() {
    let (_dir, _inner, catalog, table) = setup().await;
    catalog.fail.store(3, Ordering::SeqCst);
    let outcome = commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(matches!(outcome, CommitOutcome::Committed { attempts: 4, .. }), "{outcome:?}");
    catalog.fail.store(100, Ordering::SeqCst);
    let few = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
    let e = commit(&catalog, &request(&table, 1, 0, 20), few).await.expect_err("gives up");
    assert!(e.to_string().contains("committing epoch 1"), "{e}");
    assert_eq!(live(&catalog, &table).await.0, 1, "nothing half-committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_race_retries_on_top_of_the_winner() {
    let (_dir, inner, catalog, table) = setup().await;
    catalog.competitors.lock().expect("lock").push(request(&table, 0, 0, 5));
    let outcome = commit(&catalog, &request(&table, 1, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(matches!(outcome, CommitOutcome::Committed { attempts: 2, .. }), "{outcome:?}");
    assert_eq!(catalog.conflicts.load(Ordering::SeqCst), 1, "the first swap lost the race");
    let (snapshots, files) = live(inner.as_ref(), &table).await;
    assert_eq!(snapshots, 2);
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["/nonexistent/e0-p0.parquet", "/nonexistent/e1-p0.parquet"]);
    let state = inner.load(&table).await.expect("load").expect("table");
    let progress = committed_progress(&state.metadata).expect("progress").expect("floe snapshot");
    assert_eq!(progress.offsets.get("topic", 0), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_committers_on_two_connections_lose_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = catalog_config(dir.path());
    let a: Arc<dyn TableCatalog> = Arc::new(SqlTableCatalog::open(&config).await.expect("catalog a"));
    let b: Arc<dyn TableCatalog> = Arc::new(SqlTableCatalog::open(&config).await.expect("catalog b"));
    let table = create_table(a.as_ref()).await.ident;
    // Sixteen epochs on distinct partitions, committed concurrently from two connections.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let catalog = if i % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
            let req = request(&table, i, i as i32, 1);
            tokio::spawn(async move { commit(catalog.as_ref(), &req, RetryPolicy::default()).await })
        })
        .collect();
    let mut committed = 0;
    for t in tasks {
        if let CommitOutcome::Committed { .. } = t.await.expect("join").expect("commit") {
            committed += 1;
        }
    }
    let (snapshots, files) = live(a.as_ref(), &table).await;
    assert_eq!(snapshots, committed, "every successful commit is a snapshot");
    assert_eq!(committed, 16, "no epoch covered another (distinct partitions)");
    assert_eq!(files.len(), 16, "no commit overwrote another: {files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_replaces_its_inputs_keeps_their_sequence_number_and_the_offsets() {
    let (_dir, inner, catalog, table) = setup().await;
    for e in 0..3 {
        commit(&catalog, &request(&table, e, 0, 10 * (e as i64 + 1)), RetryPolicy::default()).await.expect("epoch");
    }
    // A rewrite of the first two epochs' files, read as of sequence number 2; its response is lost.
    catalog.lose.store(1, Ordering::SeqCst);
    let r = rewrite(&table, "rw-1", &["e0-p0", "e1-p0"], "merged", 2, true);
    let outcome = commit(&catalog, &r, RetryPolicy::default()).await.expect("rewrite");
    assert!(matches!(outcome, CommitOutcome::AlreadyCommitted { .. }), "found by its id: {outcome:?}");
    let (snapshots, files) = live(inner.as_ref(), &table).await;
    assert_eq!(snapshots, 4, "one replace snapshot, not two");
    assert_eq!(
        files,
        vec![("/nonexistent/e2-p0.parquet".to_string(), 3), ("/nonexistent/merged.parquet".to_string(), 2)],
        "the output carries the data sequence number it was read at"
    );
    let state = inner.load(&table).await.expect("load").expect("table");
    let current = state.metadata.current_snapshot().expect("snapshot");
    assert_eq!(current.summary().operation, Operation::Replace);
    let progress = committed_progress(&state.metadata).expect("progress").expect("floe snapshot");
    assert_eq!(progress.offsets.get("topic", 0), Some(30), "a rewrite carries the offsets a restart needs");
    assert_eq!(current.summary().additional_properties["total-data-files"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_whose_inputs_went_away_is_refused_or_dropped_never_half_applied() {
    let (_dir, inner, catalog, table) = setup().await;
    commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("epoch");
    // A competing rewrite retires the input first.
    catalog.competitors.lock().expect("lock").push(rewrite(&table, "other", &["e0-p0"], "theirs", 1, true));
    let lenient = rewrite(&table, "mine", &["e0-p0"], "mine", 1, false);
    let outcome = commit(&catalog, &lenient, RetryPolicy::default()).await.expect("lenient");
    assert!(matches!(outcome, CommitOutcome::Dropped { .. }), "{outcome:?}");
    let strict = rewrite(&table, "mine-2", &["e0-p0"], "mine", 1, true);
    let e = commit(&catalog, &strict, RetryPolicy::default()).await.expect_err("strict");
    assert!(e.to_string().contains("not live"), "{e}");
    let (_, files) = live(inner.as_ref(), &table).await;
    assert_eq!(files, vec![("/nonexistent/theirs.parquet".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_can_retire_a_file_it_supersedes() {
    let (_dir, inner, catalog, table) = setup().await;
    commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("epoch");
    let mut r = request(&table, 1, 0, 20);
    r.removed = vec![FileRef::path("/nonexistent/e0-p0.parquet")];
    commit(&catalog, &r, RetryPolicy::default()).await.expect("epoch");
    let (_, files) = live(inner.as_ref(), &table).await;
    assert_eq!(files, vec![("/nonexistent/e1-p0.parquet".to_string(), 2)]);
    // Retiring it again is an error: the writer's view of the table was wrong.
    let mut again = request(&table, 2, 0, 30);
    again.removed = vec![FileRef::path("/nonexistent/e0-p0.parquet")];
    assert!(commit(&catalog, &again, RetryPolicy::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_commits_ride_out_races_on_the_same_loop() {
    let (_dir, inner, catalog, table) = setup().await;
    catalog.competitors.lock().expect("lock").push(request(&table, 0, 0, 10));
    catalog.lose.store(1, Ordering::SeqCst);
    let set = HashMap::from([("floe.test".to_string(), "yes".to_string())]);
    commit_metadata(&catalog, &table, None, set, &[]).await.expect("metadata");
    let state = inner.load(&table).await.expect("load").expect("table");
    assert_eq!(state.metadata.properties().get("floe.test").map(String::as_str), Some("yes"));
    assert_eq!(state.metadata.snapshots().len(), 1, "the competitor's snapshot survived the property change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_stay_few_however_many_commits_and_every_file_stays_live() {
    let (_dir, inner, catalog, table) = setup().await;
    for e in 0..60u64 {
        let mut r = request(&table, e, 0, 10 * (e as i64 + 1));
        // Data and delete manifests both pass the merge limit, in the same commits.
        r.delete_files = vec![delete_file(&format!("d{e}"))];
        if e >= 30 && e % 7 == 6 {
            // Later, now and then an epoch retires an earlier file (a replaced deletion
            // vector); before that, data and delete manifests reach the limit together.
            r.removed = vec![FileRef::path(format!("/nonexistent/e{}-p0.parquet", e - 3))];
        }
        commit(&catalog, &r, RetryPolicy::default()).await.expect("commit");
    }
    let state = inner.load(&table).await.expect("load").expect("table");
    let current = state.metadata.current_snapshot().expect("snapshot");
    let bytes = catalog.file_io().new_input(current.manifest_list()).expect("input").read().await.expect("read");
    let list = ManifestList::parse_with_version(&bytes, state.metadata.format_version()).expect("list");
    for content in [iceberg::spec::ManifestContentType::Data, iceberg::spec::ManifestContentType::Deletes] {
        let n = list.entries().iter().filter(|m| m.content == content).count();
        assert!(n <= floe_engine::manifests::MERGE_AFTER + 1, "{n} {content:?} manifests after 60 commits");
    }
    let (_, files) = live(inner.as_ref(), &table).await;
    let mut expected: Vec<String> = (0..60u64)
        .filter(|e| !(30..60u64).any(|r| r % 7 == 6 && r - 3 == *e))
        .map(|e| format!("/nonexistent/e{e}-p0.parquet"))
        .chain((0..60u64).map(|e| format!("/nonexistent/d{e}.parquet")))
        .collect();
    expected.sort();
    assert_eq!(files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), expected);
    // Sequence numbers survive the merges: the files of epoch e were added by snapshot e + 1.
    for (path, seq) in files {
        let e: i64 = path
            .trim_start_matches("/nonexistent/")
            .trim_start_matches(['e', 'd'])
            .split(['-', '.'])
            .next()
            .and_then(|x| x.parse().ok())
            .expect("epoch");
        assert_eq!(seq, e + 1, "{path}");
    }
    // Every manifest the list names holds entries of its own content.
    for m in list.entries() {
        let manifest = m.load_manifest(catalog.file_io()).await.expect("manifest");
        for e in manifest.entries() {
            let is_data = e.content_type() == DataContentType::Data;
            assert_eq!(is_data, m.content == iceberg::spec::ManifestContentType::Data, "{}", m.manifest_path);
        }
    }
}
