//! Writing replay logs in the form `kcat -C -J` prints: one JSON object per record with
//! `topic`, `partition`, `offset`, `tstype`, `ts`, `broker`, `key` and `payload`, key and
//! payload as JSON strings (or null).

use std::io::{self, Write};

use crate::generator::KafkaRecord;

/// One kcat `-J` line (without the newline).
pub fn kcat_line(record: &KafkaRecord) -> String {
    let text = |s: &Option<String>| match s {
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".into()),
        None => "null".to_string(),
    };
    format!(
        r#"{{"topic":{},"partition":{},"offset":{},"tstype":"create","ts":{},"broker":-1,"key":{},"payload":{}}}"#,
        serde_json::to_string(&record.topic).unwrap_or_default(),
        record.partition,
        record.offset,
        record.timestamp_ms,
        text(&record.key),
        text(&record.value),
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
