//! Writing replay logs in the form `kcat -C -J` prints: one JSON object per record with
//! `topic`, `partition`, `offset`, `tstype`, `ts`, `broker`, `key` and `payload`, key and
//! payload as JSON strings (or null).

use std::io::{self, Write};

use floe_engine::replay_format::kcat_json_line;

use crate::generator::KafkaRecord;

/// One kcat `-J` line (without the newline).
pub fn kcat_line(record: &KafkaRecord) -> String {
    kcat_json_line(
        &record.topic,
        record.partition,
        record.offset,
        Some(record.timestamp_ms),
        record.key.as_deref(),
        record.value.as_deref(),
    )
}

/// Writes records as a replay log; returns how many were written.
pub fn write_log<W: Write>(out: &mut W, records: impl IntoIterator<Item = KafkaRecord>) -> io::Result<u64> {
    let mut n = 0;
    for r in records {
        out.write_all(kcat_line(&r).as_bytes())?;
        out.write_all(b"\n")?;
        n += 1;
    }
    Ok(n)
}
