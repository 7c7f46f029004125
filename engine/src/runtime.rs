//! The async runtime that file and catalog IO run on.
//!
//! Timely workers are plain threads; iceberg's writers and catalogs are async. One tokio
//! runtime per process carries all of that IO. Operators spawn onto it and are woken
//! through a timely `SyncActivator` when the work completes, so a worker never blocks on
//! IO while it could be decoding the next epoch.
//!
//! # Invariants
//! - One runtime per process, shared by every worker through [`IoRuntime`] (cheap clone).
//! - Code running on timely threads uses [`IoRuntime::block_on`] only outside dataflow
//!   operators (startup, shutdown, tests).

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// Handle to the process's IO runtime.
#[derive(Clone, Debug)]
pub struct IoRuntime {
    runtime: Arc<tokio::runtime::Runtime>,
}

impl IoRuntime {
    /// Starts a multi-threaded runtime with `threads` workers.
    pub fn new(threads: usize) -> Result<IoRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("floe-io")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, "cannot start the IO runtime").with_source(e))?;
        Ok(IoRuntime { runtime: Arc::new(runtime) })
    }

    /// The tokio handle, for spawning.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Runs a future to completion on the calling thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Spawns a future on the runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }
}
