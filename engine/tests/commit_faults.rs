//! Fault tests of the commit protocol against the real SQLite catalog: lost commit
//! responses and racing committers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use floe_engine::catalog::{SqlTableCatalog, TableCatalog, TableState};
use floe_engine::commit::{CommitOutcome, CommitRequest, RetryPolicy, commit};
use floe_engine::config::CatalogConfig;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::offsets::{SourceOffsets, committed_progress};
use floe_engine::schema::{Column, ColumnType, TableSchema};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, ManifestList, Struct, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{TableCreation, TableIdent};

fn catalog_config(dir: &std::path::Path) -> CatalogConfig {
    CatalogConfig {
        name: "floe".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: dir.join("warehouse").display().to_string(),
    }
}

async fn create_table(catalog: &dyn TableCatalog) -> TableIdent {
    let schema =
        TableSchema::new(vec![Column { name: "id".into(), ty: ColumnType::Long, nullable: false }], &["id".into()])
            .expect("schema")
            .base_schema()
            .expect("iceberg schema");
    let creation = TableCreation::builder()
        .name("t".into())
        .schema(schema)
        .partition_spec(UnboundPartitionSpec::builder().with_spec_id(0).build())
        .build();
    catalog.create("ns", creation).await.expect("create").ident
}

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

fn request(table: &TableIdent, epoch: u64, partition: i32, next: i64) -> CommitRequest {
    let mut offsets = SourceOffsets::default();
    offsets.advance("topic", partition, next);
    CommitRequest {
        table: table.clone(),
        pipeline_id: "p".into(),
        epoch,
        offsets,
        data_files: vec![data_file(&format!("e{epoch}-p{partition}"))],
        delete_files: Vec::new(),
        schema_change: None,
    }
}

async fn snapshot_files(catalog: &dyn TableCatalog, table: &TableIdent) -> (usize, Vec<String>) {
    let state = catalog.load(table).await.expect("load").expect("exists");
    let snapshots = state.metadata.snapshots().len();
    let Some(current) = state.metadata.current_snapshot() else { return (0, Vec::new()) };
    let bytes = catalog.file_io().new_input(current.manifest_list()).expect("input").read().await.expect("read");
    let list = ManifestList::parse_with_version(&bytes, state.metadata.format_version()).expect("list");
    let mut files = Vec::new();
    for m in list.entries() {
        let manifest = m.load_manifest(catalog.file_io()).await.expect("manifest");
        files.extend(manifest.entries().iter().map(|e| e.file_path().to_string()));
    }
    files.sort();
    (snapshots, files)
}

/// Moves the pointer, then reports a failure, as when the response to a successful
/// `UPDATE` is lost on the way back.
#[derive(Debug)]
struct LosesResponse {
    inner: SqlTableCatalog,
    lose: AtomicBool,
}

#[async_trait]
impl TableCatalog for LosesResponse {
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
        self.inner.swap_metadata(ident, expected, new).await?;
        if self.lose.swap(false, Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Catalog, "connection reset after the update").with_retryable(true));
        }
        Ok(())
    }
    async fn table(&self, ident: &TableIdent) -> Result<Table> {
        self.inner.table(ident).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commit_response_is_detected_and_not_committed_twice() {
    let dir = tempfile::tempdir().expect("tmp");
    let catalog = LosesResponse {
        inner: SqlTableCatalog::open(&catalog_config(dir.path())).await.expect("catalog"),
        lose: AtomicBool::new(true),
    };
    let table = create_table(&catalog).await;
    let outcome = commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(
        matches!(outcome, CommitOutcome::AlreadyCommitted { .. }),
        "the retry must find its own commit: {outcome:?}"
    );
    let (snapshots, files) = snapshot_files(&catalog, &table).await;
    assert_eq!(snapshots, 1, "exactly one snapshot");
    assert_eq!(files, vec!["/nonexistent/e0-p0.parquet".to_string()]);
    // And a restart's commit of the same epoch is a no-op too.
    let again = commit(&catalog, &request(&table, 0, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(matches!(again, CommitOutcome::AlreadyCommitted { .. }));
    assert_eq!(snapshot_files(&catalog, &table).await.0, 1);
}

/// Lets another writer commit between our load and our swap, once.
#[derive(Debug)]
struct RacesOnce {
    inner: Arc<SqlTableCatalog>,
    competitor: std::sync::Mutex<Option<CommitRequest>>,
    conflicts: AtomicUsize,
}

#[async_trait]
impl TableCatalog for RacesOnce {
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
        let competitor = self.competitor.lock().expect("lock").take();
        if let Some(other) = competitor {
            commit(self.inner.as_ref(), &other, RetryPolicy::default()).await?;
        }
        let result = self.inner.swap_metadata(ident, expected, new).await;
        if matches!(&result, Err(e) if e.kind() == ErrorKind::CommitConflict) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn table(&self, ident: &TableIdent) -> Result<Table> {
        self.inner.table(ident).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_race_retries_on_top_of_the_winner() {
    let dir = tempfile::tempdir().expect("tmp");
    let inner = Arc::new(SqlTableCatalog::open(&catalog_config(dir.path())).await.expect("catalog"));
    let table = create_table(inner.as_ref()).await;
    let catalog = RacesOnce {
        inner: Arc::clone(&inner),
        competitor: std::sync::Mutex::new(Some(request(&table, 0, 0, 5))),
        conflicts: AtomicUsize::new(0),
    };
    let outcome = commit(&catalog, &request(&table, 1, 0, 10), RetryPolicy::default()).await.expect("commit");
    assert!(matches!(outcome, CommitOutcome::Committed { attempts: 2, .. }), "{outcome:?}");
    assert_eq!(catalog.conflicts.load(Ordering::SeqCst), 1, "the first swap lost the race");
    let (snapshots, files) = snapshot_files(inner.as_ref(), &table).await;
    assert_eq!(snapshots, 2);
    assert_eq!(files, vec!["/nonexistent/e0-p0.parquet".to_string(), "/nonexistent/e1-p0.parquet".to_string()]);
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
    let table = create_table(a.as_ref()).await;
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
    let (snapshots, files) = snapshot_files(a.as_ref(), &table).await;
    assert_eq!(snapshots, committed, "every successful commit is a snapshot");
    assert_eq!(committed, 16, "no epoch covered another (distinct partitions)");
    assert_eq!(files.len(), 16, "no commit overwrote another: {files:?}");
    let _ = HashMap::<(), ()>::new();
}
