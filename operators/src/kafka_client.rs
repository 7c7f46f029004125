//! Kafka clients floe makes (librdkafka through rdkafka): configuration, topic metadata,
//! watermarks, and retrying what fails while brokers are away.
//!
//! # Invariants
//! - floe sets `bootstrap.servers`, `group.id` and disables auto-commit; everything in
//!   `[source.properties]` is passed verbatim afterwards (so it may override the rest).
//! - `auto.offset.reset = error`: an offset the broker no longer has is reported, never
//!   silently skipped (that would lose data).
//! - Property values never reach logs or error messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floe_engine::config::KafkaConfig;
use floe_engine::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use tracing::{debug, error, info, warn};

/// The client context floe installs: it keeps each partition's high watermark from the
/// client's statistics (for lag and idleness) and rate-limits broker error lines.
#[derive(Default)]
pub struct FloeContext {
    highs: Mutex<HashMap<(String, i32), i64>>,
    last_error: Mutex<Option<Instant>>,
}

impl FloeContext {
    /// The high watermark of a partition as of the latest statistics, if known.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let highs = self.highs.lock().unwrap_or_else(|p| p.into_inner());
        highs.get(&(topic.to_string(), partition)).copied().filter(|h| *h >= 0)
    }
}

impl ClientContext for FloeContext {
    fn stats(&self, statistics: Statistics) {
        let mut highs = self.highs.lock().unwrap_or_else(|p| p.into_inner());
        for (name, topic) in statistics.topics {
            for (id, p) in topic.partitions {
                if id >= 0 && p.hi_offset >= 0 {
                    highs.insert((name.clone(), id), p.hi_offset);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            // Connection failures also reach `error` below, which says it once, plainly.
            _ if fac == "FAIL" => debug!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            *last = Some(Instant::now());
            let unreachable = matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
            );
            if unreachable {
                warn!(
                    reason,
                    "Kafka broker unreachable; retrying with backoff (nothing is lost, reading resumes when it returns)"
                );
            } else {
                warn!(error = %describe(&error), reason, "Kafka client error; retrying");
            }
        }
    }
}

impl ConsumerContext for FloeContext {}

/// The consumer type floe uses.
pub type FloeConsumer = BaseConsumer<FloeContext>;

/// Client configuration for a consumer of `config`.
pub fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "262144")
        .set("statistics.interval.ms", "1000");
    for (k, v) in &config.properties.0 {
        c.set(k, v);
    }
    c
}

/// A consumer for metadata and watermark queries (and for `floe record`).
pub fn consumer(config: &KafkaConfig) -> Result<FloeConsumer> {
    consumer_config(config).create_with_context(FloeContext::default()).map_err(|e| {
        let why = scrub(&describe(&e), config);
        Error::new(
            ErrorKind::Config,
            format!("[source.properties]: cannot create a Kafka client for {}: {why}", config.brokers),
        )
    })
}

/// `text` with every `[source.properties]` value replaced by `***` (librdkafka quotes
/// invalid values in its messages).
pub fn scrub(text: &str, config: &KafkaConfig) -> String {
    let mut out = text.to_string();
    for v in config.properties.0.values().filter(|v| !v.is_empty()) {
        out = out.replace(v.as_str(), "***");
    }
    out
}

/// A message for an rdkafka error (its code and text; never the configuration).
pub fn describe(e: &KafkaError) -> String {
    e.to_string()
}

/// Whether retrying after this error is pointless (authorization, lost offsets).
pub fn is_fatal(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::MessageConsumption(c) | KafkaError::MetadataFetch(c) | KafkaError::OffsetFetch(c) => *c,
        KafkaError::ClientCreation(_) => return true,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::OffsetOutOfRange
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
    )
}

/// Runs `f` until it succeeds, backing off from 200 ms to 10 s between attempts and
/// logging each failure, until `stop` is set (then the last error is returned).
pub fn retry<T>(
    what: &str,
    stop: &Arc<AtomicBool>,
    mut f: impl FnMut() -> std::result::Result<T, KafkaError>,
) -> Result<T> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if is_fatal(&e) => {
                return Err(Error::new(ErrorKind::Source, format!("{what}: {}", describe(&e))));
            }
            Err(e) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::new(
                        ErrorKind::Source,
                        format!("{what}: {} (stopped while retrying)", describe(&e)),
                    ));
                }
                warn!(error = %describe(&e), retry_in_ms = backoff.as_millis() as u64, "{what} failed; Kafka broker unreachable? retrying with backoff");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Every non-internal topic on the cluster with its partitions.
pub fn topics(consumer: &FloeConsumer, stop: &Arc<AtomicBool>) -> Result<Vec<(String, Vec<i32>)>> {
    let metadata = retry("fetching topic metadata", stop, || consumer.fetch_metadata(None, Duration::from_secs(10)))?;
    let mut out: Vec<(String, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__") && t.error().is_none())
        .map(|t| {
            let mut parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            parts.sort_unstable();
            (t.name().to_string(), parts)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `(low, high)` watermarks of a partition.
pub fn watermarks(consumer: &FloeConsumer, topic: &str, partition: i32, stop: &Arc<AtomicBool>) -> Result<(i64, i64)> {
    retry(&format!("fetching watermarks of {topic}/{partition}"), stop, || {
        consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::config::{Secrets, StartPosition};

    fn config(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            topics: None,
            topic_pattern: None,
            start: StartPosition::Earliest,
            group_id: "g".into(),
            properties: Secrets(properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            commit_interval: Duration::from_secs(1),
            schema_pull_interval: None,
        }
    }

    #[test]
    fn property_values_never_reach_errors() {
        let err = consumer(&config(&[("security.protocol", "hunter2-secret")])).err().expect("invalid value");
        let text = err.to_string();
        assert!(text.contains("security.protocol"), "names the key: {text}");
        assert!(!text.contains("hunter2"), "leaks the value: {text}");
        assert!(!format!("{:?}", config(&[("sasl.password", "hunter2")])).contains("hunter2"));
    }

    #[test]
    fn lost_offsets_and_denied_access_are_fatal_outages_are_not() {
        assert!(is_fatal(&KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)));
        assert!(is_fatal(&KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed)));
        assert!(!is_fatal(&KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(!is_fatal(&KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown)));
    }
}
