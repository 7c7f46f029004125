//! Catalog access: loading and creating tables, and the one write floe does to a catalog,
//! the compare-and-swap of a table's metadata pointer.
//!
//! ```text
//!   commit protocol ──► TableCatalog::load / swap_metadata ──► SqlTableCatalog ──► SQLite file
//!                                                          (JDBC catalog schema: iceberg_tables)
//! ```
//!
//! [`TableCatalog`] is the seam where a REST catalog (and, through `FileIO`, object
//! storage) slots in, and where fault tests wrap the real catalog to lose responses or race
//! commits.
//!
//! Beside the JDBC schema, floe keeps one table of its own in the catalog database,
//! `floe_writer_leases`: which process may change a table's files (a pipeline, or
//! `floe maintain`), so two of them never compact the same table at once; and
//! `floe_requests`: work an offline command hands to the pipeline that holds a table (a
//! compliance erasure), which the pipeline's committer carries out and answers.
//!
//! # Invariants
//! - `swap_metadata` succeeds only if the pointer still equals `expected`: it is the
//!   `UPDATE iceberg_tables SET metadata_location = new ... WHERE metadata_location = expected`
//!   that iceberg-catalog-sql and Iceberg's `JdbcCatalog` use. A lost race returns an error of
//!   kind [`ErrorKind::CommitConflict`], which is retryable.
//! - Loads always read the pointer fresh; nothing is cached across calls.

use std::collections::HashMap;
use std::fmt::Debug;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory};
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::config::{CatalogConfig, TableName};
use crate::error::{Error, ErrorKind, Result};

/// A table's current metadata and where it is stored.
#[derive(Clone, Debug)]
pub struct TableState {
    /// The table.
    pub ident: TableIdent,
    /// Parsed metadata.
    pub metadata: Arc<TableMetadata>,
    /// Location of the metadata file the catalog points at.
    pub metadata_location: String,
}

/// The catalog operations floe needs.
#[async_trait]
pub trait TableCatalog: Send + Sync + Debug {
    /// The catalog's name (the `catalog_name` column of the JDBC schema).
    fn name(&self) -> &str;
    /// File access for table files.
    fn file_io(&self) -> &FileIO;
    /// Creates a namespace if it does not exist.
    async fn ensure_namespace(&self, namespace: &str) -> Result<()>;
    /// Loads a table's current state; `None` if the table does not exist.
    async fn load(&self, ident: &TableIdent) -> Result<Option<TableState>>;
    /// Creates a table.
    async fn create(&self, namespace: &str, creation: TableCreation) -> Result<TableState>;
    /// Moves the table pointer from `expected` to `new`, or fails with `CommitConflict`.
    async fn swap_metadata(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<()>;
    /// An iceberg-rust [`Table`] for reading (scans).
    async fn table(&self, ident: &TableIdent) -> Result<Table>;
    /// Takes or renews the writer lease of a table for `owner` until `ttl` from now, unless
    /// another owner holds one that has not expired: then that lease is returned and
    /// nothing changes. The same owner (a restarted pipeline) always takes its lease back.
    async fn lease(&self, _ident: &TableIdent, _owner: &str, _ttl: Duration) -> Result<Option<Lease>> {
        Ok(None)
    }
    /// Gives up `owner`'s lease of a table (if it holds it).
    async fn release(&self, _ident: &TableIdent, _owner: &str) -> Result<()> {
        Ok(())
    }
    /// A metadata file this process just wrote at `location`: a later load may skip
    /// reading it back.
    fn remember(&self, _location: &str, _metadata: Arc<TableMetadata>) {}
    /// Queues a request of `kind` for the pipeline that writes `ident`; its id.
    async fn submit_request(&self, _ident: &TableIdent, _kind: &str, _payload: &str) -> Result<String> {
        Err(Error::new(ErrorKind::Catalog, "this catalog cannot pass requests to a running pipeline"))
    }
    /// The pending requests of `kind` for any of `tables`, oldest first.
    async fn pending_requests(&self, _tables: &[TableIdent], _kind: &str) -> Result<Vec<Request>> {
        Ok(Vec::new())
    }
    /// Answers a request: `state` is `done` or `failed`; its payload is cleared.
    async fn finish_request(&self, _id: &str, _state: &str, _result: &str) -> Result<()> {
        Ok(())
    }
    /// A request as it is now.
    async fn request(&self, _id: &str) -> Result<Option<Request>> {
        Ok(None)
    }
}

/// Work handed to the pipeline that writes a table (`floe_requests`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Its id.
    pub id: String,
    /// The table.
    pub table: TableIdent,
    /// What it asks (e.g. `erase`).
    pub kind: String,
    /// Its arguments (JSON); cleared once answered.
    pub payload: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// The answer (JSON or a message).
    pub result: String,
}

type RequestRow = (String, String, String, String, String, String, String);

impl Request {
    fn from_row((id, namespace, name, kind, payload, state, result): RequestRow) -> Request {
        // One namespace level holding the dotted name, as [`ident`] makes it.
        let table = TableIdent::new(NamespaceIdent::new(namespace), name);
        Request { id, table, kind, payload, state, result }
    }
}

/// A table's writer lease: who may change the table's files, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// `pipeline:<id>` for `floe run`, `maintain:<host>:<pid>` for `floe maintain`.
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: i64,
}

/// The lease owner of a pipeline's runs.
pub fn pipeline_owner(pipeline_id: &str) -> String {
    format!("pipeline:{pipeline_id}")
}

/// Converts a floe table name to an iceberg identifier.
pub fn ident(name: &TableName) -> TableIdent {
    TableIdent::new(NamespaceIdent::new(name.namespace.clone()), name.name.clone())
}

/// The embedded default: Iceberg's SQL catalog on a SQLite file, with a local warehouse.
#[derive(Debug)]
pub struct SqlTableCatalog {
    name: String,
    catalog: SqlCatalog,
    pool: SqlitePool,
    file_io: FileIO,
    /// Parsed metadata files by location (a location's content never changes).
    metadata: MetadataCache,
}

/// The newest parsed metadata file of each table (a location's content never changes, so
/// a load whose pointer names it reuses it).
#[derive(Debug, Default)]
struct MetadataCache(std::sync::Mutex<HashMap<String, (String, Arc<TableMetadata>)>>);

impl MetadataCache {
    fn get(&self, location: &str) -> Option<Arc<TableMetadata>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(table_dir(location)).filter(|(l, _)| l == location).map(|(_, m)| Arc::clone(m))
    }

    fn put(&self, location: &str, metadata: Arc<TableMetadata>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(table_dir(location).to_string(), (location.to_string(), metadata));
    }
}

/// The folder of a metadata file: one entry per table.
fn table_dir(location: &str) -> &str {
    location.rsplit_once('/').map_or(location, |(dir, _)| dir)
}

impl SqlTableCatalog {
    /// Opens (creating if needed) the SQLite catalog and the warehouse folder.
    pub async fn open(config: &CatalogConfig) -> Result<SqlTableCatalog> {
        let db = config
            .uri
            .strip_prefix("sqlite://")
            .ok_or_else(|| Error::new(ErrorKind::Config, format!("catalog uri `{}` is not sqlite://", config.uri)))?;
        let db_path = db.split_once('?').map(|(p, _)| p).unwrap_or(db);
        if let Some(parent) = std::path::Path::new(db_path).parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::create_dir_all(&config.warehouse)?;

        // Our own small pool for the pointer swap. WAL lets Spark or pyiceberg read the
        // file while floe commits; the busy timeout rides out concurrent writers.
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{db_path}"))
            .map_err(Error::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL sync: a commit survives a crash of any process; only a power
            // loss can take back the newest pointer swaps, and the snapshot they named holds
            // its own offsets, so the source is read again from the one before: still
            // exactly once.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        // Writer leases live beside the catalog's tables, so every process that shares the
        // catalog sees them (readers such as Spark ignore the table).
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS floe_writer_leases (catalog_name TEXT NOT NULL, table_namespace TEXT NOT NULL, \
             table_name TEXT NOT NULL, owner TEXT NOT NULL, expires_ms INTEGER NOT NULL, \
             PRIMARY KEY (catalog_name, table_namespace, table_name))",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS floe_requests (catalog_name TEXT NOT NULL, id TEXT NOT NULL, \
             table_namespace TEXT NOT NULL, table_name TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, \
             state TEXT NOT NULL, result TEXT NOT NULL, created_ms INTEGER NOT NULL, \
             PRIMARY KEY (catalog_name, id))",
        )
        .execute(&pool)
        .await?;

        let file_io = FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build();
        let catalog = SqlCatalogBuilder::default()
            .uri(format!("sqlite://{db_path}"))
            .warehouse_location(config.warehouse.clone())
            .sql_bind_style(SqlBindStyle::QMark)
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(config.name.clone(), HashMap::new())
            .await
            .map_err(|e| Error::from(e).context(format!("opening catalog {}", config.uri)))?;
        Ok(SqlTableCatalog { metadata: MetadataCache::default(), name: config.name.clone(), catalog, pool, file_io })
    }
}

#[async_trait]
impl TableCatalog for SqlTableCatalog {
    fn name(&self) -> &str {
        &self.name
    }

    fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    async fn ensure_namespace(&self, namespace: &str) -> Result<()> {
        let ns = NamespaceIdent::new(namespace.to_string());
        if self.catalog.namespace_exists(&ns).await? {
            return Ok(());
        }
        match self.catalog.create_namespace(&ns, HashMap::new()).await {
            Ok(_) => Ok(()),
            // Another worker or process created it meanwhile.
            Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("creating namespace {namespace}"))),
        }
    }

    async fn load(&self, ident: &TableIdent) -> Result<Option<TableState>> {
        // The pointer, fresh; the metadata file it names, parsed once.
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT metadata_location FROM iceberg_tables \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
        )
        .bind(&self.name)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .fetch_optional(&self.pool)
        .await?;
        let Some((location,)) = row else { return Ok(None) };
        let metadata_location =
            location.ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{ident} has no metadata location")))?;
        let metadata = match self.metadata.get(&metadata_location) {
            Some(m) => m,
            None => {
                let m = Arc::new(
                    TableMetadata::read_from(&self.file_io, &metadata_location)
                        .await
                        .map_err(|e| Error::from(e).context(format!("loading {ident}")))?,
                );
                self.metadata.put(&metadata_location, Arc::clone(&m));
                m
            }
        };
        Ok(Some(TableState { ident: ident.clone(), metadata, metadata_location }))
    }

    fn remember(&self, location: &str, metadata: Arc<TableMetadata>) {
        self.metadata.put(location, metadata);
    }

    async fn create(&self, namespace: &str, creation: TableCreation) -> Result<TableState> {
        self.ensure_namespace(namespace).await?;
        let ns = NamespaceIdent::new(namespace.to_string());
        let name = creation.name.clone();
        let table = self
            .catalog
            .create_table(&ns, creation)
            .await
            .map_err(|e| Error::from(e).context(format!("creating {namespace}.{name}")))?;
        let metadata_location = table
            .metadata_location()
            .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{namespace}.{name} has no metadata location")))?
            .to_string();
        Ok(TableState { ident: table.identifier().clone(), metadata: table.metadata_ref(), metadata_location })
    }

    async fn swap_metadata(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<()> {
        if expected == new {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("{ident}: a commit must write a new metadata file, not {new}"),
            ));
        }
        let result = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?",
        )
        .bind(new)
        .bind(expected)
        .bind(&self.name)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(expected)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(Error::new(
                ErrorKind::CommitConflict,
                format!("{ident}: the table pointer moved away from {expected}"),
            )
            .with_retryable(true));
        }
        Ok(())
    }

    async fn table(&self, ident: &TableIdent) -> Result<Table> {
        self.catalog.load_table(ident).await.map_err(|e| Error::from(e).context(format!("loading {ident}")))
    }

    async fn lease(&self, ident: &TableIdent, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let now = chrono::Utc::now().timestamp_millis();
        let namespace = ident.namespace().join(".");
        // One statement: take the lease if it is free, ours, or expired.
        let taken = sqlx::query(
            "INSERT INTO floe_writer_leases VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (catalog_name, table_namespace, table_name) DO UPDATE \
             SET owner = excluded.owner, expires_ms = excluded.expires_ms \
             WHERE floe_writer_leases.owner = excluded.owner OR floe_writer_leases.expires_ms < ?",
        )
        .bind(&self.name)
        .bind(&namespace)
        .bind(ident.name())
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() > 0 {
            return Ok(None);
        }
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT owner, expires_ms FROM floe_writer_leases \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
        )
        .bind(&self.name)
        .bind(&namespace)
        .bind(ident.name())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(owner, expires_ms)| Lease { owner, expires_ms }))
    }

    async fn submit_request(&self, ident: &TableIdent, kind: &str, payload: &str) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        sqlx::query("INSERT INTO floe_requests VALUES (?, ?, ?, ?, ?, ?, 'pending', '', ?)")
            .bind(&self.name)
            .bind(&id)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(kind)
            .bind(payload)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    async fn pending_requests(&self, tables: &[TableIdent], kind: &str) -> Result<Vec<Request>> {
        let rows: Vec<RequestRow> = sqlx::query_as(
            "SELECT id, table_namespace, table_name, kind, payload, state, result FROM floe_requests \
             WHERE catalog_name = ? AND kind = ? AND state = 'pending' ORDER BY created_ms, id",
        )
        .bind(&self.name)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Request::from_row).filter(|r| tables.contains(&r.table)).collect())
    }

    async fn finish_request(&self, id: &str, state: &str, result: &str) -> Result<()> {
        sqlx::query("UPDATE floe_requests SET state = ?, result = ?, payload = '' WHERE catalog_name = ? AND id = ?")
            .bind(state)
            .bind(result)
            .bind(&self.name)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn request(&self, id: &str) -> Result<Option<Request>> {
        let row: Option<RequestRow> = sqlx::query_as(
            "SELECT id, table_namespace, table_name, kind, payload, state, result FROM floe_requests \
             WHERE catalog_name = ? AND id = ?",
        )
        .bind(&self.name)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Request::from_row))
    }

    async fn release(&self, ident: &TableIdent, owner: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM floe_writer_leases WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND owner = ?",
        )
        .bind(&self.name)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
