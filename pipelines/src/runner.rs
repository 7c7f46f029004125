//! Running a pipeline: open the catalog, index the source, plan, then drive the dataflow
//! on timely worker threads until the source is exhausted and every epoch is committed.
//! A continuous Kafka run does this in rounds, so an approved table resumes in-process.
//!
//! # Invariants
//! - A run either ends with every read record committed (or dead-lettered), or returns an
//!   error; it never reports success over a failed write or commit.
//! - Workers park while waiting on IO, so an idle pipeline costs no CPU.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog};
use floe_engine::config::{KafkaConfig, PipelineConfig, SourceConfig};
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::{MemorySampler, Metrics, ProgressLine};
use floe_engine::runtime::IoRuntime;
use floe_operators::kafka_source::KafkaSourceSpec;
use floe_operators::plan::{PlanRef, RowTransform};
use floe_operators::replay_log::{PartitionCursor, ReplayIndex};
use floe_operators::schema_versions::Pause;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use tracing::info;

use crate::dataflow::{SourceSpec, build};
use crate::kafka_run::{self, KafkaDiscovery, KafkaTopology};
use crate::planner::{SchemaDiscovery, plan};
use crate::schema_watch::Watcher;

/// Knobs of a run beyond the pipeline file.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// User transforms by table index.
    pub transforms: HashMap<usize, RowTransform>,
    /// The row type (column names) a transform was written for, by table index.
    pub row_types: HashMap<usize, Vec<String>>,
    /// Show the live progress line (when stderr is a terminal; a log line otherwise).
    pub progress_line: bool,
    /// Kafka: end once everything up to the high watermarks seen at start is committed.
    pub until_caught_up: bool,
    /// Kafka: set to stop the run; without it, SIGINT and SIGTERM do.
    pub stop: Option<Arc<AtomicBool>>,
    /// Serve Prometheus metrics here while the run lasts (port 0: any free port).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunOutcome {
    /// Counters of the run.
    pub metrics: Arc<Metrics>,
    /// Tables a schema change paused: nothing at or after the pause was committed to them.
    pub paused: Vec<PausedTable>,
}

/// A table stopped by a schema change that its policy does not apply automatically.
#[derive(Clone, Debug)]
pub struct PausedTable {
    /// The table's base (or CDC) table name.
    pub table: String,
    /// Its topic.
    pub topic: String,
    /// Why, and where.
    pub pause: Pause,
}

impl std::fmt::Display for PausedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let changes: Vec<String> = self.pause.changes.iter().map(ToString::to_string).collect();
        let approvable = self.pause.changes.iter().all(|c| c.is_approvable());
        write!(
            f,
            "table {} paused at {} partition {} offset {}: {}",
            self.table,
            self.topic,
            self.pause.first.partition,
            self.pause.first.offset,
            changes.join("; ")
        )?;
        if approvable {
            write!(f, " (review with `floe schema plan`, apply with `floe schema approve PIPELINE {}`)", self.table)
        } else {
            write!(f, " (Iceberg cannot express this safely: re-bootstrap the table)")
        }
    }
}

struct ReplayDiscovery(Arc<ReplayIndex>);

impl SchemaDiscovery for ReplayDiscovery {
    fn samples(&self, table: u32, limit: usize) -> Result<Vec<crate::planner::Sample>> {
        let mut out = Vec::new();
        for p in self.0.partitions.iter().filter(|p| p.table == table) {
            let mut cursor = PartitionCursor::open(&self.0, p, None);
            while out.len() < limit {
                match cursor.read()? {
                    Some(r) => {
                        if let (key, Some(v)) = r.into_parts() {
                            out.push((key, v));
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        Ok(out)
    }

    fn newest(&self, table: u32) -> Result<Vec<(i32, i64, crate::planner::Sample)>> {
        let mut out = Vec::new();
        for p in self.0.partitions.iter().filter(|p| p.table == table) {
            let mut cursor = PartitionCursor::open(&self.0, p, None);
            let mut last = None;
            while let Some(r) = cursor.read()? {
                let (partition, offset) = (r.partition, r.offset);
                if let (key, Some(v)) = r.into_parts() {
                    last = Some((partition, offset, (key, v)));
                }
            }
            out.extend(last);
        }
        Ok(out)
    }
}

/// Runs a pipeline: a replay source runs until its log is consumed; a Kafka source until
/// SIGINT/SIGTERM (or, with `until_caught_up`, until the start-time high watermarks).
///
/// A continuous Kafka run goes in rounds: when a paused table's change is approved while it
/// runs, the round drains (as on a stop: what was read is committed), the pipeline is planned
/// again from the catalog, and the next round resumes the table from its own offsets.
pub fn run(config: &PipelineConfig, options: RunOptions) -> Result<RunOutcome> {
    let metrics = Metrics::new();
    let memory = MemorySampler::start();
    let runtime = IoRuntime::new(2)?;
    let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
    let stop = options.stop.clone().unwrap_or_default();
    if matches!(config.source, SourceConfig::Kafka(_)) && options.stop.is_none() {
        crate::signals::stop_on_signals(&stop)?;
    }
    let _line = options.progress_line.then(|| ProgressLine::start(Arc::clone(&metrics)));
    let _server = match options.metrics_addr {
        Some(addr) => {
            let tables = config.tables.iter().flat_map(|t| t.base.iter().chain(t.cdc.iter()).cloned()).collect();
            let sources = crate::metrics_server::Sources::new(Arc::clone(&metrics), Arc::clone(&catalog), tables);
            let server = crate::metrics_server::serve(&runtime, addr, sources)?;
            eprintln!("floe: metrics on http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    let shared = Shared { metrics: Arc::clone(&metrics), runtime, catalog, stop: Arc::clone(&stop) };
    let outcome = loop {
        let round = round(config, &options, &shared);
        match round {
            Ok(Round::Resume) if !stop.load(Ordering::Relaxed) => {
                Metrics::add(&metrics.resumes, 1);
                info!("planning the pipeline again to resume the approved table");
            }
            Ok(Round::Resume) => break Ok(Vec::new()),
            Ok(Round::Done(paused)) => break Ok(paused),
            Err(e) => break Err(e),
        }
    };
    metrics.finish();
    metrics.peak_anon_bytes.store(memory.peak(), Ordering::Relaxed);
    let paused = outcome?;
    for p in &paused {
        tracing::error!("{p}");
    }
    Ok(RunOutcome { metrics, paused })
}

/// What every round of a run shares.
struct Shared {
    metrics: Arc<Metrics>,
    runtime: IoRuntime,
    catalog: Arc<dyn TableCatalog>,
    /// The user's stop (signals, or [`RunOptions::stop`]).
    stop: Arc<AtomicBool>,
}

/// How a round ended.
enum Round {
    /// The run is over; these tables are paused.
    Done(Vec<PausedTable>),
    /// A paused table was approved: plan again and go on.
    Resume,
}

/// One round: discover the source, plan, run the dataflow until it ends.
fn round(config: &PipelineConfig, options: &RunOptions, shared: &Shared) -> Result<Round> {
    let stop = &shared.stop;
    // What the source needs once the tables are planned (Kafka: the start offsets).
    enum Pending {
        Replay(Arc<ReplayIndex>),
        Kafka(KafkaConfig, KafkaTopology),
    }
    // Ends the watcher's retries and waits when the round is over.
    let quit = Arc::new(AtomicBool::new(false));
    let (config, discovery, pending): (PipelineConfig, Box<dyn SchemaDiscovery + Send>, Pending) = match &config.source
    {
        SourceConfig::Replay { path } => {
            let mut index = ReplayIndex::build(path)?;
            info!(log = %path.display(), records = index.len(), partitions = index.partitions.len(), "indexed replay log");
            let config = config.with_topics(&index.topics())?;
            index.assign(&config.tables.iter().enumerate().map(|(i, t)| (t.topic.clone(), i as u32)).collect());
            let index = Arc::new(index);
            (config, Box::new(ReplayDiscovery(Arc::clone(&index))), Pending::Replay(index))
        }
        SourceConfig::Kafka(kafka) => {
            let (config, topology) = kafka_run::discover(config, kafka, stop)?;
            let discovery = KafkaDiscovery {
                kafka: kafka.clone(),
                topology: topology.clone(),
                topics: config.tables.iter().map(|t| t.topic.clone()).collect(),
                stop: Arc::clone(&quit),
            };
            (config, Box::new(discovery), Pending::Kafka(kafka.clone(), topology))
        }
    };
    let mut plan = plan(
        &config,
        Arc::clone(&shared.catalog),
        shared.runtime.clone(),
        Arc::clone(&shared.metrics),
        discovery.as_ref(),
        &options.transforms,
    )?;
    for (i, row_type) in &options.row_types {
        if let Some(t) = plan.tables.get_mut(*i) {
            check_row_type(t, row_type, &t.schema.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>())?;
            t.row_type = Some(row_type.clone());
        }
    }
    // A bounded run finishes due compactions before it ends; a stopped one abandons them.
    plan.maintain_at_end = matches!(config.source, SourceConfig::Replay { .. }) || options.until_caught_up;
    let tables = plan.tables.iter().flat_map(|t| [&t.base, &t.cdc]).flatten().map(|t| t.ident.clone()).collect();
    let _leases = crate::leases::take_for_run(
        Arc::clone(&shared.catalog),
        shared.runtime.clone(),
        tables,
        floe_engine::catalog::pipeline_owner(&plan.pipeline_id),
    )?;
    rebuild_indexes(&plan)?;
    let plan: PlanRef = Arc::new(plan);
    let drain = Arc::new(AtomicBool::new(false));
    let (source, watcher) = match pending {
        Pending::Replay(index) => (SourceSpec::Replay(index), None),
        Pending::Kafka(kafka, topology) => {
            let assignments = kafka_run::assignments(&plan, &topology, kafka.start, options.until_caught_up)?;
            // A continuous run watches schemas (pull) and paused tables (approval).
            let watcher = (!options.until_caught_up).then(|| {
                Watcher::start(
                    Arc::clone(&plan),
                    discovery,
                    kafka.schema_pull_interval,
                    Arc::clone(&drain),
                    Arc::clone(&quit),
                )
            });
            let spec = KafkaSourceSpec {
                config: kafka,
                assignments,
                until_caught_up: options.until_caught_up,
                stop: Arc::clone(stop),
                drain,
            };
            (SourceSpec::Kafka(Arc::new(spec)), watcher)
        }
    };
    info!(pipeline = %plan.pipeline_id, tables = plan.tables.len(), workers = config.pipeline.workers, "pipeline start");
    let executed = execute(Arc::clone(&plan), source, config.pipeline.workers);
    quit.store(true, Ordering::Relaxed);
    let resume = watcher.is_some_and(Watcher::finish);
    executed?;
    if let Some(err) = plan.failure.get() {
        return Err(Error::new(ErrorKind::Internal, err));
    }
    if resume {
        return Ok(Round::Resume);
    }
    let paused: Vec<PausedTable> = plan
        .tables
        .iter()
        .filter_map(|t| {
            let pause = t.versions.pause_state()?;
            let table = t.base.as_ref().or(t.cdc.as_ref()).map(|x| x.name.to_string()).unwrap_or_default();
            Some(PausedTable { table, topic: t.topic.clone(), pause })
        })
        .collect();
    info!(pipeline = %plan.pipeline_id, "pipeline finished");
    Ok(Round::Done(paused))
}

/// Rebuilds the key index of every base table in position or vector mode from the table
/// itself, all buckets in parallel, before any record is read.
pub fn rebuild_indexes(plan: &floe_operators::plan::PipelinePlan) -> Result<()> {
    for t in plan.tables.iter().filter(|t| t.base.is_some() && t.deletes.uses_index()) {
        let rebuilt = plan.runtime.block_on(floe_operators::key_index_rebuild::rebuild_table(
            plan.catalog.as_ref(),
            t,
            |_| true,
            8,
        ))?;
        let name = t.base.as_ref().map(|b| b.name.to_string()).unwrap_or_default();
        info!(table = %name, keys = rebuilt.keys, files = rebuilt.files, seconds = rebuilt.seconds, "key index rebuilt");
        for (bucket, index) in rebuilt.buckets {
            plan.indexes.put(t.index, bucket, index);
        }
    }
    Ok(())
}

/// A transform's declared row type against the table's columns.
fn check_row_type(t: &floe_operators::plan::TablePlan, row_type: &[String], columns: &[String]) -> Result<()> {
    if row_type == columns {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "the transform of `{}` is written for the columns {row_type:?}, but the table has {columns:?}; update the transform's row type",
            t.topic
        ),
    ))
}

/// Drives the dataflow on `workers` threads until it completes or fails.
pub fn execute(plan: PlanRef, source: SourceSpec, workers: usize) -> Result<()> {
    let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let probe = ProbeHandle::<Epoch>::new();
        let built = worker.dataflow::<Epoch, _, _>(|scope| build(scope, Arc::clone(&plan), &source, &probe));
        if let Err(e) = built {
            plan.failure.record(e);
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
            return;
        }
        while !probe.done() {
            if plan.failure.get().is_some() {
                // Operators keep their capabilities after a failure (so nothing later
                // commits): the dataflow cannot complete, so drop it, or timely would wait
                // for it after this closure returns.
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                return;
            }
            worker.step_or_park(Some(Duration::from_millis(50)));
        }
    })
    .map_err(|e| Error::new(ErrorKind::Internal, format!("starting workers: {e}")))?;
    for result in guards.join() {
        result.map_err(|e| Error::new(ErrorKind::Internal, format!("a worker failed: {e}")))?;
    }
    Ok(())
}
