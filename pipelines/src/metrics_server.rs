//! Prometheus metrics of a run on `--metrics-addr`: `GET /metrics` answers in the
//! Prometheus/OpenMetrics text format (prometheus-client), served by hyper.
//!
//! ```text
//!   scrape ─► render(): run counters (events, skipped, dead letters, commits, conflicts),
//!             consumer lag, epoch commit latency (histogram),
//!             per table: events, rows, deletes, rewrites, expiry and cleanup counters,
//!                        source freshness,
//!             per table health (cached for HEALTH_TTL): files, bytes, snapshots,
//!                        metadata size, delete entries per live row, last
//!                        compaction / expiry / cleanup
//! ```
//!
//! # Invariants
//! - Scrapes only read: counters come from [`Metrics`], health from the catalog and the
//!   cached manifests; a scrape never blocks the dataflow.
//! - The listener is bound before the run starts, so a bad address fails the command at
//!   once, naming the address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_engine::catalog::{TableCatalog, ident};
use floe_engine::config::TableName;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::Metrics;
use floe_engine::runtime::IoRuntime;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::table_health::{Health, health};

/// How long table health figures are reused between scrapes.
pub const HEALTH_TTL: Duration = Duration::from_secs(10);

type Labels = Vec<(String, String)>;

/// A health figure: metric name, help, and its value for a table (if it has one).
type Figure = (&'static str, &'static str, &'static dyn Fn(&Health) -> Option<f64>);

/// What a scrape reads.
pub struct Sources {
    /// The run's counters.
    pub metrics: Arc<Metrics>,
    /// The catalog, for table health.
    pub catalog: Arc<dyn TableCatalog>,
    /// The pipeline's tables.
    pub tables: Vec<TableName>,
    health: Mutex<Option<(Instant, Vec<Health>)>>,
}

impl Sources {
    /// What a scrape of this run reads.
    pub fn new(metrics: Arc<Metrics>, catalog: Arc<dyn TableCatalog>, tables: Vec<TableName>) -> Sources {
        Sources { metrics, catalog, tables, health: Mutex::new(None) }
    }

    async fn health(&self) -> Vec<Health> {
        if let Some((at, h)) = self.health.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && at.elapsed() < HEALTH_TTL
        {
            return h.clone();
        }
        let mut out = Vec::new();
        for name in &self.tables {
            match self.catalog.load(&ident(name)).await {
                Ok(Some(state)) => match health(self.catalog.file_io(), &state).await {
                    Ok(mut h) => {
                        h.table = name.to_string();
                        out.push(h);
                    }
                    Err(e) => tracing::debug!(table = %name, error = %e, "table health for metrics"),
                },
                Ok(None) => {}
                Err(e) => tracing::debug!(table = %name, error = %e, "loading a table for metrics"),
            }
        }
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), out.clone()));
        out
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str, values: Vec<(Labels, f64)>) {
    let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    registry.register(name, help, family);
}

fn counter_family(registry: &mut Registry, name: &str, help: &str, values: Vec<(Labels, u64)>) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}

fn table(name: &str) -> Labels {
    vec![("table".to_string(), name.to_string())]
}

/// The text exposition of everything a scrape reads.
pub async fn render(sources: &Sources) -> Result<String> {
    let m = &sources.metrics;
    let mut r = Registry::with_prefix("floe");
    counter(&mut r, "events", "Source records read", Metrics::get(&m.records_in));
    counter(
        &mut r,
        "records_skipped",
        "Records skipped because a table already holds them",
        Metrics::get(&m.records_skipped),
    );
    counter(&mut r, "tombstones", "Tombstones skipped", Metrics::get(&m.tombstones));
    counter(&mut r, "dead_letters", "Records sent to a dead-letter table", Metrics::get(&m.dead_letters));
    counter(&mut r, "commits", "Snapshots committed", Metrics::get(&m.commits));
    counter(
        &mut r,
        "commit_conflicts",
        "Commit attempts that lost a race and were retried",
        Metrics::get(&m.commit_conflicts),
    );
    r.register("epoch_commit_seconds", "Wall time of each epoch's commits", m.commit_latency.clone());
    let lags = m.lags();
    gauge_family(
        &mut r,
        "consumer_lag",
        "Records between the committed position and the high watermark",
        lags.into_iter()
            .map(|((topic, partition), lag)| {
                (vec![("topic".to_string(), topic), ("partition".to_string(), partition.to_string())], lag as f64)
            })
            .collect(),
    );
    let stats = m.tables();
    let per = |f: &dyn Fn(&floe_engine::metrics::TableStats) -> u64| -> Vec<(Labels, u64)> {
        stats.iter().map(|(t, s)| (table(t), f(s))).collect()
    };
    counter_family(&mut r, "table_events", "Change events routed to the table", per(&|s| s.events));
    counter_family(&mut r, "table_rows", "Rows written", per(&|s| s.rows));
    counter_family(&mut r, "table_deletes", "Rows deleted", per(&|s| s.deletes));
    counter_family(&mut r, "table_commits", "Snapshots committed", per(&|s| s.commits));
    counter_family(&mut r, "table_rewrites", "Compactions committed", per(&|s| s.rewrites));
    counter_family(&mut r, "table_snapshots_expired", "Snapshots expired", per(&|s| s.snapshots_expired));
    counter_family(&mut r, "table_files_cleaned", "Files deleted by cleanup", per(&|s| s.files_cleaned));
    let now_ms = chrono::Utc::now().timestamp_millis();
    gauge_family(
        &mut r,
        "table_source_lag_seconds",
        "Age of the newest committed change's source time",
        stats
            .iter()
            .filter_map(|(t, s)| s.last_source_ts_ms.map(|ts| (table(t), (now_ms - ts).max(0) as f64 / 1000.0)))
            .collect(),
    );
    let health = sources.health().await;
    let figures: [Figure; 9] = [
        ("table_data_files", "Live data files", &|h| Some(h.data_files as f64)),
        ("table_delete_files", "Live delete files", &|h| Some(h.delete_files as f64)),
        ("table_bytes", "Bytes of live data and delete files", &|h| Some(h.bytes as f64)),
        ("table_snapshots", "Snapshots the metadata holds", &|h| Some(h.snapshots as f64)),
        ("table_metadata_bytes", "Size of the current metadata file", &|h| Some(h.metadata_bytes as f64)),
        ("table_delete_entries_per_row", "Read amplification: delete entries per live row", &|h| {
            Some(h.read_amplification())
        }),
        ("table_last_compaction_timestamp_seconds", "When the last compaction was committed", &|h| {
            h.last_compaction_ms.map(|ms| ms as f64 / 1000.0)
        }),
        ("table_last_expiry_timestamp_seconds", "When the last expiry was committed", &|h| {
            h.last_expiry_ms.map(|ms| ms as f64 / 1000.0)
        }),
        ("table_last_cleanup_timestamp_seconds", "When the last cleanup removed files", &|h| {
            h.last_cleanup_ms.map(|ms| ms as f64 / 1000.0)
        }),
    ];
    for (name, help, f) in figures {
        gauge_family(&mut r, name, help, health.iter().filter_map(|h| f(h).map(|v| (table(&h.table), v))).collect());
    }
    let mut out = String::new();
    encode(&mut out, &r).map_err(|e| Error::new(ErrorKind::Internal, format!("encoding metrics: {e}")))?;
    Ok(out)
}

/// The server, until dropped.
pub struct MetricsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `GET /metrics` from `sources` on `runtime`.
pub fn serve(runtime: &IoRuntime, addr: SocketAddr, sources: Sources) -> Result<MetricsServer> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};

    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::new(ErrorKind::Config, format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| Error::new(ErrorKind::Io, format!("--metrics-addr {addr}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::new(ErrorKind::Io, format!("--metrics-addr: {e}")))?;
    let sources = Arc::new(sources);
    let task = runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "metrics listener");
                return;
            }
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let sources = Arc::clone(&sources);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let sources = Arc::clone(&sources);
                    async move {
                        match (request.method(), request.uri().path()) {
                            (&hyper::Method::GET, "/metrics") => match render(&sources).await {
                                Ok(text) => Response::builder()
                                    .header(
                                        "content-type",
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    )
                                    .body(Full::new(Bytes::from(text))),
                                Err(e) => Response::builder()
                                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                                    .body(Full::new(Bytes::from(e.to_string()))),
                            },
                            _ => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from("floe serves /metrics\n"))),
                        }
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(MetricsServer { addr, task })
}
