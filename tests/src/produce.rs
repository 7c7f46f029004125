//! Producing a generated workload into a broker so that every record lands at exactly the
//! offset the generator (and so the model) gave it.
//!
//! # Invariants
//! - Records are produced in generator order with an idempotent producer (ordered, no
//!   duplicates on retry); each delivery report is checked against the expected offset,
//!   and a mismatch fails the test (the model would be wrong otherwise).

use std::sync::Mutex;
use std::time::Duration;

use floe_harness::generator::KafkaRecord;
use rdkafka::ClientConfig;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

#[derive(Default)]
struct Checker {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for Checker {}

impl ProducerContext for Checker {
    type DeliveryOpaque = Box<i64>;

    fn delivery(&self, result: &DeliveryResult<'_>, expected: Box<i64>) {
        let problem = match result {
            Ok(m) if m.offset() == *expected => None,
            Ok(m) => {
                Some(format!("{}/{}: landed at offset {}, expected {}", m.topic(), m.partition(), m.offset(), expected))
            }
            Err((e, m)) => Some(format!("{}/{}: {e}", m.topic(), m.partition())),
        };
        if let Some(p) = problem {
            self.errors.lock().unwrap_or_else(|p| p.into_inner()).push(p);
        }
    }
}

/// Produces `records` to the broker at `brokers`; returns how many.
pub fn produce(brokers: &str, records: impl IntoIterator<Item = KafkaRecord>) -> u64 {
    let producer: ThreadedProducer<Checker> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "120000")
        .create_with_context(Checker::default())
        .expect("producer");
    let mut n = 0;
    for r in records {
        let mut record =
            BaseRecord::with_opaque_to(&r.topic, Box::new(r.offset)).partition(r.partition).timestamp(r.timestamp_ms);
        if let Some(k) = &r.key {
            record = record.key(k.as_bytes());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_bytes());
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    pending = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("producing to {}: {e}", r.topic),
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let errors = producer.context().errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(errors.is_empty(), "producing failed: {}", errors.join("; "));
    n
}
