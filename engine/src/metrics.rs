//! Counters users ask about, a live progress line for terminals, and the run summary.
//!
//! Operators update [`Metrics`] (lock-free counters for the hot path, a mutex-guarded map
//! per table for the per-commit numbers). A [`ProgressLine`] thread prints one line per
//! second to a terminal; [`Metrics::summary`] renders the final per-table report.
//!
//! # Invariants
//! - Counters only grow; the progress line and the summary are derived, never stored.
//! - Nothing here affects what is written to tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-table numbers, updated at each commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Change events (or rows) the table received.
    pub events: u64,
    /// Snapshots committed.
    pub commits: u64,
    /// Epochs found already committed (resumed runs).
    pub already_committed: u64,
    /// Data files added.
    pub data_files: u64,
    /// Equality-delete files added.
    pub delete_files: u64,
    /// Rows written to data files.
    pub rows: u64,
    /// Keys written to equality-delete files.
    pub deletes: u64,
    /// Bytes of files written.
    pub bytes: u64,
    /// `source.ts_ms` of the newest committed event.
    pub last_source_ts_ms: Option<i64>,
    /// Rewrites (compactions) committed.
    pub rewrites: u64,
    /// Bytes those rewrites read.
    pub rewrite_bytes: u64,
    /// Files retired (rewritten, replaced or dangling).
    pub files_retired: u64,
    /// Snapshots expired.
    pub snapshots_expired: u64,
    /// Files deleted by cleanup (expired, orphaned, old metadata).
    pub files_cleaned: u64,
    /// Bytes those files held.
    pub bytes_cleaned: u64,
}

/// Process-wide metrics shared by all workers.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Records read from the source.
    pub records_in: AtomicU64,
    /// Records skipped because a table already holds them (resume).
    pub records_skipped: AtomicU64,
    /// Tombstones (null values) skipped.
    pub tombstones: AtomicU64,
    /// Records sent to a dead-letter table.
    pub dead_letters: AtomicU64,
    /// Records held back because their table is paused by a schema change.
    pub held: AtomicU64,
    /// Times a continuous run planned itself again to resume an approved table.
    pub resumes: AtomicU64,
    /// Snapshots committed across all tables.
    pub commits: AtomicU64,
    /// Commit attempts that lost a race and were retried.
    pub commit_conflicts: AtomicU64,
    /// Peak anonymous RSS of the run, bytes (set by the runner).
    pub peak_anon_bytes: AtomicU64,
    /// Wall time of each epoch's commits (all its tables), seconds.
    pub commit_latency: prometheus_client::metrics::histogram::Histogram,
    finished: Mutex<Option<Duration>>,
    tables: Mutex<BTreeMap<String, TableStats>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Each epoch's commit time in microseconds, in commit order (the first
    /// [`COMMIT_LATENCIES_KEPT`]; for benchmarks).
    commit_latencies: Mutex<Vec<u32>>,
}

/// How many epochs' commit times [`Metrics::commit_latencies`] keeps.
pub const COMMIT_LATENCIES_KEPT: usize = 1 << 20;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            records_in: AtomicU64::new(0),
            records_skipped: AtomicU64::new(0),
            tombstones: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            held: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_conflicts: AtomicU64::new(0),
            peak_anon_bytes: AtomicU64::new(0),
            // 0.5 ms to ~16 s.
            commit_latency: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
            ),
            finished: Mutex::new(None),
            tables: Mutex::new(BTreeMap::new()),
            lag: Mutex::new(BTreeMap::new()),
            commit_latencies: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// New shared metrics.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Updates one table's stats.
    pub fn table(&self, name: &str, update: impl FnOnce(&mut TableStats)) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        update(tables.entry(name.to_string()).or_default());
    }

    /// Records how long an epoch's commits took.
    pub fn record_commit(&self, took: Duration) {
        self.commit_latency.observe(took.as_secs_f64());
        let mut kept = self.commit_latencies.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < COMMIT_LATENCIES_KEPT {
            kept.push(took.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    /// Each epoch's commit time (microseconds), in commit order.
    pub fn commit_latencies(&self) -> Vec<u32> {
        self.commit_latencies.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Consumer lag per (topic, partition).
    pub fn lags(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of every table's stats.
    pub fn tables(&self) -> BTreeMap<String, TableStats> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records consumer lag (high watermark minus position) of a partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).insert((topic.to_string(), partition), lag);
    }

    /// Total lag over all partitions, if any source reports lag.
    pub fn total_lag(&self) -> Option<i64> {
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        (!lag.is_empty()).then(|| lag.values().sum())
    }

    /// Time since the metrics were created, or the run's duration once [`Metrics::finish`]
    /// was called.
    pub fn elapsed(&self) -> Duration {
        self.finished.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| self.started.elapsed())
    }

    /// Marks the run as over: later reports use its duration.
    pub fn finish(&self) {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(self.started.elapsed());
        }
    }

    /// The live line: events, rate, commits, dead letters (and lag when known).
    pub fn progress_line(&self, rate: f64) -> String {
        let mut line = format!(
            "floe: {} events ({}/s)  commits {}  dead letters {}",
            Self::get(&self.records_in),
            human(rate as u64),
            Self::get(&self.commits),
            Self::get(&self.dead_letters),
        );
        if let Some(lag) = self.total_lag() {
            let _ = write!(line, "  lag {lag}");
        }
        line
    }

    /// The final per-table report.
    pub fn summary(&self) -> String {
        let secs = self.elapsed().as_secs_f64().max(1e-9);
        let records = Self::get(&self.records_in);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{records} records in {secs:.2}s ({}/s), {} tombstones skipped, {} already committed, {} dead letters, {}{}peak memory {} (anonymous; {} RSS incl. the mapped log)",
            human((records as f64 / secs) as u64),
            Self::get(&self.tombstones),
            Self::get(&self.records_skipped),
            Self::get(&self.dead_letters),
            match Self::get(&self.held) {
                0 => String::new(),
                n => format!("{n} held by paused tables, "),
            },
            match Self::get(&self.resumes) {
                0 => String::new(),
                n => format!("{n} approved tables resumed in-process, "),
            },
            human_bytes(Self::get(&self.peak_anon_bytes)),
            peak_rss_bytes().map(human_bytes).unwrap_or_else(|| "unknown".into()),
        );
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>8} {:>10} {:>12} {:>10} {:>10} {:>10} {:>9} {:>8}",
            "table",
            "events",
            "commits",
            "data files",
            "delete files",
            "rows",
            "deletes",
            "bytes",
            "rewrites",
            "retired"
        );
        for (name, t) in self.tables() {
            let _ = writeln!(
                out,
                "{:<28} {:>10} {:>8} {:>10} {:>12} {:>10} {:>10} {:>10} {:>9} {:>8}",
                name,
                t.events,
                t.commits,
                t.data_files,
                t.delete_files,
                t.rows,
                t.deletes,
                human_bytes(t.bytes),
                t.rewrites,
                t.files_retired
            );
        }
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        if !lag.is_empty() {
            let parts: Vec<String> = lag.iter().map(|((t, p), l)| format!("{t}/{p}={l}")).collect();
            let _ = writeln!(out, "consumer lag at exit: {} (total {})", parts.join(" "), lag.values().sum::<i64>());
        }
        out
    }
}

/// Prints [`Metrics::progress_line`] once a second while alive, if stderr is a terminal.
pub struct ProgressLine {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    /// Starts the printer: a line redrawn every second on a terminal, otherwise an `info`
    /// log line every ten seconds (services log to files and journals).
    pub fn start(metrics: Arc<Metrics>) -> ProgressLine {
        let stop = Arc::new(AtomicBool::new(false));
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal { Duration::from_secs(1) } else { Duration::from_secs(10) };
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut last = (Instant::now(), Metrics::get(&metrics.records_in));
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                if last.0.elapsed() < every {
                    continue;
                }
                let now = (Instant::now(), Metrics::get(&metrics.records_in));
                let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
                last = now;
                if terminal {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{}", metrics.progress_line(rate));
                    let _ = err.flush();
                } else {
                    tracing::info!("{}", metrics.progress_line(rate));
                }
            }
            if terminal {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        });
        ProgressLine { stop, thread: Some(thread) }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Samples this process's anonymous resident memory (`RssAnon`: heap, stacks; not the
/// page cache of mapped files such as replay logs) and remembers the peak.
pub struct MemorySampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    /// Starts sampling every 20 ms.
    pub fn start() -> MemorySampler {
        let peak = Arc::new(AtomicU64::new(anon_rss_bytes().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("floe-mem".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(now) = anon_rss_bytes() {
                        p.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .ok();
        MemorySampler { peak, stop, thread }
    }

    /// Peak anonymous RSS seen so far.
    pub fn peak(&self) -> u64 {
        if let Some(now) = anon_rss_bytes() {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Current anonymous resident memory (`RssAnon`).
pub fn anon_rss_bytes() -> Option<u64> {
    status_kb("RssAnon:")
}

/// Peak resident set size of this process (`VmHWM`), if the OS reports it. It includes
/// resident pages of mapped files (a replay log being read).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM:")
}

/// `1234567` → `1.23M`.
pub fn human(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
