//! The engine's one error type.
//!
//! Every fallible engine call returns [`Error`], which carries a [`ErrorKind`], a human
//! readable context, and a `retryable` flag decided at the point of failure (the
//! conventions' "classify at the edge" rule). Callers that retry an external call
//! (catalog, object store) consult [`Error::is_retryable`] and nothing else.
//!
//! # Invariants
//! - A catalog compare-and-swap that lost a race is `CommitConflict` and retryable.
//! - Configuration errors are `Config` and never retryable; their message names the file
//!   and the key.

use std::fmt;

/// What went wrong, coarsely, so callers can branch without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The pipeline file or a setting in it is invalid.
    Config,
    /// The catalog refused or failed a request.
    Catalog,
    /// Another writer moved the table pointer first.
    CommitConflict,
    /// Reading or writing table files failed.
    Io,
    /// Iceberg rejected data or metadata we built: a bug or an incompatible table.
    Iceberg,
    /// A source (replay log, broker) failed.
    Source,
    /// Data did not match the schema it claims.
    Data,
    /// An internal invariant was violated.
    Internal,
}

/// The engine error: a kind, a context message, a retryable flag and an optional cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new, non-retryable error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), retryable: false, source: None }
    }

    /// Marks whether retrying the failed call may succeed.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with more context (table, topic, offset, ...).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message without the cause chain.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<iceberg::Error> for Error {
    fn from(e: iceberg::Error) -> Self {
        let retryable = e.retryable();
        let kind = match e.kind() {
            iceberg::ErrorKind::CatalogCommitConflicts => ErrorKind::CommitConflict,
            _ => ErrorKind::Iceberg,
        };
        Error::new(kind, "iceberg").with_retryable(retryable).with_source(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // A busy/locked SQLite database or a dropped connection is worth another attempt.
        let retryable = matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Database(_));
        Error::new(ErrorKind::Catalog, "catalog database").with_retryable(retryable).with_source(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "io").with_source(e)
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::new(ErrorKind::Io, "parquet").with_source(e)
    }
}
