//! The replay-log line format: one Kafka record per line, as `kcat -C -J` prints it.
//!
//! ```text
//! {"topic":"t","partition":0,"offset":5,"tstype":"create","ts":1700000000000,"broker":-1,"key":"…","payload":"…"}
//! ```
//!
//! # Invariants
//! - `key` and `payload` are JSON strings holding the record's bytes as UTF-8 text, or
//!   `null`; readers ignore fields they do not know, so the line is exactly what kcat wrote.
//! - Every writer of replay logs (the harness generator, `floe record`) goes through
//!   [`kcat_json_line`], so recorded and generated logs cannot drift apart.

/// One line (without the newline).
pub fn kcat_json_line(
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<&str>,
    payload: Option<&str>,
) -> String {
    let text = |s: Option<&str>| match s {
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".into()),
        None => "null".to_string(),
    };
    let (tstype, ts) = match timestamp_ms {
        Some(ts) => ("create", ts),
        None => ("none", -1),
    };
    format!(
        r#"{{"topic":{},"partition":{partition},"offset":{offset},"tstype":"{tstype}","ts":{ts},"broker":-1,"key":{},"payload":{}}}"#,
        serde_json::to_string(topic).unwrap_or_default(),
        text(key),
        text(payload),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nulls() {
        let line = kcat_json_line("a.b", 3, 7, Some(5), Some("{\"id\":1}"), None);
        assert_eq!(
            line,
            r#"{"topic":"a.b","partition":3,"offset":7,"tstype":"create","ts":5,"broker":-1,"key":"{\"id\":1}","payload":null}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["key"], "{\"id\":1}");
    }
}
